"""The command line: argument parsing, exit codes, progress and user-facing errors only.

Exit codes:

* 0 — success;
* 1 — a regression found (``compare``, ``run --baseline``);
* 2 — a user error (bad suite, file, option, an unwritable path, a run folder in use): one
  ``aigc-eval: error: ...`` line naming the file or key and the fix, never a traceback;
* 3 — an internal error (a bug in aigc-eval): one ``aigc-eval: internal error: ...`` line on stderr;
  the traceback goes to ``internal-error.log`` in the run folder (if the run had one) or to
  ``$TMPDIR/aigc-eval-internal-error-<time>-<pid>.log``.

A crash is never exit 1, so a CI gate cannot mistake a bug for a regression (or the reverse).
Progress goes to stderr: a bar in a terminal, otherwise a plain line per task every
``AIGC_EVAL_PROGRESS_INTERVAL`` seconds (default 10); ``--quiet`` turns it off.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import traceback
import warnings
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from aigc_eval import __version__
from aigc_eval.console import print_table, show_progress
from aigc_eval.errors import (
    EXIT_INTERNAL_ERROR,
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_USER_ERROR,
    RUN_DIR_ATTRIBUTE,
    UserError,
)

if TYPE_CHECKING:
    from aigc_eval.api import Run
    from aigc_eval.cache import CacheStats
    from aigc_eval.record import ScoreRecord


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
    run.add_argument(
        "--no-cache",
        action="store_true",
        help=(
            "neither read nor write the generation cache (generations and log-likelihoods; "
            "$AIGC_EVAL_CACHE_DIR; see 'aigc-eval cache')"
        ),
    )
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
    score.add_argument("--quiet", action="store_true", help="no progress on stderr")

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

    check = commands.add_parser(
        "check-backends",
        help="do two model rows agree? greedy outputs, reference NLL and metrics side by side",
    )
    check.add_argument("suite", help="suite YAML file holding both rows")
    check.add_argument("--rows", required=True, metavar="A,B", help="the two model rows to compare")
    check.add_argument("--limit", type=int, help="only the first N examples of each text task")
    check.add_argument(
        "--min-exact-match", type=float, default=1.0, help="exit 1 below this fraction of equal outputs (1.0)"
    )
    check.add_argument("--max-nll-diff", type=float, help="exit 1 when a text's NLL differs by more (nats)")
    check.add_argument("--n-trials", type=int, help="paired AR trials (default: the suite's regression)")
    check.add_argument("--show", type=int, default=5, help="mismatches printed (all are in --json)")
    check.add_argument("--json", dest="json_file", metavar="FILE", help="write the full report as JSON here")

    cache = commands.add_parser(
        "cache", help="the generation cache ($AIGC_EVAL_CACHE_DIR or ~/.cache/aigc-eval/generations)"
    )
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    cache_stats = cache_commands.add_parser("stats", help="entries, size, last use and entries per label")
    cache_stats.add_argument("--json", action="store_true", help="print one JSON object")
    cache_commands.add_parser("clear", help="remove every cached generation")
    prune = cache_commands.add_parser("prune", help="remove entries not used for a while")
    prune.add_argument(
        "--older-than", required=True, metavar="AGE", help="last used more than AGE ago, e.g. 12h, 30d, 2w"
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
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported already (not by the CLI: a second or so)
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()


def _show_warning(message: Warning | str, category: type[Warning], *_args: object, **_kwargs: object) -> None:
    """Warnings meant for users (sample size, skipped files) as one line, without source lines."""
    print(f"aigc-eval: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)  # its own errors exit 2
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
        if args.command == "check-backends":
            return _check_backends(args)
        if args.command == "cache":
            return _cache(args)
        return _score(args)
    except UserError as error:
        print(f"aigc-eval: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("aigc-eval: error: interrupted", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as error:  # every other failure is a bug: exit 3, never 1 (a 'regression')
        return _internal_error(error, argv, getattr(args, "suite", None))


def _internal_error(error: Exception, argv: list[str], suite: str | None) -> int:
    """One line on stderr; the traceback in a log file the user can attach to a bug report."""
    run_dir = getattr(error, RUN_DIR_ATTRIBUTE, None)
    report = (
        f"aigc-eval {__version__} internal error at {datetime.now().isoformat(timespec='seconds')}\n"
        f"command: aigc-eval {shlex.join(argv)}\n"
        f"python {sys.version.split()[0]} on {platform.platform()}\n\n"
        + "".join(traceback.format_exception(error))
    )
    log = _save_error_log(report, Path(run_dir) if run_dir is not None else None)
    summary = " ".join(f"{type(error).__name__}: {error}".split())
    where = f"please report it with {log}" if log else "please report it (the traceback could not be saved)"
    line = f"aigc-eval: internal error: {summary}; this is a bug in aigc-eval, {where}"
    if run_dir is not None and suite is not None:
        line += f"; finished generations are kept, continue with: aigc-eval run {suite} --resume {run_dir}"
    print(line, file=sys.stderr)
    return EXIT_INTERNAL_ERROR


def _save_error_log(text: str, run_dir: Path | None) -> Path | None:
    """``internal-error.log`` in the run folder, else a timestamped file in the temp folder."""
    from aigc_eval.run_folder import RunFolder

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    candidates = [RunFolder(run_dir).error_log] if run_dir is not None else []
    candidates.append(Path(tempfile.gettempdir()) / f"aigc-eval-internal-error-{stamp}-{os.getpid()}.log")
    for path in candidates:
        try:
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def _run(args: argparse.Namespace) -> int:
    import aigc_eval
    from aigc_eval.distributed import world_from_env
    from aigc_eval.report.tables import task_tables

    # A bad baseline fails before any generation; the loaded run is compared later without a re-read.
    baseline = aigc_eval.load_run(args.baseline) if args.baseline else None
    _quiet_libraries()
    with show_progress(args.quiet) as progress:
        run = aigc_eval.run(
            args.suite,
            output_dir=args.output_dir,
            device=args.device,
            limit=args.limit,
            resume=args.resume,
            progress=progress,
            cache=not args.no_cache,
        )
    if not world_from_env().is_main:  # under torchrun rank 0 finalized, prints and gates
        return EXIT_OK
    if not args.quiet:
        for task, table in task_tables(run.record).items():
            print_table(task, table)
    print(f"wrote {run.path}")
    if baseline is not None:
        for flag, name in (("markdown", "compare.md"), ("junit", "junit.xml"), ("json_file", "compare.json")):
            if getattr(args, flag) is None:
                setattr(args, flag, str(run.path / name))
        return _compare(baseline, run, args)
    return EXIT_OK


def _cache(args: argparse.Namespace) -> int:
    """``cache stats | clear | prune`` on the cache of ``$AIGC_EVAL_CACHE_DIR`` (or the default)."""
    from aigc_eval.cache import GenerationCache

    # A bad --older-than fails before the cache (and its folder) is created.
    older_than = _parse_age(args.older_than) if args.cache_command == "prune" else None
    with GenerationCache.open() as cache:
        if args.cache_command == "stats":
            stats = cache.stats()
            if args.json:
                print(json.dumps(stats.to_dict(), indent=2, ensure_ascii=False))
            else:
                print(_format_cache_stats(stats))
        elif older_than is None:
            print(f"removed {cache.clear()} entries from {cache.path}")
        else:
            removed = cache.prune(older_than)
            print(f"removed {removed} entries last used over {args.older_than} ago from {cache.path}")
    return EXIT_OK


_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _parse_age(text: str) -> timedelta:
    """``30d`` and the like: a number (decimals allowed) and one unit of s, m, h, d, w."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text.strip())
    try:
        if match:
            return timedelta(**{_AGE_UNITS[match[2]]: float(match[1])})
    except OverflowError:
        pass  # more than timedelta's 999999999 days
    raise UserError(
        f"--older-than {text!r}: not an age; give a number and a unit s, m, h, d or w, e.g. 30d or 12h"
    )


