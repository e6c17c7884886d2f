"""examples/compare.py on a tiny saved dataset: every (strategy, seed) trained through the
runner, validation-selected test metrics aggregated into Markdown, CSV and a bar plot."""

import csv
import importlib.util
import json
import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_compare():
    spec = importlib.util.spec_from_file_location("compare_example", os.path.join(REPO, "examples", "compare.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_vector_dataset(path):
    import datasets

    feats = datasets.Features({
        "audio": datasets.Sequence(datasets.Value("float32"), length=6),
        "visual": datasets.Sequence(datasets.Value("float32"), length=4),
        "labels": datasets.ClassLabel(names=["a", "b", "c"]),
    })
    splits = {}
    for i, (split, n) in enumerate((("train", 24), ("validation", 12), ("test", 12))):
        rng = np.random.default_rng(i)
        y = np.arange(n) % 3
        a = rng.normal(size=(n, 6)).astype("float32") + y[:, None]
        v = rng.normal(size=(n, 4)).astype("float32") * 2 + 0.3 * y[:, None]
        splits[split] = datasets.Dataset.from_dict({"audio": a, "visual": v, "labels": y}, features=feats)
    datasets.DatasetDict(splits).save_to_disk(str(path))


def test_summary_statistics_and_markdown():
    c = load_compare()
    recs = [
        {"strategy": "none", "seed": s, "wall_time_s": 2.0,
         "metrics": {"test": {"accuracy": acc, "macro_f1": acc - 0.1, "accuracy_audio": 0.5, "macro_f1_audio": 0.4}}}
        for s, acc in ((0, 0.6), (1, 0.8))
    ] + [{"strategy": "arl", "seed": 0, "wall_time_s": 3.0,
          "metrics": {"test": {"accuracy": 0.9, "macro_f1": 0.85, "accuracy_audio": 0.7, "macro_f1_audio": 0.6}}}]
    rows = c.summarise(recs, "test")
    assert [r["strategy"] for r in rows] == ["none", "arl"]
    assert rows[0]["accuracy_mean"] == pytest.approx(0.7)
    assert rows[0]["accuracy_std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert rows[1]["accuracy_std"] == 0.0 and rows[1]["wall_time_s_mean"] == 3.0
    md = c.to_markdown(rows, c.metric_keys(recs, "test"), "test", "toy")
    assert "| Concatenation | 70.00 ± 14.14 | 60.00 ± 14.14 | 50.00 ± 0.00 | 40.00 ± 0.00 | 2.0 |" in md
    assert "| ARL | **90.00 ± 0.00** |" in md
    assert "Acc (audio)" in md and "macro F1 (audio)" in md


def test_compare_runs_strategies_by_seeds_and_writes_the_table(tmp_path):
    data = tmp_path / "toy"
    tiny_vector_dataset(data)
    out = tmp_path / "cmp"
    c = load_compare()
    rc = c.main([
        "--strategies", "none", "ogm_ge", "--seeds", "0", "1", "--compare_dir", str(out),
        "--dataset", str(data), "--preset", "none", "--mlp_hidden_dims", "8", "--num_train_epochs", "2",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "12", "--learning_rate", "0.05",
        "--optim", "sgd", "--use_cpu", "--dataloader_num_workers", "0", "--disable_tqdm", "true",
        "--plots", "false", "--model_card", "false", "--save_total_limit", "1",
    ])
    assert rc == 0
    runs = json.loads((out / "runs.json").read_text())
    assert [(r["strategy"], r["seed"]) for r in runs] == [("none", 0), ("none", 1), ("ogm_ge", 0), ("ogm_ge", 1)]
    for r in runs:  # each run: validation-selected checkpoint, test evaluated with it
        assert set(r["metrics"]) == {"validation", "test"}
        saved = json.loads((out / f"{r['strategy']}-seed{r['seed']}" / "results.json").read_text())
        assert saved["metrics"]["test"]["accuracy"] == pytest.approx(r["metrics"]["test"]["accuracy"])
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["strategy"] for r in rows] == ["none", "ogm_ge"]
    accs = [r["metrics"]["test"]["accuracy"] for r in runs if r["strategy"] == "none"]
    assert float(rows[0]["accuracy_mean"]) == pytest.approx(np.mean(accs))
    assert float(rows[0]["accuracy_std"]) == pytest.approx(np.std(accs, ddof=1))
    md = (out / "results.md").read_text()
    assert "| Concatenation |" in md and "| OGM-GE |" in md and "Acc (visual)" in md
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    with open(out / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


def test_per_run_options_are_refused():
    c = load_compare()
    with pytest.raises(ValueError, match="strategy: set per run"):
        c.parse_compare_args(["--strategy", "arl"])
    with pytest.raises(ValueError, match="strategies: unknown strategy 'nope'"):
        c.parse_compare_args(["--strategies", "nope"])
