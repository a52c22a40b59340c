"""Image-set metrics as pure functions of feature arrays (float64), plus ``Score`` wrappers.

The per-sample statistics of an image metric are the per-image feature vectors;
every function here is a pure function of (generated features, reference
features) — or of their mean/covariance for FID — so each is testable on random
arrays without a network. References for the definitions:

* FID: Heusel et al. 2017; the trace term via symmetric eigendecompositions instead
  of ``scipy.linalg.sqrtm``, and as a sum of squares (orthogonal Procrustes) where the
  traces would cancel.
* KID: Bińkowski et al. 2018 (unbiased MMD², cubic polynomial kernel), subsets as
  in torchmetrics/clean-fid.
* IS: Salimans et al. 2016 (10 splits, no shuffling, population std).
* Precision/recall: Kynkäänniemi et al. 2019 (k-NN balls, ``<=``).
* Density/coverage: Naeem et al. 2020 (k-NN balls, strict ``<`` as in their code).
* CMMD: Jayasumana et al. 2024 (biased MMD², Gaussian RBF σ=10, ×1000).
* FID∞: Chong & Forsyth 2020 (FID at 15 sample sizes, linear fit in 1/N, value at 1/N=0).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from aigc_eval.metrics.base import Score

# Rows of a pairwise block are sized so that one block holds at most this many distances (128 MB).
_BLOCK_ENTRIES = 1 << 24
# Joint kernel matrices for KID are precomputed when the two sets together are at most this large.
_KID_PRECOMPUTE_MAX = 4096
_EPS = float(np.finfo(np.float64).eps)


class SampleSizeWarning(UserWarning):
    """Fewer images than feature dimensions: the covariance is rank-deficient and FID biased upward."""


@dataclass(frozen=True)
class FeatureSet:
    """One image set seen through a backbone: per-image features (and logits), or only mean/covariance.

    ``n`` is None only for statistics that do not record their sample count
    (pytorch-fid's ``.npz``).
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None
    features: np.ndarray | None = None
    logits: np.ndarray | None = None

    @classmethod
    def from_features(cls, features: np.ndarray, logits: np.ndarray | None = None) -> FeatureSet:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"need an N×d feature matrix with N >= 2, got shape {features.shape}")
        mu, sigma = mean_and_covariance(features)
        return cls(mu, sigma, len(features), features, logits)

    @property
    def dim(self) -> int:
        return len(self.mu)


