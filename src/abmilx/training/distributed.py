"""torchrun context and the global batch plan that makes any number of ranks train alike.

`batch_size` is the global batch: the bags of one optimisation step over all ranks. A rank runs
them in `accumulation` forward passes of `micro` bags (gradient accumulation), so that
world x accumulation x micro = batch_size on any number of processes: the official two-GPU
batch of 6 is 2 ranks x 3 bags, or 1 rank x 2 passes of 3 bags. Batches are cut from one
permutation of the training bags seeded by (seed, epoch): step k takes positions
[k*B, (k+1)*B) of it, rank r its r-th slice, cut into its passes in order. Every plan with the
same global batch therefore sees the same bags per step (and in E2E the same sampled patches,
which are drawn per bag), and the gradient is the mean over the whole step. What still differs:
BatchNorm statistics (per pass), dropout draws (seeded by seed + rank) and E2E crop parameters,
which are drawn per pass from its bags (TrainCollate, as the official scheme per GPU).
"""

from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist

from abmilx.runtime.devices import resolve_device


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of everything random about an epoch's data order."""
    return seed * 100_003 + epoch


def accumulation_plan(batch_size: int, micro_batch_size: int | None, world: int) -> tuple[int, int]:
    """(bags per forward pass, passes per step) of one rank for a global `batch_size`."""
    micro = micro_batch_size or max(1, batch_size // world)
    if batch_size % (world * micro):
        what = f"micro_batch_size {micro_batch_size}" if micro_batch_size else "the processes"
        raise ValueError(
            f"settings key 'batch_size': the global batch {batch_size} is not a multiple of "
            f"{world} process(es) x {micro} slides ({what}); choose a batch_size that "
            f"{world} x micro_batch_size divides"
        )
    return micro, batch_size // (world * micro)


def global_batches(
    n_items: int,
    batch_size: int,
    world: int,
    rank: int,
    seed: int,
    epoch: int,
    accumulation: int = 1,
) -> list[list[list[int]]]:
    """This rank's steps for `epoch`, each a list of its forward passes (indices into the items).

    `batch_size` is the global batch. Incomplete global batches are dropped when there is at
    least one full one; a tiny set (fewer items than batch_size) makes one step, padded by
    wrapping around so that every rank has a non-empty pass.
    """
    order = torch.randperm(
        n_items, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch))
    )
    order = order.tolist()
    if n_items >= batch_size:
        n_steps = n_items // batch_size
    else:
        n_steps = 1
        if world > 1:
            order = [order[i % n_items] for i in range(max(batch_size, world))]
    plan = []
    for step in range(n_steps):
        chunk = order[step * batch_size : (step + 1) * batch_size]
        per_rank = math.ceil(len(chunk) / world)
        mine = chunk[rank * per_rank : (rank + 1) * per_rank]
        size = math.ceil(len(mine) / accumulation)
        plan.append([mine[i : i + size] for i in range(0, len(mine), size)])
    return plan


class Distributed:
    """torchrun context (WORLD_SIZE, RANK, LOCAL_RANK): gloo on CPU, nccl on CUDA."""

    def __init__(self, device_name: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if torch.cuda.is_available() and device_name != "cpu":
                torch.cuda.set_device(local_rank)
                self.device = torch.device("cuda", local_rank)
                dist.init_process_group("nccl")
            else:
                self.device = torch.device("cpu")
                dist.init_process_group("gloo")
        else:
            self.device = resolve_device(device_name)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sync_from_main(self, module: torch.nn.Module) -> None:
        """Copy rank 0's weights and buffers, so every rank validates the same model."""
        if self.world > 1:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def gather(self, values: list) -> list:
        """Concatenate per-rank lists in rank order (identity without DDP)."""
        if self.world == 1:
            return values
        gathered: list[list] = [[] for _ in range(self.world)]
        dist.all_gather_object(gathered, values)
        return [value for part in gathered for value in part]

    def close(self) -> None:
        if self.world > 1:
            dist.destroy_process_group()
