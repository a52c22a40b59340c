"""Image-set metrics: pure functions of feature arrays (float64), and the metrics of the one contract.

The rows of an image metric are the generated images' per-image features (class logits for the
Inception Score); the reference side is held by the metric (``MetricContext.reference``). The math
lives in ``frechet`` (FID, FID∞), ``kernel`` (KID, CMMD) and ``manifold`` (precision, recall,
density, coverage, IS); ``metrics`` registers the metric classes (``fid``, ``kid``, ...).
"""

from aigc_eval.metrics.image.frechet import (
    FeatureSet,
    FrechetToReference,
    as_gaussian,
    covariance_problem,
    fid_infinity,
    frechet_distance,
    frechet_distance_of_sets,
    mean_and_covariance,
)
from aigc_eval.metrics.image.kernel import cmmd, kernel_inception_distance
from aigc_eval.metrics.image.labels import SampleSizeWarning, metric_label
from aigc_eval.metrics.image.manifold import density_coverage, inception_score, knn_radii, precision_recall

__all__ = [
    "FeatureSet",
    "FrechetToReference",
    "SampleSizeWarning",
    "as_gaussian",
    "cmmd",
    "covariance_problem",
    "density_coverage",
    "fid_infinity",
    "frechet_distance",
    "frechet_distance_of_sets",
    "inception_score",
    "kernel_inception_distance",
    "knn_radii",
    "mean_and_covariance",
    "metric_label",
    "precision_recall",
]
