"""Evaluation: the metrics of a trained run per split, and of a saved checkpoint.

:func:`evaluate_splits` measures the validation and test splits with a trainer's current
model (the checkpoint selected on validation, after training); :func:`evaluate_checkpoint`
loads a saved checkpoint (directory or Hub id) and measures one split (``arl-hf evaluate``);
:func:`format_results` prints them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple


from .arguments import DataArguments, _ArgumentParser
from .building import load_data
from .log import get_logger
from .metrics import metric_modalities, split_metrics
from .safety import atomic_write_json, check_revision, safetensors_problem
from .trainer import ARLConfig, ARLTrainer

logger = get_logger(__name__)

__all__ = ["EvalArguments", "build_eval_parser", "SPLITS", "split_metrics", "evaluate_splits", "evaluate_checkpoint",
           "format_results"]

SPLITS = ("train", "validation", "test")


@dataclass
class EvalArguments:
    """Evaluate a saved checkpoint on a dataset split."""

    model_name_or_path: str = field(metadata={"help": "Checkpoint directory or Hub id (AutoModel after import arl_hf)."})
    split: str = field(default="test", metadata={"help": "Split to evaluate: train, validation or test."})
    dataset: Optional[str] = field(
        default=None,
        metadata={"help": "Dataset name, local folder or Hub dataset repo id (as --dataset of train); default: the "
                  "one recorded in the checkpoint's config.preprocessing."},
    )
    dataset_config: Optional[str] = field(
        default=None,
        metadata={"help": "Named builder configuration of the dataset (avdigits: 'default', 'bench', 'main'); "
                  "passed to arl_hf.data.load(name, config=...)."},
    )
    data_dir: Optional[str] = field(default=None, metadata={"help": "Directory of the raw dataset files."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Arrow cache directory of prepared datasets."})
    revision: Optional[str] = field(
        default=None, metadata={"help": "Branch, tag or commit of a Hub model repo given as --model_name_or_path."}
    )
    dataset_revision: Optional[str] = field(
        default=None, metadata={"help": "Branch, tag or commit of a Hub dataset repo given as --dataset; default: "
                                "the commit recorded in the checkpoint."}
    )
    batch_size: int = field(default=64, metadata={"help": "Evaluation batch size."})
    max_samples: Optional[int] = field(default=None, metadata={"help": "Evaluate only the first N examples."})
    use_cpu: bool = field(default=False, metadata={"help": "Evaluate on CPU even when an accelerator is available."})
    output_json: Optional[str] = field(default=None, metadata={"help": "Also write the metrics to this JSON file."})
    log_level: str = field(
        default="passive",
        metadata={"help": "Log level of transformers, datasets and arl_hf ('passive' keeps transformers' default, "
                  "warning).", "choices": ["detail", "debug", "info", "warning", "error", "critical", "passive"]},
    )


def build_eval_parser(prog: Optional[str] = None) -> "_ArgumentParser":
    """The parser of ``arl-hf evaluate`` (:class:`EvalArguments`)."""
    return _ArgumentParser(
        EvalArguments, prog=prog, allow_abbrev=False,
        description="Evaluate a saved arl-hf checkpoint on a dataset split: accuracy and macro-F1, fused and per "
        "modality.",
    )


def evaluate_splits(trainer: ARLTrainer, dataset: Mapping[str, Any],
                    splits: Sequence[str] = ("validation", "test")) -> Dict[str, Dict[str, float]]:
    """``{split: metrics}`` of the trainer's current model on each of ``splits`` the dataset has
    (``metric_key_prefix`` = the split name; see :func:`split_metrics`)."""
    metrics: Dict[str, Dict[str, float]] = {}
    for split in splits:
        if split in dataset:
            raw = trainer.evaluate(eval_dataset=dataset[split], metric_key_prefix=split)
            metrics[split] = split_metrics(raw, split)
    return metrics


def evaluate_checkpoint(eval_args: EvalArguments) -> Dict[str, float]:
    """Accuracy and macro-F1, fused and per modality, of a saved checkpoint on one split.

    ``model_name_or_path`` is a local checkpoint directory or a Hub model repo id (downloaded
    through the Hub cache, so ``HF_HUB_OFFLINE=1`` works once cached); either way the
    strategy's heads saved with the weights (``model.strategy_state``) are used when the
    strategy predicts through its own head (MLA), and the recorded dataset (name, folder or
    Hub dataset repo at its recorded commit) is the default ``--dataset``.
    """
    import tempfile

    if eval_args.split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {eval_args.split!r}")
    check_revision(eval_args.revision, "revision")
    check_revision(eval_args.dataset_revision, "dataset_revision")
    path = eval_args.model_name_or_path
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"model_name_or_path: {path!r} has no config.json (not a saved checkpoint)")
        weights = os.path.join(path, "model.safetensors")
        problem = safetensors_problem(weights) if os.path.isfile(weights) else None
        if problem:
            raise ValueError(f"model_name_or_path: {weights!r} is damaged ({problem}); re-save or re-download it")
    elif os.path.exists(path):
        raise ValueError(f"model_name_or_path: {path!r} is a file; expected a checkpoint directory or Hub id")
    elif path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise FileNotFoundError(f"model_name_or_path: checkpoint directory {path!r} does not exist")
    model, info = _load_model(path, eval_args.revision)
    _refuse_incomplete_checkpoint(path, info)
    recorded = dict(getattr(model.config, "preprocessing", None) or {})
    if eval_args.dataset_revision is None and recorded.get("dataset_revision") is not None:
        check_revision(recorded["dataset_revision"], f"dataset_revision (recorded in {path!r} config.preprocessing)")
    dataset_name = eval_args.dataset or recorded.get("dataset")
    if not dataset_name:
        raise ValueError("dataset: the checkpoint records no dataset; pass --dataset")
    # same dataset as in training: reuse the recorded preprocessing options (and commit)
    same = eval_args.dataset in (None, recorded.get("dataset"))
    data_args = DataArguments(
        dataset=dataset_name,
        dataset_config=eval_args.dataset_config or (recorded.get("dataset_config") if same else None),
        dataset_revision=eval_args.dataset_revision or (recorded.get("dataset_revision") if same else None),
        data_dir=eval_args.data_dir,
        cache_dir=eval_args.cache_dir,
        **{k: recorded.get(k) if same else None for k in ("preprocessing", "audio_duration", "num_frames", "image_size")},
    )
    ds, collator, _ = load_data(data_args)
    if eval_args.split not in ds:
        raise ValueError(f"split: dataset {dataset_name!r} has no {eval_args.split!r} split (splits: {sorted(ds)})")
    split = ds[eval_args.split]
    if eval_args.max_samples is not None:
        split = split.select(range(min(eval_args.max_samples, len(split))))
    strategy = _prediction_strategy(model, path, eval_args.revision)
    with tempfile.TemporaryDirectory() as tmp:
        args = ARLConfig(
            output_dir=tmp, per_device_eval_batch_size=eval_args.batch_size, report_to="none",
            use_cpu=eval_args.use_cpu, strategy=strategy,
        )
        trainer = ARLTrainer(model=model, args=args, data_collator=collator)
        raw = trainer.evaluate(eval_dataset=split, metric_key_prefix=eval_args.split)
    metrics = split_metrics(raw, eval_args.split)
    if eval_args.output_json:
        atomic_write_json(eval_args.output_json, {"split": eval_args.split, "dataset": dataset_name, "metrics": metrics})
    return metrics


def _refuse_incomplete_checkpoint(path: str, info: Mapping[str, Any]) -> None:
    """``ValueError`` when loading left tensors of the model missing or of another size: they
    would be evaluated freshly initialised, not as trained."""
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys") or ())
    if missing or mismatched:
        parts = [f"{what} {keys[:5]}{' ...' if len(keys) > 5 else ''}"
                 for what, keys in (("missing", missing), ("of another size", mismatched)) if keys]
        raise ValueError(
            f"model_name_or_path: checkpoint {path!r} does not hold every tensor of the model it configures "
            f"({'; '.join(parts)}); evaluating it would measure freshly initialised weights")


def _load_model(path: str, revision: Optional[str]) -> Tuple[Any, Dict[str, Any]]:
    """``AutoModel.from_pretrained`` with its loading info; a missing or unreadable checkpoint is an error naming it."""
    from safetensors import SafetensorError
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(path, revision=revision, output_loading_info=True)
    except OSError as e:
        raise FileNotFoundError(f"model_name_or_path: cannot load {path!r}: {e}") from None
    except (SafetensorError, KeyError, UnicodeDecodeError) as e:  # a damaged weights file, a config missing a key
        raise ValueError(f"model_name_or_path: cannot load {path!r}: {type(e).__name__}: {e}") from None


def _prediction_strategy(model: Any, path: str, revision: Optional[str] = None) -> str:
    """``"none"`` (the model's own heads), or the recorded training strategy when it predicts
    through its own head (MLA), whose head must then be in the checkpoint (``strategy_state``)."""
    from .strategies import STRATEGIES

    name = getattr(model.config, "training_strategy", None)
    if name and name not in STRATEGIES:
        logger.warning("the checkpoint was trained with strategy %r, not registered here: evaluating the "
                       "model's own heads", name)
    if not name or name not in STRATEGIES or not STRATEGIES[name].owns_predictions():
        return "none"
    state = getattr(model, "strategy_state", None)
    if getattr(state, "strategy", None) != name:
        raise FileNotFoundError(
            f"model_name_or_path: {path!r} was trained with strategy {name!r}, which predicts through its own "
            "head; expected its head in the checkpoint (config.strategy_state and the strategy_state.* weights, "
            "written by ARLTrainer.save_model)")
    return name


def format_results(metrics: Mapping[str, Mapping[str, float]], modalities: Optional[Sequence[str]] = None) -> str:
    """A plain-text table: one row per split, fused and per-modality accuracy / macro-F1 (%)."""
    rows = []
    for split, m in metrics.items():
        mods = list(modalities) if modalities else sorted(metric_modalities(m))
        heads = [("fused", "")] + [(x, f"_{x}") for x in mods]
        cells = []
        for head, suffix in heads:
            acc, f1 = m.get(f"accuracy{suffix}"), m.get(f"macro_f1{suffix}")
            if acc is None:
                continue
            cells.append(f"{head}: acc {100 * acc:6.2f}  F1 {100 * (f1 or 0):6.2f}")
        rows.append(f"[{split} split] " + " | ".join(cells))
    return "\n".join(rows)
