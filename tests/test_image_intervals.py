"""Image intervals say what they are: KID's is a std over subsets (none when every subset is the whole set),
FID's a range over disjoint draws; tables, the report tooltip and the legend name them that way."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from aigc_eval import image_scoring
from aigc_eval.metrics import image as im
from aigc_eval.metrics.base import Score
from aigc_eval.record import Environment, Interval, Provenance, ResultEntry, RunRecord, TaskRecord, migrate
from aigc_eval.report.html import render_run_report
from aigc_eval.report.tables import format_with_interval, interval_label, to_markdown
from aigc_eval.run_folder import RunFolder, now_iso

IMAGES = Path(__file__).resolve().parents[1] / "suites" / "data" / "images"


def _sets(n_gen: int, n_ref: int, dim: int = 8) -> tuple[im.FeatureSet, im.FeatureSet]:
    rng = np.random.default_rng(0)
    return (
        im.FeatureSet.from_features(rng.normal(0.3, 1.0, size=(n_gen, dim))),
        im.FeatureSet.from_features(rng.normal(0.0, 1.0, size=(n_ref, dim))),
    )


def _scores(
    gen: im.FeatureSet, ref: im.FeatureSet, names: list[str], backbone: str, seed: int
) -> dict[str, Score]:
    built = image_scoring.build_image_metrics(names, backbone, seed, ref, "origin")
    return image_scoring.score_feature_sets(gen, built)


def test_kid_on_a_set_smaller_than_its_subsets_has_no_interval() -> None:
    gen, ref = _sets(40, 40)
    kid = _scores(gen, ref, ["kid"], "inception-v3-tf", seed=0)["kid"]
    assert kid.interval is None
    assert kid.details["degenerate"] == "every subset is the whole set (n=40 < subset size 1000)"
    assert kid.details["ci_unavailable"] == kid.details["degenerate"]
    assert "± " not in format_with_interval(kid.score, kid.to_record().ci)


def test_kid_interval_records_subsets_and_fid_interval_records_draws() -> None:
    gen, ref = _sets(200, 40)
    scores = _scores(gen, ref, ["fid", "kid"], "inception-v3-tf", seed=3)
    kid = scores["kid"].interval
    assert kid is not None and "n_resamples" not in kid and "confidence" not in kid
    assert (kid["kind"], kid["n_subsets"], kid["subset_size"]) == ("subset-std", 100, 40)
    assert kid["half_width"] == scores["kid"].details["std"] > 0
    assert interval_label(scores["kid"].to_record().ci) == "± std over 100 subsets of 40"
    fid = scores["fid"].interval
    assert (fid["kind"], fid["n_draws"], fid["draw_size"]) == ("draws-range", 5, 40)
    fid_record = scores["fid"].to_record().ci
    assert "confidence" not in fid and interval_label(fid_record) == "range over 5 disjoint draws of 40"
    # A range is printed as one, never as a symmetric "±".
    text = format_with_interval(scores["fid"].score, fid_record)
    assert "±" not in text and text.endswith(f"[{fid['low']:.4f}, {fid['high']:.4f}]")


def _legacy_interval(ci: dict[str, object]) -> Interval:
    """An interval of a schema-1 results.json, as loading migrates it."""
    score = {"score": 1.0, "signature": "s", "ci": ci}
    migrated = migrate({"schema_version": 1, "results": [{"metrics": {"m": score}}]})
    return Interval.model_validate(migrated["results"][0]["metrics"]["m"]["ci"])


def test_old_run_folders_without_kind_read_as_before() -> None:
    assert (
        interval_label(_legacy_interval({"low": 1.0, "high": 2.0, "confidence": 0.9})) == "90% bootstrap CI"
    )
    legacy_kid = {"low": 0.1, "high": 0.3, "half_width": 0.1, "n_resamples": 1000, "method": "kid-subset-std"}
    assert interval_label(_legacy_interval(legacy_kid)) == "± std over ? subsets of ?"
    legacy_fid = {
        "low": 1.0,
        "high": 3.0,
        "n_resamples": 5,
        "draw_size": 9,
        "method": "disjoint-draws-min-max",
    }
    assert interval_label(_legacy_interval(legacy_fid)) == "range over 5 disjoint draws of 9"


@pytest.fixture()
def image_run_dir(tmp_path: Path) -> Path:
    """A run folder with one image row, as finalize writes it: FID with draws, a degenerate KID."""
    gen, ref = _sets(200, 40)
    wide = _scores(gen, ref, ["fid"], "efficientnet-lite0", seed=3)
    small = _scores(*_sets(40, 40), ["kid"], "efficientnet-lite0", seed=0)
    scores = {s.name: s.to_record() for s in [*wide.values(), *small.values()]}
    folder = RunFolder.create(tmp_path / "out", "intervals", "hash")
    suite = {
        "name": "intervals",
        "tasks": [
            {
                "name": "shapes",
                "kind": "image",
                "backbone": "efficientnet-lite0",
                "image_metrics": ["fid", "kid"],
            }
        ],
    }
    record = RunRecord(
        run_id=folder.path.name,
        suite_name="intervals",
        config_hash="hash",
        finished=now_iso(),
        suite=suite,
        environment=Environment(python="3", platform="p"),
        models={"gen": Provenance(backend="images", images={"shapes": "gen"})},
        tasks={
            "shapes": TaskRecord(
                kind="image", path="ref", content_hash="h", n=40, backbone="efficientnet-lite0"
            )
        },
        results=[ResultEntry(model="gen", task="shapes", n=200, metrics=scores)],
    )
    folder.write_record(record)
    return folder.path


def test_report_and_tables_name_each_interval(image_run_dir: Path) -> None:
    page = render_run_report(image_run_dir)
    titles = dict(re.findall(r'data-metric="([^"]+)" title="([^"]*)"', page))
    fd = titles["fd_efficientnet-lite0"]
    assert "range over 5 disjoint draws of 40: [" in fd and "CI" not in fd
    kd = titles["kd_efficientnet-lite0"]
    assert "no interval: every subset is the whole set (n=40 &lt; subset size 1000)" in kd and "CI" not in kd
    legend = re.search(r'<p class="legend">(↑ higher is better.*?)</p>', page).group(1)
    assert "fd_efficientnet-lite0: range over 5 disjoint draws of 40" in legend
    table = to_markdown(RunFolder.open(image_run_dir).read_record())
    assert (
        "Intervals: fd_efficientnet-lite0: range over 5 disjoint draws of 40; kd_efficientnet-lite0: "
        in table
    )
    assert "± 0.0000" not in table


def test_text_bootstrap_intervals_record_their_kind() -> None:
    from aigc_eval.metrics.registry import build_metric
    from aigc_eval.report.tables import interval_label
    from aigc_eval.scoring import aggregate_with_intervals

    metric = build_metric("bleu")
    stats = metric.sample_stats(
        ["the cat sat", "a dog ran far", "hello"], [["the cat sat"], ["a dog ran"], ["hi"]]
    )
    [score] = aggregate_with_intervals(metric, stats, n_resamples=50, seed=3).values()
    assert score.interval["kind"] == "bootstrap-percentile" and score.interval["confidence"] == 0.95
    assert "95%" in interval_label(score.to_record().ci)
