"""FID on hard inputs against a 50-digit mpmath reference: ill-conditioned, close, rank-deficient, 1-d.

Also the input checks on ``.npz`` statistics (non-PSD, asymmetric, bad shapes) and
strict JSON through the real ``aigc-eval score`` CLI path.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import mpmath as mp
import numpy as np
import pytest
from scipy import linalg

from aigc_eval.cli import main
from aigc_eval.errors import UserError
from aigc_eval.images import load_stats
from aigc_eval.metrics import image as im
from aigc_eval.metrics.base import MetricContext
from aigc_eval.metrics.image.exact import accurate_product
from aigc_eval.metrics.registry import build_metric

CONDITIONS = [1.0, 1e3, 1e6, 1e9, 1e12]
DIM = 8


def _mp_psd_sqrt(matrix: mp.matrix) -> mp.matrix:
    eigenvalues, vectors = mp.eigsy(matrix)
    out = mp.zeros(matrix.rows, matrix.rows)
    for k in range(matrix.rows):
        column = vectors[:, k]
        out += mp.sqrt(max(eigenvalues[k], 0)) * (column * column.T)
    return out


def reference_fid(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1^½ Σ2 Σ1^½) on the exact float64 inputs, 50 digits."""
    with mp.workdps(50):
        s1, s2 = mp.matrix(sigma1.tolist()), mp.matrix(sigma2.tolist())
        root = _mp_psd_sqrt(s1)
        eigenvalues, _ = mp.eigsy(root * s2 * root)
        trace_sqrt = sum(mp.sqrt(max(x, 0)) for x in eigenvalues)
        mean = sum((mp.mpf(float(a)) - mp.mpf(float(b))) ** 2 for a, b in zip(mu1, mu2, strict=True))
        traces = sum(s1[i, i] + s2[i, i] for i in range(s1.rows))
        return float(mean + traces - 2 * trace_sqrt)


def reference_fid_of_features(x1: np.ndarray, x2: np.ndarray) -> float:
    """The same reference with the sample covariances formed exactly from the float64 features."""
    with mp.workdps(50):
        stats = []
        for x in (x1, x2):
            rows = [[mp.mpf(float(v)) for v in row] for row in x]
            n, d = len(rows), len(rows[0])
            mean = [sum(r[j] for r in rows) / n for j in range(d)]
            centred = mp.matrix([[r[j] - mean[j] for j in range(d)] for r in rows])
            stats.append((mean, centred.T * centred / (n - 1)))
        (m1, s1), (m2, s2) = stats
        root = _mp_psd_sqrt(s1)
        eigenvalues, _ = mp.eigsy(root * s2 * root)
        trace_sqrt = sum(mp.sqrt(max(x, 0)) for x in eigenvalues)
        mean_part = sum((a - b) ** 2 for a, b in zip(m1, m2, strict=True))
        traces = sum(s1[i, i] + s2[i, i] for i in range(s1.rows))
        return float(mean_part + traces - 2 * trace_sqrt)


def graded_covariance(condition: float, seed: int) -> np.ndarray:
    """Correlated features whose variances span ``condition`` (one feature up to 1e12 times another)."""
    rng = np.random.default_rng(seed)
    correlation = np.corrcoef(rng.standard_normal((DIM, 3 * DIM)))
    scale = np.sqrt(np.logspace(0, np.log10(condition), DIM))[rng.permutation(DIM)]
    sigma = scale[:, None] * correlation * scale[None, :]
    return (sigma + sigma.T) / 2


