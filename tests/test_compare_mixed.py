"""The regression gate on a suite that mixes text rows and image rows, on copies of a real demo run: a row
is compared on the tasks it ran, image metrics get a permutation test over the generated images' saved
feature rows (through the same code as text metrics), a real FID regression (degraded vs faithful images)
is flagged, identical runs are not, and one correction spans text and image p-values."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import aigc_eval
from aigc_eval.config import Regression
from aigc_eval.gate import NO_CHANGE, NOT_TESTED, REGRESSION, UNPAIRED_TEST, compare_runs
from aigc_eval.image_scoring import stored_image_metrics
from aigc_eval.run_folder import RunFolder
from aigc_eval.stats import holm

REPO = Path(__file__).resolve().parents[1]

IMAGE_OUTPUTS = [
    "fd_efficientnet-lite0",
    "kd_efficientnet-lite0",
    "precision",
    "recall",
    "density",
    "coverage",
]
FAST = Regression(n_trials=300)  # enough trials that 6 Holm-corrected tests can reach alpha


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two copies of a demo run (text trimmed to 4 examples, all images), with 100 bootstrap resamples
    instead of 1,000 (keeps the file fast)."""
    folder = tmp_path_factory.mktemp("demo")
    run = aigc_eval.run(REPO / "suites" / "demo.yaml", output_dir=folder / "reports", limit=4)
    copies = shutil.copytree(run.path, folder / "a"), shutil.copytree(run.path, folder / "b")
    for path in copies:
        run = RunFolder.open(path)
        record = run.read_record()
        suite = {**record.suite, "intervals": {**record.suite["intervals"], "n_resamples": 100}}
        run.write_record(record.model_copy(update={"suite": suite}))
    return copies


def test_demo_run_compares_with_its_copy(demo_runs: tuple[Path, Path]) -> None:
    comparison = compare_runs(*demo_runs, FAST)
    images = [e for e in comparison.entries if e.task == "shapes"]
    # Both image rows on the image task, each of its 6 metrics tested; text rows only on text tasks.
    assert {e.current_model for e in images} == {"faithful-generator", "degraded-generator"}
    assert [e.metric for e in images] == IMAGE_OUTPUTS * 2
    assert all(e.p_value == 1.0 and e.verdict == NO_CHANGE and e.delta == 0 for e in images)
    assert all(e.method == f"{UNPAIRED_TEST} (100 + 100 generated images)" for e in images)
    assert {e.task for e in comparison.entries if e.current_model.startswith("demo")} == {"en", "zh"}
    assert len(comparison.entries) == 48 + 12 and not comparison.has_regression


def test_degraded_images_are_an_fid_regression(demo_runs: tuple[Path, Path]) -> None:
    comparison = compare_runs(*demo_runs, FAST, pairs=[("faithful-generator", "degraded-generator")])
    fid = next(e for e in comparison.entries if e.metric == "fd_efficientnet-lite0")
    assert fid.verdict == REGRESSION and fid.delta > 0 and fid.higher_is_better is False
    assert fid.p_value == pytest.approx(1 / 301)  # no reshuffle of the pooled images is as extreme
    assert 0 < fid.ci_low < fid.ci_high  # the bootstrap interval of the delta excludes zero
    coverage = next(e for e in comparison.entries if e.metric == "coverage")
    assert coverage.verdict == REGRESSION and coverage.ci_low is None  # no bootstrap for k-NN coverage


def test_one_correction_spans_text_and_image_p_values(demo_runs: tuple[Path, Path]) -> None:
    pairs = [("demo-greedy", "demo-sample"), ("faithful-generator", "degraded-generator")]
    by = {
        c: compare_runs(*demo_runs, FAST.model_copy(update={"correction": c}), pairs)
        for c in ("none", "holm")
    }
    raw = [e.p_value for e in by["none"].entries]
    assert {e.task for e in by["none"].entries} == {"en", "zh", "shapes"} and None not in raw
    assert [e.p_corrected for e in by["holm"].entries] == holm(raw)


def test_image_rows_pool_to_their_recorded_scores(demo_runs: tuple[Path, Path]) -> None:
    """The contract compare relies on: an image metric's pooled statistic over all of a run's rows is the
    score the run recorded (the permutation test's observed delta is the reported delta)."""
    folder = RunFolder.open(demo_runs[0])
    record = folder.read_record()
    for row in ("faithful-generator", "degraded-generator"):
        scores = record.entry(row, "shapes").metrics
        stored = stored_image_metrics(folder, record, row, "shapes")
        assert [name for s in stored for name in s.metric.outputs] == IMAGE_OUTPUTS
        for s in stored:
            assert not s.metric.paired and s.ids is None and len(s.rows) == 100
            values = s.metric.pooled(s.rows)(np.arange(len(s.rows)))
            for name in s.metric.outputs:
                assert values[name] == pytest.approx(scores[name].value, rel=1e-6, abs=1e-12)


def test_runs_without_saved_features_are_not_tested_with_the_reason(
    demo_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    old = RunFolder(shutil.copytree(demo_runs[0], tmp_path / "old"))
    record = old.read_record()
    results = [r.model_copy(update={"features": None}) for r in record.results]
    old.write_record(record.model_copy(update={"results": results}))
    comparison = compare_runs(old.path, demo_runs[1], FAST, pairs=[("faithful-generator",) * 2])
    assert [e.metric for e in comparison.entries] == IMAGE_OUTPUTS
    assert all(e.verdict == NOT_TESTED and "features" in e.note for e in comparison.entries)
