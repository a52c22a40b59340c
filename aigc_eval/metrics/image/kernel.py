"""Kernel two-sample distances of feature sets: KID and CMMD, in row blocks of bounded memory.

* KID: Bińkowski et al. 2018 (unbiased MMD², cubic polynomial kernel), subsets as in
  torchmetrics/clean-fid.
* CMMD: Jayasumana et al. 2024 (biased MMD², Gaussian RBF σ=10, ×1000).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

# Rows of a pairwise block are sized so that one block holds at most this many distances (128 MB).
_BLOCK_ENTRIES = 1 << 24
# Joint kernel matrices for KID are precomputed when the two sets together are at most this large.
_KID_PRECOMPUTE_MAX = 4096


def row_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    step = max(1, _BLOCK_ENTRIES // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2 * (a @ b.T)
    return np.maximum(d2, 0.0, out=d2)


def _kernel_mean(
    x: np.ndarray, y: np.ndarray, kernel: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> float:
    total = 0.0
    for rows in row_blocks(len(x), len(y)):
        total += float(kernel(x[rows], y).sum())
    return total / (len(x) * len(y))


def _mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD² for two samples of equal size m (the diagonals of k_xx, k_yy excluded)."""
    m = len(k_xx)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    gen: np.ndarray,
    ref: np.ndarray,
    n_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    subsets: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[float, float, int]:
    """KID: mean and population std of unbiased MMD² over random equal-size subsets.

    Kernel k(x, y) = (γ x·y + c)^d with γ = 1/dim by default. Each subset draws a
    reference permutation then a generated one (torchmetrics' order) from
    ``numpy.random.default_rng(seed)``, of size min(subset_size, N_gen, N_ref).
    ``subsets`` overrides the draws with explicit (generated, reference) index
    arrays. Returns (mean, std, subset size).
    """
    gen, ref = np.asarray(gen, np.float64), np.asarray(ref, np.float64)
    gamma = 1.0 / gen.shape[1] if gamma is None else gamma
    if subsets is None:
        m = min(subset_size, len(gen), len(ref))
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(n_subsets):
            ref_idx = rng.permutation(len(ref))[:m]
            draws.append((rng.permutation(len(gen))[:m], ref_idx))
        subsets = draws
    sizes = {len(g) for g, _ in subsets} | {len(r) for _, r in subsets}
    if len(sizes) != 1 or min(sizes) < 2:
        raise ValueError(f"KID subsets need one common size of at least 2, got sizes {sorted(sizes)}")

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T * gamma + coef) ** degree

    values = []
    if len(gen) + len(ref) <= _KID_PRECOMPUTE_MAX:
        k_gg, k_rr, k_rg = kernel(gen, gen), kernel(ref, ref), kernel(ref, gen)
        for g, r in subsets:
            values.append(_mmd2_unbiased(k_rr[np.ix_(r, r)], k_gg[np.ix_(g, g)], k_rg[np.ix_(r, g)]))
    else:
        for g, r in subsets:
            fg, fr = gen[g], ref[r]
            values.append(_mmd2_unbiased(kernel(fr, fr), kernel(fg, fg), kernel(fr, fg)))
    scores = np.asarray(values)
    return float(scores.mean()), float(scores.std()), sizes.pop()


def cmmd(gen: np.ndarray, ref: np.ndarray, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """CMMD: biased MMD² with a Gaussian RBF kernel, times ``scale`` (the CMMD paper's reference code).

    Features should be unit-norm CLIP image embeddings (the ``clip`` backbone returns those).
    """
    gen, ref = np.asarray(gen, np.float64), np.asarray(ref, np.float64)
    gamma = 1.0 / (2 * sigma**2)

    def rbf(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-gamma * squared_distances(a, b))

    value = _kernel_mean(ref, ref, rbf) + _kernel_mean(gen, gen, rbf) - 2 * _kernel_mean(ref, gen, rbf)
    return scale * value