def rotated_covariance(condition: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rotation = linalg.qr(rng.standard_normal((DIM, DIM)))[0]
    sigma = rotation @ np.diag(np.logspace(0, np.log10(condition), DIM)) @ rotation.T
    return (sigma + sigma.T) / 2


def _relative_error(value: float, expected: float) -> float:
    return abs(value - expected) / abs(expected)


def _pairs(sigma: np.ndarray, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Different, close (tiny relative change of every entry) and mean-only pairs around ``sigma``."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(DIM)
    noise = rng.standard_normal((DIM, DIM)) * 1e-3
    close = sigma + (noise @ noise.T) * np.sqrt(np.outer(np.diag(sigma), np.diag(sigma))) / DIM
    other = graded_covariance(float(np.diag(sigma).max() / np.diag(sigma).min()), seed + 1)
    return {
        "different": (mu, sigma, rng.standard_normal(DIM), other),
        "close": (mu, sigma, mu + 1e-4, (close + close.T) / 2),
        "mean-only": (mu, sigma, mu + 1e-5, sigma.copy()),
        "shifted-by-identity": (mu, sigma, mu.copy(), sigma + 1e-3 * np.eye(DIM)),
    }


@pytest.mark.parametrize("condition", CONDITIONS)
def test_frechet_distance_is_accurate_and_symmetric_on_graded_covariances(condition: float) -> None:
    for case, (mu1, s1, mu2, s2) in _pairs(graded_covariance(condition, seed=3), seed=7).items():
        expected = reference_fid(mu1, s1, mu2, s2)
        forward, backward = im.frechet_distance(mu1, s1, mu2, s2), im.frechet_distance(mu2, s2, mu1, s1)
        assert forward == backward, case  # bitwise: the arguments are put in a canonical order
        assert expected > 0 and forward > 0, case
        assert _relative_error(forward, expected) < 1e-6, (case, forward, expected)


@pytest.mark.parametrize("condition", CONDITIONS)
def test_frechet_distance_is_accurate_and_symmetric_on_rotated_covariances(condition: float) -> None:
    """Spectra up to 1e12 in random directions: float64 eigenvectors alone fix the small eigenvalues
    only to ε·λmax (``shifted-by-identity`` was 1e-4..0.4 off), so the factors are refined."""
    for case, (mu1, s1, mu2, s2) in _pairs(rotated_covariance(condition, seed=5), seed=9).items():
        expected = reference_fid(mu1, s1, mu2, s2)
        forward, backward = im.frechet_distance(mu1, s1, mu2, s2), im.frechet_distance(mu2, s2, mu1, s1)
        assert forward == backward and forward > 0, case
        assert _relative_error(forward, expected) < 1e-6, (case, forward, expected)


def test_accurate_product_is_exact_where_float64_cancels() -> None:
    """The refinement's Vᵀ Σ V: entries of size 1 from terms of size 1e12, to ~1e-15 relative."""
    sigma = rotated_covariance(1e12, seed=1)
    vectors = linalg.eigh(sigma)[1]
    high, low = accurate_product(vectors.T, list(accurate_product(sigma, [vectors])))
    with mp.workdps(60):
        exact = mp.matrix(vectors.tolist()).T * mp.matrix(sigma.tolist()) * mp.matrix(vectors.tolist())
        expected = np.array([[float(exact[i, j]) for j in range(DIM)] for i in range(DIM)])
    got = high + low
    assert abs(got[0, 0] - expected[0, 0]) <= 1e-14 * abs(expected[0, 0])  # the smallest eigenvalue, ~1
    assert np.abs(got - expected).max() <= 1e-14 * np.abs(np.diag(expected)).min()
    assert np.abs(vectors.T @ sigma @ vectors - expected).max() > 1e-6  # what plain float64 gives


def test_old_formula_failed_these_inputs() -> None:
    """The plain trace formula on the same inputs: cancellation leaves no correct digit, and 0 is reported."""
    mu1, s1, mu2, s2 = _pairs(graded_covariance(1e12, seed=3), seed=7)["mean-only"]
    diff = mu1 - mu2
    eigenvalues = linalg.eigvals(s1 @ s2)
    naive = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eigenvalues).real.sum()
    expected = reference_fid(mu1, s1, mu2, s2)
    assert _relative_error(naive, expected) > 1e-2
    assert im.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("n1", "n2"), [(5, 6), (4, 12), (12, 5)])
