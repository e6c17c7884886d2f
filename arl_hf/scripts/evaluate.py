"""``arl-hf evaluate`` and ``examples/evaluate_arl.py``: a saved checkpoint on one dataset split.

:func:`make_parser` is the parser (:class:`EvalArguments`); :func:`evaluate_checkpoint` is the
job (accuracy and macro-F1, fused and per modality); :func:`main` is the command.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..arguments import ArgumentParser, DataArguments, setup_logging
from ..building import load_data
from ..config import ARLConfig
from ..evaluation import format_results
from ..log import get_logger
from ..metrics import split_metrics
from ..safety import atomic_write_json, check_revision, safetensors_problem
from ..trainer import ARLTrainer
from .command import is_main_process, pop_debug, user_errors

logger = get_logger(__name__)

__all__ = ["EvalArguments", "SPLITS", "make_parser", "evaluate_checkpoint", "main"]

SPLITS = ("train", "validation", "test")

def _data_field(name: str) -> Any:
    """A field of :class:`EvalArguments` that is ``DataArguments``' option of that name (same
    default and help: ``arl-hf evaluate`` reads the data as ``arl-hf train`` does)."""
    (source,) = [f for f in dataclasses.fields(DataArguments) if f.name == name]
    return field(default=source.default, metadata=dict(source.metadata))


@dataclass
class EvalArguments:
    """Evaluate a saved checkpoint on a dataset split."""

    model_name_or_path: str = field(
        metadata={"help": "Checkpoint directory or Hub id (AutoModel after import arl_hf)."}
    )
    split: str = field(default="test", metadata={"help": "Split to evaluate: train, validation or test."})
    dataset: Optional[str] = field(
        default=None,
        metadata={"help": "Dataset name, local folder or Hub dataset repo id (as --dataset of train); default: the "
                  "one recorded in the checkpoint's config.preprocessing."},
    )
    dataset_config: Optional[str] = _data_field("dataset_config")
    data_dir: Optional[str] = _data_field("data_dir")
    cache_dir: Optional[str] = _data_field("cache_dir")
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


def make_parser(prog: Optional[str] = None) -> ArgumentParser:
    """The parser of ``arl-hf evaluate`` (:class:`EvalArguments`)."""
    return ArgumentParser(
        EvalArguments, prog=prog, allow_abbrev=False,
        description="Evaluate a saved arl-hf checkpoint on a dataset split: accuracy and macro-F1, fused and per "
        "modality.",
    )


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
        **{k: recorded.get(k) if same else None
           for k in ("preprocessing", "audio_duration", "num_frames", "image_size", "label_column", "modality_columns",
                     "validation_split_percentage")},
    )
    from ..processor_store import load_processors

    load_processors(model)  # the processors saved with the checkpoint (processors/<modality>/), checked
    # a plain dataset: the preprocessing recorded in training, on this dataset or another of the same columns,
    # whose class names map to the model's ids by name
    data = recorded.get("data")
    raw = data if str((data or {}).get("format", "")).startswith("arl_hf.raw") else None
    names = [model.config.id2label[i] for i in range(model.config.num_labels)] \
        if raw is not None and raw.get("label_names") else None
    ds, collator, _ = load_data(data_args, raw_record=raw, class_names=names)
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
        atomic_write_json(eval_args.output_json,
                          {"split": eval_args.split, "dataset": dataset_name, "metrics": metrics})
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
    from ..strategies import STRATEGIES

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


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """``arl-hf evaluate`` / ``examples/evaluate_arl.py``: metrics of a checkpoint on a split; a
    failure is one ``error:`` line and exit status 2 (``--debug`` shows the traceback)."""
    argv, debug = pop_debug(sys.argv[1:] if argv is None else argv)
    prog = prog or os.path.basename(sys.argv[0]) or "evaluate_arl.py"
    parser = make_parser(prog=prog)
    with user_errors(prog, debug):
        (eval_args,) = parser.parse_args_into_dataclasses(args=argv)
        setup_logging(eval_args.log_level)
        metrics = evaluate_checkpoint(eval_args)
        if is_main_process():
            print(f"{eval_args.model_name_or_path} on the {eval_args.split} split:")
            print(format_results({eval_args.split: metrics}))
    return 0
