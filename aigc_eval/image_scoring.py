"""Entry points for image metrics: score a generated set against a reference, save reference statistics.

Either side may be an image folder, a list file, or an ``.npz`` (pytorch-fid's
``mu``/``sigma``, or the ``features`` that ``save_stats`` writes). Image sets go
through one backbone, with features cached on disk; everything after that is a
pure function in ``aigc_eval.metrics.image``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
    return {metric: scores[metric] for metric in metrics}


def _pair_scores(
    gen: im.FeatureSet, ref: im.FeatureSet, metrics: list[str], backbone: str, origin: str, seed: int
) -> dict[str, Score]:
    scores: dict[str, Score] = {}
    if "fid" in metrics:
        scores["fid"] = _with_draws_interval(im.fid_score(gen, ref, backbone, origin), gen, ref, seed)
    if "fid_inf" in metrics:
        scores["fid_inf"] = im.fid_inf_score(gen, ref, backbone, origin, seed=seed)
    if "kid" in metrics:
        kid = im.kid_score(gen, ref, backbone, origin, seed=seed)
        std = kid.details["std"]
        interval = {
            "low": kid.score - std,
            "high": kid.score + std,
            "mean": kid.score,
            "half_width": std,
            "n_resamples": int(kid.details["subset_size"]),
            "seed": seed,
            "method": "kid-subset-std",
        }
        scores["kid"] = replace(kid, interval=interval)
    if "cmmd" in metrics:
        scores["cmmd"] = im.cmmd_score(gen, ref, origin)
    manifold = [m for m in metrics if m in _MANIFOLD]
    if manifold:
        scores.update(im.manifold_scores(gen, ref, manifold, origin))
    return scores


FID_DRAWS = 5  # disjoint draws of the generated set for FID's interval


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
        "low": low,
        "high": high,
        "mean": float(values.mean()),
        "half_width": (high - low) / 2,
        "n_resamples": FID_DRAWS,
        "draw_size": size,
        "seed": seed,
        "method": "disjoint-draws-min-max",
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
