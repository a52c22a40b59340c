"""Image-set metrics as pure functions of feature arrays (float64), plus ``Score`` wrappers.

The per-sample statistics of an image metric are the per-image feature vectors;
every function here is a pure function of (generated features, reference
features) — or of their mean/covariance for FID — so each is testable on random
arrays without a network. References for the definitions:

* FID: Heusel et al. 2017; the trace term is computed as in pytorch-fid, but via
  a symmetric eigendecomposition instead of ``scipy.linalg.sqrtm``.
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
    """float64 mean and unbiased covariance (ddof=1, as pytorch-fid and torchmetrics)."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


# ---------------------------------------------------------------- Fréchet distance


def _sqrt_factor(sigma: np.ndarray) -> np.ndarray:
    """C = V·√W over the numerically non-zero eigenpairs of a symmetric PSD matrix, so C·Cᵀ = Σ.

    Eigenvalues below the usual numerical-rank tolerance (d·ε·λ_max) are zero up to
    rounding; they are dropped rather than square-rooted, because √(1e-14 noise)
    summed over hundreds of null directions would bias the trace term.
    """
    sigma = (sigma + sigma.T) / 2
    eigenvalues, vectors = linalg.eigh(sigma, driver="evd")
    tolerance = max(eigenvalues.max(initial=0.0), 0.0) * len(sigma) * np.finfo(np.float64).eps
    keep = eigenvalues > tolerance
    return vectors[:, keep] * np.sqrt(eigenvalues[keep])


def _sqrt_factor_of_samples(features: np.ndarray) -> np.ndarray:
    """The same factor (C·Cᵀ = covariance) from a thin SVD of the centred samples: O(N²d) instead of O(d³).

    For N < d this replaces the d×d eigendecomposition; singular values below the
    same numerical-rank tolerance are dropped.
    """
    centred = (features - features.mean(axis=0)) / math.sqrt(len(features) - 1)
    _, singular, vt = linalg.svd(centred, full_matrices=False, lapack_driver="gesdd")
    tolerance = singular.max(initial=0.0) ** 2 * features.shape[1] * np.finfo(np.float64).eps
    keep = singular**2 > tolerance
    return vt[keep].T * singular[keep]


def _trace_sqrt(gram: np.ndarray) -> float:
    """Σ √λ over the eigenvalues of a symmetric PSD matrix, tiny negative rounding clamped to 0."""
    if gram.size == 0:
        return 0.0
    eigenvalues = linalg.eigvalsh((gram + gram.T) / 2, driver="evd")
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(A Σ2 A) with A = Σ1^½, in float64; never negative.

    With C = V√W from Σ1 = V W Vᵀ, A Σ2 A = V (Cᵀ Σ2 C) Vᵀ, so its eigenvalues are
    those of the (rank × rank) symmetric matrix Cᵀ Σ2 C: one symmetric eigensolver
    with vectors and one without, no complex Schur form (what sqrtm does).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(
            f"shapes do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    if np.array_equal(mu1, mu2) and np.array_equal(sigma1, sigma2):
        return 0.0  # exactly; rounding in the eigensolvers would otherwise leave ±1e-12
    return _frechet_with_factor(mu1, sigma1, _sqrt_factor(sigma1), mu2, sigma2)


def _frechet_with_factor(
    mu1: np.ndarray, sigma1: np.ndarray, factor1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    trace_sqrt = _trace_sqrt(factor1.T @ sigma2 @ factor1)
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    return max(value, 0.0)


def frechet_distance_of_sets(a: FeatureSet, b: FeatureSet) -> float:
    """``frechet_distance`` of two sets, cheaper when one has no more samples than dimensions.

    That set's factor then comes from an SVD of its samples instead of its d×d
    covariance: the same value to ~1e-8 relative, the precision any route has at N < d.
    """
    if np.array_equal(a.mu, b.mu) and np.array_equal(a.sigma, b.sigma):
        return 0.0
    for first, second in ((a, b), (b, a)):
        if first.features is not None and first.n is not None and first.n <= first.dim:
            factor = _sqrt_factor_of_samples(first.features)
            return _frechet_with_factor(first.mu, first.sigma, factor, second.mu, second.sigma)
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


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
    factor is computed once; each subset's trace term uses the (size × size) Gram
    matrix of its centred features, which has the same non-zero eigenvalues as
    Cᵀ Σ_gen C when the subset is smaller than the feature dimension (``ref_factor``,
    if given, is that C: any matrix with C·Cᵀ = Σ_ref). Being an
    extrapolation, the value can fall slightly below 0 for matching distributions.
    """
    gen_features = np.asarray(gen_features, dtype=np.float64)
    n = len(gen_features)
    sizes = np.unique(np.linspace(max(n // 10, 2), n, n_points).astype(int))
    if len(sizes) < 3:
        raise ValueError(
            f"FID∞ needs at least 3 distinct subset sizes; {n} generated images give {len(sizes)}"
        )
    factor = _sqrt_factor(np.asarray(ref_sigma, dtype=np.float64)) if ref_factor is None else ref_factor
    ref_mu = np.asarray(ref_mu, dtype=np.float64)
    ref_trace = float(np.trace(ref_sigma))
    rng = np.random.default_rng(seed)
    fids = np.empty(len(sizes))
    for i, size in enumerate(sizes):
        subset = gen_features[rng.permutation(n)[:size]]
        mu = subset.mean(axis=0)
        centred = (subset - mu) / math.sqrt(size - 1)  # centredᵀ·centred is the subset's covariance
        projected = centred @ factor
        small = projected @ projected.T if size < factor.shape[1] else projected.T @ projected
        diff = mu - ref_mu
        value = diff @ diff + ref_trace + float((centred * centred).sum()) - 2 * _trace_sqrt(small)
        fids[i] = max(value, 0.0)
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


def _counts(gen: FeatureSet, ref: FeatureSet | None) -> dict[str, float]:
    counts = {"n_generated": float(gen.n) if gen.n is not None else math.nan}
    if ref is not None:
        counts["n_reference"] = float(ref.n) if ref.n is not None else math.nan
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
