"""ROUGE-1/2/L/Lsum on 5,000 pairs: rouge-score vs aigc-eval's ``ROUGE.sample_stats`` (rouge-score-rs).

Run: ``.venv/bin/python benchmarks/bench_rouge.py [--pairs 5000] [--repeats 3] [--threads N]``

Pairs are built, seeded, from the demo corpus (``suites/data/demo_corpus.txt``): a reference of 2-3
sentences on their own lines (20-40 words for English), and a prediction that edits it the way a
model's summary differs (about 15 % of words replaced, 8 % dropped, sentences sometimes swapped).
Three lines, each timed in this one run on the same pairs (best of ``--repeats``):

* English: rouge-score's ``RougeScorer.score`` per pair vs ``ROUGE().sample_stats`` (tokenizer auto,
  which picks rouge-score's default for ASCII text: the Rust tokenizer does all the work);
* English with ``use_stemmer``;
* Chinese (``lang="zh"``): rouge-score with aigc-eval's ``CJKTokenizer`` (what the metric ran before)
  vs ``sample_stats`` (tokens in Python, scoring in Rust).

The aigc-eval time is the whole ``sample_stats`` call: tokenizer choice, the lost-letter checks,
scoring and the rows. Every P/R/F value is compared bit for bit with rouge-score's; the count of
differing values must be 0. Bar: at least 40x faster on English. Wall and CPU seconds (all threads)
are both printed: rouge-score-rs's ``score_batch`` may use several cores (``--threads`` sets
``RAYON_NUM_THREADS``), rouge-score uses one.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "suites" / "data" / "demo_corpus.txt"
TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def corpus_lines() -> tuple[list[str], list[str]]:
    """The demo corpus's English and Chinese lines."""
    lines = [line.strip() for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    english = [line for line in lines if line.isascii()]
    return english, [line for line in lines if not line.isascii()]


def english_pairs(lines: list[str], n: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """n (prediction, [reference]) pairs of 20-40 words, sentences one per line."""
    rng = random.Random(seed)
    vocabulary = sorted({word for line in lines for word in line.split()})
    predictions, references = [], []
    while len(predictions) < n:
        sentences = rng.sample(lines, rng.choice([2, 3]))
        if not 20 <= sum(len(s.split()) for s in sentences) <= 40:
            continue
        edited = []
        for sentence in sentences:
            words = [rng.choice(vocabulary) if rng.random() < 0.15 else w for w in sentence.split()]
            edited.append(" ".join(w for w in words if rng.random() >= 0.08))
        if rng.random() < 0.3:
            edited.reverse()
        references.append(["\n".join(sentences)])
        predictions.append("\n".join(edited))
    return predictions, references


def chinese_pairs(lines: list[str], n: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """n pairs of 2-3 Chinese sentences, characters edited as the English words are."""
    rng = random.Random(seed)
    characters = sorted({c for line in lines for c in line})
    predictions, references = [], []
    for _ in range(n):
        sentences = rng.sample(lines, rng.choice([2, 3]))
        edited = [
            "".join(rng.choice(characters) if rng.random() < 0.15 else c for c in s if rng.random() >= 0.08)
            for s in sentences
        ]
        references.append(["\n".join(sentences)])
        predictions.append("\n".join(edited))
    return predictions, references


def best_time(function: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Best wall and best CPU seconds (all threads of the process) over ``repeats`` calls, and the result."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = function()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of each side; the best counts")
    parser.add_argument(
        "--threads", type=int, default=0, help="RAYON_NUM_THREADS for rouge-score-rs (0: all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # read when rouge-score-rs starts its pool

    import numpy as np
    from rouge_score.rouge_scorer import RougeScorer

    from aigc_eval.metrics import rouge_fast
    from aigc_eval.metrics.rouge import ROUGE
    from aigc_eval.metrics.tokenize import CJKTokenizer

    if rouge_fast.native() is None:
        raise SystemExit("rouge-score-rs is not installed: the metric would run rouge-score itself")
    english, chinese = corpus_lines()
    en = english_pairs(english, args.pairs, args.seed)
    zh = chinese_pairs(chinese, args.pairs, args.seed)
    words = np.mean([len(r[0].split()) for r in en[1]])
    print(
        f"rouge-score {version('rouge-score')}, rouge-score-rs {version('rouge-score-rs')}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'all')}; {args.pairs} pairs, "
        f"English references {words:.1f} words on average; best of {args.repeats}"
    )
    cases = [
        ("English", en, {}, RougeScorer(list(TYPES))),
        ("English, stemmed", en, {"use_stemmer": True}, RougeScorer(list(TYPES), use_stemmer=True)),
        ("Chinese (cjk)", zh, {"lang": "zh"}, RougeScorer(list(TYPES), tokenizer=CJKTokenizer())),
    ]
    header = (
        f"{'case':<18}{'rouge-score s':>14}{'aigc-eval s':>13}{'speed-up':>10}"
        f"{'(CPU s':>9}{'CPU s':>8}{'CPU ratio)':>12}{'differing values':>18}"
    )
    print(header)
    print("-" * len(header))
    ratios, differing = {}, 0
    for label, (predictions, references), settings, reference in cases:
        lang = settings.get("lang")
        metric = ROUGE(ROUGE.Options(use_stemmer=settings.get("use_stemmer", False)), lang=lang)

        def slow(scorer: RougeScorer = reference, data: tuple = (predictions, references)) -> np.ndarray:
            scores = [scorer.score(refs[0], p) for p, refs in zip(*data, strict=True)]
            return np.array([[v for t in TYPES for v in s[t]] for s in scores], dtype=np.float64)

        def fast(metric: ROUGE = metric, data: tuple = (predictions, references)) -> np.ndarray:
            return metric.sample_stats(*data)[:, :-2]

        slow_s, slow_cpu, want = best_time(slow, args.repeats)
        fast_s, fast_cpu, got = best_time(fast, args.repeats)
        differ = int(np.count_nonzero(got.view(np.uint64) != want.view(np.uint64)))
        differing += differ
        ratios[label] = slow_s / fast_s
        print(
            f"{label:<18}{slow_s:>14.3f}{fast_s:>13.4f}{ratios[label]:>9.1f}x{slow_cpu:>9.3f}{fast_cpu:>8.4f}"
            f"{slow_cpu / fast_cpu:>10.1f}x {differ:>10} of {want.size}"
        )
    verdict = "PASS" if ratios["English"] >= 40 and differing == 0 else "FAIL"
    print(f"bar (English >= 40x wall, 0 differing values): {verdict} ({ratios['English']:.1f}x, {differing})")


if __name__ == "__main__":
    main()
