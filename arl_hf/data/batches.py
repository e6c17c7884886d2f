"""Whole-batch reads of a split's Arrow table, and batch tensors built once.

``Dataset.with_transform`` hands its transform every column as Python objects: a stored
``257 x 188`` spectrogram becomes 48k Python floats, and every stored frame of a clip is
decoded although the transform uses one. :func:`bind_row_transform` binds a transform so that
the formatter extracts only a row-position column and the light columns; the transform
(:class:`RowBatchTransform`) reads the heavy columns of the batch's rows from the Arrow table
(:class:`ArrowRowReader`): fixed-shape array columns (``Array2D`` ... ``Array5D``) gathered from
NumPy views of the record batches into one ``(n, *shape)`` array (the one copy), columns
holding images as their undecoded ``{"bytes", "path"}`` records (the transform decodes only
the frames it picks, JPEGs in one batched call).

Batch tensors are allocated by :func:`batch_buffer` (in shared memory inside a DataLoader
worker, so the batch is not copied again to reach the main process) and marked; when
``datasets`` splits a transformed batch into rows (``Dataset.__getitems__``), the collator
gets the batch back as a view (:func:`rows_as_batch`) instead of stacking the rows again.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ["ROW_COLUMN", "ArrowRowReader", "RowBatchTransform", "batch_buffer", "bind_row_transform",
           "contains_image", "fixed_shape_arrays", "mark_batch", "rows_as_batch"]

#: the row-position column :func:`bind_row_transform` adds to a split
ROW_COLUMN = "__row__"

_ARRAY_XD = ("Array2D", "Array3D", "Array4D", "Array5D")
#: attribute set on the tensors allocated for a batch (see :func:`mark_batch`)
_BATCH_MARK = "_arl_hf_batch"


def _is_array_xd(feature: Any) -> bool:
    return type(feature).__name__ in _ARRAY_XD and all(d is not None for d in getattr(feature, "shape", (None,)))


def contains_image(feature: Any) -> bool:
    """Whether a (possibly nested) ``datasets`` feature holds ``Image`` values."""
    if type(feature).__name__ == "Image":
        return True
    if isinstance(feature, Mapping):
        return any(contains_image(v) for v in feature.values())
    if isinstance(feature, (list, tuple)):
        return any(contains_image(v) for v in feature)
    inner = getattr(feature, "feature", None)  # List / LargeList / Sequence
    return inner is not None and contains_image(inner)


# ----------------------------------------------------------------------------- batch tensors
def in_worker() -> bool:
    """Whether this runs inside a ``torch.utils.data.DataLoader`` worker."""
    import torch

    return torch.utils.data.get_worker_info() is not None


def mark_batch(tensor: Any) -> Any:
    """Mark ``tensor`` (a tensor allocated for a batch here, or a view of one: its base is marked) as
    a batch built here (rows cut from it may be viewed as the batch again by :func:`rows_as_batch`);
    returns it."""
    setattr(tensor if tensor._base is None else tensor._base, _BATCH_MARK, True)
    return tensor


def batch_buffer(shape: Sequence[int], dtype: Any = None):
    """An uninitialised, marked tensor for a batch: in shared memory inside a DataLoader worker (as
    ``default_collate`` allocates it, so the batch crosses to the main process without a copy),
    taken from the worker's recycled buffers when one of that size is free (:mod:`.handover`)."""
    import torch

    dtype = dtype or torch.float32
    if not in_worker():
        return mark_batch(torch.empty(tuple(shape), dtype=dtype))
    from .handover import shared_buffer

    return mark_batch(shared_buffer(tuple(int(d) for d in shape), dtype))


def rows_as_batch(values: Sequence[Any]):
    """The batch the tensors ``values`` are consecutive rows of, as a view (no copy), or ``None``.

    Only rows of a tensor built here (:func:`mark_batch`) qualify: each value must be a view of
    that batch with the same shape, strides and dtype, at evenly spaced offsets in order (what
    ``Dataset.__getitems__`` cuts from a transformed batch). Anything else (tensors of the
    caller, rows reordered or from several batches) gives ``None`` and is stacked as usual."""
    import torch

    if not values or not all(torch.is_tensor(v) for v in values):
        return None
    first = values[0]
    base = first._base
    if base is None or not getattr(base, _BATCH_MARK, False):
        return None
    shape, stride, dtype = first.shape, first.stride(), first.dtype
    start = first.storage_offset()
    step = values[1].storage_offset() - start if len(values) > 1 else 0
    extent = 1 + sum((s - 1) * abs(st) for s, st in zip(shape, stride)) if all(shape) else 0
    if len(values) > 1 and step < extent:
        return None
    for i, v in enumerate(values):  # views of one base share its storage
        if (v._base is not base or v.storage_offset() != start + i * step or v.shape != shape
                or v.stride() != stride or v.dtype != dtype):
            return None
    return first.as_strided((len(values),) + tuple(shape), (step,) + tuple(stride), start)


