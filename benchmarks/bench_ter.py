"""TER and chrF segment statistics in worker processes vs sacrebleu on one core.

5,000 seeded English pairs of 15-30 words, MT-like: the reference is cut from the English lines
of the demo corpus, the hypothesis is the reference with substituted, dropped and inserted words
and one moved phrase (what TER's shift search looks for). sacrebleu's ``corpus_ter`` /
``corpus_chrf`` run in this process; aigc-eval's ``sample_stats`` + ``aggregate`` with all workers
(``AIGC_EVAL_WORKERS``, default: every CPU). Scores must be identical (==). BLEU is timed through
the same worker pool to show why it stays in-process.

Only the standard library and sacrebleu are imported at the top: workers start from the
forkserver and import the main module, as they do the ``aigc-eval`` console script (light too).

    .venv/bin/python benchmarks/bench_ter.py
    .venv/bin/python benchmarks/bench_ter.py --pairs 1000 --repeats 3 --crossover 100,300,1000,3000
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sacrebleu

CORPUS = Path(__file__).resolve().parents[1] / "suites" / "data" / "demo_corpus.txt"


def english_pairs(count: int, seed: int) -> tuple[list[str], list[str]]:
    """``count`` seeded (hypothesis, reference) pairs of 15-30 words."""
    lines = [
        line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.isascii() and line.strip()
    ]
    vocabulary = sorted({word for line in lines for word in line.split()})
    rng = random.Random(seed)
    hypotheses, references = [], []
    for _ in range(count):
        length = rng.randint(15, 30)
        words: list[str] = []
        while len(words) < length:
            words += rng.choice(lines).split()
        reference = words[:length]
        hypothesis = []
        for word in reference:
            roll = rng.random()
            if roll < 0.10:
                hypothesis.append(rng.choice(vocabulary))  # substitution
            elif roll < 0.15:
                continue  # deletion
            else:
                hypothesis.append(word)
            if rng.random() < 0.05:
                hypothesis.append(rng.choice(vocabulary))  # insertion
        span = rng.randint(2, 4)  # one phrase moved elsewhere
        start = rng.randrange(max(1, len(hypothesis) - span))
        phrase, rest = hypothesis[start : start + span], hypothesis[:start] + hypothesis[start + span :]
        at = rng.randrange(len(rest) + 1)
        hypotheses.append(" ".join(rest[:at] + phrase + rest[at:]))
        references.append(" ".join(reference))
    return hypotheses, references


def timed(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds of this process, and the result.

    Workers are the forkserver's children, not ours, so their CPU time is not in the figure: for
    the worker runs it shows what the parent itself spent (splitting, pickling, aggregating).
    """
    begin, begin_cpu = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - begin, time.process_time() - begin_cpu, result


def best(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[float, float, Any]]:
    """Best wall time (and its CPU time and result) of each callable, rounds interleaved."""
    out: dict[str, tuple[float, float, Any]] = {}
    for round_ in range(repeats):
        for name, run in runs.items():
            wall, cpu, result = timed(run)
            print(f"  round {round_ + 1}/{repeats} {name}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
            if name not in out or wall < out[name][0]:
                out[name] = (wall, cpu, result)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds, best kept")
    parser.add_argument("--workers", type=int, default=None, help="default: AIGC_EVAL_WORKERS or every CPU")
    parser.add_argument(
        "--crossover", default="", help="comma-separated sizes: time 1 worker vs all, to place min_items"
    )
    args = parser.parse_args()
    if args.workers is not None:
        os.environ["AIGC_EVAL_WORKERS"] = str(args.workers)

    from sacrebleu import metrics as sb

    from aigc_eval.metrics.sacrebleu_metrics import CHRF, TER
    from aigc_eval.parallel import map_chunks, sacrebleu_segment_statistics, worker_count

    hypotheses, references = english_pairs(args.pairs, args.seed)
    samples = [[ref] for ref in references]
    words = sum(len(r.split()) for r in references) / len(references)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{args.pairs} pairs, {words:.1f} reference words on average; {worker_count()} workers, "
        f"{os.cpu_count()} CPUs, sacrebleu {sacrebleu.__version__}, load average {load}"
    )

    def ours(metric: Any) -> float:
        return next(iter(metric.aggregate(metric.sample_stats(hypotheses, samples)).values())).score

    pairs = list(zip(hypotheses, samples, strict=True))
    bleu_task = functools.partial(sacrebleu_segment_statistics, sb.BLEU())
    cases: dict[str, dict[str, Callable[[], Any]]] = {
        "TER": {
            "sacrebleu corpus_ter": lambda: sacrebleu.corpus_ter(hypotheses, [references]).score,
            "aigc-eval TER": lambda: ours(TER()),
        },
        "chrF": {
            "sacrebleu corpus_chrf": lambda: sacrebleu.corpus_chrf(hypotheses, [references]).score,
            "aigc-eval chrF": lambda: ours(CHRF()),
        },
        "BLEU": {
            "sacrebleu corpus_bleu": lambda: sacrebleu.corpus_bleu(hypotheses, [references]).score,
            "BLEU statistics in workers": lambda: (
                sb.BLEU()._aggregate_and_compute(map_chunks(bleu_task, pairs, min_items=1)).score
            ),
        },
    }
    rows = []
    for metric, runs in cases.items():
        print(metric)
        (base_name, (base, base_cpu, base_score)), (name, (wall, cpu, score)) = best(
            runs, args.repeats
        ).items()
        rows.append((base_name, base, base_cpu, name, wall, cpu, base / wall, score == base_score, score))

    print("\n| method | wall s | CPU s | vs | wall s | parent CPU s | speed-up | identical | score |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: |")
    for base_name, base, base_cpu, name, wall, cpu, ratio, same, score in rows:
        print(
            f"| {base_name} | {base:.2f} | {base_cpu:.2f} | {name} | {wall:.2f} | {cpu:.2f} | "
            f"{ratio:.2f}x | {'yes' if same else 'NO'} | {score:.4f} |"
        )

    if args.crossover:
        lines = [
            "| metric | items | 1 worker | all workers | speed-up |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for size in (int(s) for s in args.crossover.split(",")):
            for cls in (TER, CHRF):
                metric = cls()
                task = functools.partial(sacrebleu_segment_statistics, metric._corpus)
                head = pairs[:size]
                timing = best(
                    {
                        "1 worker": functools.partial(task, head),
                        "all workers": functools.partial(map_chunks, task, head, min_items=1),
                    },
                    args.repeats,
                )
                serial, parallel = timing["1 worker"][0], timing["all workers"][0]
                assert timing["1 worker"][2] == timing["all workers"][2], (cls.name, size)
                lines.append(
                    f"| {cls.name} | {size} | {serial:.3f} | {parallel:.3f} | {serial / parallel:.2f}x |"
                )
        print(f"\nCrossover (segment statistics, wall s, best of --repeats): 1 worker vs {worker_count()}")
        print("\n".join(lines))
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
