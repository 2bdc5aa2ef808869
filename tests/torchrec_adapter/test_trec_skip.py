"""Without the extra the adapter's tests skip (not fail) and ``import baselines`` still works:
run in a subprocess where importing torchrec raises ImportError, as on a plain install."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HIDE = "import sys; sys.modules['torchrec'] = None; "


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE + code], capture_output=True, text=True,
                          cwd=HERE.parents[1], timeout=300)


def test_tests_skip_without_torchrec():
    files = sorted(str(p) for p in HERE.glob("test_trec_*.py") if p.name != Path(__file__).name)
    assert files
    r = _run("import pytest; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-rs', "
             f"*{files!r}]))")
    out = r.stdout + r.stderr
    assert r.returncode == 5, out            # pytest: no tests ran (all modules skipped)
    assert f"{len(files)} skipped" in out and "failed" not in out and "error" not in out, out


def test_baselines_import_and_clear_error_without_torchrec():
    r = _run("import baselines; from fiited import method_names; names = method_names(); "
             "from baselines.torchrec_adapter import TorchRecEmbeddings\n"
             "try:\n    TorchRecEmbeddings([])\nexcept ImportError as e:\n    print('ERR', e)\n")
    assert r.returncode == 0, r.stderr
    assert "ERR the TorchRec adapter needs the extra" in r.stdout
