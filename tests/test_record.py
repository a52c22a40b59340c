"""The run record is the schema: docs/schema is exported from it, and old versions migrate on load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aigc_eval.errors import UserError
from aigc_eval.record import RunRecord, export_schemas, migrate
from aigc_eval.run_folder import RunFolder

DOCS = Path(__file__).resolve().parents[1] / "docs" / "schema"


def test_the_documented_json_schema_is_the_records_own(tmp_path: Path) -> None:
    for path in export_schemas(tmp_path):
        committed = DOCS / path.name
        assert committed.is_file(), f"{committed} missing: run python -m aigc_eval.record docs/schema"
        assert json.loads(committed.read_text()) == json.loads(path.read_text()), (
            f"{committed} is stale: run python -m aigc_eval.record docs/schema"
        )


def test_schema_1_migrates_every_score_detail_and_interval(v1_run: Path) -> None:
    raw = json.loads((v1_run / "results.json").read_text(encoding="utf-8"))
    record = RunRecord.model_validate(migrate(raw))
    for old, new in zip(raw["results"], record.results, strict=True):
        assert set(old["metrics"]) == set(new.metrics)
        for name, score in old["metrics"].items():
            typed = new.metrics[name]
            assert typed.score == score["score"] and typed.signature == score["signature"]
            kept = {
                **typed.details,
                **({"ci_unavailable": typed.ci_unavailable} if typed.ci_unavailable else {}),
            }
            assert kept == {
                k: v for k, v in score.items() if k not in ("score", "signature", "higher_is_better", "ci")
            }
            assert (typed.ci is None) == ("ci" not in score)
    images = record.models["faithful-generator"]
    assert images.backend == "images"
    assert images.images == {"shapes": raw["models"]["faithful-generator"]["shapes"]}
    assert record.models["demo-greedy"].context_length == 128


def test_a_newer_schema_is_refused_naming_the_fix(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 99}), encoding="utf-8")
    with pytest.raises(UserError, match=r"schema_version 99 is not one .*upgrade aigc-eval"):
        RunFolder(tmp_path).read_record()


def test_a_damaged_record_names_the_key(v1_run: Path) -> None:
    raw = json.loads((v1_run / "results.json").read_text(encoding="utf-8"))
    raw["results"][0]["n"] = "many"
    (v1_run / "results.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(UserError, match=r"results\.json: not a valid RunRecord \(results\.0\.n: "):
        RunFolder(v1_run).read_record()
