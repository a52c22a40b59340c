"""Output writers are plug-ins: a writer registered from a test runs once in ``write_outputs`` beside the
built-in table.md, table.csv and report.html, each written through the run folder."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from test_report_html import GOOD, WORSE, make_run

from aigc_eval.errors import UserError
from aigc_eval.outputs import write_outputs, writers
from aigc_eval.record import RunRecord
from aigc_eval.report.html import render_record
from aigc_eval.report.tables import to_csv, to_markdown
from aigc_eval.run_folder import RunFolder

calls: list[tuple[str, str, Any]] = []


@pytest.fixture
def toy_writer() -> Iterator[str]:
    @writers.register("scores.txt")
    class ScoresText:
        """One line per row × task × output: the smallest writer there is."""

        name: ClassVar[str] = "scores.txt"

        def write(self, folder: RunFolder, record: RunRecord, comparison: Any | None) -> Path:
            calls.append((str(folder.path), record.run_id, comparison))
            lines = [
                f"{e.model} {e.task} {m} {s.score!r}" for e in record.results for m, s in e.metrics.items()
            ]
            return folder.write_output(self.name, "\n".join(lines) + "\n")

    calls.clear()
    yield "scores.txt"
    writers.unregister("scores.txt")


def test_write_outputs_runs_every_writer_once(tmp_path: Path, toy_writer: str) -> None:
    folder = RunFolder.open(make_run(tmp_path, {"good": GOOD, "worse": WORSE}))
    record = folder.read_record()
    written = write_outputs(folder, record)
    assert sorted(p.name for p in written) == sorted(["report.html", "scores.txt", "table.csv", "table.md"])
    assert all(p.parent == folder.path for p in written)
    assert calls == [(str(folder.path), record.run_id, None)]  # once, with the record it was given
    toy = (folder.path / toy_writer).read_text(encoding="utf-8").splitlines()
    assert len(toy) == sum(len(e.metrics) for e in record.results)
    assert toy[0] == f"good mixed bleu {record.results[0].metrics['bleu'].score!r}"
    assert (folder.path / "table.md").read_text(encoding="utf-8") == to_markdown(record)
    assert (folder.path / "table.csv").read_text(encoding="utf-8") == to_csv(record)
    assert (folder.path / "report.html").read_text(encoding="utf-8") == render_record(folder, record)


def test_write_outputs_by_name_and_unknown_names(tmp_path: Path, toy_writer: str) -> None:
    folder = RunFolder.open(make_run(tmp_path, {"good": GOOD}))
    assert [p.name for p in write_outputs(folder, folder.read_record(), names=[toy_writer])] == [toy_writer]
    assert not (folder.path / "report.html").exists() and len(calls) == 1
    with pytest.raises(UserError, match=r"unknown output writer 'nope'.*report\.html.*scores\.txt"):
        write_outputs(folder, folder.read_record(), names=["nope"])


def test_the_writer_registry_imports_no_report_code() -> None:
    """The pipeline imports ``aigc_eval.outputs``; the report modules load only when a writer is used."""
    code = (
        "import sys, aigc_eval.outputs as o; "
        "assert not [m for m in sys.modules if m.startswith('aigc_eval.report')], 'imported early'; "
        "o.writers.get('table.md'); "
        "assert 'aigc_eval.report.tables' in sys.modules and 'aigc_eval.report.html' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
