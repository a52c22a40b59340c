"""Image tasks in a suite and the image CLI: one comparison table for text and image rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from aigc_eval.cli import main
from aigc_eval.image_scoring import score_images

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "suites" / "data" / "images"


def _list_file(path: Path, folder: Path, n: int) -> Path:
    """The first n images of a demo set, as a list file (paths relative to the list)."""
    files = sorted(folder.glob("*.png"))[:n]
    path.write_text("".join(f"{f}\n" for f in files), encoding="utf-8")
    return path


@pytest.fixture()
def small_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("AIGC_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    return {
        name: _list_file(tmp_path / f"{name}.txt", IMAGES / name, 24)
        for name in ("reference", "gen-faithful", "gen-degraded")
    }


def test_suite_image_task_scores_rows_into_the_same_table(
    tmp_path: Path, small_sets: dict[str, Path]
) -> None:
    suite = {
        "name": "img",
        "models": [
            {"name": "faithful", "backend": "images", "images": {"shapes": str(small_sets["gen-faithful"])}},
            {"name": "degraded", "backend": "images", "images": {"shapes": str(small_sets["gen-degraded"])}},
        ],
        "tasks": [
            {
                "name": "shapes",
                "kind": "image",
                "reference": str(small_sets["reference"]),
                "backbone": "efficientnet-lite0",
                "image_metrics": ["fid", "kid", "precision", "coverage"],
            },
        ],
        "metrics": ["bleu"],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    assert main(["run", str(path), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 0
    run_dir = next((tmp_path / "out" / "img").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    scores = {e["model"]: e["metrics"] for e in results["results"]}
    # Labelled by backbone, never "fid", and equal to scoring the sets directly.
    assert set(scores["faithful"]) == {
        "fd_efficientnet-lite0",
        "kd_efficientnet-lite0",
        "precision",
        "coverage",
    }
    direct = score_images(small_sets["gen-faithful"], small_sets["reference"], ["fid"], "efficientnet-lite0")
    assert scores["faithful"]["fd_efficientnet-lite0"]["score"] == pytest.approx(
        direct.scores["fd_efficientnet-lite0"].score, rel=1e-9
    )
    assert (
        scores["faithful"]["fd_efficientnet-lite0"]["score"]
        < scores["degraded"]["fd_efficientnet-lite0"]["score"]
    )
    assert scores["faithful"]["coverage"]["score"] > scores["degraded"]["coverage"]["score"]
    assert results["tasks"]["shapes"]["kind"] == "image" and results["tasks"]["shapes"]["n"] == 24
    assert "fd_efficientnet-lite0" in (run_dir / "table.md").read_text()


def test_cli_image_score_and_stats(tmp_path: Path, small_sets: dict[str, Path], capsys) -> None:
    ref_npz = tmp_path / "ref.npz"
    assert (
        main(["stats", str(small_sets["reference"]), "-o", str(ref_npz), "--backbone", "efficientnet-lite0"])
        == 0
    )
    with np.load(ref_npz) as stats:
        assert stats["mu"].shape == (1280,) and stats["sigma"].shape == (1280, 1280)
    capsys.readouterr()
    args = [
        "score",
        "--metric",
        "fid",
        "--metric",
        "kid",
        "--generated",
        str(small_sets["gen-faithful"]),
        "--backbone",
        "efficientnet-lite0",
        "--json",
    ]
    assert main([*args, "--reference", str(ref_npz)]) == 0
    from_stats = json.loads(capsys.readouterr().out)
    assert main([*args, "--reference", str(small_sets["reference"])]) == 0
    from_images = json.loads(capsys.readouterr().out)
    # Keyed by the score's own name, as in results.json: never "fid" for EfficientNet features.
    fd, kd = "fd_efficientnet-lite0", "kd_efficientnet-lite0"
    assert from_stats[fd]["score"] == pytest.approx(from_images[fd]["score"], rel=1e-9)
    assert "std" in from_images[kd]["details"] and from_images[kd]["signature"].startswith(f"{kd}|")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png")
    assert (
        main(
            [
                "score",
                "--metric",
                "fid",
                "--generated",
                str(bad),
                "--reference",
                str(ref_npz),
                "--backbone",
                "efficientnet-lite0",
            ]
        )
        == 2
    )
    assert "broken.png" in capsys.readouterr().err


def test_fid_interval_from_disjoint_draws_and_kid_std() -> None:
    from aigc_eval import image_scoring
    from aigc_eval.metrics import image as im

    rng = np.random.default_rng(0)
    gen = im.FeatureSet.from_features(rng.normal(0.3, 1.0, size=(200, 8)))
    ref = im.FeatureSet.from_features(rng.normal(0.0, 1.0, size=(150, 8)))
    built = image_scoring.build_image_metrics(["fid", "kid"], "inception-v3-tf", 3, ref, "origin")
    scores = image_scoring.score_feature_sets(gen, built)
    order = np.random.default_rng(3).permutation(200)
    draws = [
        im.frechet_distance(
            *im.mean_and_covariance(gen.features[order[i * 40 : (i + 1) * 40]]), ref.mu, ref.sigma
        )
        for i in range(5)
    ]
    fid = scores["fid"]
    assert fid.interval["low"] == pytest.approx(min(draws), rel=1e-9)
    assert fid.interval["high"] == pytest.approx(max(draws), rel=1e-9)
    assert fid.signature.endswith("|draws:5x40|seed:3")
    assert scores["kid"].interval["half_width"] == scores["kid"].details["std"]
    # Too few images for full-rank draws: the interval is stated as unavailable, not invented.
    small = im.FeatureSet.from_features(rng.normal(size=(30, 8)))
    unavailable = image_scoring.score_feature_sets(small, built[:1])["fid"]
    assert unavailable.interval is None and "needs 5 disjoint draws" in unavailable.details["ci_unavailable"]


def test_skipped_images_device_and_image_row_settings_are_recorded(
    tmp_path: Path, small_sets: dict[str, Path]
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    generated = tmp_path / "with-broken.txt"
    generated.write_text(small_sets["gen-faithful"].read_text(encoding="utf-8") + f"{broken}\n", "utf-8")
    suite = {
        "name": "skips",
        "models": [{"name": "gen", "backend": "images", "images": {"shapes": str(generated)}}],
        "tasks": [
            {
                "name": "shapes",
                "kind": "image",
                "reference": str(small_sets["reference"]),
                "backbone": "efficientnet-lite0",
                "image_metrics": ["fid"],
                "skip_corrupt": True,
            }
        ],
        "metrics": ["bleu"],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    assert main(["run", str(path), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 0
    run_dir = next((tmp_path / "out" / "skips").iterdir())
    entry = json.loads((run_dir / "results.json").read_text())["results"][0]
    assert entry["skipped_images"]["generated"] == {"count": 1, "files": [str(broken)]}
    assert entry["skipped_images"]["reference"] == {"count": 0, "files": []}
    assert entry["n"] == 24 and entry["device"] == "cpu"
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "1 unreadable generated image(s) skipped: broken.png" in page
    assert "<dt>device</dt><dd>image features: cpu</dd>" in page
    # An image row decodes nothing: no generation settings table, its image sets instead.
    assert "generation settings" not in page and "<h3>Image rows</h3>" in page
