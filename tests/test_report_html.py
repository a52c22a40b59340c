"""report.html and the leaderboard without a browser: injected markup stays text, the numbers are
results.json's, and the leaderboard keeps the latest result per cell without mixing data versions.

Run folders are written by the real ``write_run_outputs`` from real metric scores of fixed
predictions, so no model is loaded and the tests stay fast.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from aigc_eval import runner
from aigc_eval.config import parse_suite
from aigc_eval.data import load_task
from aigc_eval.errors import UserError
from aigc_eval.report.html import REPORT_FILE, char_diff, render_run_report, word_diff, write_run_report
from aigc_eval.report.leaderboard import build_leaderboard, text_sparkline
from aigc_eval.report.tables import format_score
from aigc_eval.results import load_results

INJECTED = '</script><script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
EXAMPLES = [
    ("s0", "David walked to the market and", "bought two sweet oranges."),
    ("s1", "Bob lives in Paris. Every day, Bob", "teaches mathematics to young children."),
    ("s2", "It was raining, so Henry", "took an umbrella to work."),
    ("s3", "Alice has a brown horse. The", "horse runs across the green field."),
    ("s4", "<script>window.__pwned = 3</script> Tom & Jerry", "ran <fast> & far."),
    ("s5", "星期天下午，小刚去面包店", "买了三块巧克力蛋糕。"),
]
GOOD = [
    " bought two sweet oranges.",
    " teaches mathematics to children.",
    " took an umbrella to work.",
    " horse runs across the field.",
    " ran <fast> & far.",
    "买了六块巧克力蛋糕。",
]
WORSE = [
    " bought three sour lemons.",
    " teaches mathematics to young children.",
    INJECTED,
    " horse sleeps.",
    " ran.",
    "",
]


def write_data(path: Path, examples: list[tuple[str, str, str]] = EXAMPLES) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": i, "prompt": p, "reference": r}, ensure_ascii=False) + "\n"
            for i, p, r in examples
        ),
        encoding="utf-8",
    )
    return path


HOSTILE_NAME = "<script>window.__pwned = 4</script>"


def rename_row(run: Path, old: str, new: str) -> Path:
    """Give a row a name the schema refuses (a run folder written elsewhere may still hold one)."""
    for file in [*run.glob("*.json"), *run.glob("*.jsonl")]:
        text = file.read_text(encoding="utf-8")
        file.write_text(text.replace(json.dumps(old), json.dumps(new)), encoding="utf-8")
    return run


def make_run(
    folder: Path,
    predictions: dict[str, list[str]],
    data: Path,
    finished: str = "2026-01-01T00:00:00+00:00",
    generation: dict[str, dict[str, Any]] | None = None,
    task: str = "mixed",
) -> Path:
    """A run folder as 'aigc-eval run' writes it, from fixed predictions scored by the real metrics."""
    suite = parse_suite(
        {
            "name": "report-test",
            "description": "Report <b>test</b> & escaping",
            "intervals": {"n_resamples": 100},
            "regression": {"n_trials": 200},
            "models": [
                {
                    "name": name,
                    "path": "unused",
                    "generation": (generation or {}).get(name, {"max_new_tokens": 8}),
                }
                for name in predictions
            ],
            "tasks": [{"name": task, "data": str(data), "id_field": "id"}],
            "metrics": [
                "bleu",
                "chrf",
                {"name": "rouge", "rouge_types": ["rouge1", "rougeL"]},
                "descriptors",
            ],
        }
    )
    tasks = [load_task(t, data.parent) for t in suite.tasks]
    pool = runner.BackendPool(suite, data.parent)
    outcomes = []
    for row in suite.models:
        texts = predictions[row.name][: len(tasks[0].examples)]
        scores, per_sample, stats = runner.score_row_task(pool, suite, row, tasks[0], texts)
        timing = {"generation_s": 0.5, "generated_tokens": 40, "tokens_per_s": 80.0, "scoring_s": 0.01}
        outcomes.append(runner.RowTaskOutcome(row.name, task, texts, scores, per_sample, stats, timing))
    models = {
        r.name: {
            "model": "unused",
            "revision": "",
            "weights_sha256": "ab" * 32,
            "dtype": "float32",
            "device": "cpu",
        }
        for r in suite.models
    }
    run_dir = folder / finished.replace(":", "")[:17]
    run_dir.mkdir(parents=True)
    with mock.patch.object(runner, "now_iso", return_value=finished):
        runner.write_run_outputs(run_dir, suite, suite.config_hash(), tasks, models, outcomes, None)
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    return make_run(folder / "runs", {"good": GOOD, "worse": WORSE}, write_data(folder / "data.jsonl"))


class _Cells(HTMLParser):
    """The results table's score cells: (model, task, metric) -> (data-v, shown text)."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str, str], list[str]] = {}
        self._key: tuple[str, str, str] | None = None
        self._in_score = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and "data-model" in a:
            self._key = (a["data-model"] or "", a["data-task"] or "", a["data-metric"] or "")
            self.cells[self._key] = [a["data-v"] or "", ""]
        self._in_score = tag == "span" and a.get("class") == "score" and self._key is not None

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._key = None
        self._in_score = False

    def handle_data(self, data: str) -> None:
        if self._in_score and self._key:
            self.cells[self._key][1] += data


