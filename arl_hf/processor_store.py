"""The processors saved with a model: the tokenizers, image processors and feature extractors of
``hf:<checkpoint>`` encoders, loaded, fingerprinted, written into a saved model's
``processors/<modality>/`` folders and read back from them.

A light module (it imports transformers only inside its functions), used by
:meth:`arl_hf.MultimodalModel.save_pretrained` and :mod:`arl_hf.data.processors` (which records and
applies them). A processor's record entry (:func:`arl_hf.data.processors.processor_spec`) names its
``kind``, its ``source`` checkpoint, its ``files`` folder in the saved model and its ``fingerprint``
(a digest of the vocabulary or configuration it computes from): whatever rebuilds a processor from a
saved folder or a source is checked against that fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .log import get_logger

logger = get_logger(__name__)

__all__ = ["PROCESSOR_KINDS", "PROCESSORS_DIR", "processor_kind", "checkpoint_of", "load_processor", "fingerprint",
           "resolve_processor", "recorded_processors", "save_processors", "load_processors", "clear_loaded", "remember",
           "processor_state", "checkpoint_location", "NO_LENGTH_LIMIT"]

#: processor kind -> the transformers Auto class that loads it
PROCESSOR_KINDS: Dict[str, str] = {"text": "AutoTokenizer", "image": "AutoImageProcessor",
                                   "audio": "AutoFeatureExtractor"}
#: the folder of a saved model that holds one sub-folder per modality with a processor
PROCESSORS_DIR = "processors"
#: modality kinds (data records, :mod:`arl_hf.kinds`) -> processor kind
_KIND_ALIASES = {"text": "text", "tokens": "text", "string": "text", "image": "image", "audio": "audio",
                 "waveform": "audio", "spectrogram": "audio"}
#: the attribute of an ``AutoProcessor`` that holds the part of each kind
_PROCESSOR_PARTS = {"text": "tokenizer", "image": "image_processor", "audio": "feature_extractor"}
#: a ``model_max_length`` at or above this is a tokenizer without a known maximum
NO_LENGTH_LIMIT = 10 ** 6

# processors loaded in this process: (location, kind) -> processor; fingerprint -> processor
_LOADED: Dict[Tuple[str, str], Any] = {}
_BY_FINGERPRINT: Dict[str, Any] = {}
_FINGERPRINTS: Dict[int, Tuple[Any, str]] = {}


def remember(processor: Any) -> str:
    """Keep ``processor`` for record entries of its fingerprint (:func:`resolve_processor`); returns it."""
    key = fingerprint(processor)
    _BY_FINGERPRINT.setdefault(key, processor)
    return key


def clear_loaded() -> None:
    """Forget the processors loaded in this process (the next use loads them again, as a fresh process)."""
    _LOADED.clear()
    _BY_FINGERPRINT.clear()
    _FINGERPRINTS.clear()


def processor_kind(kind: Any) -> str:
    """The processor kind (``text``, ``image``, ``audio``) of a modality kind or of a processor object.

    Raises:
        ValueError: a kind no processor handles, or an object that is no tokenizer, image processor
            or feature extractor.
    """
    if isinstance(kind, str):
        if kind not in _KIND_ALIASES:
            raise ValueError(f"kind: expected one of {sorted(_KIND_ALIASES)} (the raw values a processor takes), "
                             f"got {kind!r}")
        return _KIND_ALIASES[kind]
    from transformers import FeatureExtractionMixin, ImageProcessingMixin, PreTrainedTokenizerBase

    if isinstance(kind, PreTrainedTokenizerBase):
        return "text"
    if isinstance(kind, ImageProcessingMixin):
        return "image"
    if isinstance(kind, FeatureExtractionMixin):
        return "audio"
    raise ValueError(f"processor: expected a tokenizer, image processor or feature extractor, got "
                     f"{type(kind).__name__}")


def checkpoint_of(encoder: Any) -> Optional[str]:
    """The checkpoint of an ``hf:<checkpoint>`` encoder (a string or a spec with ``encoder``), else ``None``."""
    name = encoder.get("encoder") if isinstance(encoder, Mapping) else encoder
    if isinstance(name, str) and name.startswith("hf:") and len(name) > 3:
        return name[3:]
    return None


def checkpoint_location(checkpoint: str) -> str:
    """The absolute path of a local checkpoint folder, or the Hub id as given.

    Raises:
        FileNotFoundError: a path (``./x``, ``/x``, ``a/b/c``) that is no folder.
    """
    local = os.path.expanduser(checkpoint)
    if os.path.isdir(local):
        return os.path.abspath(local)
    if local.startswith((".", "/", "~")) or os.sep in local.strip("/").replace("/", "", 1):
        raise FileNotFoundError(f"checkpoint: the folder {checkpoint!r} does not exist; expected a local "
                                "checkpoint folder or a Hub model id 'owner/name'")
    return checkpoint


def load_processor(checkpoint: str, kind: str) -> Any:
    """The processor of ``checkpoint`` (``hf:<folder or Hub id>`` or the bare folder / id) for ``kind``.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: the checkpoint holds no processor of that kind (names the files it holds).
    """
    import transformers

    source = checkpoint_of(checkpoint) or checkpoint
    kind = processor_kind(kind)
    location = checkpoint_location(source)
    if (location, kind) in _LOADED:
        return _LOADED[(location, kind)]
    auto = getattr(transformers, PROCESSOR_KINDS[kind])
    try:
        processor = auto.from_pretrained(location)
    except (OSError, ValueError, KeyError, TypeError) as first:
        try:  # a checkpoint with a multimodal AutoProcessor only
            processor = getattr(transformers.AutoProcessor.from_pretrained(location), _PROCESSOR_PARTS[kind])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            held = sorted(os.listdir(location)) if os.path.isdir(location) else "(a Hub id: not in the local cache)"
            raise ValueError(
                f"checkpoint {source!r}: no {kind} processor ({PROCESSOR_KINDS[kind]} or AutoProcessor) could be "
                f"loaded; expected its files (e.g. tokenizer.json / vocab.txt for text, preprocessor_config.json "
                f"for images and audio), found {held} ({str(first).splitlines()[0][:200]})") from None
    if processor_kind(processor) != kind:
        raise ValueError(f"checkpoint {source!r}: the {PROCESSOR_KINDS[kind]} loaded is a "
                         f"{type(processor).__name__}, not a {kind} processor")
    _LOADED[(location, kind)] = processor
    remember(processor)
    return processor


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def processor_state(processor: Any) -> Dict[str, Any]:
    """What the processor computes from: the vocabulary and special tokens of a tokenizer, the
    configuration of an image processor or feature extractor."""
    if processor_kind(processor) == "text":
        return {"vocab": sorted(processor.get_vocab().items()),
                "special": sorted(map(str, processor.all_special_tokens)),
                "lower": bool(getattr(processor, "do_lower_case", False)),
                "pad": [processor.padding_side, processor.truncation_side]}
    state = _jsonable(processor.to_dict())
    for key in ("processor_class", "_processor_class", "image_processor_type", "feature_extractor_type"):
        state.pop(key, None)
    return state


def fingerprint(processor: Any) -> str:
    """A digest of :func:`processor_state`: two processors with one fingerprint give the same tensors."""
    known = _FINGERPRINTS.get(id(processor))
    if known is None or known[0] is not processor:
        text = json.dumps(processor_state(processor), sort_keys=True)
        known = _FINGERPRINTS[id(processor)] = (processor, hashlib.sha256(text.encode()).hexdigest()[:16])
    return known[1]


def resolve_processor(spec: Mapping[str, Any], folder: Optional[str] = None) -> Any:
    """The processor of a record entry (:func:`processor_spec`): from ``folder`` (a saved model:
    ``<folder>/<files>``) when given, else the one loaded in this process, else from its ``source``.

    Raises:
        FileNotFoundError: ``folder`` lacks the processor's files.
        ValueError: the entry is malformed, or the processor found has another fingerprint than the
            one recorded (it would give other tensors than those the model was trained on).
    """
    if not isinstance(spec, Mapping) or spec.get("kind") not in PROCESSOR_KINDS:
        raise ValueError(f"processor: expected a record entry with 'kind' in {sorted(PROCESSOR_KINDS)}, got {spec!r}")
    kind, expected = spec["kind"], spec.get("fingerprint")
    if folder is not None:
        where = os.path.join(folder, str(spec.get("files") or ""))
        if os.path.isdir(where):
            processor, source = load_processor(where, kind), where
        else:  # saved without its processors (model.save_pretrained): the source, if it is the same
            try:
                processor, source = resolve_processor(spec), str(spec.get("source"))
            except (OSError, ValueError):
                raise FileNotFoundError(
                    f"processor: the saved model {folder!r} has no folder {spec.get('files')!r} and its source "
                    f"{spec.get('source')!r} gives no identical {kind} processor; expected the processor saved "
                    "there by trainer.save_model (or arl_hf.data.processors.save_processors)") from None
            logger.warning("%s: %s has no %s; using the identical processor of its source %s", kind, folder,
                           spec.get("files"), source)
    else:
        cached = _BY_FINGERPRINT.get(expected) if expected else None
        if cached is not None and processor_kind(cached) == kind:
            return cached
        source = str(spec.get("source") or "")
        processor = load_processor(source, kind)
    if expected and fingerprint(processor) != expected:
        raise ValueError(f"processor: the {kind} processor at {source!r} differs from the one the model was "
                         f"trained with (fingerprint {fingerprint(processor)}, recorded {expected})")
    return processor


def recorded_processors(config: Any) -> Dict[str, Dict[str, Any]]:
    """Modality -> processor entry recorded in a model's ``config.preprocessing["data"]`` (``config``: a
    config, a ``config.json`` dict, a ``config.preprocessing`` dict or a preprocessing record dict)."""
    pre = config.get("preprocessing") if isinstance(config, Mapping) and "preprocessing" in config else (
        getattr(config, "preprocessing", config))
    data = pre.get("data") if isinstance(pre, Mapping) and "data" in pre else pre
    mods = data.get("modalities") if isinstance(data, Mapping) else None
    if not isinstance(mods, Mapping):
        return {}
    return {str(m): dict(s["processor"]) for m, s in mods.items()
            if isinstance(s, Mapping) and isinstance(s.get("processor"), Mapping)}


def _own_folder(config: Any) -> Optional[str]:
    """The folder a model was loaded from: its ``name_or_path`` when a folder, the local snapshot of a
    Hub id (offline from the cache), else ``None``."""
    own = getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None)
    if not own:
        return None
    if os.path.isdir(str(own)):
        return str(own)
    if str(own).count("/") == 1 and not str(own).startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(str(own), allow_patterns=[f"{PROCESSORS_DIR}/*", "config.json"])
        except Exception:  # not in the cache offline, no network: the sources or this process instead
            return None
    return None


def save_processors(model: Any, output_dir: str) -> List[str]:
    """Write each processor recorded in ``model.config`` into ``<output_dir>/processors/<modality>/``
    (``save_pretrained``); returns the folders written. A processor comes from the model's own folder
    when the model was loaded from one, else from this process or its source checkpoint.

    Raises:
        FileNotFoundError / ValueError: a recorded processor cannot be found (see :func:`resolve_processor`).
    """
    config = getattr(model, "config", model)
    recorded = recorded_processors(config)
    own = _own_folder(config) if recorded else None
    written = []
    for modality, spec in recorded.items():
        target = os.path.join(output_dir, str(spec.get("files") or f"{PROCESSORS_DIR}/{modality}"))
        here = os.path.join(own, str(spec.get("files"))) if own else None
        if here and os.path.abspath(here) == os.path.abspath(target):
            written.append(target)
            continue
        processor = resolve_processor(spec, own if here and os.path.isdir(here) else None)
        processor.save_pretrained(target)
        written.append(target)
    return written


def load_processors(model_or_folder: Any) -> Dict[str, Any]:
    """Modality -> processor of a saved model folder (its ``config.json`` and ``processors/``), or of a
    model (from its own folder or Hub snapshot when it was loaded from one, else this process or the
    sources)."""
    if isinstance(model_or_folder, (str, os.PathLike)):
        folder = os.fspath(model_or_folder)
        path = os.path.join(folder, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model_or_folder: {folder!r} has no config.json; expected a folder written "
                                    "by save_pretrained / trainer.save_model")
        with open(path, encoding="utf-8") as fh:
            config = json.load(fh)
        return {m: resolve_processor(s, folder) for m, s in recorded_processors(config).items()}
    config = getattr(model_or_folder, "config", model_or_folder)
    recorded = recorded_processors(config)
    own = _own_folder(config) if recorded else None
    out = {}
    for m, spec in recorded.items():
        saved = own and os.path.isdir(os.path.join(own, str(spec.get("files"))))
        out[m] = resolve_processor(spec, own if saved else None)
    return out
