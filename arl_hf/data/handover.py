"""Recycled shared-memory batch buffers: a DataLoader worker reuses the memory of the batches the
main process has released instead of allocating fresh shared memory for every batch.

Inside a worker a batch is built in shared memory so that it reaches the main process without a
copy (:func:`arl_hf.data.batches.batch_buffer`). Fresh shared memory costs more than building
the batch in it: ``torch`` reserves the pages when it creates the segment, and every page is
faulted in when first written (measured on a 2-core VM: 8 ms per 9.6 MB, the frames of a batch
of 16 at 224 px; a CPU-bound batch costs ~30 ms to build). So each worker keeps a few segments
(:class:`BufferPool`) and writes a batch into one the main process no longer uses.

How a segment is known to be free: each worker has a small shared board with one slot per
segment. Handing a segment out writes a new issue number into its slot; the collator returns the
batch as a :class:`PooledBatch` (a ``dict``) whose pickling carries ``(slot, issue)`` of each
tensor and the board (until the main process marks it registered, then only its token); when
the main process unpickles it (:func:`rebuild_pooled_batch`) it keeps a weak
reference to each tensor's storage, and once that storage is gone (every view of the batch
released) it clears the slot, if it still holds that issue. A segment is only reused from a
cleared slot, so the main process never sees its batch change. Batches that reach the main
process another way (a wrapper that rebuilds the dict) never clear their slots: their segments
are dropped from the pool (evicted, their memory freed with the batch) and the pool stops
recycling after too many evictions, which is the plain behaviour. A batch forwarded by the main
process to yet another process must be copied first (``.clone()``): only the main process's own
references are tracked.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..log import get_logger

__all__ = ["BufferPool", "PooledBatch", "hand_over", "pool_stats", "rebuild_pooled_batch", "shared_buffer"]

logger = get_logger(__name__)

#: segments one worker keeps (a batch uses one per modality; a few batches are in flight)
MAX_BUFFERS = 16
#: slots of a worker's board: evicted segments retire their slot; when all are used, the pool
#: stops recycling (the hand-over is then the plain one)
BOARD_SLOTS = 4096


class BufferPool:
    """The recycled segments of one worker process (see the module docstring)."""

    def __init__(self, max_buffers: int = MAX_BUFFERS, slots: int = BOARD_SLOTS):
        import torch

        # the last entry is the main process's "board registered" mark (see PooledBatch)
        self.board = torch.zeros(int(slots) + 1, dtype=torch.int64).share_memory_()
        self._flags = self.board.numpy()
        self.token = f"{os.getpid()}-{os.urandom(8).hex()}"
        self.max_buffers = int(max_buffers)
        #: [slot, dtype, numel, typed storage, issue] per segment
        self.buffers: List[List[Any]] = []
        self.next_slot = 0
        self.next_issue = 1
        self.issued: List[List[Any]] = []  # handed out for the batch being built
        self.retired: List[int] = []  # slots of segments dropped while held
        self.enabled = True
        self.reused = self.allocated = self.evicted = 0

    def _new_slot(self) -> Optional[int]:
        for k, slot in enumerate(self.retired):  # a dropped segment's slot, cleared since: nothing pending on it
            if self._flags[slot] == 0:
                del self.retired[k]
                return slot
        if self.next_slot >= len(self._flags) - 1:
            self.enabled = False
            logger.debug("shared batch buffers: every board slot used (batches never released): no more recycling")
            return None
        self.next_slot += 1
        return self.next_slot - 1

    def _issue(self, entry: List[Any]):
        entry[4] = self.next_issue
        self._flags[entry[0]] = self.next_issue
        self.next_issue += 1
        self.issued.append(entry)
        return entry[3]

    def take(self, dtype: Any, numel: int):
        """A typed shared storage of ``numel`` elements of ``dtype``: a free segment of that size, else
        a new one (replacing a free segment of another size, or evicting the oldest busy one when
        the pool is full); ``None`` when the pool no longer recycles."""
        import torch

        if not self.enabled:
            return None
        if len(self.issued) >= self.max_buffers // 2:
            # handed out and never returned through the collator (batches collated by another
            # function): forget them (safe: a forgotten segment is never written again)
            stale, self.issued = self.issued[:-1], self.issued[-1:]
            for e in stale:  # never sent with its slot: the slot is free, the segment is not reused
                self.buffers.remove(e)
                self._flags[e[0]] = 0
                self.retired.append(e[0])
            self.evicted += len(stale)
        mine = {id(e) for e in self.issued}
        free = [e for e in self.buffers if self._flags[e[0]] == 0 and id(e) not in mine]
        for e in free:
            if e[1] == dtype and e[2] == numel:
                self.reused += 1
                return self._issue(e)
        if len(self.buffers) >= self.max_buffers:
            if free:  # a free segment of another size: its slot is clear, reuse it
                victim = free[0]
                slot = victim[0]
            else:  # every segment still held: forget the oldest (the main process frees it), retire its slot
                busy = [e for e in self.buffers if id(e) not in mine]
                if not busy:
                    return None
                victim = min(busy, key=lambda e: e[4])
                slot = self._new_slot()
                if slot is None:
                    return None
                self.retired.append(victim[0])
                self.evicted += 1
            self.buffers.remove(victim)
        else:
            slot = self._new_slot()
            if slot is None:
                return None
        elem = torch.empty(0, dtype=dtype)
        storage = elem._typed_storage()._new_shared(numel, device=elem.device)
        entry = [slot, dtype, numel, storage, 0]
        self.buffers.append(entry)
        self.allocated += 1
        return self._issue(entry)

    def finish(self, tensors: Dict[str, Any]) -> List[Tuple[str, int, int]]:
        """End of a batch: ``(key, slot, issue)`` of the segments the returned ``tensors`` view (they stay
        held until the main process releases them); the other segments handed out are free again."""
        sent: List[Tuple[str, int, int]] = []
        used = set()
        for key, value in tensors.items():
            ptr = _storage_ptr(value)
            if ptr is None:
                continue
            for e in self.issued:
                if id(e) not in used and e[3]._untyped_storage.data_ptr() == ptr:
                    sent.append((key, e[0], e[4]))
                    used.add(id(e))
                    break
        for e in self.issued:
            if id(e) not in used:
                self._flags[e[0]] = 0
        self.issued = []
        return sent


def _storage_ptr(value: Any) -> Optional[int]:
    import torch

    if not torch.is_tensor(value) or value.device.type != "cpu":
        return None
    return value.untyped_storage().data_ptr()


_POOL: Optional[Tuple[int, BufferPool]] = None


def _pool() -> BufferPool:
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():  # one pool per worker process
        _POOL = (os.getpid(), BufferPool())
    return _POOL[1]


def pool_stats() -> Dict[str, int]:
    """This process's pool: segments ``allocated``, ``reused`` and ``evicted`` (zeros without a pool)."""
    if _POOL is None or _POOL[0] != os.getpid():
        return {"allocated": 0, "reused": 0, "evicted": 0}
    p = _POOL[1]
    return {"allocated": p.allocated, "reused": p.reused, "evicted": p.evicted}


