"""What every image metric shares: rows are per-image features, the reference comes with the context.

An image metric is a ``Metric`` of the one contract with unpaired rows (``paired = False``): row i
is the i-th generated image's feature vector (its class logits for ``is``), and the reference set
is a ``FeatureSet`` in ``MetricContext.reference``. ``score_set`` scores a whole ``FeatureSet``
(also one that is only mean/covariance statistics, so it has no rows); ``aggregate(rows)`` is
``score_set`` of the set those rows make. Options: ``backbone`` (it names the outputs:
``fd_efficientnet-lite0``, never "fid") and ``seed`` (the suite's seed: KID's subsets, FID∞'s
subsamples and FID's draws, as before the metrics were classes).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from aigc_eval.metrics.base import Metric, MetricContext, References, SampleInputs, Score
from aigc_eval.metrics.image.frechet import FeatureSet
from aigc_eval.metrics.image.labels import INCEPTION, SampleSizeWarning, metric_label

UNKNOWN_ORIGIN = "backbone:unknown|weights:unknown|resize:unknown"
# Pairwise matrices over pooled × (pooled + reference) images are kept in memory up to this many entries.
MAX_PAIRWISE = 40_000_000


class ImageOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: str = INCEPTION
    seed: int = 0


def _n(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def counts(gen: FeatureSet, ref: FeatureSet | None) -> dict[str, float | None]:
    """Image counts for Score details; None (strict JSON) where statistics do not record their count."""
    out: dict[str, float | None] = {"n_generated": None if gen.n is None else float(gen.n)}
    if ref is not None:
        out["n_reference"] = None if ref.n is None else float(ref.n)
    return out


def warn_rank(metric: str, *sets: FeatureSet) -> None:
    for feature_set in sets:
        if feature_set.n is not None and feature_set.n < feature_set.dim:
            warnings.warn(
                f"{metric}: {feature_set.n} images < {feature_set.dim} feature dimensions; the covariance is "
                f"rank-deficient and the value is dominated by sample size (compare only at equal N, "
                f"or use fid_inf)",
                SampleSizeWarning,
                stacklevel=4,
            )


class ImageMetric(Metric):
    """Shared behaviour of the image metrics; subclasses set the class facts and ``score_set``."""

    Options: ClassVar[type[BaseModel]] = ImageOptions
    paired = False
    higher_is_better: ClassVar[bool]
    # Which per-image arrays are the rows: "features", or "logits" (class logits, for IS).
    rows_from: ClassVar[str] = "features"
    needs_reference: ClassVar[bool] = True
    # Sides that must be per-image features, not just mean/covariance statistics.
    features_needed: ClassVar[frozenset[str]] = frozenset({"generated", "reference"})
    # The only backbones the metric is defined on (empty: any), and what to say otherwise.
    backbones: ClassVar[tuple[str, ...]] = ()
    backbone_rule: ClassVar[str] = ""
    # k of the k-NN balls on each side ("generated"/"reference"): a side needs more than k images.
    knn: ClassVar[dict[str, int]] = {}
    options: ImageOptions

    def __init__(
        self, options: BaseModel | None = None, lang: str | None = None, context: MetricContext | None = None
    ) -> None:
        super().__init__(options, lang, context)
        self.outputs = (metric_label(self.name, self.options.backbone),)

    @property
    def label(self) -> str:
        return self.outputs[0]

    @property
    def reference(self) -> FeatureSet | None:
        return self.context.reference if self.needs_reference else None

    def _reference(self) -> FeatureSet:
        if self.reference is None:
            raise ValueError(f"{self.name}: needs the reference set (MetricContext.reference)")
        return self.reference

    # --- the contract over rows ------------------------------------------------------------------

    def sample_stats(
        self, predictions: Sequence[str], references: References, inputs: SampleInputs | None = None
    ) -> np.ndarray:
        raise TypeError(
            f"{self.name}: the rows of an image metric are per-image features from a backbone "
            "(aigc_eval.image_scoring extracts them), not texts"
        )

    def sample_scores(self, stats: np.ndarray) -> dict[str, list[float]]:
        return {}  # a set-level metric: no image has a score of its own

    def rows_of(self, gen: FeatureSet) -> np.ndarray | None:
        """This metric's rows of a generated set, or None where the set has none (statistics only)."""
        return gen.logits if self.rows_from == "logits" else gen.features

    def set_of(self, rows: np.ndarray) -> FeatureSet:
        return FeatureSet.from_features(rows)

    def aggregate(self, stats: np.ndarray) -> dict[str, Score]:
        return self.score_set(self.set_of(stats))

    def signature(self, stats: np.ndarray) -> str:
        return self.signature_of(len(stats))

    def custom_intervals(
        self, scores: dict[str, Score], stats: np.ndarray, seed: int
    ) -> dict[str, Score] | None:
        """The metric's own interval (FID: draws range, KID: subset std), or none at all: never the
        default bootstrap. Its seed is ``options.seed`` (the suite's seed, as before), not ``seed``."""
        return self.with_intervals(scores, self.set_of(stats))

    def pooled(self, pool: np.ndarray) -> Callable[[np.ndarray], dict[str, float]]:
        """The metric of index sets into ``pool`` (both runs' rows); a ValueError says why not."""
        if not self.resamplable:
            raise ValueError(f"{self.name} has no resampling test (too costly to refit per resample)")
        statistic = self._pooled(np.asarray(pool, dtype=np.float64))
        return lambda idx: {self.label: statistic(idx)}

    # --- what subclasses provide -----------------------------------------------------------------

    def score_set(self, gen: FeatureSet) -> dict[str, Score]:
        """The score of a whole generated set against the reference."""
        raise NotImplementedError

    def signature_extra(self, n_gen: int | None) -> str:
        return ""

    def with_intervals(self, scores: dict[str, Score], gen: FeatureSet) -> dict[str, Score]:
        return dict(scores)

    def _pooled(self, pool: np.ndarray) -> Callable[[np.ndarray], float]:
        return lambda idx: self.score_set(self.set_of(pool[idx]))[self.label].score

    # --- shared helpers --------------------------------------------------------------------------

    def signature_of(self, n_gen: int | None) -> str:
        """``<label>|<origin>|n_gen:N|n_ref:M<extra>``: a function of the options, the reference and N."""
        ref = self.reference
        ref_part = f"|n_ref:{_n(ref.n)}" if ref is not None else ""
        origin = self.context.origin or UNKNOWN_ORIGIN
        return f"{self.label}|{origin}|n_gen:{_n(n_gen)}{ref_part}{self.signature_extra(n_gen)}"

    def scored(self, gen: FeatureSet, value: float, details: dict[str, float | None] | None = None) -> Score:
        extra = {} if details is None else details
        return Score(
            self.label,
            value,
            self.signature_of(gen.n),
            self.higher_is_better,
            {**counts(gen, self.reference), **extra},
        )

    def resampling_problem(self, gen: FeatureSet) -> str | None:
        """Why rows of ``gen`` cannot be re-evaluated on resampled sets (compare), or None."""
        if not self.resamplable:
            return f"{self.name} has no resampling test (too costly to refit per resample)"
        if self.rows_from == "logits":
            return None if gen.logits is not None else "the generated features carry no logits"
        if gen.features is None:
            return "the generated side is mean/covariance statistics only, without per-image features"
        if self.needs_reference and self.reference is None:
            return "the run kept no reference features"
        reference = self.reference
        if "reference" in self.features_needed and reference is not None and reference.features is None:
            return "the reference is mean/covariance statistics only, without per-image features"
        return None

    def size_problem(self, gen: FeatureSet) -> str | None:
        """Why the generated set is too small for this metric (beyond its k-NN balls), or None."""
        return None

    def pairwise_fits(self, n_pooled: int) -> None:
        ref = self._reference()
        if n_pooled * (n_pooled + (ref.n or 0)) > MAX_PAIRWISE:
            raise ValueError(f"{n_pooled} pooled images are too many for the in-memory resampling test")
