"""`ARLConfig` and `ARLTrainer`: the HF Trainer, delegating the loss to a strategy.

The trainer is thin: it builds the strategy named by ``ARLConfig.strategy``, hands it
each micro-batch (``compute_loss``), lets it touch gradients after backward, averages
what it logs over the logging window and across ranks (TRL's ``_metrics`` pattern),
evaluates fused and per-modality heads, and saves the strategy's state with every
checkpoint. Everything method-specific lives in :mod:`arl_hf.strategies`.
"""

from __future__ import annotations

import copy
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from .log import get_logger

from .distributed import all_reduce_mean
from .strategies.base import STRATEGIES, StepContext, Strategy, build_strategy
from .validation import validate_batch

logger = get_logger(__name__)

STRATEGY_STATE_NAME = "strategy_state.pt"

ARL_PAPER = {
    "title": "Improving Multimodal Learning via Imbalanced Learning",
    "venue": "ICCV 2025",
    "id": "2507.10203",
    "citation": (
        "@inproceedings{wei2025improving,\n"
        "  title     = {Improving Multimodal Learning via Imbalanced Learning},\n"
        "  author    = {Wei, Shicai and Luo, Chunbo and Luo, Yang},\n"
        "  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},\n"
        "  year      = {2025}\n"
        "}"
    ),
}


