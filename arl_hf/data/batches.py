"""Whole-batch reads of a split's Arrow table: one ``take`` per batch, fixed-shape columns as NumPy.

``Dataset.with_transform`` hands its transform every column as Python objects: a stored
``64 x 64`` spectrogram becomes 4096 Python floats, built and turned back into an array for
every example of every batch. :func:`bind_row_transform` binds a transform so that the
formatter extracts only a row-position column; the transform (:class:`RowBatchTransform`)
then reads the batch's rows from the Arrow table in one ``pyarrow.Table.take`` and hands
fixed-shape array columns (``Array2D`` ... ``Array5D``) to the wrapped transform as one
``(n, *shape)`` NumPy array viewing the taken rows. Every other column is extracted and
decoded as ``with_transform`` does (``Features.decode_batch``), so the wrapped transform sees
the same values either way.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["ROW_COLUMN", "ArrayColumnReader", "RowBatchTransform", "bind_row_transform", "fixed_shape_arrays"]

#: the row-position column :func:`bind_row_transform` adds to a split
ROW_COLUMN = "__row__"

_ARRAY_XD = ("Array2D", "Array3D", "Array4D", "Array5D")


def _is_array_xd(feature: Any) -> bool:
    return type(feature).__name__ in _ARRAY_XD and all(d is not None for d in getattr(feature, "shape", (None,)))


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


class ArrayColumnReader:
    """Rows of the fixed-shape ``ArrayXD`` columns of a table as NumPy views.

    Each record batch of the table is viewed once (zero-copy on the memory map) as an
    ``(n, *shape)`` array; :meth:`rows` then returns, per column, the list of the requested
    rows (views: the caller's stacking is the one copy). The views are rebuilt after
    unpickling (a DataLoader worker) rather than pickled.

    Args:
        table: a ``pyarrow.Table`` or a ``datasets`` table.
        shapes: column -> the fixed shape of its ``ArrayXD`` feature.
    """

    def __init__(self, table: Any, shapes: Dict[str, Sequence[int]]):
        self.table = table
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        self._views: Optional[Dict[str, List[np.ndarray]]] = None
        self._offsets: Optional[np.ndarray] = None

    def __getstate__(self) -> Dict[str, Any]:
        return {"table": self.table, "shapes": self.shapes}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(state["table"], state["shapes"])

    def _build(self) -> None:
        pa_table = getattr(self.table, "table", self.table)
        batches = [b for b in pa_table.select(list(self.shapes)).to_batches() if len(b)]
        views: Dict[str, List[np.ndarray]] = {c: [] for c in self.shapes}
        for b in batches:
            for c, shape in self.shapes.items():
                arr = fixed_shape_arrays(b.column(c), shape)
                if arr is None:
                    raise ValueError(f"{c}: a row is null; expected a fixed-shape array in every row")
                views[c].append(arr)
        self._offsets = np.cumsum([0] + [len(b) for b in batches], dtype=np.int64)
        self._views = views

    def rows(self, rows: Sequence[int]) -> Dict[str, List[np.ndarray]]:
        """Column -> the arrays of ``rows`` (physical row positions of the table)."""
        if self._views is None:
            self._build()
        idx = np.asarray(rows, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self._offsets[-1]):
            raise ValueError(f"rows: expected positions in [0, {int(self._offsets[-1])}), got {idx.min()}..{idx.max()}")
        chunk = np.searchsorted(self._offsets, idx, side="right") - 1
        local = (idx - self._offsets[chunk]).tolist()
        chunk = chunk.tolist()
        return {c: [v[ci][li] for ci, li in zip(chunk, local)] for c, v in self._views.items()}


class RowBatchTransform:
    """A batch transform fed from a ``with_transform`` batch holding the row positions
    (:data:`ROW_COLUMN`) and the columns that are not fixed-shape arrays; those arrays are read
    from the table as NumPy views (:class:`ArrayColumnReader`).

    Args:
        transform: the wrapped batch transform (e.g. a :class:`~arl_hf.data.MultimodalTransform`).
        reader: the reader of the split's ``ArrayXD`` columns.
        columns: the split's columns, in order (the order of the batch given to ``transform``).
    """

    def __init__(self, transform: Callable[[Dict[str, Any]], Dict[str, Any]], reader: ArrayColumnReader,
                 columns: Sequence[str]):
        if not callable(transform):
            raise ValueError(f"transform: expected a callable, got {type(transform).__name__}")
        self.transform = transform
        self.reader = reader
        self.columns = [c for c in columns if c != ROW_COLUMN]

    def __getattr__(self, name: str) -> Any:
        # the wrapped transform's settings (train, modalities, ...) read through the wrapper
        if name in ("transform", "reader", "columns") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.transform, name)

    def __repr__(self) -> str:
        return f"RowBatchTransform({self.transform!r})"

    def __call__(self, batch: Dict[str, List[Any]]) -> Dict[str, Any]:
        if ROW_COLUMN not in batch:
            raise ValueError(f"batch: expected the row-position column {ROW_COLUMN!r}, got columns {sorted(batch)}")
        arrays = self.reader.rows(batch[ROW_COLUMN])
        columns = {c: arrays[c] if c in arrays else batch[c] for c in self.columns if c in arrays or c in batch}
        return self.transform(columns)


def bind_row_transform(dataset: Any, transform: Callable[[Dict[str, Any]], Dict[str, Any]]):
    """``dataset`` with ``transform`` bound through :class:`RowBatchTransform`: a copy holding a
    :data:`ROW_COLUMN` (``Dataset.add_column``), formatted with ``with_transform`` on that column
    and the columns that are not fixed-shape arrays. Indexing it (``ds[i]``, ``ds[list]``, a
    DataLoader's ``__getitems__``) gives ``transform`` the values
    ``dataset.with_format(None).with_transform(transform)`` gives it, with each ``ArrayXD``
    column a list of NumPy arrays instead of nested lists; column queries (``ds["id"]``)
    return the stored column."""
    columns = list(dataset.column_names)
    indexed = dataset.with_format(None).add_column(ROW_COLUMN, np.arange(len(dataset), dtype=np.int64))
    shapes = {c: indexed.features[c].shape for c in columns if _is_array_xd(indexed.features[c])}
    reader = ArrayColumnReader(indexed.data, shapes)
    wrapped = RowBatchTransform(transform, reader, columns)
    return indexed.with_transform(wrapped, columns=[ROW_COLUMN] + [c for c in columns if c not in shapes])
