"""The public Python API, for notebooks and scripts; the CLI is a thin layer over it.

    import aigc_eval

    run = aigc_eval.run("suites/demo.yaml", limit=8)     # -> Run (its folder under reports/)
    run.scores()                                         # tidy DataFrame: model × task × metric
    run.samples()                                        # one row per generated sample
    again = aigc_eval.load_run(run.path)                 # any run folder, old schema versions too
    aigc_eval.compare(baseline, run).has_regression      # the regression gate
    aigc_eval.score("bleu", ["the cat sat"], [["the cat sat"]])["bleu"].score

Scores are ``aigc_eval.record.ScoreRecord`` objects (value, interval, signature), the same records
results.json holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigc_eval.errors import UserError
from aigc_eval.record import RunRecord, ScoreRecord
from aigc_eval.run_folder import RunFolder

if TYPE_CHECKING:
    import pandas as pd

    from aigc_eval.execute import ProgressFactory
    from aigc_eval.gate import Comparison

SCORE_COLUMNS = (
    "model",
    "task",
    "metric",
    "score",
    "ci_low",
    "ci_high",
    "ci_kind",
    "higher_is_better",
    "signature",
    "n",
)


class Run:
    """A finished run, read from its run folder (``RunFolder``); nothing is kept in memory but caches."""

    def __init__(self, folder: RunFolder | str | Path) -> None:
        self.folder = folder if isinstance(folder, RunFolder) else RunFolder.open(folder)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def record(self) -> RunRecord:
        return self.folder.read_record()

    def score(self, model: str, task: str, metric: str) -> ScoreRecord:
        """One score; a user error naming what exists when there is no such score."""
        entry = self.record.entry(model, task)
        if entry is None or metric not in entry.metrics:
            known = sorted({(r.model, r.task) for r in self.record.results})
            raise UserError(f"{self.path}: no score {metric!r} for {model} × {task}; this run has {known}")
        return entry.metrics[metric]

    def scores(self) -> pd.DataFrame:
        """One row per model × task × metric: score, interval, direction, signature, sample count."""
        import pandas as pd

        rows = [
            {
                "model": entry.model,
                "task": entry.task,
                "metric": name,
                "score": score.score,
                "ci_low": score.ci.low if score.ci else None,
                "ci_high": score.ci.high if score.ci else None,
                "ci_kind": score.ci.kind if score.ci else None,
                "higher_is_better": score.higher_is_better,
                "signature": score.signature,
                "n": entry.n,
            }
            for entry in self.record.results
            for name, score in entry.metrics.items()
        ]
        return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))

    def samples(self) -> pd.DataFrame:
        """One row per generated sample: ids, texts, and each per-sample score as a column."""
        import pandas as pd

        rows = [
            {
                "model": s.model,
                "task": s.task,
                "id": s.id,
                "prompt": s.prompt,
                "prediction": s.prediction,
                "references": s.references,
                **s.scores,
            }
            for s in self.folder.read_samples()
        ]
        return pd.DataFrame(rows)


def run(
    suite: str | Path,
    *,
    output_dir: str | Path = "reports",
    device: str | None = None,
    limit: int | None = None,
    resume: str | Path | None = None,
    progress: ProgressFactory | None = None,
    cache: bool = True,
) -> Run:
    """Run a suite file end to end (generate, score, write the run folder) and return the run.

    ``cache`` False skips the generation cache (``aigc_eval.cache``); under torchrun every process
    calls this and only rank 0's run folder is finalized (``aigc_eval.distributed``)."""
    from aigc_eval.execute import no_progress
    from aigc_eval.runner import run_suite

    if limit is not None and limit < 1:
        raise UserError("--limit must be a positive number of examples")
    folder = run_suite(
        suite,
        output_dir,
        device=device,
        limit=limit,
        resume=resume,
        progress=progress or no_progress,
        cache=cache,
    )
    return Run(folder)


def load_run(path: str | Path) -> Run:
    """A run folder (or its results.json) written by ``run`` or ``aigc-eval run``, any schema version."""
    run = Run(path)
    run.record  # noqa: B018 (read now: a damaged folder fails here, not at first use)
    return run


def compare(
    baseline: Run | str | Path,
    current: Run | str | Path,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    **overrides: Any,
) -> Comparison:
    """The regression gate between two runs: paired tests per row × task × metric.

    The rules are the current run's suite ``regression`` section, with ``overrides`` (alpha, test,
    n_trials, seed, correction, min_deltas=["bleu=0.5", "ref_perplexity=2%"]) on top.
    """
    from aigc_eval.gate import compare_runs, suite_regression, with_overrides

    base, cur = _folder(baseline), _folder(current)
    rules = with_overrides(suite_regression(cur.read_record()), **overrides)
    return compare_runs(base, cur, rules, pairs)


def _folder(run: Run | str | Path) -> RunFolder:
    return run.folder if isinstance(run, Run) else RunFolder.open(run)


def score(
    metric: str,
    predictions: Sequence[str],
    references: Sequence[Sequence[str]] | None = None,
    *,
    options: dict[str, Any] | None = None,
    lang: str | None = None,
    model: str | None = None,
    device: str = "auto",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 12345,
    progress: ProgressFactory | None = None,
) -> dict[str, ScoreRecord]:
    """Score texts with one metric: ``{output: ScoreRecord}`` with bootstrap intervals.

    ``references`` holds one list of references per prediction. A model-backed metric (perplexity)
    scores with ``model`` (a local folder or hub id), loaded through the same backend lookup as suites.
    """
    from aigc_eval.metrics.base import MetricContext, SampleInputs
    from aigc_eval.metrics.registry import build_metric, metric_class
    from aigc_eval.metrics.tokenize import language_option
    from aigc_eval.scoring import aggregate_with_intervals, resample_count

    lang = language_option(lang, "--lang")
    cls = metric_class(metric)
    scorer = None
    if cls.needs_scorer:
        if not model:
            raise UserError(f"metric {metric!r} needs a scoring model; give one with --model PATH")
        from aigc_eval.backends import scorer_for

        scorer = scorer_for(model, device=device)
    refs = [list(r) for r in references] if references is not None else [[""] for _ in predictions]
    context = MetricContext(scorer=scorer.describe() if scorer is not None else None)
    built = build_metric(metric, options, lang=lang, context=context)
    advance = progress or (lambda _description, _total: lambda _n: None)
    try:
        computed = advance(f"{metric}: sample statistics of {len(predictions)} lines", 1)
        stats = built.sample_stats(list(predictions), refs, SampleInputs(scorer=scorer))
        computed(1)
        total = resample_count(built, stats, n_resamples)
        resampled: Callable[[int], None] | None = advance(f"{metric}: bootstrap", total) if total else None
        scores = aggregate_with_intervals(built, stats, n_resamples, confidence, seed, progress=resampled)
    except ValueError as error:
        raise UserError(f"metric {metric!r}: {error}") from None
    return {name: s.to_record() for name, s in scores.items()}
