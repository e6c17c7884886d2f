"""Hyper-parameter search through ARLTrainer(model_init=...): fresh model and strategy per trial,
the selected checkpoint's accuracy as the objective, the arguments restored afterwards."""

import pytest
import torch
from strategy_testutils import cfg, make_rows, mlp_model

from arl_hf import ARLTrainer
from arl_hf.protocol.tuning import search_space, tune

pytest.importorskip("optuna")


def tuning_args(tmp_path, **kw):
    base = dict(max_steps=-1, num_train_epochs=2, eval_strategy="epoch", save_strategy="epoch",
                load_best_model_at_end=True, metric_for_best_model="accuracy", greater_is_better=True,
                save_total_limit=1, strategy="arl")
    base.update(kw)
    return cfg(tmp_path, **base)


def test_two_arl_trials_both_train_with_fresh_strategy_state(tmp_path):
    rows = make_rows(32)
    built = []

    def model_init(trial=None):
        model = mlp_model(seed=len(built))
        built.append(model)
        return model

    trainer = ARLTrainer(model_init=model_init, args=tuning_args(tmp_path), train_dataset=rows, eval_dataset=rows)
    original_lr = trainer.args.learning_rate
    seen = []
    orig_build = trainer._build_strategy

    def spy():
        orig_build()
        seen.append((trainer.strategy, trainer.model, trainer.args.learning_rate, trainer.args.arl_temperature))

    trainer._build_strategy = spy
    space = search_space("arl", original_lr)
    assert set(space) == {"learning_rate", "arl_temperature", "arl_gamma"}
    result = tune(trainer, space, n_trials=2, sampler_seed=7)
    assert result["n_trials"] == 2 and set(result["best"]) == set(space)
    # __init__ built one model; each trial one more, and a strategy on it with the trial's values
    assert len(built) == 3 and len(seen) == 2
    (s1, m1, lr1, t1), (s2, m2, lr2, t2) = seen
    assert s1 is not s2 and m1 is not m2 and m1 is built[1] and m2 is built[2]
    assert (lr1, t1) != (lr2, t2)
    for s, m in ((s1, m1), (s2, m2)):
        assert s.modulator is not None and len(m.encoders["audio"]._forward_hooks) == 1
        # each trial trained: its model moved away from the init it was built with
        fresh = mlp_model(seed=built.index(m))
        assert any(not torch.equal(a, b) for a, b in zip(m.state_dict().values(), fresh.state_dict().values()))
    assert 0.0 <= result["best_objective"] <= 1.0
    # restored: the search wrote trial values into args, the trainer's own are back
    assert trainer.args.learning_rate == original_lr
    assert trainer.args.arl_temperature == tuning_args(tmp_path).arl_temperature


def test_trial_objective_is_the_selected_checkpoint_accuracy(tmp_path):
    rows = make_rows(32)
    trainer = ARLTrainer(model_init=lambda: mlp_model(),
                         args=tuning_args(tmp_path, strategy="none", num_train_epochs=3),
                         train_dataset=rows, eval_dataset=rows)
    result = tune(trainer, search_space("none", 0.1), n_trials=1, sampler_seed=3)
    evals = [e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e]
    assert len(evals) == 3
    assert result["best_objective"] == pytest.approx(max(evals))


def test_model_or_model_init_is_required(tmp_path):
    with pytest.raises(ValueError, match="model"):
        ARLTrainer(args=tuning_args(tmp_path))


def test_an_int_range_is_searched_as_ints_and_dr_tunes_its_interval(tmp_path):
    from arl_hf.presets import get_preset

    space = search_space("dr", 0.1)
    assert space["dr_interval_epochs"] == (2, 12, "int")
    # every interval of the range re-initialises before the benchmark's earliest stop
    bench = get_preset("avdigits_bench")
    assert space["dr_interval_epochs"][1] <= bench["early_stopping_after_epoch"] < bench["num_train_epochs"]
    rows = make_rows(32)
    trainer = ARLTrainer(model_init=lambda: mlp_model(), args=tuning_args(tmp_path, strategy="dr"),
                         train_dataset=rows, eval_dataset=rows)
    seen = []
    orig_build = trainer._build_strategy

    def spy():
        orig_build()
        seen.append(trainer.strategy.options.dr_interval_epochs)

    trainer._build_strategy = spy
    result = tune(trainer, space, n_trials=2, sampler_seed=5)
    best = result["best"]["dr_interval_epochs"]
    assert isinstance(best, int) and 2 <= best <= 12
    assert seen and all(isinstance(v, int) and 2 <= v <= 12 for v in seen)


def test_an_unknown_scale_is_refused():
    from arl_hf.protocol.tuning import optuna_space

    with pytest.raises(ValueError, match=r"search_space\['x'\]: expected a scale among .* got 'cubic'"):
        optuna_space({"x": (1.0, 2.0, "cubic")})
