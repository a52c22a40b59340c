"""Reading task files into examples: JSONL, CSV/TSV or plain text, plus prompt templates.

Files are read as bytes and decoded here, never with Python's universal newlines: a record or a
line ends at "\n" only (CSV: where the csv module says), so a lone "\r" or a U+2028 inside the
text stays part of it. A leading UTF-8 BOM is dropped in every format.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigc_eval.config import Task
from aigc_eval.errors import UserError

_BOM = "\ufeff"
_JSON_WHITESPACE = " \t\r"  # what json.loads skips around a value, besides "\n" (the record separator)
_CONVERSIONS = {"r": repr, "s": str, "a": ascii}

# A parsed prompt template: (literal text, field name or None, format spec, conversion) per piece.
Template = list[tuple[str, str | None, str | None, str | None]]


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class TaskData:
    task: Task
    path: Path
    examples: tuple[Example, ...]
    content_hash: str  # sha256 of the file's bytes: pairs runs and guards resume

    @property
    def lang(self) -> str | None:
        return self.task.lang


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise UserError(
            f"{path}: {what} not found; check the path (relative paths resolve against the suite)"
        )
    try:
        return path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read the {what} ({error.strerror or error})") from None


def _decode(path: Path, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{path}: not valid UTF-8 (byte {error.start}); re-encode the file as UTF-8"
        ) from None
    return text.removeprefix(_BOM)


def read_text_file(path: Path, what: str) -> str:
    """The file's UTF-8 text exactly as stored (no newline translation), minus a leading BOM."""
    return _decode(path, _read_bytes(path, what))


def _split_lines(text: str) -> list[str]:
    """Lines ending at "\n" only (what iterating a file opened with ``newline="\n"`` yields)."""
    lines = text.split("\n")
    if lines[-1] == "":  # the empty piece after the final "\n" is no line
        lines.pop()
    return lines


def read_lines(path: Path, what: str) -> list[str]:
    """Line-aligned text (one sample per line), read exactly as sacrebleu's CLI reads it.

    sacrebleu opens files with ``newline="\n"`` and ``rstrip()``s each line, so a "\r\n" ending
    and trailing whitespace go while a lone "\r" inside a line stays. One deliberate difference:
    a leading BOM is dropped (sacrebleu would glue it to the first word of the first line).
    """
    return [line.rstrip() for line in _split_lines(read_text_file(path, what))]


@dataclass(frozen=True)
class _Record:
    line: int  # where the record starts in the file (1-based), for error messages
    fields: dict[str, Any]


def _jsonl_records(path: Path, text: str) -> list[_Record]:
    records = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip(_JSON_WHITESPACE):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(
                f"{path}:{number}: invalid JSON ({error.msg}); each line must be one object"
            ) from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: each JSONL line must be a JSON object")
        records.append(_Record(number, record))
    return records


def _csv_records(path: Path, text: str, delimiter: str) -> list[_Record]:
    """Rows keyed by the header, parsed as the csv module parses a file opened with ``newline=""``."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    shown = "a tab" if delimiter == "\t" else f"'{delimiter}'"
    records = []
    try:
        header = next((row for row in reader if row), None)  # blank lines before it are skipped
        if header is None:
            return []
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise UserError(
                f"{path}:1: the header repeats column {repeated[0]!r}; column names must be unique"
            )
        start = reader.line_num + 1
        for row in reader:
            if row and len(row) != len(header):
                raise UserError(
                    f"{path}:{start}: {len(row)} fields but the header has {len(header)}; "
                    f"quote fields that contain {shown}, quotes or line breaks"
                )
            if row:
                records.append(_Record(start, dict(zip(header, row, strict=True))))
            start = reader.line_num + 1
    except csv.Error as error:
        raise UserError(f"{path}:{reader.line_num}: invalid CSV ({error})") from None
    return records


def _records(path: Path, text: str, fmt: str) -> list[_Record]:
    if fmt == "jsonl":
        return _jsonl_records(path, text)
    if fmt in ("csv", "tsv"):
        return _csv_records(path, text, "," if fmt == "csv" else "\t")
    # Plain text: one record per line, in the field `text`, kept as written but for a "\r\n" ending.
    return [_Record(n, {"text": line.removesuffix("\r")}) for n, line in enumerate(_split_lines(text), 1)]


def _format_of(task: Task, path: Path) -> str:
    if task.format != "auto":
        return task.format
    suffix = path.suffix.lower()
    known = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "text"}
    if suffix not in known:
        raise UserError(
            f"{path}: cannot tell the format from '{suffix}'; set format: jsonl, csv, tsv or text"
        )
    return known[suffix]


def parse_template(template: str) -> Template:
    """Check a prompt template once, before any record is read; ValueError says what is wrong.

    Only named top-level fields are allowed: ``{0}``/``{}`` have no positional argument to fill,
    and ``{a.b}``/``{a[0]}`` would reach into Python objects rather than the record.
    """
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"{error}; write a literal brace as {{{{ or }}}}") from None
    for _, field, spec, conversion in pieces:
        if field is None:
            continue
        if field == "" or field.isdigit():
            raise ValueError(
                f"{{{field}}} is a positional field; name a record field instead, like {{prompt}}"
            )
        if "." in field or "[" in field:
            raise ValueError(
                f"{{{field}}}: attribute and index lookups are not supported; name a top-level "
                "record field (rename a field whose name contains '.' or '[')"
            )
        if spec and "{" in spec:
            raise ValueError(f"{{{field}:{spec}}}: nested fields in a format spec are not supported")
        if conversion is not None and conversion not in _CONVERSIONS:
            raise ValueError(f"{{{field}!{conversion}}}: unknown conversion; use !r, !s or !a")
    return pieces


def template_fields(template: Template) -> list[str]:
    return [field for _, field, _, _ in template if field is not None]


def _kind(value: Any) -> str:
    """How a JSON value reads in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    return "an object"


