"""The regression gate: paired tests between two run folders on the same samples.

Everything is read back from the run folders: each metric is rebuilt from its name and options and
re-aggregates the per-sample statistic rows saved in ``stats.jsonl``, so the tests swap or resample
rows exactly as ``aigc_eval.stats`` does for sacrebleu. A metric regresses only when it got worse by
more than the rule's ``min_delta`` AND its corrected p-value is below alpha: the p-value alone is not
enough, because (as in sacrebleu) a system equal to its baseline gets the smallest p, ``1/(n+1)``.

A row is compared only on the tasks it ran in both runs. Image tasks have no per-sample pairing (the
images of two runs are different images), so FID and friends get an unpaired test on the generated
images' features that ``aigc-eval run`` keeps in ``features/``:

* p-value: a two-sided permutation test. Under "the two generators make the same distribution of
  images" the generated images of both runs are exchangeable, so the pooled set is reshuffled
  ``n_trials`` times (seeded) into two sets of the original sizes, the metric of each is taken
  against the (fixed) reference, and p = (1 + #{|Δ*| ≥ |Δ|}) / (n_trials + 1). This is exact at any
  sample size and never evaluates a set with repeated images, which k-NN metrics cannot handle.
* interval: a two-sample percentile bootstrap of Δ, resampling each run's generated images
  independently (``intervals.n_resamples``, ``intervals.seed``); not given for recall and coverage,
  whose values on sets with repeated images are meaningless.

Lower is better for FID/KID, higher for IS, precision, recall, density and coverage. Metrics that
cannot be resampled (a stats-only side, fid_inf, cmmd) are "not tested" with the reason in the note.
The p-values join the text ones in the Holm/BH correction.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from aigc_eval.config import Intervals, Regression, RegressionRule
from aigc_eval.errors import UserError
from aigc_eval.metrics.base import Metric
from aigc_eval.metrics.image import metric_label
from aigc_eval.metrics.registry import build_metric
from aigc_eval.results import RESULTS_FILE, SAMPLES_FILE, STATS_FILE, load_results, read_jsonl
from aigc_eval.stats import (
    benjamini_hochberg,
    bootstrap_interval,
    holm,
    paired_approximate_randomization,
    paired_bootstrap,
)

if TYPE_CHECKING:
    from aigc_eval.image_scoring import ResampledStatistic

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NO_CHANGE = "no significant change"
CHANGED = "changed"  # significant and larger than min_delta, for a metric with no better direction
NOT_TESTED = "not tested"

DEFAULT_TRIALS = {"ar": 10000, "bootstrap": 1000}
TOP_SAMPLES = 5
TEXT_LIMIT = 120


@dataclass(frozen=True)
class SampleChange:
    """One sample's score in both runs, with its texts truncated for a report."""

    id: str
    baseline: float
    current: float
    delta: float
    prompt: str
    reference: str
    baseline_prediction: str
    current_prediction: str


@dataclass(frozen=True)
class MetricComparison:
    """One task × metric output of one model pair: the scores, the paired test and the verdict.

    ``delta`` is current minus baseline; ``threshold`` is ``min_delta`` in score units (relative
    rules multiplied by |baseline|). ``p_value``/``p_corrected`` are None when not tested.
    """

    baseline_model: str
    current_model: str
    task: str
    metric: str  # the output name (bleu, rouge1, ref_perplexity, ...)
    metric_name: str  # the metric that produced it (bleu, rouge, perplexity, ...)
    n: int
    higher_is_better: bool | None
    baseline: float
    current: float
    delta: float
    ci_low: float | None
    ci_high: float | None
    ci_confidence: float | None
    p_value: float | None
    p_corrected: float | None
    alpha: float
    threshold: float
    verdict: str
    baseline_signature: str
    current_signature: str
    note: str = ""
    top_changes: tuple[SampleChange, ...] = ()
    method: str = ""  # how this entry was tested when not by the comparison's paired test


@dataclass(frozen=True)
class Comparison:
    """Every metric comparison of two runs, with the settings that decided the verdicts."""

    baseline: str
    current: str
    test: str  # paired-ar or paired-bs
    n_trials: int
    seed: int
    correction: str
    alpha: float
    pairs: tuple[tuple[str, str], ...]
    entries: tuple[MetricComparison, ...]
    notes: tuple[str, ...] = ()
    rules: tuple[RegressionRule, ...] = field(default_factory=tuple)

    @property
    def regressions(self) -> list[MetricComparison]:
        return [e for e in self.entries if e.verdict == REGRESSION]

    @property
    def has_regression(self) -> bool:
        return any(e.verdict == REGRESSION for e in self.entries)


