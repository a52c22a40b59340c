"""Fréchet distance of two Gaussians (FID, FD on any backbone) and FID∞, float64, never negative.

FID: Heusel et al. 2017; the trace term via symmetric eigendecompositions instead of
``scipy.linalg.sqrtm``, and as a sum of squares (orthogonal Procrustes) where the traces would
cancel. FID∞: Chong & Forsyth 2020 (FID at 15 sample sizes, linear fit in 1/N, value at 1/N=0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from aigc_eval.metrics.image.exact import accurate_product

_EPS = float(np.finfo(np.float64).eps)


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


# Σ-only factors are refined when the correlation spectrum spans more than this (ε·spread ≥ 1e-12).
_REFINE_SPREAD = 1e4


def _refined_sqrt_factor(sigma: np.ndarray) -> np.ndarray:
    """``_sqrt_factor`` after rotating Σ into its float64 eigenbasis V with an accurate Vᵀ Σ V.

    A float64 eigensolver leaves the small eigenvalues of Σ uncertain by ε·λmax when
    the large directions are not along the features; Vᵀ Σ V, formed without rounding
    errors, is nearly diagonal, and its scaled eigendecomposition is accurate for each
    eigenvalue relative to its own size.
    """
    sigma = (sigma + sigma.T) / 2
    _, vectors = linalg.eigh(sigma, driver="evd")
    product = accurate_product(sigma, [vectors])
    high, low = accurate_product(vectors.T, list(product))
    rotated = high + low
    return vectors @ _sqrt_factor((rotated + rotated.T) / 2)


def _sqrt_factor_of_samples(features: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """C with C·Cᵀ = the sample covariance, straight from the centred samples (no Σ, no eigensolver).

    For N <= d it is the centred samples themselves (d×N); above that the R of
    their QR decomposition (d×d). Either is as accurate as the features allow,
    also where Σ is rank-deficient or ill-conditioned. ``counts``: how many times each row is in
    the set (its rows enter once, scaled by √count: the same covariance).
    """
    if counts is None:
        centred = (features - features.mean(axis=0)) / math.sqrt(len(features) - 1)
    else:
        weights = np.asarray(counts, dtype=np.float64)
        n = weights.sum()
        centred = np.sqrt(weights)[:, None] * (features - weights @ features / n) / math.sqrt(n - 1)
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
    traces = float(np.einsum("ij,ij->", factor1, factor1)) + float(np.trace(sigma2))
    return _trace_value(gram, traces, rest)


def _trace_value(gram: np.ndarray, traces: float, rest: float) -> tuple[float, float]:
    """``rest + traces − 2 Σ√ν`` over the eigenvalues ν of ``gram``, and the bound of ``_trace_route``."""
    nu = linalg.eigvalsh((gram + gram.T) / 2, driver="evd") if gram.size else np.zeros(0)
    delta = len(nu) * _EPS * max(float(nu.max(initial=0.0)), 0.0)
    nu = np.clip(nu, 0.0, None)
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


def fid_inf_sizes(n: int, n_points: int = 15) -> np.ndarray:
    """FID∞'s subset sizes for ``n`` generated images: N/10 to N in ``n_points`` steps, distinct."""
    return np.unique(np.linspace(max(n // 10, 2), n, n_points).astype(int))


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
    sizes = fid_inf_sizes(n, n_points)
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


def _off_direction(rows: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``rows`` (u×r) in an orthonormal basis of the space orthogonal to the unit vector
    ``direction`` (u): (u−1)×r, through the Householder reflection that maps ``direction`` to ±e₁.

    Weighted centred samples have no component along √weights (all ones without repeats);
    dropping it removes an eigenvalue that is exactly 0 and would otherwise add its rounding (√δ)
    to the trace route's bound.
    """
    v = direction.astype(np.float64, copy=True)
    v[0] += math.copysign(1.0, v[0])
    reflected = rows - np.outer(v, (2 / float(v @ v)) * (v @ rows))
    return reflected[1:]


class FrechetToReference:
    """FID against one fixed reference of many drawn subsets of one pooled feature matrix.

    What ``compare``'s permutation test and bootstrap evaluate thousands of times. The reference
    factor F (F·Fᵀ = Σ_ref, from the samples as in ``frechet_distance_of_sets``) and the pool
    projected on it are computed once; a draw's trace route then needs only the small Gram matrix
    of its centred projection (C_gᵀ F: n×r, the same ν as ``_trace_route``, less the exactly-zero
    mean direction of centred samples), and falls back to the Procrustes route under the same
    error bound, so values near 0 carry no cancellation.

    Equal rows (a bootstrap draw's repeats; two runs that scored the same images) enter a draw
    once, weighted by how often they were drawn: the same mean and covariance, and no exactly-zero
    eigenvalues, whose rounding would otherwise fail the bound and send nearly every draw down
    the slow route.
    """

    def __init__(self, pool: np.ndarray, reference: FeatureSet) -> None:
        self._pool = np.asarray(pool, dtype=np.float64)
        self._rows, self._row_of = np.unique(self._pool, axis=0, return_inverse=True)
        self._row_of = self._row_of.reshape(-1)
        self._reference = reference
        self._factor = _factor_of(reference)
        factor = self._factor
        if reference.features is not None and factor.shape[1] == reference.n:  # centred samples
            ones = np.full(factor.shape[1], 1 / math.sqrt(factor.shape[1]))
            factor = _off_direction(factor.T, ones).T
        self._projected = self._rows @ factor
        self._reference_trace = float(np.einsum("ij,ij->", factor, factor))
        self._accurate: np.ndarray | None = None

    def __call__(self, idx: np.ndarray) -> float:
        """FID of the set made of pooled rows ``idx`` (repeats allowed), never negative."""
        counts = np.bincount(self._row_of[idx], minlength=len(self._rows))
        present = np.flatnonzero(counts)
        weights = counts[present].astype(np.float64)
        rows, n = self._rows[present], float(len(idx))
        mu = weights @ rows / n
        diff = mu - self._reference.mu
        squared_mean = float(diff @ diff)
        centred = rows - mu
        traces = self._reference_trace + float(weights @ np.einsum("ij,ij->i", centred, centred)) / (n - 1)
        root = np.sqrt(weights)
        projected = self._projected[present]
        projected = root[:, None] * (projected - weights @ projected / n) / math.sqrt(n - 1)
        if projected.shape[1] < len(present):
            gram = projected.T @ projected
        else:
            reduced = _off_direction(projected, root / math.sqrt(n))
            gram = reduced @ reduced.T
        value, bound = _trace_value(gram, traces, squared_mean)
        if value > 0 and bound <= _FAST_ROUTE_BOUND * value:
            return value
        if self._accurate is None:
            self._accurate = _accurate_factor_of(self._reference, self._factor)
        return squared_mean + _procrustes_route(self._accurate, _sqrt_factor_of_samples(rows, weights))
