import json

from benchmark.data.synthetic import SyntheticConfig, generate
from benchmark.harness_bench import main


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
