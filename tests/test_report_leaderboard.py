"""The leaderboard: the latest result per cell without mixing data versions, a sampling row's batch
size in its identity, escaping through the shared page shell, and old schema-1 run folders read
through ``RunFolder`` beside new ones."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from test_report_html import (
    EXAMPLES,
    GOOD,
    HOSTILE_NAME,
    WORSE,
    copy_v1_run,
    make_run,
    rename_row,
)

from aigc_eval.errors import UserError
from aigc_eval.record import RunRecord
from aigc_eval.report.html import REPORT_FILE, write_run_report
from aigc_eval.report.leaderboard import build_leaderboard, text_sparkline
from aigc_eval.report.tables import format_score
from aigc_eval.run_folder import RunFolder


def board_csv(runs: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(build_leaderboard(runs, "csv"))))


def test_leaderboard_latest_history_and_data_versions(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    old = make_run(runs / "a", {"good": WORSE, "worse": WORSE}, finished="2026-01-01T00:00:00+00:00")
    new = make_run(runs / "b", {"good": GOOD, "worse": WORSE}, finished="2026-01-03T00:00:00+00:00")
    mid = make_run(runs / "c", {"good": GOOD}, EXAMPLES[:4], "2026-01-02T00:00:00+00:00")
    hot = make_run(
        runs / "d",
        {"good": WORSE},
        finished="2026-01-02T12:00:00+00:00",
        generation={"good": {"temperature": 0.7, "do_sample": True}},
    )
    write_run_report(new)

    rows = [r for r in board_csv(runs) if r["metric"] == "bleu" and r["model_setting"].startswith("good")]
    latest = {r["run_id"]: r for r in rows}
    # One cell per (setting, data version): the plain row on each data file, and the sampling row,
    # which has the same name but other settings, so it is a line of its own, labelled apart.
    assert sorted(latest) == sorted([new.name, mid.name, hot.name]) and len(rows) == 3
    assert latest[new.name]["model_setting"] == latest[mid.name]["model_setting"]
    assert latest[hot.name]["model_setting"] not in ("good", latest[new.name]["model_setting"])
    good_new = RunFolder.open(new).read_record().entry("good", "mixed").metrics["bleu"].score  # type: ignore[union-attr]
    assert float(latest[new.name]["score"]) == good_new  # latest by finish time, not by folder name
    assert latest[new.name]["n_runs"] == "2" and latest[new.name]["history"].startswith("2026-01-01")
    assert latest[mid.name]["n"] == "4" and latest[mid.name]["data_sha256"] != latest[new.name]["data_sha256"]

    md = build_leaderboard(runs, "md")
    assert md.count("## mixed") == 2 and "different data versions" in md
    assert f"(b/{new.name}/{REPORT_FILE})" in md and old.name not in md.split("- task")[0]

    out = tmp_path / "site" / "board.html"
    out.parent.mkdir()
    page = build_leaderboard(runs, "html", output=out)
    assert f'href="../runs/b/{new.name}/{REPORT_FILE}"' in page
    assert page.count('<svg class="sparkline"') >= 1


def test_leaderboard_keeps_a_sampling_rows_batch_size_apart(tmp_path: Path) -> None:
    """Seeds are per batch: a sampling row at another batch size made other text; a greedy one did not."""
    runs = tmp_path / "runs"
    sampling = {"sampler": {"do_sample": True, "max_new_tokens": 8}}
    for folder, batch_size in (("a", 8), ("b", 4)):
        make_run(
            runs / folder, {"greedy": GOOD, "sampler": WORSE}, generation=sampling, batch_size=batch_size
        )
    settings = {r["model_setting"] for r in board_csv(runs) if r["metric"] == "bleu"}
    assert len([s for s in settings if s.startswith("greedy")]) == 1
    assert len([s for s in settings if s.startswith("sampler")]) == 2


def test_leaderboard_escapes_names(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    rename_row(make_run(runs, {"evil": GOOD}), "evil", HOSTILE_NAME)
    page = build_leaderboard(runs, "html")
    assert page.count("<script") == 1 and "&lt;script&gt;window.__pwned = 4&lt;/script&gt;" in page
    assert "<script>" not in build_leaderboard(runs, "md")


def test_leaderboard_without_runs_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no run folders"):
        build_leaderboard(tmp_path, "html")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{")
    with pytest.raises(UserError, match="no run folders"):
        build_leaderboard(tmp_path, "md")


def test_text_sparkline() -> None:
    assert text_sparkline([1.0, 2.0, 3.0]) == "▁▅█"
    assert text_sparkline([2.0, 2.0]) == "▁▁"


def test_leaderboard_reads_a_schema_1_folder_beside_a_new_one(tmp_path: Path) -> None:
    """An old run (schema 1, migrated on load) and a later schema-2 run of the same suite: one history
    per cell, the latest score from the new run, and the page's trend over both."""
    runs = tmp_path / "runs"
    old = copy_v1_run(runs / "demo" / "20261202-132849-c437c541")
    old_record = RunFolder.open(old).read_record()
    assert json.loads((old / RunFolder.RESULTS).read_text(encoding="utf-8"))["schema_version"] == 1
    # The next run: the same suite, one row's BLEU moved, written by RunFolder in the current schema.
    entry = old_record.entry("demo-greedy", "en")
    assert entry is not None
    bleu = entry.metrics["bleu"]
    moved = bleu.model_copy(update={"score": bleu.value + 1.5})
    results = [
        e.model_copy(update={"metrics": {**e.metrics, "bleu": moved}}) if e is entry else e
        for e in old_record.results
    ]
    new_record = RunRecord.model_validate(
        {
            **old_record.model_dump(),
            "run_id": "20261203-090000-c437c541",
            "finished": "2026-12-03T09:00:00+00:00",
            "results": [r.model_dump() for r in results],
        }
    )
    new = RunFolder(runs / "demo" / new_record.run_id)
    new.path.mkdir()
    new.write_record(new_record)

    cell = next(
        r
        for r in board_csv(runs)
        if r["task"] == "en" and r["metric"] == "bleu" and r["model_setting"] == "demo-greedy"
    )
    assert cell["run_id"] == new_record.run_id and float(cell["score"]) == moved.score
    assert cell["n_runs"] == "2" and cell["history"] == (
        f"{old_record.finished}={bleu.score!r};{new_record.finished}={moved.score!r}"
    )
    page = build_leaderboard(runs, "html")
    match = re.search(
        r'<td class="num[^"]*" data-v="([^"]*)" data-setting="demo-greedy" data-metric="bleu">(.*?)</td>',
        page.split('<section id="task-en-')[1],
        re.S,
    )
    assert match and float(match.group(1)) == moved.score
    assert f">{format_score(moved.score)}</a>" in match.group(2) and 'class="sparkline"' in match.group(2)
    assert 'aria-label="history of 2 runs"' in match.group(2)
    # Both runs in the runs table, newest first; neither has a report.html, so they link results.json.
    assert page.index(f">{new_record.run_id}</a>") < page.index(f">{old_record.run_id}</a>")
    assert f'href="demo/{old.name}/results.json"' in page
