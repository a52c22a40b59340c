"""report.html without a browser: injected markup stays text, the numbers are the record's, each
piece (tables, charts, diffs, thumbnails, method) shows what the record holds, and an old schema-1
run folder renders as it did before.

Run folders are built here from the typed record (``aigc_eval.record``) with real metric scores of
fixed predictions (the metric registry's own ``sample_stats``/``aggregate``) and a real percentile
bootstrap, and written through ``RunFolder``: no model is loaded and no runner is involved.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aigc_eval.metrics.registry import build_metric, metric_class
from aigc_eval.record import (
    Interval,
    Provenance,
    ResultEntry,
    RunRecord,
    SampleRecord,
    StatsRecord,
    TaskRecord,
    Timing,
)
from aigc_eval.report.diff import char_diff, word_diff
from aigc_eval.report.html import render_run_report, write_run_report
from aigc_eval.report.sections import NO_DESCRIPTION
from aigc_eval.report.tables import format_score, task_tables, to_csv, to_markdown
from aigc_eval.run_folder import RunFolder, environment

ROOT = Path(__file__).resolve().parents[1]
V1_RUN = ROOT / "tests" / "assets" / "run_v1"
INJECTED = '</script><script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
HOSTILE_NAME = "<script>window.__pwned = 4</script>"
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
METRICS: list[tuple[str, dict[str, Any]]] = [
    ("bleu", {}),
    ("chrf", {}),
    ("rouge", {"rouge_types": ["rouge1", "rougeL"]}),
    ("descriptors", {}),
]
RESAMPLES = 50


def _bootstrap(metric: Any, stats: np.ndarray, output: str, seed: int = 0) -> Interval:
    """A percentile bootstrap of the statistic rows, re-aggregated per resample."""
    rng = np.random.default_rng(seed)
    n = len(stats)
    values = [metric.aggregate(stats[rng.integers(0, n, n)])[output].score for _ in range(RESAMPLES)]
    low, high = (float(v) for v in np.percentile(values, [2.5, 97.5]))
    return Interval(
        kind="bootstrap-percentile",
        low=low,
        high=high,
        half_width=(high - low) / 2,
        confidence=0.95,
        n_resamples=RESAMPLES,
        seed=seed,
    )


def make_run(
    folder: Path,
    predictions: dict[str, list[str]],
    examples: list[tuple[str, str, str]] = EXAMPLES,
    finished: str = "2026-01-01T00:00:00+00:00",
    generation: dict[str, dict[str, Any]] | None = None,
    task: str = "mixed",
    batch_size: int = 8,
) -> Path:
    """A run folder as the pipeline writes one (record, samples, stats), from fixed predictions."""
    refs = [[r] for _, _, r in examples]
    content_hash = hashlib.sha256(json.dumps(examples).encode()).hexdigest()
    results, samples, stats_rows = [], [], []
    for row, texts in predictions.items():
        texts = texts[: len(examples)]
        scores, per_sample = {}, {}
        for index, (name, options) in enumerate(METRICS):
            metric = build_metric(name, options)
            stats = metric.sample_stats(texts, refs)
            for output, score in metric.aggregate(stats).items():
                ci = None if name == "descriptors" else _bootstrap(metric, stats, output)
                scores[output] = score.to_record().model_copy(update={"ci": ci})
            per_sample.update(metric.sample_scores(stats))
            ids = [i for i, _, _ in examples]
            stats_rows.append(
                StatsRecord(
                    model=row,
                    task=task,
                    metric_index=index,
                    metric=name,
                    options=options,
                    ids=ids,
                    rows=stats.tolist(),
                )
            )
        timing = Timing(generation_s=0.5, generated_tokens=40, tokens_per_s=80.0, scoring_s=0.01)
        results.append(ResultEntry(model=row, task=task, n=len(texts), metrics=scores, timing=timing))
        samples += [
            SampleRecord(
                model=row,
                task=task,
                id=i,
                prompt=p,
                prediction=text,
                references=[r],
                scores={k: v[j] for k, v in per_sample.items()},
            )
            for j, ((i, p, r), text) in enumerate(zip(examples, texts, strict=True))
        ]
    rows = [
        {
            "name": row,
            "backend": "hf",
            "path": "unused",
            "batch_size": batch_size,
            "generation": (generation or {}).get(row, {"max_new_tokens": 8}),
        }
        for row in predictions
    ]
    suite = {
        "name": "report-test",
        "description": "Report <b>test</b> & escaping",
        "intervals": {"n_resamples": RESAMPLES, "confidence": 0.95, "seed": 0},
        "regression": {"n_trials": 200},
        "models": rows,
        "tasks": [{"name": task, "kind": "text", "data": "data.jsonl"}],
        "metrics": [{"name": name, "options": options} for name, options in METRICS],
    }
    provenance = Provenance(
        backend="hf", model="unused", weights_sha256="ab" * 32, dtype="float32", device="cpu"
    )
    record = RunRecord(
        run_id=finished.replace(":", "")[:17],
        suite_name="report-test",
        config_hash=hashlib.sha256(json.dumps(suite, sort_keys=True).encode()).hexdigest(),
        finished=finished,
        suite=suite,
        environment=environment(),
        models={row: provenance for row in predictions},
        tasks={task: TaskRecord(kind="text", path="data.jsonl", content_hash=content_hash, n=len(examples))},
        results=results,
    )
    run = RunFolder(folder / record.run_id)
    run.path.mkdir(parents=True)
    run.write_record(record)
    run.write_samples(samples)
    run.write_stats(stats_rows)
    return run.path


def rename_row(run: Path, old: str, new: str) -> Path:
    """Give a row a name the suite schema refuses (a run folder written elsewhere may still hold one)."""
    for file in [*run.glob("*.json"), *run.glob("*.jsonl")]:
        text = file.read_text(encoding="utf-8")
        file.write_text(text.replace(json.dumps(old), json.dumps(new)), encoding="utf-8")
    return run


def copy_v1_run(target: Path) -> Path:
    """The schema-1 demo run folder, with its absolute data and image paths pointing at this checkout."""
    shutil.copytree(V1_RUN, target)
    results = target / "results.json"
    text = results.read_text(encoding="utf-8").replace("/work/main/suites", str(ROOT / "suites"))
    results.write_text(text, encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("report") / "runs", {"good": GOOD, "worse": WORSE})


@pytest.fixture(scope="module")
def v1_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_v1_run(tmp_path_factory.mktemp("v1") / "20261202-132849-c437c541")


class Cells(HTMLParser):
    """The results table's score cells: (model, task, metric) -> [data-v, shown text]."""

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


