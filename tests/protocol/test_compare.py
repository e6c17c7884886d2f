"""The comparison protocol (arl_hf.protocol): statistics on known numbers, and a tiny-budget run
(tuning, unimodal bounds, probes, fixed multipliers, resume) whose results.json is checked."""

import csv
import json
import math
import os

import numpy as np
import pytest
from strategy_testutils import write_vector_dataset

from arl_hf.protocol.stats import paired, stat
from arl_hf.protocol.table import build_results, to_markdown
from arl_hf.scripts.compare import main
from arl_hf.scripts.compare import parse_args as parse_compare_args

pytest.importorskip("optuna")


# ----------------------------------------------------------------------------- statistics
def test_stat_mean_sample_std_and_t_interval_on_known_numbers():
    s = stat([0.80, 0.82, 0.79, 0.81, 0.83])
    assert s["mean"] == pytest.approx(0.81)
    assert s["std"] == pytest.approx(math.sqrt(0.001 / 4))  # ddof 1: squared deviations sum to 0.001
    # t(0.975, 4) = 2.7764451; half width = t * std / sqrt(5)
    half = 2.7764451052 * math.sqrt(0.001 / 4) / math.sqrt(5)
    assert s["ci95"][0] == pytest.approx(0.81 - half, abs=1e-9)
    assert s["ci95"][1] == pytest.approx(0.81 + half, abs=1e-9)
    assert s["values"] == [0.80, 0.82, 0.79, 0.81, 0.83]
    one = stat([0.5])
    assert one["mean"] == 0.5 and one["std"] is None and one["ci95"] == [None, None]
    assert json.loads(json.dumps(one)) == one  # NaN is written as null


def test_paired_tests_on_known_numbers():
    a, b = [0.80, 0.82, 0.79, 0.81, 0.83], [0.78, 0.80, 0.80, 0.79, 0.80]
    p = paired(a, b)
    d = np.array(a) - np.array(b)  # [0.02, 0.02, -0.01, 0.02, 0.03]
    # deviations from 0.016 square-sum to 9.2e-4: std = sqrt(2.3e-4), t = 0.016 / (std / sqrt 5) = 2.3591
    t = d.mean() / (d.std(ddof=1) / math.sqrt(5))
    assert p["mean_diff"] == pytest.approx(0.016)
    assert t == pytest.approx(0.016 / (math.sqrt(2.3e-4) / math.sqrt(5)))
    assert t == pytest.approx(2.3591, abs=1e-3)
    assert p["p_ttest"] == pytest.approx(0.0777, abs=3e-4)  # two-sided, 4 degrees of freedom
    # Wilcoxon: ranks of |d| = [2.5? ...]; exact two-sided p for 4 positive of 5 with ranks 1..5 (ties):
    # |d| = .02,.02,.01,.02,.03 -> ranks 3,3,1,3,5; W- = 1 -> p = 2 * P(W <= 1) = 2 * 2/32 = 0.125
    assert p["p_wilcoxon"] == pytest.approx(0.125)
    # all five of one sign: the two-sided Wilcoxon p cannot go below 2 / 2**5
    assert paired([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])["p_wilcoxon"] == pytest.approx(0.0625)
    none = paired([0.5, 0.6], [0.5, 0.6])
    assert none == {"mean_diff": 0.0, "p_ttest": None, "p_wilcoxon": None}
    with pytest.raises(ValueError, match="paired"):
        paired([1, 2], [1])


def test_results_pair_on_seeds_and_gaps_per_seed():
    def rec(method, seed, acc, head=None, probe=None):
        m = {"accuracy": acc}
        if head is not None:
            m.update({"accuracy_audio": head, "accuracy_visual": head})
        r = {"method": method, "seed": seed, "metrics": {"test": m}, "wall_time_s": 10.0}
        if probe is not None:
            r["probe"] = {"test": {"audio": probe, "visual": probe}}
        return r

    records = [rec("none", 1, 0.7, 0.3, 0.4), rec("none", 0, 0.6, 0.2, 0.5), rec("arl", 0, 0.65, 0.3, 0.55),
               rec("arl", 1, 0.8, 0.35, 0.6), rec("bound:audio", 0, 0.7), rec("bound:audio", 1, 0.6),
               rec("bound:visual", 0, 0.5), rec("bound:visual", 1, 0.5)]
    res = build_results(records, [0, 1], "test", {"arl": {"best": {"learning_rate": 0.1}}})
    assert res["methods"]["none"]["accuracy"]["values"] == [0.6, 0.7]  # seed order
    assert "paired_vs_none" not in res["methods"]["none"]
    assert res["methods"]["arl"]["paired_vs_none"]["mean_diff"] == pytest.approx(0.075)
    assert res["suppression_gap"]["none"]["audio"]["values"] == pytest.approx([0.2, 0.2])  # bound - probe
    assert res["suppression_gap_head"]["arl"]["audio"]["values"] == pytest.approx([0.4, 0.25])  # bound - head
    assert res["unimodal_bounds"]["audio"]["mean"] == pytest.approx(0.65)
    md = to_markdown(res)
    assert "| Concatenation | 65.0 ± 7.1 |" in md and "learning_rate=0.1" in md and "| audio alone | 65.0 ± 7.1 |" in md
    with pytest.raises(ValueError, match="seed"):
        build_results(records, [0, 1, 2], "test")


