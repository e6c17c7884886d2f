"""`ARLTrainer`: the HF Trainer, delegating the loss to a strategy (its arguments: :mod:`arl_hf.config`).

The trainer is thin: it builds the strategy named by ``ARLConfig.strategy``, hands it
each micro-batch (``compute_loss``), lets it touch gradients after backward, averages
what it logs over the logging window and across ranks (TRL's ``_metrics`` pattern) and
evaluates fused and per-modality heads. The strategy's own tensors are a submodule of the
model (``model.strategy_state``), so the optimizer, DDP and every checkpoint handle them as
the model's. Everything method-specific lives in :mod:`arl_hf.strategies`; strategies see
the trainer only through :class:`~arl_hf.strategies.TrainerView`.
"""

from __future__ import annotations

import copy
import os
from collections import defaultdict
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback

from .config import ARLConfig
from .distributed import all_reduce_mean
from .log import get_logger
from .node_split import node_split, node_split_train_dataloader
from .numerics import FiniteTrainingMixin, batch_size_of
from .paper import ARL_PAPER
from .predictions import ModalityOutputsMixin, use_split_tensorboard_tags
from .quiet import QuietMixin
from .schedule import ScheduleMixin
from .strategies import STRATEGIES, StepContext, Strategy, build_strategy
from .trainer_card import ModelCardMixin
from .trainer_checks import DataChecksMixin

logger = get_logger(__name__)


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
    (hyper-parameter search trials reuse the trainer and its callbacks) and, with
    ``args.early_stopping_after_epoch = e``, counts only evaluations made after epoch ``e``
    (those up to it leave the counter at 0, so no run stops before epoch ``e + patience``)."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.early_stopping_patience_counter = 0
        return super().on_train_begin(args, state, control, **kwargs)

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        # an evaluation under another prefix (the splits evaluated after training) is none to watch
        if not any(str(k).startswith("eval_") for k in metrics):
            return None
        after = getattr(args, "early_stopping_after_epoch", None)
        if after is not None and state.epoch is not None and state.epoch <= after + 1e-6:
            self.early_stopping_patience_counter = 0
            return None
        return super().on_evaluate(args, state, control, metrics, **kwargs)


