"""The command line: argument parsing, exit codes and user-facing errors only.

Exit codes: 0 success, 1 a failed check (regression), 2 a user error (bad
suite, file, option) — printed as one message, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from aigc_eval import __version__
from aigc_eval.errors import UserError

EXIT_OK, EXIT_REGRESSION, EXIT_USER_ERROR = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aigc-eval", description="Evaluate generative AI output with exact, signed metrics."
    )
    parser.add_argument("--version", action="version", version=f"aigc-eval {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run an eval suite (generate, score, write reports/)")
    run.add_argument("suite", help="suite YAML file, e.g. suites/demo.yaml")
    run.add_argument("--output-dir", default="reports", help="where run folders go (default: reports)")
    run.add_argument("--device", help="override every model's device: cpu, cuda, cuda:N, mps")
    run.add_argument("--limit", type=int, help="score only the first N examples of each task")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run in RUN_DIR")
    run.add_argument("--quiet", action="store_true", help="no progress bar or table")
    run.add_argument(
        "--baseline", metavar="RUN", help="then compare against this run folder (exit 1 on a regression)"
    )

    score = commands.add_parser("score", help="score existing line-aligned text files")
    score.add_argument("--metric", action="append", required=True, help="metric name (repeatable)")
    score.add_argument("--predictions", help="one prediction per line")
    score.add_argument(
        "--references", action="append", default=[], help="one reference per line (repeatable)"
    )
    score.add_argument("--lang", help="language of the text (zh, ja, en, ...): picks tokenizers")
    score.add_argument("--model", help="scoring model (local folder or hub id) for perplexity")
    score.add_argument("--device", default="auto", help="device of the scoring model")
    score.add_argument("--json", action="store_true", help="print one JSON object keyed by metric output")
    score.add_argument(
        "--confidence",
        action="store_true",
        help="add a bootstrap 95%% interval (1000 resamples), as sacrebleu",
    )
    score.add_argument("--seed", type=int, default=12345, help="bootstrap seed (default: sacrebleu's 12345)")
    score.add_argument("--generated", help="image metrics: generated images (folder, list file or .npz)")
    score.add_argument("--reference", help="image metrics: reference images (folder, list file or .npz)")
    score.add_argument(
        "--backbone", default="inception-v3-tf", help="image feature network (default: %(default)s)"
    )
    score.add_argument(
        "--backbone-path", help="a TorchScript/weights file or checkpoint folder for the backbone"
    )
    score.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images (counted, warned)")

    stats = commands.add_parser(
        "stats", help="save reference image statistics (mu, sigma, features) for reuse"
    )
    stats.add_argument("path", help="image folder or list file")
    stats.add_argument("-o", "--output", required=True, help="the .npz to write")
    stats.add_argument(
        "--backbone", default="inception-v3-tf", help="image feature network (default: %(default)s)"
    )
    stats.add_argument(
        "--backbone-path", help="a TorchScript/weights file or checkpoint folder for the backbone"
    )
    stats.add_argument("--device", default="auto", help="device of the backbone")
    stats.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images (counted, warned)")
    compare = commands.add_parser(
        "compare", help="paired significance tests of CURRENT against BASELINE: the regression gate"
    )
    compare.add_argument("baseline", help="baseline run folder (or its results.json)")
    compare.add_argument("current", help="current run folder (or its results.json)")
    _add_gate_flags(compare)
    _add_gate_flags(run)

    report = commands.add_parser("report", help="a leaderboard of every run under a folder")
    report.add_argument("runs_dir", help="folder holding run folders, e.g. reports/")
    report.add_argument("-o", "--output", help="file to write (default: RUNS_DIR/leaderboard.html)")
    report.add_argument(
        "--format", choices=["html", "md", "csv"], help="default: from -o's suffix, else html"
    )
    return parser


def _add_gate_flags(parser: argparse.ArgumentParser) -> None:
    """Flags over the suite's `regression:` section (the CURRENT run's)."""
    parser.add_argument("--markdown", metavar="FILE", help="write the PR-comment summary here")
    parser.add_argument("--junit", metavar="FILE", help="write JUnit XML here")
    parser.add_argument("--json", dest="json_file", metavar="FILE", help="write the comparison as JSON here")
    parser.add_argument("--alpha", type=float, help="significance level (default 0.05)")
    parser.add_argument("--test", choices=["ar", "bootstrap"], help="paired test (default ar)")
    parser.add_argument("--n-trials", type=int, help="randomization trials / bootstrap resamples")
    parser.add_argument("--seed", type=int, help="seed of the paired test (default 12345)")
    parser.add_argument("--correction", choices=["holm", "bh", "none"], help="multiple-comparison correction")
    parser.add_argument(
        "--min-delta",
        action="append",
        default=[],
        metavar="METRIC=VALUE[%]",
        help="smallest change that matters, absolute or relative (repeatable)",
    )
    parser.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="BASE_ROW=CUR_ROW",
        help="which model rows to compare (default: rows with equal names)",
    )


def _quiet_libraries() -> None:
    """Our own progress bar and messages replace transformers' loading bars and advisories."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules or importlib.util.find_spec("transformers"):
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()


