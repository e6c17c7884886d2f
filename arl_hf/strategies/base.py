"""The strategy interface the trainer calls, the strategy registry and gradient modulation.

A strategy owns one training micro-batch: it runs the model forward, returns the loss
and what to log, and may install per-modality gradient scales that act inside the
autograd graph of that micro-batch's loss (so they are correct under gradient
accumulation, mixed precision and DDP). It may also edit gradients after backward,
react to epoch boundaries and keep tensors of its own, which it attaches to the model
(:mod:`arl_hf.strategies.state`) so that they are trained, saved and loaded with it.

Adding a method is one module (a file of this package, which imports every module it holds, or
a file given to ``--strategy_module``)::

    @dataclass
    class MineOptions(StrategyOptions):
        mine_beta: float = field(default=1.0, metadata={"help": "Mine: weight of ..."})

    @register_strategy("mine", options=MineOptions, label="Mine", prefix="mine_")
    class Mine(Strategy):
        requires_unimodal_logits = True
        def compute_loss(self, model, inputs, context):
            out = self.forward(model, inputs, unimodal=True)
            loss = ... self.options.mine_beta ...
            return StrategyOutput(loss=loss, outputs=out, logs={"my_stat": ...})

and select it with ``ARLConfig(strategy="mine")``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..log import get_logger
from ..registry import Registry
from .options import ModulationOptions, StrategyOptions
from .state import StrategyState, attach_state, load_module_state, module_state
from .view import TrainerView

logger = get_logger(__name__)

#: strategy name -> :class:`Strategy` subclass
STRATEGIES: Registry = Registry("strategy", attribute="name")

S = TypeVar("S", bound=type)


#: the package whose modules hold the built-in strategies
BUILTIN_PACKAGE = __name__.rsplit(".", 1)[0]


def register_strategy(name: str, options: Optional[Type[StrategyOptions]] = None, *, label: Optional[str] = None,
                      prefix: Optional[str] = None) -> Callable[[S], S]:
    """Decorator registering a :class:`Strategy` class under ``name``.

    Args:
        options: its options dataclass (a :class:`~arl_hf.strategies.options.StrategyOptions`
            subclass; default: the parent's).
        label: its name in result tables (default: ``name``).
        prefix: the prefix its option names share (``"ogm_"``), which groups its flags in the
            documentation; every field of ``options`` must carry it.

    A strategy defined in a module of :mod:`arl_hf.strategies` is built in: its options become
    fields of :class:`~arl_hf.ARLConfig`, and the comparison protocol runs it by default."""
    if options is not None and not (isinstance(options, type) and is_dataclass(options)
                                    and issubclass(options, StrategyOptions)):
        raise ValueError(f"options: expected a StrategyOptions dataclass for strategy {name!r}, got {options!r}")
    if label is not None and (not isinstance(label, str) or not label):
        raise ValueError(f"label: expected a non-empty string for strategy {name!r}, got {label!r}")
    if prefix is not None:
        if not isinstance(prefix, str) or not prefix.endswith("_"):
            raise ValueError(f"prefix: expected a string ending in '_' for strategy {name!r}, got {prefix!r}")
        if options is not None:
            stray = [f.name for f in fields(options) if not f.name.startswith(prefix)]
            if stray:
                raise ValueError(f"{stray[0]}: option of strategy {name!r} ({options.__name__}) does not start "
                                 f"with its prefix {prefix!r}")

    def deco(cls: S) -> S:
        if options is not None:
            cls.options_class = options
        return STRATEGIES.register(name, label=label or name, option_prefix=prefix,
                                   builtin=cls.__module__.startswith(BUILTIN_PACKAGE + "."))(cls)

    return deco


def builtin_strategies() -> List[str]:
    """Names of the built-in strategies, in registration order: the single list the options of
    :class:`~arl_hf.ARLConfig`, the table labels, the documented flag prefixes and the default
    methods of ``arl-hf compare`` derive from."""
    return [name for name in STRATEGIES.names() if getattr(STRATEGIES[name], "builtin", False)]


def builtin_options() -> List[type]:
    """The options dataclasses :class:`~arl_hf.ARLConfig` is assembled from, in flag order: the
    shared :class:`~arl_hf.strategies.options.ModulationOptions`, then each built-in strategy's."""
    out: List[type] = [ModulationOptions]
    for name in builtin_strategies():
        cls = STRATEGIES[name].options_class
        if cls is not None and cls not in out:
            out.append(cls)
    return out


def strategy_labels() -> Dict[str, str]:
    """Registered name -> label in result tables, for every registered strategy."""
    return {name: getattr(STRATEGIES[name], "label", name) for name in STRATEGIES.names()}


def strategy_prefixes() -> Dict[str, str]:
    """Option-name prefix -> strategy name, for the built-in strategies that declare one."""
    return {STRATEGIES[n].option_prefix: n for n in builtin_strategies() if STRATEGIES[n].option_prefix}


def build_strategy(name: str, args: Any, modalities: Sequence[str]) -> "Strategy":
    """Instantiate the registered strategy ``name``."""
    return STRATEGIES.get_or_raise(name, "strategy")(args, list(modalities))


@dataclass
class StepContext:
    """Where training stands when a strategy is called."""

    epoch: float = 0.0  #: fractional epoch (``trainer.state.epoch``), 0-based
    global_step: int = 0
    training: bool = True


@dataclass
class StrategyOutput:
    """What :meth:`Strategy.compute_loss` returns."""

    loss: torch.Tensor
    outputs: Any = None
    logs: Dict[str, torch.Tensor] = field(default_factory=dict)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by the scale that
    the modulator holds *at backward time* (set after the forward, before backward)."""

    @staticmethod
    def forward(ctx, x, modulator, index):
        ctx.modulator = modulator
        ctx.index = index
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        scales = ctx.modulator.scales
        if scales is None or grad is None:
            return grad, None, None
        return (grad.float() * scales[ctx.index]).to(grad.dtype), None, None


class GradientModulator:
    """Multiplies every gradient entering ``model.encoders[m]`` by ``scales[m]``.

    ``mode="output"`` (default) wraps each encoder module's output in an identity
    autograd function via a forward hook: the scale lives inside the graph that
    ``forward`` builds, which is what DDP needs, and it costs one multiply per
    feature map. Because an encoder's parameter gradients are linear in its output
    gradient, this equals scaling all of its parameter gradients. ``mode="parameters"``
    registers a hook on every encoder parameter instead, for models whose encoders
    feed the fusion from inside (intermediate fusion) rather than through their output.
    """

    def __init__(self, model: nn.Module, modalities: Sequence[str], mode: str = "output"):
        if mode not in ("output", "parameters"):
            raise ValueError(f"gradient_modulation: expected 'output' or 'parameters', got {mode!r}")
        if not hasattr(model, "encoders") or not all(m in model.encoders for m in modalities):
            raise ValueError(
                f"model: expected an `encoders` ModuleDict with keys {list(modalities)} (the model contract)"
            )
        self.modalities = list(modalities)
        self.mode = mode
        self.scales: Optional[torch.Tensor] = None
        self.fired: set = set()
        self._handles: List[Any] = []
        self._tracked: Optional[Dict[int, Any]] = None  # id -> weakref of the parameters hooked after sharding
        self._untracked: Dict[str, int] = {}  # module name -> direct parameters, until its forward runs
        for i, m in enumerate(self.modalities):
            enc = model.encoders[m]
            if mode == "output":
                self._handles.append(enc.register_forward_hook(self._output_hook(i, m)))
            else:
                for p in enc.parameters():
                    if p.requires_grad:
                        self._handles.append(p.register_hook(self._param_hook(i)))

    def _output_hook(self, index: int, modality: str):
        def hook(module, args, output):
            self.fired.add(modality)
            if not torch.is_grad_enabled():
                return output
            return _map_tensors(output, lambda t: _ScaleGrad.apply(t, self, index) if t.requires_grad else t)

        # Run eagerly under torch.compile: traced, the backward would bake in the scales
        # held at trace time (measured: modulation silently lost) and `fired` would not update.
        return torch.compiler.disable(hook)

    def _param_hook(self, index: int):
        def hook(grad):
            if self.scales is None:
                return grad
            return grad * self.scales[index].to(grad.dtype)

        return hook

    def track_sharded_parameters(self, model: nn.Module) -> None:
        """Keep parameter-mode hooks working after ``fully_shard`` (FSDP2).

        ``fully_shard`` replaces each parameter by a sharded ``DTensor``, and during a unit's
        forward and backward the modules hold *unsharded* parameters: the hooks registered on
        the original parameters never fire again. This installs a forward pre-hook on every
        encoder submodule that owns parameters; the first time it runs, the module holds its
        unsharded parameters (the enclosing unit has all-gathered them) and a gradient hook is
        registered on each (once: FSDP2 reuses the same unsharded parameter objects). The scale
        then applies before FSDP's reduce-scatter, per micro-batch. Output mode needs nothing
        (forward hooks on modules survive sharding). Call once, after sharding.
        """
        if self.mode != "parameters" or self._tracked is not None:
            return
        self._tracked = {}
        for i, m in enumerate(self.modalities):
            for name, sub in model.encoders[m].named_modules():
                own = [p for p in sub.parameters(recurse=False) if p.requires_grad]
                if own:
                    label = f"encoders.{m}.{name}" if name else f"encoders.{m}"
                    self._untracked[label] = len(own)
                    self._handles.append(sub.register_forward_pre_hook(self._track_hook(i, label)))

    def _track_hook(self, index: int, label: str):
        from ..fsdp import is_dtensor

        def hook(module, args):
            if not torch.is_grad_enabled():
                return None
            for p in module.parameters(recurse=False):
                seen = self._tracked.get(id(p))
                if p.requires_grad and not is_dtensor(p) and (seen is None or seen() is not p):
                    self._tracked[id(p)] = weakref.ref(p)
                    self._handles.append(p.register_hook(self._param_hook(index)))
            self._untracked.pop(label, None)
            return None

        return torch.compiler.disable(hook)

    def check_tracked(self) -> None:
        """After the first training forward under sharding: warn about encoder modules whose own
        parameters were never seen unsharded (their ``forward`` never ran), since their gradients
        are not modulated."""
        if self._tracked is None or not self._untracked:
            return
        names = sorted(self._untracked)
        logger.warning(
            "gradient_modulation='parameters' under FSDP: the forward of %d encoder module(s) holding parameters "
            "never ran (%s%s), so their gradients are not modulated", len(names), ", ".join(names[:5]),
            ", ..." if len(names) > 5 else "")
        self._untracked.clear()

    def set_scales(self, scales: Optional[torch.Tensor]) -> None:
        """Install ``(M,)`` scales for the next backward (``None``: no modulation)."""
        self.scales = None if scales is None else scales.detach().float()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _map_tensors(obj, fn):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple):
        return type(obj)(_map_tensors(o, fn) for o in obj)
    if isinstance(obj, list):
        return [_map_tensors(o, fn) for o in obj]
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


class Strategy:
    """Base strategy: the plain fused cross-entropy (``strategy="none"``).

    Subclasses override :meth:`compute_loss` and optionally the other hooks. They
    reach the model only through the contract (``encoders``, the forward keywords,
    the output fields) and reduce across processes only through
    :mod:`arl_hf.distributed`.
    """

    name = "base"
    #: whether :meth:`forward` needs ``unimodal_logits`` from the model
    requires_unimodal_logits = False
    #: "output" or "parameters": how :class:`GradientModulator` reaches the encoders
    gradient_modulation = "output"
    #: the strategy's own knobs tuned by the comparison protocol (``--tune_trials``), beside the
    #: learning rate: option name -> ``(low, high, "log" | "linear" | "int")``
    search_space: Dict[str, Tuple[float, float, str]] = {}
    #: whether some parameter of the model gets no gradient from this strategy's loss (MLA does not
    #: train the model's fusion head): DDP must then run with ``find_unused_parameters=True``, which
    #: costs an extra graph traversal per step, so ARLTrainer sets it only for such strategies
    ddp_find_unused_parameters = False
    #: whether the strategy is correct with FSDP2-sharded parameters (ARLTrainer refuses it otherwise)
    supports_fsdp = True
    #: the fewest modalities the strategy is defined for, and why (refused when the strategy is built)
    min_modalities: int = 1
    min_modalities_reason: str = ""
    #: the options dataclass (``register_strategy(name, options=...)``); ``self.options`` holds its values
    options_class: Optional[Type[StrategyOptions]] = None
    #: set by :func:`register_strategy`: the name in result tables, the prefix of the option names, and
    #: whether the strategy is built in (defined in a module of :mod:`arl_hf.strategies`)
    label: str = "base"
    option_prefix: Optional[str] = None
    builtin: bool = False

    def __init__(self, args: Any, modalities: Sequence[str]):
        """Read the strategy's options (``self.options``), the gradient-modulation choice and the
        run's seed (``self.seed``, from which heads and subsets are drawn) out of ``args`` (an
        :class:`~arl_hf.ARLConfig`); the strategy keeps no reference to ``args``."""
        self.modalities = list(modalities)
        if len(self.modalities) < self.min_modalities:
            raise ValueError(
                f"modalities: strategy {self.name!r} expected at least {self.min_modalities} modalities, got "
                f"{len(self.modalities)} ({self.modalities}); {self.min_modalities_reason}")
        self.modulator: Optional[GradientModulator] = None
        self.options: Any = self.options_class.from_args(args) if self.options_class is not None else None
        self.modulation: ModulationOptions = ModulationOptions.from_args(args)
        self.seed: int = int(getattr(args, "seed", 42))
        self.trainer: Optional[TrainerView] = None
        self.state_module: Optional[StrategyState] = None

    # ---- set-up -----------------------------------------------------------------
    def setup(self, trainer: Optional[TrainerView], model: nn.Module) -> None:
        """Called once with the unwrapped model before the optimizer and the distributed wrapping
        exist: installs modulation and attaches :meth:`build_state` to the model as
        ``model.strategy_state`` (replacing one of another strategy)."""
        self.trainer = trainer
        self._setup_modulation(model)
        self.state_module = attach_state(model, self.name, self.build_state(model))

    def build_state(self, model: nn.Module) -> Optional[StrategyState]:
        """The strategy's heads (parameters) and state (buffers), or ``None`` (default)."""
        return None

    def _setup_modulation(self, model: nn.Module) -> None:
        if self.uses_gradient_scaling():
            mode = getattr(model, "arl_gradient_modulation", None) or self.gradient_modulation
            if self.modulation.gradient_modulation != "auto":
                mode = self.modulation.gradient_modulation
            self.modulator = GradientModulator(model, self.modalities, mode)

    def uses_gradient_scaling(self) -> bool:
        """Whether this strategy installs per-modality gradient scales."""
        return False

    def owned_modules(self) -> List[nn.Module]:
        """The strategy's heads that are called as a whole outside the model's ``forward`` (parts of
        ``model.strategy_state``): each is sharded as its own FSDP unit, before the model's root
        unit (:func:`arl_hf.fsdp.shard_model`). Default: none."""
        return []

    def after_sharding(self, model: nn.Module) -> None:
        """Called once after ``fully_shard`` was applied to the model and :meth:`owned_modules`:
        re-attaches parameter-mode gradient modulation to the sharded parameters."""
        if self.modulator is not None:
            self.modulator.track_sharded_parameters(model)

    # ---- per step -------------------------------------------------------------------
    def forward(self, model: nn.Module, inputs: Dict[str, torch.Tensor], unimodal: bool = False):
        """Run the model on the modality inputs (labels are not passed: the strategy owns the loss)."""
        if self.modulator is not None:
            self.modulator.fired.clear()
        # a missing modality is left for the model's own input check to name
        feed = {m: inputs[m] for m in self.modalities if m in inputs}
        out = model(**feed, return_unimodal_logits=unimodal)
        # modulators without FSDP re-hooking (e.g. OGM-GE's conv-only one) track nothing
        if self.modulator is not None and getattr(self.modulator, "_untracked", None) and torch.is_grad_enabled():
            self.modulator.check_tracked()
        if self.modulator is not None and self.modulator.mode == "output" and torch.is_grad_enabled():
            silent = [m for m in self.modalities if m not in self.modulator.fired]
            if silent:
                raise ValueError(
                    f"encoders[{silent[0]!r}]: its forward was never called, so gradient modulation cannot "
                    "reach it through its output; set ARLConfig(gradient_modulation='parameters') or give the "
                    "model an attribute arl_gradient_modulation='parameters'"
                )
        return out

    def compute_loss(self, model: nn.Module, inputs: Dict[str, torch.Tensor], context: StepContext) -> StrategyOutput:
        """Loss of one micro-batch (mean over its samples). Default: fused cross-entropy."""
        out = self.forward(model, inputs, unimodal=False)
        loss = F.cross_entropy(out.logits.float(), inputs["labels"])
        return StrategyOutput(loss=loss, outputs=out, logs={"loss_fused": loss.detach()})

    @classmethod
    def owns_predictions(cls) -> bool:
        """Whether :meth:`predict` uses more than the model's own fusion (a strategy head in
        ``model.strategy_state``): evaluating a checkpoint then needs this strategy."""
        return cls.predict is not Strategy.predict

    def predict(self, model: nn.Module, inputs: Dict[str, torch.Tensor]):
        """Fused logits and per-modality logits for evaluation: ``(logits, {m: logits_m})``."""
        out = self.forward(model, inputs, unimodal=True)
        return out.logits, dict(out.unimodal_logits)

    def set_gradient_scales(self, scales: Optional[torch.Tensor]) -> None:
        """Scales ``(M,)`` applied to the gradients entering each encoder in the next backward."""
        if self.modulator is None:
            raise RuntimeError("set_gradient_scales: this strategy did not enable gradient scaling")
        self.modulator.set_scales(scales)

    def after_backward(self, model: nn.Module, context: StepContext) -> None:
        """Called after each micro-batch's backward, before clipping (edit ``p.grad`` here)."""
        if self.modulator is not None:
            self.modulator.set_scales(None)

    # ---- epochs, evaluation, state ----------------------------------------------------
    def on_epoch_begin(self, trainer: Optional[TrainerView], model: nn.Module, context: StepContext) -> None:
        """Called at the start of every training epoch."""

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """Full CPU copies of ``model.strategy_state``'s tensors (gathered when FSDP-sharded: then
        every rank must call it); ``{}`` without state. Saving and loading need nothing of it:
        the tensors are part of the model."""
        if self.state_module is None:
            return {}
        return module_state(self.state_module)

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Load what :meth:`state_dict` returned into ``model.strategy_state``."""
        if self.state_module is None:
            if state:
                raise ValueError(f"state: strategy {self.name!r} keeps no state, got keys {sorted(state)[:5]}")
            return
        load_module_state(self.state_module, state)


@register_strategy("none", label="Concatenation")
class NoStrategy(Strategy):
    """Plain training on the fused cross-entropy: the concatenation baseline."""