def mean_and_covariance(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 mean and unbiased covariance (ddof=1, as pytorch-fid and torchmetrics), d×d even for d = 1."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def as_gaussian(mu: object, sigma: object) -> tuple[np.ndarray, np.ndarray]:
    """(d,) mean and (d, d) covariance in float64; scalars and 1-element arrays are the 1-d case."""
    mu_array = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma_array = np.asarray(sigma, dtype=np.float64)
    if mu_array.shape == (1,) and sigma_array.size == 1:
        sigma_array = sigma_array.reshape(1, 1)
    return mu_array, sigma_array


# ---------------------------------------------------------------- Fréchet distance

# Asymmetry and negative eigenvalues up to these multiples of rounding (ε·max|Σ|, d·ε·tr Σ) are accepted.
_SYMMETRY_ROUNDING = 1e3
_NEGATIVE_ROUNDING = 1e2


def covariance_problem(sigma: np.ndarray) -> str | None:
    """Why ``sigma`` is not a covariance matrix (symmetric PSD up to rounding), or None when it is."""
    scale = float(np.abs(sigma).max(initial=0.0))
    asymmetry = float(np.abs(sigma - sigma.T).max(initial=0.0))
    if asymmetry > _SYMMETRY_ROUNDING * _EPS * scale:
        return f"is not symmetric (max |Σ - Σᵀ| = {asymmetry:.3g}, max |Σ| = {scale:.3g})"
    symmetric = (sigma + sigma.T) / 2
    # λmin >= -shift exactly when Σ + shift·I is positive definite: a Cholesky, far cheaper than eigenvalues.
    shift = _NEGATIVE_ROUNDING * len(sigma) * _EPS * max(float(np.trace(symmetric)), 0.0) + 1e-300
    try:
        linalg.cholesky(symmetric + shift * np.eye(len(sigma)), lower=True, check_finite=False)
    except linalg.LinAlgError:
        eigenvalues = linalg.eigvalsh(symmetric)
        return (
            f"is not positive semi-definite (smallest eigenvalue {eigenvalues[0]:.3g}, "
            f"largest {eigenvalues[-1]:.3g})"
        )
    return None


def _correlation(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standard deviations (1 where a variance is 0) and the correlation matrix of a symmetric Σ."""
    variances = np.diag(sigma)
    scale = np.sqrt(np.where(variances > 0, variances, 1.0))
    return scale, sigma / scale[:, None] / scale[None, :]


def _kept(eigenvalues: np.ndarray, dim: int) -> np.ndarray:
    """Eigenvalues above the numerical-rank tolerance d·ε·λmax (below it: rounding noise, or negative)."""
    return eigenvalues > max(eigenvalues.max(initial=0.0), 0.0) * dim * _EPS


def _sqrt_factor(sigma: np.ndarray) -> np.ndarray:
    """C (d×r) with C·Cᵀ = Σ, from a symmetric eigendecomposition of the correlation matrix.

    Scaling by the standard deviations first makes the factor accurate relative to
    each feature's own scale, so a feature with 1e12 times the variance of the
    others does not swamp them. Eigenvalues below the numerical-rank tolerance are dropped.
    """
    scale, correlation = _correlation((sigma + sigma.T) / 2)
    eigenvalues, vectors = linalg.eigh(correlation, driver="evd")
    keep = _kept(eigenvalues, len(sigma))
    return scale[:, None] * (vectors[:, keep] * np.sqrt(eigenvalues[keep]))


def _accurate_sqrt_factor(sigma: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """``factor`` (from ``_sqrt_factor``), or a refined one where its spectrum is too wide for float64."""
    eigenvalues = linalg.eigvalsh(_correlation((sigma + sigma.T) / 2)[1])
    kept = eigenvalues[_kept(eigenvalues, len(sigma))]
    if len(kept) and kept[-1] > _REFINE_SPREAD * kept[0]:
        return _refined_sqrt_factor(sigma)
    return factor


# Splitting the operands of a product into slices whose pairwise BLAS products are exact (Ozaki et al.).
_MAX_SLICES = 8
# Σ-only factors are refined when the correlation spectrum spans more than this (ε·spread ≥ 1e-12).
_REFINE_SPREAD = 1e4


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


def _accurate_product(a: np.ndarray, b_parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """a @ (Σ b_parts) as an unevaluated float64 pair (high, low), accurate far below ε·|a|·|b|."""
    a_slices = _slices(a, a.shape[1])
    high = np.zeros((a.shape[0], b_parts[0].shape[1]))
    low = np.zeros_like(high)
    for b in b_parts:
        for b_slice in _slices(b.T, b.shape[0]):
            for a_slice in a_slices:
                high, low = _two_sum(high, low, a_slice @ b_slice.T)  # each product is exact
    return high, low


def _refined_sqrt_factor(sigma: np.ndarray) -> np.ndarray:
    """``_sqrt_factor`` after rotating Σ into its float64 eigenbasis V with an accurate Vᵀ Σ V.

    A float64 eigensolver leaves the small eigenvalues of Σ uncertain by ε·λmax when
    the large directions are not along the features; Vᵀ Σ V, formed without rounding
    errors, is nearly diagonal, and its scaled eigendecomposition is accurate for each
    eigenvalue relative to its own size.
    """
    sigma = (sigma + sigma.T) / 2
    _, vectors = linalg.eigh(sigma, driver="evd")
    product = _accurate_product(sigma, [vectors])
    high, low = _accurate_product(vectors.T, list(product))
    rotated = high + low
    return vectors @ _sqrt_factor((rotated + rotated.T) / 2)


def _sqrt_factor_of_samples(features: np.ndarray) -> np.ndarray:
    """C with C·Cᵀ = the sample covariance, straight from the centred samples (no Σ, no eigensolver).

    For N <= d it is the centred samples themselves (d×N); above that the R of
    their QR decomposition (d×d). Either is as accurate as the features allow,
    also where Σ is rank-deficient or ill-conditioned.
    """
    centred = (features - features.mean(axis=0)) / math.sqrt(len(features) - 1)
    if len(features) <= features.shape[1]:
        return centred.T
    (r,) = linalg.qr(centred, mode="r")
    return r[: features.shape[1]].T


def _factor_of(feature_set: FeatureSet) -> np.ndarray:
    if feature_set.features is not None:
        return _sqrt_factor_of_samples(feature_set.features)
    return _sqrt_factor(feature_set.sigma)


def _accurate_factor_of(feature_set: FeatureSet, factor: np.ndarray) -> np.ndarray:
    if feature_set.features is not None:
        return factor  # already exact up to the features' rounding
    return _accurate_sqrt_factor(feature_set.sigma, factor)


# The trace route is used when its error bound is below this share of the value (1000x inside 1e-6).
_FAST_ROUTE_BOUND = 1e-9


def _trace_route(factor1: np.ndarray, sigma2: np.ndarray, rest: float) -> tuple[float, float]:
    """tr Σ1 + tr Σ2 − 2 Σ√ν (ν: eigenvalues of C1ᵀ Σ2 C1) + ``rest``, and a bound on its rounding error.

    One symmetric eigensolver without vectors: the fast route. Each ν is off by up
    to δ = r·ε·νmax, so √ν by δ/(√ν + √δ); the sum of traces adds ε per term.
    """
    gram = factor1.T @ sigma2 @ factor1
    nu = linalg.eigvalsh((gram + gram.T) / 2, driver="evd") if gram.size else np.zeros(0)
    delta = len(nu) * _EPS * max(float(nu.max(initial=0.0)), 0.0)
    nu = np.clip(nu, 0.0, None)
    traces = float(np.einsum("ij,ij->", factor1, factor1)) + float(np.trace(sigma2))
    value = rest + traces - 2 * float(np.sqrt(nu).sum())
    bound = 4 * _EPS * (traces + rest) + 2 * float(np.sum(delta / (np.sqrt(nu) + math.sqrt(delta) + 1e-300)))
    return value, bound


def _procrustes_route(factor1: np.ndarray, factor2: np.ndarray) -> float:
    """min over orthogonal U of ‖C1 − C2·U‖²: the Bures term as a sum of squares (no cancellation).

    U comes from the SVD of C1ᵀC2 (P S Qᵀ: tr S is the nuclear norm, i.e.
    tr √(Σ1^½ Σ2 Σ1^½)), then one Newton step for the polar factor in the rotated
    coordinates, solved in closed form and applied as a Cayley rotation: it removes
    the rotation error the SVD makes among small singular values when the others are
    orders of magnitude larger.
    """
    rank = max(factor1.shape[1], factor2.shape[1])
    c1 = np.pad(factor1, ((0, 0), (0, rank - factor1.shape[1])))
    c2 = np.pad(factor2, ((0, 0), (0, rank - factor2.shape[1])))
    p, _, qt = linalg.svd(c1.T @ c2, lapack_driver="gesdd")
    a, b = c1 @ p, c2 @ qt.T
    h = a.T @ b  # symmetric PSD at the optimum
    diagonal = np.diag(h)
    denominator = diagonal[:, None] + diagonal[None, :]
    skew = np.divide(h.T - h, denominator, out=np.zeros_like(h), where=denominator > 0)
    eye = np.eye(rank)
    rotation = linalg.solve(eye - skew / 2, eye + skew / 2)
    residual = a - b @ rotation
    return float(np.einsum("ij,ij->", residual, residual))


def _frechet(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    factor1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    accurate_factors: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> float:
    """The trace route when its error bound allows, else the Procrustes route on accurate factors."""
    diff = mu1 - mu2
    squared_mean = float(diff @ diff)
    if np.array_equal(sigma1, sigma2):
        return squared_mean  # the Bures term of equal covariances is exactly 0
    value, bound = _trace_route(factor1, sigma2, squared_mean)
    if value > 0 and bound <= _FAST_ROUTE_BOUND * value:
        return value
    return squared_mean + _procrustes_route(*accurate_factors())


def _ordered(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    """True when (a, b) is the canonical order: the result is then bitwise the same for fid(b, a)."""
    return (a[1].tobytes(), a[0].tobytes()) <= (b[1].tobytes(), b[0].tobytes())


def frechet_distance(mu1: object, sigma1: object, mu2: object, sigma2: object) -> float:
    """‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1^½ Σ2 Σ1^½), float64, symmetric in its arguments, never negative.

    The cheap trace route (one eigensolver with vectors, one without) is used when its
    rounding-error bound is below 1e-9 of the value; otherwise, for close sets or
    ill-conditioned covariances where the traces cancel, the value is the sum of
    squares ‖μ1−μ2‖² + min_U ‖C1 − C2 U‖² (``_procrustes_route``). Arguments are put
    in a canonical order first, so swapping them gives the identical float.
    """
    m1, s1 = as_gaussian(mu1, sigma1)
    m2, s2 = as_gaussian(mu2, sigma2)
    if m1.ndim != 1 or m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (len(m1), len(m1)):
        raise ValueError(f"shapes do not match: mu {m1.shape} vs {m2.shape}, sigma {s1.shape} vs {s2.shape}")
    for sigma in (s1, s2):
        problem = covariance_problem(sigma)
        if problem is not None:
            raise ValueError(f"sigma {problem}")
    if not _ordered((m1, s1), (m2, s2)):
        m1, s1, m2, s2 = m2, s2, m1, s1
    f1 = _sqrt_factor(s1)
    return _frechet(
        m1,
        s1,
        f1,
        m2,
        s2,
        lambda: (_accurate_sqrt_factor(s1, f1), _accurate_sqrt_factor(s2, _sqrt_factor(s2))),
    )


def frechet_distance_of_sets(a: FeatureSet, b: FeatureSet) -> float:
    """``frechet_distance`` of two sets; a set with per-image features is factored from its samples.

    That factor is exact up to the features' rounding, also for N < d, and cheaper
    than an eigendecomposition of Σ when N <= d. Symmetric like ``frechet_distance``.
    """
    if not _ordered((a.mu, a.sigma), (b.mu, b.sigma)):
        a, b = b, a
    fa = _factor_of(a)
    return _frechet(
        a.mu,
        a.sigma,
        fa,
        b.mu,
        b.sigma,
        lambda: (_accurate_factor_of(a, fa), _accurate_factor_of(b, _factor_of(b))),
    )


def fid_infinity(
    gen_features: np.ndarray,
    ref_mu: np.ndarray,
    ref_sigma: np.ndarray,
    n_points: int = 15,
    seed: int = 0,
    ref_factor: np.ndarray | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Chong & Forsyth's FID∞: FID of random generated subsets, fitted linearly in 1/N and read at 0.

    Subset sizes run from N/10 to N in ``n_points`` steps (the paper's 5,000..50,000
    for N = 50,000). Returns (FID∞, sizes, FIDs at those sizes). The reference
    factor (``ref_factor``, if given: any C with C·Cᵀ = Σ_ref) is computed once;
    each subset is factored from its samples, as in ``frechet_distance_of_sets``.
    Being an extrapolation, the value can fall slightly below 0 for matching distributions.
    """
    gen_features = np.asarray(gen_features, dtype=np.float64)
    n = len(gen_features)
    sizes = np.unique(np.linspace(max(n // 10, 2), n, n_points).astype(int))
    if len(sizes) < 3:
        raise ValueError(
            f"FID∞ needs at least 3 distinct subset sizes; {n} generated images give {len(sizes)}"
        )
    ref_mu, ref_sigma = as_gaussian(ref_mu, ref_sigma)
    factor = _sqrt_factor(ref_sigma) if ref_factor is None else ref_factor
    rng = np.random.default_rng(seed)
    fids = np.empty(len(sizes))
    for i, size in enumerate(sizes):
        subset = gen_features[rng.permutation(n)[:size]]
        mu, sigma = mean_and_covariance(subset)
        fids[i] = _frechet(
            ref_mu,
            ref_sigma,
            factor,
            mu,
            sigma,
            lambda subset=subset: (factor, _sqrt_factor_of_samples(subset)),
        )
    _slope, intercept = np.polyfit(1.0 / sizes, fids, 1)
    return float(intercept), sizes, fids


# ---------------------------------------------------------------- kernels


def _row_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    step = max(1, _BLOCK_ENTRIES // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2 * (a @ b.T)
    return np.maximum(d2, 0.0, out=d2)


def _kernel_mean(
    x: np.ndarray, y: np.ndarray, kernel: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> float:
    total = 0.0
    for rows in _row_blocks(len(x), len(y)):
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
        return np.exp(-gamma * _squared_distances(a, b))

    value = _kernel_mean(ref, ref, rbf) + _kernel_mean(gen, gen, rbf) - 2 * _kernel_mean(ref, gen, rbf)
    return scale * value


# ---------------------------------------------------------------- Inception Score


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) ‖ p(y))) per split of consecutive images; mean and population std over splits.

    Splits are ``[i·N/splits, (i+1)·N/splits)`` in input order, as in the original
    improved-GAN code (torchmetrics shuffles first and reports the sample std).
    """
    logits = np.asarray(logits, dtype=np.float64)
    n = len(logits)
    if n < splits:
        raise ValueError(f"Inception Score with {splits} splits needs at least {splits} images, got {n}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        part = slice(i * n // splits, (i + 1) * n // splits)
        log_marginal = np.log(p[part].mean(axis=0))
        kl = (p[part] * (log_p[part] - log_marginal)).sum(axis=1).mean()
        scores.append(math.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


# ---------------------------------------------------------------- k-NN manifold metrics


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (the row itself excluded)."""
    features = np.asarray(features, dtype=np.float64)
    if len(features) <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} samples, got {len(features)}")
    radii = np.empty(len(features))
    for rows in _row_blocks(len(features), len(features)):
        d2 = _squared_distances(features[rows], features)
        d2[np.arange(rows.stop - rows.start), np.arange(rows.start, rows.stop)] = 0.0  # self, exactly
        radii[rows] = np.sqrt(np.partition(d2, k, axis=1)[:, k])
    return radii


def precision_recall(gen: np.ndarray, ref: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Precision: share of generated samples inside at least one reference k-NN ball;
    recall: share of reference samples inside at least one generated k-NN ball
    (a ball includes its boundary, ``<=``, as in the paper's code).
    """
    gen, ref = np.asarray(gen, np.float64), np.asarray(ref, np.float64)
    ref_radii, gen_radii = knn_radii(ref, k) ** 2, knn_radii(gen, k) ** 2
    in_ref_manifold = np.zeros(len(gen), dtype=bool)
    in_gen_manifold = np.zeros(len(ref), dtype=bool)
    for rows in _row_blocks(len(gen), len(ref)):
        d2 = _squared_distances(gen[rows], ref)
        in_ref_manifold[rows] = (d2 <= ref_radii[None, :]).any(axis=1)
        in_gen_manifold |= (d2 <= gen_radii[rows, None]).any(axis=0)
    return float(in_ref_manifold.mean()), float(in_gen_manifold.mean())


def density_coverage(gen: np.ndarray, ref: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020), both from reference k-NN balls (strict ``<``).

    Density: mean over generated samples of (number of reference balls containing
    it) / k; coverage: share of reference samples whose ball contains at least one
    generated sample.
    """
    gen, ref = np.asarray(gen, np.float64), np.asarray(ref, np.float64)
    ref_radii = knn_radii(ref, k) ** 2
    counts = np.zeros(len(gen))
    nearest_gen = np.full(len(ref), np.inf)
    for rows in _row_blocks(len(gen), len(ref)):
        d2 = _squared_distances(gen[rows], ref)
        counts[rows] = (d2 < ref_radii[None, :]).sum(axis=1)
        nearest_gen = np.minimum(nearest_gen, d2.min(axis=0))
    return float(counts.mean() / k), float((nearest_gen < ref_radii).mean())


# ---------------------------------------------------------------- Score wrappers


def metric_label(metric: str, backbone: str) -> str:
    """Headline name: FID/KID/IS only for the Inception network; other backbones are named in the label."""
    if metric in ("fid", "kid", "is", "fid_inf") and backbone != "inception-v3-tf":
        base = {"fid": "fd", "kid": "kd", "is": "is", "fid_inf": "fd_inf"}[metric]
        return f"{base}_{backbone}"
    return metric


def _n(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def _signature(metric: str, origin: str, gen: FeatureSet, ref: FeatureSet | None, extra: str = "") -> str:
    ref_part = f"|n_ref:{_n(ref.n)}" if ref is not None else ""
    return f"{metric}|{origin}|n_gen:{_n(gen.n)}{ref_part}{extra}"


def _counts(gen: FeatureSet, ref: FeatureSet | None) -> dict[str, float | None]:
    """Image counts for Score details; None (strict JSON) where statistics do not record their count."""
    counts: dict[str, float | None] = {"n_generated": None if gen.n is None else float(gen.n)}
    if ref is not None:
        counts["n_reference"] = None if ref.n is None else float(ref.n)
    return counts


def _warn_rank(metric: str, *sets: FeatureSet) -> None:
    for feature_set in sets:
        if feature_set.n is not None and feature_set.n < feature_set.dim:
            warnings.warn(
                f"{metric}: {feature_set.n} images < {feature_set.dim} feature dimensions; the covariance is "
                f"rank-deficient and the value is dominated by sample size (compare only at equal N, "
                f"or use fid_inf)",
                SampleSizeWarning,
                stacklevel=3,
            )


def fid_score(gen: FeatureSet, ref: FeatureSet, backbone: str, origin: str) -> Score:
    """Fréchet distance between the sets' Gaussians; ``origin`` is the backbone/weights/resize part."""
    label = metric_label("fid", backbone)
    _warn_rank(label, gen, ref)
    value = frechet_distance_of_sets(gen, ref)
    signature = _signature(label, origin, gen, ref, "|trace:eigh|dtype:float64")
    return Score(label, value, signature, False, _counts(gen, ref))


def fid_inf_score(gen: FeatureSet, ref: FeatureSet, backbone: str, origin: str, seed: int = 0) -> Score:
    label = metric_label("fid_inf", backbone)
    assert gen.features is not None
    small = ref.features is not None and ref.n is not None and ref.n <= ref.dim
    factor = _sqrt_factor_of_samples(ref.features) if small else None
    value, sizes, fids = fid_infinity(gen.features, ref.mu, ref.sigma, seed=seed, ref_factor=factor)
    extra = f"|points:{len(sizes)}|sizes:{sizes[0]}-{sizes[-1]}|fit:linear-1/N|seed:{seed}"
    details = {**_counts(gen, ref), "fid_at_n": float(fids[-1])}
    return Score(label, value, _signature(label, origin, gen, ref, extra), False, details)


def kid_score(
    gen: FeatureSet, ref: FeatureSet, backbone: str, origin: str, seed: int = 0, n_subsets: int = 100
) -> Score:
    assert gen.features is not None and ref.features is not None
    label = metric_label("kid", backbone)
    mean, std, m = kernel_inception_distance(gen.features, ref.features, n_subsets=n_subsets, seed=seed)
    extra = f"|kernel:poly3-gamma1/d-c1|subsets:{n_subsets}|subset_size:{m}|seed:{seed}"
    details = {**_counts(gen, ref), "std": std, "subset_size": float(m)}
    return Score(label, mean, _signature(label, origin, gen, ref, extra), False, details)


def is_score(gen: FeatureSet, backbone: str, origin: str, splits: int = 10) -> Score:
    assert gen.logits is not None
    label = metric_label("is", backbone)
    mean, std = inception_score(gen.logits, splits)
    details = {**_counts(gen, None), "std": std}
    return Score(label, mean, _signature(label, origin, gen, None, f"|splits:{splits}"), True, details)


def manifold_scores(
    gen: FeatureSet, ref: FeatureSet, metrics: Sequence[str], origin: str
) -> dict[str, Score]:
    """precision/recall (k=3) and density/coverage (k=5), only those asked for."""
    assert gen.features is not None and ref.features is not None
    values: dict[str, float] = {}
    if {"precision", "recall"} & set(metrics):
        values["precision"], values["recall"] = precision_recall(gen.features, ref.features, k=3)
    if {"density", "coverage"} & set(metrics):
        values["density"], values["coverage"] = density_coverage(gen.features, ref.features, k=5)
    scores = {}
    for name in metrics:
        k = 3 if name in ("precision", "recall") else 5
        signature = _signature(name, origin, gen, ref, f"|k:{k}|distance:euclidean")
        scores[name] = Score(name, values[name], signature, True, _counts(gen, ref))
    return scores


def cmmd_score(gen: FeatureSet, ref: FeatureSet, origin: str) -> Score:
    assert gen.features is not None and ref.features is not None
    value = cmmd(gen.features, ref.features)
    signature = _signature("cmmd", origin, gen, ref, "|kernel:rbf-sigma10|scale:1000|estimator:biased")
    return Score("cmmd", value, signature, False, _counts(gen, ref))