# ----------------------------------------------------------------------------- the protocol
RUN = ["--preset", "none", "--mlp_hidden_dims", "8", "--num_train_epochs", "2", "--per_device_train_batch_size", "12",
       "--per_device_eval_batch_size", "18", "--learning_rate", "0.05", "--optim", "sgd", "--use_cpu",
       "--dataloader_num_workers", "0", "--model_card", "false"]


def test_tiny_protocol_writes_the_results_schema_and_resumes(tmp_path):
    data = tmp_path / "toy"
    write_vector_dataset(data)
    out = tmp_path / "cmp"
    argv = ["--strategies", "none", "arl", "fixed", "--seeds", "0", "1", "--compare_dir", str(out),
            "--unimodal_bounds", "--tune_trials", "2", "--tuning_seed", "99", "--dataset", str(data)] + RUN
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert {"dataset", "dataset_config", "preset", "split", "seeds", "methods", "unimodal_bounds",
            "suppression_gap", "suppression_gap_head"} <= set(res)
    assert res["split"] == "test" and res["seeds"] == [0, 1]
    # the files meant to be shared name the local dataset folder by its base name only
    assert res["dataset"] == "toy (local folder)"
    for name in ("results.json", "results.md", "results.csv", "runs.csv"):
        assert str(tmp_path) not in (out / name).read_text(), name
    assert list(res["methods"]) == ["none", "arl", "fixed"]
    stat_keys = {"mean", "std", "ci95", "values"}
    for name, e in res["methods"].items():
        for key in ("accuracy", "accuracy_audio", "accuracy_visual", "probe_accuracy_audio",
                    "probe_accuracy_visual", "wall_time_s"):
            assert set(e[key]) == stat_keys and len(e[key]["values"]) == 2
            if key != "wall_time_s":
                assert all(0.0 <= v <= 1.0 for v in e[key]["values"])  # fractions
        assert ("paired_vs_none" in e) == (name != "none")
        if name != "none":
            assert set(e["paired_vs_none"]) == {"mean_diff", "p_ttest", "p_wilcoxon"}
    hp = res["methods"]["arl"]["hyperparameters"]
    assert hp["n_trials"] == 2 and hp["sampler_seed"] == 99
    assert set(hp["best"]) == {"learning_rate", "arl_temperature", "arl_gamma"}
    assert set(hp["space"]) == set(hp["best"]) and 0.0 <= hp["best_objective"] <= 1.0
    # fixed: dominant modality x5 at concat's tuned learning rate, not tuned itself
    fixed = res["methods"]["fixed"]["hyperparameters"]["fixed"]
    assert sorted(fixed["fixed_multipliers"]) == [1.0, 5.0]
    assert fixed["learning_rate"] == res["methods"]["none"]["hyperparameters"]["best"]["learning_rate"]
    for m in ("audio", "visual"):
        assert set(res["unimodal_bounds"][m]) == stat_keys
        b = res["unimodal_bounds"][m]["values"]
        probe = res["methods"]["none"]["probe_accuracy_" + m]["values"]
        assert res["suppression_gap"]["none"][m]["values"] == pytest.approx([x - y for x, y in zip(b, probe)])
    # every run's record, its checkpoints deleted
    runs = sorted(p for p in os.listdir(out) if "-seed" in p)
    assert len(runs) == 3 * 2 + 2 * 2
    for r in runs:
        assert (out / r / "record.json").is_file()
        assert not [p for p in os.listdir(out / r) if p.startswith("checkpoint-")]
    for name in ("results.md", "results.csv", "runs.csv"):
        assert (out / name).stat().st_size > 100
    assert (out / "suppression.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 10
    # resume: nothing is trained again, the same table comes out
    stamps = {r: (out / r / "record.json").stat().st_mtime_ns for r in runs}
    assert main(argv) == 0
    assert {r: (out / r / "record.json").stat().st_mtime_ns for r in runs} == stamps
    again = json.loads((out / "results.json").read_text())
    assert again["methods"]["arl"]["accuracy"] == res["methods"]["arl"]["accuracy"]


def test_per_run_options_and_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="strategy: set per run"):
        parse_compare_args(["--strategy", "arl"])
    with pytest.raises(ValueError, match="strategies: unknown strategy 'nope'"):
        parse_compare_args(["--strategies", "nope"])
    with pytest.raises(ValueError, match="tuning_seed"):
        parse_compare_args(["--seeds", "0", "1", "--tuning_seed", "1"])
    with pytest.raises(ValueError, match="fixed"):
        parse_compare_args(["--strategies", "arl", "fixed"])


def test_bound_collator_keeps_one_modality_of_a_multimodal_collator():
    import torch

    from arl_hf.data import MultimodalCollator
    from arl_hf.protocol.runs import modality_collator

    base = MultimodalCollator({"audio": {"kind": "spectrogram"}, "visual": {"kind": "image"}})
    only = modality_collator(base, "audio")
    # the Trainer has already dropped the visual column of a one-modality model
    batch = only([{"audio": np.ones((4, 5), "float32"), "labels": 1},
                  {"audio": np.zeros((4, 5), "float32"), "labels": 0}])
    assert set(batch) == {"audio", "labels"} and batch["audio"].shape == (2, 1, 4, 5)
    assert torch.equal(batch["labels"], torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="bound:text"):
        modality_collator(base, "text")
