"""Image metrics against reference implementations (scipy sqrtm FID, torchmetrics) and brute force."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from aigc_eval.metrics import image as im
from aigc_eval.metrics.base import MetricContext
from aigc_eval.metrics.image import kernel
from aigc_eval.metrics.image.base import ImageMetric
from aigc_eval.metrics.registry import build_metric


def image_metric(name: str, backbone: str, ref: im.FeatureSet, origin: str, seed: int = 0) -> ImageMetric:
    """A registered image metric with the reference side and the origin in its context."""
    context = MetricContext(reference=ref, origin=origin)
    metric = build_metric(name, {"backbone": backbone, "seed": seed}, context=context)
    assert isinstance(metric, ImageMetric)
    return metric


class Passthrough(nn.Module):
    """A torchmetrics "feature extractor" that returns its input, so both sides see identical features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def pytorch_fid_formula(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """pytorch-fid's calculate_frechet_distance, minus the ``disp=`` argument SciPy 1.18 removed."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def random_sets(n_gen: int, n_ref: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim, dim)) / math.sqrt(dim)
    gen = rng.standard_normal((n_gen, dim)) @ mixing + 0.3
    ref = rng.standard_normal((n_ref, dim)) * 1.2
    return gen, ref


@pytest.mark.parametrize(
    ("n_gen", "n_ref", "dim"),
    [(600, 500, 64), (300, 400, 256), (40, 50, 64)],  # the last pair is rank-deficient (N < d)
)
def test_frechet_distance_matches_scipy_sqrtm_formula(n_gen: int, n_ref: int, dim: int) -> None:
    gen, ref = random_sets(n_gen, n_ref, dim, seed=dim + n_gen)
    a, b = im.FeatureSet.from_features(gen), im.FeatureSet.from_features(ref)
    expected = pytorch_fid_formula(a.mu, a.sigma, b.mu, b.sigma)
    assert im.frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(expected, rel=1e-6)
    assert im.frechet_distance(b.mu, b.sigma, a.mu, a.sigma) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("n_gen", "n_ref"), [(30, 300), (300, 30), (20, 25), (300, 200)])
def test_set_distance_from_samples_matches_the_covariance_route(n_gen: int, n_ref: int) -> None:
    gen, ref = random_sets(n_gen, n_ref, 64, seed=n_gen)
    a, b = im.FeatureSet.from_features(gen), im.FeatureSet.from_features(ref)
    expected = im.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    assert im.frechet_distance_of_sets(a, b) == pytest.approx(expected, rel=1e-7)
    assert im.frechet_distance_of_sets(b, a) == pytest.approx(expected, rel=1e-7)
    assert im.frechet_distance_of_sets(a, im.FeatureSet(a.mu.copy(), a.sigma.copy(), None)) == 0.0


def test_frechet_distance_matches_torchmetrics_fid_on_identical_features() -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance

    gen, ref = random_sets(300, 250, 48, seed=7)
    metric = FrechetInceptionDistance(feature=Passthrough(48), normalize=True)
    metric.set_dtype(torch.float64)
    metric.update(torch.from_numpy(ref), real=True)
    metric.update(torch.from_numpy(gen), real=False)
    expected = float(metric.compute())
    a, b = im.FeatureSet.from_features(gen), im.FeatureSet.from_features(ref)
    assert im.frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(expected, rel=1e-6)


def test_identical_sets_give_exactly_zero_and_reordered_copies_never_go_negative() -> None:
    gen, _ = random_sets(40, 10, 64, seed=3)  # rank-deficient: sqrtm's answer is off by ~1e-5 here
    a = im.FeatureSet.from_features(gen)
    assert im.frechet_distance(a.mu, a.sigma, a.mu.copy(), a.sigma.copy()) == 0.0
    shuffled = im.FeatureSet.from_features(gen[np.random.default_rng(0).permutation(len(gen))])
    assert not np.array_equal(a.sigma, shuffled.sigma)  # same set, different rounding
    value = im.frechet_distance(a.mu, a.sigma, shuffled.mu, shuffled.sigma)
    assert 0.0 <= value < 1e-8
    assert pytorch_fid_formula(a.mu, a.sigma, shuffled.mu, shuffled.sigma) < 0  # what the old formula gives


def test_frechet_distance_of_known_gaussians() -> None:
    # N(0, I) vs N(m, 4I) in 3-d: |m|^2 + 3 * (1 + 4 - 2 * 2) = |m|^2 + 3.
    mean = np.array([1.0, 2.0, 2.0])
    value = im.frechet_distance(np.zeros(3), np.eye(3), mean, 4 * np.eye(3))
    assert value == pytest.approx(9.0 + 3.0, rel=1e-12)


def test_kid_equals_torchmetrics_on_the_same_subsets() -> None:
    from torchmetrics.image.kid import KernelInceptionDistance

    gen, ref = random_sets(300, 250, 32, seed=11)
    metric = KernelInceptionDistance(feature=Passthrough(32), subsets=7, subset_size=100)
    metric.update(torch.from_numpy(ref), real=True)
    metric.update(torch.from_numpy(gen), real=False)
    torch.manual_seed(3)
    expected_mean, expected_std = (float(v) for v in metric.compute())
    torch.manual_seed(3)  # replay torchmetrics' draws: a reference permutation, then a generated one
    subsets = []
    for _ in range(7):
        ref_idx = torch.randperm(len(ref))[:100].numpy()
        subsets.append((torch.randperm(len(gen))[:100].numpy(), ref_idx))
    mean, std, size = im.kernel_inception_distance(gen, ref, subsets=subsets)
    assert size == 100
    assert mean == pytest.approx(expected_mean, rel=1e-9)
    assert std == pytest.approx(expected_std, rel=1e-9)


def test_kid_precomputed_and_per_subset_kernels_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    gen, ref = random_sets(120, 90, 16, seed=5)
    fast = im.kernel_inception_distance(gen, ref, n_subsets=10, subset_size=50, seed=4)
    monkeypatch.setattr(kernel, "_KID_PRECOMPUTE_MAX", 0)
    direct = im.kernel_inception_distance(gen, ref, n_subsets=10, subset_size=50, seed=4)
    assert direct == pytest.approx(fast, rel=1e-12)
    assert fast[2] == 50


def test_kid_caps_subsets_at_the_set_size_and_is_seeded() -> None:
    gen, ref = random_sets(60, 80, 8, seed=2)
    mean, std, size = im.kernel_inception_distance(gen, ref, n_subsets=5, seed=1)
    assert size == 60
    assert im.kernel_inception_distance(gen, ref, n_subsets=5, seed=1) == (mean, std, size)
    assert im.kernel_inception_distance(gen, ref, n_subsets=5, seed=2)[0] != mean


def test_inception_score_equals_torchmetrics_after_its_shuffle() -> None:
    from torchmetrics.image.inception import InceptionScore

    logits = np.random.default_rng(4).standard_normal((200, 50)) * 3
    metric = InceptionScore(feature=Passthrough(50), splits=10)
    metric.update(torch.from_numpy(logits))
    torch.manual_seed(5)
    expected_mean, expected_std = (float(v) for v in metric.compute())
    torch.manual_seed(5)
    order = torch.randperm(len(logits)).numpy()
    mean, std = im.inception_score(logits[order], splits=10)
    assert mean == pytest.approx(expected_mean, rel=1e-9)
    # torchmetrics reports the sample std (ddof=1); ours is the original code's population std.
    assert std * math.sqrt(10 / 9) == pytest.approx(expected_std, rel=1e-9)


def test_inception_score_limits() -> None:
    confident = np.zeros((100, 10))
    confident[np.arange(100), np.arange(100) % 10] = 60.0  # every split: all 10 classes, each certain
    mean, std = im.inception_score(confident)
    assert mean == pytest.approx(10.0, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)
    assert im.inception_score(np.ones((50, 7)), splits=5) == pytest.approx((1.0, 0.0))


def brute_force_prdc(gen: np.ndarray, ref: np.ndarray, k_pr: int, k_dc: int) -> dict[str, float]:
    """Loops over pairs, straight from the papers' definitions."""

    def dist(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sqrt(((a - b) ** 2).sum()))

    def radius(points: np.ndarray, i: int, k: int) -> float:
        return sorted(dist(points[i], points[j]) for j in range(len(points)) if j != i)[k - 1]

    ref_r3 = [radius(ref, i, k_pr) for i in range(len(ref))]
    gen_r3 = [radius(gen, i, k_pr) for i in range(len(gen))]
    ref_r5 = [radius(ref, i, k_dc) for i in range(len(ref))]
    precision = np.mean([any(dist(g, r) <= ref_r3[j] for j, r in enumerate(ref)) for g in gen])
    recall = np.mean([any(dist(r, g) <= gen_r3[j] for j, g in enumerate(gen)) for r in ref])
    density = np.mean([sum(dist(g, r) < ref_r5[j] for j, r in enumerate(ref)) for g in gen]) / k_dc
    coverage = np.mean([min(dist(r, g) for g in gen) < ref_r5[i] for i, r in enumerate(ref)])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_recall_density_coverage_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((70, 6))
    gen = rng.standard_normal((55, 6)) * 0.8 + 0.7
    expected = brute_force_prdc(gen, ref, k_pr=3, k_dc=5)
    precision, recall = im.precision_recall(gen, ref, k=3)
    density, coverage = im.density_coverage(gen, ref, k=5)
    assert (precision, recall) == (expected["precision"], expected["recall"])
    assert density == pytest.approx(expected["density"], rel=1e-12)
    assert coverage == expected["coverage"]
    assert 0 < precision < 1 and 0 < recall < 1 and 0 < coverage < 1


def test_manifold_metrics_of_a_set_with_itself() -> None:
    ref = np.random.default_rng(9).standard_normal((50, 4))
    assert im.precision_recall(ref, ref) == (1.0, 1.0)
    assert im.density_coverage(ref, ref)[1] == 1.0


def test_knn_radii_blocks_agree_with_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    points = np.random.default_rng(1).standard_normal((40, 5))
    whole = im.knn_radii(points, 3)
    monkeypatch.setattr(kernel, "_BLOCK_ENTRIES", 7 * 40)  # blocks of 7 rows
    np.testing.assert_array_equal(im.knn_radii(points, 3), whole)
    assert im.precision_recall(points[:20], points[20:]) == im.precision_recall(points[:20], points[20:])


def test_cmmd_matches_the_reference_formula() -> None:
    rng = np.random.default_rng(6)
    ref = rng.standard_normal((30, 5))
    gen = rng.standard_normal((25, 5)) + 0.5

    def mean_kernel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean([[math.exp(-((x - y) ** 2).sum() / 200.0) for y in b] for x in a]))

    expected = 1000 * (mean_kernel(ref, ref) + mean_kernel(gen, gen) - 2 * mean_kernel(ref, gen))
    assert im.cmmd(gen, ref) == pytest.approx(expected, rel=1e-10)
    assert im.cmmd(ref, ref) == pytest.approx(0.0, abs=1e-12)