def test_frechet_distance_of_sets_with_fewer_samples_than_dimensions(n1: int, n2: int) -> None:
    """N < d: rank-deficient covariances; the sets are factored from their samples, exactly."""
    rng = np.random.default_rng(n1 * 100 + n2)
    scale = np.sqrt(np.logspace(0, 6, 10))
    x1 = rng.standard_normal((n1, 10)) * scale
    x2 = rng.standard_normal((n2, 10)) * scale + 0.01
    a, b = im.FeatureSet.from_features(x1), im.FeatureSet.from_features(x2)
    expected = reference_fid_of_features(x1, x2)
    forward, backward = im.frechet_distance_of_sets(a, b), im.frechet_distance_of_sets(b, a)
    assert forward == backward
    assert _relative_error(forward, expected) < 1e-6
    close = im.FeatureSet.from_features(x1 + 1e-6 * rng.standard_normal(x1.shape))
    expected_close = reference_fid_of_features(x1, close.features)
    assert expected_close > 0
    assert _relative_error(im.frechet_distance_of_sets(a, close), expected_close) < 1e-6


def test_close_but_different_sets_are_never_zero() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 6)) * np.sqrt(np.logspace(0, 12, 6))
    y = x.copy()
    y[0, 0] += 1e-3  # one value of one image changed
    a, b = im.FeatureSet.from_features(x), im.FeatureSet.from_features(y)
    expected = reference_fid_of_features(x, y)
    assert expected > 0
    value = im.frechet_distance_of_sets(a, b)
    assert value > 0 and _relative_error(value, expected) < 1e-6


def test_one_dimensional_features_and_scalar_statistics(tmp_path: Path) -> None:
    """1-d FID is (μ1−μ2)² + (σ1−σ2)²; mu/sigma may be scalars or 1-element arrays."""
    rng = np.random.default_rng(4)
    x1, x2 = rng.normal(1.0, 2.0, (40, 1)), rng.normal(0.5, 3.0, (30, 1))
    expected = (x1.mean() - x2.mean()) ** 2 + (x1.std(ddof=1) - x2.std(ddof=1)) ** 2
    a, b = im.FeatureSet.from_features(x1), im.FeatureSet.from_features(x2)
    assert a.sigma.shape == (1, 1)
    assert im.frechet_distance_of_sets(a, b) == pytest.approx(expected, rel=1e-12)
    assert im.frechet_distance(1.0, 4.0, np.array([3.0]), np.array([9.0])) == pytest.approx(4.0 + 1.0)
    assert im.frechet_distance(np.array([1.0]), np.array([[4.0]]), 3.0, 9.0) == pytest.approx(5.0)
    np.savez(tmp_path / "gen.npz", features=x1)
    np.savez(tmp_path / "ref.npz", mu=np.float64(x2.mean()), sigma=np.float64(x2.var(ddof=1)))
    stats, _ = load_stats(tmp_path / "ref.npz")
    assert stats.mu.shape == (1,) and stats.sigma.shape == (1, 1)
    out = tmp_path / "out.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = _score_json(tmp_path / "gen.npz", tmp_path / "ref.npz", out)
    assert code == 0
    assert json.loads(out.read_text())["fid"]["score"] == pytest.approx(expected, rel=1e-12)


def _raise_on_constant(name: str) -> float:
    raise ValueError(f"non-strict JSON constant {name}")


def _score_json(gen: Path, ref: Path, out: Path) -> int:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["score", "--metric", "fid", "--generated", str(gen), "--reference", str(ref), "--json"])
    out.write_text(buffer.getvalue())
    return code


def test_pytorch_fid_statistics_give_strict_json(tmp_path: Path) -> None:
    """A mu/sigma .npz has no image count: details say None, never NaN, and the JSON is strict."""
    rng = np.random.default_rng(6)
    gen, ref = rng.standard_normal((40, 4)), rng.standard_normal((50, 4)) + 0.2
    np.savez(tmp_path / "gen.npz", features=gen)
    np.savez(tmp_path / "pfid.npz", mu=ref.mean(0), sigma=np.cov(ref, rowvar=False))
    out = tmp_path / "out.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _score_json(tmp_path / "gen.npz", tmp_path / "pfid.npz", out) == 0
    payload = json.loads(out.read_text(), parse_constant=_raise_on_constant)
    details = payload["fid"]["details"]
    assert details["n_generated"] == 40 and details.get("n_reference") is None
    a = im.FeatureSet.from_features(gen)
    metric = build_metric("fid", context=MetricContext(reference=a, origin="o"))
    (score,) = metric.score_set(im.FeatureSet(a.mu, a.sigma, None)).values()
    assert score.details == {"n_generated": None, "n_reference": 40.0}


