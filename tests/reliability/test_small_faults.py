"""Small faults of the data or the set-up, each refused with a clear error or handled with a warning
before training: a last training batch of one example reaching BatchNorm, OGM-GE / AGM with one
modality, empty evaluation splits, labels given as strings."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from strategy_testutils import cfg, make_rows, mlp_model

from arl_hf import ARLTrainer, MultimodalConfig, MultimodalModel
from arl_hf.data import MultimodalCollator


def bn_model(seed=0):
    """A BatchNorm CNN on 2x2 'spectrograms' (1x1 after its stride-2 convolution, so one example is
    one value per channel) and an MLP."""
    torch.manual_seed(seed)
    return MultimodalModel(MultimodalConfig(
        modalities={"audio": {"encoder": "cnn", "in_chans": 1, "channels": [4]},
                    "visual": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8]}}, num_labels=3))


def bn_rows(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"audio": torch.randn(1, 2, 2, generator=g) + r["labels"], "visual": r["visual"], "labels": r["labels"]}
            for r in make_rows(n, seed=seed)]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings_of_checks():
    handler = _Records()
    logger = logging.getLogger("transformers.arl_hf.trainer_checks")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


# ---------------------------------------------------------------- a last batch of one example
@pytest.mark.parametrize("accumulation", [1, 2])
def test_a_last_batch_of_one_example_is_dropped_when_the_model_has_batchnorm(tmp_path, warnings_of_checks,
                                                                            accumulation):
    args = cfg(tmp_path, max_steps=-1, num_train_epochs=2, gradient_accumulation_steps=accumulation)
    t = ARLTrainer(model=bn_model(), args=args, train_dataset=bn_rows(17))
    assert len(t.get_train_dataloader()) == 2  # 8 + 8, the 17th example left out
    before = [p.detach().clone() for p in t.model.parameters()]
    out = t.train()
    assert out.global_step == 2 * 2 // accumulation and math.isfinite(out.training_loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))
    assert t.args.dataloader_drop_last is False  # the arguments are left as given
    assert len(warnings_of_checks) == 1
    assert "17 examples in batches of 8 leave a last batch of 1 example" in warnings_of_checks[0]
    assert "BatchNorm" in warnings_of_checks[0]


@pytest.mark.parametrize("n, model, max_steps, batches", [
    (18, bn_model, -1, 3),    # a last batch of 2: kept
    (16, bn_model, -1, 2),    # no partial batch
    (17, mlp_model, -1, 3),   # no BatchNorm: a batch of one is fine
    (17, bn_model, 2, 3),     # the run stops before the last batch
])
def test_runs_whose_last_batch_is_fine_keep_every_batch(tmp_path, warnings_of_checks, n, model, max_steps, batches):
    rows = bn_rows(n) if model is bn_model else make_rows(n)
    t = ARLTrainer(model=model(), args=cfg(tmp_path, max_steps=max_steps, num_train_epochs=1), train_dataset=rows)
    loader = t.get_train_dataloader()
    assert len(loader) == batches and sum(len(b["labels"]) for b in loader) == n
    assert warnings_of_checks == []


def test_the_bn_model_would_fail_on_one_example():
    """What the drop avoids: BatchNorm in training refuses one value per channel."""
    model = bn_model().train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model(**{k: v[None] for k, v in bn_rows(1)[0].items() if k != "labels"})


# ---------------------------------------------------------------- ARL, OGM-GE and AGM need two modalities
@pytest.mark.parametrize("strategy", ["arl", "ogm_ge", "agm"])
def test_two_modality_strategies_refuse_a_single_modality(tmp_path, strategy):
    torch.manual_seed(0)
    model = MultimodalModel(MultimodalConfig(
        modalities={"audio": {"encoder": "mlp", "input_dim": 6, "hidden_dims": [8]}}, num_labels=3))
    rows = [{"audio": r["audio"], "labels": r["labels"]} for r in make_rows(8)]
    with pytest.raises(ValueError, match=rf"modalities: strategy '{strategy}' expected at least 2 modalities, "
                                         r"got 1 \(\['audio'\]\)"):
        ARLTrainer(model=model, args=cfg(tmp_path, strategy=strategy), train_dataset=rows)
    # two modalities: built, and the step modulates
    t = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy=strategy), train_dataset=make_rows(8))
    assert t.train().global_step == 1


# ---------------------------------------------------------------- empty evaluation splits
def test_evaluate_and_predict_refuse_an_empty_split(tmp_path):
    import datasets

    t = ARLTrainer(model=mlp_model(), args=cfg(tmp_path), train_dataset=make_rows(8), eval_dataset=[])
    with pytest.raises(ValueError, match=r"eval_dataset: the 'eval' split is empty \(0 examples\)"):
        t.evaluate()
    with pytest.raises(ValueError, match=r"eval_dataset: the 'validation' split is empty"):
        t.evaluate(eval_dataset=datasets.Dataset.from_dict({"audio": [], "visual": [], "labels": []}),
                   metric_key_prefix="validation")
    with pytest.raises(ValueError, match=r"eval_dataset: the 'eval_held_out' split is empty"):
        t.evaluate(eval_dataset={"kept": make_rows(4), "held_out": []})
    with pytest.raises(ValueError, match=r"test_dataset: the 'test' split is empty"):
        t.predict([])
    metrics = t.evaluate(eval_dataset=make_rows(4))
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0


def test_train_refuses_an_empty_eval_split_before_the_first_step(tmp_path):
    model = mlp_model()
    before = [p.detach().clone() for p in model.parameters()]
    t = ARLTrainer(model=model, args=cfg(tmp_path, eval_strategy="steps", eval_steps=1),
                   train_dataset=make_rows(8), eval_dataset={"val": make_rows(4), "other": []})
    with pytest.raises(ValueError, match=r"eval_dataset: the 'eval_other' split is empty"):
        t.train()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(ValueError, match=r"train_dataset: the 'train' split is empty"):
        ARLTrainer(model=mlp_model(), args=cfg(tmp_path), train_dataset=[]).train()
    # evaluation off: an empty eval_dataset is not used, training runs
    off = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, eval_strategy="no"), train_dataset=make_rows(8),
                     eval_dataset=[])
    assert off.train().global_step == 1


# ---------------------------------------------------------------- labels as strings
NAMES = ["cat", "dog", "cow"]


def _named(rows, key):
    return [{"audio": r["audio"], "visual": r["visual"], key: NAMES[int(r["labels"])]} for r in rows]


@pytest.mark.parametrize("key", ["labels", "label"])
@pytest.mark.parametrize("kind", ["rows", "dataset", "torch"])
def test_string_labels_are_refused_with_what_to_do(tmp_path, key, kind):
    import datasets

    rows = _named(make_rows(8), key)
    if kind != "rows":
        rows = datasets.Dataset.from_list([{k: v.tolist() if torch.is_tensor(v) else v for k, v in r.items()}
                                           for r in rows])
        if kind == "torch":
            rows = rows.with_format("torch")
    message = rf"{key}: the labels are strings \('(cat|dog|cow)'.*map the class names to ids.*class_encode_column"
    t = ARLTrainer(model=mlp_model(), args=cfg(tmp_path), train_dataset=rows, eval_dataset=rows)
    with pytest.raises(ValueError, match=message.replace("map", "Map")):
        t.train()
    with pytest.raises(ValueError, match=message.replace("map", "Map")):
        t.evaluate()
    if kind == "dataset":  # the fix the message gives
        encoded = rows.class_encode_column(key)
        fixed = ARLTrainer(model=mlp_model(), args=cfg(tmp_path), train_dataset=encoded, eval_dataset=encoded)
        assert fixed.train().global_step == 1 and "eval_accuracy" in fixed.evaluate()


def test_the_collator_refuses_string_labels():
    rows = _named(make_rows(3), "genre")
    with pytest.raises(ValueError, match=r"genre: the labels are strings \('.*class_encode_column\('genre'\)"):
        MultimodalCollator(["audio", "visual"], label_key="genre")(rows)
