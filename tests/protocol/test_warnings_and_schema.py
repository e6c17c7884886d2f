"""The protocol warns when its evidence is weak, runs small with --smoke, reruns tuned values, and
writes the evidence files in their schema (results, sweep, sensitivity)."""

import copy
import json

import pytest
from strategy_testutils import write_vector_dataset

from arl_hf.protocol.evidence import (
    check_results,
    check_sensitivity,
    check_sweep,
    level_entry,
    sensitivity_results,
    sweep_results,
)
from arl_hf.protocol.table import build_results, protocol_warnings, to_markdown
from arl_hf.scripts.compare import main

pytest.importorskip("optuna")


def _rec(method, seed, acc, probe=None, val=None):
    m = {"accuracy": acc, "accuracy_audio": acc / 2, "accuracy_visual": acc / 2}
    r = {"method": method, "seed": seed, "metrics": {"test": m, "validation": {"accuracy": val or acc}},
         "wall_time_s": 1.0, "best_epoch": 3.0, "epochs_run": 7.0}
    if probe is not None:
        r["probe"] = {"test": {"audio": probe, "visual": probe}}
    return r


def _records(seeds, bound_audio, probe):
    out = []
    for s in seeds:
        out += [_rec("none", s, 0.80 + 0.01 * s, probe), _rec("arl", s, 0.85 + 0.01 * s, probe + 0.05),
                _rec("bound:audio", s, bound_audio + 0.01 * s), _rec("bound:visual", s, 0.95 + 0.005 * s)]
    return out


# ----------------------------------------------------------------------------- warnings
def test_warns_for_few_seeds_and_an_undertrained_bound():
    # the audio bound (about 34 %) lies far below the probes (90 %, 95 %): a negative gap, not suppression
    res = build_results(_records([0, 1], 0.338, 0.90), [0, 1], "test")
    w = res["warnings"]
    assert len(w) == 2
    assert w[0].startswith("seeds: n = 2 < 5") and "0.5" in w[0]  # the smallest two-sided Wilcoxon p at n = 2
    assert w[1].startswith("unimodal bound audio: 34.3 % lies below the audio probe of Concatenation, ARL")
    assert "up to 95.0 %, ARL" in w[1] and "not suppression" in w[1]
    assert res["suppression_gap"]["none"]["audio"]["mean"] < 0
    md = to_markdown(res)
    assert "**Warnings**" in md and f"- {w[1]}" in md


def test_no_warning_for_five_seeds_and_a_bound_within_its_spread():
    seeds = [0, 1, 2, 3, 4]
    res = build_results(_records(seeds, 0.90, 0.88), seeds, "test")
    # the audio bound (mean 0.92, std 0.0158) is above concat's probe (0.88) but 0.01 below ARL's
    # (0.93): within its spread, no warning
    assert res["unimodal_bounds"]["audio"]["std"] == pytest.approx(0.0158, abs=1e-4)
    assert res["warnings"] == [] and "Warnings" not in to_markdown(res)
    # 0.03 below ARL's probe, more than its spread: the warning names ARL only
    low = build_results(_records(seeds, 0.87, 0.88), seeds, "test")
    assert len(low["warnings"]) == 1 and "probe of ARL (up to 93.0 %, ARL)" in low["warnings"][0]
    one = protocol_warnings({"seeds": [0], "methods": {}})
    assert one == ["seeds: n = 1 < 5; the paired p-values and 95 % intervals mean little (a two-sided Wilcoxon p "
                   "cannot go below 1); report more seeds"]


# ----------------------------------------------------------------------------- --smoke, --tuned_from
RUN = ["--preset", "none", "--mlp_hidden_dims", "8", "--per_device_train_batch_size", "12",
       "--per_device_eval_batch_size", "18", "--learning_rate", "0.05", "--optim", "sgd", "--use_cpu",
       "--dataloader_num_workers", "0", "--model_card", "false", "--lr_decay_epochs", "1",
       "--eval_strategy", "epoch", "--save_strategy", "epoch", "--load_best_model_at_end", "true",
       "--metric_for_best_model", "accuracy", "--early_stopping_patience", "1", "--early_stopping_after_epoch", "1"]


