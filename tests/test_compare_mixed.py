"""The regression gate on suites that mix text rows and image rows, as the demo does: a row is compared on
the tasks it ran, image metrics get a permutation test on the generated images' saved features, a real
FID regression (degraded vs faithful images) is flagged and identical or same-generator runs are not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from aigc_eval.cli import main
from aigc_eval.compare import NO_CHANGE, NOT_TESTED, REGRESSION, compare_runs
from aigc_eval.image_scoring import ResampledStatistic
from aigc_eval.metrics import image as im

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "suites" / "data" / "images"
N_IMAGES = 24


def _list_file(path: Path, folder: Path, start: int = 0) -> Path:
    files = sorted(folder.glob("*.png"))[start : start + N_IMAGES]
    path.write_text("".join(f"{f}\n" for f in files), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """24-image slices of the demo's image sets, with one feature cache for the whole module."""
    folder = tmp_path_factory.mktemp("sets")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIGC_EVAL_CACHE_DIR", str(folder / "cache"))
        yield {
            "reference": _list_file(folder / "reference.txt", IMAGES / "reference"),
            "faithful": _list_file(folder / "faithful.txt", IMAGES / "gen-faithful"),
            "faithful-other": _list_file(folder / "faithful-other.txt", IMAGES / "gen-faithful", N_IMAGES),
            "degraded": _list_file(folder / "degraded.txt", IMAGES / "gen-degraded"),
        }


def _trimmed_demo(tmp_path: Path, sets: dict[str, Path]) -> Path:
    """suites/demo.yaml cut down: one text row, both image rows, one text task and the image task."""
    suite = yaml.safe_load((REPO / "suites" / "demo.yaml").read_text(encoding="utf-8"))
    suite["models"] = [m for m in suite["models"] if m["name"] == "demo-greedy" or m.get("backend")]
    for row in suite["models"]:
        if row.get("backend") == "images":
            row["images"] = {
                "shapes": str(sets["faithful" if row["name"].startswith("faithful") else "degraded"])
            }
        else:
            row["path"] = str(REPO / "suites" / row["path"])
    suite["tasks"] = [t for t in suite["tasks"] if t["name"] in ("en", "shapes")]
    for task in suite["tasks"]:
        if task["name"] == "en":
            task["data"] = str(REPO / "suites" / task["data"])
        else:
            task["reference"] = str(sets["reference"])
    suite["metrics"] = ["bleu", "chrf"]
    suite["regression"]["n_trials"] = 300
    suite["intervals"] = {"n_resamples": 200}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(suite, allow_unicode=True), encoding="utf-8")
    return path


