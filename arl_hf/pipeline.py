"""The ``multimodal-classification`` pipeline: a trained model's top-k labels for one example or a list.

``import arl_hf`` registers it with transformers (``PIPELINE_REGISTRY``), so that::

    from transformers import pipeline
    classify = pipeline("multimodal-classification", model="path/to/saved/model")
    classify({"audio": spectrogram, "visual": frames})            # [{"label": ..., "score": ...}, ...]
    classify([example_1, example_2], top_k=1)                      # one list per example
    classify(example, return_modalities=True)                      # {"predictions": [...], "modalities": {m: [...]}}

An example is a dict with one value per modality of the model (other keys, such as a dataset
row's ``labels`` or ``id``, are ignored), preprocessed with the model's recorded preprocessing
(``model.config.preprocessing``):

* a model trained on a plain dataset (a raw record, :mod:`arl_hf.data.features`): raw values,
  as the dataset's columns hold them or as one has them at hand (a PIL image, an image path or
  ``{"bytes", "path"}`` record, ``{"array", "sampling_rate"}`` or ``(waveform, sampling_rate)``
  for audio, an array or a list, text), converted by :func:`arl_hf.data.raw.raw_preprocessor`;
  a modality may be keyed by its name or by its dataset column;
* a model trained on a dataset built by :mod:`arl_hf.data` (its record under ``"data"``): the
  values as that dataset stores them (a row of one of its splits), through the evaluation
  transform and collator of that record, as in evaluation;
* a model without a record: values in the model's input layout for one example (a tensor,
  a NumPy array or a nested list of numbers: ``(C, H, W)`` float for an image, ``(D,)`` for a
  vector, ...; see :mod:`arl_hf.kinds`), used as they are.

The scores are the softmax of the model's fused logits. A model trained with a strategy that
predicts through its own head (MLA) predicts through that head, as ``ARLTrainer.evaluate`` does.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch
from transformers import Pipeline

from .kinds import accepted_kinds, describe_kinds
from .log import get_logger

logger = get_logger(__name__)

__all__ = ["TASK", "MultimodalClassificationPipeline", "register_pipeline"]

#: the task name the pipeline is registered under
TASK = "multimodal-classification"


def _is_numeric(value: Any) -> bool:
    """A tensor, a NumPy array of numbers or a (nested) list of numbers."""
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf"
    if isinstance(value, (list, tuple)) and value:
        try:
            return np.asarray(value).dtype.kind in "biuf"
        except (ValueError, TypeError):
            return False
    return False


class MultimodalClassificationPipeline(Pipeline):
    """Top-k labels of a :class:`~arl_hf.MultimodalModel` for examples given as ``{modality: value}``.

    Call arguments: ``top_k`` (default 5, at most the number of labels), ``return_modalities``
    (default ``False``: with ``True`` the result is ``{"predictions": top-k, "modalities":
    {modality: top-k of its own head}}``). Examples are run one at a time (``batch_size`` 1).
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        encoders = getattr(self.model, "encoders", None)
        if encoders is None or not len(encoders):
            raise ValueError(f"model: the {TASK!r} pipeline expected an arl_hf multimodal model (an `encoders` "
                             f"ModuleDict keyed by modality), got {type(self.model).__name__}")
        self.modalities: List[str] = list(encoders.keys())
        self._kinds = accepted_kinds(self.model)
        self._strategy = self._prediction_strategy()
        self._preprocess, self._columns = self._recorded_preprocessing()

    def _prediction_strategy(self):
        """The recorded training strategy when it predicts through its own head (MLA), else ``None``."""
        from .strategies import STRATEGIES

        name = getattr(self.model.config, "training_strategy", None)
        if not name or name not in STRATEGIES or not STRATEGIES[name].owns_predictions():
            return None
        if getattr(getattr(self.model, "strategy_state", None), "strategy", None) != name:
            raise ValueError(f"model: trained with strategy {name!r}, which predicts through its own head; expected "
                             "that head in the checkpoint (the strategy_state.* weights written by save_model)")
        strategy = STRATEGIES[name](SimpleNamespace(seed=0), self.modalities)
        strategy.setup(None, self.model)  # takes the saved head over
        return strategy

    def _recorded_preprocessing(self):
        """``(f(list of examples) -> batch, {modality: dataset column})`` of the model's recorded
        preprocessing: the collator of :meth:`~arl_hf.data.MultimodalCollator.from_pretrained` (the
        training data path's transform and the saved processors); ``(None, {})`` without a record."""
        from .data.collator import MultimodalCollator
        from .data.features import is_raw_record
        from .data.record import PreprocessingRecord

        pre = getattr(self.model.config, "preprocessing", None) or {}
        raw = is_raw_record(pre.get("data"))
        if not raw and PreprocessingRecord.of_model_config(self.model.config) is None:
            return None, {}
        collator = MultimodalCollator.from_pretrained(self.model)
        columns = {m: str(spec.get("column", m)) for m, spec in pre["data"]["modalities"].items()} if raw else {}
        return collator, columns

    # ---- the Pipeline protocol ------------------------------------------------------------------
    def _sanitize_parameters(self, top_k: Optional[int] = None, return_modalities: Optional[bool] = None,
                             **kwargs: Any):
        if kwargs:
            raise ValueError(f"{sorted(kwargs)[0]}: not an argument of the {TASK!r} pipeline; expected top_k or "
                             "return_modalities")
        post: Dict[str, Any] = {}
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k: expected a positive integer, got {top_k!r}")
            post["top_k"] = top_k
        forward: Dict[str, Any] = {}
        if return_modalities is not None:
            forward["return_modalities"] = post["return_modalities"] = bool(return_modalities)
        return {}, forward, post

    def preprocess(self, inputs: Any) -> Dict[str, torch.Tensor]:
        if not isinstance(inputs, Mapping):
            raise ValueError(f"inputs: expected a dict {{modality: value}} with modalities {self.modalities} (or a "
                             f"list of them), got {type(inputs).__name__}")
        keys = {m: m if m in inputs else self._columns.get(m, m) for m in self.modalities}
        missing = [m for m, k in keys.items() if k not in inputs]
        if missing:
            raise ValueError(f"inputs: expected the modalities {self.modalities}, got keys {sorted(map(str, inputs))} "
                             f"(missing {missing})")
        if self._preprocess is not None:
            batch = self._preprocess([{m: inputs[k] for m, k in keys.items()}])
            return {m: _in_dtype(batch[m], self.model.dtype) for m in self.modalities}
        return {m: self._to_tensor(m, inputs[m]).unsqueeze(0) for m in self.modalities}

    def _to_tensor(self, modality: str, value: Any) -> torch.Tensor:
        """One example's value in the model's layout, as a tensor (floats in the model's dtype)."""
        kinds = self._kinds.get(modality, ())
        if not _is_numeric(value):
            raise ValueError(
                f"{modality}: expected the model's input for one example ({describe_kinds(kinds)}) as a tensor, "
                f"a NumPy array or a list of numbers, got {type(value).__name__}; raw values (images, audio, "
                "text) are converted for a model trained on a dataset with a recorded preprocessing only, and "
                "this model's config.preprocessing records none")
        x = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        if x.is_floating_point():
            return x.to(self.model.dtype)
        if all(k not in ("tokens",) for k in kinds):  # an integer array for a floating-point input
            raise ValueError(
                f"{modality}: expected floating-point values ({describe_kinds(kinds)}), got dtype "
                f"{str(x.dtype).replace('torch.', '')}; raw integer data (e.g. uint8 pixels) needs the model's "
                "preprocessing (normalisation) first")
        return x.long()

    def _forward(self, model_inputs: Dict[str, torch.Tensor], return_modalities: bool = False) -> Dict[str, Any]:
        if self._strategy is not None:
            logits, per = self._strategy.predict(self.model, model_inputs)
        else:
            out = self.model(**model_inputs, return_unimodal_logits=return_modalities)
            logits, per = out.logits, out.unimodal_logits
        result: Dict[str, Any] = {"logits": logits.float()}
        if return_modalities:
            result["modalities"] = {m: per[m].float() for m in self.modalities}
        return result

    def postprocess(self, model_outputs: Dict[str, Any], top_k: int = 5,
                    return_modalities: bool = False) -> Any:
        fused = self._top_k(model_outputs["logits"], top_k)
        if not return_modalities:
            return fused
        return {"predictions": fused,
                "modalities": {m: self._top_k(v, top_k) for m, v in model_outputs["modalities"].items()}}

    def _top_k(self, logits: torch.Tensor, top_k: int) -> List[Dict[str, Any]]:
        probs = torch.softmax(logits[0].float(), dim=-1)
        k = min(int(top_k), probs.shape[-1])
        scores, ids = probs.topk(k)
        id2label = getattr(self.model.config, "id2label", None) or {}
        return [{"label": id2label.get(int(i), str(int(i))), "score": float(s)}
                for s, i in zip(scores.tolist(), ids.tolist())]


def register_pipeline() -> None:
    """Register :class:`MultimodalClassificationPipeline` under :data:`TASK` (once per process)."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    impl = PIPELINE_REGISTRY.supported_tasks.get(TASK)
    if impl is not None and impl.get("impl") is MultimodalClassificationPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=MultimodalClassificationPipeline,
                                        pt_model=AutoModel, type="multimodal")


def _in_dtype(value: Any, dtype: torch.dtype) -> Any:
    """A model input with its floating-point tensors in ``dtype`` (a dict of named inputs entry by entry)."""
    if isinstance(value, Mapping):
        return {k: _in_dtype(v, dtype) for k, v in value.items()}
    return value.to(dtype) if value.is_floating_point() else value