IMAGES = Path(__file__).resolve().parents[1] / "suites" / "data" / "images"


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run of an image task: two 'backend: images' rows and a reference, six images each; the
    faithful row's list also names a copy of one image called '<script>x.png'."""
    folder = tmp_path_factory.mktemp("image-report")
    for name in ("reference", "gen-faithful", "gen-degraded"):
        lines = [str(IMAGES / name / f"{i:03d}.png") for i in range(6)]
        if name == "gen-faithful":
            shutil.copy(IMAGES / name / "006.png", folder / "<script>x.png")
            lines.append("<script>x.png")
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    suite = {
        "name": "image-report",
        "models": [
            {"name": "faithful", "backend": "images", "images": {"shapes": "gen-faithful.txt"}},
            {"name": "degraded", "backend": "images", "images": {"shapes": "gen-degraded.txt"}},
        ],
        "tasks": [
            {
                "name": "shapes",
                "kind": "image",
                "reference": "reference.txt",
                "backbone": "efficientnet-lite0",
                "image_metrics": ["fid"],
            }
        ],
        "metrics": ["bleu"],  # required; no text task uses it
    }
    (folder / "suite.json").write_text(json.dumps(suite), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIGC_EVAL_CACHE_DIR", str(folder / "cache"))
        return runner.run_suite(folder / "suite.json", folder / "runs")


def thumbnails(page: str, label: str) -> list[str]:
    """The thumbnail <img> tags of the image set labelled ``label`` in the Images section."""
    match = re.search(
        rf'<div class="thumbset"><div class="head">(?:<span[^>]*></span>)?<b>{label}</b>'
        r'.*?<div class="thumbs">(.*?)</div></div>',
        page,
        re.S,
    )
    assert match, f"no thumbnails for {label}"
    return re.findall(r"<img [^>]*>", match.group(1))


def test_report_shows_image_thumbnails_and_scores(image_run: Path) -> None:
    results = load_results(image_run)
    page = (image_run / REPORT_FILE).read_text(encoding="utf-8")
    for label, count in (("reference", 6), ("faithful", 7), ("degraded", 6)):
        imgs = thumbnails(page, label)
        assert len(imgs) == count and all('src="data:image/png;base64,' in img for img in imgs), label
    assert 'title="&lt;script&gt;x.png"' in page and "<script>x.png" not in page
    assert page.count("<script") == 2  # the data block and the page's own script
    parser = _Cells()
    parser.feed(page)
    expected = {
        (e["model"], e["task"], m): v["score"] for e in results["results"] for m, v in e["metrics"].items()
    }
    assert set(parser.cells) == set(expected) and len(expected) == 2
    for key, score in expected.items():
        assert float(parser.cells[key][0]) == score and parser.cells[key][1] == format_score(score), key
    # No text task: no sample browser (its script needs one) and no per-sample box plots.
    assert 'id="sample-browser"' not in page and "per sample (median at right)" not in page
    assert embedded_data(page)["tasks"] == []


def test_report_copes_with_moved_or_statistics_image_sets(image_run: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(image_run, moved)
    results = json.loads((moved / "results.json").read_text(encoding="utf-8"))
    results["tasks"]["shapes"]["path"] = "/elsewhere/ref-stats.npz"
    results["results"][0]["generated_images"] = "/elsewhere/<b>gone</b>.txt"
    (moved / "results.json").write_text(json.dumps(results), encoding="utf-8")
    page = render_run_report(moved)
    assert "reference given as statistics, no images" in page
    assert "images not shown: /elsewhere/&lt;b&gt;gone&lt;/b&gt;.txt is not here" in page
    assert "<b>gone</b>" not in page
    assert len(thumbnails(page, "degraded")) == 6


def embedded_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert match, "the sample browser's data block is missing"
    return json.loads(match.group(1))


def test_report_shows_injected_markup_as_text(run_dir: Path) -> None:
    page = render_run_report(run_dir)
    assert INJECTED not in page and "<script>window.__pwned" not in page
    assert page.count("<script") == 2  # the data block and the page's own script, nothing injected
    markup = re.sub(r'<script type="application/json" id="report-data">.*?</script>', "", page, flags=re.S)
    assert "<img" not in page and "onerror" not in markup  # the attribute text exists only as JSON data
    assert "Report &lt;b&gt;test&lt;/b&gt; &amp; escaping" in page
    data = embedded_data(page)  # the JSON round-trips to the exact texts
    sample = next(s for s in data["tasks"][0]["samples"] if s["id"] == "s2")
    assert sample["preds"][1]["text"] == INJECTED
    assert next(s for s in data["tasks"][0]["samples"] if s["id"] == "s4")["prompt"] == EXAMPLES[4][1]


def test_report_numbers_equal_results_json(run_dir: Path) -> None:
    results = load_results(run_dir)
    parser = _Cells()
    parser.feed(write_run_report(run_dir).read_text(encoding="utf-8"))
    expected = {
        (e["model"], e["task"], m): v["score"] for e in results["results"] for m, v in e["metrics"].items()
    }
    assert set(parser.cells) == set(expected)
    for key, score in expected.items():
        value, shown = parser.cells[key]
        assert float(value) == score, key
        assert shown == format_score(score), key


def test_report_is_self_contained(run_dir: Path) -> None:
    page = render_run_report(run_dir)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""\b(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<link" not in page and "@import" not in page


def test_report_sample_scores_and_best_cells(run_dir: Path) -> None:
    page = render_run_report(run_dir)
    data = embedded_data(page)
    task = data["tasks"][0]
    assert [r["name"] for r in data["rows"]] == ["good", "worse"]
    assert len(task["samples"]) == len(EXAMPLES) and task["total"] == len(EXAMPLES)
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    bleu = [m["name"] for m in task["metrics"]].index("bleu")
    for s in samples:
        shown = next(x for x in task["samples"] if x["id"] == s["id"])
        assert shown["preds"][["good", "worse"].index(s["model"])]["scores"][bleu] == s["scores"]["bleu"]
    # 'good' wins BLEU, so its cell is the highlighted best; length has no direction, so no highlight.
    assert re.search(r'<td class="num first best"[^>]*data-model="good"[^>]*data-metric="bleu"', page)
    assert not re.search(r'class="num[^"]*best"[^>]*data-metric="length"', page)


def test_report_marks_significance_against_a_baseline_row(run_dir: Path) -> None:
    compare = pytest.importorskip("aigc_eval.compare")
    comparison = compare.compare_runs(run_dir, run_dir, pairs=[("good", "worse")])
    # Whatever the test decided on six samples, a regression verdict must show as a mark in its cell.
    entries = tuple(
        dataclasses.replace(e, verdict=compare.REGRESSION if e.metric == "chrf" else compare.NO_CHANGE)
        for e in comparison.entries
    )
    page = render_run_report(run_dir, dataclasses.replace(comparison, entries=entries))
    assert '<span class="tag">baseline</span>' in page
    assert "significantly better/worse than the baseline" in page
    cells = re.findall(
        r'data-model="(\w+)" data-task="mixed" data-metric="(\w+)"((?:(?!</td>).)*)</td>', page
    )
    assert [(m, metric) for m, metric, cell in cells if 'class="mark regression"' in cell] == [
        ("worse", "chrf")
    ]


def test_word_and_char_diffs() -> None:
    assert word_diff("bought two sweet oranges.", " bought three sweet oranges.") == [
        [0, " bought"],
        [-1, " two"],
        [1, " three"],
        [0, " sweet oranges."],
    ]
    assert word_diff("买了三块巧克力蛋糕。", "买了六块巧克力蛋糕。") == [
        [0, "买了"],
        [-1, "三"],
        [1, "六"],
        [0, "块巧克力蛋糕。"],
    ]
    for ref, pred in [("ran <fast> & far.", " ran."), ("", "abc"), ("abc", "")]:
        for segments in (word_diff(ref, pred), char_diff(ref, pred)):
            assert "".join(t for op, t in segments if op >= 0) == pred
        assert "".join(t for op, t in char_diff(ref, pred) if op <= 0) == ref


def test_leaderboard_latest_history_and_data_versions(tmp_path: Path) -> None:
    data, other = write_data(tmp_path / "data.jsonl"), write_data(tmp_path / "other.jsonl", EXAMPLES[:4])
    runs = tmp_path / "runs"
    old = make_run(runs / "a", {"good": WORSE, "worse": WORSE}, data, "2026-01-01T00:00:00+00:00")
    new = make_run(runs / "b", {"good": GOOD, "worse": WORSE}, data, "2026-01-03T00:00:00+00:00")
    mid = make_run(runs / "c", {"good": GOOD}, other, "2026-01-02T00:00:00+00:00")
    hot = make_run(
        runs / "d",
        {"good": WORSE},
        data,
        "2026-01-02T12:00:00+00:00",
        {"good": {"temperature": 0.7, "do_sample": True}},
    )
    write_run_report(new)

    table = list(csv.DictReader(io.StringIO(build_leaderboard(runs, "csv"))))
    rows = [r for r in table if r["metric"] == "bleu" and r["model_setting"].startswith("good")]
    latest = {r["run_id"]: r for r in rows}
    # One cell per (setting, data version): the plain row on each data file, and the sampling row,
    # which has the same name but other settings, so it is a line of its own, labelled apart.
    assert sorted(latest) == sorted([new.name, mid.name, hot.name]) and len(rows) == 3
    assert latest[new.name]["model_setting"] == latest[mid.name]["model_setting"]
    assert latest[hot.name]["model_setting"] not in ("good", latest[new.name]["model_setting"])
    good_new = next(e for e in load_results(new)["results"] if e["model"] == "good")["metrics"]["bleu"][
        "score"
    ]
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
    data, runs = write_data(tmp_path / "data.jsonl"), tmp_path / "runs"
    sampling = {"sampler": {"do_sample": True, "max_new_tokens": 8}}
    for folder, batch_size in (("a", 8), ("b", 4)):
        run = make_run(runs / folder, {"greedy": GOOD, "sampler": WORSE}, data, generation=sampling)
        results = json.loads((run / "results.json").read_text(encoding="utf-8"))
        for row in results["suite"]["models"]:
            row["batch_size"] = batch_size
        (run / "results.json").write_text(json.dumps(results), encoding="utf-8")
    table = list(csv.DictReader(io.StringIO(build_leaderboard(runs, "csv"))))
    settings = {r["model_setting"] for r in table if r["metric"] == "bleu"}
    assert len([s for s in settings if s.startswith("greedy")]) == 1
    assert len([s for s in settings if s.startswith("sampler")]) == 2


def test_leaderboard_escapes_names(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    rename_row(make_run(runs, {"evil": GOOD}, write_data(tmp_path / "d.jsonl")), "evil", HOSTILE_NAME)
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


def test_line_separators_in_text_round_trip_through_report_and_compare(tmp_path: Path) -> None:
    """U+2028/U+2029/U+0085 are legal unescaped inside JSON strings; readers split JSONL on "\\n" only."""
    from aigc_eval.compare import compare_runs

    odd = "one\u2028two\u2029three\u0085four"
    examples = [*EXAMPLES[:3], ("s3", f"A prompt {odd}", f"the reference {odd}")]
    data = write_data(tmp_path / "odd.jsonl", examples)
    run = make_run(tmp_path / "runs", {"a": [*GOOD[:3], f" pred {odd}"], "b": WORSE[:4]}, data)
    assert odd in (run / "samples.jsonl").read_text(encoding="utf-8")
    page = render_run_report(run)
    sample = next(s for s in embedded_data(page)["tasks"][0]["samples"] if s["id"] == "s3")
    assert sample["prompt"] == f"A prompt {odd}" and sample["preds"][0]["text"] == f" pred {odd}"
    comparison = compare_runs(run, run, pairs=[("a", "b")])
    assert comparison.entries and all(e.n == 4 for e in comparison.entries)
    assert any(c.baseline_prediction == f" pred {odd}" for e in comparison.entries for c in e.top_changes)


def test_a_null_score_reads_as_n_a_in_tables_report_and_compare(tmp_path: Path) -> None:
    """Strict JSON writes an undefined score as null: every reader shows it, none crashes."""
    from aigc_eval.compare import compare_runs
    from aigc_eval.report.html import write_run_report
    from aigc_eval.report.tables import task_tables

    run = make_run(tmp_path / "runs", {"a": GOOD, "b": WORSE}, write_data(tmp_path / "d.jsonl"))
    results_file = run / "results.json"
    results = json.loads(results_file.read_text(encoding="utf-8"))
    results["results"][0]["metrics"]["bleu"]["score"] = None
    results_file.write_text(json.dumps(results, allow_nan=False), encoding="utf-8")
    [table] = task_tables(json.loads(results_file.read_text(encoding="utf-8"))).values()
    assert table.loc["a", "bleu ↑"].startswith("n/a")
    write_run_report(run, None)
    assert "n/a" in (run / "report.html").read_text(encoding="utf-8")
    bleu = next(e for e in compare_runs(run, run).entries if e.metric == "bleu" and e.current_model == "a")
    assert bleu.verdict != "regression"