def _image_suite(tmp_path: Path, name: str, generated: Path, reference: Path) -> Path:
    suite = {
        "name": "gen",
        "models": [{"name": "gen", "backend": "images", "images": {"shapes": str(generated)}}],
        "tasks": [
            {
                "name": "shapes",
                "kind": "image",
                "reference": str(reference),
                "backbone": "efficientnet-lite0",
                "image_metrics": ["fid", "kid", "precision", "recall", "density", "coverage"],
            }
        ],
        "metrics": ["bleu"],
        "intervals": {"n_resamples": 200},
        "regression": {"n_trials": 300},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    return path


def _run(suite: Path, out: Path, *extra: str) -> tuple[int, Path]:
    code = main(["run", str(suite), "--output-dir", str(out), "--quiet", *extra])
    return code, max((out / yaml.safe_load(suite.read_text())["name"]).iterdir())


def test_demo_suite_compares_with_itself_and_as_a_baseline(
    tmp_path: Path, sets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    suite = _trimmed_demo(tmp_path, sets)
    code, run = _run(suite, tmp_path / "out", "--limit", "8")
    assert code == 0
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    image_entry = next(e for e in results["results"] if e["model"] == "faithful-generator")
    assert image_entry["n"] == N_IMAGES and image_entry["device"] == "cpu"
    assert (run / image_entry["features"]["generated"]).is_file()
    assert (run / image_entry["features"]["reference"]).is_file()

    report = tmp_path / "compare.json"
    assert main(["compare", str(run), str(run), "--json", str(report)]) == 0
    entries = json.loads(report.read_text(encoding="utf-8"))["entries"]
    images = [e for e in entries if e["task"] == "shapes"]
    # Both image rows on the image task, each of its 6 metrics tested; the text row only on "en".
    assert {e["current_model"] for e in images} == {"faithful-generator", "degraded-generator"}
    assert len(images) == 12 and all(e["p_value"] == 1.0 and e["verdict"] == NO_CHANGE for e in images)
    assert all(e["method"].startswith("permutation test") for e in images)
    assert {(e["current_model"], e["task"]) for e in entries if e["task"] != "shapes"} == {
        ("demo-greedy", "en")
    }

    capsys.readouterr()
    code, second = _run(suite, tmp_path / "out", "--limit", "8", "--baseline", str(run))
    assert code == 0 and second != run
    assert "No regression" in capsys.readouterr().out


@pytest.fixture(scope="module")
def image_runs(tmp_path_factory: pytest.TempPathFactory, sets: dict[str, Path]) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("image_runs")
    runs = {}
    for name in ("faithful", "faithful-other", "degraded"):
        suite = _image_suite(folder, name, sets[name], sets["reference"])
        code, runs[name] = _run(suite, folder / name)
        assert code == 0
    return runs


def test_degraded_images_are_an_fid_regression(image_runs: dict[str, Path]) -> None:
    comparison = compare_runs(image_runs["faithful"], image_runs["degraded"])
    fid = next(e for e in comparison.entries if e.metric == "fd_efficientnet-lite0")
    assert fid.verdict == REGRESSION and fid.delta > 0 and fid.higher_is_better is False
    assert fid.p_value == pytest.approx(1 / 301)  # no reshuffle of the pooled images is as extreme
    assert 0 < fid.ci_low < fid.ci_high  # the bootstrap interval of the delta excludes zero
    coverage = next(e for e in comparison.entries if e.metric == "coverage")
    assert coverage.verdict == REGRESSION and coverage.ci_low is None  # no bootstrap for k-NN coverage


def test_other_images_of_the_same_generator_are_not_flagged(
    image_runs: dict[str, Path], tmp_path: Path
) -> None:
    comparison = compare_runs(image_runs["faithful"], image_runs["faithful-other"])
    assert [e.verdict for e in comparison.entries] == [NO_CHANGE] * 6
    assert all(e.p_value is not None and e.p_value > 0.05 for e in comparison.entries)
    assert main(["compare", str(image_runs["faithful"]), str(image_runs["degraded"])]) == 1


def test_runs_without_saved_features_are_not_tested_with_the_reason(
    image_runs: dict[str, Path], tmp_path: Path
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    results = json.loads((image_runs["faithful"] / "results.json").read_text(encoding="utf-8"))
    for entry in results["results"]:
        entry.pop("features")
    (old / "results.json").write_text(json.dumps(results), encoding="utf-8")
    for name in ("samples.jsonl", "stats.jsonl"):
        (old / name).write_text("", encoding="utf-8")
    comparison = compare_runs(old, image_runs["faithful"])
    assert all(e.verdict == NOT_TESTED and "keeps no image features" in e.note for e in comparison.entries)


def test_resampled_statistics_equal_the_metrics_on_the_drawn_set() -> None:
    rng = np.random.default_rng(1)
    pooled = rng.normal(0.2, 1.0, size=(60, 12))
    reference = im.FeatureSet.from_features(rng.normal(0.0, 1.0, size=(30, 12)))
    draw = rng.permutation(60)[:30]
    chosen = pooled[draw]
    expected = {
        "fid": im.frechet_distance_of_sets(im.FeatureSet.from_features(chosen), reference),
        "kid": im.kernel_inception_distance(chosen, reference.features, n_subsets=3, seed=0)[0],
        "precision": im.precision_recall(chosen, reference.features)[0],
        "recall": im.precision_recall(chosen, reference.features)[1],
        "density": im.density_coverage(chosen, reference.features)[0],
        "coverage": im.density_coverage(chosen, reference.features)[1],
    }
    for metric, value in expected.items():
        assert ResampledStatistic(metric, pooled, reference, None)(draw) == pytest.approx(value, rel=1e-9)
    # A stats-only reference (pytorch-fid's mu/sigma) still gives FID through its covariance factor.
    stats_only = im.FeatureSet(reference.mu, reference.sigma, None)
    assert ResampledStatistic("fid", pooled, stats_only, None)(draw) == pytest.approx(
        expected["fid"], rel=1e-9
    )
