"""One code path for single-process and torchrun (DistributedDataParallel) runs.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a
single process (rank 0 of 1) and no process group is created. The backend
is NCCL on CUDA and gloo on CPU.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

import csra.device


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1


def setup(requested_device=None):
    """Context of this process; joins the process group under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = csra.device.pick_device(requested_device)
    if world_size <= 1:
        return Context(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return Context(rank, world_size, local_rank, device)


def cleanup(ctx):
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx):
    if ctx.distributed:
        dist.barrier()


def mean_over_ranks(ctx, value):
    """The mean of a float over all processes."""
    if not ctx.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64,
                     device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def gather_objects(ctx, obj):
    """A list with every process's obj (in rank order); [obj] in a single process."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(ctx, obj):
    """Rank 0's obj on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
