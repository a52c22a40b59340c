"""The built-in image metrics, registered by name: fid, fid_inf, kid, is, precision, recall, density,
coverage and cmmd (the math is in ``frechet``, ``kernel`` and ``manifold``; the shared contract in
``base``).

Intervals are the metrics' own (``custom_intervals``), never a bootstrap of the images, and each
records what it is (``kind``): KID's is ``subset-std`` (mean ± the std of MMD² over ``n_subsets``
random subsets of ``subset_size``), FID's is ``draws-range`` ([min, max] of FID over ``n_draws``
disjoint draws of ``draw_size`` generated images). When they cannot mean anything (every KID
subset is the whole set, draws too small for a full-rank covariance) there is no interval and
``ci_unavailable`` says why. ``pooled`` re-evaluates a metric on index sets of a pooled feature
matrix for compare's permutation test, with the work that does not depend on the draw done once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from aigc_eval.metrics.base import Score
from aigc_eval.metrics.image.base import ImageMetric, warn_rank
from aigc_eval.metrics.image.frechet import (
    FeatureSet,
    FrechetToReference,
    _sqrt_factor_of_samples,
    fid_inf_sizes,
    fid_infinity,
    frechet_distance_of_sets,
)
from aigc_eval.metrics.image.kernel import cmmd, kernel_inception_distance, squared_distances
from aigc_eval.metrics.image.manifold import density_coverage, inception_score, knn_radii, precision_recall
from aigc_eval.metrics.registry import metrics

FID_DRAWS = 5  # disjoint draws of the generated set for FID's interval
KID_SUBSETS = 100  # subsets of KID's estimate and interval
KID_SUBSET_SIZE = 1000  # kernel_inception_distance's default subset size
IS_SPLITS = 10


@metrics.register("fid")
class FID(ImageMetric):
    name = "fid"
    description = (
        "Fréchet distance between Gaussians fitted to the generated and reference features (float64, "
        "trace term by symmetric eigensolvers, or as a sum of squares where it would cancel); FID only "
        "on the TF Inception, FD_<backbone> on others. The range is [min, max] over 5 disjoint draws of "
        "the generated images, not a confidence interval; it is left out when a draw is not full-rank."
    )
    higher_is_better = False
    features_needed = frozenset()

    def signature_extra(self, n_gen: int | None) -> str:
        return "|trace:eigh|dtype:float64"

    def score_set(self, gen: FeatureSet) -> dict[str, Score]:
        ref = self._reference()
        warn_rank(self.label, gen, ref)
        return {self.label: self.scored(gen, frechet_distance_of_sets(gen, ref))}

    def with_intervals(self, scores: dict[str, Score], gen: FeatureSet) -> dict[str, Score]:
        """FID's spread over disjoint draws of the generated set, when each draw is still full-rank.

        Splitting the generated images into ``FID_DRAWS`` disjoint draws (seeded) and scoring each
        against the reference shows how much the value moves with the images drawn. The draws are
        smaller than the set, so their FIDs are biased upward: the interval is [min, max] at N/draws.
        """
        score, seed = scores[self.label], self.options.seed
        size = (gen.n or 0) // FID_DRAWS
        if gen.features is None or size <= gen.dim:
            reason = f"needs {FID_DRAWS} disjoint draws of more than {gen.dim} generated images each"
            return {self.label: replace(score, details={**score.details, "ci_unavailable": reason})}
        order = np.random.default_rng(seed).permutation(gen.n)
        ref = self._reference()
        values = np.array(
            [
                frechet_distance_of_sets(
                    FeatureSet.from_features(gen.features[order[i * size : (i + 1) * size]]), ref
                )
                for i in range(FID_DRAWS)
            ]
        )
        low, high = float(values.min()), float(values.max())
        interval = {
            "kind": "draws-range",
            "low": low,
            "high": high,
            "mean": float(values.mean()),
            "half_width": (high - low) / 2,
            "n_draws": FID_DRAWS,
            "draw_size": size,
            "seed": seed,
        }
        signature = f"{score.signature}|draws:{FID_DRAWS}x{size}|seed:{seed}"
        return {self.label: replace(score, interval=interval, signature=signature)}

    def _pooled(self, pool: np.ndarray) -> Callable[[np.ndarray], float]:
        return FrechetToReference(pool, self._reference())


@metrics.register("fid_inf")
class FIDInfinity(ImageMetric):
    name = "fid_inf"
    description = (
        "FID∞ (Chong & Forsyth 2020): FID of random generated subsets at 15 sizes from N/10 to N, fitted "
        "linearly in 1/N and read at 1/N = 0, which removes FID's sample-size bias."
    )
    higher_is_better = False
    features_needed = frozenset({"generated"})
    resamplable = False

    def signature_extra(self, n_gen: int | None) -> str:
        sizes = fid_inf_sizes(n_gen or 0)
        return f"|points:{len(sizes)}|sizes:{sizes[0]}-{sizes[-1]}|fit:linear-1/N|seed:{self.options.seed}"

    def score_set(self, gen: FeatureSet) -> dict[str, Score]:
        ref = self._reference()
        assert gen.features is not None
        small = ref.features is not None and ref.n is not None and ref.n <= ref.dim
        factor = _sqrt_factor_of_samples(ref.features) if small else None
        value, _sizes, fids = fid_infinity(
            gen.features, ref.mu, ref.sigma, seed=self.options.seed, ref_factor=factor
        )
        return {self.label: self.scored(gen, value, {"fid_at_n": float(fids[-1])})}

    def size_problem(self, gen: FeatureSet) -> str | None:
        if gen.n is not None and gen.n < 30:
            return "fid_inf fits FID at 15 subset sizes and needs at least 30 images"
        return None


@metrics.register("kid")
class KID(ImageMetric):
    name = "kid"
    description = (
        "Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial "
        "kernel, averaged over 100 random subsets of min(1000, N) images; ± is the std over those "
        "subsets, not a confidence interval, and is left out when every subset is the whole set."
    )
    higher_is_better = False

    def _subset_size(self, n_gen: int | None) -> int:
        ref = self._reference()
        return min(KID_SUBSET_SIZE, n_gen or 0, ref.n or 0)

    def signature_extra(self, n_gen: int | None) -> str:
        size = self._subset_size(n_gen)
        seed = self.options.seed
        return f"|kernel:poly3-gamma1/d-c1|subsets:{KID_SUBSETS}|subset_size:{size}|seed:{seed}"

    def score_set(self, gen: FeatureSet) -> dict[str, Score]:
        ref = self._reference()
        assert gen.features is not None and ref.features is not None
        mean, std, m = kernel_inception_distance(
            gen.features, ref.features, n_subsets=KID_SUBSETS, seed=self.options.seed
        )
        return {self.label: self.scored(gen, mean, {"std": std, "subset_size": float(m)})}

    def with_intervals(self, scores: dict[str, Score], gen: FeatureSet) -> dict[str, Score]:
        """KID ± the std of MMD² over its subsets, or no interval when every subset is both whole sets
        (each subset then gives the same MMD², and the "std" is rounding noise, not a spread)."""
        kid, ref = scores[self.label], self._reference()
        size = int(kid.details["subset_size"])  # type: ignore[arg-type]
        if size == gen.n and size == ref.n:
            relation = "=" if size >= KID_SUBSET_SIZE else "<"
            fact = f"every subset is the whole set (n={size} {relation} subset size {KID_SUBSET_SIZE})"
            return {
                self.label: replace(kid, details={**kid.details, "degenerate": fact, "ci_unavailable": fact})
            }
        std = float(kid.details["std"])  # type: ignore[arg-type]
        interval = {
            "kind": "subset-std",
            "low": kid.score - std,
            "high": kid.score + std,
            "mean": kid.score,
            "half_width": std,
            "n_subsets": KID_SUBSETS,
            "subset_size": size,
            "seed": self.options.seed,
        }
        return {self.label: replace(kid, interval=interval)}

    def _pooled(self, pool: np.ndarray) -> Callable[[np.ndarray], float]:
        """The unbiased MMD² of the whole drawn set (what KID's subset mean estimates; equal to it when
        the subsets are the whole sets), from kernel matrices computed once."""
        self.pairwise_fits(len(pool))
        ref = self._reference().features
        assert ref is not None
        gamma = 1.0 / pool.shape[1]
        k_pp = (pool @ pool.T * gamma + 1.0) ** 3
        k_cross = ((ref @ pool.T * gamma + 1.0) ** 3).sum(axis=0)
        k_rr = (ref @ ref.T * gamma + 1.0) ** 3
        m = len(ref)
        within_ref = (k_rr.sum() - np.trace(k_rr)) / (m * (m - 1))

        def kid(idx: np.ndarray) -> float:
            n = len(idx)
            block = k_pp[np.ix_(idx, idx)]
            within = (block.sum() - np.trace(block)) / (n * (n - 1))
            return float(within + within_ref - 2 * k_cross[idx].sum() / (n * m))

        return kid


@metrics.register("is")
class InceptionScore(ImageMetric):
    name = "is"
    description = (
        "Inception Score (Salimans et al. 2016): exp(E KL(p(y|x) ‖ p(y))) over the class logits, in 10 "
        "consecutive splits (mean; std in the details); IS_<backbone> on a backbone other than Inception."
    )
    higher_is_better = True
    rows_from = "logits"
    needs_reference = False
    features_needed = frozenset()

    def signature_extra(self, n_gen: int | None) -> str:
        return f"|splits:{IS_SPLITS}"

    def set_of(self, rows: np.ndarray) -> FeatureSet:
        logits = np.asarray(rows, dtype=np.float64)
        return FeatureSet(np.zeros(0), np.zeros((0, 0)), len(logits), None, logits)

    def score_set(self, gen: FeatureSet) -> dict[str, Score]:
        assert gen.logits is not None
        mean, std = inception_score(gen.logits, IS_SPLITS)
        return {self.label: self.scored(gen, mean, {"std": std})}

    def size_problem(self, gen: FeatureSet) -> str | None:
        if gen.n is not None and gen.n < IS_SPLITS:
            return f"'is' uses {IS_SPLITS} splits and needs at least {IS_SPLITS} images, got {gen.n}"
        return None

    def _pooled(self, pool: np.ndarray) -> Callable[[np.ndarray], float]:
        return lambda idx: inception_score(pool[idx], IS_SPLITS)[0]


# One result per manifold function, so precision and recall (density and coverage) of one scoring
# share their k-NN work; keyed by the identity of the arrays, which it keeps alive until replaced.
_SHARED: dict[Callable[..., tuple[float, float]], tuple[np.ndarray, np.ndarray, tuple[float, float]]] = {}


def _shared(function: Callable[..., tuple[float, float]], gen: np.ndarray, ref: np.ndarray, k: int) -> Any:
    kept = _SHARED.get(function)
    if kept is not None and kept[0] is gen and kept[1] is ref:
        return kept[2]
    values = function(gen, ref, k=k)
    _SHARED[function] = (gen, ref, values)
    return values


class _Manifold(ImageMetric):
    """k-NN ball metrics: which of the pair function's two values this one is."""

    higher_is_better = True
    k: ClassVar[int]
    pair: ClassVar[Callable[..., tuple[float, float]]]
    position: ClassVar[int]

    def signature_extra(self, n_gen: int | None) -> str:
        return f"|k:{self.k}|distance:euclidean"

    def score_set(self, gen: FeatureSet) -> dict[str, Score]:
        ref = self._reference()
        assert gen.features is not None and ref.features is not None
        values = _shared(type(self).pair, gen.features, ref.features, self.k)
        return {self.label: self.scored(gen, values[self.position])}

    def _distances(self, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances pool × reference and the reference's squared k-NN radii."""
        self.pairwise_fits(len(pool))
        ref = self._reference().features
        assert ref is not None
        return squared_distances(pool, ref), knn_radii(ref, self.k) ** 2


@metrics.register("precision")
class Precision(_Manifold):
    name = "precision"
    description = (
        "Improved precision (Kynkäänniemi et al. 2019): share of generated images inside at least one "
        "reference k-NN ball (k = 3, boundary included)."
    )
    k, pair, position = 3, staticmethod(precision_recall), 0
    knn: ClassVar[dict[str, int]] = {"generated": 3, "reference": 3}

    def _pooled(self, pool: np.ndarray) -> Callable[[np.ndarray], float]:
        d_pr, radii = self._distances(pool)
        per_image = (d_pr <= radii[None, :]).any(axis=1).astype(np.float64)
        return lambda idx: float(per_image[idx].mean())


@metrics.register("recall")
class Recall(_Manifold):
    name = "recall"
    description = (
        "Improved recall (Kynkäänniemi et al. 2019): share of reference images inside at least one "
        "generated k-NN ball (k = 3, boundary included)."
    )
    k, pair, position = 3, staticmethod(precision_recall), 1
    knn: ClassVar[dict[str, int]] = {"generated": 3, "reference": 3}
    bootstrappable = False

    def _pooled(self, pool: np.ndarray) -> Callable[[np.ndarray], float]:
        d_pr, _ = self._distances(pool)
        d_pp = squared_distances(pool, pool)
        np.fill_diagonal(d_pp, 0.0)
        k = self.k

        def recall(idx: np.ndarray) -> float:
            block = d_pp[np.ix_(idx, idx)]
            radii = np.sqrt(np.partition(block, k, axis=1)[:, k]) ** 2
            return float((d_pr[idx] <= radii[:, None]).any(axis=0).mean())

        return recall


@metrics.register("density")
class Density(_Manifold):
    name = "density"
    description = (
        "Density (Naeem et al. 2020): mean number of reference k-NN balls (k = 5) holding a generated "
        "image, divided by k; above 1 where generated images crowd dense reference regions."
    )
    k, pair, position = 5, staticmethod(density_coverage), 0
    knn: ClassVar[dict[str, int]] = {"reference": 5}

    def _pooled(self, pool: np.ndarray) -> Callable[[np.ndarray], float]:
        d_pr, radii = self._distances(pool)
        per_image = (d_pr < radii[None, :]).sum(axis=1) / self.k
        return lambda idx: float(per_image[idx].mean())


@metrics.register("coverage")
class Coverage(_Manifold):
    name = "coverage"
    description = (
        "Coverage (Naeem et al. 2020): share of reference images whose k-NN ball (k = 5) holds at least "
        "one generated image."
    )
    k, pair, position = 5, staticmethod(density_coverage), 1
    knn: ClassVar[dict[str, int]] = {"reference": 5}
    bootstrappable = False

    def _pooled(self, pool: np.ndarray) -> Callable[[np.ndarray], float]:
        d_pr, radii = self._distances(pool)
        return lambda idx: float((d_pr[idx].min(axis=0) < radii).mean())


@metrics.register("cmmd")
class CMMD(ImageMetric):
    name = "cmmd"
    description = (
        "CMMD (Jayasumana et al. 2024): biased MMD² between CLIP image embeddings with a Gaussian RBF "
        "kernel (σ = 10), × 1000."
    )
    higher_is_better = False
    resamplable = False
    backbones = ("clip",)
    backbone_rule = "is defined on CLIP embeddings; use --backbone clip --backbone-path DIR"

    def signature_extra(self, n_gen: int | None) -> str:
        return "|kernel:rbf-sigma10|scale:1000|estimator:biased"

    def score_set(self, gen: FeatureSet) -> dict[str, Score]:
        ref = self._reference()
        assert gen.features is not None and ref.features is not None
        return {self.label: self.scored(gen, cmmd(gen.features, ref.features))}
