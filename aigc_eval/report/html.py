"""``report.html``: one self-contained page per run, for people rather than programs.

Entry points (used by the CLI's ``aigc-eval report RUN_DIR`` and by the output writers):

* ``render_run_report(run, comparison=None) -> str``: the page of a run folder (a ``RunFolder`` or
  its path), read back from its record and samples, like every other output;
* ``render_record(folder, record, comparison=None) -> str``: the page of a record in hand (finalize
  has it in memory);
* ``write_run_report(run, comparison=None) -> Path``: render and write ``report.html`` into the folder;
* ``ReportWriter``: the ``report.html`` output writer (``aigc_eval.outputs.writers``).

``comparison`` (an ``aigc_eval.gate.Comparison`` whose current run is this one, e.g. its rows
against a baseline row of the same run; read by attribute only) adds significance marks.
The page is the templates in ``report/templates`` (run.html.j2 and one template per section); the
pieces come from sections (tables), charts, browser (samples and diffs) and thumbnails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from aigc_eval.outputs import writers
from aigc_eval.record import RunRecord
from aigc_eval.report import browser, charts, sections, thumbnails
from aigc_eval.report.formatting import short_time
from aigc_eval.report.shell import Fact, colors, render_page
from aigc_eval.report.tables import row_order
from aigc_eval.run_folder import RunFolder

REPORT_FILE = "report.html"


def _folder(run: RunFolder | str | Path) -> RunFolder:
    return run if isinstance(run, RunFolder) else RunFolder.open(run)


def render_run_report(run: RunFolder | str | Path, comparison: Any | None = None) -> str:
    """The report page of a run folder, as a string."""
    folder = _folder(run)
    return render_record(folder, folder.read_record(), comparison)


def write_run_report(run: RunFolder | str | Path, comparison: Any | None = None) -> Path:
    """Write ``report.html`` into the run folder and return its path."""
    folder = _folder(run)
    return ReportWriter().write(folder, folder.read_record(), comparison)


@writers.register(REPORT_FILE)
class ReportWriter:
    name: ClassVar[str] = REPORT_FILE

    def write(self, folder: RunFolder, record: RunRecord, comparison: Any | None) -> Path:
        return folder.write_output(self.name, render_record(folder, record, comparison))


def render_record(folder: RunFolder, record: RunRecord, comparison: Any | None = None) -> str:
    """The page of ``record`` (the run in ``folder``, whose samples it shows)."""
    # A run folder without samples.jsonl (e.g. image rows only, or written elsewhere) still shows its scores.
    samples = folder.read_samples() if folder.file(RunFolder.SAMPLES).is_file() else []
    rows = row_order(record)
    palette = colors(rows)
    images = thumbnails.thumbnails(record, rows, palette)
    has_text = bool(sections.text_tasks(record))
    nav = [
        ("results", "Results"),
        ("settings", "Settings"),
        ("plots", "Plots"),
        *([("images", "Images")] if images else []),
        *([("samples", "Samples")] if has_text else []),
        ("method", "Method"),
    ]
    return render_page(
        "run.html.j2",
        title=f"{record.suite_name} · {record.run_id}",
        nav=nav,
        data=browser.browser_data(record, samples, rows, palette),
        suite_name=record.suite_name,
        description=record.suite.get("description") or "",
        header_facts=_facts(record),
        results=sections.results_table(record, rows, palette, comparison, folder.path),
        settings=sections.settings(record, rows, palette),
        plots=charts.plots(record, samples, rows, palette),
        images=images,
        max_thumbs=thumbnails.MAX_THUMBS,
        thumb_px=thumbnails.THUMB_PX,
        method=sections.method(record),
    )


def _facts(record: RunRecord) -> list[Fact]:
    env = record.environment
    commit = env.git_commit or "not a git checkout"
    samples = f"first {record.limit} per task (--limit)" if record.limit else "all"
    return [
        Fact("run id", record.run_id, code=True),
        Fact("finished", short_time(record.finished)),
        Fact("git commit", commit[:12], code=True, title=commit),
        Fact("config hash", record.config_hash[:12], code=True, title=record.config_hash),
        Fact("device", sections.devices(record)),
        Fact("samples", samples),
        Fact("python · platform", f"{env.python} · {env.platform}"),
        Fact("packages", ", ".join(f"{k} {v}" for k, v in env.packages.items()), wide=True),
    ]
