"""Reading task files into examples: JSONL, CSV/TSV or plain text, plus prompt templates."""

from __future__ import annotations

import csv
import hashlib
import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigc_eval.config import Task
from aigc_eval.errors import UserError


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
    content_hash: str  # sha256 of the file: pairs runs and guards resume

    @property
    def lang(self) -> str | None:
        return self.task.lang


def read_text_file(path: Path, what: str) -> str:
    """Read UTF-8 text, turning missing/undecodable files into user errors."""
    if not path.is_file():
        raise UserError(
            f"{path}: {what} not found; check the path (relative paths resolve against the suite)"
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{path}: not valid UTF-8 (byte {error.start}); re-encode the file as UTF-8"
        ) from None


def read_lines(path: Path, what: str) -> list[str]:
    """Line-aligned text (one sample per line), as sacrebleu's CLI reads it."""
    text = read_text_file(path, what)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _records(path: Path, fmt: str) -> list[dict[str, Any]]:
    text = read_text_file(path, "dataset file")
    if fmt == "jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(
                    f"{path}:{number}: invalid JSON ({error.msg}); each line must be one object"
                ) from None
            if not isinstance(record, dict):
                raise UserError(f"{path}:{number}: each JSONL line must be a JSON object")
            records.append(record)
        return records
    if fmt in ("csv", "tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="," if fmt == "csv" else "\t")
        return list(reader)
    # Plain text: one record per line, in the field `text`.
    return [{"text": line} for line in read_lines(path, "dataset file")]


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


def template_fields(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def _example(task: Task, where: str, index: int, record: dict[str, Any]) -> Example:
    missing = [f for f in (*template_fields(task.prompt), *task.references) if f not in record]
    if missing:
        raise UserError(
            f"{where}: record {index + 1} has no field {', '.join(map(repr, missing))}; "
            f"fields present: {', '.join(record) or 'none'}"
        )
    prompt = task.prompt.format(**{k: "" if v is None else v for k, v in record.items()})
    references = tuple(str(record[f]) for f in task.references if record[f] is not None)
    if not references:
        raise UserError(f"{where}: record {index + 1} has no non-null reference in {task.references}")
    identifier = str(record[task.id_field]) if task.id_field else str(index)
    return Example(id=identifier, prompt=prompt, references=references)


def load_task(task: Task, base_dir: Path, limit: int | None = None) -> TaskData:
    """Load a task's examples; ``limit`` (CLI) caps the task's own ``limit``."""
    path = (base_dir / task.data).resolve()
    where = f"task {task.name!r} ({path})"
    fmt = _format_of(task, path)
    records = _records(path, fmt)
    if not records:
        raise UserError(f"{where}: the file has no records")
    caps = [n for n in (task.limit, limit) if n is not None]
    records = records[: min(caps)] if caps else records
    examples = tuple(_example(task, where, i, r) for i, r in enumerate(records))
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        raise UserError(f"{where}: field {task.id_field!r} has repeated ids; ids must be unique")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return TaskData(task=task, path=path, examples=examples, content_hash=digest)


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
