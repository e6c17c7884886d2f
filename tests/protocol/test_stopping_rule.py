"""One early-stopping rule for every method: patience counts only after the last scheduled
learning-rate decay, so no run stops before its schedule has played out."""

import pytest
from strategy_testutils import cfg, make_rows, mlp_model

from arl_hf import ARLTrainer
from arl_hf.presets import PRESETS, get_preset


def _epochs_run(tmp_path, **kw):
    rows = make_rows(24)
    args = cfg(tmp_path, max_steps=-1, num_train_epochs=10, learning_rate=0.0, eval_strategy="epoch",
               save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="accuracy",
               save_total_limit=1, early_stopping_patience=1, lr_decay_epochs=[3, 5], **kw)
    trainer = ARLTrainer(model=mlp_model(), args=args, train_dataset=rows, eval_dataset=rows[:12])
    trainer.train()
    evals = [e for e in trainer.state.log_history if "eval_accuracy" in e]
    assert len({e["eval_accuracy"] for e in evals}) == 1  # a learning rate of 0: the accuracy stalls from epoch 1
    return trainer.state.epoch


def test_patience_counts_only_after_the_last_decay(tmp_path):
    # counted from the start, patience 1 stops the stalled run at epoch 2, before both decays
    assert _epochs_run(tmp_path / "plain") == pytest.approx(2.0)
    # counted after the last decay (epoch 5): the first counted evaluation is epoch 6's
    assert _epochs_run(tmp_path / "after", early_stopping_after_epoch=5) == pytest.approx(6.0)


def test_after_epoch_is_checked():
    from arl_hf import ARLConfig

    common = dict(output_dir="unused", eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                  metric_for_best_model="accuracy", report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match="early_stopping_after_epoch: expected an int >= 0, got -1"):
        ARLConfig(**common, early_stopping_patience=2, early_stopping_after_epoch=-1)
    with pytest.raises(ValueError, match="early_stopping_after_epoch: needs early_stopping_patience"):
        ARLConfig(**common, early_stopping_after_epoch=3)


def test_every_preset_with_decays_and_early_stopping_waits_for_the_last_decay():
    checked = 0
    for name, preset in PRESETS.items():
        if preset.get("early_stopping_patience") and preset.get("lr_decay_epochs"):
            assert preset.get("early_stopping_after_epoch") == max(preset["lr_decay_epochs"]), name
            checked += 1
    assert checked >= 2  # avdigits_bench and its ResNet-18 twin


def test_the_bench_preset_resolves_to_the_rule():
    from arl_hf.scripts.train import parse_args

    training_args, _, _, run_args = parse_args(["--preset", "avdigits_bench"], overrides={"output_dir": "unused"})
    assert run_args.preset == "avdigits_bench"
    assert training_args.lr_decay_epochs == [7, 12] and training_args.early_stopping_patience == 4
    assert training_args.early_stopping_after_epoch == 12 == get_preset("avdigits_bench")["early_stopping_after_epoch"]
