"""check-backends: do two model rows (hf vs vllm, two dtypes, two batch sizes) produce the same thing?

"vLLM and HF give different scores" has three possible causes, and this check separates them on the
suite's own prompts: the generations differ (exact-match rate, and for each mismatch the first token
where the two outputs part, under row A's tokenizer), the models score text differently (per-text NLL of
the references under both rows), and how much either moves each metric (both scores, the difference and
its paired approximate-randomization p-value, as ``compare`` tests it). Both rows decode greedily with
their own ``max_new_tokens``, so any mismatch is the backends', not sampling's.

Everything but ``check_backends`` is a pure function over outputs, token ids and statistic rows; it
works with any registered backend that can generate (NLL only where both can score texts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aigc_eval.backends import capabilities
from aigc_eval.backends.base import GenerationSettings
from aigc_eval.config import MetricSpec, ModelRow, looks_like_path
from aigc_eval.errors import UserError
from aigc_eval.metrics.base import Metric, MetricContext, SampleInputs
from aigc_eval.metrics.registry import build_metric, metric_class
from aigc_eval.plan import make_plan
from aigc_eval.pool import BackendPool
from aigc_eval.scoring import OutputValues
from aigc_eval.stats import paired_approximate_randomization

# Characters of each continuation kept in the report (the JSON's samples keep the full outputs).
SHOWN_CHARS = 60
QUANTILES = (0.5, 0.9, 0.99)
DEFAULT_TRIALS = 10000
# The reference NLL check scores the first reference given its prompt, by the perplexity metric's rules.
NLL_SPEC = MetricSpec(name="perplexity", options={"target": "references", "context": "prompt"})


@dataclass(frozen=True)
class Divergence:
    """Where two outputs part: the first differing token (``unit`` says whose tokens), the text
    both share before it and each side's continuation from there (truncated)."""

    task: str
    index: int
    id: str
    unit: str  # "token (<row A>'s tokenizer)" or "character" when no tokenizer could be loaded
    position: int  # index of the first differing token (or character)
    token_a: str | None  # None: this side ended there
    token_b: str | None
    common: str  # the shared text before the divergence (its last SHOWN_CHARS characters)
    continuation_a: str
    continuation_b: str


@dataclass(frozen=True)
class SampleAgreement:
    """One example: both full outputs and, where both rows score texts, the reference's NLL."""

    task: str
    index: int
    id: str
    output_a: str
    output_b: str
    match: bool
    nll_a: float | None = None
    nll_b: float | None = None
    tokens_a: int | None = None
    tokens_b: int | None = None


@dataclass(frozen=True)
class NLLAgreement:
    """Per-text |NLL_A - NLL_B| of the references (nats, summed over each text's scored tokens)."""

    texts: int
    max_abs: float
    mean_abs: float
    quantiles: dict[str, float]  # p50, p90, p99 of the absolute differences
    max_relative: float  # max |a - b| / max(|a|, |b|)
    token_count_mismatches: int  # texts the two rows split into different numbers of tokens


@dataclass(frozen=True)
class MetricAgreement:
    """One metric output on one task under both rows, with the paired test of the difference."""

    task: str
    metric: str
    score_a: float | None
    score_b: float | None
    delta: float | None  # B - A
    p_value: float | None
    note: str = ""  # why there is no p-value, when there is none


@dataclass
class Agreement:
    """The outcome of ``check_backends``; ``failures`` says which threshold was missed (empty: pass)."""

    suite: str
    rows: tuple[str, str]
    settings: dict[str, dict[str, Any]]  # row -> the greedy settings both decoded with
    tokenizer: str  # what divergences are counted in
    samples: list[SampleAgreement]
    divergences: list[Divergence]
    nll: NLLAgreement | None
    nll_unavailable: str | None
    metrics: list[MetricAgreement]
    min_exact_match: float
    max_nll_diff: float | None
    truncated_prompts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def exact_matches(self) -> int:
        return sum(s.match for s in self.samples)

    @property
    def exact_match(self) -> float:
        return self.exact_matches / len(self.samples) if self.samples else math.nan

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON (NaN and infinities as null), with the derived rates."""
        data = asdict(self)
        data.update(exact_matches=self.exact_matches, exact_match=self.exact_match, passed=self.passed)
        return _finite(data)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class TokenView:
    """Encode/decode for locating divergences: a tokenizer's ids, or characters as the fallback."""

    def __init__(
        self,
        encode: Callable[[str], list[int]] | None = None,
        decode: Callable[[list[int]], str] | None = None,
        unit: str = "character",
    ) -> None:
        self.encode = encode or (lambda text: [ord(c) for c in text])
        self.decode = decode or (lambda ids: "".join(chr(i) for i in ids))
        self.unit = unit


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first position where ``a`` and ``b`` differ (a shorter one ends there); None if equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def divergence(
    task: str, index: int, id_: str, a: str, b: str, view: TokenView, chars: int = SHOWN_CHARS
) -> Divergence | None:
    """Where outputs ``a`` and ``b`` first differ in ``view``'s tokens; None when they are equal."""
    ids_a, ids_b = view.encode(a), view.encode(b)
    at = first_difference(ids_a, ids_b)
    if at is None:
        if a == b:
            return None
        at = len(ids_a)  # same ids, different text (an unknown-token fallback): point past the end
    return Divergence(
        task=task,
        index=index,
        id=id_,
        unit=view.unit,
        position=at,
        token_a=view.decode([ids_a[at]]) if at < len(ids_a) else None,
        token_b=view.decode([ids_b[at]]) if at < len(ids_b) else None,
        common=view.decode(list(ids_a[:at]))[-chars:],
        continuation_a=view.decode(list(ids_a[at:]))[:chars],
        continuation_b=view.decode(list(ids_b[at:]))[:chars],
    )