class ARLTrainer(ModalityOutputsMixin, QuietMixin, ModelCardMixin, ScheduleMixin, DataChecksMixin, FiniteTrainingMixin,
                 Trainer):
    """``transformers.Trainer`` for multimodal models, training with ARL or another strategy.

    Args:
        model: a :class:`~arl_hf.MultimodalModel` or any model following the contract
            (``encoders`` ModuleDict keyed by modality; ``forward(**modalities,
            return_unimodal_logits=...)`` returning ``logits`` and ``unimodal_logits``).
        args: :class:`ARLConfig` (defaults to ``ARLConfig()``).
        strategy: a :class:`~arl_hf.strategies.Strategy` instance overriding ``args.strategy``.
        compute_metrics: a function of an ``EvalPrediction`` whose ``predictions`` are the fused
            logits ``(N, C)`` (default: accuracy and macro-F1); the trainer adds the per-modality
            ``accuracy_<m>`` and ``macro_f1_<m>`` itself. ``evaluate()`` / ``predict()`` return the
            fused logits; the per-modality ones are ``last_modality_logits`` and
            ``predict(..., return_modality_logits=True)`` (:mod:`arl_hf.predictions`).
        **kwargs: everything else ``Trainer`` accepts.
    """

    _tag_names = ["arl-hf", "arl", "multimodal", "modality-imbalance"]
    _name = "ARL"
    _paper = ARL_PAPER
    # compute_loss returns the micro-batch's share of the window's mean loss (_window_loss): not divided again
    loss_is_scaled_for_ga = True

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
            from .metrics import compute_classification_metrics

            compute_metrics = compute_classification_metrics
        self.compute_metrics = compute_metrics
        use_split_tensorboard_tags(self)
        self._build_strategy()
        self._check_strategy_supports_fsdp()
        self.add_callback(_StrategyCallback(self))
        if args.early_stopping_patience is not None:
            self.add_callback(_EarlyStopping(early_stopping_patience=args.early_stopping_patience))
        self._metrics: Dict[str, Dict[str, List[torch.Tensor]]] = {
            "train": defaultdict(list), "eval": defaultdict(list)
        }
        num_labels = getattr(getattr(self.model, "config", None), "num_labels", None)
        self._num_labels: Optional[int] = num_labels

    def _build_strategy(self) -> None:
        """A fresh strategy for ``self.model`` under ``self.args``; its tensors join the model
        (``model.strategy_state``) before the optimizer and the distributed wrapping are made."""
        self.strategy = self._given_strategy or build_strategy(self.args.strategy, self.args, self.modalities)
        self.strategy.setup(self, self.model)

    # ---- what strategies see of the trainer (arl_hf.strategies.TrainerView) --------------
    @property
    def train_batch_size(self) -> int:
        """Per-device training batch size."""
        return int(self._train_batch_size)

    @property
    def world_size(self) -> int:
        return int(self.args.world_size)

    @property
    def process_index(self) -> int:
        return int(self.args.process_index)

    @property
    def device(self) -> torch.device:
        return self.args.device

    def is_sync_step(self) -> bool:
        """Whether the micro-batch just run is the last of its accumulation window."""
        return bool(self.accelerator.sync_gradients)

    def loss_scale(self) -> float:
        """The mixed-precision loss scale (1.0 without an enabled ``GradScaler``)."""
        scaler = getattr(self.accelerator, "scaler", None)
        return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0

    def num_train_batches(self) -> int:
        """Batches of one training epoch on this process (0 when the loader has no length)."""
        try:
            return len(self.get_train_dataloader())
        except Exception:  # pragma: no cover - iterable datasets
            return 0

    def eval_batches(self, dataset) -> Iterator[Dict[str, Any]]:
        """Batches of ``dataset`` through the evaluation loader, on the device, ``labels`` normalised;
        the global RNG is left untouched (a DataLoader iterator draws a seed from it)."""
        with torch.random.fork_rng(devices=[]):
            for batch in self.get_eval_dataloader(dataset):
                yield self._strategy_inputs(self._prepare_inputs(batch))

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
                f"strategy: {self.strategy.name!r} is not supported under FSDP (it needs per-parameter statistics "
                "or gradients of whole, unsharded parameters); use DDP for it, or another strategy"
            )

    def _shard_strategy_for_fsdp(self) -> None:
        """Under accelerate's FSDP2, once the model (the strategy's heads included: they are part of
        it) is sharded: re-attach parameter-mode gradient modulation to the sharded parameters."""
        from .fsdp import is_sharded

        if self._fsdp_strategy_ready or self.optimizer is None or not is_sharded(self.model):
            return
        self.strategy.after_sharding(self.model)
        self._fsdp_strategy_ready = True

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        # Trainer creates the scheduler right after accelerator.prepare: the first point where the
        # model is sharded under FSDP2
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
        if node_split(self.train_dataset) is not None:
            return self._with_key_filter(self._node_split_train_dataloader)
        return self._with_key_filter(super().get_train_dataloader)

    def _node_split_train_dataloader(self):
        """Training loader of a training set split with ``split_dataset_by_node``
        (:func:`arl_hf.node_split.node_split_train_dataloader`)."""
        return node_split_train_dataloader(self)

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

    def create_optimizer(self, model=None):
        """``Trainer``'s optimizer after ``args.freeze_encoders`` took effect (the frozen encoders'
        parameters stop requiring gradients, so no optimizer, weight decay or DDP bucket holds them);
        with ``args.encoder_learning_rate``, the parameters of the pretrained encoders
        (:func:`arl_hf.modeling.pretrained.pretrained_encoder_parameters`) move to groups of that learning rate."""
        from .modeling.pretrained import freeze_encoders, pretrained_encoder_parameters

        target = self.model if model is None else model
        if self.optimizer is None:
            freeze_encoders(target, self.args.freeze_encoders)
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if fresh and self.args.encoder_learning_rate is not None:
            chosen = {id(p) for p in pretrained_encoder_parameters(target)}
            extra = []
            for group in optimizer.param_groups:
                moved = [p for p in group["params"] if id(p) in chosen]
                if moved:
                    group["params"] = [p for p in group["params"] if id(p) not in chosen]
                    extra.append({**{k: v for k, v in group.items() if k != "params"}, "params": moved,
                                  "lr": float(self.args.encoder_learning_rate)})
            for group in extra:
                optimizer.add_param_group(group)
        return optimizer

    def floating_point_ops(self, inputs: Dict[str, Any]) -> int:
        """``Trainer``'s estimate, 6 x the main input's elements x the parameters except embeddings
        (counted once per model, not at every step); a modality given as a dict of named inputs
        (``hf:`` encoders) counts the elements of its first tensor (``input_ids``, ``pixel_values``)."""
        main = getattr(self.model, "main_input_name", None)
        value = inputs.get(main) if isinstance(inputs, Mapping) else None
        if isinstance(value, Mapping):
            value = next((v for v in value.values() if isinstance(v, torch.Tensor)), None)
        if not isinstance(value, torch.Tensor) or not hasattr(self.model, "num_parameters"):
            return 0
        cached = getattr(self, "_flop_parameters", None)
        if cached is None or cached[0] is not self.model:
            cached = self._flop_parameters = (self.model, self.model.num_parameters(exclude_embeddings=True))
        return 6 * value.numel() * cached[1]

    # ---- the step -------------------------------------------------------------------------
    def _context(self, training: bool) -> StepContext:
        epoch = self.state.epoch if self.state is not None and self.state.epoch is not None else 0.0
        step = self.state.global_step if self.state is not None else 0
        return StepContext(epoch=float(epoch), global_step=int(step), training=training)

    def _strategy_inputs(self, inputs: Dict[str, Any], training_step: bool = False) -> Dict[str, Any]:
        if "labels" not in inputs:
            for alt in ("label", "label_ids"):
                if alt in inputs:
                    inputs = dict(inputs)
                    inputs["labels"] = inputs.pop(alt)
                    break
        if "labels" not in inputs:
            raise ValueError(f"labels: the batch has no 'labels' key (keys: {sorted(inputs)})")
        if self.args.validate_inputs:
            self._validate_batch(inputs, training_step)
        return inputs

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        inputs = self._strategy_inputs(inputs, training_step=model.training)
        result = self.strategy.compute_loss(model, inputs, self._context(training=model.training))
        mode = "train" if model.training else "eval"
        logs = result.logs
        if model.training and "loss_fused" not in logs:
            logs = {**logs, **self._fused_loss_log(result.outputs, inputs["labels"])}
        for k, v in logs.items():
            self._metrics[mode][k].append(v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v)))
        loss = result.loss
        if model.training:
            loss = self._window_loss(loss, batch_size_of(inputs) or 1, num_items_in_batch)
        return (loss, result.outputs) if return_outputs else loss

    @staticmethod
    def _fused_loss_log(outputs: Any, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{"loss_fused": CE of the model's fused logits}`` for a strategy that did not log it."""
        logits = outputs.get("logits") if isinstance(outputs, dict) else getattr(outputs, "logits", None)
        if not isinstance(logits, torch.Tensor):
            return {}
        with torch.no_grad():
            return {"loss_fused": F.cross_entropy(logits.detach().float(), labels)}

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not getattr(self, "_fsdp_strategy_ready", True):
            raise ValueError("fsdp: gradient modulation was not re-attached to the sharded model (the scheduler "
                             "was created before accelerate prepared the model); let Trainer.train create the "
                             "optimizer and scheduler")
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.strategy.after_backward(model, self._context(training=True))
        self._record_step_value("loss", loss)
        return loss

    # ---- evaluation: fused and per-modality logits ---------------------------------------
    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys=None):
        """The fused cross-entropy, the fused and per-modality logits stacked ``(B, 1 + M, C)`` (one
        array for the evaluation loop to gather; split again by :mod:`arl_hf.predictions`), the labels."""
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
            means = torch.stack(
                [torch.stack([v.float().to(pending[k][0].device) for v in pending[k]]).mean() for k in keys]
            )
            means = all_reduce_mean(means).cpu().tolist()
            prefix = "eval_" if mode == "eval" else ""
            logs = {**logs, **{f"{prefix}{k}": v for k, v in zip(keys, means)}}
            pending.clear()
        super().log(logs, start_time)

    # ---- the strategy that trained, in every checkpoint -------------------------------------
    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        """``Trainer.save_model``, with ``config.training_strategy`` recording the strategy that
        trained (``self.strategy.name``: also a strategy instance passed to ``ARLTrainer``). Its
        heads and state are in ``model.safetensors`` (``model.strategy_state``, laid out in
        ``config.strategy_state``)."""
        config = getattr(self.model, "config", None)
        if config is not None:
            config.training_strategy = self.strategy.name
        super().save_model(output_dir, _internal_call)
        self._write_model_card_on_save(output_dir)
