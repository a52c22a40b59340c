"""``report.html``: one self-contained page per run, for people rather than programs.

Everything is read back from the run folder (results.json, samples.jsonl), like every other output.
The page fetches nothing (inline CSS, JS and SVG, and a Content-Security-Policy that forbids any
network access and runs only the page's own script, by hash), so it opens anywhere and can be
attached to a CI artifact. Text from data or models is escaped on the way into the markup and
embedded for the sample browser as JSON that the script only ever turns into text nodes.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import html
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aigc_eval.errors import UserError
from aigc_eval.images import IMAGE_SUFFIXES, _read_list_file, is_stats_file
from aigc_eval.report.tables import (
    format_score,
    interval_label,
    interval_notes,
    score_decimals,
)
from aigc_eval.report.templates import CSS, JS
from aigc_eval.results import SAMPLES_FILE, finite_or_none, load_results, read_jsonl, write_atomic

REPORT_FILE = "report.html"
MAX_SAMPLES = 1000  # per task embedded in the sample browser: keeps a report small enough to attach
CHAR_DIFF_LIMIT = 3000  # longer texts get the word diff only (difflib is quadratic)
THUMB_PX = 64  # image tasks: thumbnails fit in a THUMB_PX square, embedded as PNG data: URIs
MAX_THUMBS = 12  # per image set (reference or a row's generated images): the first ones, sorted
ARROWS = {True: " ↑", False: " ↓", None: ""}
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
MARKS = {
    "regression": ("▼", "significantly worse than the baseline"),
    "improvement": ("▲", "significantly better than the baseline"),
    "changed": ("●", "significantly different from the baseline"),
}
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
# A word, a CJK character or a punctuation mark, each with the whitespace before it; then trailing space.
_TOKEN = re.compile(rf"\s*(?:[{_CJK}]|[^\s{_CJK}\W]+|[^\w\s])|\s+$")

# How each family of numbers is made, keyed by the suite's metric name.
METHODS = {
    "bleu": "sacrebleu corpus BLEU: n-gram matches and lengths are summed over all samples first, then "
    "combined (geometric mean of 1–4-gram precisions × brevity penalty, 0–100). The per-sample "
    "scores are sentence BLEU with effective order, so they do not average to the corpus score.",
    "chrf": "sacrebleu chrF: character n-gram F-score (β=2) from statistics summed over all samples (0–100); "
    "per-sample scores are sentence chrF.",
    "chrf++": "sacrebleu chrF++: chrF plus word uni- and bigrams, from statistics summed over all samples.",
    "ter": "sacrebleu TER: total edits (with shifts) over total reference words, in percent.",
    "rouge": "rouge-score F-measure per sample (the best reference when there are several), averaged over "
    "samples; CJK text is split into characters so it is not one long token.",
    "perplexity": "Token-weighted perplexity: exp(total negative log-likelihood / total tokens) over all "
    "samples, not a mean of per-sample perplexities; the signature names the scoring model, its "
    "weights and the context window.",
    "descriptors": "Descriptors of the outputs alone (no reference): mean length in words (CJK characters "
    "count as words), share of empty outputs, distinct-1/2 over the pooled corpus.",
    "evaluate": "A Hugging Face evaluate module, computed by the module itself; see its signature.",
}

Comparison = Any  # aigc_eval.compare.Comparison, read by attribute: the report works without it


def write_run_report(run_dir: Path, comparison: Comparison | None = None) -> Path:
    """Write ``report.html`` into the run folder and return its path.

    ``comparison`` (from ``aigc_eval.compare.compare_runs`` with this run as the current one, e.g.
    its rows against a baseline row of the same run) adds significance marks to the table.
    """
    run_dir = Path(run_dir)
    path = run_dir / REPORT_FILE
    write_atomic(path, render_run_report(run_dir, comparison))
    return path


def render_run_report(run_dir: Path, comparison: Comparison | None = None) -> str:
    """The report page as a string."""
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    samples = read_samples(run_dir / SAMPLES_FILE)
    rows = model_rows(results)
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(rows)}
    marks = _marks(comparison, run_dir)
    # Each section is (anchor, title, html); an empty html drops the section. Image tasks get a
    # thumbnails grid of generated vs reference images, downscaled and embedded as data: URIs (the CSP
    # allows img-src data:); the sample browser lists text tasks only.
    sections = [
        ("results", "Results", _results_section(results, rows, colors, marks, comparison)),
        ("settings", "Settings", _settings_section(results, rows, colors)),
        ("plots", "Plots", _plots_section(results, samples, rows, colors)),
        ("images", "Images", _thumbnails_section(results, rows, colors)),
        ("samples", "Samples", _samples_section() if text_tasks(results) else ""),
        ("method", "Method", _method_section(results)),
    ]
    sections = [s for s in sections if s[2]]
    data = _browser_data(results, samples, rows, colors)
    suite = results["suite"]
    header = (
        f'<div class="kicker">aigc-eval report</div><h1>{esc(results["suite_name"])}</h1>'
        + (f'<p class="desc">{esc(suite.get("description", ""))}</p>' if suite.get("description") else "")
        + _provenance(results)
    )
    return page(
        f"{results['suite_name']} · {results['run_id']}",
        header,
        [(anchor, title) for anchor, title, _ in sections],
        "".join(f'<section id="{a}"><h2>{t}</h2>{body}</section>' for a, t, body in sections),
        data,
    )


# --- shared by the report and the leaderboard -------------------------------------------------


def esc(value: Any) -> str:
    """Text from anywhere (names, prompts, predictions) made safe for HTML content and attributes."""
    return html.escape(str(value), quote=True)


def script_json(value: Any) -> str:
    """JSON that cannot end its <script> element: '<', '>' and '&' become \\u escapes."""
    text = json.dumps(finite_or_none(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def page(title: str, header: str, nav: Sequence[tuple[str, str]], body: str, data: Any | None = None) -> str:
    """The page shell: inline assets, and a CSP that allows no fetch and no script but ours."""
    digest = base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()
    csp = (
        f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    links = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in nav)
    payload = (
        ""
        if data is None
        else f'<script type="application/json" id="report-data">{script_json(data)}</script>'
    )
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
        f'<body><header class="top">{header}</header><nav>{links}</nav>\n<main>{body}</main>\n'
        f"{payload}<script>{JS}</script></body></html>\n"
    )


def short_time(iso: str | None) -> str:
    """'2026-11-29T19:18:44+00:00' -> '2026-11-29 19:18 UTC'."""
    if not iso:
        return "unknown"
    text = iso.replace("T", " ")
    return f"{text[:16]} UTC" if text.endswith("+00:00") else text


def is_best(value: float | None, values: Iterable[float | None], higher_is_better: bool | None) -> bool:
    """Whether ``value`` is the best of ``values`` in the metric's direction (ties all count)."""
    finite_values = [v for v in values if v is not None and math.isfinite(v)]
    if higher_is_better is None or value is None or not math.isfinite(value) or len(finite_values) < 2:
        return False
    return value == (max(finite_values) if higher_is_better else min(finite_values))