def test_smoke_budget_runs_the_protocol_on_own_data_and_writes_the_schema(tmp_path, capsys):
    data = write_vector_dataset(tmp_path / "own")
    out = tmp_path / "smoke"
    argv = ["--smoke", "--strategies", "none", "arl", "--unimodal_bounds", "--tune_trials", "8",
            "--compare_dir", str(out), "--dataset", data, "--tuning_seed", "99"] + RUN
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    check_results(res)
    assert res["smoke"] is True and res["seeds"] == [0, 1]  # the smoke budget: 2 seeds
    assert res["methods"]["arl"]["hyperparameters"]["n_trials"] == 2  # 8 asked, capped at 2
    assert res["num_train_epochs"] == 2.0 and res["lr_decay_epochs"] == [1]
    assert res["early_stopping"] == {"patience": 1, "after_epoch": 1}
    assert res["chance_accuracy"] == pytest.approx(1 / 3)
    for e in res["methods"].values():
        assert [r["seed"] for r in e["runs"]] == [0, 1]
        assert all(r["epochs_run"] == 2 and r["best_epoch"] in (1, 2) for r in e["runs"])
        assert [r["accuracy"] for r in e["runs"]] == e["accuracy"]["values"]
    assert res["warnings"][0].startswith("seeds: n = 2 < 5")
    assert "**Warnings**" in (out / "results.md").read_text()
    assert "seeds: n = 2 < 5" in capsys.readouterr().out  # printed with the table
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    # the tuned values of that table, rerun elsewhere without tuning
    again = tmp_path / "again"
    assert main(["--smoke", "--strategies", "arl", "--unimodal_bounds", "--compare_dir", str(again), "--dataset", data,
                 "--tuned_from", str(out / "results.json"), "--no_plots"] + RUN) == 0
    res2 = json.loads((again / "results.json").read_text())
    assert res2["methods"]["arl"]["hyperparameters"] == res["methods"]["arl"]["hyperparameters"]
    assert res2["methods"]["arl"]["accuracy"] == res["methods"]["arl"]["accuracy"]  # same values, same runs


def test_tuned_from_refuses_what_it_cannot_rerun(tmp_path):
    from arl_hf.scripts.compare import parse_args

    with pytest.raises(ValueError, match="tuned_from: .* expected --tune_trials 0, got 3"):
        parse_args(["--tuned_from", "x.json", "--tune_trials", "3"])
    from arl_hf.protocol.compare import tuned_values

    with pytest.raises(FileNotFoundError, match="tuned_from: no results file"):
        tuned_values(str(tmp_path / "nope.json"), ["arl"])
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"methods": {"none": {"hyperparameters": {"best": {"learning_rate": 0.1}}}},
                                "unimodal_bounds_hyperparameters": {}}))
    assert tuned_values(str(path), ["none"])["none"]["best"] == {"learning_rate": 0.1}
    with pytest.raises(ValueError, match="has no tuned values for 'arl'"):
        tuned_values(str(path), ["none", "arl"])
    with pytest.raises(ValueError, match="has no tuned values for 'bound:audio'"):
        tuned_values(str(path), ["bound:audio"])