def nll_agreement(samples: Sequence[SampleAgreement]) -> NLLAgreement:
    """Summary of the per-text NLL differences of samples scored under both rows."""
    a = np.array([s.nll_a for s in samples], dtype=np.float64)
    b = np.array([s.nll_b for s in samples], dtype=np.float64)
    diffs = np.abs(a - b)
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-300)
    return NLLAgreement(
        texts=len(samples),
        max_abs=float(diffs.max()),
        mean_abs=float(diffs.mean()),
        quantiles={f"p{round(q * 100)}": float(np.quantile(diffs, q)) for q in QUANTILES},
        max_relative=float((diffs / scale).max()),
        token_count_mismatches=sum(s.tokens_a != s.tokens_b for s in samples),
    )


def metric_agreements(
    task: str,
    metric: Metric,
    stats_a: np.ndarray,
    stats_b: np.ndarray,
    n_trials: int,
    seed: int,
    count_ties: bool = True,
) -> list[MetricAgreement]:
    """Each output of ``metric`` on both rows' statistic rows, B - A, and the paired AR test's p-value."""
    scores_a, scores_b = metric.aggregate(stats_a), metric.aggregate(stats_b)
    outputs = OutputValues(metric)
    found = []
    for name, score in scores_a.items():
        a = score.score if math.isfinite(score.score) else None
        other = scores_b.get(name)
        b = other.score if other is not None and math.isfinite(other.score) else None
        p_value, note = None, ""
        if a is None or b is None:
            note = "undefined on one row"
        elif not metric.resamplable or len(stats_a) < 2:
            note = "cannot be resampled" if not metric.resamplable else "one sample: nothing to test"
        else:
            p_value = paired_approximate_randomization(
                stats_a,
                stats_b,
                outputs.output(name),
                n_trials,
                seed,
                metric.additive,
                count_ties=count_ties,
                stacked=outputs.stacked(name),
            ).p_value
        delta = b - a if a is not None and b is not None else None
        found.append(MetricAgreement(task, name, a, b, delta, p_value, note))
    return found


def gate(agreement: Agreement) -> list[str]:
    """The thresholds ``agreement`` misses, each as one sentence."""
    failures = []
    if agreement.exact_match < agreement.min_exact_match:
        failures.append(
            f"exact match {agreement.exact_match:.1%} ({agreement.exact_matches}/{len(agreement.samples)}) "
            f"is below --min-exact-match {agreement.min_exact_match:.1%}"
        )
    nll, limit = agreement.nll, agreement.max_nll_diff
    if limit is not None and nll is not None and nll.max_abs > limit:
        failures.append(
            f"max per-text NLL difference {nll.max_abs:.3g} nats exceeds --max-nll-diff {limit:g}"
        )
    return failures


def greedy(row: ModelRow) -> ModelRow:
    """The row decoding greedily with its own ``max_new_tokens`` and stop strings."""
    settings: GenerationSettings = row.generation  # type: ignore[attr-defined]
    plain = GenerationSettings(max_new_tokens=settings.max_new_tokens, stop=settings.stop)
    return row.model_copy(update={"generation": plain})