def shared_buffer(shape: Tuple[int, ...], dtype: Any):
    """An uninitialised tensor of ``shape`` in shared memory (inside a DataLoader worker): a recycled
    segment when one of that size is free, else fresh shared memory."""
    import torch

    numel = int(np.prod(shape)) if len(shape) else 1
    storage = _pool().take(dtype, numel)
    elem = torch.empty(0, dtype=dtype)
    if storage is None:
        storage = elem._typed_storage()._new_shared(numel, device=elem.device)
    return elem.new(storage).resize_(*shape)


class PooledBatch(dict):
    """A collated batch built in recycled segments (inside a worker): a ``dict`` that pickles with
    the ``(key, slot, issue)`` of its segments and the worker's board, so that the main process
    clears each slot once it releases the batch (:func:`rebuild_pooled_batch`)."""

    def __init__(self, batch: Dict[str, Any], pool: "BufferPool", sent: List[Tuple[str, int, int]]):
        super().__init__(batch)
        self._pool = pool
        self._sent = list(sent)

    def __reduce__(self):
        # the board crosses (one more shared storage to hand over) until the main process has
        # marked it registered, then only its token
        board = None if self._pool._flags[-1] == 1 else self._pool.board
        return rebuild_pooled_batch, (dict(self), self._pool.token, board, self._sent)


def hand_over(batch: Dict[str, Any]) -> Dict[str, Any]:
    """The collator's output inside a worker: a :class:`PooledBatch` when it views recycled segments
    (the others handed out for it are free again); outside a worker, ``batch`` unchanged."""
    if _POOL is None or _POOL[0] != os.getpid():
        return batch
    pool = _POOL[1]
    if not pool.issued:
        return batch
    sent = pool.finish(batch)
    return PooledBatch(batch, pool, sent) if sent else batch


# ----------------------------------------------------------------------------- main process
_LOCK = threading.Lock()
#: (weak reference to a received storage, board flags, slot, issue) not yet released
_PENDING: List[Tuple[Any, np.ndarray, int, int]] = []
#: the boards received, by token (the most recent ones; a dropped board is unmarked so that its
#: worker sends it again)
_BOARDS: "OrderedDict[str, np.ndarray]" = OrderedDict()
MAX_BOARDS = 64


def _sweep() -> None:
    """Clear the slots of the received batches the main process has released."""
    keep = []
    for ref, flags, slot, issue in _PENDING:
        if ref.expired():
            if flags[slot] == issue:  # the worker reissues a slot only after it is cleared
                flags[slot] = 0
        else:
            keep.append((ref, flags, slot, issue))
    _PENDING[:] = keep


def _board(token: str, board: Any) -> Optional[np.ndarray]:
    if board is not None:
        flags = board.numpy()
        _BOARDS[token] = flags
        _BOARDS.move_to_end(token)
        flags[-1] = 1  # registered: the worker stops sending it
        while len(_BOARDS) > MAX_BOARDS:
            _, old = _BOARDS.popitem(last=False)
            old[-1] = 0
        return flags
    return _BOARDS.get(token)


def rebuild_pooled_batch(batch: Dict[str, Any], token: str, board: Any,
                         sent: List[Tuple[str, int, int]]) -> Dict[str, Any]:
    """Unpickling a :class:`PooledBatch` in the main process: the plain ``dict`` of tensors; each
    tensor's segment is watched and its slot cleared once the storage is released (a batch whose
    worker's board is unknown here is not watched: its segments are never reused)."""
    from torch.multiprocessing.reductions import StorageWeakRef

    with _LOCK:
        _sweep()
        flags = _board(token, board)
        if flags is None:
            return batch
        for key, slot, issue in sent:
            value = batch.get(key)
            if value is None or _storage_ptr(value) is None:
                continue
            _PENDING.append((StorageWeakRef(value.untyped_storage()), flags, int(slot), int(issue)))
    return batch


def release_check() -> None:
    """Clear the slots of the batches released since the last batch arrived (the main process calls
    this on every received batch; exposed for tests)."""
    with _LOCK:
        _sweep()