@pytest.mark.parametrize(
    ("sigma", "message"),
    [
        (np.diag([1.0, 2.0, -0.5]), "not positive semi-definite"),
        (np.array([[1.0, 0.5, 0.0], [0.1, 1.0, 0.0], [0.0, 0.0, 1.0]]), "not symmetric"),
    ],
)
def test_non_covariance_sigma_is_a_user_error_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sigma: np.ndarray, message: str
) -> None:
    np.savez(tmp_path / "gen.npz", features=np.random.default_rng(0).standard_normal((20, 3)))
    np.savez(tmp_path / "bad_ref.npz", mu=np.zeros(3), sigma=sigma)
    code = main(
        ["score", "--metric", "fid", "--generated", str(tmp_path / "gen.npz"), "--reference",
         str(tmp_path / "bad_ref.npz")]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "bad_ref.npz" in err and "'sigma'" in err and message in err and "np.cov" in err
    with pytest.raises(ValueError, match=message):
        im.frechet_distance(np.zeros(3), sigma, np.zeros(3), np.eye(3))


def test_rounding_level_asymmetry_and_negative_eigenvalues_are_accepted() -> None:
    """np.cov of N < d features is PSD only up to rounding: that must still score."""
    x = np.random.default_rng(8).standard_normal((5, 30)) * 1e3
    sigma = np.cov(x, rowvar=False)
    assert linalg.eigvalsh(sigma)[0] < 0  # rounding noise in the null space
    wobbly = sigma.copy()
    wobbly[0, 1] = np.nextafter(wobbly[0, 1], np.inf)
    assert im.covariance_problem(sigma) is None and im.covariance_problem(wobbly) is None
    assert im.frechet_distance(x.mean(0), wobbly, x.mean(0) + 1, sigma) > 0


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"mu": np.zeros(3), "sigma": np.eye(2)}, r"'mu' has shape \(3,\) and 'sigma' \(2, 2\)"),
        ({"mu": np.zeros((3, 1)), "sigma": np.eye(3)}, r"'mu' has shape \(3, 1\).*need \(d,\)"),
        ({"mu": np.zeros(2), "sigma": np.array([[1.0, np.inf], [np.inf, 1.0]])}, "'sigma' contains NaN"),
        ({"mu": np.array(["a", "b"]), "sigma": np.eye(2)}, "'mu' must be numeric"),
    ],
)
def test_npz_statistics_are_validated_by_key(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "stats.npz", **arrays)
    with pytest.raises(UserError, match=rf"stats\.npz: {message}"):
        load_stats(tmp_path / "stats.npz")


def test_extract_features_names_skipped_images_relative_to_the_set(tmp_path: Path) -> None:
    """Both the fresh extraction and the cache hit name the skipped files by their path inside the set."""
    from PIL import Image

    from aigc_eval.features import extract_features
    from aigc_eval.features.cache import FeatureCache
    from aigc_eval.images import open_image_set
    from tests.test_image_features import MeanColour

    folder = tmp_path / "set"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "sub" / "bad.png").write_bytes(b"broken")
    (folder / "zz.png").write_bytes(b"broken too")
    cache = FeatureCache(tmp_path / "cache")
    for expected_hit in (False, True):
        with pytest.warns(UserWarning, match=r"skipped 2 unreadable"):
            result = extract_features(MeanColour(), open_image_set(folder), cache, skip_corrupt=True)
        assert result.cache_hit is expected_hit
        assert result.skipped_names == ("sub/bad.png", "zz.png")
        assert len(result.features) == 3
    listed = tmp_path / "list.txt"
    listed.write_text("set/0.png\nset/zz.png\n")
    with pytest.warns(UserWarning, match=r"skipped 1"):
        result = extract_features(MeanColour(), open_image_set(listed), None, skip_corrupt=True)
    assert result.skipped_names == ("set/zz.png",)