@dataclass
class _Run:
    path: Path
    results: dict[str, Any]
    stats: dict[tuple[str, str], list[dict[str, Any]]]
    samples: dict[tuple[str, str], list[dict[str, Any]]]
    scores: dict[tuple[str, str], dict[str, dict[str, Any]]]


class _SignatureOnlyScorer:
    """Perplexity wants its scoring model only for the signature; compare never scores text."""

    def describe(self) -> dict[str, str]:
        return {}


class _AllOutputs:
    """The metric's outputs per distinct row set, aggregated once for all of them.

    ROUGE and the descriptors report several outputs from one aggregate, and each output's test and
    interval resample the same row sets (same seed), so each set is aggregated once. The key is the
    rows' bytes: for object rows those are the cells' addresses, equal only when every cell is the
    very same object, so equal keys always mean equal rows.
    """

    def __init__(self, metric: Metric) -> None:
        self.metric = metric
        self._memo: dict[tuple[Any, ...], dict[str, float]] = {}

    def __call__(self, rows: np.ndarray) -> dict[str, float]:
        digest = hashlib.blake2b(np.ascontiguousarray(rows).tobytes(), digest_size=16).digest()
        key = (rows.shape, rows.dtype.str, digest)
        if key not in self._memo:
            self._memo[key] = {name: s.score for name, s in self.metric.aggregate(rows).items()}
        return self._memo[key]

    def output(self, name: str) -> Callable[[np.ndarray], float]:
        return lambda rows: self(rows)[name]

    def delta(self, name: str, width: int) -> Callable[[np.ndarray], float]:
        """Current minus baseline on side-by-side rows ``[baseline | current]``: one paired resample."""
        return lambda rows: self(rows[:, width:])[name] - self(rows[:, :width])[name]


