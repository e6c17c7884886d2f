"""Processors of Hugging Face checkpoints: the tokenizer, image processor or feature extractor of an
``hf:<checkpoint>`` encoder, applied to raw values, recorded and saved with the model.

* :func:`load_processor` loads the processor of a checkpoint (a local folder or a Hub id) for a
  processor kind: ``"text"`` (``AutoTokenizer``), ``"image"`` (``AutoImageProcessor``) or ``"audio"``
  (``AutoFeatureExtractor``); a checkpoint holding only an ``AutoProcessor`` gives its part.
* :func:`processor_spec` is the processor's entry in the preprocessing record (the ``"processor"``
  key of a modality spec): the Auto class and class, the source checkpoint, ``max_length`` (the
  truncation length of text: the tokenizer's, bounded by the model's position embeddings),
  ``sampling_rate``, the processor's own configuration (image and audio), a fingerprint of its
  state and ``files``, the folder of the saved model that holds it (``processors/<modality>``).
* :func:`apply_processor` turns a batch of raw values into the modality's dict of tensors: strings
  into ``input_ids`` / ``attention_mask`` (padded to the longest of the batch, truncated to
  ``max_length``); PIL images or ``uint8`` arrays into ``pixel_values`` (converted to the channels the
  processor normalises); waveforms with a sampling rate into ``input_values`` (resampled to the
  processor's rate, mixed down to mono).
* :func:`save_processors` (:mod:`arl_hf.processor_store`, called by the model's ``save_pretrained``)
  writes every recorded processor of a model into ``<folder>/processors/<modality>/``, and
  :func:`load_processors` reads them back from a saved model folder alone, checking each against
  its recorded fingerprint.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..processor_store import (
    NO_LENGTH_LIMIT,
    PROCESSOR_KINDS,
    PROCESSORS_DIR,
    checkpoint_location,
    checkpoint_of,
    fingerprint,
    load_processor,
    load_processors,
    processor_kind,
    processor_state,
    recorded_processors,
    remember,
    resolve_processor,
    save_processors,
)

__all__ = ["PROCESSOR_KINDS", "PROCESSORS_DIR", "processor_kind", "load_processor", "processor_spec",
           "processor_entry", "example_rows", "apply_processor", "resolve_processor",
           "save_processors", "load_processors", "recorded_processors", "checkpoint_of", "fingerprint"]

#: model types whose position ids start after the padding index (``max_position_embeddings`` counts it)
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xmod", "mpnet",
                     "roberta-prelayernorm", "ibert", "markuplm", "xlm-roberta-xl")


def _max_text_length(processor: Any, checkpoint: Optional[str]) -> Optional[int]:
    """The truncation length: the tokenizer's ``model_max_length``, bounded by the positions the model
    embeds (``max_position_embeddings``, less the padding offset of RoBERTa-like models)."""
    limit = getattr(processor, "model_max_length", None)
    limit = int(limit) if isinstance(limit, (int, float)) and 0 < limit < NO_LENGTH_LIMIT else None
    config = None
    if checkpoint is not None:
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(checkpoint_location(checkpoint))
        except (OSError, ValueError, KeyError):
            config = None
    positions = getattr(config, "max_position_embeddings", None) if config is not None else None
    if isinstance(positions, int) and positions > 0:
        if getattr(config, "model_type", None) in _OFFSET_POSITIONS:
            positions -= int(getattr(config, "pad_token_id", None) or 0) + 1
        limit = positions if limit is None else min(limit, positions)
    return limit


def processor_spec(checkpoint: str, kind: str, modality: str, *, max_length: Optional[int] = None,
                   processor: Any = None) -> Dict[str, Any]:
    """The record entry (the ``"processor"`` key of modality ``modality``'s spec) of the processor of
    ``checkpoint`` for ``kind`` (loaded unless ``processor`` is given): enough to rebuild it from the
    saved model (``files``) and to check that what is rebuilt is the same (``fingerprint``).

    Raises:
        ValueError: ``max_length`` is not a positive integer, or see :func:`load_processor`.
    """
    source = checkpoint_of(checkpoint) or checkpoint
    kind = processor_kind(kind)
    processor = processor if processor is not None else load_processor(source, kind)
    if processor_kind(processor) != kind:
        raise ValueError(f"{modality}: the processor is a {type(processor).__name__}, not a {kind} processor")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"{modality}: max_length: expected a positive integer, got {max_length!r}")
    spec: Dict[str, Any] = {"kind": kind, "auto_class": PROCESSOR_KINDS[kind], "class": type(processor).__name__,
                            "source": source, "files": f"{PROCESSORS_DIR}/{modality}",
                            "fingerprint": fingerprint(processor)}
    if kind == "text":
        if processor.pad_token is None:
            raise ValueError(f"{modality}: the tokenizer of {source!r} ({type(processor).__name__}) has no padding "
                             "token, so a batch of texts of different lengths cannot be padded; give it one (e.g. "
                             "tokenizer.pad_token = tokenizer.eos_token; tokenizer.save_pretrained(<checkpoint>))")
        spec.update(max_length=max_length or _max_text_length(processor, source), padding="longest",
                    truncation=True, input_names=list(processor.model_input_names))
    else:
        spec["config"] = processor_state(processor)
        if kind == "audio":
            spec["sampling_rate"] = int(processor.sampling_rate)
        else:
            spec["channels"] = _channels(processor)
    remember(processor)
    return spec


def processor_entry(value: Any, kind: str, modality: str) -> Dict[str, Any]:
    """The record entry of ``value``: an entry (:func:`processor_spec`) as it is, a checkpoint
    (``hf:<folder or Hub id>`` or the bare folder / id) or a loaded processor (recorded with the
    ``name_or_path`` it was loaded from).

    Raises:
        ValueError: ``value`` is none of those (or see :func:`processor_spec`).
    """
    if isinstance(value, Mapping):
        if value.get("kind") not in PROCESSOR_KINDS or not value.get("files"):
            raise ValueError(f"{modality}: processor: expected a processor entry with 'kind' and 'files' "
                             f"(arl_hf.data.processors.processor_spec), got {dict(value)!r}")
        return dict(value)
    if isinstance(value, (str, os.PathLike)):
        return processor_spec(os.fspath(value), kind, modality)
    source = getattr(value, "name_or_path", None) or type(value).__name__
    return processor_spec(str(source), processor_kind(value), modality, processor=value)


def _channels(processor: Any) -> int:
    mean = getattr(processor, "image_mean", None)
    return len(mean) if isinstance(mean, (list, tuple)) else 3


# ------------------------------------------------------------------------------------ applying
def apply_processor(processor: Any, kind: str, values: Sequence[Any], *,
                    sampling_rate: Optional[int] = None, max_length: Optional[int] = None) -> Dict[str, Any]:
    """The modality's tensors for a batch of raw ``values``: ``{"input_ids", "attention_mask", ...}``
    for strings, ``{"pixel_values"}`` for images, ``{"input_values", ...}`` for waveforms.

    Args:
        processor: a tokenizer / image processor / feature extractor, its record entry
            (:func:`processor_spec`, resolved with :func:`resolve_processor`; its ``max_length`` applies)
            or a checkpoint (:func:`load_processor`).
        kind: the values' kind (``text``, ``image``, ``audio`` or a modality kind of those).
        values: strings; PIL images, ``uint8`` arrays ``(H, W[, C])`` or ``{"bytes", "path"}`` dicts;
            waveforms as ``{"array", "sampling_rate"}`` dicts, ``(array, rate)`` pairs, or arrays with
            ``sampling_rate`` given.
        sampling_rate: the rate of waveforms given as bare arrays.
        max_length: the truncation length of text (default: the recorded one, else the tokenizer's).

    Raises:
        ValueError: the values do not fit the kind (names the example and what was found), or the
            processor is of another kind.
    """
    if isinstance(processor, Mapping):
        max_length = max_length or processor.get("max_length")
        processor = resolve_processor(processor)
    elif isinstance(processor, (str, os.PathLike)):
        processor = load_processor(os.fspath(processor), kind)
    kind = processor_kind(kind)
    if processor_kind(processor) != kind:
        raise ValueError(f"processor: a {type(processor).__name__} cannot process {kind} values; expected a "
                         f"{PROCESSOR_KINDS[kind]} processor")
    values = list(values)
    if not values:
        raise ValueError(f"values: expected a non-empty batch of {kind} values")
    if kind == "text":
        return _text(processor, values, max_length)
    if kind == "image":
        return _images(processor, values)
    return _audio(processor, values, sampling_rate)


def example_rows(batch: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """A processed batch (``{"input_ids": (B, L), ...}``) as one dict per example (views of the batch's
    rows): what a ``datasets`` transform returns for a modality of named inputs, since ``datasets``
    splits a transformed batch into rows by indexing each column; the collator stacks them back
    (all rows of one batch share its padding, so the stacked tensors are the batch's)."""
    sizes = {int(v.shape[0]) for v in batch.values()}
    if len(sizes) != 1:
        raise ValueError(f"batch: expected inputs with one batch size, got {sorted(sizes)}")
    return [{k: v[i] for k, v in batch.items()} for i in range(sizes.pop())]


def _text(tokenizer: Any, values: List[Any], max_length: Optional[int]) -> Dict[str, Any]:
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ValueError(f"values[{i}]: expected a string (text), got {type(v).__name__}")
    if max_length is None:
        limit = getattr(tokenizer, "model_max_length", None)
        max_length = int(limit) if isinstance(limit, (int, float)) and 0 < limit < NO_LENGTH_LIMIT else None
    out = tokenizer(values, padding="longest", truncation=max_length is not None, max_length=max_length,
                    return_tensors="pt")
    return {k: v.long() for k, v in out.items()}


def _as_image(value: Any, i: int, channels: int):
    import numpy as np
    from PIL import Image

    if isinstance(value, (bytes, bytearray)):
        value = {"bytes": bytes(value)}
    elif isinstance(value, (str, os.PathLike)):
        value = {"path": os.fspath(value)}
    if isinstance(value, Mapping) and ("bytes" in value or "path" in value):
        import io

        try:
            value = Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else Image.open(value["path"])
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"values[{i}]: unreadable image ({type(err).__name__}: {err})") from None
    if isinstance(value, Image.Image):
        value.load()
        mode = "RGB" if channels == 3 else ("L" if channels == 1 else value.mode)
        return value if value.mode == mode else value.convert(mode)
    if hasattr(value, "numpy") and callable(value.numpy):
        value = value.numpy()
    if not isinstance(value, np.ndarray):
        raise ValueError(f"values[{i}]: expected a PIL image, a uint8 array or an encoded image, got "
                         f"{type(value).__name__}")
    if value.dtype != np.uint8:
        raise ValueError(f"values[{i}]: expected a uint8 image array (0..255), got dtype {value.dtype}; an "
                         "image processor rescales by 1/255, so convert float images to uint8 first")
    if value.ndim == 3 and value.shape[0] in (1, 3, 4) and value.shape[-1] not in (1, 3, 4):
        value = value.transpose(1, 2, 0)  # channels first -> channels last
    if value.ndim == 3 and value.shape[-1] == 1:
        value = value[..., 0]
    if value.ndim not in (2, 3) or (value.ndim == 3 and value.shape[-1] not in (3, 4)):
        raise ValueError(f"values[{i}]: expected an image array (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4; "
                         f"got shape {tuple(value.shape)}")
    return _as_image(Image.fromarray(np.ascontiguousarray(value)), i, channels)


def _images(processor: Any, values: List[Any]) -> Dict[str, Any]:
    channels = _channels(processor)
    images = [_as_image(v, i, channels) for i, v in enumerate(values)]
    out = processor(images, return_tensors="pt")
    return {"pixel_values": out["pixel_values"].float()}


def _waveform(value: Any, i: int, rate: Optional[int], target: int):
    import numpy as np

    if isinstance(value, Mapping) and value.get("array") is None and (value.get("bytes") or value.get("path")):
        import io

        import soundfile

        try:  # an undecoded Audio() value: {"bytes", "path"}
            value, rate = soundfile.read(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"],
                                         dtype="float32", always_2d=True)
        except Exception as err:  # soundfile raises LibsndfileError / RuntimeError / TypeError
            raise ValueError(f"values[{i}]: unreadable audio ({type(err).__name__}: {err})") from None
        value = value.T
    elif isinstance(value, Mapping):
        if value.get("array") is None:
            raise ValueError(f"values[{i}]: expected a waveform {{'array', 'sampling_rate'}} or an audio record "
                             f"{{'bytes', 'path'}}, got keys {sorted(value)}")
        value, rate = value["array"], value.get("sampling_rate", rate)
    elif isinstance(value, tuple) and len(value) == 2 and np.isscalar(value[1]):
        value, rate = value
    if rate is None:
        raise ValueError(f"values[{i}]: a waveform without a sampling rate; give {{'array', 'sampling_rate'}} "
                         "or sampling_rate=")
    wave = np.asarray(value.numpy() if hasattr(value, "numpy") else value, dtype=np.float32)
    if wave.ndim == 2:  # (C, S) or (S, C): mix down to mono
        wave = wave.mean(axis=int(np.argmin(wave.shape)))
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"values[{i}]: expected a waveform of shape (S,) or (C, S), got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise ValueError(f"values[{i}]: the waveform holds NaN or infinite samples")
    if int(rate) != target:
        import librosa

        wave = librosa.resample(wave, orig_sr=int(rate), target_sr=target).astype(np.float32)
    return wave


def _audio(processor: Any, values: List[Any], rate: Optional[int]) -> Dict[str, Any]:
    import inspect

    target = int(processor.sampling_rate)
    waves = [_waveform(v, i, rate, target) for i, v in enumerate(values)]
    kwargs: Dict[str, Any] = {"sampling_rate": target, "return_tensors": "pt"}
    if "padding" in inspect.signature(processor.__call__).parameters:
        kwargs["padding"] = "longest"
    out = processor(waves, **kwargs)
    return {k: (v.float() if v.is_floating_point() else v.long()) for k, v in out.items()}
