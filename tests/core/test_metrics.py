"""Accuracy and macro-F1 in NumPy: equal to scikit-learn (absent classes included), no sklearn import."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel
from arl_hf.metrics import accuracy, classification_metrics, macro_f1, make_compute_metrics, multimodal_metrics


def mlp_model():
    torch.manual_seed(0)
    return MultimodalModel(MultimodalConfig(modalities={
        "audio": {"encoder": "mlp", "input_dim": 6, "hidden_dims": [8]},
        "visual": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8]}}, num_labels=3))


def make_rows(n):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    a, v = torch.randn(n, 6, generator=g) + y[:, None], torch.randn(n, 4, generator=g)
    return [{"audio": a[i], "visual": v[i], "labels": y[i]} for i in range(n)]


def cfg(tmp_path, **kw):
    return ARLConfig(output_dir=str(tmp_path), per_device_eval_batch_size=8, report_to="none", use_cpu=True,
                     disable_tqdm=True, dataloader_num_workers=0, **kw)


def _sklearn(labels, preds):
    from sklearn.metrics import accuracy_score, f1_score

    return accuracy_score(labels, preds), f1_score(labels, preds, average="macro", zero_division=0)


def test_class_absent_from_the_split_matches_sklearn():
    # 4 classes; class 3 never occurs in this split and is never predicted; class 2 is
    # predicted but absent from the labels; class 1 occurs but is never predicted
    labels = np.array([0, 0, 1, 1, 0, 0, 1, 0])
    preds = np.array([0, 2, 0, 0, 0, 2, 2, 0])
    acc, f1 = _sklearn(labels, preds)
    assert accuracy(labels, preds) == pytest.approx(acc, abs=1e-12) == pytest.approx(3 / 8)
    assert macro_f1(labels, preds) == pytest.approx(f1, abs=1e-12)
    # by hand: class 0 F1 = 2*3/(2*3+2+2) = 0.6, classes 1 and 2 F1 = 0, class 3 not counted
    assert macro_f1(labels, preds) == pytest.approx(0.6 / 3)


def test_single_class_and_perfect_predictions():
    assert macro_f1([2, 2, 2], [2, 2, 2]) == pytest.approx(_sklearn([2, 2, 2], [2, 2, 2])[1]) == 1.0
    assert macro_f1([1, 1], [0, 0]) == pytest.approx(_sklearn([1, 1], [0, 0])[1]) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 6), min_size=n, max_size=n), st.lists(st.integers(0, 6), min_size=n, max_size=n))))
def test_random_splits_match_sklearn(pair):
    labels, preds = (np.array(x) for x in pair)
    acc, f1 = _sklearn(labels, preds)
    assert accuracy(labels, preds) == pytest.approx(acc, abs=1e-12)
    assert macro_f1(labels, preds) == pytest.approx(f1, abs=1e-12)


def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match="predictions: expected 3 predictions"):
        macro_f1([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="labels: expected at least one example"):
        accuracy([], [])
    with pytest.raises(ValueError, match="labels: expected a 1-D array"):
        accuracy([[0, 1]], [[0, 1]])
    with pytest.raises(ValueError, match="logits: expected shape \\(N, C\\)"):
        classification_metrics(np.zeros(3), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"predictions: expected shape \(N, 3, C\)"):
        multimodal_metrics(np.zeros((4, 2, 3)), np.zeros(4, dtype=int), ["audio", "visual"])


def test_evaluation_runs_without_sklearn(tmp_path, monkeypatch):
    """The default compute_metrics of ARLTrainer never imports scikit-learn."""
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn` now raises ImportError
    with pytest.raises(ImportError):
        import sklearn  # noqa: F401
    rows = make_rows(30)
    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy="none"), eval_dataset=rows)
    metrics = trainer.evaluate()
    # the same numbers from the fused predictions, by hand
    out = trainer.predict(rows)
    labels = np.array([int(r["labels"]) for r in rows])
    fused = out.predictions.argmax(-1)
    assert metrics["eval_accuracy"] == pytest.approx(float((fused == labels).mean()))
    assert metrics["eval_macro_f1"] == pytest.approx(macro_f1(labels, fused))
    assert {"eval_accuracy_audio", "eval_macro_f1_visual"} <= set(metrics)
    assert "sklearn" not in [m for m in sys.modules if sys.modules[m] is not None]


def test_compute_metrics_stays_pluggable(tmp_path):
    seen = {}

    def my_metrics(eval_pred):
        seen["shape"] = tuple(eval_pred.predictions.shape)
        return {"top1": 0.25}

    rows = make_rows(10)
    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy="none"), eval_dataset=rows,
                         compute_metrics=my_metrics)
    metrics = trainer.evaluate()
    assert metrics["eval_top1"] == 0.25 and "eval_accuracy" not in metrics
    assert {"eval_accuracy_audio", "eval_macro_f1_visual"} <= set(metrics)  # added by the trainer
    assert seen["shape"] == (10, 3)  # the fused logits, 3 classes
    default = make_compute_metrics(["audio", "visual"])
    from transformers import EvalPrediction

    preds = torch.randn(6, 3, 3).numpy()
    labels = np.array([0, 1, 2, 0, 1, 2])
    got = default(EvalPrediction(predictions=preds, label_ids=labels))
    assert got["accuracy_visual"] == pytest.approx(float((preds[:, 2].argmax(-1) == labels).mean()))


def test_metric_keys_are_written_and_parsed_by_one_helper():
    from arl_hf.metrics import METRIC_NAMES, metric_key, parse_metric_key

    assert [metric_key(n, m) for n in METRIC_NAMES for m in (None, "audio")] == [
        "accuracy", "accuracy_audio", "macro_f1", "macro_f1_audio"]
    assert parse_metric_key("macro_f1_visual_2") == ("macro_f1", "visual_2")
    assert parse_metric_key("eval_accuracy_audio", prefix="eval") == ("accuracy", "audio")
    assert parse_metric_key("accuracy") == ("accuracy", None)
    for bad in ("loss", "accuracy_", "f1_audio"):
        with pytest.raises(ValueError, match="key: expected"):
            parse_metric_key(bad)
    with pytest.raises(ValueError, match="name: expected one of"):
        metric_key("recall", "audio")
    preds = np.zeros((4, 3, 2))
    preds[:, :, 1] = 1.0
    keys = multimodal_metrics(preds, np.array([1, 1, 0, 1]), ["audio", "visual"])
    assert {parse_metric_key(k) for k in keys} == {(n, m) for n in METRIC_NAMES for m in (None, "audio", "visual")}
    assert keys["accuracy_visual"] == 0.75


def test_class_indices_is_the_one_label_normaliser():
    import torch

    from arl_hf.validation import class_indices

    assert class_indices([2.0, 1, np.int64(0)]).tolist() == [2, 1, 0]
    assert class_indices(torch.tensor([3, 4])).dtype == np.int64
    with pytest.raises(ValueError, match="labels: expected integer class indices"):
        class_indices([0.5, 1.0])
    with pytest.raises(ValueError, match="y: expected a 1-D array"):
        class_indices([[1]], "y")


def test_metric_modalities_reads_only_per_head_keys_in_order():
    from arl_hf.metrics import metric_modalities

    metrics = {"loss": 1.0, "accuracy": 0.5, "accuracy_visual": 0.4, "macro_f1_audio": 0.3, "accuracy_audio": 0.2,
               "probe_accuracy_audio": 0.1, "wall_time_s": 3.0}
    assert metric_modalities(metrics) == ["visual", "audio"]
    assert metric_modalities(metrics, "macro_f1") == ["audio"]
    assert metric_modalities({"accuracy": 1.0}) == []
