"""Data-parallel runs on torch.distributed: one process per device, started by torchrun (or
``accelerate launch``, or ``srun torchrun`` on a cluster), which set ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in each process's environment.

The plan is the same in every process; rank ``r`` of ``N`` executes shard ``r`` of every work unit
(examples ``r, r + N, ...``), writes its own generation logs, and sends its per-sample rows (and image
features) to rank 0 with ``gather_object``. Only rank 0 finalizes the run folder. Without these
variables (a plain ``aigc-eval run``) a run is one process and nothing here starts.

gloo carries the objects on CPU, NCCL on GPU (each rank on ``cuda:LOCAL_RANK``). The collectives wait
for the slowest rank, so their timeout is long (``AIGC_EVAL_DIST_TIMEOUT_S``, default 24 h): a rank that
dies is noticed by the launcher, which stops the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aigc_eval.errors import UserError

DEFAULT_TIMEOUT_S = 24 * 3600


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def world_from_env(environ: dict[str, str] | None = None) -> World:
    """The world a launcher described in the environment; one process when it described none."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        size = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
        local_size = int(env.get("LOCAL_WORLD_SIZE", str(size)))
    except ValueError:
        raise UserError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers (they are set by torchrun or accelerate "
            "launch; unset them to run in one process)"
        ) from None
    if size < 1 or not 0 <= rank < size or not 0 <= local_rank < local_size:
        raise UserError(
            f"RANK {rank}, LOCAL_RANK {local_rank}, WORLD_SIZE {size}: not a valid process layout; "
            "launch with torchrun or unset these variables"
        )
    return World(rank, size, local_rank, local_size)


def rank_device(world: World) -> str | None:
    """``cuda:LOCAL_RANK`` when GPUs are visible in a multi-process run; None (the suite's own
    device choice) otherwise."""
    if not world.distributed:
        return None
    import torch

    if torch.cuda.is_available():
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
        return f"cuda:{world.local_rank}"
    return "cpu"


class Group:
    """The run's process group: object collectives to and from rank 0."""

    def __init__(self, world: World) -> None:
        self.world = world

    @property
    def backend(self) -> str | None:
        if not self.world.distributed:
            return None
        import torch.distributed as dist

        return str(dist.get_backend())

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value``, on every rank."""
        if not self.world.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.world.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value`` in rank order on rank 0; None on the others."""
        if not self.world.distributed:
            return [value]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world.size if self.world.is_main else None
        dist.gather_object(value, out, dst=0)
        return out


@contextmanager
def process_group(world: World) -> Iterator[Group]:
    """Join the launcher's process group for the run (a no-op in one process), and leave it after."""
    if not world.distributed:
        yield Group(world)
        return
    import torch
    import torch.distributed as dist

    timeout = timedelta(seconds=float(os.environ.get("AIGC_EVAL_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)  # NCCL object collectives use the current device
        dist.init_process_group("nccl", timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    yield Group(world)
    # Leave together: a rank that tears its group down while rank 0 still finalizes aborts in gloo.
    # (On an error the process exits without this, and the launcher stops the others.)
    dist.barrier()
    dist.destroy_process_group()