def _format_cache_stats(stats: CacheStats) -> str:
    """The cache's file, size and last-use range, then an aligned label/entries table."""
    size = stats.size_bytes
    power = next(p for p in (3, 2, 1, 0) if size >= 1024**p or p == 0)
    human = f"{size / 1024**power:.1f} {('B', 'KiB', 'MiB', 'GiB')[power]}" if power else f"{size} B"
    lines = [f"generation cache: {stats.path}", f"entries: {stats.entries} ({human} on disk)"]
    if stats.oldest_use is not None and stats.newest_use is not None:
        span = (stats.oldest_use, stats.newest_use)
        lines.append("last used: {} to {}".format(*(t.strftime("%Y-%m-%d %H:%M:%S UTC") for t in span)))
    if stats.labels:
        width = max(map(len, ["label", *stats.labels]))
        count_width = max(map(len, ["entries", *map(str, stats.labels.values())]))
        lines.append(f"{'label':<{width}}  {'entries':>{count_width}}")
        lines += [f"{label:<{width}}  {count:>{count_width}}" for label, count in stats.labels.items()]
    return "\n".join(lines)


def _check_backends(args: argparse.Namespace) -> int:
    """Exit 1 when the rows agree less than the thresholds ask (``aigc_eval.agreement``)."""
    from aigc_eval.agreement import check_backends, format_agreement
    from aigc_eval.files import write_atomic

    _quiet_libraries()
    rows = [name.strip() for name in args.rows.split(",")]
    agreement = check_backends(
        args.suite, rows, args.limit, args.min_exact_match, args.max_nll_diff, args.n_trials
    )
    print(format_agreement(agreement, args.show))
    if args.json_file:
        write_atomic(Path(args.json_file), json.dumps(agreement.to_dict(), indent=2, ensure_ascii=False))
        print(f"wrote {args.json_file}")
    return EXIT_OK if agreement.passed else EXIT_REGRESSION