def ci_text(score: float | None, ci: dict[str, Any] | None) -> str:
    """'[51.20, 96.40]' at the score's precision, or '' without an interval."""
    if not ci or score is None or not math.isfinite(score) or ci.get("low") is None or ci.get("high") is None:
        return ""
    places = score_decimals(score)
    return f"[{format_score(ci['low'], places)}, {format_score(ci['high'], places)}]"


def sparkline(values: Sequence[float], labels: Sequence[str], odd: Sequence[bool] = ()) -> str:
    """A small trend line; ``labels`` become the hover text, ``odd`` points are drawn in red."""
    width, height, pad = 96, 24, 3
    lo, hi = min(values), max(values)
    step = (width - 2 * pad) / max(len(values) - 1, 1)
    points = [
        (pad + i * step, height / 2 if hi == lo else height - pad - (v - lo) / (hi - lo) * (height - 2 * pad))
        for i, v in enumerate(values)
    ]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dots = "".join(
        f'<circle class="dot{" odd" if i < len(odd) and odd[i] else ""}" cx="{x:.1f}" cy="{y:.1f}" r="2">'
        f"<title>{esc(labels[i])}</title></circle>"
        for i, (x, y) in enumerate(points)
    )
    return (
        f'<svg class="sparkline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="history of {len(values)} runs"><polyline class="spark" points="{line}"/>{dots}</svg>'
    )


# --- reading the run folder ----------------------------------------------------------------------


def read_samples(path: Path) -> list[dict[str, Any]]:
    """samples.jsonl, or nothing when a run folder has none (the report still shows the scores)."""
    if not path.is_file():
        return []
    return read_jsonl(path)  # "\n"-split: U+2028 and friends stay inside their JSON strings


def model_rows(results: dict[str, Any]) -> list[str]:
    """Model rows in suite order, then any with results but no suite entry."""
    have = {e["model"] for e in results["results"]}
    order = [m["name"] for m in results["suite"]["models"] if m["name"] in have]
    return order + sorted(have - set(order))


def task_outputs(results: dict[str, Any], task: str) -> list[tuple[str, bool | None]]:
    """The metric outputs of one task with their direction, in the order they were computed."""
    outputs: dict[str, bool | None] = {}
    for entry in results["results"]:
        if entry["task"] == task:
            for name, value in entry["metrics"].items():
                outputs.setdefault(name, value.get("higher_is_better"))
    return list(outputs.items())


def text_tasks(results: dict[str, Any]) -> list[str]:
    """Tasks scored from generated text (with samples); image tasks have none."""
    return [name for name, info in results["tasks"].items() if info.get("kind", "text") != "image"]


def image_tasks(results: dict[str, Any]) -> list[str]:
    return [name for name, info in results["tasks"].items() if info.get("kind") == "image"]


def _score_of(results: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(e["model"], e["task"], m): v for e in results["results"] for m, v in e["metrics"].items()}


# --- header and tables ---------------------------------------------------------------------------


