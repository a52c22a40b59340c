"""Entry points for image metrics: score a generated set against a reference, save reference statistics.

Either side may be an image folder, a list file, or an ``.npz`` (pytorch-fid's
``mu``/``sigma``, or the ``features`` that ``save_stats`` writes). Image sets go
through one backbone, with features cached on disk; everything after that is a
pure function in ``aigc_eval.metrics.image``.

Every interval records what it is (``kind``), because none of them is a bootstrap confidence
interval: KID's is ``subset-std`` (mean ± the std of MMD² over ``n_subsets`` random subsets of
``subset_size``), FID's is ``draws-range`` ([min, max] of FID over ``n_draws`` disjoint draws of
``draw_size`` generated images). When they cannot mean anything (every KID subset is the whole set,
draws too small for a full-rank covariance) there is no interval and ``ci_unavailable`` says why.

``ResampledStatistic`` re-evaluates a metric on index sets of a pooled feature matrix for the
regression gate's permutation test and bootstrap (``aigc_eval.compare``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from aigc_eval import __version__
from aigc_eval.errors import UserError
from aigc_eval.features import BACKBONES, extract_features, get_backbone
from aigc_eval.features.base import Backbone
from aigc_eval.features.cache import FeatureCache, save_npz_atomic
from aigc_eval.images import is_stats_file, load_stats, open_image_set
from aigc_eval.metrics import image as im
from aigc_eval.metrics.base import Score

IMAGE_METRICS = ("fid", "kid", "is", "precision", "recall", "density", "coverage", "cmmd", "fid_inf")
# Metrics that need per-image features on both sides (not just mean/covariance).
_NEED_FEATURES = frozenset({"kid", "precision", "recall", "density", "coverage", "cmmd"})
_MANIFOLD = ("precision", "recall", "density", "coverage")
_WITH_LOGITS = ("efficientnet-lite0",)
_META_KEYS = ("backbone", "weights_sha256", "preprocessing", "resize")

CacheDir = str | Path | Literal[False] | None


@dataclass(frozen=True)
class StatsSummary:
    """What ``save_stats`` wrote."""

    path: Path
    n: int
    dim: int
    backbone: str
    skipped: int


@dataclass(frozen=True)
class ImageScoring:
    """Scores plus what the run folder keeps of the scoring: both feature sets (for the regression
    gate's resampling tests), the files skipped as unreadable, and where the backbone ran."""

    scores: dict[str, Score]
    generated: im.FeatureSet
    reference: im.FeatureSet | None
    skipped: dict[str, list[str]] = field(default_factory=dict)  # role -> unreadable files
    device: str | None = None  # None when no network ran (both sides were .npz statistics)

    def record(self, run_dir: Path, row: str, task: str, references_kept: set[str]) -> dict[str, object]:
        """What results.json says about this row × task beyond its scores; saves the features.

        ``references_kept`` collects the tasks whose reference features are already saved.
        """
        files = save_image_features(run_dir, row, task, self, write_reference=task not in references_kept)
        references_kept.add(task)
        return {
            "n": self.generated.n,
            "features": files,
            "device": self.device,
            "skipped_images": {
                role: {"count": len(names), "files": names} for role, names in self.skipped.items()
            },
        }


def check_request(metrics: Sequence[str], backbone: str) -> list[str]:
    """The metric list, deduplicated in order; a UserError for unknown names or impossible pairs."""
    if not metrics:
        raise UserError(f"no image metric given; choose from {', '.join(IMAGE_METRICS)}")
    unknown = [m for m in metrics if m not in IMAGE_METRICS]
    if unknown:
        raise UserError(f"unknown image metric(s) {', '.join(unknown)}; known: {', '.join(IMAGE_METRICS)}")
    if backbone not in BACKBONES:
        raise UserError(f"unknown backbone {backbone!r}; known backbones: {', '.join(BACKBONES)}")
    if "is" in metrics and backbone not in _WITH_LOGITS:
        raise UserError(
            f"metric 'is' needs class logits, which backbone {backbone} does not give (the offline "
            f"Inception has no logits layer); use --backbone efficientnet-lite0 for an Inception-Score-style "
            f"score (reported as is_efficientnet-lite0)"
        )
    if "cmmd" in metrics and backbone != "clip":
        raise UserError(
            "metric 'cmmd' is defined on CLIP embeddings; use --backbone clip --backbone-path DIR"
        )
    return list(dict.fromkeys(metrics))


class _Sides:
    """Loads both inputs through one lazily built backbone and one cache."""

    def __init__(
        self, backbone: str, backbone_path: str | None, device: str, cache_dir: CacheDir, skip_corrupt: bool
    ) -> None:
        self.backbone_name = backbone
        self.backbone_path = backbone_path
        self.device = device
        self.cache = None if cache_dir is False else FeatureCache(cache_dir)
        self.skip_corrupt = skip_corrupt
        self.backbone: Backbone | None = None
        self.metas: dict[str, dict[str, str]] = {}
        self.skipped: dict[str, list[str]] = {}

    def load(self, path: str | Path, role: str) -> im.FeatureSet:
        if is_stats_file(path):
            feature_set, meta = load_stats(path)
            self._check_meta(Path(path), meta)
            self.metas[role] = meta
            return feature_set
        images = open_image_set(path)
        if self.backbone is None:
            self.backbone = get_backbone(self.backbone_name, self.backbone_path, self.device)
        extracted = extract_features(self.backbone, images, self.cache, self.skip_corrupt)
        self.skipped[role] = [str(f) for f in extracted.skipped]
        if len(extracted.features) < 2:
            raise UserError(
                f"{path}: {len(extracted.features)} readable image(s); image metrics need at least 2"
            )
        return im.FeatureSet.from_features(extracted.features, extracted.logits)

    def _check_meta(self, path: Path, meta: dict[str, str]) -> None:
        if not meta:
            return
        missing = [key for key in _META_KEYS if key not in meta]
        if missing:
            raise UserError(f"{path}: provenance incomplete (no meta_{', meta_'.join(missing)}); rewrite it")
        if meta.get("backbone") != self.backbone_name:
            raise UserError(
                f"{path}: was computed with backbone {meta.get('backbone')}; pass --backbone "
                f"{meta.get('backbone')} or recompute it with aigc-eval stats --backbone {self.backbone_name}"
            )

    def origin(self) -> str:
        """Backbone/weights/resize for signatures; .npz sides must agree with each other and the backbone."""
        known = [self.backbone.identity] if self.backbone is not None else []
        for role, meta in self.metas.items():
            if meta:
                known.append(f"{meta['backbone']}|weights:{meta['weights_sha256']}|{meta['preprocessing']}")
            else:
                warnings.warn(
                    f"{role} statistics carry no provenance (e.g. from pytorch-fid); they compare only "
                    f"if made with the same network and resize as the other side",
                    stacklevel=3,
                )
        if len(set(known)) > 1:
            raise UserError(
                "the two sides were featurised differently (backbone weights or preprocessing differ): "
                + " vs ".join(sorted(set(known)))
                + "; recompute the .npz with aigc-eval stats and the same --backbone/--backbone-path"
            )
        if self.backbone is not None:
            origin = self.backbone.origin
        else:
            meta = next((m for m in self.metas.values() if m), None)
            origin = (
                f"backbone:{meta['backbone']}|weights:{meta['weights_sha256'][:12]}|resize:{meta['resize']}"
                if meta
                else "backbone:unknown|weights:unknown|resize:unknown"
            )
        if any(not meta for meta in self.metas.values()):
            origin += "|stats:external-npz"
        return origin


def score_images(
    generated: str | Path,
    reference: str | Path | None,
    metrics: Sequence[str],
    backbone: str = "inception-v3-tf",
    backbone_path: str | None = None,
    device: str = "auto",
    cache_dir: CacheDir = None,
    skip_corrupt: bool = False,
    seed: int = 0,
) -> dict[str, Score]:
    """Scores keyed by metric name (``fid``, ``kid`` (details ``std``), ``is``, ``precision``, ...).

    ``reference`` may be None when only ``is`` is asked for. ``cache_dir`` None is
    the default cache folder, False disables the cache. ``seed`` drives KID's
    subsets and FID∞'s subsamples.
    """
    return score_image_sets(
        generated, reference, metrics, backbone, backbone_path, device, cache_dir, skip_corrupt, seed
    ).scores


def score_image_sets(
    generated: str | Path,
    reference: str | Path | None,
    metrics: Sequence[str],
    backbone: str = "inception-v3-tf",
    backbone_path: str | None = None,
    device: str = "auto",
    cache_dir: CacheDir = None,
    skip_corrupt: bool = False,
    seed: int = 0,
) -> ImageScoring:
    """``score_images`` keeping the feature sets, the skipped files and the backbone's device."""
    metrics = check_request(metrics, backbone)
    pair_metrics = [m for m in metrics if m != "is"]
    if pair_metrics and reference is None:
        raise UserError(f"metric(s) {', '.join(pair_metrics)} need a reference set")
    sides = _Sides(backbone, backbone_path, device, cache_dir, skip_corrupt)
    gen = sides.load(generated, "generated")
    ref = sides.load(reference, "reference") if pair_metrics and reference is not None else None
    _check_contents(gen, ref, metrics, generated, reference)
    origin = sides.origin()
    scores: dict[str, Score] = {}
    if "is" in metrics:
        scores["is"] = im.is_score(gen, backbone, origin)
    if ref is not None:
        scores.update(_pair_scores(gen, ref, pair_metrics, backbone, origin, seed))
    return ImageScoring(
        {metric: _without_nan(scores[metric]) for metric in metrics},
        gen,
        ref,
        sides.skipped,
        str(sides.backbone.device) if sides.backbone is not None else None,
    )


def _without_nan(score: Score) -> Score:
    """Unknown counts (a pytorch-fid .npz records no N) become None: results are strict JSON."""
    details = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in score.details.items()}
    return replace(score, details=details)


