"""Datasets for multimodal learning: builders that turn raw downloads into cached HF datasets.

``arl_hf.data.load(name, data_dir=..., preprocessing=...)`` returns a ``DatasetDict`` with
``train`` / ``validation`` / ``test``, one column per modality and ``labels``. Names:
``cremad``, ``ave``, ``kinetics_sounds``, ``mosi``, ``ucf101``, ``avdigits`` (embedded,
built offline). Audio presets (``ogm``, ``scipy``, ``fbank``) live in :mod:`.audio`; the
batch collator (which applies each split's transform) in :mod:`.collator`; the typed preprocessing
record in :mod:`.record`; sharing a prepared dataset in :mod:`.sharing`.

Importing this package is light: ``datasets``, ``librosa``, ``soundfile``, ``scipy``,
``sklearn`` and ``av`` are imported only when a function needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load": "registry",
    "attach_transforms": "registry",
    "make_transform": "registry",
    "PreprocessingRecord": "record",
    "ModalitySpec": "record",
    "available_datasets": "registry",
    "builder_class": "registry",
    "modality_spec": "registry",
    "modality_kinds": "registry",
    "preprocessing_info": "registry",
    "label_names": "registry",
    "num_labels": "registry",
    "DATASETS": "registry",
    "AudioPreset": "audio",
    "PRESETS": "audio",
    "get_preset": "audio",
    "compute_features": "audio",
    "MultimodalCollator": "collator",
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
