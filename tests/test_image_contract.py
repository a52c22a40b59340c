"""Image metrics are metrics of the one contract: registered, unpaired rows of per-image features, the
reference in their context, their own intervals, a fast pooled path for compare; backbones are plug-ins;
run folders keep and rebuild the features."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aigc_eval.config import load_suite
from aigc_eval.errors import UserError
from aigc_eval.features import BACKBONE_NAMES, backbones, extract_features, get_backbone
from aigc_eval.features.base import Backbone
from aigc_eval.features.cache import FeatureCache
from aigc_eval.image_scoring import (
    build_image_metrics,
    save_image_features,
    score_image_task,
    score_images,
    stored_image_metrics,
)
from aigc_eval.images import list_image_files, open_image_set
from aigc_eval.metrics import image as im
from aigc_eval.metrics.base import MetricContext
from aigc_eval.metrics.image.base import ImageMetric
from aigc_eval.metrics.image.labels import SampleSizeWarning
from aigc_eval.metrics.registry import IMAGE_METRIC_NAMES, build_metric, metric_class, output_names
from aigc_eval.record import Environment, Provenance, ResultEntry, RunRecord, TaskRecord
from aigc_eval.run_folder import RunFolder

REPO = Path(__file__).resolve().parents[1]


def _sets(n_gen: int, n_ref: int, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32-exact features, so a float32 feature file round-trips them bitwise."""
    rng = np.random.default_rng(seed)
    gen = rng.normal(0.3, 1.0, (n_gen, dim)).astype(np.float32).astype(np.float64)
    return gen, rng.normal(0.0, 1.0, (n_ref, dim)).astype(np.float32).astype(np.float64)


def _metric(
    name: str, ref: np.ndarray | None, origin: str = "o", backbone: str = "inception-v3-tf"
) -> ImageMetric:
    reference = None if ref is None else im.FeatureSet.from_features(ref)
    metric = build_metric(
        name, {"backbone": backbone}, context=MetricContext(reference=reference, origin=origin)
    )
    assert isinstance(metric, ImageMetric)
    return metric


# ---------------------------------------------------------------- the demo's image task


@pytest.fixture(scope="module")
def demo_outcomes() -> tuple[object, dict[str, object]]:
    """The demo suite's image task scored for both rows (the default feature cache, as `make demo`)."""
    suite, base = load_suite(REPO / "suites" / "demo.yaml")
    task = next(t for t in suite.tasks if t.name == "shapes")
    outcomes = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        for row in suite.models:
            if task.name in row.images:
                generated = (base / row.images[task.name]).resolve()
                outcomes[row.name] = score_image_task(
                    generated, (base / task.reference).resolve(), task, device="cpu", seed=suite.seed
                )
    return (suite, task, base), outcomes