def _show_warning(message: Warning | str, category: type[Warning], *_args: object, **_kwargs: object) -> None:
    """Warnings meant for users (sample size, skipped files) as one line, without source lines."""
    print(f"aigc-eval: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "compare":
            return _compare(args.baseline, args.current, args)
        if args.command == "report":
            return _report(args)
        if args.command == "stats":
            return _stats(args)
        return _score(args)
    except UserError as error:
        print(f"aigc-eval: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not enabled:
        yield lambda _d, _t: lambda _n: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:

        def factory(description: str, total: int) -> Callable[[int], None]:
            task_id = progress.add_task(description, total=total)
            return lambda n: progress.advance(task_id, n)

        yield factory


def _run(args: argparse.Namespace) -> int:
    from aigc_eval.report.tables import task_tables
    from aigc_eval.results import load_results
    from aigc_eval.runner import run_suite

    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be a positive number of examples")
    if args.baseline:
        load_results(args.baseline)  # a bad baseline fails before any generation
    _quiet_libraries()
    with _progress_bars(not args.quiet and sys.stderr.isatty()) as progress:
        run_dir = run_suite(
            args.suite,
            output_dir=args.output_dir,
            device=args.device,
            limit=args.limit,
            resume=args.resume,
            progress=progress,
        )
    if not args.quiet:
        for task, table in task_tables(load_results(run_dir)).items():
            _print_table(task, table)
    print(f"wrote {run_dir}")
    if args.baseline:
        for flag, name in (("markdown", "compare.md"), ("junit", "junit.xml"), ("json_file", "compare.json")):
            if getattr(args, flag) is None:
                setattr(args, flag, str(run_dir / name))
        return _compare(args.baseline, run_dir, args)
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from aigc_eval.report.leaderboard import build_leaderboard
    from aigc_eval.results import write_atomic

    suffix_format = (
        {".md": "md", ".csv": "csv"}.get(Path(args.output).suffix, "html") if args.output else "html"
    )
    fmt = args.format or suffix_format
    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir}: not a folder; pass the folder that holds run folders, e.g. reports/")
    output = Path(args.output) if args.output else (runs_dir / "leaderboard.html" if fmt == "html" else None)
    text = build_leaderboard(runs_dir, fmt, output=output)
    if output is None:
        print(text)
    else:
        write_atomic(output, text)
        print(f"wrote {output}")
    return EXIT_OK


def _compare(baseline: str | Path, current: str | Path, args: argparse.Namespace) -> int:
    from aigc_eval.compare import compare_runs, parse_pair, suite_regression, with_overrides
    from aigc_eval.report.compare import to_json, to_junit_xml, to_markdown
    from aigc_eval.results import write_atomic, write_json

    rules = with_overrides(
        suite_regression(current),
        alpha=args.alpha,
        test=args.test,
        n_trials=args.n_trials,
        seed=args.seed,
        correction=args.correction,
        min_deltas=args.min_delta,
    )
    comparison = compare_runs(baseline, current, rules, [parse_pair(p) for p in args.pair] or None)
    markdown = to_markdown(comparison)
    if args.markdown:
        write_atomic(Path(args.markdown), markdown)
    if args.junit:
        write_atomic(Path(args.junit), to_junit_xml(comparison))
    if args.json_file:
        write_json(Path(args.json_file), to_json(comparison))
    print(markdown)
    return EXIT_REGRESSION if comparison.has_regression else EXIT_OK


def _print_table(title: str, frame: object) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"task: {title}", title_justify="left")
    table.add_column("model", no_wrap=True)
    for column in frame.columns:  # type: ignore[attr-defined]
        table.add_column(str(column), justify="right", no_wrap=True)
    for name, row in frame.iterrows():  # type: ignore[attr-defined]
        table.add_row(str(name), *map(str, row.tolist()))
    console = Console()
    if not console.is_terminal:  # a log or pipe: never wrap or cut the numbers
        console = Console(width=240)
    console.print(table)


