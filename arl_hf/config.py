"""`ARLConfig`: the training arguments of :class:`~arl_hf.ARLTrainer`.

A ``TrainingArguments`` subclass assembled from the options of the built-in strategies
(:data:`arl_hf.strategies.BUILTIN_OPTIONS`, derived from the strategy registry), the strategy
choice, the input checks and a few run settings. It imports no trainer: the command layer
builds its parser from it alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from transformers import TrainingArguments

from .numerics import check_finite_fields
from .strategies import BUILTIN_OPTIONS, STRATEGIES, ModulationOptions, StrategyChoice

__all__ = ["ARLConfig"]


@dataclass
class _InputChecks:
    validate_inputs: bool = field(
        default=True,
        metadata={
            "help": "Check every batch for non-finite values and out-of-range labels before the step "
            "(one host sync per step on GPU; disable for peak throughput once the data is trusted)."
        },
    )
    check_finite: bool = field(default=True, metadata={
        "help": "Stop training at the first step whose loss or gradient norm is NaN or infinite (read at the input "
        "check's host sync or at logging steps); check the parameters at every save, evaluation and the end."})


#: the bases of :class:`ARLConfig` before ``StrategyChoice`` and ``TrainingArguments``, in reverse
#: flag order (a dataclass lists the fields of its last base first): the shared gradient-modulation
#: option, the input checks, then each built-in strategy's options in registration order
_OPTION_BASES = (tuple(reversed([o for o in BUILTIN_OPTIONS if o is not ModulationOptions]))
                 + (_InputChecks, ModulationOptions))


@dataclass
class ARLConfig(*_OPTION_BASES, StrategyChoice, TrainingArguments):
    """Training arguments of :class:`~arl_hf.ARLTrainer` (a ``TrainingArguments`` subclass).

    The strategy options are those of the built-in strategies (``BUILTIN_OPTIONS``, derived from
    the registry of :mod:`arl_hf.strategies`: each strategy declares its options with its
    registration), composed here, so ``ARLConfig(strategy="ogm_ge", ogm_alpha=0.3)`` works;
    options of strategies registered outside the package travel in ``strategy_options``. Every
    option is checked once: here, where the strategies then copy them unchecked, or, for values
    written into the built config afterwards (as a hyper-parameter search trial does), where a
    strategy reads them (:meth:`options_checked`).

    Defaults that differ from ``TrainingArguments``: ``max_grad_norm=0`` (no clipping:
    HF's default 1.0 would clip the ARL-scaled gradients and silently undo the
    modulation; the paper does not clip, the authors' code clips at 40 — use the
    ``*_official`` presets or pass ``--max_grad_norm 40``).
    """

    early_stopping_patience: Optional[int] = field(
        default=None,
        metadata={"help": "Stop when metric_for_best_model has not improved for this many evaluations "
                  "(transformers.EarlyStoppingCallback; needs load_best_model_at_end). Default: no early stop."},
    )
    early_stopping_after_epoch: Optional[int] = field(
        default=None,
        metadata={"help": "Count early_stopping_patience only over evaluations after this epoch (e.g. the last of "
                  "lr_decay_epochs: no run stops before its schedule has played out). Default: from the first."},
    )
    lr_decay_epochs: Optional[List[int]] = field(
        default=None,
        metadata={"help": "Multiply the learning rate by lr_decay_factor at each of these epochs (MultiStepLR, "
                  "as the authors' code: 70). Replaces lr_scheduler_type when given."},
    )
    lr_decay_factor: float = field(default=0.1, metadata={"help": "Factor of lr_decay_epochs."})
    decay_all_parameters: bool = field(
        default=False,
        metadata={"help": "Apply weight decay to every parameter, biases and norm layers included, as "
                  "torch.optim.SGD(weight_decay=...) in the authors' code (Trainer's default exempts biases "
                  "and LayerNorm)."},
    )
    freeze_encoders: Optional[List[str]] = field(
        default=None,
        metadata={"help": "Freeze encoders (no gradient, no update): 'all' (or True in Python) or modality names "
                  "(--freeze_encoders text image). Applied when the optimizer is created."},
    )
    encoder_learning_rate: Optional[float] = field(
        default=None,
        metadata={"help": "Learning rate of the pretrained encoders (hf: encoders, timm encoders with pretrained "
                  "weights); the other parameters keep learning_rate. Default: learning_rate for all."},
    )
    max_grad_norm: float = field(
        default=0.0,
        metadata={
            "help": "Gradient clipping norm (0 disables). Default 0: clipping at HF's 1.0 would undo ARL's "
            "gradient scaling; the authors' code clips at 40."
        },
    )

    def __post_init__(self):
        if self.output_dir is None:
            self.output_dir = "arl_output"
        TrainingArguments.__post_init__(self)
        if self.activation_checkpointing and self.ddp_find_unused_parameters is None:
            # Trainer would turn unused-parameter detection off under checkpointing (for the reentrant
            # variant); the model checkpoints non-reentrantly, and several strategies leave the fusion
            # head or an encoder without gradient on some steps, which DDP must then be told about
            self.ddp_find_unused_parameters = True
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: unknown strategy {self.strategy!r}; expected one of {sorted(STRATEGIES)}")
        self.check_strategy_options()
        if self.early_stopping_patience is not None:
            if not isinstance(self.early_stopping_patience, int) or self.early_stopping_patience < 1:
                raise ValueError(f"early_stopping_patience: expected an int >= 1, got {self.early_stopping_patience!r}")
            if not self.load_best_model_at_end or self.metric_for_best_model is None:
                raise ValueError("early_stopping_patience: needs load_best_model_at_end=True and a "
                                 f"metric_for_best_model (got {self.load_best_model_at_end!r}, "
                                 f"{self.metric_for_best_model!r})")
        if self.early_stopping_after_epoch is not None:
            after = self.early_stopping_after_epoch
            if isinstance(after, bool) or not isinstance(after, int) or after < 0:
                raise ValueError("early_stopping_after_epoch: expected an int >= 0, got "
                                 f"{self.early_stopping_after_epoch!r}")
            if self.early_stopping_patience is None:
                raise ValueError("early_stopping_after_epoch: needs early_stopping_patience (got None)")
        for options in BUILTIN_OPTIONS:
            options.check(self)
        if self.lr_decay_epochs is not None and any(
                isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in self.lr_decay_epochs):
            raise ValueError(f"lr_decay_epochs: expected epochs (ints) >= 1, got {list(self.lr_decay_epochs)!r}")
        if not (0 < self.lr_decay_factor < float("inf")):
            raise ValueError(f"lr_decay_factor: expected a finite number > 0, got {self.lr_decay_factor!r}")
        self.freeze_encoders = _freeze_list(self.freeze_encoders)
        enc_lr = self.encoder_learning_rate
        if enc_lr is not None and (isinstance(enc_lr, bool) or not isinstance(enc_lr, (int, float))
                                   or not 0 <= enc_lr < float("inf")):
            raise ValueError(f"encoder_learning_rate: expected a finite number >= 0, got {enc_lr!r}")
        check_finite_fields(self)  # after the fields' own checks (their messages say more)
        object.__setattr__(self, "_checked_options", self._option_values())

    def _option_values(self) -> Dict[str, Any]:
        return {name: copy.deepcopy(getattr(self, name)) for name in _OPTION_NAMES}

    def options_checked(self) -> bool:
        """Whether the built-in strategies' options still hold the values checked when this config
        was built (a hyper-parameter search trial writes new values into it: those are checked
        where the strategy reads them)."""
        return self.__dict__.get("_checked_options") == self._option_values()


def _freeze_list(value: Any) -> Optional[List[str]]:
    """``freeze_encoders`` normalised: ``None`` (nothing frozen), ``["all"]`` or modality names."""
    if value is None or value is False or (isinstance(value, (list, tuple)) and not value):
        return None
    if value is True or value == "all":
        return ["all"]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"freeze_encoders: expected True, 'all' or a list of modality names, got {value!r}")
    if "all" in value and len(value) > 1:
        raise ValueError(f"freeze_encoders: 'all' stands alone; got {list(value)!r}")
    return list(value)


#: the names of the built-in strategies' options
_OPTION_NAMES = [f.name for cls in BUILTIN_OPTIONS for f in fields(cls)]
