import json

import pytest

from benchmark import harness_bench
from benchmark.data.synthetic import SyntheticConfig, generate
from benchmark.harness_bench import main


@pytest.fixture(autouse=True)
def idle(monkeypatch):
    """The load the run sees: ratios are withheld on a loaded machine, so fix it per test."""
    monkeypatch.setattr(harness_bench.os, "getloadavg", lambda: (0.0, 0.0, 0.0))


def test_harness_bench_runs_both_paths_and_writes_json(tmp_path, capsys):
    generate(SyntheticConfig(rows=6000, scale=0.0002, days=3), tmp_path / "d")
    out = tmp_path / "r.json"
    main(["--data", str(tmp_path / "d"), "--steps", "3", "--warmup", "1", "--batch-size", "256",
          "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["steps"] == 3
    for k in ("fiited_uniform", "torch_embeddingbag_sparse_adagrad"):
        assert res[k]["samples_per_s"] > 0
    assert res["ratio_ours_to_torch"] == (res["fiited_uniform"]["samples_per_s"]
                                          / res["torch_embeddingbag_sparse_adagrad"]["samples_per_s"])
    assert "ratio ours/torch" in capsys.readouterr().out


def test_more_methods_run_on_the_same_batches_with_ratios_to_uniform(tmp_path, capsys):
    generate(SyntheticConfig(rows=6000, scale=0.0002, days=3), tmp_path / "d")
    out = tmp_path / "r.json"
    spec = "fiited:num_chunks=2,index=hashed,budget_scope=total,budget=0.5"
    main(["--data", str(tmp_path / "d"), "--steps", "12", "--warmup", "1", "--batch-size", "128",
          "--chunk", "5", "--methods", spec, "hashing", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["methods"][spec] == {"name": "fiited", "num_chunks": 2, "index": "hashed",
                                    "budget_scope": "total", "budget": 0.5}
    for k in ("fiited_uniform", spec, "hashing"):
        assert res[k]["samples_per_s"] > 0
        assert res["ratio_to_uniform"][k] == (res[k]["samples_per_s"]
                                              / res["fiited_uniform"]["samples_per_s"])
        assert res["ratio_to_uniform_with_events"][k] == (
            res[k]["samples_per_s_with_events"] / res["fiited_uniform"]["samples_per_s_with_events"])
    assert not res["machine"]["loaded"]
    assert res["fiited_uniform"]["event_seconds"] == 0.0
    assert res[spec]["event_seconds"] > 0  # FIITED's events at steps 10 fall in the timed steps
    assert spec in capsys.readouterr().out


def test_a_bad_method_spec_is_named_before_any_training(tmp_path, capsys):
    generate(SyntheticConfig(rows=3000, scale=0.0002, days=3), tmp_path / "d")
    for spec, says in (("fiited:chunks=2", "Key 'chunks' not in 'FiitedConfig'"),
                       ("fiited:num_chunks", "is not key=value"), ("nope", "'nope' is unknown")):
        with pytest.raises(SystemExit) as e:
            main(["--data", str(tmp_path / "d"), "--steps", "2", "--methods", spec])
        assert e.value.code == 2 and says in capsys.readouterr().err


def test_warmup_is_sized_to_small_data_or_the_error_says_what_is_too_small(tmp_path, capsys):
    generate(SyntheticConfig(rows=6000, scale=0.0002, days=3), tmp_path / "d")
    out = tmp_path / "r.json"
    main(["--data", str(tmp_path / "d"), "--batch-size", "512", "--json", str(out)])  # 200+20
    res = json.loads(out.read_text())
    have = res["steps"] + res["warmup"]
    assert 4 <= have < 220 and res["warmup"] == have // 4 and res["steps"] > 0
    assert f"warming up on {res['warmup']}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--data", str(tmp_path / "d"), "--batch-size", "4096"])
    assert e.value.code == 2
    assert "full batches of 4096" in capsys.readouterr().err


def test_loaded_machine_withholds_every_ratio_and_records_the_load(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(harness_bench.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    generate(SyntheticConfig(rows=6000, scale=0.0002, days=3), tmp_path / "d")
    out = tmp_path / "r.json"
    main(["--data", str(tmp_path / "d"), "--steps", "3", "--warmup", "1", "--batch-size", "256",
          "--methods", "hashing", "--json", str(out)])
    res = json.loads(out.read_text())
    m = res["machine"]
    assert m["loaded"] and m["load_before"] == [64.0, 64.0, 64.0] and "OMP_NUM_THREADS" in m["omp"]
    assert res["ratio_ours_to_torch"] is None
    assert set(res["ratio_to_uniform"].values()) == {None}
    assert set(res["ratio_to_uniform_with_events"].values()) == {None}
    assert res["hashing"]["samples_per_s"] > 0          # the speeds themselves are kept
    assert "ratios withheld" in capsys.readouterr().err


def test_c5_table_lists_every_path_with_both_ratios_and_the_load(tmp_path, monkeypatch):
    from benchmark import c5_table

    generate(SyntheticConfig(rows=6000, scale=0.0002, days=3), tmp_path / "d")
    main(["--data", str(tmp_path / "d"), "--steps", "3", "--warmup", "1", "--batch-size", "256",
          "--methods", "hashing", "--json", str(tmp_path / "idle.json")])
    monkeypatch.setattr(harness_bench.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    main(["--data", str(tmp_path / "d"), "--steps", "3", "--warmup", "1", "--batch-size", "256",
          "--json", str(tmp_path / "loaded.json")])
    c5_table.main([str(tmp_path / "t.md"), str(tmp_path / "idle.json"), str(tmp_path / "loaded.json")])
    text = (tmp_path / "t.md").read_text()
    idle = json.loads((tmp_path / "idle.json").read_text())
    hashing = [line for line in text.splitlines() if "| hashing |" in line]
    assert len(hashing) == 1
    assert f"{idle['ratio_to_uniform']['hashing']:.2f}x" in hashing[0]
    assert "0.00 / 0.00" in hashing[0]
    assert text.count("withheld") == 4 and "64.00 / 64.00" in text   # 2 paths x 2 ratios
    with pytest.raises(SystemExit) as e:
        c5_table.main([str(tmp_path / "t.md"), str(tmp_path / "d" / "manifest.json")])
    assert e.value.code == 2