def _print_scores(out: dict[str, dict[str, object]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return
    width = max(map(len, out))
    for key, value in out.items():
        ci = f" ± {value['ci']['half_width']:.4f}" if "ci" in value else ""  # type: ignore[index]
        print(f"{key:<{width}}  {value['score']:.4f}{ci}  {value['signature']}")


def _stats(args: argparse.Namespace) -> int:
    from aigc_eval.image_scoring import save_stats

    summary = save_stats(
        args.path,
        args.output,
        backbone=args.backbone,
        backbone_path=args.backbone_path,
        device=args.device,
        skip_corrupt=args.skip_corrupt,
    )
    print(f"wrote {summary.path}: {summary.n} images, {summary.dim}-d {summary.backbone} features")
    return EXIT_OK


def _score_images(args: argparse.Namespace) -> int:
    from aigc_eval.image_scoring import score_images

    if not args.generated:
        raise UserError(
            f"--metric {args.metric[0]} is an image metric: give --generated PATH (and --reference PATH)"
        )
    scores = score_images(
        args.generated,
        args.reference,
        args.metric,
        backbone=args.backbone,
        backbone_path=args.backbone_path,
        device=args.device,
        skip_corrupt=args.skip_corrupt,
    )
    _print_scores({name: score.to_dict() for name, score in scores.items()}, args.json)
    return EXIT_OK


def _score(args: argparse.Namespace) -> int:
    from aigc_eval.config import IMAGE_METRICS
    from aigc_eval.data import aligned_references, read_lines
    from aigc_eval.metrics.registry import MODEL_METRICS, build_metric, metric_names
    from aigc_eval.scoring import aggregate_with_intervals

    images = [m for m in args.metric if m in IMAGE_METRICS]
    if images:
        if len(images) != len(args.metric):
            raise UserError("score image metrics and text metrics in separate calls")
        return _score_images(args)
    unknown = [m for m in args.metric if m not in metric_names()]
    if unknown:
        known = ", ".join([*metric_names(), *IMAGE_METRICS])
        raise UserError(f"--metric {unknown[0]}: unknown metric; known metrics: {known}")
    if not args.predictions:
        raise UserError("text metrics need --predictions FILE (one prediction per line)")
    predictions = read_lines(Path(args.predictions), "predictions file")
    text_metrics = [m for m in args.metric if m not in MODEL_METRICS]
    if text_metrics and not args.references:
        raise UserError(f"--metric {text_metrics[0]} needs --references FILE")
    references = aligned_references(
        [read_lines(Path(f), "references file") for f in args.references], len(predictions), args.references
    )
    scorer = None
    if any(m in MODEL_METRICS for m in args.metric):
        if not args.model:
            raise UserError("--metric perplexity needs --model PATH (a local model folder or hub id)")
        from aigc_eval.backends import create_backend

        _quiet_libraries()
        scorer = create_backend("hf", path=args.model, device=args.device, dtype="float32")
    out: dict[str, dict[str, object]] = {}
    for name in args.metric:
        metric = build_metric(name, lang=args.lang, scorer=scorer)
        try:
            stats = metric.sample_stats(predictions, references or [[""]] * len(predictions))
            scores = aggregate_with_intervals(metric, stats, 1000 if args.confidence else 0, seed=args.seed)
        except ValueError as error:
            raise UserError(f"--metric {name}: {error}") from None
        out.update({key: score.to_dict() for key, score in scores.items()})
    _print_scores(out, args.json)
    return EXIT_OK
