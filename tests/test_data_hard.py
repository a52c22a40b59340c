"""Task and score files read exactly as the reference tools read them.

Line-aligned `score` files end lines at "\n" only, like sacrebleu's CLI; JSONL keeps U+2028,
U+2029 and U+0085 inside strings; CSV/TSV follow the csv module (``newline=""``); a UTF-8 BOM is
accepted everywhere; bad field values, ids and templates are user errors naming where.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import yaml
from sacrebleu.utils import smart_open

from aigc_eval.cli import main
from aigc_eval.config import Task
from aigc_eval.data import load_task, read_lines
from aigc_eval.errors import EXIT_USER_ERROR, UserError

BOM = b"\xef\xbb\xbf"
# Predictions and references whose lone "\r" sits in different lines: universal newlines would
# split both files into the same number of lines and silently pair the wrong sentences.
PREDICTIONS = (
    "the cat sat on\rthe mat today\r\n"
    "a dog runs in the park\n"
    "birds sing in the morning light  \n"
    "the river flows to the sea\n"
)
REFERENCES = (
    "the cat sat on the mat today\r\n"
    "a dog runs in\rthe green park\n"
    "birds sing in the early morning light\n"
    "the river flows into the sea\n"
)


def _sacrebleu_cli_lines(path: Path) -> list[str]:
    """Lines as sacrebleu's CLI reads a file (sacrebleu/sacrebleu.py: smart_open, then rstrip)."""
    return [line.rstrip() for line in smart_open(str(path))]