def token_view(row: ModelRow, resolve: Callable[[str], str]) -> TokenView:
    """Row A's tokenizer through transformers (its ``tokenizer`` or ``path`` option), else characters.

    Divergences are counted in one tokenizer so both sides' positions mean the same thing; a row with
    no loadable tokenizer (an HTTP API) falls back to characters, which the report says.
    """
    source = next(
        (v for k in ("tokenizer", "path") if isinstance(v := getattr(row, k, None), str) and v), None
    )
    if source is None:
        return TokenView()
    try:
        from transformers import AutoTokenizer

        location = resolve(source) if looks_like_path(source) or Path(resolve(source)).exists() else source
        tokenizer = AutoTokenizer.from_pretrained(
            location,
            revision=getattr(row, "revision", None),
            trust_remote_code=bool(getattr(row, "trust_remote_code", False)),
        )
    except Exception:  # no transformers, offline hub id, no tokenizer files: characters still work
        return TokenView()
    return TokenView(
        lambda text: list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else [],
        lambda ids: tokenizer.decode(ids, skip_special_tokens=False),
        f"token ({row.name}'s tokenizer)",
    )


@dataclass
class _Side:
    """What one row produced on one task."""

    outputs: list[str]
    nll: list[tuple[float, int]] | None
    stats: list[np.ndarray]
    metrics: list[Metric]
    truncated: int


def _run_side(
    row: ModelRow, pool: BackendPool, suite_metrics: Sequence[MetricSpec], data: Any, with_nll: bool
) -> _Side:
    """Generate greedily on one task, then the reference NLL and every suite metric's rows."""
    backend = pool.get(row)
    prompts = [e.prompt for e in data.examples]
    references = [list(e.references) for e in data.examples]
    truncated = backend.truncated_prompts(prompts, row.generation)  # type: ignore[attr-defined]
    outputs = backend.generate(prompts, row.generation)  # type: ignore[attr-defined]
    nll = None
    if with_nll:
        ref_metric = build_metric(NLL_SPEC.name, NLL_SPEC.options, lang=data.lang)
        rows = ref_metric.sample_stats(outputs, references, SampleInputs(prompts, pool.scorer(NLL_SPEC, row)))
        nll = [(float(r[0]), int(r[1])) for r in rows]
    stats, metrics = [], []
    for spec in suite_metrics:
        scorer = pool.scorer(spec, row) if metric_class(spec.name).needs_scorer else None
        context = MetricContext(scorer=scorer.describe() if scorer is not None else None)
        metric = build_metric(spec.name, pool.resolve_options(spec.options), lang=data.lang, context=context)
        stats.append(metric.sample_stats(outputs, references, SampleInputs(prompts, scorer)))
        metrics.append(metric)
    return _Side(outputs, nll, stats, metrics, truncated)


def _pick_rows(models: Sequence[ModelRow], names: Sequence[str]) -> tuple[ModelRow, ModelRow]:
    known = {m.name: m for m in models}
    if len(names) != 2 or names[0] == names[1]:
        raise UserError(f"--rows: give two different model rows as A,B; the suite's rows: {', '.join(known)}")
    picked = []
    for name in names:
        if name not in known:
            raise UserError(f"--rows: {name!r} is not a model row of the suite; its rows: {', '.join(known)}")
        row = known[name]
        if not capabilities(row.backend).generate or not isinstance(
            getattr(row, "generation", None), GenerationSettings
        ):
            raise UserError(
                f"--rows: {name!r} (backend {row.backend}) does not generate text; pick rows that do"
            )
        picked.append(row)
    return picked[0], picked[1]