def _render(template: Template, record: dict[str, Any], at: str) -> str:
    """Fill the template from the record: strings and numbers (format specs apply), null as ""."""
    parts = []
    for literal, field, spec, conversion in template:
        parts.append(literal)
        if field is None:
            continue
        value = record[field]
        if value is None:
            value = ""
        elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise UserError(
                f"{at}: field {field!r} holds {_kind(value)}; the prompt template inserts only "
                "strings and numbers (write the text you want as a string)"
            )
        if conversion is not None:
            value = _CONVERSIONS[conversion](value)
        try:
            parts.append(format(value, spec or ""))
        except ValueError as error:
            raise UserError(
                f"{at}: prompt field {{{field}:{spec}}} cannot format {_kind(value)} ({error}); "
                "fix the format spec in `prompt` or the value"
            ) from None
    return "".join(parts)


def _references(task: Task, record: dict[str, Any], at: str) -> tuple[str, ...]:
    """A string is one reference, a list of strings several; null means none in that field."""
    references: list[str] = []
    for field in task.references:
        value = record[field]
        if value is None:
            continue
        if isinstance(value, str):
            references.append(value)
        elif isinstance(value, list) and value and all(isinstance(item, str) for item in value):
            references.extend(value)
        else:
            detail = _kind(value)
            if isinstance(value, list) and value:
                index, item = next((i, v) for i, v in enumerate(value) if not isinstance(v, str))
                detail = f"a list whose item {index + 1} is {_kind(item)}"
            raise UserError(
                f"{at}: reference field {field!r} holds {detail}; a reference must be a string "
                "or a non-empty list of strings (several references)"
            )
    if not references:
        raise UserError(f"{at}: no non-null reference in field(s) {', '.join(map(repr, task.references))}")
    return tuple(references)


def _identifier(task: Task, record: dict[str, Any], index: int, at: str) -> str:
    if task.id_field is None:
        return str(index)
    value = record[task.id_field]
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise UserError(f"{at}: id_field {task.id_field!r} holds {_kind(value)}; ids must be strings or integers")


def _example(task: Task, template: Template, where: str, index: int, record: _Record) -> Example:
    at = f"{where}: record {index + 1} (line {record.line})"
    wanted = [(f, "prompt") for f in template_fields(template)] + [(f, "references") for f in task.references]
    if task.id_field is not None:
        wanted.append((task.id_field, "id_field"))
    missing = list(dict.fromkeys(f"{f!r} (used by {key})" for f, key in wanted if f not in record.fields))
    if missing:
        raise UserError(
            f"{at} has no field {', '.join(missing)}; fields present: {', '.join(record.fields) or 'none'}"
        )
    return Example(
        id=_identifier(task, record.fields, index, at),
        prompt=_render(template, record.fields, at),
        references=_references(task, record.fields, at),
    )


def load_task(task: Task, base_dir: Path, limit: int | None = None) -> TaskData:
    """Load a task's examples; ``limit`` (CLI) caps the task's own ``limit``."""
    path = (base_dir / task.data).resolve()
    where = f"task {task.name!r} ({path})"
    try:
        template = parse_template(task.prompt)
    except ValueError as error:
        raise UserError(f"task {task.name!r}: prompt: {error}") from None
    fmt = _format_of(task, path)
    raw = _read_bytes(path, "dataset file")
    records = _records(path, _decode(path, raw), fmt)
    if not records:
        raise UserError(f"{where}: the file has no records")
    caps = [n for n in (task.limit, limit) if n is not None]
    records = records[: min(caps)] if caps else records
    examples = tuple(_example(task, template, where, i, r) for i, r in enumerate(records))
    first: dict[str, int] = {}
    for index, example in enumerate(examples):
        if example.id in first:
            raise UserError(
                f"{where}: field {task.id_field!r} repeats id {example.id!r} (records "
                f"{first[example.id] + 1} and {index + 1}); ids must be unique"
            )
        first[example.id] = index
    return TaskData(task=task, path=path, examples=examples, content_hash=hashlib.sha256(raw).hexdigest())


def aligned_references(
    reference_files: Sequence[Sequence[str]], n_predictions: int, names: Sequence[str]
) -> list[list[str]]:
    """Turn several line-aligned reference files into sample-major reference lists."""
    for lines, name in zip(reference_files, names, strict=True):
        if len(lines) != n_predictions:
            raise UserError(
                f"{name}: {len(lines)} lines but the predictions have {n_predictions}; "
                "files must be line-aligned (one sample per line)"
            )
    return [[lines[i] for lines in reference_files] for i in range(n_predictions)]


@dataclass(frozen=True)
class ImageTaskData:
    """An image task's reference set, resolved and fingerprinted (pairs runs, like TaskData)."""

    task: Task
    reference: Path
    content_hash: str
    n: int | None  # None for precomputed statistics

    @property
    def lang(self) -> None:
        return None


def load_image_task(task: Task, base_dir: Path) -> ImageTaskData:
    from aigc_eval.images import is_stats_file, open_image_set

    reference = (base_dir / task.reference).resolve() if task.reference else base_dir
    if task.reference is None:
        return ImageTaskData(task, reference, "", None)
    if is_stats_file(reference):
        if not reference.is_file():
            raise UserError(f"task {task.name!r}: reference {reference} not found; fix `reference`")
        return ImageTaskData(task, reference, hashlib.sha256(reference.read_bytes()).hexdigest(), None)
    images = open_image_set(reference)
    digest = hashlib.sha256("\n".join(images.hashes).encode()).hexdigest()
    return ImageTaskData(task, reference, digest, len(images))
