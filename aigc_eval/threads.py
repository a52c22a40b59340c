"""BLAS threads for small linear algebra done many times (compare's resampled image metrics).

On small matrices OpenBLAS' threads cost more than they give. Measured on 2 cores: a 99×99
``eigvalsh`` plus a 99×1280 product took 14.4 ms on 2 threads and 0.80 ms on one; at 800 rows,
70 ms and 62 ms; at 1600, 256 ms and 305 ms. Work at most ``ONE_BLAS_THREAD_UP_TO`` wide (rows, or
feature dimensions if fewer) therefore runs on one thread (threadpoolctl), wider work on all.
"""

from __future__ import annotations

import contextlib
from typing import Any

ONE_BLAS_THREAD_UP_TO = 800


def blas_threads_for(width: int) -> contextlib.AbstractContextManager[Any]:
    """One BLAS thread while working on matrices ``width`` wide, if that is small; else no change."""
    if width > ONE_BLAS_THREAD_UP_TO:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
