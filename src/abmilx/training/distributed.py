"""torchrun context and the global batch plan that makes G ranks equal one process with G*B.

Batches are cut from one permutation of the training bags seeded by (seed, epoch), also on a
single process: step k takes positions [k*G*B, (k+1)*G*B) of it and rank r its r-th slice of B.
A G-rank run with per-rank batch B therefore sees the same global batches (the same bags, and
in E2E the same sampled patches, which are drawn per bag) as a 1-rank run with batch G*B, and
gradients are averaged over ranks. What still differs: per-rank BatchNorm statistics, dropout
draws (seeded by seed + rank) and E2E crop parameters, which are drawn per step from the step's
bags (TrainCollate, as the official scheme).
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


def global_batches(
    n_items: int, batch_size: int, world: int, rank: int, seed: int, epoch: int
) -> list[list[int]]:
    """This rank's batches (indices into the items) for `epoch`.

    Incomplete global batches are dropped when there is at least one full one; a tiny set (fewer
    items than world * batch_size) makes one step, padded by wrapping around so that every rank
    has a non-empty batch.
    """
    order = torch.randperm(
        n_items, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch))
    )
    order = order.tolist()
    step_size = batch_size * world
    if n_items >= step_size:
        n_steps = n_items // step_size
    else:
        n_steps = 1
        if world > 1:
            order = [order[i % n_items] for i in range(max(step_size, world))]
    plan = []
    for step in range(n_steps):
        chunk = order[step * step_size : (step + 1) * step_size]
        per_rank = math.ceil(len(chunk) / world)
        plan.append(chunk[rank * per_rank : (rank + 1) * per_rank])
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