@dataclass
class ARLConfig(TrainingArguments):
    """Training arguments of :class:`ARLTrainer` (a ``TrainingArguments`` subclass).

    Defaults that differ from ``TrainingArguments``: ``max_grad_norm=0`` (no clipping:
    HF's default 1.0 would clip the ARL-scaled gradients and silently undo the
    modulation; the paper does not clip, the authors' code clips at 40 — use the
    ``*_official`` presets or pass ``--max_grad_norm 40``).
    """

    strategy: str = field(
        default="arl",
        metadata={
            "help": "Training strategy: 'arl' (default), 'none' (plain fused loss, the concatenation "
            "baseline) or another registered strategy (see arl_hf.strategies.STRATEGIES)."
        },
    )
    arl_temperature: float = field(
        default=4.0, metadata={"help": "ARL temperature T of Eq. 18 (> 0). Paper: 8 for CREMA-D, 4 otherwise."}
    )
    arl_gamma: float = field(
        default=4.0, metadata={"help": "ARL weight gamma of the unimodal losses in Eq. 22 (>= 0)."}
    )
    arl_variant: str = field(
        default="paper",
        metadata={
            "help": "Coefficient formula: 'paper' (Eq. 4, 17, 18) or 'official' (the authors' released code).",
            "choices": ["paper", "official"],
        },
    )
    arl_warmup_epochs: int = field(
        default=0,
        metadata={"help": "Epochs before ARL starts: gamma = 1 and no gradient modulation (authors' code: 6)."},
    )
    arl_all_reduce: bool = field(
        default=True,
        metadata={"help": "All-reduce the ARL statistics across processes so every rank uses the same coefficients."},
    )
    arl_unimodal_loss: bool = field(
        default=True, metadata={"help": "Ablation (Table 5): include the unimodal bias regularisation (gamma term)."}
    )
    arl_asymmetric: bool = field(
        default=True, metadata={"help": "Ablation (Table 5): apply the asymmetric coefficients to encoder gradients."}
    )
    arl_residual: bool = field(
        default=True,
        metadata={"help": "Ablation (Table 5): gradient residual, g + g*a_m (True) versus g*a_m (False)."},
    )
    gradient_modulation: str = field(
        default="auto",
        metadata={
            "help": "How encoder gradients are scaled: 'output' (an identity autograd function on each "
            "encoder's output), 'parameters' (hooks on every encoder parameter, for intermediate fusion) "
            "or 'auto' (the model's `arl_gradient_modulation` attribute, else the strategy's choice).",
            "choices": ["auto", "output", "parameters"],
        },
    )
    validate_inputs: bool = field(
        default=True,
        metadata={
            "help": "Check every batch for non-finite values and out-of-range labels before the step "
            "(one host sync per step on GPU; disable for peak throughput once the data is trusted)."
        },
    )
    # ---- comparison methods (arl_hf/strategies/<name>.py; defaults from the papers, see docs/strategies.md) ----
    ogm_alpha: float = field(
        default=0.8, metadata={"help": "OGM-GE: alpha of k = 1 - tanh(alpha * rho) for the dominant modality (>= 0)."}
    )
    ogm_start_epoch: int = field(default=0, metadata={"help": "OGM-GE: first epoch (0-based) of modulation."})
    ogm_end_epoch: int = field(default=50, metadata={"help": "OGM-GE: last epoch (inclusive) of modulation."})
    ogm_noise: bool = field(
        default=True, metadata={"help": "OGM-GE: add the generalisation-enhancement Gaussian noise (False: plain OGM)."}
    )
    ogm_conv_only: bool = field(
        default=False,
        metadata={"help": "OGM-GE: modulate only 4-D (conv kernel) gradients, as the released CNN code; "
                  "default False modulates every parameter of each encoder."},
    )
    agm_alpha: float = field(default=1.5, metadata={"help": "AGM: alpha of coeff = exp(alpha * min(target - ratio, 10))."})
    pmr_alpha: float = field(
        default=1.0, metadata={"help": "PMR: weight of the prototypical cross-entropy of the weaker modality (>= 0)."}
    )
    pmr_momentum: float = field(
        default=0.2,
        metadata={"help": "PMR: weight of the old prototypes in c <- (1 - m) * c_new + m * c_old (in [0, 1])."},
    )
    pmr_proto_fraction: float = field(
        default=0.1, metadata={"help": "PMR: fraction of the training set used to compute prototypes (in (0, 1])."}
    )
    pmr_interval_epochs: int = field(default=1, metadata={"help": "PMR: recompute prototypes every N epochs."})
    gblending_interval_epochs: int = field(
        default=10,
        metadata={"help": "G-Blending: re-estimate the blending weights on the validation split every N epochs."},
    )
    mmpareto_gamma: float = field(
        default=1.5, metadata={"help": "MMPareto: gamma scaling the Pareto-combined encoder gradients (> 0)."}
    )
    mla_alpha: float = field(
        default=0.1,
        metadata={"help": "MLA: base of the projector's regulariser alpha = mla_alpha ** (1 + batch / batches)."},
    )
    mla_dynamic_fusion: bool = field(
        default=True,
        metadata={"help": "MLA: fuse the shared head's outputs with entropy-based weights (False: equal weights)."},
    )
    dr_interval_epochs: int = field(default=20, metadata={"help": "D&R: diagnose and re-initialise every N epochs."})
    dr_lambda: float = field(default=3.0, metadata={"help": "D&R: lambda of w = tanh(lambda * |purity gap|) (>= 0)."})
    dr_max_times: int = field(default=3, metadata={"help": "D&R: at most this many re-initialisations."})
    fixed_multipliers: Optional[List[float]] = field(
        default=None,
        metadata={"help": "fixed: constant gradient multiplier per modality, in modality order "
                  "(e.g. '5 1' = audio x5, Fig. 1(b)); default all 1."},
    )
    early_stopping_patience: Optional[int] = field(
        default=None,
        metadata={"help": "Stop when metric_for_best_model has not improved for this many evaluations "
                  "(transformers.EarlyStoppingCallback; needs load_best_model_at_end). Default: no early stop."},
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
        super().__post_init__()
        if self.activation_checkpointing and self.ddp_find_unused_parameters is None:
            # Trainer would turn unused-parameter detection off under checkpointing (for the reentrant
            # variant); the model checkpoints non-reentrantly, and several strategies leave the fusion
            # head or an encoder without gradient on some steps, which DDP must then be told about
            self.ddp_find_unused_parameters = True
        # make sure the built-in strategies are registered
        from . import strategies  # noqa: F401

        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: unknown strategy {self.strategy!r}; expected one of {sorted(STRATEGIES)}")
        if not (self.arl_temperature > 0 and self.arl_temperature < float("inf")):
            raise ValueError(f"arl_temperature: expected a finite number > 0, got {self.arl_temperature!r}")
        if not self.arl_gamma >= 0:
            raise ValueError(f"arl_gamma: expected a number >= 0, got {self.arl_gamma!r}")
        if self.arl_variant not in ("paper", "official"):
            raise ValueError(f"arl_variant: expected 'paper' or 'official', got {self.arl_variant!r}")
        if self.arl_warmup_epochs < 0:
            raise ValueError(f"arl_warmup_epochs: expected an int >= 0, got {self.arl_warmup_epochs!r}")
        if self.early_stopping_patience is not None:
            if not isinstance(self.early_stopping_patience, int) or self.early_stopping_patience < 1:
                raise ValueError(f"early_stopping_patience: expected an int >= 1, got {self.early_stopping_patience!r}")
            if not self.load_best_model_at_end or self.metric_for_best_model is None:
                raise ValueError("early_stopping_patience: needs load_best_model_at_end=True and a "
                                 f"metric_for_best_model (got {self.load_best_model_at_end!r}, "
                                 f"{self.metric_for_best_model!r})")
        if self.lr_decay_epochs is not None and any(
                isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in self.lr_decay_epochs):
            raise ValueError(f"lr_decay_epochs: expected epochs (ints) >= 1, got {list(self.lr_decay_epochs)!r}")
        if not (0 < self.lr_decay_factor < float("inf")):
            raise ValueError(f"lr_decay_factor: expected a finite number > 0, got {self.lr_decay_factor!r}")
        from .strategies.common import check_peer_fields

        check_peer_fields(self)


def _node_split(dataset) -> Optional[tuple]:
    """``(rank, world_size)`` of a ``datasets.IterableDataset`` made by ``split_dataset_by_node``
    (``datasets`` records it as the dataset's distributed config), else ``None``."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is optional for the core
        return None
    if not isinstance(dataset, datasets.IterableDataset):
        return None
    config = getattr(dataset, "_distributed", None)
    if config is None:
        return None
    return int(config.rank), int(config.world_size)


def model_modalities(model: nn.Module) -> List[str]:
    """Modality names of a model following the contract (its ``encoders`` keys, in order)."""
    encoders = getattr(model, "encoders", None)
    if not isinstance(encoders, nn.ModuleDict) or len(encoders) < 1:
        raise ValueError(
            f"model: {type(model).__name__} has no `encoders` nn.ModuleDict keyed by modality "
            "(required by the arl_hf model contract)"
        )
    return list(encoders.keys())


class _StrategyCallback(TrainerCallback):
    """Forwards epoch boundaries to the strategy."""

    def __init__(self, trainer: "ARLTrainer"):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        t = self.trainer
        t.strategy.on_epoch_begin(t, t.model, t._context(training=True))


class _EarlyStopping(EarlyStoppingCallback):
    """``EarlyStoppingCallback`` whose patience counter restarts with every ``train()``
    (hyper-parameter search trials reuse the trainer and its callbacks)."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.early_stopping_patience_counter = 0
        return super().on_train_begin(args, state, control, **kwargs)


class ARLTrainer(Trainer):
    """``transformers.Trainer`` for multimodal models, training with ARL or another strategy.

    Args:
        model: a :class:`~arl_hf.MultimodalModel` or any model following the contract
            (``encoders`` ModuleDict keyed by modality; ``forward(**modalities,
            return_unimodal_logits=...)`` returning ``logits`` and ``unimodal_logits``).
        args: :class:`ARLConfig` (defaults to ``ARLConfig()``).
        strategy: a :class:`~arl_hf.strategies.Strategy` instance overriding ``args.strategy``.
        compute_metrics: defaults to accuracy and macro-F1, fused and per modality.
        **kwargs: everything else ``Trainer`` accepts.
    """

    _tag_names = ["arl-hf", "arl", "multimodal", "modality-imbalance"]
    _name = "ARL"
    _paper = ARL_PAPER
    # compute_loss returns a per-micro-batch mean: Trainer must divide by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: Optional[nn.Module] = None,
        args: Optional[ARLConfig] = None,
        strategy: Optional[Strategy] = None,
        compute_metrics: Optional[Callable] = None,
        model_init: Optional[Callable[..., nn.Module]] = None,
        **kwargs: Any,
    ):
        if args is None:
            args = ARLConfig()
        if not isinstance(args, ARLConfig):
            raise ValueError(f"args: expected an ARLConfig, got {type(args).__name__}")
        if model is None and model_init is None:
            raise ValueError("model: expected a model or a model_init callable, got neither")
        if strategy is not None and model_init is not None:
            raise ValueError("strategy: a strategy instance cannot be rebuilt for every model_init model; "
                             "pass args.strategy (a registered name) instead")
        self._given_strategy = strategy  # read by _build_accelerator_args, inside Trainer.__init__
        super().__init__(model=model, args=args, model_init=model_init, **kwargs)
        self.modalities = model_modalities(self.model)
        if compute_metrics is None:
            from .metrics import make_compute_metrics

            compute_metrics = make_compute_metrics(self.modalities)
        self.compute_metrics = compute_metrics
        self._given_strategy = strategy
        self._build_strategy()
        self._check_strategy_supports_fsdp()
        self.add_callback(_StrategyCallback(self))
        if args.early_stopping_patience is not None:
            self.add_callback(_EarlyStopping(early_stopping_patience=args.early_stopping_patience))
        self._metrics: Dict[str, Dict[str, List[torch.Tensor]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        num_labels = getattr(getattr(self.model, "config", None), "num_labels", None)
        self._num_labels: Optional[int] = num_labels

    def _build_strategy(self) -> None:
        """A fresh strategy (and its state) for ``self.model`` under ``self.args``."""
        self.strategy = self._given_strategy or build_strategy(self.args.strategy, self.args, self.modalities)
        self.strategy.setup(self, self.model)

    # ---- model_init and hyper-parameter search ------------------------------------------
    def _hp_search_setup(self, trial) -> None:
        # Trainer.train re-creates the model from model_init, then applies a trial's values to
        # self.args here: the strategy is rebuilt on the new model with those values, so no
        # state (hooks, running means, heads) leaks from one training to the next.
        super()._hp_search_setup(trial)
        if self.model_init is not None:
            if model_modalities(self.model) != self.modalities:
                raise ValueError(f"model_init: returned a model with modalities {model_modalities(self.model)}, "
                                 f"expected {self.modalities}")
            self._build_strategy()

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        result = super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)
        if trial is not None and self.hp_search_backend is not None and self.state.best_metric is not None:
            # the objective of a trial is the metric of the checkpoint selected on validation
            # (metric_for_best_model), not that of the last evaluation
            self.objective = float(self.state.best_metric)
        return result

    def hyperparameter_search(self, *args: Any, **kwargs: Any):
        """``Trainer.hyperparameter_search``, with ``self.args`` restored afterwards (a trial's
        values are written into it) and the strategy rebuilt for the restored arguments."""
        saved = copy.deepcopy(self.args)
        try:
            return super().hyperparameter_search(*args, **kwargs)
        finally:
            self.args = saved
            self.create_accelerator_and_postprocess()

    # ---- distributed engines: DDP's unused-parameter search, FSDP2 ------------------------
    def _strategy_class(self):
        given = getattr(self, "_given_strategy", None)
        return type(given) if given is not None else STRATEGIES[self.args.strategy]

    def _build_accelerator_args(self, **kwargs) -> Dict[str, Any]:
        """``Trainer``'s accelerator arguments, with DDP's ``find_unused_parameters`` set by the
        strategy: ``Trainer`` turns it on for every ``PreTrainedModel``, which makes DDP traverse
        the autograd graph after every backward, looking for parameters without a gradient. Only a
        strategy that leaves some unused (``Strategy.ddp_find_unused_parameters``: MLA) keeps it.
        An explicit ``ddp_find_unused_parameters`` always wins."""
        from accelerate.utils import DistributedDataParallelKwargs

        out = super()._build_accelerator_args(**kwargs)
        if self.args.ddp_find_unused_parameters is None:
            need = bool(getattr(self._strategy_class(), "ddp_find_unused_parameters", False))
            for handler in out.get("kwargs_handlers") or []:
                if isinstance(handler, DistributedDataParallelKwargs) and handler.find_unused_parameters and not need:
                    handler.find_unused_parameters = False
        return out

    def create_accelerator_and_postprocess(self) -> None:
        """``Trainer``'s, then FSDP is refused where accelerate would not shard
        (:func:`arl_hf.fsdp.check_fsdp`: CPU / ``MULTI_CPU``, a single process, FSDP version 1)."""
        before = os.environ.get("ACCELERATE_USE_FSDP")
        super().create_accelerator_and_postprocess()
        from .fsdp import check_fsdp

        try:
            self._fsdp2 = check_fsdp(self.accelerator, self.args)
        except ValueError:
            # accelerate exported ACCELERATE_USE_FSDP=true for its FSDP plugin: later trainers of this
            # process must not inherit a request this one refused
            if before is None:
                os.environ.pop("ACCELERATE_USE_FSDP", None)
            else:
                os.environ["ACCELERATE_USE_FSDP"] = before
            raise
        self._fsdp_strategy_ready = not self._fsdp2

    def _check_strategy_supports_fsdp(self) -> None:
        if getattr(self, "_fsdp2", False) and not getattr(self.strategy, "supports_fsdp", True):
            raise ValueError(
                f"strategy: {self.args.strategy!r} is not supported under FSDP (it needs per-parameter statistics "
                "or gradients of whole, unsharded parameters); use DDP for it, or another strategy"
            )

    def _shard_strategy_for_fsdp(self) -> None:
        """Under accelerate's FSDP2, once the model is sharded: shard the strategy's heads with the
        same mesh and policies, give them to the optimizer, re-attach gradient modulation."""
        from .fsdp import is_sharded, shard_strategy

        if self._fsdp_strategy_ready or self.optimizer is None or not is_sharded(self.model):
            return
        plugin = self.accelerator.state.fsdp_plugin
        mesh = getattr(self.accelerator, "torch_device_mesh", None)
        config = getattr(self.accelerator, "parallelism_config", None)
        if mesh is not None and config is not None:
            mesh = mesh[tuple(config.fsdp_dim_names)]
        shard_strategy(self.strategy, self.model, mesh=mesh, reshard_after_forward=plugin.reshard_after_forward,
                       mp_policy=plugin.mixed_precision_policy or None, offload_policy=plugin.cpu_offload or None)
        known = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        extra = [p for p in self.strategy.extra_parameters() if p.requires_grad and id(p) not in known]
        if extra:
            self.optimizer.add_param_group({"params": extra, "weight_decay": self.args.weight_decay})
        self._fsdp_strategy_ready = True

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        # Trainer creates the scheduler right after accelerator.prepare: under FSDP2 the strategy's
        # heads join the optimizer here, before the scheduler records its parameter groups
        if getattr(self, "_fsdp2", False):
            self._shard_strategy_for_fsdp()
        return self._create_run_scheduler(num_training_steps, optimizer)

    # ---- columns: modality keys must survive Trainer's column filtering -----------------
    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = list(self.modalities) + ["labels", "label", "label_ids"]

    def _remove_unused_columns(self, dataset, description: Optional[str] = None):
        # A dataset with an on-the-fly transform (`with_transform`, or the `arl_hf` format of
        # arl_hf.data) needs its raw columns: filter keys in the collator instead.
        fmt = getattr(dataset, "format", None) or {}
        if fmt.get("type") in ("custom", "arl_hf"):
            return dataset
        return super()._remove_unused_columns(dataset, description)

    def get_train_dataloader(self):
        if _node_split(self.train_dataset) is not None:
            return self._with_key_filter(self._node_split_train_dataloader)
        return self._with_key_filter(super().get_train_dataloader)

    def _node_split_train_dataloader(self):
        """Training loader of a ``datasets.IterableDataset`` already split with
        ``split_dataset_by_node`` (e.g. :func:`arl_hf.data.streaming.stream_split`).

        accelerate would lose data twice over: with ``dispatch_batches`` (its default for an
        ``IterableDataset``) rank 0 reads only its own split and broadcasts it; without, it shards
        the dataset again across processes. So ``dispatch_batches=False`` is required and the loader
        is prepared as the single-process loader of this rank's split (device placement, epochs)."""
        from accelerate.data_loader import prepare_data_loader
        from torch.utils.data import DataLoader

        dataset = self.train_dataset
        rank, world = _node_split(dataset)
        if world != self.args.world_size or rank != self.args.process_index:
            raise ValueError(
                f"train_dataset: split_dataset_by_node(rank={rank}, world_size={world}) does not match this process "
                f"(rank {self.args.process_index} of {self.args.world_size})")
        if self.args.world_size > 1 and self.accelerator.dispatch_batches is not False:
            raise ValueError(
                "accelerator_config.dispatch_batches: expected False for a training set split with "
                f"split_dataset_by_node, got {self.accelerator.dispatch_batches!r} (accelerate's default for an "
                "IterableDataset is True: rank 0 reads its own split and broadcasts it, and the other ranks' data is "
                "never seen); pass ARLConfig(accelerator_config={'dispatch_batches': False})")
        collator = self._get_collator_with_removed_columns(self.data_collator, description="training")
        loader = DataLoader(
            dataset, batch_size=self._train_batch_size, collate_fn=collator,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers,
            prefetch_factor=self.args.dataloader_prefetch_factor,
            multiprocessing_context=self.args.dataloader_multiprocessing_context)
        acc = self.accelerator
        return prepare_data_loader(
            loader, acc.device, num_processes=1, process_index=0, put_on_device=acc.device_placement,
            rng_types=acc.rng_types.copy(), dispatch_batches=False, non_blocking=acc.non_blocking,
            use_stateful_dataloader=acc.use_stateful_dataloader)

    def get_eval_dataloader(self, eval_dataset=None):
        return self._with_key_filter(lambda: super(ARLTrainer, self).get_eval_dataloader(eval_dataset))

    def get_test_dataloader(self, test_dataset):
        return self._with_key_filter(lambda: super(ARLTrainer, self).get_test_dataloader(test_dataset))

    def _with_key_filter(self, make_loader):
        collator = self.data_collator
        if self.args.remove_unused_columns and collator is not None:
            self.data_collator = self._get_collator_with_removed_columns(collator)
        try:
            return make_loader()
        finally:
            self.data_collator = collator

    def _prepare_inputs(self, inputs):
        """``Trainer``'s (tensors to the device), then frames left encoded by the data pipeline
        (``MultimodalTransform(decode_frames="device")``) are decoded and transformed on the device."""
        inputs = super()._prepare_inputs(inputs)
        if isinstance(inputs, dict) and any(type(v).__name__ == "EncodedFrames" for v in inputs.values()):
            from .data.transforms import decode_frames_on_device

            inputs = decode_frames_on_device(inputs, self.args.device)
        return inputs

    # ---- the step -------------------------------------------------------------------------
    def _context(self, training: bool) -> StepContext:
        epoch = self.state.epoch if self.state is not None and self.state.epoch is not None else 0.0
        step = self.state.global_step if self.state is not None else 0
        return StepContext(epoch=float(epoch), global_step=int(step), training=training)

    def _strategy_inputs(self, inputs: Dict[str, Any]) -> Dict[str, Any]:
        if "labels" not in inputs:
            for alt in ("label", "label_ids"):
                if alt in inputs:
                    inputs = dict(inputs)
                    inputs["labels"] = inputs.pop(alt)
                    break
        if "labels" not in inputs:
            raise ValueError(f"labels: the batch has no 'labels' key (keys: {sorted(inputs)})")
        if self.args.validate_inputs:
            validate_batch(inputs, self.modalities, self._num_labels)
        return inputs

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        inputs = self._strategy_inputs(inputs)
        result = self.strategy.compute_loss(model, inputs, self._context(training=model.training))
        mode = "train" if model.training else "eval"
        for k, v in result.logs.items():
            self._metrics[mode][k].append(v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v)))
        return (result.loss, result.outputs) if return_outputs else result.loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not getattr(self, "_fsdp_strategy_ready", True):
            raise ValueError("fsdp: the strategy's heads were not sharded with the model (the scheduler was "
                             "created before accelerate prepared the model); let Trainer.train create the "
                             "optimizer and scheduler")
        custom = getattr(self.strategy, "training_step", None)
        if custom is not None:
            loss = custom(self, model, inputs, num_items_in_batch)
        else:
            loss = super().training_step(model, inputs, num_items_in_batch)
        self.strategy.after_backward(model, self._context(training=True))
        return loss

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if getattr(self, "_fsdp2", False):
            return optimizer  # the heads join after sharding (create_scheduler): accelerate remaps the model's only
        extra = [p for p in self.strategy.extra_parameters() if p.requires_grad]
        if extra:
            known = {id(p) for g in optimizer.param_groups for p in g["params"]}
            extra = [p for p in extra if id(p) not in known]
            if extra:
                optimizer.add_param_group({"params": extra, "weight_decay": self.args.weight_decay})
        return optimizer

    # ---- evaluation: fused and per-modality logits ---------------------------------------
    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        inputs = self._strategy_inputs(inputs)
        with torch.no_grad():
            logits, unimodal = self.strategy.predict(model, inputs)
            labels = inputs["labels"]
            loss = F.cross_entropy(logits.float(), labels).detach()
        if prediction_loss_only:
            return loss, None, None
        stacked = torch.stack([logits] + [unimodal[m] for m in self.modalities], dim=1).float()
        return loss, stacked, labels

    # ---- logging: average over the window and across ranks -------------------------------
    def log(self, logs: Dict[str, float], start_time: Optional[float] = None) -> None:
        mode = "train" if self.model.training else "eval"
        pending = self._metrics[mode]
        if pending:
            keys = sorted(pending)
            means = torch.stack([torch.stack([v.float().to(pending[k][0].device) for v in pending[k]]).mean() for k in keys])
            means = all_reduce_mean(means).cpu().tolist()
            prefix = "eval_" if mode == "eval" else ""
            logs = {**logs, **{f"{prefix}{k}": v for k, v in zip(keys, means)}}
            pending.clear()
        super().log(logs, start_time)

    # ---- strategy state with every checkpoint --------------------------------------------
    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        """``Trainer.save_model``, plus: ``config.training_strategy`` records the strategy, and
        the strategy's state (its heads, prototypes, ...) is written beside the weights as
        ``strategy_state.pt`` — a strategy that predicts through its own head (MLA) cannot be
        evaluated without it (``arl_hf.runner.evaluate_checkpoint`` loads it)."""
        config = getattr(self.model, "config", None)
        if config is not None:
            config.training_strategy = self.args.strategy
        super().save_model(output_dir, _internal_call)
        state = self.strategy.state_dict()
        if state and self.args.should_save:  # also each checkpoint: Trainer._save_checkpoint calls save_model
            torch.save(state, os.path.join(output_dir or self.args.output_dir, STRATEGY_STATE_NAME))
        self._write_model_card_on_save(output_dir)

    def _save(self, output_dir: Optional[str] = None, state_dict=None):
        # under FSDP the strategy's heads sit in the model (arl_hf.fsdp.attach_strategy_modules): the saved
        # model weights leave them out (they are in strategy_state.pt)
        if state_dict is not None and getattr(self, "_fsdp2", False):
            from .fsdp import without_strategy_modules

            state_dict = without_strategy_modules(state_dict)
        return super()._save(output_dir, state_dict=state_dict)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, STRATEGY_STATE_NAME)
        if os.path.isfile(path):
            self.strategy.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    # ---- learning-rate schedule and weight decay (ARLConfig.lr_decay_*, decay_all_parameters) --
    def get_decay_parameter_names(self, model) -> List[str]:
        """Names of the parameters under weight decay: every trainable one with
        ``decay_all_parameters`` (as ``torch.optim.SGD(weight_decay=...)``), else Trainer's
        (biases and norm layers exempt)."""
        if self.args.decay_all_parameters:
            return [n for n, p in model.named_parameters() if p.requires_grad]
        return super().get_decay_parameter_names(model)

    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch on this process, as the Trainer counts them: batches of
        the training batch size (``state.train_batch_size`` once training, else
        ``args.train_batch_size``) times ``world_size`` (the last one dropped with
        ``dataloader_drop_last``), ``gradient_accumulation_steps`` batches per step."""
        if self.train_dataset is None:
            raise ValueError("train_dataset: steps_per_epoch needs a training set")
        n = len(self.train_dataset)
        per_process = getattr(self.state, "train_batch_size", None) or self.args.train_batch_size
        batch = per_process * max(1, self.args.world_size)
        batches = n // batch if self.args.dataloader_drop_last else math.ceil(n / batch)
        return max(1, math.ceil(max(1, batches) / self.args.gradient_accumulation_steps))

    def _create_run_scheduler(self, num_training_steps: int, optimizer=None):
        """With ``lr_decay_epochs``: the learning rate times ``lr_decay_factor`` at each of those
        epochs (MultiStepLR stepped per epoch, as a per-step ``LambdaLR``); else Trainer's."""
        if not self.args.lr_decay_epochs or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer if optimizer is not None else self.optimizer
        spe = self.steps_per_epoch()
        milestones, factor = sorted(int(e) for e in self.args.lr_decay_epochs), float(self.args.lr_decay_factor)

        def lr_lambda(step: int) -> float:
            epoch = step // spe  # the epoch the next optimizer step belongs to
            return factor ** sum(1 for e in milestones if epoch >= e)

        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    # ---- the arl-hf model card -------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys: Optional[List[str]] = None,
                 metric_key_prefix: str = "eval") -> Dict[str, float]:
        """``Trainer.evaluate``; the loss, accuracy and macro-F1 (fused and per head) are kept
        for the model card (:attr:`evaluated_metrics`) under ``metric_key_prefix``."""
        metrics = super().evaluate(eval_dataset=eval_dataset, ignore_keys=ignore_keys,
                                   metric_key_prefix=metric_key_prefix)
        from .evaluation import split_metrics

        kept = split_metrics(metrics, metric_key_prefix)
        if kept:
            during = bool(self.is_in_train)
            step = int(self.state.global_step) if self.state is not None else 0
            last = self.__dict__.get("_card_evaluations")
            # one set per model state: a new step, or the first evaluation after (or during) training, starts one
            if last is None or last["step"] != step or last["during_train"] != during:
                last = self.__dict__["_card_evaluations"] = {"step": step, "during_train": during, "splits": {}}
            last["splits"][metric_key_prefix] = kept
        return metrics

    @property
    def evaluated_metrics(self) -> Dict[str, Dict[str, float]]:
        """The metrics of the last evaluations this trainer ran on the current model (split ->
        ``loss``, ``accuracy``, ``macro_f1``, ``accuracy_<m>``, ``macro_f1_<m>``), keyed by
        ``metric_key_prefix``: those run together after training (e.g. ``validation`` and
        ``test``), else the last one during training (``eval``)."""
        last = self.__dict__.get("_card_evaluations")
        return {k: dict(v) for k, v in last["splits"].items()} if last else {}

    def configure_model_card(self, enabled: bool = True, **defaults: Any) -> None:
        """Whether :meth:`save_model` / :meth:`push_to_hub` write the card, and the defaults of
        :meth:`create_model_card`'s keyword arguments (``license``, ``tags``, ``preset``,
        ``plots``, ``reproduce_command``, ``encoder_init``, ...)."""
        self.__dict__["_card_settings"] = (bool(enabled), dict(defaults))

    def create_model_card(self, language: Optional[str] = None, license: Optional[str] = None,
                          tags: Optional[Any] = None, model_name: Optional[str] = None,
                          finetuned_from: Optional[str] = None, tasks: Optional[Any] = None,
                          dataset_tags: Optional[Any] = None, dataset: Optional[Any] = None,
                          dataset_args: Optional[Any] = None, **details: Any) -> Optional[str]:
        """Write the arl-hf card into ``output_dir/README.md`` (main process); returns its path.

        ``library_name: arl-hf``, the trainer's tags (``_tag_names``) and paper (``_paper``),
        the model's modalities, encoders and recorded preprocessing, the hyper-parameters, and
        one :class:`~huggingface_hub.EvalResult` per split, head and metric of
        :attr:`evaluated_metrics` (when the data is a Hub dataset repo; the results table
        always). ``push_to_hub(license=..., tags=..., finetuned_from=..., language=...,
        tasks=..., dataset_tags=..., model_name=...)`` passes its arguments here; ``tags`` add
        to those of :meth:`configure_model_card`, the other arguments override them.
        ``dataset_args`` is accepted for ``Trainer`` compatibility and unused.
        """
        enabled, defaults = self.__dict__.get("_card_settings", (True, {}))
        if not enabled or not self.is_world_process_zero():
            return None
        from .cards import trainer_summary, write_model_card

        given = {"language": language, "license": license, "model_name": model_name, "tasks": tasks,
                 "finetuned_from": finetuned_from, "dataset_tags": dataset_tags, "dataset": dataset, **details}
        options = {**defaults, **{k: v for k, v in given.items() if v is not None}}
        options["tags"] = [str(t) for t in (defaults.get("tags") or [])] + (
            [tags] if isinstance(tags, str) else [str(t) for t in (tags or [])])
        return write_model_card(trainer_summary(self, self.evaluated_metrics, **options), self.args.output_dir)

    def _write_model_card_on_save(self, output_dir: Optional[str] = None) -> None:
        """The card goes with the model saved into ``output_dir`` (not with each checkpoint)."""
        if output_dir is None or os.path.abspath(output_dir) == os.path.abspath(self.args.output_dir):
            self.create_model_card()