def test_demo_image_task_equals_the_math_functions(demo_outcomes: tuple) -> None:
    (suite, task, base), outcomes = demo_outcomes
    assert set(outcomes) == {"faithful-generator", "degraded-generator"}
    network = get_backbone(task.backbone, device="cpu")
    reference = extract_features(network, open_image_set(base / task.reference), FeatureCache()).features
    for row, outcome in outcomes.items():
        generated_images = base / next(r for r in suite.models if r.name == row).images[task.name]
        gen = extract_features(network, open_image_set(generated_images), FeatureCache()).features
        np.testing.assert_array_equal(outcome.generated.features, gen)
        np.testing.assert_array_equal(outcome.reference.features, reference)
        g, r = im.FeatureSet.from_features(gen), im.FeatureSet.from_features(reference)
        kid, kid_std, size = im.kernel_inception_distance(gen, reference, n_subsets=100, seed=suite.seed)
        precision, recall = im.precision_recall(gen, reference, k=3)
        density, coverage = im.density_coverage(gen, reference, k=5)
        expected = {
            "fd_efficientnet-lite0": im.frechet_distance_of_sets(g, r),
            "kd_efficientnet-lite0": kid,
            "precision": precision,
            "recall": recall,
            "density": density,
            "coverage": coverage,
        }
        scores = outcome.scores
        assert list(scores) == list(expected)
        assert {name: s.score for name, s in scores.items()} == expected
        counts = {"n_generated": 100.0, "n_reference": 100.0}
        origin = f"{network.origin}|n_gen:100|n_ref:100"
        fd = scores["fd_efficientnet-lite0"]
        assert fd.signature == f"fd_efficientnet-lite0|{origin}|trace:eigh|dtype:float64"
        assert fd.interval is None and fd.details == {
            **counts,
            "ci_unavailable": "needs 5 disjoint draws of more than 1280 generated images each",
        }
        kd = scores["kd_efficientnet-lite0"]
        degenerate = "every subset is the whole set (n=100 < subset size 1000)"
        assert kd.details == {
            **counts,
            "std": kid_std,
            "subset_size": float(size),
            "degenerate": degenerate,
            "ci_unavailable": degenerate,
        }
        assert kd.signature == (
            f"kd_efficientnet-lite0|{origin}|kernel:poly3-gamma1/d-c1|subsets:100|subset_size:100|seed:0"
        )
        for name in ("precision", "recall", "density", "coverage"):
            k = 3 if name in ("precision", "recall") else 5
            assert scores[name].signature == f"{name}|{origin}|k:{k}|distance:euclidean"
            assert scores[name].details == counts and scores[name].interval is None
        assert outcome.device == "cpu" and outcome.skipped == {"generated": [], "reference": []}


def test_aggregate_of_rows_and_custom_intervals_give_the_scores_of_the_scoring_step(
    demo_outcomes: tuple,
) -> None:
    (suite, task, _), outcomes = demo_outcomes
    outcome = outcomes["faithful-generator"]
    origin = outcome.scores["precision"].signature.split("|", 1)[1].split("|n_gen:")[0]
    built = build_image_metrics(task.image_metrics, task.backbone, suite.seed, outcome.reference, origin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        for metric in built:
            rows = metric.rows_of(outcome.generated)
            scores = metric.aggregate(rows)
            assert metric.signature(rows) == scores[metric.label].signature
            assert metric.custom_intervals(scores, rows, seed=12345) == {
                metric.label: outcome.scores[metric.label]
            }
            assert metric.sample_scores(rows) == {}


# ---------------------------------------------------------------- registry and contract


def test_every_image_metric_is_registered_unpaired_and_described() -> None:
    for name in IMAGE_METRIC_NAMES:
        cls = metric_class(name)
        assert issubclass(cls, ImageMetric) and cls.paired is False and len(cls.description) > 40, name
    assert output_names("fid", {"backbone": "efficientnet-lite0"}) == ("fd_efficientnet-lite0",)
    assert output_names("fid_inf", {"backbone": "clip"}) == ("fd_inf_clip",)
    assert output_names("kid", {}) == ("kid",) and output_names("coverage", {"backbone": "dinov2"}) == (
        "coverage",
    )
    with pytest.raises(TypeError, match="per-image features from a backbone"):
        build_metric("fid").sample_stats(["a"], [["b"]])


def test_pooled_paths_equal_aggregate_of_the_drawn_rows() -> None:
    gen, ref = _sets(30, 30, seed=2)
    pool = np.vstack([gen, _sets(30, 30, seed=3)[0]])
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(pool))[:30]
    for name in ("fid", "kid", "precision", "recall", "density", "coverage"):
        metric = _metric(name, ref)
        pooled = metric.pooled(pool)(idx)[metric.label]
        direct = metric.aggregate(pool[idx])[metric.label].score
        assert pooled == pytest.approx(direct, rel=1e-9, abs=1e-12), name  # KID: subsets are the whole sets
    logits = np.random.default_rng(1).normal(size=(60, 10))
    inception = _metric("is", None)
    assert inception.pooled(logits)(idx)["is"] == inception.aggregate(logits[idx])["is"].score
    with pytest.raises(ValueError, match="no resampling test"):
        _metric("fid_inf", ref).pooled(pool)


