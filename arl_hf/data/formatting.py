"""The ``arl_hf`` dataset format: a transform fed straight from the Arrow memory map.

``Dataset.with_transform`` hands its transform every column as Python objects: a cached
257x188 spectrogram becomes 48k Python floats (about 2 ms to build and as long to turn
back into an array), and every stored frame of a clip is decoded although one is used.
``ds.with_format("arl_hf", transform=fn)`` (what :func:`arl_hf.data.attach_transforms`
sets) calls ``fn`` on the same batch dict with two differences:

* fixed-shape array columns (``Array2D``/``Array3D``/...) arrive as read-only NumPy
  arrays viewing the Arrow data (no Python lists);
* columns holding ``Image`` features arrive undecoded, as ``{"bytes", "path"}`` dicts,
  so the transform decodes only the frames it picks
  (:func:`arl_hf.data.transforms.decode_pixels`).

Every other column is extracted and decoded exactly as ``with_transform`` does. The
format is registered with ``datasets`` when this module is imported (``arl_hf.data``
imports it), including in DataLoader worker processes that unpickle a formatted dataset.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional

import datasets
import pyarrow as pa
from datasets.formatting import formatting as _fmt

__all__ = ["FORMAT_TYPE", "ArrowTransformFormatter", "contains_image"]

#: the format type name: ``ds.with_format(FORMAT_TYPE, transform=fn)``
FORMAT_TYPE = "arl_hf"

_ARRAY_XD = tuple(getattr(datasets.features, n) for n in ("Array2D", "Array3D", "Array4D", "Array5D"))


def contains_image(feature: Any) -> bool:
    """Whether a (possibly nested) ``datasets`` feature holds ``Image`` values."""
    if isinstance(feature, datasets.Image):
        return True
    if isinstance(feature, Mapping):
        return any(contains_image(v) for v in feature.values())
    if isinstance(feature, (list, tuple)):
        return any(contains_image(v) for v in feature)
    inner = getattr(feature, "feature", None)  # List / LargeList / Sequence
    return inner is not None and contains_image(inner)


def _fixed_shape_numpy(column: pa.ChunkedArray, feature: Any):
    """``(n, *shape)`` NumPy view of a fixed-shape ``ArrayXD`` column without nulls (its values
    flattened zero-copy and reshaped: ~3x faster than the generic extraction); ``None`` when
    the shape has a free dimension or a row is null (the caller falls back)."""
    import numpy as np

    shape = tuple(feature.shape)
    if any(d is None for d in shape) or column.null_count:
        return None
    parts = []
    for chunk in column.chunks:
        values = chunk.storage if hasattr(chunk, "storage") else chunk
        for _ in shape:
            values = values.flatten()
        if values.null_count:
            return None
        parts.append(values.to_numpy(zero_copy_only=False).reshape((len(chunk),) + shape))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class ArrowTransformFormatter(_fmt.CustomFormatter):
    """``datasets`` formatter of the ``arl_hf`` format (see the module docstring).

    Args:
        transform: called with the batch dict (column -> list / array of values).
        features: the dataset's features (``datasets`` passes them).
    """

    def __init__(self, transform: Callable[[Dict[str, Any]], Dict[str, Any]],
                 features: Optional[datasets.Features] = None, token_per_repo_id=None, **kwargs: Any):
        if not callable(transform):
            raise ValueError(f"transform: expected a callable, got {type(transform).__name__}")
        super().__init__(transform=transform, features=features, token_per_repo_id=token_per_repo_id, **kwargs)
        self._numpy = _fmt.NumpyArrowExtractor()

    def format_batch(self, pa_table: pa.Table) -> Dict[str, Any]:
        features = self.features or {}
        batch: Dict[str, Any] = {}
        rest = []
        for col in pa_table.column_names:
            feature = features.get(col)
            if isinstance(feature, _ARRAY_XD):
                arr = _fixed_shape_numpy(pa_table[col], feature)
                batch[col] = arr if arr is not None else self._numpy.extract_column(pa_table.select([col]))
            elif feature is not None and contains_image(feature):
                batch[col] = pa_table[col].to_pylist()
            else:
                rest.append(col)
        if rest:
            plain = self.python_arrow_extractor().extract_batch(pa_table.select(rest))
            batch.update(self.python_features_decoder.decode_batch(plain))
        return self.transform({col: batch[col] for col in pa_table.column_names})


def _register() -> None:
    from datasets import formatting as registry

    if registry._FORMAT_TYPES.get(FORMAT_TYPE) is not ArrowTransformFormatter:
        registry._register_formatter(ArrowTransformFormatter, FORMAT_TYPE)


_register()