def _report(args: argparse.Namespace) -> int:
    from aigc_eval.files import write_atomic
    from aigc_eval.report.leaderboard import build_leaderboard

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


def _compare(baseline: str | Path | Run, current: str | Path | Run, args: argparse.Namespace) -> int:
    import aigc_eval
    from aigc_eval.files import write_atomic, write_json
    from aigc_eval.gate import parse_pair
    from aigc_eval.report.compare import to_json, to_junit_xml, to_markdown

    comparison = aigc_eval.compare(
        baseline,
        current,
        pairs=[parse_pair(p) for p in args.pair] or None,
        alpha=args.alpha,
        test=args.test,
        n_trials=args.n_trials,
        seed=args.seed,
        correction=args.correction,
        min_deltas=args.min_delta,
    )
    markdown = to_markdown(comparison)
    if args.markdown:
        write_atomic(Path(args.markdown), markdown)
    if args.junit:
        write_atomic(Path(args.junit), to_junit_xml(comparison))
    if args.json_file:
        write_json(Path(args.json_file), to_json(comparison))
    print(markdown)
    return EXIT_REGRESSION if comparison.has_regression else EXIT_OK


def _print_scores(scores: dict[str, ScoreRecord], as_json: bool) -> None:
    """``--json``: strict JSON (undefined values are null, with the reason), else aligned lines."""
    if as_json:
        out = {name: score.model_dump(mode="json") for name, score in scores.items()}  # as in results.json
        print(json.dumps(out, ensure_ascii=False, indent=2, allow_nan=False))
        return
    width = max(map(len, scores))
    for key, score in scores.items():
        if score.score is None:
            print(f"{key:<{width}}  n/a ({score.score_unavailable})  {score.signature}")
            continue
        half = score.ci.half_width if score.ci is not None else None
        ci = f" ± {half:.4f}" if half is not None else ""
        print(f"{key:<{width}}  {score.score:.4f}{ci}  {score.signature}")


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
    ).scores
    _print_scores({name: score.to_record() for name, score in scores.items()}, args.json)
    return EXIT_OK


def _score(args: argparse.Namespace) -> int:
    import aigc_eval
    from aigc_eval.data import aligned_references, read_lines
    from aigc_eval.metrics.registry import metrics

    classes = {name: metrics.get(name, where="--metric") for name in args.metric}  # unknown: lists all
    images = [name for name, cls in classes.items() if not cls.paired]
    if images:
        if len(images) != len(args.metric):
            raise UserError("score image metrics and text metrics in separate calls")
        return _score_images(args)
    if not args.predictions:
        raise UserError("text metrics need --predictions FILE (one prediction per line)")
    predictions = read_lines(Path(args.predictions), "predictions file")
    text_metrics = [name for name, cls in classes.items() if not cls.needs_scorer]
    if text_metrics and not args.references:
        raise UserError(f"--metric {text_metrics[0]} needs --references FILE")
    references = aligned_references(
        [read_lines(Path(f), "references file") for f in args.references], len(predictions), args.references
    )
    if any(cls.needs_scorer for cls in classes.values()):
        if not args.model:
            raise UserError("--metric perplexity needs --model PATH (a local model folder or hub id)")
        _quiet_libraries()
    scores: dict[str, ScoreRecord] = {}
    with show_progress(args.quiet) as progress:
        for name in args.metric:
            scores.update(
                aigc_eval.score(
                    name,
                    predictions,
                    references or None,
                    lang=args.lang,
                    model=args.model,
                    device=args.device,
                    n_resamples=1000 if args.confidence else 0,
                    seed=args.seed,
                    progress=progress,
                )
            )
    _print_scores(scores, args.json)
    return EXIT_OK