def test_fid_infinity_removes_the_small_sample_bias() -> None:
    rng = np.random.default_rng(0)
    dim = 16
    ref = rng.standard_normal((50_000, dim)) * 1.5 + 0.1  # reference statistics ≈ exact
    gen = rng.standard_normal((400, dim))
    truth = dim * 0.1**2 + dim * (1 + 2.25 - 2 * 1.5)  # FD(N(0, I), N(0.1, 2.25 I))
    r = im.FeatureSet.from_features(ref)
    g = im.FeatureSet.from_features(gen)
    at_n = im.frechet_distance(g.mu, g.sigma, r.mu, r.sigma)
    value, sizes, fids = im.fid_infinity(gen, r.mu, r.sigma, seed=1)
    assert sizes[0] == 40 and sizes[-1] == 400 and len(sizes) == 15
    assert fids[-1] == pytest.approx(at_n, rel=1e-9)
    assert abs(value - truth) < abs(at_n - truth) / 3


def test_fid_infinity_points_equal_frechet_distance_of_the_same_subsets() -> None:
    gen, ref = random_sets(200, 300, 64, seed=8)  # subsets of 20..200 < 64 use the small Gram matrix
    r = im.FeatureSet.from_features(ref)
    _, sizes, fids = im.fid_infinity(gen, r.mu, r.sigma, seed=5)
    small_ref = im.FeatureSet.from_features(ref[:40])  # N < d: the reference factor from its samples
    metric = image_metric("fid_inf", "inception-v3-tf", small_ref, "o", seed=5)
    (score,) = metric.aggregate(gen).values()
    np.testing.assert_allclose(
        score.score, im.fid_infinity(gen, small_ref.mu, small_ref.sigma, seed=5)[0], rtol=1e-7
    )
    rng = np.random.default_rng(5)
    for size, fid in zip(sizes, fids, strict=True):
        sub = im.FeatureSet.from_features(gen[rng.permutation(len(gen))[:size]])
        assert fid == pytest.approx(im.frechet_distance(sub.mu, sub.sigma, r.mu, r.sigma), rel=1e-8)


def test_scores_carry_signature_counts_and_sample_size_warning() -> None:
    gen, ref = random_sets(30, 40, 64, seed=1)
    g, r = im.FeatureSet.from_features(gen), im.FeatureSet.from_features(ref)
    origin = "backbone:inception-v3-tf|weights:7ff4a85c3a63|resize:pil-bicubic-299"
    with pytest.warns(im.SampleSizeWarning, match="30 images < 64 feature dimensions"):
        score = image_metric("fid", "inception-v3-tf", r, origin).aggregate(gen)["fid"]
    assert score.name == "fid" and score.higher_is_better is False
    assert score.signature.startswith(f"fid|{origin}|n_gen:30|n_ref:40")
    assert score.details == {"n_generated": 30.0, "n_reference": 40.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", im.SampleSizeWarning)
        other = image_metric("fid", "efficientnet-lite0", r, origin).aggregate(gen)["fd_efficientnet-lite0"]
    assert other.name == "fd_efficientnet-lite0" and other.score == score.score
    kid = image_metric("kid", "inception-v3-tf", r, origin, seed=4).score_set(g)["kid"]
    assert kid.details["subset_size"] == 30 and "std" in kid.details
    assert "|subsets:100|subset_size:30|seed:4" in kid.signature
