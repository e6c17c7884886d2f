"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for arl_hf models and strategies.

Two ways in:

* **Through accelerate (GPUs).** ``ARLConfig(fsdp=True, fsdp_config={"fsdp_version": 2})``
  under ``accelerate launch`` / ``torchrun``. accelerate shards the model when it prepares
  it (the strategy's heads included: they are part of the model, ``model.strategy_state``);
  :class:`~arl_hf.ARLTrainer` then re-attaches parameter-mode gradient modulation to the
  sharded model. accelerate applies FSDP only to
  GPU-like multi-process runs (``DistributedType.FSDP``); wherever it would not (CPU /
  ``MULTI_CPU``, a single process, FSDP version 1), ``ARLTrainer`` raises a ``ValueError``
  (:func:`check_fsdp`) instead of training an unsharded or DDP model in silence.
* **A loop of your own (any backend, CPU/gloo included).** :func:`shard_model` applies
  ``fully_shard`` to a model following the arl_hf contract, its strategy's heads as units of
  their own;
  :func:`training_step` runs one strategy micro-batch; :func:`save_checkpoint` /
  :func:`load_checkpoint` write and read full (unsharded) state as safetensors + JSON. The
  CPU tests use exactly this loop around ``ARLTrainer(...).strategy`` to prove that a
  2-process sharded run equals one process on the global batch.

What sharding changes, and how the package copes:

* ``fully_shard`` replaces every parameter by a sharded ``DTensor``; during a unit's forward
  and backward the module holds *unsharded* parameters instead. Hooks on the original
  parameters never fire again, so parameter-mode gradient modulation re-registers its
  hooks on the unsharded parameters the first time each module runs
  (:meth:`~arl_hf.strategies.base.GradientModulator.track_sharded_parameters`): the scale
  applies before FSDP's reduce-scatter, once per micro-batch, exactly as without sharding.
* Output-mode modulation lives in forward hooks of the encoder modules, which
  ``fully_shard`` keeps: nothing to do.
* Strategy heads (G-Blending, MMPareto, MLA) live in ``model.strategy_state`` and are called
  outside the model's ``forward``: :func:`shard_model` makes each its own unit
  (:meth:`~arl_hf.strategies.base.Strategy.owned_modules`) before the root unit, and FSDP
  reduces their gradients as any other. Strategy buffers (prototypes, projector, initial
  weights, counters) are not sharded; the checkpoint holds them with the model's weights.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .log import get_logger
from .safety import atomic_write_json

logger = get_logger(__name__)

__all__ = [
    "fsdp_requested",
    "check_fsdp",
    "is_dtensor",
    "is_sharded",
    "shard_model",
    "training_step",
    "trainable_parameters",
    "save_checkpoint",
    "load_checkpoint",
    "full_model_state_dict",
    "save_tree",
    "load_tree",
]

MODEL_FILE = "model.safetensors"
OPTIMIZER_PREFIX = "optimizer"
TRAINING_STATE_FILE = "training_state.json"


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a ``torch.distributed.tensor.DTensor`` (a sharded FSDP2 parameter or gradient)."""
    if not isinstance(t, torch.Tensor) or not torch.distributed.is_available():
        return False
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without DTensor
        return False
    return isinstance(t, DTensor)


def is_sharded(module: nn.Module) -> bool:
    """Whether any parameter of ``module`` is a sharded ``DTensor`` (``fully_shard`` was applied)."""
    return any(is_dtensor(p) for p in module.parameters())


# ---- refusing FSDP where it would not be applied ----------------------------------------------
def fsdp_requested(args: Any) -> bool:
    """Whether the run asks for FSDP: ``args.fsdp`` / ``fsdp_config`` (``TrainingArguments`` turns
    them into ``fsdp_plugin_args``) or ``accelerate launch --use_fsdp`` (``ACCELERATE_USE_FSDP``)."""
    if getattr(args, "fsdp_plugin_args", None) is not None:
        return True
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")


def check_fsdp(accelerator: Any, args: Any) -> bool:
    """Raise where FSDP is requested but would not be applied; returns whether FSDP2 is active.

    accelerate turns a run into ``DistributedType.FSDP`` only for GPU-like multi-process types
    (``MULTI_GPU``, ``MULTI_XPU``, ``MULTI_NPU``, ...). With ``use_cpu`` the type is
    ``MULTI_CPU`` and the model is wrapped in DDP; a single process is not sharded at all.
    Either would be a silent non-FSDP run, so this raises a ``ValueError`` naming FSDP and why.
    FSDP version 1 (flat parameters) is refused too: gradient modulation, the strategies'
    heads and their state are FSDP2-only.
    """
    if not fsdp_requested(args):
        return False
    from accelerate.utils import DistributedType

    state = accelerator.state
    dtype = state.distributed_type
    if dtype != DistributedType.FSDP:
        kind = getattr(dtype, "value", str(dtype))
        why = ("accelerate shards only GPU-like multi-process runs (MULTI_GPU, MULTI_XPU, MULTI_NPU, ...); "
               f"this run's distributed type is {kind}")
        if dtype == DistributedType.MULTI_CPU:
            why += " (use_cpu / a CPU-only machine), which accelerate wraps in DDP"
        elif dtype == DistributedType.NO:
            why += " (one process, not launched by torchrun / accelerate launch), which is not sharded at all"
        raise ValueError(
            f"fsdp: FSDP was requested (fsdp / fsdp_config, or ACCELERATE_USE_FSDP) but would not be applied: "
            f"{why}. Training would silently run without sharding. Drop fsdp / fsdp_config, launch on GPUs "
            "with torchrun / accelerate launch, or shard yourself with arl_hf.fsdp.shard_model "
            "(works with gloo on CPU; see docs/scale.md)."
        )
    version = getattr(state.fsdp_plugin, "fsdp_version", 1)
    if version != 2:
        raise ValueError(
            f"fsdp_config['fsdp_version']: expected 2 (FSDP2, per-parameter DTensor sharding), got {version!r}; "
            "arl_hf's gradient modulation, strategy heads and their checkpoints support FSDP2 only"
        )
    return True


# ---- sharding a model and its strategy -----------------------------------------------------------
def _shard_kwargs(mesh=None, reshard_after_forward: bool = True, mp_policy=None, offload_policy=None) -> Dict[str, Any]:
    kw: Dict[str, Any] = {"reshard_after_forward": reshard_after_forward}
    if mesh is not None:
        kw["mesh"] = mesh
    if mp_policy is not None:
        kw["mp_policy"] = mp_policy
    if offload_policy is not None:
        kw["offload_policy"] = offload_policy
    return kw


def shard_model(model: nn.Module, strategy: Any = None, *, mesh=None, reshard_after_forward: bool = True,
                mp_policy=None, offload_policy=None, encoders_as_units: bool = True) -> nn.Module:
    """Apply FSDP2 to a model following the arl_hf contract, its strategy's heads included.

    Units: each encoder (``encoders_as_units``; not for intermediate fusion, whose encoders run
    stage by stage outside their ``forward``), each head the strategy calls on its own
    (:meth:`Strategy.owned_modules`, parts of ``model.strategy_state``), then the root model (the
    fusion and whatever is left). The fusion is not a unit of its own because its unimodal path
    reads the head's weights outside the fusion's ``forward``. Then the strategy re-attaches its
    gradient modulation (:meth:`Strategy.after_sharding`). Needs an initialised process group;
    returns ``model`` (sharded in place).
    """
    from torch.distributed.fsdp import fully_shard

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise ValueError("model: shard_model needs an initialised torch.distributed process group "
                         "(run under torchrun / accelerate launch)")
    if strategy is not None and not getattr(strategy, "supports_fsdp", True):
        name = getattr(strategy, "name", type(strategy).__name__)
        raise ValueError(f"strategy: {name!r} is not supported under FSDP "
                         "(see its supports_fsdp note); use DDP for it, or another strategy")
    kw = _shard_kwargs(mesh, reshard_after_forward, mp_policy, offload_policy)
    fusion = getattr(model, "fusion", None)
    intermediate = bool(getattr(fusion, "intermediate", False))
    encoders = getattr(model, "encoders", None)
    if encoders_as_units and not intermediate and isinstance(encoders, nn.ModuleDict):
        for enc in encoders.values():
            if any(p.requires_grad for p in enc.parameters()):
                fully_shard(enc, **kw)
    if strategy is not None:
        for module in strategy.owned_modules():
            if not is_sharded(module):
                fully_shard(module, **kw)
    fully_shard(model, **kw)
    if strategy is not None:
        strategy.after_sharding(model)
    return model


def trainable_parameters(model: nn.Module) -> List[nn.Parameter]:
    """The model's parameters that require gradients (the strategy's heads included: they are in
    ``model.strategy_state``): what the optimizer of a loop around :func:`training_step` holds."""
    return [p for p in model.parameters() if p.requires_grad]


def training_step(strategy: Any, model: nn.Module, inputs: Dict[str, torch.Tensor], context: Any) -> torch.Tensor:
    """One strategy micro-batch outside ``Trainer``: loss, backward, the strategy's post-backward
    work (its gradient edits, the end of gradient modulation). Returns the detached loss.
    The caller steps and zeroes its optimizer (over :func:`trainable_parameters`)."""
    result = strategy.compute_loss(model, inputs, context)
    result.loss.backward()
    strategy.after_backward(model, context)
    return result.loss.detach()


# ---- state as safetensors + JSON (no pickle) -----------------------------------------------------
def _flatten(obj: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        t = obj.full_tensor() if is_dtensor(obj) else obj
        tensors[key] = t.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        bad = [k for k in obj if not isinstance(k, (str, int))]
        if bad:
            raise ValueError(f"state: dict keys must be str or int to be saved as JSON, got {bad[0]!r}")
        return {"__dict__": [[k, _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, tensors) for v in obj], "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ValueError(f"state: cannot save a {type(obj).__name__} as safetensors + JSON "
                     "(expected tensors, numbers, strings, None, lists and dicts)")


def _unflatten(obj: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_unflatten(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


def save_tree(obj: Any, prefix: str) -> None:
    """Write a nested structure of tensors / numbers / strings as ``prefix.safetensors`` (the
    tensors, gathered to full tensors if sharded) and ``prefix.json`` (the rest)."""
    from safetensors.torch import save_file

    tensors: Dict[str, torch.Tensor] = {}
    tree = _flatten(obj, tensors)
    save_file(tensors, prefix + ".safetensors")
    atomic_write_json(prefix + ".json", tree, indent=None)


def load_tree(prefix: str) -> Any:
    """Read what :func:`save_tree` wrote (CPU tensors)."""
    from safetensors.torch import load_file

    for ext in (".json", ".safetensors"):
        if not os.path.isfile(prefix + ext):
            raise FileNotFoundError(f"{prefix + ext}: not found (expected a state written by arl_hf.fsdp.save_tree)")
    with open(prefix + ".json") as fh:
        tree = json.load(fh)
    return _unflatten(tree, load_file(prefix + ".safetensors"))


def _state_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The full (unsharded) state dict of a sharded or plain model, on CPU, on every rank
    (a collective under FSDP: every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    sd = get_model_state_dict(model, options=_state_options())
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def save_checkpoint(folder: str, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                    training_state: Optional[Dict[str, Any]] = None) -> str:
    """Save full (unsharded) state: ``model.safetensors`` (the strategy's heads and state
    included), ``optimizer.{safetensors,json}`` and ``training_state.json``. Every rank must call
    it (the shards are gathered); rank 0 writes. Returns ``folder``."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    from .distributed import rank

    model_sd = full_model_state_dict(model)
    optim_sd = None
    if optimizer is not None:
        optim_sd = get_optimizer_state_dict(model, optimizer, options=_state_options())
    if rank() == 0:
        os.makedirs(folder, exist_ok=True)
        save_file(model_sd, os.path.join(folder, MODEL_FILE))
        if optim_sd is not None:
            save_tree(optim_sd, os.path.join(folder, OPTIMIZER_PREFIX))
        atomic_write_json(os.path.join(folder, TRAINING_STATE_FILE), training_state or {}, indent=1, sort_keys=True)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return folder


def load_checkpoint(folder: str, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> Dict[str, Any]:
    """Load what :func:`save_checkpoint` wrote into a (sharded or plain) model (its strategy's
    state included) and optimizer; returns the training state. Every rank reads the folder (it must be visible to all
    of them) and keeps its own shards."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    path = os.path.join(folder, MODEL_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no model weights (expected a folder written by arl_hf.fsdp.save_checkpoint)")
    weights = load_file(path)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    set_model_state_dict(model, weights, options=_state_options())
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer,
                                 optim_state_dict=load_tree(os.path.join(folder, OPTIMIZER_PREFIX)),
                                 # a parameter that never got a gradient (MLA's fusion head) has no state
                                 options=_state_options(strict=False))
    with open(os.path.join(folder, TRAINING_STATE_FILE)) as fh:
        return json.load(fh)
