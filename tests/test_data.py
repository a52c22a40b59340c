"""Task files: formats, templates, limits and the errors users hit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aigc_eval.config import Task
from aigc_eval.data import aligned_references, load_task, read_lines
from aigc_eval.errors import UserError


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_template_and_multiple_references(tmp_path: Path) -> None:
    _jsonl(
        tmp_path / "d.jsonl",
        [{"q": "天气", "a": "很好", "b": "不错", "k": "x1"}, {"q": "hi", "a": "yo", "b": None, "k": "x2"}],
    )
    task = Task(name="t", data="d.jsonl", prompt="Q: {q}\nA:", references=["a", "b"], id_field="k", lang="zh")
    data = load_task(task, tmp_path)
    assert [e.prompt for e in data.examples] == ["Q: 天气\nA:", "Q: hi\nA:"]
    assert data.examples[0].references == ("很好", "不错")
    assert data.examples[1].references == ("yo",)  # a null reference is dropped, not scored as ""
    assert [e.id for e in data.examples] == ["x1", "x2"]
    assert len(data.content_hash) == 64


def test_csv_tsv_text_and_limits(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("prompt,reference\na,b\nc,d\ne,f\n", encoding="utf-8")
    (tmp_path / "d.tsv").write_text("prompt\treference\na\tb\n", encoding="utf-8")
    (tmp_path / "d.txt").write_text("one line\nsecond line\n", encoding="utf-8")
    assert len(load_task(Task(name="c", data="d.csv", limit=2), tmp_path).examples) == 2
    assert len(load_task(Task(name="c", data="d.csv", limit=2), tmp_path, limit=1).examples) == 1
    assert load_task(Task(name="t", data="d.tsv"), tmp_path).examples[0].references == ("b",)
    text = load_task(Task(name="x", data="d.txt", prompt="{text}", references=["text"]), tmp_path)
    assert [e.references for e in text.examples] == [("one line",), ("second line",)]


def test_errors_name_the_file_and_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing\.jsonl: dataset file not found"):
        load_task(Task(name="t", data="missing.jsonl"), tmp_path)
    _jsonl(tmp_path / "d.jsonl", [{"question": "x", "reference": "y"}])
    with pytest.raises(
        UserError,
        match=r"record 1 \(line 1\) has no field 'prompt' \(used by prompt\); "
        r"fields present: question, reference",
    ):
        load_task(Task(name="t", data="d.jsonl"), tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "reference": "b"}\n{oops\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.jsonl:2: invalid JSON"):
        load_task(Task(name="t", data="bad.jsonl"), tmp_path)
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1\.txt: not valid UTF-8 \(byte 3\)"):
        read_lines(tmp_path / "latin1.txt", "predictions file")
    (tmp_path / "d.parquet").write_bytes(b"")
    with pytest.raises(UserError, match="cannot tell the format"):
        load_task(Task(name="t", data="d.parquet"), tmp_path)


def test_aligned_references_checks_line_counts() -> None:
    assert aligned_references([["a", "b"], ["c", "d"]], 2, ["r1", "r2"]) == [["a", "c"], ["b", "d"]]
    with pytest.raises(UserError, match="r2: 1 lines but the predictions have 2"):
        aligned_references([["a", "b"], ["c"]], 2, ["r1", "r2"])