def check_backends(
    suite_path: str | Path,
    rows: Sequence[str],
    limit: int | None = None,
    min_exact_match: float = 1.0,
    max_nll_diff: float | None = None,
    n_trials: int | None = None,
) -> Agreement:
    """Run the suite's text tasks through rows A and B greedily and measure how far they agree.

    ``min_exact_match`` (a fraction) and ``max_nll_diff`` (nats per text; None: not gated) set
    ``Agreement.failures``; the paired tests use the suite's ``regression`` seed and tie rule.
    """
    if not 0 <= min_exact_match <= 1:
        raise UserError(f"--min-exact-match: {min_exact_match} is not a fraction between 0 and 1")
    if max_nll_diff is not None and not max_nll_diff >= 0:
        raise UserError(f"--max-nll-diff: {max_nll_diff} must be a non-negative number of nats")
    if n_trials is not None and n_trials < 1:
        raise UserError(f"--n-trials: {n_trials} must be at least 1")
    plan = make_plan(suite_path, limit=limit)
    suite = plan.suite
    row_a, row_b = (greedy(r) for r in _pick_rows(suite.models, rows))
    scoring = [r.backend for r in (row_a, row_b) if not capabilities(r.backend).loglikelihood]
    nll_unavailable = (
        f"backend {', '.join(sorted(set(scoring)))} cannot score texts (no loglikelihood capability)"
        if scoring
        else None
    )
    if nll_unavailable and max_nll_diff is not None:
        raise UserError(f"--max-nll-diff: {nll_unavailable}; drop the flag or pick rows that score texts")
    if not plan.text_tasks:
        raise UserError(f"{suite_path}: the suite has no text task to generate for")
    regression = suite.regression
    trials = n_trials or regression.n_trials or DEFAULT_TRIALS
    pool = BackendPool(suite, plan.base_dir)
    sides: dict[str, dict[str, _Side]] = {}
    for row in (row_a, row_b):
        sides[row.name] = {
            name: _run_side(row, pool, suite.metrics, data, nll_unavailable is None)
            for name, data in plan.text_tasks.items()
        }
        pool.release_unused(set())  # free A's models before B loads (two large models may not fit)
    view = token_view(row_a, pool.resolve_path)
    samples, divergences, metrics = [], [], []
    for name, data in plan.text_tasks.items():
        a, b = sides[row_a.name][name], sides[row_b.name][name]
        for i, example in enumerate(data.examples):
            scored = {}
            if a.nll is not None and b.nll is not None:
                (nll_a, tokens_a), (nll_b, tokens_b) = a.nll[i], b.nll[i]
                scored = {"nll_a": nll_a, "nll_b": nll_b, "tokens_a": tokens_a, "tokens_b": tokens_b}
            out_a, out_b = a.outputs[i], b.outputs[i]
            samples.append(SampleAgreement(name, i, example.id, out_a, out_b, out_a == out_b, **scored))
            found = divergence(name, i, example.id, a.outputs[i], b.outputs[i], view)
            if found is not None:
                divergences.append(found)
        for metric, stats_a, stats_b in zip(a.metrics, a.stats, b.stats, strict=True):
            metrics += metric_agreements(
                name, metric, stats_a, stats_b, trials, regression.seed, regression.ties == "count"
            )
    agreement = Agreement(
        suite=suite.name,
        rows=(row_a.name, row_b.name),
        settings={r.name: r.generation.model_dump(mode="json") for r in (row_a, row_b)},  # type: ignore[attr-defined]
        tokenizer=view.unit,
        samples=samples,
        divergences=divergences,
        nll=nll_agreement(samples) if nll_unavailable is None and samples else None,
        nll_unavailable=nll_unavailable,
        metrics=metrics,
        min_exact_match=min_exact_match,
        max_nll_diff=max_nll_diff,
        truncated_prompts={r.name: sum(s.truncated for s in sides[r.name].values()) for r in (row_a, row_b)},
    )
    agreement.failures = gate(agreement)
    return agreement


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def format_agreement(agreement: Agreement, show: int = 5) -> str:
    """The human-readable report: exact match, the first ``show`` divergences, NLL, metrics, verdict."""
    a, b = agreement.rows
    lines = [
        f"check-backends {agreement.suite}: A = {a}, B = {b} (greedy, each row's max_new_tokens)",
        f"exact match: {agreement.exact_matches}/{len(agreement.samples)} ({agreement.exact_match:.1%})",
    ]
    if agreement.divergences:
        lines.append(
            f"first diverging {agreement.tokenizer}, {min(show, len(agreement.divergences))} "
            f"of {len(agreement.divergences)} mismatches:"
        )
    for d in agreement.divergences[:show]:
        lines += [
            f"  {d.task} #{d.index} ({d.id}): at {d.position}: A {d.token_a!r} vs B {d.token_b!r}",
            f"    common: {d.common!r}",
            f"    A: {d.continuation_a!r}",
            f"    B: {d.continuation_b!r}",
        ]
    if agreement.nll is not None:
        n = agreement.nll
        quantiles = "  ".join(f"{k} {_number(v, 3)}" for k, v in n.quantiles.items())
        lines.append(
            f"reference NLL |A-B| per text (nats), {n.texts} texts: max {_number(n.max_abs, 3)}  "
            f"mean {_number(n.mean_abs, 3)}  {quantiles}  max relative {_number(n.max_relative, 3)}"
            + (
                f"  ({n.token_count_mismatches} texts tokenized differently)"
                if n.token_count_mismatches
                else ""
            )
        )
    else:
        lines.append(f"reference NLL: not compared: {agreement.nll_unavailable}")
    if agreement.metrics:
        lines += ["", "| task | metric | A | B | B - A | p (paired AR) |", "|---|---|---:|---:|---:|---:|"]
        for m in agreement.metrics:
            p = _number(m.p_value, 3) if m.p_value is not None else f"n/a ({m.note})"
            lines.append(
                f"| {m.task} | {m.metric} | {_number(m.score_a)} | {_number(m.score_b)} | "
                f"{_number(m.delta, 3)} | {p} |"
            )
        lines.append("")
    for name, count in agreement.truncated_prompts.items():
        if count:
            lines.append(f"note: {count} prompts cut from the left to fit {name}'s context")
    lines.append("AGREE" if agreement.passed else "DISAGREE: " + "; ".join(agreement.failures))
    return "\n".join(lines)