@pytest.mark.parametrize(("n", "dim"), [(40, 120), (40, 30), (12, 120)])
def test_pooled_fid_of_draws_with_repeats_is_exact_and_fast(
    n: int, dim: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bootstrap draws repeat rows, and two runs that scored the same images pool each row twice:
    the draws' FID equals the direct computation on the drawn rows (repeats included), through the
    fast trace route, with fewer features than rows and more, and a reference smaller than a draw."""
    from aigc_eval.metrics.image import frechet

    rng = np.random.default_rng(11)
    gen, ref = _sets(n, 30, dim=dim, seed=4)
    pool = np.vstack([gen, gen])  # a rerun scored the same images
    slow: list[int] = []
    route = frechet._procrustes_route
    monkeypatch.setattr(frechet, "_procrustes_route", lambda *a: slow.append(1) or route(*a))
    statistic = _metric("fid", ref).pooled(pool)
    reference = im.FeatureSet.from_features(ref)
    for draw in range(60):
        idx = rng.integers(0, 2 * n, n) if draw % 2 else rng.permutation(2 * n)[:n]
        pooled = statistic(idx)["fid"]
        assert slow == [], (n, dim, draw)
        direct = im.frechet_distance_of_sets(im.FeatureSet.from_features(pool[idx]), reference)
        slow.clear()  # the direct computation on repeated rows may take the slow route
        assert pooled == pytest.approx(direct, rel=1e-10), (n, dim, draw)


def test_small_linear_algebra_runs_on_one_blas_thread() -> None:
    from threadpoolctl import threadpool_info

    from aigc_eval.threads import ONE_BLAS_THREAD_UP_TO, blas_threads_for

    def blas_threads() -> set[int]:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    before = blas_threads()
    with blas_threads_for(100):
        assert blas_threads() == {1}
    assert blas_threads() == before
    with blas_threads_for(ONE_BLAS_THREAD_UP_TO + 1):
        assert blas_threads() == before


def test_pooled_fid_takes_the_stable_route_where_the_projected_traces_cancel() -> None:
    """Features far from the origin (mean 1e6): the old projected nuclear norm subtracted squared
    norms of 1e13 to get traces of 1, and was off by orders of magnitude; the stable route is not."""
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(40, 4)) + 1e6
    pool = np.vstack([ref + 1e-4 * rng.normal(size=ref.shape), rng.normal(size=(40, 4)) + 1e6])
    reference = im.FeatureSet.from_features(ref)
    idx = np.arange(40)
    expected = im.frechet_distance_of_sets(im.FeatureSet.from_features(pool[idx]), reference)
    pooled = _metric("fid", ref).pooled(pool)(idx)["fid"]
    assert pooled == pytest.approx(expected, rel=1e-6) and pooled >= 0

    # The formula ResampledStatistic used before, on the same draw.
    x, factor = pool[idx], np.linalg.cholesky(reference.sigma)
    mu = x.mean(axis=0)
    trace = float(((x * x).sum(axis=1).sum() - 40 * (mu @ mu)) / 39)
    projected = x @ factor
    projected = (projected - projected.mean(axis=0)) / np.sqrt(39)
    nuclear = float(np.sqrt(np.clip(np.linalg.eigvalsh(projected.T @ projected), 0.0, None)).sum())
    diff = mu - reference.mu
    old = max(float(diff @ diff) + trace + float(np.trace(reference.sigma)) - 2 * nuclear, 0.0)
    assert abs(old - expected) > 10 * expected


# ---------------------------------------------------------------- run folders


def _image_run(tmp_path: Path, with_features: bool = True) -> tuple[RunFolder, RunRecord, dict]:
    """A run folder with one image row scored from feature files (no network), as a run writes it."""
    gen, ref = _sets(40, 50)
    meta = {"meta_backbone": "inception-v3-tf", "meta_weights_sha256": "ab" * 32}
    meta |= {"meta_preprocessing": "p", "meta_resize": "pil-bicubic-299"}
    arrays = {k: np.array(v) for k, v in meta.items()}
    np.savez(tmp_path / "gen.npz", features=gen, **arrays)
    np.savez(tmp_path / "ref.npz", features=ref, **arrays)
    names = ["fid", "kid", "precision", "recall", "fid_inf"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        outcome = score_images(tmp_path / "gen.npz", tmp_path / "ref.npz", names, cache_dir=False, seed=7)
    folder = RunFolder.create(tmp_path / "out", "img", "hash")
    files = (
        save_image_features(folder, "gen", "shapes", outcome, write_reference=True) if with_features else None
    )
    entry = ResultEntry(
        model="gen",
        task="shapes",
        n=40,
        metrics={name: score.to_record() for name, score in outcome.scores.items()},
        features=files,
    )
    suite = {"name": "img", "seed": 7, "tasks": [{"name": "shapes", "kind": "image", "image_metrics": names}]}
    record = RunRecord(
        run_id=folder.path.name,
        suite_name="img",
        config_hash="hash",
        finished="now",
        suite=suite,
        environment=Environment(python="3", platform="p"),
        models={"gen": Provenance(backend="images")},
        tasks={"shapes": TaskRecord(kind="image", path="ref.npz", content_hash="h", n=50)},
        results=[entry],
    )
    folder.write_record(record)
    return folder, record, {"gen": gen, "ref": ref, "outcome": outcome}


def test_feature_files_keep_their_names_and_contents(tmp_path: Path) -> None:
    folder, record, sets = _image_run(tmp_path)
    entry = record.entry("gen", "shapes")
    assert (entry.features.generated, entry.features.reference) == (
        "features/gen__shapes.npz",
        "features/shapes__reference.npz",
    )
    generated = folder.load_arrays(entry.features.generated)
    assert set(generated) == {"features"} and generated["features"].dtype == np.float32
    np.testing.assert_array_equal(generated["features"], sets["gen"])
    np.testing.assert_array_equal(folder.load_arrays(entry.features.reference)["features"], sets["ref"])


def test_stored_image_metrics_rebuild_rows_reference_and_signatures(tmp_path: Path) -> None:
    folder, _, sets = _image_run(tmp_path)
    stored = stored_image_metrics(RunFolder.open(folder.path), folder.read_record(), "gen", "shapes")
    by_name = {s.metric.name: s for s in stored}
    assert list(by_name) == ["fid", "kid", "precision", "recall", "fid_inf"]
    scores = sets["outcome"].scores
    for name in ("fid", "kid", "precision", "recall"):
        entry = by_name[name]
        assert entry.ids is None and entry.unavailable == {}
        np.testing.assert_array_equal(entry.rows, sets["gen"])
        np.testing.assert_array_equal(entry.metric.reference.features, sets["ref"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SampleSizeWarning)
            rebuilt = entry.metric.aggregate(entry.rows)[name]
            with_intervals = entry.metric.custom_intervals({name: rebuilt}, entry.rows, seed=0)[name]
        assert rebuilt.score == scores[name].score
        assert with_intervals == scores[name]  # signature (origin and seed too), details and interval
    assert by_name["fid_inf"].unavailable == {
        "fid_inf": "fid_inf has no resampling test (too costly to refit per resample)"
    }


def test_runs_without_saved_features_are_unavailable_with_the_reason(tmp_path: Path) -> None:
    folder, record, _ = _image_run(tmp_path, with_features=False)
    stored = stored_image_metrics(folder, record, "gen", "shapes")
    assert all("keeps no image features for this row" in s.unavailable[s.metric.label] for s in stored)
    (tmp_path / "second").mkdir()
    folder, record, _ = _image_run(tmp_path / "second")
    folder.file("features", "shapes__reference.npz").unlink()
    stored = stored_image_metrics(folder, record, "gen", "shapes")
    assert "features/shapes__reference.npz missing" in stored[0].unavailable["fid"]


# ---------------------------------------------------------------- backbones as plug-ins


def test_a_backbone_registered_in_one_class_scores_an_image_set(tmp_path: Path) -> None:
    @backbones.register("toy-mean-colour")
    class ToyMeanColour(Backbone):
        """Per-channel mean and std of each image: a backbone in one class, registered here."""

        name = "toy-mean-colour"
        feature_dim = 6
        weights_sha256 = "0" * 64
        resize = "none"
        preprocessing = "mean-std"
        batch_size = 8

        def __init__(self, path: str | None = None, device: str = "auto") -> None:
            super().__init__(device)

        def _load(self) -> None:
            pass

        def _forward(self, batch: list[np.ndarray]) -> tuple[torch.Tensor, None]:
            stats = [np.concatenate([b.mean(axis=(0, 1)), b.std(axis=(0, 1))]) for b in batch]
            return torch.tensor(np.array(stats), dtype=torch.float32), None

    try:
        rng = np.random.default_rng(0)
        folders = {}
        for name, low in (("gen", 0), ("ref", 40)):
            folders[name] = tmp_path / name
            folders[name].mkdir()
            for i in range(12):
                pixels = rng.integers(low, low + 200, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folders[name] / f"{i:02d}.png")
        outcome = score_images(
            folders["gen"], folders["ref"], ["fid", "precision"], "toy-mean-colour", cache_dir=False
        )
        feature_of = {
            name: np.array(
                [
                    np.concatenate([a.mean(axis=(0, 1)), a.std(axis=(0, 1))])
                    for a in (np.asarray(Image.open(p), dtype=np.float64) for p in list_image_files(folder))
                ]
            ).astype(np.float32)
            for name, folder in folders.items()
        }
        gen, ref = (im.FeatureSet.from_features(feature_of[n].astype(np.float64)) for n in ("gen", "ref"))
        assert outcome.scores["fd_toy-mean-colour"].score == pytest.approx(
            im.frechet_distance_of_sets(gen, ref), rel=1e-9
        )
        assert outcome.scores["precision"].score == im.precision_recall(gen.features, ref.features)[0]
        assert outcome.scores["precision"].signature.startswith(
            "precision|backbone:toy-mean-colour|weights:000000000000"
        )
        with pytest.raises(UserError, match=r"needs class logits.*\(efficientnet-lite0\)"):
            score_images(folders["gen"], None, ["is"], "toy-mean-colour", cache_dir=False)
    finally:
        backbones.unregister("toy-mean-colour")
    with pytest.raises(UserError, match="unknown backbone 'toy-mean-colour'; known backbones: clip, dinov2"):
        get_backbone("toy-mean-colour")


def test_backbone_names_import_without_torch() -> None:
    code = "import sys, aigc_eval.features as f; print(f.BACKBONE_NAMES, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{BACKBONE_NAMES} False"
    assert set(BACKBONE_NAMES) <= set(backbones.names())
    assert {name: backbones.get(name).has_logits for name in BACKBONE_NAMES} == {
        "inception-v3-tf": False,
        "efficientnet-lite0": True,
        "clip": False,
        "dinov2": False,
    }


def test_list_image_files_is_the_scoring_order_without_reading_the_images(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/2.png", "a.PNG", "c.jpg", "notes.txt", "b/1.webp"):
        (tmp_path / name).write_bytes(b"x")
    files = list_image_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["a.PNG", "b/1.webp", "b/2.png", "c.jpg"]
    assert list(open_image_set(tmp_path).files) == files
    listing = tmp_path / "list.txt"
    listing.write_text("# picked\nc.jpg\n\na.PNG\n", encoding="utf-8")
    assert list_image_files(listing) == [tmp_path / "c.jpg", tmp_path / "a.PNG"]
    (tmp_path / "x.npz").write_bytes(b"x")
    with pytest.raises(UserError, match="is precomputed statistics, not images"):
        list_image_files(tmp_path / "x.npz")
