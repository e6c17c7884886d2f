"""benchmarks/evidence.py: the level choice on known gaps, and the whole chain (table, pair10,
calibration, sweep, grid) end to end on a tiny AV-Digits, resumed without retraining."""

import importlib.util
import json
import os

import pytest

from arl_hf.protocol.evidence import check_results, check_sensitivity, check_sweep

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def evidence():
    spec = importlib.util.spec_from_file_location("evidence_script", os.path.join(REPO, "benchmarks", "evidence.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_levels_are_chosen_by_band_and_unreached_bands_say_so(evidence):
    gaps = {"bench": 9.3, "a": 1.0, "b": 4.5, "c": 5.9, "d": 14.0, "e": 22.0}
    levels = {lv["target"]: lv for lv in evidence.choose_levels(gaps)}
    assert levels["moderate"]["candidate"] == "bench"  # the bench data is a level, in its own band
    assert levels["none"]["candidate"] == "a" and levels["none"]["reached"]
    assert levels["mild"]["candidate"] == "b"  # inside 3-6, closer to its middle than 5.9
    assert levels["strong"]["candidate"] == "d"  # inside >= 10, closest to its edge
    # no candidate below 3: the closest one, marked as not reached
    short = {lv["target"]: lv for lv in evidence.choose_levels({"bench": 9.3, "x": 4.0, "y": 4.4})}
    assert short["none"]["candidate"] == "x" and short["none"]["reached"] is False
    assert short["mild"]["candidate"] == "y" and short["mild"]["reached"] is True
    assert "strong" not in short  # no candidate left


def test_best_peer_is_the_most_accurate_other_method(evidence):
    table = {"methods": {"none": {"accuracy": {"mean": 0.9}}, "arl": {"accuracy": {"mean": 0.99}},
                         "fixed": {"accuracy": {"mean": 0.98}}, "pmr": {"accuracy": {"mean": 0.95}},
                         "agm": {"accuracy": {"mean": 0.94}}}}
    assert evidence.best_peer(table) == "pmr"
    assert evidence.best_peer({"methods": {"none": {}, "arl": {}}}) is None


def test_the_chain_runs_end_to_end_and_resumes(evidence, tmp_path, capsys):
    root, publish = tmp_path / "ev", tmp_path / "pub"
    argv = ["--smoke", "--root", str(root), "--publish", str(publish), "--workers", "1", "--strategies", "none", "arl",
            "pmr", "--temperatures", "1", "4", "--gammas", "4"]
    assert evidence.main(argv) == 0
    out = capsys.readouterr().out
    assert "estimated wall time with 1 workers" in out
    results = publish / "results"
    table = json.loads((results / "avdigits_bench.json").read_text())
    check_results(table)
    assert table["lr_decay_epochs"] == [7, 12] and table["early_stopping"] == {"patience": 4, "after_epoch": 12}
    assert list(table["methods"]) == ["none", "arl", "pmr"] and table["seeds"] == [0, 1]
    pair = json.loads((results / "avdigits_bench_pair10.json").read_text())
    check_results(pair)
    assert pair["seeds"] == [0, 1, 2] and list(pair["methods"]) == ["none", "arl"]
    # the pair's seeds 0 and 1 are the table's runs, read back
    assert pair["methods"]["arl"]["accuracy"]["values"][:2] == table["methods"]["arl"]["accuracy"]["values"]
    calibration = json.loads((root / "calibration.json").read_text())
    assert set(calibration["candidates"]) == {"bench", "img-0-1"}
    assert calibration["uses"].startswith("concatenation and the unimodal bounds only")
    # calibration ran concatenation and the bounds only: the candidate's ARL runs came later, from the sweep
    made = os.stat(root / "calibration.json").st_mtime_ns
    level = root / "levels" / "img-0-1"
    assert all(os.stat(p / "record.json").st_mtime_ns > made for p in level.iterdir() if p.name.startswith("arl-"))
    assert all(os.stat(p / "record.json").st_mtime_ns < made for p in level.iterdir()
               if p.name.startswith(("none-", "bound-")) and p.name.endswith(("seed0", "seed1")))
    sweep = json.loads((results / "avdigits_sweep.json").read_text())
    check_sweep(sweep)
    assert sweep["best_peer"] == "pmr"
    assert {lv["name"] for lv in sweep["levels"]} == {"bench", "img-0-1"}
    for lv in sweep["levels"]:
        assert list(lv["methods"]) == ["none", "arl", "pmr"]
    sens = json.loads((results / "arl_sensitivity.json").read_text())
    check_sensitivity(sens)
    assert [(c["arl_temperature"], c["arl_gamma"]) for c in sens["grid"]] == [(1.0, 4.0), (4.0, 4.0)]
    assert sens["learning_rate"] == table["methods"]["arl"]["hyperparameters"]["best"]["learning_rate"]
    figures = sorted(os.listdir(publish / "figures"))
    assert figures == ["arl_sensitivity.png", "avdigits_sweep.png", "bench_results.png", "bench_suppression.png"]
    for f in figures:
        assert (publish / "figures" / f).read_bytes()[:4] == b"\x89PNG"
    # resumed: every record is read back, none is trained again
    records = sorted(str(p) for p in root.rglob("record.json"))
    stamps = {p: os.stat(p).st_mtime_ns for p in records}
    assert evidence.main(argv + ["--no_estimate"]) == 0
    assert {p: os.stat(p).st_mtime_ns for p in records} == stamps
    assert json.loads((results / "avdigits_sweep.json").read_text())["levels"] == sweep["levels"]


def test_imbalance_knobs_leave_the_named_data_as_it_is():
    from arl_hf.data.avdigits import CONFIGS, IMBALANCE_KNOBS, imbalance_options

    assert imbalance_options("bench") == CONFIGS["bench"]  # no knob: the bench data's own options
    assert imbalance_options("bench", snr_db_min=0.0)["snr_db_min"] == 0.0
    assert set(IMBALANCE_KNOBS) == {"visual_confused_classes", "snr_db_min", "snr_db_max", "visual_partner_prob",
                                    "audio_partner_prob"}
    with pytest.raises(ValueError, match="knobs: unknown imbalance knob 'pixel_noise'"):
        imbalance_options("bench", pixel_noise=0.3)
    with pytest.raises(ValueError, match="snr_db_min: expected <= snr_db_max, got 12.0 > 9.0"):
        imbalance_options("bench", snr_db_min=12.0)
    with pytest.raises(ValueError, match="config: unknown AV-Digits configuration 'benchh'"):
        imbalance_options("benchh")