# ----------------------------------------------------------------------------- schemas
def test_results_schema_check_names_the_field():
    seeds = [0, 1, 2, 3, 4]
    res = build_results(_records(seeds, 0.9, 0.88), seeds, "test",
                        meta={"lr_decay_epochs": [3], "early_stopping": {"patience": 4, "after_epoch": 3},
                              "num_train_epochs": 24.0})
    check_results(res)
    assert res["methods"]["arl"]["runs"][0] == {"seed": 0, "best_epoch": 3, "epochs_run": 7, "accuracy": 0.85}
    bad = copy.deepcopy(res)
    del bad["methods"]["arl"]["runs"][2]
    with pytest.raises(ValueError, match=r"methods.arl.runs: expected 5 runs"):
        check_results(bad)
    bad = copy.deepcopy(res)
    bad["methods"]["none"]["accuracy"]["values"][0] = 81.0  # a percentage, not a fraction
    with pytest.raises(ValueError, match=r"methods.none.accuracy.values: expected values in \[0.0, 1.0\]"):
        check_results(bad)
    bad = copy.deepcopy(res)
    bad["methods"]["none"]["runs"][1]["epochs_run"] = 6  # stopped before after_epoch + patience = 7
    with pytest.raises(ValueError, match=r"methods.none.runs\[1\].epochs_run: expected no stop before"):
        check_results(bad)
    bad = copy.deepcopy(res)
    del bad["early_stopping"]
    with pytest.raises(ValueError, match="early_stopping: expected a top-level field"):
        check_results(bad)


def test_sweep_schema_from_level_tables():
    levels = []
    for name, bound in (("strong", 0.95), ("none", 0.90)):
        seeds = [0, 1, 2]
        res = build_results(_records(seeds, bound, 0.88), seeds, "test")
        levels.append(level_entry(name, {"snr_db_min": -6.0}, res, ["none", "arl"]))
    sweep = sweep_results(levels, dataset="avdigits")
    assert [lv["name"] for lv in sweep["levels"]] == ["none", "strong"]  # by concatenation's gap
    lv = sweep["levels"][1]
    assert set(lv) >= {"name", "knobs", "suppression_gap", "methods"}
    # bound 0.95 + 0.01 s (mean 0.96) against probe 0.88: a gap of 0.08 on the audio modality
    assert lv["suppression_gap"]["none"]["audio"]["mean"] == pytest.approx(0.08)
    arl = lv["methods"]["arl"]
    assert arl["diff_vs_none"]["values"] == pytest.approx([0.05, 0.05, 0.05])
    assert arl["paired_vs_none"]["mean_diff"] == pytest.approx(0.05)
    assert set(arl["accuracy"]) == {"mean", "std", "ci95", "values"}
    json.dumps(sweep, allow_nan=False)
    bad = copy.deepcopy(sweep)
    del bad["levels"][0]["methods"]["arl"]["paired_vs_none"]
    with pytest.raises(ValueError, match=r"levels\[0\].methods.arl.paired_vs_none"):
        check_sweep(bad)
    with pytest.raises(ValueError, match="level 'x': expected concatenation"):
        level_entry("x", {}, build_results([_rec("arl", 0, 0.5, 0.4)], [0], "test"))


def test_sensitivity_schema_from_grid_records(tmp_path):
    cells = [(t, g, [_rec("arl", s, 0.8 + 0.01 * s + 0.001 * t, val=0.7 + 0.01 * s) for s in (0, 1, 2)])
             for t in (1.0, 4.0) for g in (4.0,)]
    sens = sensitivity_results([0, 1, 2], cells, learning_rate=0.07, tuned={"arl_temperature": 1.8, "arl_gamma": 3.9})
    assert [(c["arl_temperature"], c["arl_gamma"]) for c in sens["grid"]] == [(1.0, 4.0), (4.0, 4.0)]
    assert sens["grid"][1]["accuracy"]["mean"] == pytest.approx(0.814)
    assert sens["grid"][0]["validation_accuracy"]["values"] == pytest.approx([0.7, 0.71, 0.72])
    with pytest.raises(ValueError, match=r"T=1.0, gamma=4.0: no run for seed\(s\) \[3\]"):
        sensitivity_results([0, 1, 3], cells)
    bad = copy.deepcopy(sens)
    bad["grid"][0]["accuracy"]["values"] = [0.8]
    with pytest.raises(ValueError, match=r"grid\[0\].accuracy.values: expected 3 values"):
        check_sensitivity(bad)
    from arl_hf.protocol.figures import sensitivity_figure

    path = sensitivity_figure(sens, str(tmp_path / "arl_sensitivity.png"))
    assert open(path, "rb").read(4) == b"\x89PNG"
