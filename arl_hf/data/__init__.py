"""Datasets for multimodal learning: builders that turn raw downloads into cached HF datasets.

``arl_hf.data.load(name, data_dir=..., preprocessing=...)`` returns a ``DatasetDict`` with
``train`` / ``validation`` / ``test``, one column per modality and ``labels``. Names:
``cremad``, ``ave``, ``kinetics_sounds``, ``mosi``, ``ucf101``, ``avdigits`` (embedded,
built offline), and any builder class decorated with ``@register_dataset(name)`` (its
defaults are class attributes; see :mod:`.builder`). ``load`` and the table live in
:mod:`.catalog`. Audio presets (``ogm``, ``scipy``, ``fbank``) live in :mod:`.audio`; the
batch collator (which applies each split's transform, or reads any plain dataset's columns by
their features: :mod:`.features`, :mod:`.raw`) in :mod:`.collator`; the typed preprocessing
record in :mod:`.record`; sharing a prepared dataset in :mod:`.sharing`.

Importing this package is light: ``datasets``, ``librosa``, ``soundfile``, ``scipy``,
``sklearn`` and ``av`` are imported only when a function needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load": "catalog",
    "attach_transforms": "catalog",
    "make_transform": "catalog",
    "available_datasets": "catalog",
    "builder_class": "catalog",
    "register_dataset": "catalog",
    "modality_spec": "catalog",
    "modality_kinds": "catalog",
    "preprocessing_info": "catalog",
    "class_names": "catalog",
    "num_classes": "catalog",
    "PreprocessingRecord": "record",
    "ModalitySpec": "record",
    "ARLBuilder": "builder",
    "ARLBuilderConfig": "builder",
    "VideoDatasetBuilder": "video_builder",
    "AudioPreset": "audio",
    "AUDIO_PRESETS": "audio",
    "get_audio_preset": "audio",
    "compute_features": "audio",
    "MultimodalCollator": "collator",
    "infer_record": "features",
    "hold_out_validation": "labels",
    "normalise_labels": "labels",
    "RawTransform": "raw",
    "raw_preprocessor": "raw",
    "MultimodalTransform": "transforms",
    "export_prepared": "sharing",
    "load_prepared": "sharing",
    "push_prepared": "sharing",
    "select_frame_indices": "video",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
