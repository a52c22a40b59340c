"""Suite validation: strict keys, key-path errors, short forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigc_eval.backends.images import ImagesRow
from aigc_eval.config import load_suite, parse_suite
from aigc_eval.errors import UserError

BASE = {
    "name": "t",
    "models": [{"name": "m", "path": "model"}],
    "tasks": [{"name": "x", "data": "x.jsonl"}],
    "metrics": ["bleu", {"name": "chrf", "word_order": 2}],
}


def _with(**changes):
    return {**BASE, **changes}


def test_short_and_long_metric_forms() -> None:
    suite = parse_suite(BASE)
    assert [m.name for m in suite.metrics] == ["bleu", "chrf"]
    assert suite.metrics[1].options == {"word_order": 2}
    assert suite.models[0].generation.num_beams == 1


def test_unknown_key_names_its_path() -> None:
    bad = _with(
        models=[{"name": "m", "path": "p"}, {"name": "n", "path": "p", "generation": {"num_beam": 5}}]
    )
    with pytest.raises(UserError, match=r"s\.yaml: models\[1\]\.generation\.num_beam: unknown key"):
        parse_suite(bad, "s.yaml")


def test_bad_value_says_what_is_allowed() -> None:
    bad = _with(models=[{"name": "m", "path": "p", "generation": {"num_beams": 0}}])
    with pytest.raises(UserError, match=r"models\[0\]\.generation\.num_beams: Input should be greater than"):
        parse_suite(bad, "s.yaml")
    with pytest.raises(UserError, match=r"models\[0\]\.dtype: Input should be 'auto', 'float32'"):
        parse_suite(_with(models=[{"name": "m", "path": "p", "dtype": "fp8"}]), "s.yaml")


def test_unknown_metric_and_metric_option() -> None:
    with pytest.raises(UserError, match=r"metrics\[0\]: unknown metric 'blue'; known metrics: bleu"):
        parse_suite(_with(metrics=["blue"]), "s.yaml")
    with pytest.raises(UserError, match=r"metrics\[0\]: chrf options: word_ordr: unknown key"):
        parse_suite(_with(metrics=[{"name": "chrf", "word_ordr": 2}]), "s.yaml")


def test_missing_required_and_duplicate_names() -> None:
    with pytest.raises(UserError, match=r"tasks\[0\]\.data: required for a text task"):
        parse_suite(_with(tasks=[{"name": "x"}]), "s.yaml")
    with pytest.raises(UserError, match="models names must be unique; repeated: m"):
        parse_suite(_with(models=[{"name": "m", "path": "a"}, {"name": "m", "path": "b"}]), "s.yaml")


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nmodels: [\n  - oops: {\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.yaml: malformed YAML \(line \d+, column \d+\)"):
        load_suite(path)


def test_missing_suite_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="suite file not found"):
        load_suite(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(UserError, match="must be a YAML mapping"):
        load_suite(path)


def test_config_hash_is_stable_and_sensitive() -> None:
    assert parse_suite(BASE).config_hash() == parse_suite(dict(BASE)).config_hash()
    changed = _with(models=[{"name": "m", "path": "model", "generation": {"num_beams": 5}}])
    assert parse_suite(changed).config_hash() != parse_suite(BASE).config_hash()


def test_image_tasks_and_rows_are_checked() -> None:
    image_task = {"name": "shapes", "kind": "image", "reference": "ref/"}
    rows = [{"name": "gen", "backend": "images", "images": {"shapes": "gen/"}}]
    suite = parse_suite(_with(models=rows, tasks=[image_task]))
    assert suite.tasks[0].image_metrics == ["fid", "kid"] and isinstance(suite.models[0], ImagesRow)
    with pytest.raises(UserError, match=r"models\[0\]\.path: required key is missing"):
        parse_suite(_with(models=[{"name": "m"}]), "s.yaml")
    with pytest.raises(UserError, match=r"models\[0\]\.images: \['text'\] are not image tasks"):
        parse_suite(_with(models=[{"name": "g", "backend": "images", "images": {"text": "x"}}]), "s.yaml")
    with pytest.raises(UserError, match=r"tasks\[0\]\.reference: required for an image task"):
        parse_suite(_with(tasks=[{"name": "shapes", "kind": "image"}]), "s.yaml")
    with pytest.raises(
        UserError, match=r"tasks\[0\]\.image_metrics\[0\]: 'fdi' is not an image metric; image metrics: .*fid"
    ):
        parse_suite(_with(tasks=[{**image_task, "image_metrics": ["fdi"]}]), "s.yaml")
