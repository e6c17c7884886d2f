"""Every benchmark script runs at a tiny size on CPU and reports what it claims to measure."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import BENCH_DIR

REPO = BENCH_DIR.parent


# ------------------------------------------------------------------------ harness
class _FakeBench:
    def __init__(self, name, times):
        self.name, self._times = name, list(times)
        self.times, self.cpu_times, self.peak_bytes = [], [], []

    def run_block(self):
        t = self._times.pop(0)
        self.times.append(t)
        self.cpu_times.append(2 * t)


def test_interleave_is_abba_and_takes_the_median_of_per_pair_ratios():
    import _common as C

    order = []
    plain = _FakeBench("plain", [9.0, 1.0, 2.0, 4.0])  # first block is the untimed warm-up
    arl = _FakeBench("arl", [9.0, 1.1, 2.0, 6.0])
    for b in (plain, arl):
        run = b.run_block
        b.run_block = (lambda run=run, b=b: (order.append(b.name), run())[1])
    res = C.interleave([plain, arl], pairs=3, reference="plain", clock="wall")
    assert order == ["plain", "arl", "plain", "arl", "arl", "plain", "plain", "arl"]
    assert res["ratios"]["arl"] == pytest.approx([1.1, 1.0, 1.5])
    assert res["median_ratio"]["arl"] == pytest.approx(1.1)
    assert res["cpu"]["median_step_s"]["plain"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="clock"):
        C.interleave([plain, arl], pairs=1, reference="plain", clock="gpu")


def test_arl_bench_trains_with_arl_and_plain_bench_without():
    import _common as C

    models = C.twin_models(lambda: C.build_model("mlp", mlp_dims=(8, 8)), 2)
    assert torch.equal(models[0].fusion.fc.weight, models[1].fusion.fc.weight)
    batches = C.synthetic_batches(2, 4, {"audio": [8], "visual": [8]}, 6)
    plain = C.make_bench("plain", models[0], batches, strategy=None, warmup=0, steps=2)
    arl = C.make_bench("arl", models[1], batches, strategy="arl", warmup=0, steps=2)
    for b in (plain, arl):
        b.run_block()
        assert b.trainer.state.global_step == 2 and b.times[0] > 0
    arl_logs, plain_logs = arl.trainer.state.log_history[-1], plain.trainer.state.log_history[-1]
    assert 0 < arl_logs["a_audio"] < 1 and arl_logs["grad_scale_audio"] == pytest.approx(1 + arl_logs["a_audio"])
    assert not any(k.startswith("a_") for k in plain_logs)
    # both trainers moved their (identical) starting weights
    assert not torch.equal(models[0].fusion.fc.weight, models[1].fusion.fc.weight)


# ----------------------------------------------------------------------- scripts
def test_step_overhead_tiny():
    import step_overhead

    r = step_overhead.main(["--tiny", "--pairs", "1", "--steps", "2"])
    assert r["setting"]["clock"] == "cpu" and r["setting"]["torch_threads"] == 1
    for clock in ("cpu", "wall"):
        for name in ("arl", "arl_no_validate"):
            (ratio,) = r[clock]["ratios"][name]
            assert math.isfinite(ratio) and ratio > 0
    assert r["median_ratio"] == r["cpu"]["median_ratio"] and r["target"] == 1.03


def test_profile_step_tiny_finds_no_host_sync_but_validation_and_no_per_sample_loop():
    import profile_step

    r = profile_step.main(["--tiny", "--steps", "1"])
    syncs = r["host_syncs_per_step"]
    assert syncs["plain"] == {} and syncs["arl_no_validate"] == {}
    assert syncs["arl"] == {"cpu": 1.0, "tolist": 1.0}  # validate_batch's single sync, by design
    extra = {e["op"]: e["extra_calls_per_step"] for e in r["extra_ops"]}
    assert extra.get("_ScaleGrad") == 2.0  # one in-graph gradient scale per modality
    assert r["op_counts_depend_on_batch_size"] == []


def test_memory_tiny_runs_each_variant_in_its_own_process():
    import memory

    r = memory.main(["--tiny", "--pairs", "1", "--steps", "1"])
    (arl,), (plain,) = r["peak_rss_kb"]["arl"], r["peak_rss_kb"]["plain"]
    assert arl > 100_000 and plain > 100_000  # a process with torch + transformers loaded
    assert 0.8 < r["median_ratio"] < 1.25 and r["median_ratio"] == pytest.approx(arl / plain)


def test_ddp_rank_comparison_detects_a_disagreement():
    import ddp_throughput as D

    def rank(r, a, loss, params=(1.0, 2.0)):
        return {"rank": r, "param_checksum": list(params),
                "history": [{"step": 1, "a": {"audio": a, "visual": 1 - a}, "loss_fused": loss}]}

    same = D.compare_ranks([rank(0, 0.6, 1.0), rank(1, 0.6, 1.3)])
    assert same["coefficients_identical"] and same["local_losses_differ"] and same["params_identical"]
    diff = D.compare_ranks([rank(0, 0.6, 1.0), rank(1, 0.61, 1.3, params=(1.0, 2.5))])
    assert not diff["coefficients_identical"] and diff["max_abs_a_diff"] == pytest.approx(0.01)
    assert not diff["params_identical"]


def test_ddp_two_ranks_share_coefficients(tmp_path):
    import ddp_throughput as D

    args = D.build_parser().parse_args(["--tiny", "--steps", "2", "--warmup", "0"])
    args.encoder, args.batch_size, args.audio_shape, args.visual_shape = "mlp", 4, [8], [8]
    ranks = D.launch(2, args, str(tmp_path))  # torchrun, gloo, 2 CPU processes
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    c = D.compare_ranks(ranks)
    assert c["steps"] == 2 and c["coefficients_identical"] and c["params_identical"]
    assert c["local_losses_differ"]  # each rank saw its own data: identical a_m come from the all-reduce
    assert all(r["step_s"] > 0 for r in ranks)
    assert all(r["find_unused_parameters"] is False for r in ranks)  # ARL uses every parameter: no graph search


def test_data_pipeline_tiny_reads_the_same_clips_both_ways():
    pytest.importorskip("datasets")
    pytest.importorskip("librosa")
    import data_pipeline as D

    r = D.main(["--tiny", "--clips", "12", "--gpu-samples-per-s", "100"])
    assert r["spectrogram_max_abs_diff"] < 1e-4  # the cache holds the on-the-fly spectrogram
    sp = r["samples_per_s"]["one_core"]
    assert set(sp) == {"cached", "cached_small_frames", "on_the_fly"} and all(v[0] > 0 for v in sp.values())
    assert r["one_core_median_ratio"] == pytest.approx(sp["cached"][0] / sp["on_the_fly"][0])
    assert r["one_core_small_frames_median_ratio"] == pytest.approx(sp["cached_small_frames"][0] / sp["on_the_fly"][0])
    assert r["cached_cores_to_feed_gpu"] == pytest.approx(100 / r["cached_samples_per_s_per_core"])
    b = r["one_core_ms_per_sample"]  # decoding on the GPU leaves the CPU less per sample
    assert 0 < b["cached_device_decode_visual_ms"] < b["cached_visual_ms"]
    assert r["device_decode_cores_to_feed_gpu"] == pytest.approx(
        100 * (b["cached_audio_ms"] + b["cached_device_decode_visual_ms"]) / 1000)
    # 480x360 frames shrunk to 256 px: the eval input differs by resampling only (a few % of a unit)
    assert 0.0 < r["small_frames_eval_mean_abs_diff"] < 0.1


def test_gpu_bench_projection():
    import gpu_bench

    # 100 epochs x ceil(6698 / 64) = 10,500 steps
    assert gpu_bench.projected_minutes(0.05, 64) == pytest.approx(10_500 * 0.05 / 60)


def test_gpu_bench_cpu_tiny_writes_summary(tmp_path):
    import gpu_bench

    s = gpu_bench.main(["--device", "cpu", "--tiny", "--no-compile", "--no-channels-last", "--precisions", "bf16",
                        "--audio-shapes", "33x24", "--out-dir", str(tmp_path)])
    (row,) = s["configs"]
    assert row["precision"] == "bf16" and row["median_ratio"]["arl"] > 0
    assert row["projected_cremad_minutes"] == pytest.approx(
        gpu_bench.projected_minutes(row["median_step_s"]["arl"], 2))
    saved = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert saved["configs"][0]["name"] == row["name"]
    assert "| bf16 audio 33x24 NCHW |" in (tmp_path / "gpu_bench.md").read_text()


def test_gpu_check_script_and_core_import_without_optional_packages(tmp_path):
    assert subprocess.run(["bash", "-n", str(BENCH_DIR / "gpu_check.sh")]).returncode == 0
    code = (
        "import sys\n"
        "for n in ('datasets', 'librosa', 'soundfile', 'sklearn'): sys.modules[n] = None\n"
        "import arl_hf, arl_hf.trainer, arl_hf.strategies\n"
        f"sys.path.insert(0, {str(BENCH_DIR)!r})\n"
        "import gpu_bench\n"
        "try:\n    import sklearn\nexcept ImportError:\n    print('blocked')\n"
        "print('ok', arl_hf.__file__)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "blocked" in out.stdout and f"ok {REPO / 'arl_hf' / '__init__.py'}" in out.stdout


def test_fsdp_check_plain_mode_runs_on_cpu(tmp_path):
    """The device check's unsharded half on CPU (the sharded half needs GPUs: FSDP is refused here)."""
    import json

    import fsdp_check

    fsdp_check.main(["--mode", "plain", "--device", "cpu", "--out-dir", str(tmp_path), "--cases", "arl_parameters,mla"])
    r = json.loads((tmp_path / "fsdp_check_plain.json").read_text())
    assert set(r) == {"arl_parameters", "mla"}
    for case in r.values():
        assert not case["sharded"] and case["heads_in_optimizer"]
        assert case["resumed_params"] == case["params"]  # resuming through Trainer reproduces the run
    with pytest.raises(ValueError, match="fsdp: FSDP was requested"):
        fsdp_check.main(["--mode", "fsdp", "--device", "cpu", "--out-dir", str(tmp_path), "--cases", "mla"])


def test_own_data_tiny_compares_the_raw_path_with_a_handwritten_transform():
    pytest.importorskip("datasets")
    import own_data

    r = own_data.main(["--tiny"])
    assert r["same_tensors"]  # both paths give the same batches
    assert all(len(v) == 2 and min(v) > 0 for v in r["samples_per_s"].values())
    ratios = [b / a for a, b in zip(r["samples_per_s"]["handwritten"], r["samples_per_s"]["arl_hf"])]
    assert r["median_ratio_wall"] == pytest.approx(sorted(ratios)[len(ratios) // 2] if len(ratios) % 2 else
                                                   sum(ratios) / 2, rel=0.01)
    assert r["median_ratio_cpu"] > 0
