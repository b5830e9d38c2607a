"""Data-parallel training inside a ``torch.distributed`` process group (``torchrun``; the entry
is ``lmkit.chain.distributed``): which process this is, its share of every global batch, and the
epoch's sums over all processes. Outside a process group: rank 0 of 1, and nothing to do."""
from __future__ import annotations

import torch


def rank_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard(order: torch.Tensor, global_batch: int, rank: int, world: int) -> tuple[torch.Tensor, int]:
    """This process's share of every global batch (an incomplete last batch is dropped, so
    every process takes the same number of steps). Returns (its order, its batch size)."""
    if global_batch % world:
        raise ValueError(f"train.batch_size {global_batch} must be divisible by the {world} processes")
    b = global_batch // world
    full = len(order) // global_batch * global_batch
    return order[:full].view(-1, world, b)[:, rank].reshape(-1), b


def epoch_sums(model, total: float, total_mse: float, seen: int, world: int) -> tuple[float, float, int]:
    """The epoch's loss and MSE sums and images over all processes; batch-norm running
    statistics made rank 0's everywhere."""
    if world == 1:
        return total, total_mse, seen
    sums = torch.tensor([total, total_mse, seen], dtype=torch.float64)
    torch.distributed.all_reduce(sums)
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer, 0)
    return sums[0].item(), sums[1].item(), int(sums[2].item())