def _pair_scores(
    gen: im.FeatureSet, ref: im.FeatureSet, metrics: list[str], backbone: str, origin: str, seed: int
) -> dict[str, Score]:
    scores: dict[str, Score] = {}
    if "fid" in metrics:
        scores["fid"] = _with_draws_interval(im.fid_score(gen, ref, backbone, origin), gen, ref, seed)
    if "fid_inf" in metrics:
        scores["fid_inf"] = im.fid_inf_score(gen, ref, backbone, origin, seed=seed)
    if "kid" in metrics:
        scores["kid"] = _with_subset_interval(
            im.kid_score(gen, ref, backbone, origin, seed=seed), gen, ref, seed
        )
    if "cmmd" in metrics:
        scores["cmmd"] = im.cmmd_score(gen, ref, origin)
    manifold = [m for m in metrics if m in _MANIFOLD]
    if manifold:
        scores.update(im.manifold_scores(gen, ref, manifold, origin))
    return scores


FID_DRAWS = 5  # disjoint draws of the generated set for FID's interval
KID_SUBSETS = 100  # kid_score's default number of subsets
KID_SUBSET_SIZE = 1000  # kernel_inception_distance's default subset size


def _with_subset_interval(kid: Score, gen: im.FeatureSet, ref: im.FeatureSet, seed: int) -> Score:
    """KID ± the std of MMD² over its subsets, or no interval when every subset is both whole sets.

    The subsets are min(1000, N_gen, N_ref) images; when that is all of both sets, each subset gives
    the same MMD² and the "std" is rounding noise, not a spread.
    """
    size = int(kid.details["subset_size"])
    if size == gen.n and size == ref.n:
        fact = f"every subset is the whole set (n={size} < subset size {KID_SUBSET_SIZE})"
        if size >= KID_SUBSET_SIZE:
            fact = f"every subset is the whole set (n={size} = subset size {KID_SUBSET_SIZE})"
        details = {**kid.details, "degenerate": fact, "ci_unavailable": fact}
        return replace(kid, details=details)
    std = kid.details["std"]
    interval = {
        "kind": "subset-std",
        "low": kid.score - std,
        "high": kid.score + std,
        "mean": kid.score,
        "half_width": std,
        "n_subsets": KID_SUBSETS,
        "subset_size": size,
        "seed": seed,
    }
    return replace(kid, interval=interval)


