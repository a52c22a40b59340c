"""The outputs of ``aigc-eval compare``: a pull-request comment, JUnit XML for CI systems, JSON."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict
from typing import Any

from aigc_eval.files import finite_or_none
from aigc_eval.gate import (
    CHANGED,
    IMPROVEMENT,
    NO_CHANGE,
    NOT_TESTED,
    REGRESSION,
    Comparison,
    MetricComparison,
)
from aigc_eval.report.tables import format_score

MARKERS = {
    REGRESSION: "**REGRESSION**",
    IMPROVEMENT: "improved",
    CHANGED: "changed",
    NO_CHANGE: "–",
    NOT_TESTED: "not tested",
}
_ARROWS = {True: " ↑", False: " ↓", None: ""}
_CORRECTIONS = {"holm": "Holm–Bonferroni", "bh": "Benjamini–Hochberg", "none": "no"}
_P_COLUMNS = {"holm": "p (Holm)", "bh": "p (BH)", "none": "p"}
_TESTS = {"paired-ar": "paired approximate randomization", "paired-bs": "paired bootstrap resampling"}
# Characters that would end a table cell, start HTML or change emphasis when GitHub renders the comment.
_MARKDOWN = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "|": "\\|",
        "\\": "\\\\",
        "*": "\\*",
        "_": "\\_",
        "`": "\\`",
        "[": "\\[",
        "]": "\\]",
    }
)
# Characters XML 1.0 forbids even escaped; generated text can contain them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def escape(text: str) -> str:
    """User text (prompts, predictions, names) made safe for one markdown table cell."""
    return "<br>".join(text.translate(_MARKDOWN).splitlines()) if text else ""


def format_p(p: float | None) -> str:
    return "n/a" if p is None or math.isnan(p) else f"{p:.4f}"


def format_delta(entry: MetricComparison) -> str:
    """'-2.10 [-3.05, -1.20]': the change with its paired bootstrap interval."""
    text = _signed(entry.delta)
    if entry.ci_low is not None and entry.ci_high is not None:
        text += f" [{_signed(entry.ci_low)}, {_signed(entry.ci_high)}]"
    return text


def _signed(value: float) -> str:
    text = format_score(value)
    return text if text.startswith("-") or text == "n/a" else f"+{text}"


def headline(comparison: Comparison) -> str:
    counts = {v: sum(e.verdict == v for e in comparison.entries) for v in MARKERS}
    tested = len(comparison.entries) - counts[NOT_TESTED]
    verdict = "**REGRESSION**" if comparison.has_regression else "**No regression**"
    parts = [f"{counts[REGRESSION]} regressed", f"{counts[IMPROVEMENT]} improved"]
    if counts[CHANGED]:
        parts.append(f"{counts[CHANGED]} changed")
    if counts[NOT_TESTED]:
        parts.append(f"{counts[NOT_TESTED]} not tested")
    return f"{verdict}: {', '.join(parts)} of {tested} tested metrics"


def to_markdown(comparison: Comparison) -> str:
    """A pull-request comment: the verdict, one table per model pair × task, the samples behind each
    regression in collapsible sections."""
    test = _TESTS.get(comparison.test, comparison.test)
    lines = [
        "## aigc-eval compare",
        "",
        headline(comparison),
        "",
        f"Baseline {escape(comparison.baseline)} vs current {escape(comparison.current)}: {test} "
        f"({comparison.n_trials:,} trials, seed {comparison.seed}), {_CORRECTIONS[comparison.correction]} "
        f"correction across {sum(e.p_value is not None for e in comparison.entries)} tests, "
        f"alpha {comparison.alpha:g}. A metric regresses only when it is worse by more than its minimum "
        "effect and the corrected p-value is below alpha.",
        "",
    ]
    groups: dict[tuple[str, str, str], list[MetricComparison]] = {}
    for entry in comparison.entries:
        groups.setdefault((entry.baseline_model, entry.current_model, entry.task), []).append(entry)
    for (base_model, cur_model, task), entries in groups.items():
        models = (
            escape(cur_model) if base_model == cur_model else f"{escape(base_model)} → {escape(cur_model)}"
        )
        confidence = next((e.ci_confidence for e in entries if e.ci_confidence is not None), None)
        ci = f" [{confidence:.0%} CI]" if confidence is not None else ""
        lines += [
            f"### {escape(task)} · {models} (n={max(e.n for e in entries)})",
            "",
            f"| metric | baseline | current | delta{ci} | {_P_COLUMNS[comparison.correction]} | verdict |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for e in entries:
            lines.append(
                f"| {escape(e.metric)}{_ARROWS[e.higher_is_better]} | {format_score(e.baseline)} | "
                f"{format_score(e.current)} | {format_delta(e)} | {format_p(e.p_corrected)} | "
                f"{_verdict_cell(e)} |"
            )
        lines.append("")
        lines += _methods_note(comparison, entries)
        changed = [e for e in entries if e.baseline_signature != e.current_signature]
        if changed:
            names = ", ".join(escape(e.metric) for e in changed)
            lines += [f"Signatures differ between the runs for {names}: check the scores are comparable.", ""]
    for entry in comparison.regressions:
        lines += _samples_section(entry)
    if comparison.notes:
        lines += ["Notes:", "", *(f"- {escape(note)}" for note in comparison.notes), ""]
    return "\n".join(lines)


def _methods_note(comparison: Comparison, entries: list[MetricComparison]) -> list[str]:
    """How the entries not tested by the paired test were tested (unpaired rows: images)."""
    methods = sorted({e.method for e in entries if e.method})
    if not methods:
        return []
    without = [escape(e.metric) for e in entries if e.method and e.ci_low is None]
    return [
        f"Tested by {'; '.join(methods)} ({comparison.n_trials:,} reshuffles, seed {comparison.seed}); "
        "the interval is a two-sample bootstrap of the delta"
        + (f" (none for {', '.join(without)})." if without else "."),
        "",
    ]


def _verdict_cell(entry: MetricComparison) -> str:
    """The marker, plus why a significant change did not count or why nothing was tested."""
    cell = MARKERS[entry.verdict]
    if entry.note:
        return f"{cell} ({escape(entry.note)})"
    significant = entry.p_corrected is not None and entry.p_corrected < entry.alpha
    if entry.verdict == NO_CHANGE and significant and entry.delta != 0:
        return f"{cell} (within min delta {format_score(entry.threshold)})"
    return cell


def _samples_section(entry: MetricComparison) -> list[str]:
    where = f"{escape(entry.metric)} on {escape(entry.task)} ({escape(entry.current_model)})"
    lines = [
        "<details>",
        f"<summary>{where}: the samples that got worse most</summary>",
        "",
        "| id | baseline | current | delta | prompt | reference | baseline output | current output |",
        "|---|---:|---:|---:|---|---|---|---|",
    ]
    for s in entry.top_changes:
        lines.append(
            f"| {escape(s.id)} | {format_score(s.baseline)} | {format_score(s.current)} | "
            f"{_signed(s.delta)} | {escape(s.prompt)} | {escape(s.reference)} | "
            f"{escape(s.baseline_prediction)} | {escape(s.current_prediction)} |"
        )
    return [*lines, "", "</details>", ""]


def to_junit_xml(comparison: Comparison) -> str:
    """One test suite per model pair, one test case per task × metric; regressions are failures."""
    groups: dict[tuple[str, str], list[MetricComparison]] = {}
    for entry in comparison.entries:
        groups.setdefault((entry.baseline_model, entry.current_model), []).append(entry)
    root = ET.Element("testsuites", name="aigc-eval compare")
    root.set("tests", str(len(comparison.entries)))
    root.set("failures", str(len(comparison.regressions)))
    for (base_model, cur_model), entries in groups.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_xml_text(cur_model if base_model == cur_model else f"{base_model} -> {cur_model}"),
            tests=str(len(entries)),
            failures=str(sum(e.verdict == REGRESSION for e in entries)),
            errors="0",
            skipped=str(sum(e.verdict == NOT_TESTED for e in entries)),
        )
        for entry in entries:
            case = ET.SubElement(
                suite, "testcase", classname=_xml_text(entry.task), name=_xml_text(entry.metric), time="0"
            )
            summary = _summary(entry, comparison.correction)
            if entry.verdict == REGRESSION:
                failure = ET.SubElement(case, "failure", message=summary, type="regression")
                failure.text = _xml_text(
                    "\n".join(
                        f"{s.id}: {format_score(s.baseline)} -> {format_score(s.current)}; "
                        f"current output: {s.current_prediction}"
                        for s in entry.top_changes
                    )
                )
            elif entry.verdict == NOT_TESTED:
                ET.SubElement(case, "skipped", message=_xml_text(entry.note or NOT_TESTED))
            ET.SubElement(case, "system-out").text = summary
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _summary(entry: MetricComparison, correction: str) -> str:
    return _xml_text(
        f"{entry.metric} on {entry.task}: {entry.verdict}; baseline {format_score(entry.baseline)}, "
        f"current {format_score(entry.current)}, delta {format_delta(entry)}, "
        f"p ({correction}) {format_p(entry.p_corrected)}, alpha {entry.alpha:g}, "
        f"min delta {format_score(entry.threshold)}"
    )


def to_json(comparison: Comparison) -> dict[str, Any]:
    """Everything in the comparison; NaN and infinities become null so any JSON reader accepts it."""
    data = asdict(comparison)
    data["rules"] = [rule.model_dump(mode="json") for rule in comparison.rules]
    data["has_regression"] = comparison.has_regression
    data["summary"] = headline(comparison).replace("**", "")
    return finite_or_none(data)