def compare_runs(
    baseline: str | Path,
    current: str | Path,
    regression: Regression | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> Comparison:
    """Test every shared task × metric of the paired model rows; rules default to CURRENT's suite."""
    base_run, cur_run = _load_run(baseline), _load_run(current)
    rules = regression or suite_regression(cur_run.results)
    model_pairs = _model_pairs(base_run, cur_run, pairs)
    tasks, notes = _shared_tasks(base_run, cur_run)
    intervals = Intervals.model_validate(cur_run.results["suite"].get("intervals", {}))
    n_trials = rules.n_trials or DEFAULT_TRIALS[rules.test]

    raw: list[MetricComparison] = []
    for base_model, cur_model in model_pairs:
        for task in tasks:
            ran = (base_model, task) in base_run.scores, (cur_model, task) in cur_run.scores
            if not any(ran):
                continue  # e.g. an image row on a text task: nothing to compare
            if not all(ran):
                side, row = ("current", cur_model) if ran[1] else ("baseline", base_model)
                notes.append(f"task {task!r}: row {row!r} ran it only in the {side} run; not compared")
                continue
            if cur_run.results["tasks"][task].get("kind") == "image":
                found, task_notes = _compare_image_task(
                    base_run, cur_run, base_model, cur_model, task, rules, n_trials, intervals
                )
            else:
                _check_paired(base_run, cur_run, base_model, cur_model, task)
                found, task_notes = _compare_task(
                    base_run, cur_run, base_model, cur_model, task, rules, n_trials, intervals
                )
            raw.extend(found)
            notes.extend(task_notes)

    tested = {i: e.p_value for i, e in enumerate(raw) if e.p_value is not None}
    corrected = dict(zip(tested, _correct(list(tested.values()), rules.correction), strict=True))
    entries = []
    for i, entry in enumerate(raw):
        p = corrected.get(i)
        entry = replace(entry, p_corrected=p, verdict=_verdict(entry, p))
        entries.append(replace(entry, top_changes=_top_changes(base_run, cur_run, entry)))
    return Comparison(
        baseline=str(base_run.path),
        current=str(cur_run.path),
        test="paired-ar" if rules.test == "ar" else "paired-bs",
        n_trials=n_trials,
        seed=rules.seed,
        correction=rules.correction,
        alpha=rules.alpha,
        pairs=tuple(model_pairs),
        entries=tuple(entries),
        notes=tuple(notes),
        rules=tuple(rules.rules),
    )


def suite_regression(results: dict[str, Any] | str | Path) -> Regression:
    """The ``regression:`` section a run was made with (defaults for a run that has none)."""
    data = results if isinstance(results, dict) else load_results(results)
    try:
        return Regression.model_validate(data["suite"].get("regression", {}))
    except ValidationError as error:
        raise UserError(f"the run's regression section is invalid: {error}") from None


def with_overrides(
    regression: Regression,
    *,
    alpha: float | None = None,
    test: str | None = None,
    n_trials: int | None = None,
    seed: int | None = None,
    correction: str | None = None,
    min_deltas: Sequence[str] = (),
) -> Regression:
    """Apply command-line flags over a suite's section; each ``METRIC=VALUE[%]`` appends a rule.

    The appended rule wins for that metric on every task (later rules win) and keeps the direction
    and alpha of the last task-wide rule that matched it, so only the minimum effect changes.
    """
    section = regression.model_dump()
    for key, value in (
        ("alpha", alpha),
        ("test", test),
        ("n_trials", n_trials),
        ("seed", seed),
        ("correction", correction),
    ):
        if value is not None:
            section[key] = value
    rules = list(regression.rules)
    for text in min_deltas:
        metric, value, relative = _parse_min_delta(text)
        inherited = [r for r in rules if r.task == "*" and fnmatchcase(metric, r.metric)]
        base = inherited[-1].model_dump() if inherited else {}
        rules.append(RegressionRule(**{**base, "metric": metric, "min_delta": value, "relative": relative}))
    section["rules"] = [r.model_dump() for r in rules]
    try:
        return Regression.model_validate(section)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise UserError(f"invalid regression option: {problems}") from None


def parse_pair(text: str) -> tuple[str, str]:
    """``BASE_ROW=CUR_ROW`` from ``--pair``."""
    base, sep, cur = text.partition("=")
    if not sep or not base or not cur:
        raise UserError(f"--pair {text!r}: write BASELINE_ROW=CURRENT_ROW, e.g. --pair greedy=greedy-v2")
    return base, cur


def _parse_min_delta(text: str) -> tuple[str, float, bool]:
    metric, sep, value = text.partition("=")
    relative = value.endswith("%")
    try:
        number = float(value.removesuffix("%"))
    except ValueError:
        number = math.nan
    if not sep or not metric or not number >= 0:
        raise UserError(
            f"--min-delta {text!r}: write METRIC=VALUE (absolute) or METRIC=VALUE% (relative), "
            "e.g. --min-delta bleu=0.5 or --min-delta ref_perplexity=2%"
        )
    return metric, number / 100 if relative else number, relative


def _load_run(path: str | Path) -> _Run:
    results = load_results(path)
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    stats_file, samples_file = folder / STATS_FILE, folder / SAMPLES_FILE
    for file in (stats_file, samples_file):
        if not file.is_file():
            raise UserError(
                f"{file}: missing; compare needs the per-sample files that 'aigc-eval run' writes next to "
                f"{RESULTS_FILE} (re-run the suite with this version)"
            )
    stats: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in read_jsonl(stats_file):
        stats.setdefault((entry["model"], entry["task"]), []).append(entry)
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for sample in read_jsonl(samples_file):
        samples.setdefault((sample["model"], sample["task"]), []).append(sample)
    scores = {(r["model"], r["task"]): r["metrics"] for r in results["results"]}
    return _Run(folder, results, stats, samples, scores)


def _model_pairs(base: _Run, cur: _Run, pairs: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """Explicit pairs, else rows of equal name, else the only row of each run."""
    base_rows, cur_rows = list(base.results["models"]), list(cur.results["models"])
    listing = f"baseline rows: {', '.join(base_rows)}; current rows: {', '.join(cur_rows)}"
    if pairs:
        for b, c in pairs:
            if b not in base_rows or c not in cur_rows:
                raise UserError(f"cannot pair {b!r} with {c!r}: no such row ({listing})")
        return list(pairs)
    shared = [(name, name) for name in base_rows if name in cur_rows]
    if shared:
        return shared
    if len(base_rows) == 1 and len(cur_rows) == 1:
        return [(base_rows[0], cur_rows[0])]
    raise UserError(f"no model rows to pair ({listing}); name the pairs with --pair BASELINE_ROW=CURRENT_ROW")


def _shared_tasks(base: _Run, cur: _Run) -> tuple[list[str], list[str]]:
    """Tasks in both runs (current's order); a task in one run only is noted, not compared."""
    base_tasks, cur_tasks = base.results["tasks"], cur.results["tasks"]
    shared = [t for t in cur_tasks if t in base_tasks]
    if not shared:
        raise UserError(
            f"the runs share no task (baseline: {', '.join(base_tasks)}; current: {', '.join(cur_tasks)}); "
            "compare runs of the same suite"
        )
    notes = [f"task {t!r} is only in the current run; not compared" for t in cur_tasks if t not in base_tasks]
    notes += [
        f"task {t!r} is only in the baseline run; not compared" for t in base_tasks if t not in cur_tasks
    ]
    for task in shared:
        hashes = base_tasks[task]["content_hash"], cur_tasks[task]["content_hash"]
        if hashes[0] != hashes[1]:
            raise UserError(
                f"task {task!r}: the runs are not paired: its data file differs "
                f"(content hash {hashes[0][:12]} in the baseline, {hashes[1][:12]} in the current run); "
                "compare runs made on the same data"
            )
    return shared, notes


def _check_paired(base: _Run, cur: _Run, base_model: str, cur_model: str, task: str) -> None:
    """Same sample ids in the same order, and the same references, so each row pairs with its twin."""
    base_stats, cur_stats = base.stats.get((base_model, task)), cur.stats.get((cur_model, task))
    if not base_stats or not cur_stats:
        side = "baseline" if not base_stats else "current"
        row = base_model if not base_stats else cur_model
        raise UserError(f"task {task!r}: the {side} run has no statistics for row {row!r}")
    base_ids, cur_ids = base_stats[0]["ids"], cur_stats[0]["ids"]
    if base_ids != cur_ids:
        raise UserError(
            f"task {task!r}: the runs are not paired: their sample ids differ "
            f"({len(base_ids)} samples in the baseline, {len(cur_ids)} in the current run"
            f"{_first_difference(base_ids, cur_ids)}); run both with the same data and --limit"
        )
    base_refs = [s["references"] for s in base.samples.get((base_model, task), [])]
    cur_refs = [s["references"] for s in cur.samples.get((cur_model, task), [])]
    if base_refs != cur_refs:
        changed = next((i for i, (a, b) in enumerate(zip(base_refs, cur_refs, strict=False)) if a != b), 0)
        raise UserError(
            f"task {task!r}: the runs are not paired: the references of sample {base_ids[changed]!r} "
            "differ; compare runs whose tasks read the same reference fields"
        )


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"; sample {i} is {x!r} vs {y!r}"
    return ""


def _entry_key(entry: dict[str, Any]) -> str:
    return json.dumps([entry["metric"], entry["options"], entry["lang"]], sort_keys=True)


def _compare_task(
    base: _Run,
    cur: _Run,
    base_model: str,
    cur_model: str,
    task: str,
    rules: Regression,
    n_trials: int,
    intervals: Intervals,
) -> tuple[list[MetricComparison], list[str]]:
    """Every output of every metric entry both runs computed the same way on this task."""
    base_entries = {_entry_key(e): e for e in base.stats[(base_model, task)]}
    base_scores, cur_scores = base.scores[(base_model, task)], cur.scores[(cur_model, task)]
    found: list[MetricComparison] = []
    claimed: set[str] = set()
    unresampled: list[str] = []
    for cur_entry in cur.stats[(cur_model, task)]:
        base_entry = base_entries.get(_entry_key(cur_entry))
        if base_entry is None:
            continue
        metric = build_metric(
            cur_entry["metric"],
            cur_entry["options"],
            cur_entry["lang"],
            scorer=_SignatureOnlyScorer(),
            prompts=[s["prompt"] for s in cur.samples.get((cur_model, task), [])],
        )
        if not metric.resamplable:
            unresampled.append(cur_entry["metric"])
            continue
        rows_b, rows_c = _rows(base_entry["rows"]), _rows(cur_entry["rows"])
        outputs = _AllOutputs(metric)
        for name, score in metric.aggregate(rows_b).items():
            if name in claimed or name not in base_scores or name not in cur_scores:
                continue
            claimed.add(name)
            rule = _rule_for(rules.rules, task, name, metric.name)
            p_value = None
            if rule is not None:
                aggregate = outputs.output(name)
                if rules.test == "ar":
                    p_value = paired_approximate_randomization(
                        rows_b,
                        rows_c,
                        aggregate,
                        n_trials,
                        rules.seed,
                        metric.additive,
                        count_ties=rules.ties == "count",
                    ).p_value
                else:
                    p_value = paired_bootstrap(
                        rows_b, rows_c, aggregate, n_trials, rules.seed, metric.additive
                    ).p_value
            baseline_value, current_value = outputs(rows_b)[name], outputs(rows_c)[name]
            ci = None
            if intervals.n_resamples > 0 and len(rows_b) > 1:
                ci = bootstrap_interval(
                    np.hstack([rows_b, rows_c]),
                    outputs.delta(name, rows_b.shape[1]),
                    intervals.n_resamples,
                    intervals.confidence,
                    intervals.seed,
                    metric.additive,
                )
            direction = score.higher_is_better
            if rule is not None and rule.higher_is_better is not None:
                direction = rule.higher_is_better
            threshold = 0.0
            if rule is not None:
                threshold = rule.min_delta * abs(baseline_value) if rule.relative else rule.min_delta
            found.append(
                MetricComparison(
                    baseline_model=base_model,
                    current_model=cur_model,
                    task=task,
                    metric=name,
                    metric_name=metric.name,
                    n=len(rows_b),
                    higher_is_better=direction,
                    baseline=baseline_value,
                    current=current_value,
                    delta=current_value - baseline_value,
                    ci_low=ci.low if ci else None,
                    ci_high=ci.high if ci else None,
                    ci_confidence=ci.confidence if ci else None,
                    p_value=p_value,
                    p_corrected=None,
                    alpha=(rule.alpha if rule is not None and rule.alpha is not None else rules.alpha),
                    threshold=threshold,
                    verdict=NOT_TESTED,
                    baseline_signature=base_scores[name]["signature"],
                    current_signature=cur_scores[name]["signature"],
                    note="" if rule is not None else "no regression rule matches this metric",
                )
            )
    for name in (n for n in cur_scores if n in base_scores and n not in claimed):
        reason = (
            f"{', '.join(sorted(set(unresampled)))} cannot be resampled, so it is not tested"
            if unresampled
            else "the metric's options or language differ between the runs"
        )
        found.append(
            _untested(base_model, cur_model, task, name, base_scores[name], cur_scores[name], reason)
        )
    notes = [
        f"{task}: {name} is only in the {'current' if name in cur_scores else 'baseline'} run ({cur_model})"
        for name in sorted(set(cur_scores) ^ set(base_scores))
    ]
    return found, notes


def _untested(
    base_model: str,
    cur_model: str,
    task: str,
    name: str,
    base_score: dict[str, Any],
    cur_score: dict[str, Any],
    note: str,
) -> MetricComparison:
    """A metric reported from results.json alone: no statistic rows to test it with."""
    return MetricComparison(
        baseline_model=base_model,
        current_model=cur_model,
        task=task,
        metric=name,
        metric_name=name,
        n=0,
        higher_is_better=cur_score.get("higher_is_better"),
        baseline=_value(base_score),
        current=_value(cur_score),
        delta=_value(cur_score) - _value(base_score),
        ci_low=None,
        ci_high=None,
        ci_confidence=None,
        p_value=None,
        p_corrected=None,
        alpha=math.nan,
        threshold=math.nan,
        verdict=NOT_TESTED,
        baseline_signature=base_score["signature"],
        current_signature=cur_score["signature"],
        note=note,
    )


def _compare_image_task(
    base: _Run,
    cur: _Run,
    base_model: str,
    cur_model: str,
    task: str,
    rules: Regression,
    n_trials: int,
    intervals: Intervals,
) -> tuple[list[MetricComparison], list[str]]:
    """Every image metric both runs reported: a permutation test and a bootstrap interval (module doc)."""
    from aigc_eval.image_scoring import NO_BOOTSTRAP, ResampledStatistic, resampling_unavailable

    base_entry, cur_entry = _result_entry(base, base_model, task), _result_entry(cur, cur_model, task)
    base_scores, cur_scores = base_entry["metrics"], cur_entry["metrics"]
    config = next(t for t in cur.results["suite"]["tasks"] if t["name"] == task)
    names = {metric_label(m, config["backbone"]): m for m in config["image_metrics"]}
    shared = [name for name in cur_scores if name in base_scores]
    notes = [
        f"{task}: {name} is only in the {'current' if name in cur_scores else 'baseline'} run ({cur_model})"
        for name in sorted(set(cur_scores) ^ set(base_scores))
    ]
    sets = _image_features(base, base_entry, cur, cur_entry)
    if isinstance(sets, str):
        return [
            _untested(base_model, cur_model, task, n, base_scores[n], cur_scores[n], sets) for n in shared
        ], notes
    gen_b, gen_c, reference = sets
    pooled = np.vstack([gen_b.features, gen_c.features])
    logits = None
    if gen_b.logits is not None and gen_c.logits is not None:
        logits = np.vstack([gen_b.logits, gen_c.logits])
    n_b, n_c = len(gen_b.features), len(gen_c.features)
    found = []
    for name in shared:
        metric = names.get(name, name)
        rule = _rule_for(rules.rules, task, name, metric)
        reason = (
            "no regression rule matches this metric"
            if rule is None
            else resampling_unavailable(metric, gen_b, reference, n_b + n_c)
            or resampling_unavailable(metric, gen_c, reference, n_b + n_c)
        )
        if reason is not None:
            found.append(
                _untested(base_model, cur_model, task, name, base_scores[name], cur_scores[name], reason)
            )
            continue
        assert rule is not None
        statistic = ResampledStatistic(metric, pooled, reference, logits)
        p_value = _permutation_p(statistic, n_b, n_c, n_trials, rules.seed)
        ci = None
        if intervals.n_resamples > 0 and metric not in NO_BOOTSTRAP:
            ci = _bootstrap_delta(
                statistic, n_b, n_c, intervals.n_resamples, intervals.confidence, intervals.seed
            )
        direction = cur_scores[name].get("higher_is_better")
        if rule.higher_is_better is not None:
            direction = rule.higher_is_better
        baseline_value, current_value = _value(base_scores[name]), _value(cur_scores[name])
        found.append(
            MetricComparison(
                baseline_model=base_model,
                current_model=cur_model,
                task=task,
                metric=name,
                metric_name=metric,
                n=n_c,
                higher_is_better=direction,
                baseline=baseline_value,
                current=current_value,
                delta=current_value - baseline_value,
                ci_low=ci[0] if ci else None,
                ci_high=ci[1] if ci else None,
                ci_confidence=intervals.confidence if ci else None,
                p_value=p_value,
                p_corrected=None,
                alpha=rule.alpha if rule.alpha is not None else rules.alpha,
                threshold=rule.min_delta * abs(baseline_value) if rule.relative else rule.min_delta,
                verdict=NOT_TESTED,
                baseline_signature=base_scores[name]["signature"],
                current_signature=cur_scores[name]["signature"],
                method=f"{IMAGE_TEST} ({n_b} + {n_c} generated images)",
            )
        )
    return found, notes


IMAGE_TEST = "permutation test of the pooled generated images"


def _result_entry(run: _Run, model: str, task: str) -> dict[str, Any]:
    return next(e for e in run.results["results"] if e["model"] == model and e["task"] == task)


def _image_features(
    base: _Run, base_entry: dict[str, Any], cur: _Run, cur_entry: dict[str, Any]
) -> tuple[Any, Any, Any] | str:
    """Both runs' generated feature sets and the reference's, or why they are not in the run folders."""
    from aigc_eval.image_scoring import load_feature_set

    for run, entry in ((base, base_entry), (cur, cur_entry)):
        files = entry.get("features")
        if not files:
            return (
                f"{run.path} keeps no image features for this row (made by an older version); "
                "re-run the suite to test image metrics"
            )
        missing = [f for f in files.values() if not (run.path / f).is_file()]
        if missing:
            return f"{run.path}: {', '.join(missing)} missing; re-run the suite to test image metrics"
    reference_file = cur_entry["features"].get("reference")
    reference = load_feature_set(cur.path / reference_file) if reference_file else None
    gen_b = load_feature_set(base.path / base_entry["features"]["generated"])
    gen_c = load_feature_set(cur.path / cur_entry["features"]["generated"])
    if gen_b.features is None or gen_c.features is None:
        return "a generated side is mean/covariance statistics only, without per-image features"
    return gen_b, gen_c, reference


def _permutation_p(statistic: ResampledStatistic, n_b: int, n_c: int, n_trials: int, seed: int) -> float:
    """Two-sided permutation p-value of current-minus-baseline over reshuffles of the pooled images."""
    observed = statistic(np.arange(n_b, n_b + n_c)) - statistic(np.arange(n_b))
    tolerance = 1e-9 * max(abs(observed), 1e-12)
    rng = np.random.default_rng(seed)
    extreme = 0
    for _ in range(n_trials):
        order = rng.permutation(n_b + n_c)
        delta = statistic(order[n_b:]) - statistic(order[:n_b])
        extreme += abs(delta) >= abs(observed) - tolerance
    return (extreme + 1) / (n_trials + 1)


def _bootstrap_delta(
    statistic: ResampledStatistic, n_b: int, n_c: int, n_resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile interval of current-minus-baseline, each run's images resampled on their own."""
    rng = np.random.default_rng(seed)
    deltas = np.array(
        [
            statistic(rng.integers(n_b, n_b + n_c, n_c)) - statistic(rng.integers(0, n_b, n_b))
            for _ in range(n_resamples)
        ]
    )
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(deltas, [tail, 100 - tail])
    return float(low), float(high)


def _rows(values: list[list[Any]]) -> np.ndarray:
    """Rows as the runner wrote them: integer or float matrices, or object rows (n-grams, texts)."""
    cells = [cell for row in values for cell in row]
    width = len(values[0]) if values else 0
    if all(isinstance(c, int) for c in cells):  # sacrebleu's counts (bool is an int too)
        return np.array(values, dtype=np.int64).reshape(len(values), width)
    if all(isinstance(c, (int, float)) for c in cells):
        return np.array(values, dtype=np.float64).reshape(len(values), width)
    rows = np.empty((len(values), width), dtype=object)
    for i, row in enumerate(values):
        for j, cell in enumerate(row):  # cell by cell, so numpy never unpacks the nested lists
            rows[i, j] = cell
    return rows


def _rule_for(rules: Sequence[RegressionRule], task: str, output: str, metric: str) -> RegressionRule | None:
    """The last rule whose globs match the task and the output (or its metric's) name."""
    matching = [
        r
        for r in rules
        if fnmatchcase(task, r.task) and (fnmatchcase(output, r.metric) or fnmatchcase(metric, r.metric))
    ]
    return matching[-1] if matching else None


def _correct(p_values: list[float], correction: str) -> list[float]:
    if not p_values or correction == "none":
        return list(p_values)
    return holm(p_values) if correction == "holm" else benjamini_hochberg(p_values)


def _verdict(entry: MetricComparison, p_corrected: float | None) -> str:
    if p_corrected is None:
        return NOT_TESTED
    if not (p_corrected < entry.alpha and abs(entry.delta) > entry.threshold):
        return NO_CHANGE
    if entry.higher_is_better is None:
        return CHANGED
    return IMPROVEMENT if (entry.delta > 0) == entry.higher_is_better else REGRESSION


def _top_changes(base: _Run, cur: _Run, entry: MetricComparison) -> tuple[SampleChange, ...]:
    """The samples that moved most in the verdict's direction: worst first, best first for improvements,
    largest first for metrics without a direction."""
    base_samples = base.samples.get((entry.baseline_model, entry.task), [])
    cur_samples = cur.samples.get((entry.current_model, entry.task), [])
    changes = []
    for b, c in zip(base_samples, cur_samples, strict=True):
        before, after = b["scores"].get(entry.metric), c["scores"].get(entry.metric)
        if before is None or after is None or math.isnan(before) or math.isnan(after) or before == after:
            continue
        changes.append((b, c, before, after))
    if entry.higher_is_better is None:
        changes.sort(key=lambda x: -abs(x[3] - x[2]))
    else:
        sign = 1 if entry.higher_is_better else -1
        if entry.verdict == IMPROVEMENT:
            sign = -sign
        changes.sort(key=lambda x: sign * (x[3] - x[2]))
    return tuple(
        SampleChange(
            id=b["id"],
            baseline=before,
            current=after,
            delta=after - before,
            prompt=truncate(b["prompt"]),
            reference=truncate(b["references"][0] if b["references"] else ""),
            baseline_prediction=truncate(b["prediction"]),
            current_prediction=truncate(c["prediction"]),
        )
        for b, c, before, after in changes[:TOP_SAMPLES]
    )


def truncate(text: str, limit: int = TEXT_LIMIT) -> str:
    """Texts in reports stay short enough for a pull-request comment."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value(score: dict[str, Any]) -> float:
    """A recorded score as a float: strict JSON stores an undefined score as null (NaN here)."""
    value = score.get("score")
    return math.nan if value is None else float(value)
