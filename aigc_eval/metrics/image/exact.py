"""Error-free float64 matrix products (Ozaki et al.): operands split into slices whose pairwise BLAS
products are exact, summed with TwoSum into an unevaluated (high, low) pair. The FID factor
refinement forms Vᵀ Σ V with it where float64 products would cancel.
"""

from __future__ import annotations

import math

import numpy as np

# Splitting the operands of a product into slices whose pairwise BLAS products are exact.
_MAX_SLICES = 8


def _slices(matrix: np.ndarray, inner: int) -> list[np.ndarray]:
    """Row-wise slices of ``matrix`` summing to it, each with few enough bits for exact products."""
    shift = 2.0 ** (math.ceil((55 + math.log2(max(inner, 2))) / 2) + 1)
    rest, out = matrix.copy(), []
    for _ in range(_MAX_SLICES):
        largest = np.abs(rest).max(axis=1, keepdims=True)
        if not largest.any():
            break
        exponent = np.ceil(np.log2(np.where(largest > 0, largest, 1.0)))
        sigma = shift * 2.0**exponent
        high = (rest + sigma) - sigma
        out.append(high)
        rest -= high
    return out


def _two_sum(high: np.ndarray, low: np.ndarray, term: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    total = high + term
    virtual = total - high
    return total, low + ((high - (total - virtual)) + (term - virtual))


def accurate_product(a: np.ndarray, b_parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """a @ (Σ b_parts) as an unevaluated float64 pair (high, low), accurate far below ε·|a|·|b|."""
    a_slices = _slices(a, a.shape[1])
    high = np.zeros((a.shape[0], b_parts[0].shape[1]))
    low = np.zeros_like(high)
    for b in b_parts:
        for b_slice in _slices(b.T, b.shape[0]):
            for a_slice in a_slices:
                high, low = _two_sum(high, low, a_slice @ b_slice.T)  # each product is exact
    return high, low
