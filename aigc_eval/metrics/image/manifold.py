"""k-NN manifold metrics of feature sets, and the Inception Score of class logits.

* Precision/recall: Kynkäänniemi et al. 2019 (k-NN balls, ``<=``).
* Density/coverage: Naeem et al. 2020 (k-NN balls, strict ``<`` as in their code).
* IS: Salimans et al. 2016 (10 splits, no shuffling, population std).
"""

from __future__ import annotations

import math

import numpy as np

from aigc_eval.metrics.image.kernel import row_blocks, squared_distances


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (the row itself excluded)."""
    features = np.asarray(features, dtype=np.float64)
    if len(features) <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} samples, got {len(features)}")
    radii = np.empty(len(features))
    for rows in row_blocks(len(features), len(features)):
        d2 = squared_distances(features[rows], features)
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
    for rows in row_blocks(len(gen), len(ref)):
        d2 = squared_distances(gen[rows], ref)
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
    for rows in row_blocks(len(gen), len(ref)):
        d2 = squared_distances(gen[rows], ref)
        counts[rows] = (d2 < ref_radii[None, :]).sum(axis=1)
        nearest_gen = np.minimum(nearest_gen, d2.min(axis=0))
    return float(counts.mean() / k), float((nearest_gen < ref_radii).mean())


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
