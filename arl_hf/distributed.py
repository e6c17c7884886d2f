"""The one place where strategies talk across processes.

Every strategy reduces its statistics through these helpers, so all ranks take the
same decision the same way (sums and counts are summed, never averaged averages).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes; returns a new tensor (input untouched).

    Runs on the tensor's own device (no host synchronisation); with the gloo backend
    CUDA tensors are not supported, so callers keep statistics on the model's device.
    """
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all processes (for logging)."""
    if not is_distributed():
        return tensor
    return all_reduce_sum(tensor) / world_size()


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Broadcast ``tensor`` in place from ``src`` (a no-op when not distributed)."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def shutdown() -> None:
    """End the process group cleanly (a barrier, then ``destroy_process_group``); a no-op when
    none is initialised. Call it last in a script run under ``torchrun`` / ``accelerate launch``:
    a process that exits with its group alive can abort in the group's background threads
    ("terminate called without an active exception", seen with gloo)."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
