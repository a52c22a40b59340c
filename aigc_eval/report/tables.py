"""Comparison tables: one row per model setting, one column per task × metric."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

_ARROWS = {True: " ↑", False: " ↓", None: ""}


def comparison_frame(results: dict[str, Any], intervals: bool = False) -> pd.DataFrame:
    """Scores as numbers: index = model rows (suite order), columns = 'task/metric'
    (plus 'task/metric ci_low' and 'ci_high' when ``intervals``)."""
    rows: dict[str, dict[str, float]] = {}
    for entry in results["results"]:
        row = rows.setdefault(entry["model"], {})
        for metric, value in entry["metrics"].items():
            column = f"{entry['task']}/{metric}"
            row[column] = value["score"]
            if intervals and value.get("ci"):
                row[f"{column} ci_low"] = value["ci"]["low"]
                row[f"{column} ci_high"] = value["ci"]["high"]
    order = [m["name"] for m in results["suite"]["models"] if m["name"] in rows]
    frame = pd.DataFrame.from_dict(rows, orient="index").reindex(order)
    frame.index.name = "model"
    return frame


def score_decimals(value: float) -> int:
    """Precision by magnitude, so 0–1 and 0–100 scales both read well."""
    return 0 if abs(value) >= 1000 else 2 if abs(value) >= 10 else 4


def format_score(value: float | None, decimals: int | None = None) -> str:
    """Library scale kept (sacrebleu 0–100, ROUGE 0–1)."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.{score_decimals(value) if decimals is None else decimals}f}"


# Older run folders named image intervals by ``method`` only; text intervals had neither key.
_LEGACY_KINDS = {"kid-subset-std": "subset-std", "disjoint-draws-min-max": "draws-range"}


def interval_kind(ci: dict[str, Any]) -> str:
    """``bootstrap-percentile``, ``subset-std`` (KID) or ``draws-range`` (FID)."""
    return str(ci.get("kind") or _LEGACY_KINDS.get(str(ci.get("method")), "bootstrap-percentile"))


def interval_label(ci: dict[str, Any]) -> str:
    """What the interval is, in words: never "CI" for a spread that is not a confidence interval."""
    kind = interval_kind(ci)
    if kind == "subset-std":
        subsets = ci.get("n_subsets", "?")
        return f"± std over {subsets} subsets of {ci.get('subset_size', '?')}"
    if kind == "draws-range":
        draws = ci.get("n_draws", ci.get("n_resamples", "?"))
        return f"range over {draws} disjoint draws of {ci.get('draw_size', '?')}"
    return f"{ci.get('confidence') or 0.95:.0%} bootstrap CI"


def format_with_interval(score: float | None, ci: dict[str, Any] | None) -> str:
    """'31.20 ± 0.80': the score and the half-width of its interval at the score's precision, as
    sacrebleu prints; a range over draws is printed as '[low, high]', since it is not symmetric."""
    text = format_score(score)
    if not ci or score is None or math.isnan(score):
        return text
    places = score_decimals(score)
    if interval_kind(ci) == "draws-range" and ci.get("low") is not None and ci.get("high") is not None:
        return f"{text} [{format_score(ci['low'], places)}, {format_score(ci['high'], places)}]"
    half = ci.get("half_width")
    if half is not None and not math.isnan(half):
        text += f" ± {format_score(half, places)}"
    return text


def interval_notes(results: dict[str, Any], task: str) -> list[str]:
    """One line per output of ``task`` whose spread is not a bootstrap CI, or that has no interval
    for a stated reason (e.g. every KID subset is the whole set)."""
    notes: dict[str, None] = {}  # ordered and without repeats
    for entry in results["results"]:
        if entry["task"] != task:
            continue
        for name, value in entry["metrics"].items():
            ci = value.get("ci")
            if ci and interval_kind(ci) != "bootstrap-percentile":
                notes.setdefault(f"{name}: {interval_label(ci)}")
            elif not ci and value.get("ci_unavailable"):
                notes.setdefault(f"{name}: no interval ({value['ci_unavailable']})")
    return list(notes)


def _cell(value: dict[str, Any] | None) -> str:
    return "" if value is None else format_with_interval(value["score"], value.get("ci"))


def task_tables(results: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Per task, the table as people read it: scores ± CI, direction arrows in headers."""
    frame = comparison_frame(results)
    values = {
        (e["model"], f"{e['task']}/{m}"): v for e in results["results"] for m, v in e["metrics"].items()
    }
    directions = {column: value.get("higher_is_better") for (_, column), value in values.items()}
    marks = {
        (m["model"], f"{m['task']}/{m['metric']}"): " ▲" if m["verdict"] == "improvement" else " ▼"
        for m in results.get("significance", {}).get("marks", [])
    }
    tables: dict[str, pd.DataFrame] = {}
    for task in results["tasks"]:
        columns = [c for c in frame.columns if c.split("/", 1)[0] == task]
        models = [m for m in frame.index if any((m, c) in values for c in columns)]  # rows in this task
        shown = pd.DataFrame(
            {
                c: [_cell(values.get((model, c))) + marks.get((model, c), "") for model in models]
                for c in columns
            },
            index=pd.Index(models, name="model"),
        )
        shown.columns = [f"{c.split('/', 1)[1]}{_ARROWS[directions.get(c)]}" for c in columns]
        tables[task] = shown
    return tables


def to_markdown(results: dict[str, Any]) -> str:
    sections = [f"# {results['suite_name']} — run {results['run_id']}\n"]
    significance = results.get("significance")
    if significance:
        sections.append(
            f"▲ / ▼: significantly better / worse than `{significance['baseline']}` "
            f"({significance['test']}, {significance['correction']}-corrected).\n"
        )
    for task, table in task_tables(results).items():
        info = results["tasks"][task]
        if info.get("kind") == "image":
            sections.append(f"## {task} (n={info['n']} reference images, backbone={info['backbone']})\n")
        else:
            sections.append(f"## {task} (n={info['n']}, lang={info['lang'] or 'unspecified'})\n")
        align = ("left",) + ("right",) * len(table.columns)
        sections.append(table.to_markdown(colalign=align, disable_numparse=True) + "\n")
        notes = interval_notes(results, task)
        if notes:
            sections.append("Intervals: " + "; ".join(notes) + ".\n")
    return "\n".join(sections)


def to_csv(results: dict[str, Any]) -> str:
    return comparison_frame(results, intervals=True).to_csv(float_format="%.10g")