def _with_draws_interval(score: Score, gen: im.FeatureSet, ref: im.FeatureSet, seed: int) -> Score:
    """FID's spread over disjoint draws of the generated set, when each draw is still full-rank.

    FID has no per-sample statistics to bootstrap; splitting the generated images into
    ``FID_DRAWS`` disjoint draws (seeded) and scoring each against the reference shows how
    much the value moves with the images drawn. The draws are smaller than the set, so
    their FIDs are biased upward: the interval is [min, max] of FID at size N/draws.
    """
    size = (gen.n or 0) // FID_DRAWS
    if gen.features is None or size <= gen.dim:
        reason = f"needs {FID_DRAWS} disjoint draws of more than {gen.dim} generated images each"
        return replace(score, details={**score.details, "ci_unavailable": reason})
    order = np.random.default_rng(seed).permutation(gen.n)
    values = np.array(
        [
            im.frechet_distance_of_sets(
                im.FeatureSet.from_features(gen.features[order[i * size : (i + 1) * size]]), ref
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
    return replace(
        score, interval=interval, signature=f"{score.signature}|draws:{FID_DRAWS}x{size}|seed:{seed}"
    )


def _check_contents(
    gen: im.FeatureSet,
    ref: im.FeatureSet | None,
    metrics: list[str],
    generated: str | Path,
    reference: str | Path | None,
) -> None:
    if ref is not None and gen.dim != ref.dim:
        raise UserError(
            f"{generated} has {gen.dim}-d features but {reference} has {ref.dim}-d; both sides must come "
            f"from the same backbone"
        )
    for path, side, needed in (
        (generated, gen, [m for m in metrics if m in _NEED_FEATURES or m == "fid_inf"]),
        (reference, ref, [m for m in metrics if m in _NEED_FEATURES]),
    ):
        if side is not None and side.features is None and needed:
            raise UserError(
                f"{path}: holds only mu/sigma, but {', '.join(needed)} need(s) per-image features; pass the "
                f"image folder, or an .npz written by 'aigc-eval stats' (it stores features)"
            )
    if "is" in metrics and gen.logits is None:
        raise UserError(f"{generated}: has no class logits for 'is'; pass images or stats made with logits")
    if "is" in metrics and gen.n is not None and gen.n < 10:
        raise UserError(f"{generated}: 'is' uses 10 splits and needs at least 10 images, got {gen.n}")
    if "fid_inf" in metrics and gen.n is not None and gen.n < 30:
        raise UserError(f"{generated}: fid_inf fits FID at 15 subset sizes and needs at least 30 images")
    manifold = [m for m in metrics if m in _MANIFOLD]
    # k-NN radii: k=3 on both sides for precision/recall, k=5 on the reference for density/coverage.
    ref_k = 5 if {"density", "coverage"} & set(manifold) else 3
    gen_k = 3 if {"precision", "recall"} & set(manifold) else 0
    for path, side, k in ((reference, ref, ref_k), (generated, gen, gen_k)):
        if side is not None and manifold and side.n is not None and side.n <= k:
            raise UserError(f"{path}: {side.n} images; {', '.join(manifold)} need more than {k}")


def save_stats(
    path_in: str | Path,
    out_npz: str | Path,
    backbone: str = "inception-v3-tf",
    backbone_path: str | None = None,
    device: str = "auto",
    cache_dir: CacheDir = None,
    skip_corrupt: bool = False,
) -> StatsSummary:
    """Write ``mu``/``sigma`` (pytorch-fid's keys), ``features``, ``logits`` and provenance to ``.npz``."""
    out = Path(out_npz)
    if not is_stats_file(out):
        raise UserError(f"{out}: the output must end in .npz")
    if backbone not in BACKBONES:
        raise UserError(f"unknown backbone {backbone!r}; known backbones: {', '.join(BACKBONES)}")
    network = get_backbone(backbone, backbone_path, device)
    cache = None if cache_dir is False else FeatureCache(cache_dir)
    extracted = extract_features(network, open_image_set(path_in), cache, skip_corrupt)
    features = extracted.features
    if len(features) < 2:
        raise UserError(f"{path_in}: {len(features)} readable image(s); statistics need at least 2")
    mu, sigma = im.mean_and_covariance(features)
    arrays: dict[str, np.ndarray] = {
        "mu": mu,
        "sigma": sigma,
        "features": features,
        "n": np.array(len(features)),
        "meta_backbone": np.array(network.name),
        "meta_weights_sha256": np.array(network.weights_sha256),
        "meta_preprocessing": np.array(network.preprocessing),
        "meta_resize": np.array(network.resize),
        "meta_source": np.array(str(path_in)),
        "meta_aigc_eval_version": np.array(__version__),
    }
    if extracted.logits is not None:
        arrays["logits"] = extracted.logits
    save_npz_atomic(out, arrays)
    return StatsSummary(out, len(features), features.shape[1], network.name, len(extracted.skipped))


# ---------------------------------------------------------------- run-folder features, resampled metrics

FEATURES_DIR = "features"
# Metrics the regression gate can re-evaluate on resampled generated sets.
RESAMPLABLE = ("fid", "kid", "is", "precision", "recall", "density", "coverage")
# Their values on a resample that repeats images are not the metric of any image set: the k-NN radii of
# the generated set shrink to 0 (recall), or "is any generated image near" saturates (coverage).
NO_BOOTSTRAP = frozenset({"recall", "coverage"})
# Pairwise matrices over pooled × (pooled + reference) images are kept in memory up to this many entries.
MAX_PAIRWISE = 40_000_000
_PAIRWISE = frozenset({"kid", "recall", "coverage", "precision", "density"})


def save_image_features(
    run_dir: Path, row: str, task: str, scoring: ImageScoring, write_reference: bool = True
) -> dict[str, str]:
    """Keep the generated set's features (and the reference's, once per task) in the run folder, so
    ``compare`` can resample them later; returns the files relative to the run folder.

    Features are stored as float32 (as in the feature cache); a stats-only side stores mu/sigma.
    """
    files = {"generated": f"{FEATURES_DIR}/{row}__{task}.npz"}
    save_npz_atomic(run_dir / files["generated"], _feature_arrays(scoring.generated))
    if scoring.reference is not None:
        files["reference"] = f"{FEATURES_DIR}/{task}__reference.npz"
        if write_reference:
            save_npz_atomic(run_dir / files["reference"], _feature_arrays(scoring.reference))
    return files


def _feature_arrays(feature_set: im.FeatureSet) -> dict[str, np.ndarray]:
    if feature_set.features is None:
        arrays = {"mu": feature_set.mu, "sigma": feature_set.sigma}
    else:
        arrays = {"features": feature_set.features.astype(np.float32)}
    if feature_set.logits is not None:
        arrays["logits"] = feature_set.logits.astype(np.float32)
    return arrays


def load_feature_set(path: Path) -> im.FeatureSet:
    """A feature file written by ``save_image_features``."""
    try:
        with np.load(path) as data:
            logits = data["logits"].astype(np.float64) if "logits" in data.files else None
            if "features" in data.files:
                return im.FeatureSet.from_features(data["features"].astype(np.float64), logits)
            return im.FeatureSet(data["mu"], data["sigma"], None, None, logits)
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise UserError(f"{path}: not a readable feature file ({error}); re-run the suite") from None


def resampling_unavailable(
    metric: str, generated: im.FeatureSet, reference: im.FeatureSet | None, n_pooled: int
) -> str | None:
    """Why ``metric`` cannot be re-evaluated on resampled generated sets, or None when it can."""
    if metric not in RESAMPLABLE:
        return f"{metric} has no resampling test (too costly to refit per resample)"
    if metric == "is":
        return None if generated.logits is not None else "the generated features carry no logits"
    if generated.features is None:
        return "the generated side is mean/covariance statistics only, without per-image features"
    if reference is None:
        return "the run kept no reference features"
    if metric != "fid" and reference.features is None:
        return "the reference is mean/covariance statistics only, without per-image features"
    if metric in _PAIRWISE and n_pooled * (n_pooled + (reference.n or 0)) > MAX_PAIRWISE:
        return f"{n_pooled} pooled images are too many for the in-memory resampling test"
    return None


class ResampledStatistic:
    """One image metric as a function of which rows of a pooled generated-feature matrix are drawn.

    Everything that does not depend on the draw is computed once: the reference's covariance factor
    and the pooled features projected on it (FID), the kernel matrices (KID), the distances to the
    reference's k-NN balls (precision, density, coverage, recall). FID is then
    ‖μg−μr‖² + tr Σg + tr Σr − 2‖Cg·Fr‖_* with Σg = CgᵀCg (centred draw) and Σr = Fr·Frᵀ: the nuclear
    norm of an n×r product gives tr √(Σg^½ Σr Σg^½) without any d×d matrix. KID is the unbiased MMD²
    of the whole drawn set (what KID's subset mean estimates; equal to it when the subsets are the
    whole sets).
    """

    def __init__(
        self, metric: str, pooled: np.ndarray, reference: im.FeatureSet | None, logits: np.ndarray | None
    ) -> None:
        self.metric = metric
        x = np.asarray(pooled, dtype=np.float64)
        self._x, self._logits = x, logits
        if metric == "fid":
            assert reference is not None
            small = (
                reference.features is not None and reference.n is not None and reference.n <= reference.dim
            )
            factor = (
                im._sqrt_factor_of_samples(reference.features) if small else im._sqrt_factor(reference.sigma)
            )
            self._projected = x @ factor
            self._squared_norms = (x * x).sum(axis=1)
            self._ref_mu, self._ref_trace = reference.mu, float(np.trace(reference.sigma))
            return
        if metric == "is":
            return
        assert reference is not None and reference.features is not None
        ref = reference.features
        if metric == "kid":
            gamma = 1.0 / x.shape[1]
            self._k_pp = (x @ x.T * gamma + 1.0) ** 3
            self._k_cross = ((ref @ x.T * gamma + 1.0) ** 3).sum(axis=0)
            k_rr = (ref @ ref.T * gamma + 1.0) ** 3
            self._m = len(ref)
            self._within_ref = (k_rr.sum() - np.trace(k_rr)) / (self._m * (self._m - 1))
            return
        k = 3 if metric in ("precision", "recall") else 5
        self._k = k
        radii = im.knn_radii(ref, k) ** 2
        d_pr = im._squared_distances(x, ref)
        if metric == "precision":
            self._per_image = (d_pr <= radii[None, :]).any(axis=1).astype(np.float64)
        elif metric == "density":
            self._per_image = (d_pr < radii[None, :]).sum(axis=1) / k
        elif metric == "coverage":
            self._d_pr, self._radii = d_pr, radii
        else:  # recall: the drawn set's own k-NN balls
            self._d_pr = d_pr
            self._d_pp = im._squared_distances(x, x)
            np.fill_diagonal(self._d_pp, 0.0)

    def __call__(self, idx: np.ndarray) -> float:
        """The metric of the generated set made of pooled rows ``idx`` (repeats allowed)."""
        n = len(idx)
        if self.metric == "fid":
            mu = self._x[idx].mean(axis=0)
            trace = float((self._squared_norms[idx].sum() - n * (mu @ mu)) / (n - 1))
            projected = self._projected[idx]
            projected = (projected - projected.mean(axis=0)) / math.sqrt(n - 1)
            small = projected @ projected.T if n <= projected.shape[1] else projected.T @ projected
            nuclear = float(np.sqrt(np.clip(np.linalg.eigvalsh(small), 0.0, None)).sum())
            diff = mu - self._ref_mu
            return max(float(diff @ diff) + trace + self._ref_trace - 2 * nuclear, 0.0)
        if self.metric == "kid":
            block = self._k_pp[np.ix_(idx, idx)]
            within = (block.sum() - np.trace(block)) / (n * (n - 1))
            return float(within + self._within_ref - 2 * self._k_cross[idx].sum() / (n * self._m))
        if self.metric in ("precision", "density"):
            return float(self._per_image[idx].mean())
        if self.metric == "coverage":
            return float((self._d_pr[idx].min(axis=0) < self._radii).mean())
        if self.metric == "recall":
            block = self._d_pp[np.ix_(idx, idx)]
            radii = np.sqrt(np.partition(block, self._k, axis=1)[:, self._k]) ** 2
            return float((self._d_pr[idx] <= radii[:, None]).any(axis=0).mean())
        assert self._logits is not None
        return im.inception_score(self._logits[idx])[0]
