"""Map a function over contiguous chunks of a list in worker processes, results in order.

For CPU-bound per-item work whose items are independent (sacrebleu's TER and chrF segment
statistics), so the split cannot change a result. Workers start with "forkserver" (fork is unsafe
when the parent holds torch or other threads) and import the main module (as spawn does) and the
mapped function's module, so that function must live in a light module: this one imports only the
standard library, which is why the sacrebleu worker entry point is here and not in
``aigc_eval.metrics`` (whose import pulls in scipy and nltk, ~1.3 s per worker).
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from aigc_eval.errors import UserError

WORKERS_ENV = "AIGC_EVAL_WORKERS"
# Chunks per worker: uneven items (TER's shift search cost varies widely between segments) balance
# better over several chunks than one each; the idle tail is at most one chunk. 4, 8 and 16 measured
# alike within noise on 2,000 TER and chrF pairs; more only adds pickling round trips.
CHUNKS_PER_WORKER = 8

T = TypeVar("T")
R = TypeVar("R")


def _positive_int(name: str, raw: str, fix: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"environment variable {name}={raw!r} is not a whole number ≥ 1; {fix}")
    return value


def worker_count() -> int:
    """Worker processes for :func:`map_chunks`: ``AIGC_EVAL_WORKERS`` when set, else this process's
    CPUs divided by ``LOCAL_WORLD_SIZE`` (under torchrun each local rank gets its share)."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if raw:
        return _positive_int(
            WORKERS_ENV, raw, f"set {WORKERS_ENV} to a worker count (1: no workers) or unset it"
        )
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13+: honours affinity and -X cpu_count
    if counter is not None:
        cpus = counter() or 1
    elif hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:
        cpus = os.cpu_count() or 1
    ranks_raw = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    ranks = (
        _positive_int("LOCAL_WORLD_SIZE", ranks_raw, "unset it or launch with torchrun") if ranks_raw else 1
    )
    return max(1, cpus // ranks)


def _start_method() -> str:
    # forkserver: the server imports the main module once and forks cheap workers from it;
    # spawn where it does not exist (Windows).
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def map_chunks(
    fn: Callable[[list[T]], Sequence[R]],
    items: Sequence[T],
    *,
    min_items: int,
    workers: int | None = None,
) -> list[R]:
    """``fn`` over contiguous chunks of ``items``, concatenated in order: equal to ``list(fn(items))``
    when ``fn`` treats items independently.

    ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one) and return
    one result per item. With fewer than ``min_items`` items or one worker it runs in this process.
    Workers import the main module as Python's spawn does, so a script calling this keeps its
    top-level code under ``if __name__ == "__main__":`` (and its heavy imports inside it).
    An exception raised by ``fn`` in a worker is re-raised here; a worker that dies (killed, out of
    memory) raises :class:`BrokenProcessPool`.
    """
    count = worker_count() if workers is None else workers
    # A daemonic process (a multiprocessing.Pool worker) may not start processes of its own.
    if count <= 1 or len(items) < max(min_items, 2) or multiprocessing.current_process().daemon:
        return list(fn(list(items)))
    count = min(count, len(items))
    size = math.ceil(len(items) / (count * CHUNKS_PER_WORKER))
    chunks = [list(items[start : start + size]) for start in range(0, len(items), size)]
    pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context(_start_method()))
    try:
        futures: list[Future[Sequence[R]]] = [pool.submit(fn, chunk) for chunk in chunks]
        results: list[R] = []
        for future in futures:
            results.extend(future.result())
        return results
    except BrokenProcessPool as exc:
        raise BrokenProcessPool(
            f"a worker process died ({exc}); if this runs from a script, guard its top-level code with "
            f"`if __name__ == '__main__':`, or set {WORKERS_ENV}=1 to compute in this process"
        ) from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error: drop the chunks not yet started


def sacrebleu_segment_statistics(metric: Any, pairs: list[tuple[str, Sequence[str]]]) -> list[list[Any]]:
    """Worker entry point: sacrebleu's per-segment statistics of ``(hypothesis, references)`` pairs.

    ``metric`` is a sacrebleu metric object (its module, ~0.08 s to import, is all a worker loads).
    Missing references become ``None`` in sacrebleu's reference streams, its own convention for
    variable reference counts, so a chunk gives the rows the whole list would.
    """
    width = max((len(refs) for _, refs in pairs), default=0)
    streams = [[refs[j] if j < len(refs) else None for _, refs in pairs] for j in range(width)]
    return metric._extract_corpus_statistics([hyp for hyp, _ in pairs], streams)