def score_cells(page: str) -> dict[tuple[str, str, str], list[str]]:
    parser = Cells()
    parser.feed(page)
    return parser.cells


def expected_scores(run: Path) -> dict[tuple[str, str, str], float | None]:
    record = RunFolder.open(run).read_record()
    return {(e.model, e.task, m): s.score for e in record.results for m, s in e.metrics.items()}


def embedded_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert match, "the sample browser's data block is missing"
    return json.loads(match.group(1))


def section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert match, f"no section {anchor}"
    return match.group(1)


# --- escaping and self-containment ---------------------------------------------------------------


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


def test_report_escapes_a_hostile_row_name(tmp_path: Path) -> None:
    run = rename_row(make_run(tmp_path, {"good": GOOD, "evil": WORSE}), "evil", HOSTILE_NAME)
    page = render_run_report(run)
    assert page.count("<script") == 2 and HOSTILE_NAME not in page
    escaped = "&lt;script&gt;window.__pwned = 4&lt;/script&gt;"
    for anchor in ("results", "settings", "plots"):  # the table, the settings and every chart label
        assert escaped in section(page, anchor), anchor
    assert (HOSTILE_NAME, "mixed", "bleu") in score_cells(page)  # attributes round-trip to the name
    assert [r["name"] for r in embedded_data(page)["rows"]] == ["good", HOSTILE_NAME]


