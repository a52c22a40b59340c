"""Image intervals say what they are: KID's is a std over subsets (none when every subset is the whole set),
FID's a range over disjoint draws; tables, the report tooltip and the legend name them that way."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from aigc_eval import image_scoring, runner
from aigc_eval.config import parse_suite
from aigc_eval.data import load_image_task
from aigc_eval.metrics import image as im
from aigc_eval.report.html import render_run_report
from aigc_eval.report.tables import format_with_interval, interval_label, to_markdown

IMAGES = Path(__file__).resolve().parents[1] / "suites" / "data" / "images"


def _sets(n_gen: int, n_ref: int, dim: int = 8) -> tuple[im.FeatureSet, im.FeatureSet]:
    rng = np.random.default_rng(0)
    return (
        im.FeatureSet.from_features(rng.normal(0.3, 1.0, size=(n_gen, dim))),
        im.FeatureSet.from_features(rng.normal(0.0, 1.0, size=(n_ref, dim))),
    )


def test_kid_on_a_set_smaller_than_its_subsets_has_no_interval() -> None:
    gen, ref = _sets(40, 40)
    kid = image_scoring._pair_scores(gen, ref, ["kid"], "inception-v3-tf", "origin", seed=0)["kid"]
    assert kid.interval is None
    assert kid.details["degenerate"] == "every subset is the whole set (n=40 < subset size 1000)"
    assert kid.details["ci_unavailable"] == kid.details["degenerate"]
    assert "± " not in format_with_interval(kid.score, kid.interval)


def test_kid_interval_records_subsets_and_fid_interval_records_draws() -> None:
    gen, ref = _sets(200, 40)
    scores = image_scoring._pair_scores(gen, ref, ["fid", "kid"], "inception-v3-tf", "origin", seed=3)
    kid = scores["kid"].interval
    assert kid is not None and "n_resamples" not in kid and "confidence" not in kid
    assert (kid["kind"], kid["n_subsets"], kid["subset_size"]) == ("subset-std", 100, 40)
    assert kid["half_width"] == scores["kid"].details["std"] > 0
    assert interval_label(kid) == "± std over 100 subsets of 40"
    fid = scores["fid"].interval
    assert (fid["kind"], fid["n_draws"], fid["draw_size"]) == ("draws-range", 5, 40)
    assert "confidence" not in fid and interval_label(fid) == "range over 5 disjoint draws of 40"
    # A range is printed as one, never as a symmetric "±".
    text = format_with_interval(scores["fid"].score, fid)
    assert "±" not in text and text.endswith(f"[{fid['low']:.4f}, {fid['high']:.4f}]")


def test_old_run_folders_without_kind_read_as_before() -> None:
    assert interval_label({"low": 1.0, "high": 2.0, "confidence": 0.9}) == "90% bootstrap CI"
    legacy_kid = {"low": 0.1, "high": 0.3, "half_width": 0.1, "n_resamples": 1000, "method": "kid-subset-std"}
    assert interval_label(legacy_kid) == "± std over ? subsets of ?"
    legacy_fid = {
        "low": 1.0,
        "high": 3.0,
        "n_resamples": 5,
        "draw_size": 9,
        "method": "disjoint-draws-min-max",
    }
    assert interval_label(legacy_fid) == "range over 5 disjoint draws of 9"


@pytest.fixture()
def image_run_dir(tmp_path: Path) -> Path:
    """A run folder written by write_run_outputs with one image row: FID with draws, a degenerate KID."""
    reference = tmp_path / "reference.txt"
    reference.write_text("".join(f"{IMAGES / 'reference' / f'{i:03d}.png'}\n" for i in range(4)), "utf-8")
    suite = parse_suite(
        {
            "name": "intervals",
            "models": [{"name": "gen", "backend": "images", "images": {"shapes": str(reference)}}],
            "tasks": [
                {
                    "name": "shapes",
                    "kind": "image",
                    "reference": str(reference),
                    "backbone": "efficientnet-lite0",
                    "image_metrics": ["fid", "kid"],
                }
            ],
            "metrics": ["bleu"],
        }
    )
    data = load_image_task(suite.tasks[0], tmp_path)
    gen, ref = _sets(200, 40)
    wide = image_scoring._pair_scores(gen, ref, ["fid"], "efficientnet-lite0", "origin", seed=3)
    small = image_scoring._pair_scores(*_sets(40, 40), ["kid"], "efficientnet-lite0", "origin", seed=0)
    scores = {s.name: s for s in [*wide.values(), *small.values()]}
    outcome = runner.RowTaskOutcome("gen", "shapes", [], scores, generated_images=str(reference))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "environment", dict)
        runner.write_run_outputs(run_dir, suite, suite.config_hash(), [data], {}, [outcome], None)
    return run_dir


def test_report_and_tables_name_each_interval(image_run_dir: Path) -> None:
    page = render_run_report(image_run_dir)
    titles = dict(re.findall(r'data-metric="([^"]+)" title="([^"]*)"', page))
    fd = titles["fd_efficientnet-lite0"]
    assert "range over 5 disjoint draws of 40: [" in fd and "CI" not in fd
    kd = titles["kd_efficientnet-lite0"]
    assert "no interval: every subset is the whole set (n=40 &lt; subset size 1000)" in kd and "CI" not in kd
    legend = re.search(r'<p class="legend">(↑ higher is better.*?)</p>', page).group(1)
    assert "fd_efficientnet-lite0: range over 5 disjoint draws of 40" in legend
    table = to_markdown(json.loads((image_run_dir / "results.json").read_text(encoding="utf-8")))
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
    assert "95%" in interval_label(score.to_dict()["ci"])