def _score_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["score", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_score_keeps_a_lone_cr_inside_a_line_like_sacrebleu_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    predictions, references = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    predictions.write_bytes(PREDICTIONS.encode())
    references.write_bytes(REFERENCES.encode())
    hyps, refs = _sacrebleu_cli_lines(predictions), _sacrebleu_cli_lines(references)
    assert len(hyps) == len(refs) == 4
    assert read_lines(predictions, "predictions file") == hyps
    assert hyps[0] == "the cat sat on\rthe mat today"
    assert hyps[2] == "birds sing in the morning light"  # rstrip(), as sacrebleu
    assert read_lines(references, "references file")[1] == "a dog runs in\rthe green park"

    ours = _score_json(
        capsys, "--metric", "bleu", "--predictions", str(predictions), "--references", str(references)
    )
    expected = sacrebleu.corpus_bleu(hyps, [refs])
    assert ours["bleu"]["score"] == pytest.approx(expected.score, abs=1e-9)
    # ... and sacrebleu's own CLI on the same two files prints the same number.
    cli = subprocess.run(
        [sys.executable, "-m", "sacrebleu", str(references), "-i", str(predictions), "-b", "-w", "6"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert ours["bleu"]["score"] == pytest.approx(float(cli.stdout), abs=1e-6)
    assert expected.score != pytest.approx(
        sacrebleu.corpus_bleu(PREDICTIONS.splitlines(), [REFERENCES.splitlines()]).score
    )  # the universal-newline reading scores differently: the test can tell the two apart


def test_score_drops_a_leading_bom(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    predictions, references = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    predictions.write_bytes(BOM + PREDICTIONS.encode())
    references.write_bytes(BOM + REFERENCES.encode())
    hyps, refs = _sacrebleu_cli_lines(predictions), _sacrebleu_cli_lines(references)
    assert hyps[0].startswith("\ufeff")  # sacrebleu keeps it glued to the first word; we do not
    hyps[0], refs[0] = hyps[0].removeprefix("\ufeff"), refs[0].removeprefix("\ufeff")
    assert read_lines(predictions, "predictions file") == hyps
    ours = _score_json(
        capsys, "--metric", "bleu", "--predictions", str(predictions), "--references", str(references)
    )
    assert ours["bleu"]["score"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)


def test_read_lines_edge_cases_match_sacrebleu(tmp_path: Path) -> None:
    cases = ["", "\n", "a", "a\n\n", "a\n b ", "x\u2028y\u0085z\n", "tail\r", "a\r\rb\r\n"]
    for number, content in enumerate(cases):
        path = tmp_path / f"{number}.txt"
        path.write_bytes(content.encode())
        assert read_lines(path, "predictions file") == _sacrebleu_cli_lines(path), repr(content)
    assert read_lines(tmp_path / "5.txt", "predictions file") == ["x\u2028y\u0085z"]


def _task(tmp_path: Path, data: str, raw: bytes, **options: object) -> Task:
    (tmp_path / data).write_bytes(raw)
    return Task(name="t", data=data, **options)


def test_jsonl_keeps_unicode_line_separators_crlf_and_bom(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "prompt": "one\u2028two", "reference": "para\u2029graph"},
        {"id": "b", "prompt": "next\u0085line\rcr", "reference": "x\u2028y"},
    ]
    raw = BOM + b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\r\n" for r in rows) + b"\r\n"
    data = load_task(_task(tmp_path, "d.jsonl", raw, id_field="id"), tmp_path)
    assert [(e.id, e.prompt, e.references) for e in data.examples] == [
        ("a", "one\u2028two", ("para\u2029graph",)),
        ("b", "next\u0085line\rcr", ("x\u2028y",)),
    ]
    assert data.content_hash == hashlib.sha256(raw).hexdigest()  # the file's bytes, BOM and all


def test_csv_keeps_quoted_newlines_and_accepts_a_bom(tmp_path: Path) -> None:
    raw = (
        BOM + b"id,prompt,reference\r\n"
        b'1,"line one\nline two","crlf\r\ninside"\r\n'
        b'2,"lone\rcr",plain \xe2\x80\xa8 sep\r\n'
        b"\r\n"
        b'3,"say ""hi""",ok\r\n'
    )
    data = load_task(_task(tmp_path, "d.csv", raw, id_field="id"), tmp_path)
    assert [(e.id, e.prompt, e.references) for e in data.examples] == [
        ("1", "line one\nline two", ("crlf\r\ninside",)),
        ("2", "lone\rcr", ("plain \u2028 sep",)),
        ("3", 'say "hi"', ("ok",)),
    ]
    tsv = BOM + b'prompt\treference\n"a\tb\nc"\td\n'
    assert load_task(_task(tmp_path, "d.tsv", tsv), tmp_path).examples[0].prompt == "a\tb\nc"


def test_csv_row_errors_name_the_line(tmp_path: Path) -> None:
    raw = b'prompt,reference\n"multi\nline",ok\nshort\n'
    with pytest.raises(UserError, match=r"d\.csv:4: 1 fields but the header has 2; quote fields"):
        load_task(_task(tmp_path, "d.csv", raw), tmp_path)
    with pytest.raises(UserError, match=r"e\.csv:1: the header repeats column 'prompt'"):
        load_task(_task(tmp_path, "e.csv", b"prompt,prompt,reference\na,b,c\n"), tmp_path)


def test_text_format_keeps_the_line_but_its_ending(tmp_path: Path) -> None:
    raw = BOM + b"first  \r\nlone\rcr\nsep\xe2\x80\xa8in\n\nlast"
    task = _task(tmp_path, "d.txt", raw, prompt="{text}", references=["text"])
    prompts = [e.prompt for e in load_task(task, tmp_path).examples]
    assert prompts == ["first  ", "lone\rcr", "sep\u2028in", "", "last"]


def _jsonl(tmp_path: Path, rows: list[dict]) -> None:
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_a_json_list_reference_means_several_references(tmp_path: Path) -> None:
    _jsonl(
        tmp_path,
        [
            {"prompt": "p", "reference": ["a", "b"], "extra": "c"},
            {"prompt": "q", "reference": "d", "extra": None},
        ],
    )
    data = load_task(Task(name="t", data="d.jsonl", references=["reference", "extra"]), tmp_path)
    assert [e.references for e in data.examples] == [("a", "b", "c"), ("d",)]


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ({"text": "a"}, "an object"),
        (3, "the number 3"),
        (True, "the boolean true"),
        ([], "an empty list"),
        (["a", 2], "a list whose item 2 is the number 2"),
        (["a", None], "a list whose item 2 is null"),
    ],
)
def test_a_reference_that_is_not_text_is_a_user_error(tmp_path: Path, value: object, detail: str) -> None:
    rows = [{"prompt": "p", "reference": "ok"}, {"prompt": "q", "reference": value}]
    (tmp_path / "d.jsonl").write_text("\n\n".join(map(json.dumps, rows)), encoding="utf-8")  # a blank line
    with pytest.raises(UserError) as error:
        load_task(Task(name="t", data="d.jsonl"), tmp_path)
    assert str(error.value) == (
        f"task 't' ({tmp_path / 'd.jsonl'}): record 2 (line 3): reference field 'reference' holds "
        f"{detail}; a reference must be a string or a non-empty list of strings (several references)"
    )


def test_prompt_fields_take_strings_and_numbers(tmp_path: Path) -> None:
    _jsonl(tmp_path, [{"n": 3, "x": 0.5, "s": "hi", "z": None, "reference": "r"}])
    task = Task(name="t", data="d.jsonl", prompt="{s} {n} {x:.2f} {n:03d} [{z}] {s!r} {{literal}}")
    assert load_task(task, tmp_path).examples[0].prompt == "hi 3 0.50 003 [] 'hi' {literal}"
    _jsonl(tmp_path, [{"prompt": ["a", "b"], "reference": "r"}])
    with pytest.raises(
        UserError, match=r"record 1 \(line 1\): field 'prompt' holds a list; the prompt template"
    ):
        load_task(Task(name="t", data="d.jsonl"), tmp_path)
    _jsonl(tmp_path, [{"prompt": "text", "reference": "r"}])
    with pytest.raises(
        UserError, match=r"record 1 \(line 1\): prompt field \{prompt:\.2f\} cannot format a string"
    ):
        load_task(Task(name="t", data="d.jsonl", prompt="{prompt:.2f}"), tmp_path)


def test_id_field_missing_or_misspelt_is_a_user_error(tmp_path: Path) -> None:
    _jsonl(tmp_path, [{"id": "a", "prompt": "p", "reference": "r"}, {"prompt": "q", "reference": "s"}])
    where = f"task 't' ({tmp_path / 'd.jsonl'})"
    with pytest.raises(UserError) as error:
        load_task(Task(name="t", data="d.jsonl", id_field="id"), tmp_path)
    assert str(error.value) == (
        f"{where}: record 2 (line 2) has no field 'id' (used by id_field); fields present: prompt, reference"
    )
    with pytest.raises(
        UserError, match=r"record 1 \(line 1\) has no field 'ID' \(used by id_field\); fields present: id,"
    ):
        load_task(Task(name="t", data="d.jsonl", id_field="ID"), tmp_path)
    _jsonl(tmp_path, [{"id": None, "prompt": "p", "reference": "r"}])
    with pytest.raises(
        UserError, match=r"record 1 \(line 1\): id_field 'id' holds null; ids must be strings"
    ):
        load_task(Task(name="t", data="d.jsonl", id_field="id"), tmp_path)
    _jsonl(
        tmp_path, [{"id": 7, "prompt": "p", "reference": "r"}, {"id": "7", "prompt": "q", "reference": "s"}]
    )
    with pytest.raises(UserError, match=r"field 'id' repeats id '7' \(records 1 and 2\)"):
        load_task(Task(name="t", data="d.jsonl", id_field="id"), tmp_path)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("Q: {prompt", r"prompt: expected '\}' before end of string; write a literal brace as \{\{ or \}\}"),
        ("Q: prompt}", r"prompt: Single '\}' encountered in format string; write a literal brace as \{\{"),
        ("Q: {0}", r"prompt: \{0\} is a positional field; name a record field instead"),
        ("Q: {}", r"prompt: \{\} is a positional field"),
        ("Q: {a.b}", r"prompt: \{a\.b\}: attribute and index lookups are not supported"),
        ("Q: {a[0]}", r"prompt: \{a\[0\]\}: attribute and index lookups are not supported"),
        ("Q: {a!x}", r"prompt: \{a!x\}: unknown conversion"),
        ("Q: {a:{w}}", r"prompt: \{a:\{w\}\}: nested fields"),
    ],
)
def test_a_bad_template_fails_before_any_record_is_read(tmp_path: Path, prompt: str, message: str) -> None:
    # The data file does not even exist: the task-level template check comes first.
    with pytest.raises(UserError, match=rf"^task 't': {message}"):
        load_task(Task(name="t", data="missing.jsonl", prompt=prompt), tmp_path)


def test_run_with_a_bad_template_exits_2_naming_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _jsonl(tmp_path, [{"prompt": "p", "reference": "r"}])
    suite = {
        "name": "s",
        "models": [{"name": "m", "path": str(tmp_path / "no-model")}],
        "tasks": [{"name": "t", "data": "d.jsonl", "prompt": "Answer {prompt} in {JSON}}"}],
        "metrics": ["bleu"],
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite), encoding="utf-8")
    assert (
        main(["run", str(tmp_path / "suite.yaml"), "--output-dir", str(tmp_path / "reports")])
        == EXIT_USER_ERROR
    )
    assert "task 't': prompt: Single '}' encountered" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()  # failed before any work