def test_report_is_self_contained(run_dir: Path) -> None:
    page = render_run_report(run_dir)
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page)
    assert csp and html.unescape(csp.group(1)).startswith("default-src 'none'; script-src 'sha256-")
    assert not re.search(r"""\b(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<link" not in page and "@import" not in page
    css = (ROOT / "aigc_eval" / "report" / "static" / "report.css").read_text(encoding="utf-8")
    script = (ROOT / "aigc_eval" / "report" / "static" / "report.js").read_text(encoding="utf-8")
    assert f"<style>{css}</style>" in page and f"<script>{script}</script>" in page  # package data, inlined
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in html.unescape(csp.group(1))  # runs only that script


# --- the numbers ---------------------------------------------------------------------------------


def test_report_numbers_equal_the_record(run_dir: Path) -> None:
    cells = score_cells(write_run_report(run_dir).read_text(encoding="utf-8"))
    expected = expected_scores(run_dir)
    assert set(cells) == set(expected)
    for key, score in expected.items():
        value, shown = cells[key]
        assert float(value) == score and shown == format_score(score), key


def test_report_sample_scores_and_best_cells(run_dir: Path) -> None:
    page = render_run_report(run_dir)
    data = embedded_data(page)
    task = data["tasks"][0]
    assert [r["name"] for r in data["rows"]] == ["good", "worse"]
    assert len(task["samples"]) == len(EXAMPLES) and task["total"] == len(EXAMPLES)
    bleu = [m["name"] for m in task["metrics"]].index("bleu")
    for s in RunFolder.open(run_dir).read_samples():
        shown = next(x for x in task["samples"] if x["id"] == s.id)
        assert shown["preds"][["good", "worse"].index(s.model)]["scores"][bleu] == s.scores["bleu"]
    # 'good' wins BLEU, so its cell is the highlighted best; length has no direction, so no highlight.
    assert re.search(r'<td class="num first best"[^>]*data-model="good"[^>]*data-metric="bleu"', page)
    assert not re.search(r'class="num[^"]*best"[^>]*data-metric="length"', page)


def test_report_charts_draw_the_record(run_dir: Path) -> None:
    """Each bar's hover text is the score and interval of the record; each box is the per-sample scores."""
    record = RunFolder.open(run_dir).read_record()
    plots = section(render_run_report(run_dir), "plots")
    for entry in record.results:
        bleu = entry.metrics["bleu"]
        assert bleu.ci is not None
        low, high = format_score(bleu.ci.low, 2), format_score(bleu.ci.high, 2)
        tip = f"<title>{entry.model}: {format_score(bleu.score)} [{low}, {high}] (95% bootstrap CI)</title>"
        assert tip in plots
    samples = [s.scores["chrf"] for s in RunFolder.open(run_dir).read_samples() if s.model == "good"]
    median = format_score(float(np.median(samples)))
    assert re.search(rf"<title>good: n=6, median {re.escape(median)}, IQR", plots)
    # Generation speed: 40 tokens in 0.5 s per row.
    assert "tokens / s" in plots and '<td class="num">40</td><td class="num">0.50</td>' in plots


def test_report_marks_significance_against_a_baseline_row(run_dir: Path) -> None:
    import dataclasses

    from aigc_eval.gate import NO_CHANGE, REGRESSION, compare_runs

    comparison = compare_runs(run_dir, run_dir, pairs=[("good", "worse")])
    # Whatever the test decided on six samples, a regression verdict must show as a mark in its cell.
    entries = tuple(
        dataclasses.replace(e, verdict=REGRESSION if e.metric == "chrf" else NO_CHANGE)
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


def test_a_null_score_reads_as_n_a_in_tables_and_report(tmp_path: Path) -> None:
    """Strict JSON writes an undefined score as null: every reader shows it, none crashes."""
    run = make_run(tmp_path, {"a": GOOD, "b": WORSE})
    results = run / RunFolder.RESULTS
    data = json.loads(results.read_text(encoding="utf-8"))
    data["results"][0]["metrics"]["bleu"]["score"] = None
    results.write_text(json.dumps(data, allow_nan=False), encoding="utf-8")
    record = RunFolder.open(run).read_record()
    [table] = task_tables(record).values()
    assert table.loc["a", "bleu ↑"].startswith("n/a")
    cells = score_cells(render_run_report(run))
    assert cells[("a", "mixed", "bleu")] == ["", "n/a"]


def test_line_separators_in_text_round_trip_through_the_report(tmp_path: Path) -> None:
    """U+2028/U+2029/U+0085 are legal unescaped inside JSON strings; readers split JSONL on "\\n" only."""
    odd = "one\u2028two\u2029three\u0085four"
    examples = [*EXAMPLES[:3], ("s3", f"A prompt {odd}", f"the reference {odd}")]
    run = make_run(tmp_path, {"a": [*GOOD[:3], f" pred {odd}"], "b": WORSE[:4]}, examples)
    assert odd in (run / RunFolder.SAMPLES).read_text(encoding="utf-8")
    sample = next(s for s in embedded_data(render_run_report(run))["tasks"][0]["samples"] if s["id"] == "s3")
    assert sample["prompt"] == f"A prompt {odd}" and sample["preds"][0]["text"] == f" pred {odd}"


# --- method: descriptions come from the metric classes ----------------------------------------


def test_method_describes_every_metric_from_its_class(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"a": GOOD})
    results = run / RunFolder.RESULTS
    data = json.loads(results.read_text(encoding="utf-8"))
    data["suite"]["metrics"].append({"name": "not-registered", "options": {}})
    results.write_text(json.dumps(data), encoding="utf-8")
    method = section(render_run_report(run), "method")
    items = dict(re.findall(r"<li><b>(.*?)</b>: (.*?)</li>", method))
    assert list(items) == ["bleu", "chrf", "rouge", "descriptors", "not-registered"]
    for name in ("bleu", "chrf", "rouge", "descriptors"):
        expected = metric_class(name).description
        assert items[name] == expected.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert items["not-registered"] == NO_DESCRIPTION  # named, never silently left out


# --- diffs ---------------------------------------------------------------------------------------


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


def test_word_diff_uses_the_tokenizers_cjk_class() -> None:
    """CJK Extension B ideographs and Hangul Jamo are words of one character, as ROUGE's tokenizer has
    them (the report's own narrower class made a run of them one word)."""
    assert word_diff("𠀀𠀁𠀂", "𠀀𠀃𠀂") == [[0, "𠀀"], [-1, "𠀁"], [1, "𠀃"], [0, "𠀂"]]
    assert word_diff("ᄀᄁ", "ᄀᄂ") == [[0, "ᄀ"], [-1, "ᄁ"], [1, "ᄂ"]]


# --- image tasks: thumbnails -----------------------------------------------------------------------


def thumbnails(page: str, label: str) -> list[str]:
    """The thumbnail <img> tags of the image set labelled ``label`` in the Images section."""
    match = re.search(
        rf'<div class="thumbset"><div class="head">(?:<span[^>]*></span>)?<b>{label}</b>'
        r'.*?<div class="thumbs">(.*?)</div></div>',
        section(page, "images"),
        re.S,
    )
    assert match, f"no thumbnails for {label}"
    return re.findall(r"<img [^>]*>", match.group(1))


def test_report_shows_image_thumbnails_and_scores(v1_run: Path, tmp_path: Path) -> None:
    images = ROOT / "suites" / "data" / "images"
    shutil.copy(images / "gen-faithful" / "006.png", tmp_path / "<script>x.png")
    (tmp_path / "faithful.txt").write_text(
        "".join(f"{images / 'gen-faithful' / f'{i:03d}.png'}\n" for i in range(6)) + "<script>x.png\n",
        encoding="utf-8",
    )
    results = v1_run / RunFolder.RESULTS
    data = json.loads(results.read_text(encoding="utf-8"))
    next(e for e in data["results"] if e["model"] == "faithful-generator")["generated_images"] = str(
        tmp_path / "faithful.txt"
    )
    results.write_text(json.dumps(data), encoding="utf-8")
    page = render_run_report(v1_run)
    for label, count in (("reference", 12), ("faithful-generator", 7), ("degraded-generator", 12)):
        imgs = thumbnails(page, label)
        assert len(imgs) == count and all('src="data:image/png;base64,' in img for img in imgs), label
    assert "· 12 of 100" in section(page, "images") and "· 7 of 7" in section(page, "images")
    assert 'title="&lt;script&gt;x.png"' in page and "<script>x.png" not in page
    assert page.count("<script") == 2  # the data block and the page's own script
    cells, expected = score_cells(page), expected_scores(v1_run)
    assert set(cells) == set(expected) and len(expected) == 60
    for key, score in expected.items():
        assert float(cells[key][0]) == score and cells[key][1] == format_score(score), key
    # Image rows have no samples: they are not in the sample browser, and their task has no box plots.
    assert [r["name"] for r in embedded_data(page)["rows"]] == [
        "demo-greedy", "demo-beam5", "demo-sample", "untrained-greedy"
    ]  # fmt: skip
    shapes = section(page, "plots").split("<h3>shapes</h3>")[1]
    assert "per sample (median at right)" not in shapes.split("<h3>")[0]


def test_report_copes_with_moved_or_statistics_image_sets(v1_run: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(v1_run, moved)
    data = json.loads((moved / RunFolder.RESULTS).read_text(encoding="utf-8"))
    data["tasks"]["shapes"]["path"] = "/elsewhere/ref-stats.npz"
    next(e for e in data["results"] if e["model"] == "faithful-generator")["generated_images"] = (
        "/elsewhere/<b>gone</b>.txt"
    )
    (moved / RunFolder.RESULTS).write_text(json.dumps(data), encoding="utf-8")
    page = render_run_report(moved)
    assert "reference given as statistics, no images" in page
    assert "images not shown: /elsewhere/&lt;b&gt;gone&lt;/b&gt;.txt is not here" in page
    assert "<b>gone</b>" not in page
    assert len(thumbnails(page, "degraded-generator")) == 12


# --- an old schema-1 run folder ---------------------------------------------------------------------


def test_schema_1_folder_tables_are_the_ones_its_version_wrote(v1_run: Path) -> None:
    """table.md and table.csv of the migrated record equal what the pre-record code wrote."""
    record = RunFolder.open(v1_run).read_record()
    assert to_markdown(record) == (v1_run / "table.md").read_text(encoding="utf-8")
    assert to_csv(record) == (v1_run / "table.csv").read_text(encoding="utf-8")


def test_schema_1_folder_report_shows_its_record(v1_run: Path) -> None:
    record = RunFolder.open(v1_run).read_record()
    page = render_run_report(v1_run)
    settings = section(page, "settings")
    for provenance in record.models.values():
        if provenance.backend == "hf":  # migrated from a v1 dict to a Provenance
            assert f'title="{provenance.weights_sha256}">{provenance.weights_sha256[:12]}</td>' in settings
    assert "<h3>Image rows</h3>" in settings
    # The v1 score's flattened extra keys became details; its ci_unavailable reason reaches the legend.
    assert "kd_efficientnet-lite0: no interval (every subset is the whole set" in section(page, "results")


def test_schema_1_method_only_image_intervals_migrate_to_their_kind(tmp_path: Path) -> None:
    """The oldest folders named a KID interval by ``method`` only: it must not read as a bootstrap CI."""
    run = copy_v1_run(tmp_path / "run")
    data = json.loads((run / RunFolder.RESULTS).read_text(encoding="utf-8"))
    entry = next(e for e in data["results"] if e["model"] == "faithful-generator")
    entry["metrics"]["kd_efficientnet-lite0"]["ci"] = {
        "low": -0.002, "high": 0.0, "half_width": 0.001, "n_resamples": 100, "method": "kid-subset-std"
    }  # fmt: skip
    (run / RunFolder.RESULTS).write_text(json.dumps(data), encoding="utf-8")
    record = RunFolder.open(run).read_record()
    ci = record.entry("faithful-generator", "shapes").metrics["kd_efficientnet-lite0"].ci  # type: ignore[union-attr]
    assert ci is not None and ci.kind == "subset-std"
    assert "bootstrap CI: [-0.002" not in render_run_report(run)