def _provenance(results: dict[str, Any]) -> str:
    env = results.get("environment", {})
    commit = env.get("git_commit") or "not a git checkout"
    facts = [
        ("run id", f"<code>{esc(results['run_id'])}</code>"),
        ("finished", esc(short_time(results.get("finished")))),
        ("git commit", f'<code title="{esc(commit)}">{esc(commit[:12])}</code>'),
        (
            "config hash",
            f'<code title="{esc(results["config_hash"])}">{esc(results["config_hash"][:12])}</code>',
        ),
        ("device", esc(_devices(results))),
        ("samples", esc(f"first {results['limit']} per task (--limit)" if results.get("limit") else "all")),
        ("python · platform", esc(f"{env.get('python', '?')} · {env.get('platform', '?')}")),
        ("packages", esc(", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()))),
    ]
    cells = "".join(
        f"<div{' class=wide' if k == 'packages' else ''}><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts
    )
    return f'<dl class="meta">{cells}</dl>'


def _devices(results: dict[str, Any]) -> str:
    """Where the text rows ran and where image features were computed; image rows have no device."""
    text = sorted({str(m["device"]) for m in results.get("models", {}).values() if m.get("device")})
    image = sorted(
        {str(e["device"]) for e in results["results"] if e.get("generated_images") and e.get("device")}
    )
    parts = [", ".join(text)] if text else []
    if image:
        parts.append(f"image features: {', '.join(image)}")
    return " · ".join(parts) or "unknown"


def _marks(comparison: Comparison | None, run_dir: Path) -> dict[tuple[str, str, str], Any]:
    """Comparison entries by (row, task, output), when the comparison's current run is this one."""
    if comparison is None:
        return {}
    if Path(comparison.current).resolve() != run_dir.resolve():
        raise UserError(f"the comparison's current run is {comparison.current}, not {run_dir}")
    return {(e.current_model, e.task, e.metric): e for e in comparison.entries}


def _swatch(color: str) -> str:
    return f'<span class="swatch" style="background:{color}"></span>'


def _results_section(
    results: dict[str, Any],
    rows: list[str],
    colors: dict[str, str],
    marks: dict[tuple[str, str, str], Any],
    comparison: Comparison | None,
) -> str:
    scores = _score_of(results)
    columns = [(task, name, hib) for task in results["tasks"] for name, hib in task_outputs(results, task)]
    baselines = {base for base, _ in comparison.pairs} if comparison is not None else set()
    same_run = (
        comparison is not None and Path(comparison.baseline).resolve() == Path(comparison.current).resolve()
    )
    groups = "".join(
        f'<th class="group" colspan="{width}">{esc(task)} '
        f'<span class="muted">{esc(_task_facts(info))}</span></th>'
        for task, info in results["tasks"].items()
        if (width := sum(c[0] == task for c in columns))
    )
    heads = "".join(
        f'<th class="num{" first" if j == 0 or columns[j - 1][0] != task else ""}" data-col="{j + 1}" '
        f'title="{esc(_direction_text(hib))}">{esc(name)}{ARROWS[hib]}</th>'
        for j, (task, name, hib) in enumerate(columns)
    )
    body = []
    for row in rows:
        tag = '<span class="tag">baseline</span>' if same_run and row in baselines else ""
        cells = [f'<th data-v="{esc(row)}">{_swatch(colors[row])}{esc(row)}{tag}</th>']
        for j, (task, name, hib) in enumerate(columns):
            first = " first" if j == 0 or columns[j - 1][0] != task else ""
            value = scores.get((row, task, name))
            if value is None:
                cells.append(f'<td class="num{first}" data-v="">–</td>')
                continue
            score = value["score"]
            best = (
                " best"
                if is_best(score, (scores.get((r, task, name), {}).get("score") for r in rows), hib)
                else ""
            )
            ci = value.get("ci")
            title = f"{row} · {task} · {name} = {score!r}"
            if ci and ci.get("low") is not None:
                title += f"; {interval_label(ci)}: [{ci['low']!r}, {ci['high']!r}]"
            elif value.get("ci_unavailable"):
                title += f"; no interval: {value['ci_unavailable']}"
            cells.append(
                f'<td class="num{first}{best}" data-v="{sort_key(score)}" data-model="{esc(row)}" '
                f'data-task="{esc(task)}" data-metric="{esc(name)}" title="{esc(title)}">'
                f'<span class="score">{format_score(score)}</span>{_mark(marks.get((row, task, name)))}'
                f'<span class="ci">{ci_text(score, ci)}</span></td>'
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = (
        f'<div class="scroll"><table class="sortable results" id="results-table"><thead>'
        f'<tr><th rowspan="2" data-col="0">model</th>{groups}</tr><tr>{heads}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )
    return table + _results_legend(results, comparison)


def sort_key(score: float | None) -> str:
    """The exact score for sorting and tests; empty (sorted last) when it is not a number."""
    return repr(score) if score is not None and math.isfinite(score) else ""


def _task_facts(info: dict[str, Any]) -> str:
    return f"n={info['n']}" + (f" · {info['lang']}" if info.get("lang") else "")


def _direction_text(higher_is_better: bool | None) -> str:
    return {True: "higher is better", False: "lower is better", None: "no better direction"}[higher_is_better]


def _mark(entry: Any) -> str:
    if entry is None or entry.verdict not in MARKS:
        return ""
    symbol, meaning = MARKS[entry.verdict]
    p = "n/a" if entry.p_corrected is None else f"{entry.p_corrected:.4g}"
    title = f"{meaning} ({entry.baseline_model}): Δ {format_score(entry.delta)}, corrected p = {p}"
    return f'<span class="mark {esc(entry.verdict)}" title="{esc(title)}">{symbol}</span>'


def _results_legend(results: dict[str, Any], comparison: Comparison | None) -> str:
    intervals = results["suite"].get("intervals", {})
    if intervals.get("n_resamples", 0):
        ci = (
            f"[low, high]: {intervals.get('confidence', 0.95):.0%} percentile-bootstrap interval over "
            f"samples ({intervals['n_resamples']:,} resamples, seed {intervals.get('seed')})"
        )
    else:
        ci = "no confidence intervals (intervals.n_resamples is 0)"
    text = f"↑ higher is better, ↓ lower is better; green: best in its column; {ci}. Click a header to sort."
    others = [note for task in image_tasks(results) for note in interval_notes(results, task)]
    if others:
        text += " Image metrics (their spreads are not confidence intervals): " + "; ".join(others) + "."
    if comparison is not None:
        pairs = ", ".join(f"{c} vs {b}" for b, c in comparison.pairs)
        text += (
            f" ▲/▼: significantly better/worse than the baseline ({pairs}; {comparison.test}, "
            f"{comparison.correction} correction, α={comparison.alpha:g}); no mark: no significant change."
        )
    return f'<p class="legend">{esc(text)}</p>'


def _settings_section(results: dict[str, Any], rows: list[str], colors: dict[str, str]) -> str:
    """Per-row settings: the columns that differ between rows, then what all rows share. Image rows
    generate nothing here, so they get their own table (their image sets), not decoding settings."""
    suite_rows = {m["name"]: m for m in results["suite"]["models"]}
    described = results.get("models", {})
    image_rows = [r for r in rows if suite_rows.get(r, {}).get("backend") == "images"]
    rows = [r for r in rows if r not in image_rows]
    flat: dict[str, dict[str, Any]] = {}
    for row in rows:
        config = suite_rows.get(row, {})
        info = described.get(row, {})
        values = {k: v for k, v in config.items() if k not in ("name", "generation", "images")}
        values["device"] = info.get("device", config.get("device"))
        values.update({f"generation.{k}": v for k, v in config.get("generation", {}).items()})
        flat[row] = values
    keys = list(dict.fromkeys(k for values in flat.values() for k in values))
    varying = [k for k in keys if len({json.dumps(flat[r].get(k), sort_keys=True) for r in rows}) > 1]
    shared = [k for k in keys if k not in varying]
    head = "".join(f"<th>{esc(k.removeprefix('generation.'))}</th>" for k in varying)
    body = "".join(
        f"<tr><th>{_swatch(colors[row])}{esc(row)}</th>"
        + "".join(f"<td>{esc(_setting(flat[row].get(k)))}</td>" for k in varying)
        + f'<td class="mono" title="{esc(described.get(row, {}).get("weights_sha256", ""))}">'
        f"{esc(str(described.get(row, {}).get('weights_sha256', ''))[:12])}</td></tr>"
        for row in rows
    )
    common = ", ".join(f"{k.removeprefix('generation.')}={_setting(flat[rows[0]].get(k))}" for k in shared)
    tasks = "".join(
        f"<tr><th>{esc(name)}</th><td>{esc(info.get('path', ''))}</td>"
        f"<td class='num'>{esc(info.get('n'))}</td><td>{esc(info.get('lang') or '')}</td>"
        f"<td class='mono'>{esc(str(info.get('content_hash', ''))[:16])}</td></tr>"
        for name, info in results["tasks"].items()
    )
    text_rows = (
        "<h3>Model rows and generation settings</h3>"
        f'<div class="scroll"><table><thead><tr><th>row</th>{head}<th>weights sha256</th></tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
        + (f'<p class="legend">Same for every row: {esc(common)}</p>' if rows and common else "")
        if rows
        else ""
    )
    images = "".join(
        f"<tr><th>{_swatch(colors[row])}{esc(row)}</th><td>{esc(e['task'])}</td>"
        f"<td class='mono'>{esc(e.get('generated_images', ''))}</td><td class='num'>{esc(e.get('n'))}</td>"
        f"<td>{esc(e.get('device') or '–')}</td><td>{esc(_skipped_text(e))}</td></tr>"
        for row in image_rows
        for e in results["results"]
        if e["model"] == row
    )
    image_table = (
        "<h3>Image rows</h3>"
        '<div class="scroll"><table><thead><tr><th>row</th><th>task</th><th>generated images</th>'
        '<th class="num">n</th><th>features on</th><th>skipped</th></tr></thead>'
        f"<tbody>{images}</tbody></table></div>"
        if image_rows
        else ""
    )
    return (
        text_rows + image_table + "<h3>Tasks</h3>"
        '<div class="scroll"><table><thead><tr><th>task</th><th>data</th><th class="num">n</th><th>lang</th>'
        f"<th>content sha256</th></tr></thead><tbody>{tasks}</tbody></table></div>"
    )


def _skipped_text(entry: dict[str, Any]) -> str:
    """'2 unreadable generated images skipped: a.png, b.png' (skip_corrupt), or '' when none were."""
    parts = []
    for role, skipped in (entry.get("skipped_images") or {}).items():
        if skipped.get("count"):
            names = ", ".join(Path(f).name for f in skipped.get("files", []))
            parts.append(f"{skipped['count']} unreadable {role} image(s) skipped: {names}")
    return "; ".join(parts)


def _setting(value: Any) -> str:
    if value is None:
        return "–"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict, bool)) else str(value)


def _method_section(results: dict[str, Any]) -> str:
    used = list(dict.fromkeys(m["name"] for m in results["suite"]["metrics"]))
    items = "".join(f"<li><b>{esc(name)}</b>: {esc(METHODS[name])}</li>" for name in used if name in METHODS)
    intervals = results["suite"].get("intervals", {})
    general = (
        "Every corpus score is aggregated from per-sample sufficient statistics (saved in stats.jsonl), "
        "never averaged from per-sample scores unless the metric is a mean. "
    )
    if intervals.get("n_resamples", 0):
        general += (
            f"Intervals resample those statistic rows with replacement {intervals['n_resamples']:,} times "
            f"(seed {intervals.get('seed')}) and re-aggregate each resample; the interval is the central "
            f"{intervals.get('confidence', 0.95):.0%} of the resampled scores (percentile bootstrap), as "
            "sacrebleu's --confidence does. Samples are resampled, not models: the interval says how much "
            "the score depends on which samples were drawn."
        )
    signatures: dict[tuple[str, str], list[str]] = {}
    for entry in results["results"]:
        for name, value in entry["metrics"].items():
            where = signatures.setdefault((name, value.get("signature", "")), [])
            if entry["task"] not in where:
                where.append(entry["task"])
    sig_rows = "".join(
        f'<tr><th>{esc(name)}</th><td class="sig">{esc(sig)}</td><td>{esc(", ".join(tasks))}</td></tr>'
        for (name, sig), tasks in signatures.items()
    )
    return (
        f"<p>{esc(general)}</p><ul class='notes'>{items}</ul><h3>Signatures</h3>"
        '<p class="legend">A score is comparable with another only when their signatures match.</p>'
        '<div class="scroll"><table class="full"><thead><tr><th>output</th><th>signature</th><th>tasks</th>'
        "</tr></thead>"
        f"<tbody>{sig_rows}</tbody></table></div>"
    )


# --- plots (hand-made SVG: small, crisp, themable, no plotting dependency) -----------------------

_LABEL_W, _PLOT_W, _VALUE_W, _ROW_H, _TOP, _AXIS_H = 128, 190, 62, 22, 6, 22


def _plots_section(
    results: dict[str, Any], samples: list[dict[str, Any]], rows: list[str], colors: dict[str, str]
) -> str:
    scores = _score_of(results)
    image = set(image_tasks(results))  # scored as sets: no per-sample scores to spread
    per_sample: dict[tuple[str, str, str], list[float]] = {}
    for s in samples:
        for name, value in s.get("scores", {}).items():
            if value is not None and math.isfinite(value):
                per_sample.setdefault((s["model"], s["task"], name), []).append(value)
    parts = [
        '<p class="legend">Bars: corpus score with its confidence interval. Boxes: per-sample scores '
        "(quartiles; whiskers to 1.5 IQR; ◆ mean; dots beyond).</p>"
    ]
    for task in results["tasks"]:
        cards = []
        scored = [row for row in rows if any(key[:2] == (row, task) for key in scores)]
        for name, hib in task_outputs(results, task):
            bars = [
                (
                    row,
                    colors[row],
                    scores.get((row, task, name), {}).get("score"),
                    scores.get((row, task, name), {}).get("ci"),
                )
                for row in scored
            ]
            spread = [
                (row, colors[row], [] if task in image else per_sample.get((row, task, name), []))
                for row in scored
            ]
            box = _box_plot(spread) if any(v for _, _, v in spread) else ""
            title = f'{esc(name)}{ARROWS[hib]} <span class="muted">· {esc(task)}</span>'
            per_sample_part = f'<div class="sub">per sample (median at right)</div>{box}' if box else ""
            cards.append(f'<div class="card chart"><h4>{title}</h4>{_bar_chart(bars)}{per_sample_part}</div>')
        parts.append(f"<h3>{esc(task)}</h3><div class='charts'>{''.join(cards)}</div>")
    speed = _speed_chart(results, rows, colors)
    if speed:
        parts.append(f"<h3>Generation speed</h3><div class='charts'>{speed}</div>")
    return "".join(parts)


def _nice_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """1-2-2.5-5 steps covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _tick_label(value: float) -> str:
    return f"{value / 1000:,.4g}k" if abs(value) >= 10000 else f"{value:,.4g}"


def _axis(ticks: Sequence[float], x: Callable[[float], float], height: float, labels: Sequence[str]) -> str:
    out = []
    for tick, label in zip(ticks, labels, strict=True):
        px = x(tick)
        kind = "zero" if tick == 0 else "grid"
        out.append(f'<line class="{kind}" x1="{px:.1f}" x2="{px:.1f}" y1="{_TOP}" y2="{height}"/>')
        out.append(f'<text x="{px:.1f}" y="{height + 13}" text-anchor="middle">{esc(label)}</text>')
    return "".join(out)


def _row_label(i: int, name: str) -> str:
    shown = name if len(name) <= 19 else name[:18] + "…"
    y = _TOP + i * _ROW_H + _ROW_H / 2 + 4
    anchor = f'x="{_LABEL_W - 8}" y="{y:.1f}" text-anchor="end"'
    return f"<text {anchor}><title>{esc(name)}</title>{esc(shown)}</text>"


def _svg(height: float, label: str, content: str) -> str:
    width = _LABEL_W + _PLOT_W + _VALUE_W
    return (
        f'<svg viewBox="0 0 {width} {height:.0f}" width="{width}" height="{height:.0f}" role="img" '
        f'aria-label="{esc(label)}">{content}</svg>'
    )


def _bar_chart(bars: Sequence[tuple[str, str, float | None, dict[str, Any] | None]]) -> str:
    """Horizontal bars from zero with the interval as an error bar, one per row."""
    numbers = []
    for _, _, score, ci in bars:
        numbers += [score, *((ci["low"], ci["high"]) if ci else ())]
    numbers = [v for v in numbers if v is not None and math.isfinite(v)]
    if not numbers:
        return ""
    ticks = _nice_ticks(min(0.0, *numbers), max(0.0, *numbers))
    lo, hi = ticks[0], ticks[-1]

    def x(v: float) -> float:
        return _LABEL_W + (v - lo) / (hi - lo) * _PLOT_W

    plot_h = _TOP + len(bars) * _ROW_H
    out = [_axis(ticks, x, plot_h, [_tick_label(t) for t in ticks])]
    for i, (name, color, score, ci) in enumerate(bars):
        out.append(_row_label(i, name))
        mid = _TOP + i * _ROW_H + _ROW_H / 2
        if score is None or not math.isfinite(score):
            out.append(f'<text x="{_LABEL_W + _PLOT_W + 6}" y="{mid + 4:.1f}">n/a</text>')
            continue
        left, right = sorted((x(0.0), x(score)))
        tip = f"{name}: {format_score(score)} {ci_text(score, ci)}".strip()
        if ci and ci.get("low") is not None:
            tip += f" ({interval_label(ci)})"
        bar = (
            f'<rect x="{left:.1f}" y="{mid - 7:.1f}" width="{max(right - left, 1):.1f}" height="14" '
            f'fill="{color}" rx="2" opacity=".85"/>'
        )
        if ci and ci.get("low") is not None and math.isfinite(ci["low"]) and math.isfinite(ci["high"]):
            a, b = x(ci["low"]), x(ci["high"])
            bar += (
                f'<path class="err" d="M{a:.1f} {mid:.1f}H{b:.1f}M{a:.1f} {mid - 4:.1f}V{mid + 4:.1f}'
                f'M{b:.1f} {mid - 4:.1f}V{mid + 4:.1f}"/>'
            )
        out.append(f"<g><title>{esc(tip)}</title>{bar}</g>")
        out.append(f'<text x="{_LABEL_W + _PLOT_W + 6}" y="{mid + 4:.1f}">{esc(format_score(score))}</text>')
    return _svg(plot_h + _AXIS_H, "corpus scores with confidence intervals", "".join(out))


def _box_plot(rows: Sequence[tuple[str, str, list[float]]]) -> str:
    """Per-row box plots on one axis; logarithmic when positive values span 100× or more."""
    values = [v for _, _, vs in rows for v in vs]
    log = min(values) > 0 and max(values) / min(values) >= 100
    if log:
        ticks = [
            10.0**e
            for e in range(math.floor(math.log10(min(values))), math.ceil(math.log10(max(values))) + 1)
        ]
        if len(ticks) < 2:
            ticks.append(ticks[0] * 10)
        lo, hi = math.log10(ticks[0]), math.log10(ticks[-1])
    else:
        ticks = _nice_ticks(min(values), max(values))
        lo, hi = ticks[0], ticks[-1]

    def x(v: float) -> float:
        t = math.log10(v) if log else v
        return _LABEL_W + (t - lo) / (hi - lo) * _PLOT_W

    plot_h = _TOP + len(rows) * _ROW_H
    out = [_axis(ticks, x, plot_h, [_tick_label(t) for t in ticks])]
    for i, (name, color, vs) in enumerate(rows):
        out.append(_row_label(i, name))
        if not vs:
            continue
        mid = _TOP + i * _ROW_H + _ROW_H / 2
        array = np.asarray(vs, dtype=float)
        q1, median, q3 = (float(q) for q in np.percentile(array, [25, 50, 75]))
        reach = 1.5 * (q3 - q1)
        inside = array[(array >= q1 - reach) & (array <= q3 + reach)]
        low, high = float(inside.min()), float(inside.max())
        outliers = array[(array < low) | (array > high)]
        mean = float(array.mean())
        tip = (
            f"{name}: n={len(array)}, median {format_score(median)}, "
            f"IQR [{format_score(q1)}, {format_score(q3)}], mean {format_score(mean)}, "
            f"range [{format_score(float(array.min()))}, {format_score(float(array.max()))}]"
        )
        shape = (
            f'<path class="whisk" d="M{x(low):.1f} {mid:.1f}H{x(q1):.1f}M{x(q3):.1f} {mid:.1f}H{x(high):.1f}'
            f'M{x(low):.1f} {mid - 4:.1f}V{mid + 4:.1f}M{x(high):.1f} {mid - 4:.1f}V{mid + 4:.1f}"/>'
            f'<rect x="{x(q1):.1f}" y="{mid - 7:.1f}" width="{max(x(q3) - x(q1), 1):.1f}" height="14" '
            f'fill="{color}" opacity=".35" stroke="{color}"/>'
            f'<path class="med" d="M{x(median):.1f} {mid - 7:.1f}V{mid + 7:.1f}"/>'
            f'<path class="mean" d="M{x(mean):.1f} {mid - 4:.1f}l4 4l-4 4l-4 -4z"/>'
            + "".join(
                f'<circle cx="{x(float(v)):.1f}" cy="{mid:.1f}" r="2" fill="{color}"/>'
                for v in outliers[:200]
            )
        )
        out.append(f"<g><title>{esc(tip)}</title>{shape}</g>")
        out.append(f'<text x="{_LABEL_W + _PLOT_W + 6}" y="{mid + 4:.1f}">{esc(format_score(median))}</text>')
    label = "per-sample scores" + (" (log scale)" if log else "")
    return _svg(plot_h + _AXIS_H, label, "".join(out))


def _speed_chart(results: dict[str, Any], rows: list[str], colors: dict[str, str]) -> str:
    """Generated tokens per second over all tasks of a row, warm-up batch left out (resumed samples
    were not timed); runs written before ``timed_tokens`` existed fall back to the whole generation."""
    totals: dict[str, list[float]] = {row: [0.0, 0.0] for row in rows}
    for entry in results["results"]:
        timing = entry.get("timing") or {}
        tokens, seconds = (
            (timing.get("timed_tokens"), timing.get("timed_s"))
            if "timed_s" in timing
            else (timing.get("generated_tokens"), timing.get("generation_s"))
        )
        if tokens and seconds:
            totals[entry["model"]][0] += tokens
            totals[entry["model"]][1] += seconds
    if not any(seconds for _, seconds in totals.values()):
        return ""
    bars = [
        (row, colors[row], tokens / seconds if seconds else None, None)
        for row, (tokens, seconds) in totals.items()
    ]
    table = "".join(
        f"<tr><th>{esc(row)}</th><td class='num'>{tokens:,.0f}</td><td class='num'>{seconds:,.2f}</td></tr>"
        for row, (tokens, seconds) in totals.items()
    )
    return (
        '<div class="card chart"><h4>tokens / s <span class="muted">· all tasks</span></h4>'
        f"{_bar_chart(bars)}<details><summary>tokens and seconds</summary><table><thead><tr><th>row</th>"
        "<th class='num'>tokens</th><th class='num'>generation s</th></tr></thead>"
        f"<tbody>{table}</tbody></table></details></div>"
    )


# --- image tasks: thumbnails of the generated and reference sets ------------------------------------

_THUMB_CSS = (
    ".thumbset{margin:0 0 12px}.thumbset .head{font-size:12px;margin:0 0 4px}"
    ".thumbs{display:flex;flex-wrap:wrap;gap:4px}"
    ".thumbset .bad-note{color:var(--bad)}"
    f".thumbs img{{width:{THUMB_PX}px;height:{THUMB_PX}px;object-fit:contain;background:var(--chip);"
    "border:1px solid var(--line);border-radius:3px}"
    f".thumbs .bad{{width:{THUMB_PX}px;height:{THUMB_PX}px;font-size:10px;overflow:hidden;"
    "color:var(--bad);border:1px dashed var(--line);border-radius:3px;word-break:break-all}"
)


def _thumbnails_section(results: dict[str, Any], rows: list[str], colors: dict[str, str]) -> str:
    """Per image task: the reference set, then each row's generated set, as small thumbnails."""
    tasks = image_tasks(results)
    if not tasks:
        return ""
    parts = [
        f"<style>{_THUMB_CSS}</style>"
        f'<p class="legend">The first {MAX_THUMBS} images of each set in file order, downscaled to '
        f"{THUMB_PX} px and embedded in the page; the scores are over the whole sets.</p>"
    ]
    for task in tasks:
        info = results["tasks"][task]
        facts = esc(f"n={info.get('n')} · backbone {info.get('backbone') or '?'}")
        sets = [_image_set("reference", "", info.get("path"))]
        for row in rows:
            entry = next((e for e in results["results"] if e["model"] == row and e["task"] == task), None)
            if entry is not None:
                sets.append(_image_set(row, colors[row], entry.get("generated_images"), _skipped_text(entry)))
        parts.append(
            f'<h3>{esc(task)} <span class="muted small">{facts}</span></h3>'
            f'<div class="card">{"".join(sets)}</div>'
        )
    return "".join(parts)


def _image_set(label: str, color: str, path: str | None, skipped: str = "") -> str:
    """One labelled grid; a note instead when the set is statistics, missing or unreadable."""
    head = (_swatch(color) if color else "") + f"<b>{esc(label)}</b>"
    if skipped:
        head += f' <span class="bad-note">{esc(skipped)}</span>'
    if path:
        head += f' <span class="mono muted">{esc(path)}</span>'
    if not path:
        body = '<p class="legend">no image set recorded for this row</p>'
    elif is_stats_file(path):
        body = '<p class="legend">reference given as statistics, no images</p>'
    else:
        try:
            files = _image_files(Path(path))
        except (UserError, OSError, ValueError) as error:
            body = f'<p class="legend">images not shown: {esc(error)}</p>'
        else:
            shown = "".join(_thumbnail(f) for f in files[:MAX_THUMBS])
            count = f"{min(len(files), MAX_THUMBS)} of {len(files)}"
            head += f' <span class="muted">· {esc(count)}</span>'
            body = f'<div class="thumbs">{shown}</div>'
    return f'<div class="thumbset"><div class="head">{head}</div>{body}</div>'


def _image_files(source: Path) -> list[Path]:
    """The files of a set in the order ``aigc_eval.images.open_image_set`` gives them, without hashing
    every file's bytes as it does (a 50k-image folder would be read whole for 12 thumbnails)."""
    if not source.exists():
        raise UserError(f"{source} is not here (was the run folder moved?)")
    if source.is_dir():
        files = sorted(
            (p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(source).as_posix(),
        )
        if not files:
            raise UserError(f"{source}: no images found")
        return files
    return _read_list_file(source)


def _thumbnail(path: Path) -> str:
    """An <img> with the image downscaled into a THUMB_PX square as a PNG data: URI."""
    name = esc(path.name)
    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at a reduced size
            small = image.convert("RGB")
            small.thumbnail((THUMB_PX, THUMB_PX))
            buffer = io.BytesIO()
            small.save(buffer, format="PNG", optimize=True)
    except Exception:  # one bad file costs its thumbnail, never the report
        return f'<div class="bad" title="{name}">unreadable: {name}</div>'
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{name}" title="{name}">'


# --- the sample browser ---------------------------------------------------------------------------


def _samples_section() -> str:
    return (
        '<p class="legend">Every row\'s output for each prompt, side by side. Pick a metric and two rows '
        "A and B to show, for example, only the samples where B is worse than A.</p>"
        '<div id="sample-browser"><noscript>The sample browser needs JavaScript; the samples are in '
        "samples.jsonl.</noscript></div>"
    )


def _browser_data(
    results: dict[str, Any], samples: list[dict[str, Any]], rows: list[str], colors: dict[str, str]
) -> dict[str, Any]:
    """What the sample browser shows, per task: samples with every row's prediction, scores and diffs."""
    texts = text_tasks(results)
    have_text = {e["model"] for e in results["results"] if e["task"] in texts}
    rows = [row for row in rows if row in have_text]  # rows that only made images have no samples
    index = {row: i for i, row in enumerate(rows)}
    tasks = []
    for task in texts:
        outputs = task_outputs(results, task)
        by_id: dict[str, dict[str, Any]] = {}
        for s in samples:
            if s["task"] != task or s["model"] not in index:
                continue
            entry = by_id.get(s["id"])
            if entry is None:
                if len(by_id) >= MAX_SAMPLES:
                    continue
                entry = by_id[s["id"]] = {
                    "id": str(s["id"]),
                    "prompt": s.get("prompt", ""),
                    "refs": list(s.get("references", [])),
                    "preds": [None] * len(rows),
                }
            entry["preds"][index[s["model"]]] = _prediction(s, entry["refs"], [n for n, _ in outputs])
        total = len({s["id"] for s in samples if s["task"] == task})
        tasks.append(
            {
                "name": task,
                "total": total,
                "metrics": [{"name": n, "higher_is_better": hib, "arrow": ARROWS[hib]} for n, hib in outputs],
                "samples": list(by_id.values()),
            }
        )
    return {"rows": [{"name": row, "color": colors[row]} for row in rows], "tasks": tasks}


def _prediction(sample: dict[str, Any], refs: list[str], outputs: list[str]) -> dict[str, Any]:
    text = str(sample.get("prediction", ""))
    scores = sample.get("scores", {})
    ref = _closest(text, refs)
    reference = refs[ref] if refs else ""
    return {
        "text": text,
        "scores": [scores.get(name) for name in outputs],
        "ref": ref,
        "w": word_diff(reference, text),
        "c": char_diff(reference, text) if max(len(text), len(reference)) <= CHAR_DIFF_LIMIT else None,
    }


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _closest(text: str, refs: list[str]) -> int:
    """Index of the reference the prediction is nearest to (word-level), to diff against it."""
    if len(refs) < 2:
        return 0
    words = [t.strip() for t in _tokens(text)]
    ratios = [
        difflib.SequenceMatcher(None, [t.strip() for t in _tokens(r)], words, autojunk=False).ratio()
        for r in refs
    ]
    return ratios.index(max(ratios))


def word_diff(reference: str, prediction: str) -> list[list[Any]]:
    """[op, text] segments: 0 shared, 1 only in the prediction, -1 only in the reference.

    Words are compared without their surrounding whitespace (a leading space is not a change);
    CJK characters count as words.
    """
    ref, pred = _tokens(reference), _tokens(prediction)
    return _segments(ref, pred, [t.strip() for t in ref], [t.strip() for t in pred])


def char_diff(reference: str, prediction: str) -> list[list[Any]]:
    """Like ``word_diff`` but character by character, whitespace included."""
    return _segments(list(reference), list(prediction), list(reference), list(prediction))


def _segments(a: list[str], b: list[str], keys_a: list[str], keys_b: list[str]) -> list[list[Any]]:
    out: list[list[Any]] = []

    def add(op: int, text: str) -> None:
        if not text:
            return
        if out and out[-1][0] == op:
            out[-1][1] += text
        else:
            out.append([op, text])

    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, keys_a, keys_b, autojunk=False).get_opcodes():
        if tag == "equal":
            add(0, "".join(b[j1:j2]))
        else:
            add(-1, "".join(a[i1:i2]))
            add(1, "".join(b[j1:j2]))
    return out