# ----------------------------------------------------------------------------- Arrow reads
def fixed_shape_arrays(column: Any, shape: Sequence[int]) -> Optional[np.ndarray]:
    """``(n, *shape)`` NumPy view of a fixed-shape ``ArrayXD`` column (a ``pyarrow`` array or
    chunked array; chunks are combined first), or ``None`` when a row is null (the caller then
    falls back to the generic extraction)."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        if column.null_count:
            return None
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    values = column.storage if isinstance(column, pa.ExtensionArray) else column
    n = len(values)
    for _ in shape:
        if values.null_count:
            return None
        values = values.flatten()
    if values.null_count:
        return None
    return values.to_numpy(zero_copy_only=False).reshape((n,) + tuple(shape))


class ArrowRowReader:
    """The heavy columns of chosen rows of a table, read without per-row formatting.

    Fixed-shape ``ArrayXD`` columns: each record batch of the table is viewed once (zero-copy on
    the memory map) as an ``(n, *shape)`` array and :meth:`rows` gathers the requested rows into
    one array (or one tensor, :func:`batch_buffer`): the batch's one copy. Image columns
    (``Image``, lists of images, flow pairs): the rows' undecoded ``{"bytes", "path"}`` records,
    as ``datasets`` gives them for ``Image(decode=False)``. The views are rebuilt after
    unpickling (a DataLoader worker) rather than pickled.

    Args:
        table: a ``pyarrow.Table`` or a ``datasets`` table.
        shapes: column -> the fixed shape of its ``ArrayXD`` feature.
        images: the columns holding images.
    """

    def __init__(self, table: Any, shapes: Dict[str, Sequence[int]], images: Sequence[str] = ()):
        self.table = table
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        self.images = list(images)
        self._views: Optional[Dict[str, List[np.ndarray]]] = None
        self._offsets: List[int] = []
        self._image_chunks: Dict[str, Any] = {}
        self._num_rows = int(getattr(table, "table", table).num_rows)

    def __getstate__(self) -> Dict[str, Any]:
        return {"table": self.table, "shapes": self.shapes, "images": self.images}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(state["table"], state["shapes"], state.get("images", ()))

    @property
    def num_rows(self) -> int:
        return self._num_rows

    def _build(self) -> None:
        pa_table = getattr(self.table, "table", self.table)
        views: Dict[str, List[np.ndarray]] = {c: [] for c in self.shapes}
        lengths = []
        if self.shapes:
            for b in pa_table.select(list(self.shapes)).to_batches():
                if not len(b):
                    continue
                lengths.append(len(b))
                for c, shape in self.shapes.items():
                    arr = fixed_shape_arrays(b.column(c), shape)
                    if arr is None:
                        raise ValueError(f"{c}: a row is null; expected a fixed-shape array in every row")
                    views[c].append(arr)
        self._offsets = np.cumsum([0] + lengths).tolist()
        self._views = views
        self._image_chunks = {}
        for c in self.images:  # one Arrow value per row, converted alone (a take would copy every frame)
            chunks = [ch for ch in pa_table.column(c).chunks if len(ch)]
            self._image_chunks[c] = (chunks, np.cumsum([0] + [len(ch) for ch in chunks]).tolist())

    @staticmethod
    def _locate(offsets: List[int], rows: List[int]):
        """``(chunk, position in the chunk)`` of each row, for chunks starting at ``offsets``."""
        if len(offsets) == 2:  # one chunk (the usual cached split)
            return [(0, r) for r in rows]
        at = [bisect.bisect_right(offsets, r) - 1 for r in rows]
        return [(ci, r - offsets[ci]) for ci, r in zip(at, rows)]

    def rows(self, rows: Sequence[int], tensors: Sequence[str] = ()) -> Dict[str, Any]:
        """Column -> the values of ``rows`` (physical row positions of the table): an ``(n, *shape)``
        NumPy array per ``ArrayXD`` column (a marked tensor from :func:`batch_buffer` for the
        columns named in ``tensors``), a list of undecoded records per image column."""
        idx = [int(r) for r in rows]
        if idx and (min(idx) < 0 or max(idx) >= self._num_rows):
            raise ValueError(f"rows: expected positions in [0, {self._num_rows}), got {min(idx)}..{max(idx)}")
        if self._views is None:
            self._build()
        out: Dict[str, Any] = {}
        if self.shapes:
            where = self._locate(self._offsets, idx)
            for c, views in self._views.items():
                dtype = views[0].dtype if views else np.dtype(np.float32)
                if c in tensors:
                    buf = batch_buffer((len(idx),) + self.shapes[c], _torch_dtype(dtype))
                    dst = buf.numpy()
                else:
                    buf = dst = np.empty((len(idx),) + self.shapes[c], dtype=dtype)
                for i, (ci, li) in enumerate(where):
                    dst[i] = views[ci][li]
                out[c] = buf
        for c in self.images:
            chunks, offsets = self._image_chunks[c]
            out[c] = [chunks[ci][li].as_py() for ci, li in self._locate(offsets, idx)]
        return out


def _torch_dtype(dtype: np.dtype):
    import torch

    return torch.from_numpy(np.empty(0, dtype)).dtype


class RowBatchTransform:
    """A batch transform fed from a ``with_transform`` batch holding the row positions
    (:data:`ROW_COLUMN`) and the light columns; the heavy ones (fixed-shape arrays, images) are
    read from the table (:class:`ArrowRowReader`). Spectrogram and image modalities of the
    wrapped transform arrive as one float tensor per batch, frames as undecoded records.

    Args:
        transform: the wrapped batch transform (e.g. a :class:`~arl_hf.data.MultimodalTransform`).
        reader: the reader of the split's heavy columns.
        columns: the split's columns, in order (the order of the batch given to ``transform``).
    """

    def __init__(self, transform: Callable[[Dict[str, Any]], Dict[str, Any]], reader: ArrowRowReader,
                 columns: Sequence[str]):
        if not callable(transform):
            raise ValueError(f"transform: expected a callable, got {type(transform).__name__}")
        self.transform = transform
        self.reader = reader
        self.columns = [c for c in columns if c != ROW_COLUMN]
        kinds = {k: dict(v).get("kind") for k, v in (getattr(transform, "modalities", None) or {}).items()}
        self.tensors = [c for c, kind in kinds.items() if kind in ("spectrogram", "image") and c in reader.shapes]

    def __getattr__(self, name: str) -> Any:
        # the wrapped transform's settings (train, modalities, ...) read through the wrapper
        if name in ("transform", "reader", "columns", "tensors") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.transform, name)

    def __repr__(self) -> str:
        return f"RowBatchTransform({self.transform!r})"

    def __call__(self, batch: Dict[str, List[Any]]) -> Dict[str, Any]:
        if ROW_COLUMN not in batch:
            raise ValueError(f"batch: expected the row-position column {ROW_COLUMN!r}, got columns {sorted(batch)}")
        read = self.reader.rows(batch[ROW_COLUMN], tensors=self.tensors)
        columns = {c: read[c] if c in read else batch[c] for c in self.columns if c in read or c in batch}
        return self.transform(columns)


def bind_row_transform(dataset: Any, transform: Callable[[Dict[str, Any]], Dict[str, Any]]):
    """``dataset`` with ``transform`` bound through :class:`RowBatchTransform`: a copy holding a
    :data:`ROW_COLUMN` (``Dataset.add_column``), formatted with ``with_transform`` on that column
    and the light columns. Indexing it (``ds[i]``, ``ds[list]``, a DataLoader's
    ``__getitems__``) gives ``transform`` one read of the batch: each ``ArrayXD`` column as one
    array (spectrogram and image modalities as one float tensor), each image column as undecoded
    records (``Image(decode=False)``), the other columns as ``with_transform`` gives them. Column
    queries (``ds["id"]``) return the stored column."""
    columns = list(dataset.column_names)
    indexed = dataset.with_format(None).add_column(ROW_COLUMN, np.arange(len(dataset), dtype=np.int64))
    shapes = {c: indexed.features[c].shape for c in columns if _is_array_xd(indexed.features[c])}
    images = [c for c in columns if c not in shapes and contains_image(indexed.features[c])]
    reader = ArrowRowReader(indexed.data, shapes, images)
    wrapped = RowBatchTransform(transform, reader, columns)
    heavy = set(shapes) | set(images)
    return indexed.with_transform(wrapped, columns=[ROW_COLUMN] + [c for c in columns if c not in heavy])
