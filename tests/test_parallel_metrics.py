"""TER and chrF statistics from worker processes equal the one-process rows and sacrebleu, exactly."""

from __future__ import annotations

import functools
import multiprocessing
import os
import random
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import pytest
import sacrebleu
from sacrebleu import metrics as sb

from aigc_eval.errors import UserError
from aigc_eval.metrics.base import Metric
from aigc_eval.metrics.sacrebleu_metrics import CHRF, TER, CHRFPlusPlus
from aigc_eval.parallel import map_chunks, sacrebleu_segment_statistics, worker_count

SAMPLES = 160
WORDS = ["the", "a", "cat", "dog", "sat", "on", "under", "mat", "big", "red", "It's", "John", "New", "York"]
WORDS += [",", ".", "!", "?"]
HANZI = list("今天天气很好我们去北京工作了三年他喜欢吃苹果小猫在读书，。")


def _perturb(rng: random.Random, tokens: list[str]) -> list[str]:
    out = [t.upper() if rng.random() < 0.1 else t for t in tokens if rng.random() > 0.15]
    if len(out) > 3 and rng.random() < 0.5:  # a moved phrase, for TER's shift search
        i = rng.randrange(len(out) - 2)
        out = out[:i] + out[i + 2 :] + out[i : i + 2]
    return out


def dataset(language: str, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Seeded short segments; the first half has one reference each, the rest 1-3 (chunks differ in
    width), and every 17th prediction is empty."""
    rng = random.Random(seed)
    vocabulary, sep = (WORDS, " ") if language == "en" else ([*HANZI, "GPT-4", "model"], "")
    predictions, references = [], []
    for i in range(SAMPLES):
        count = 1 if i < SAMPLES // 2 else rng.randint(1, 3)
        refs = [[rng.choice(vocabulary) for _ in range(rng.randint(3, 12))] for _ in range(count)]
        predictions.append("" if i % 17 == 0 else sep.join(_perturb(rng, refs[0])))
        references.append([sep.join(ref) for ref in refs])
    return predictions, references


def streams(references: list[list[str]]) -> list[list[str | None]]:
    width = max(len(refs) for refs in references)
    return [[refs[j] if j < len(refs) else None for refs in references] for j in range(width)]


# (ours, sacrebleu's metric with the same options; its corpus_score is what corpus_ter/chrf return)
CONFIGS: dict[str, tuple[Callable[[], Metric], Callable[[], Any]]] = {
    "ter": (TER, sb.TER),
    "ter-case-sensitive": (
        lambda: TER(TER.Options(case_sensitive=True)),
        lambda: sb.TER(case_sensitive=True),
    ),
    "ter-no-punct": (
        lambda: TER(TER.Options(no_punct=True, normalized=True)),
        lambda: sb.TER(no_punct=True, normalized=True),
    ),
    "ter-asian": (lambda: TER(lang="zh"), lambda: sb.TER(asian_support=True)),
    "chrf": (CHRF, sb.CHRF),
    "chrf-word-order-2": (
        lambda: CHRF(CHRF.Options(word_order=2, lowercase=True)),
        lambda: sb.CHRF(word_order=2, lowercase=True),
    ),
    "chrf++": (CHRFPlusPlus, lambda: sb.CHRF(word_order=2)),
}


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_worker_rows_equal_one_process_rows_and_sacrebleu(
    config: str, language: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, corpus = CONFIGS[config]
    predictions, references = dataset(language)
    metric = ours()
    monkeypatch.setattr(type(metric), "parallel_min_items", 1)
    monkeypatch.setenv("AIGC_EVAL_WORKERS", "1")
    alone = metric.sample_stats(predictions, references)
    monkeypatch.setenv("AIGC_EVAL_WORKERS", "2")
    rows = metric.sample_stats(predictions, references)
    assert rows.dtype == alone.dtype and rows.shape == (SAMPLES, alone.shape[1])
    assert np.array_equal(rows, alone)
    (score,) = metric.aggregate(rows).values()
    reference = corpus()
    assert score.score == reference.corpus_score(predictions, streams(references)).score
    assert score.signature == reference.get_signature().format()
    assert "nrefs:var" in score.signature


def test_the_corpus_functions_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    predictions, references = dataset("en", seed=1)
    monkeypatch.setattr(TER, "parallel_min_items", 1)
    monkeypatch.setattr(CHRF, "parallel_min_items", 1)
    monkeypatch.setenv("AIGC_EVAL_WORKERS", "2")
    ter = TER(TER.Options(case_sensitive=True)).compute(predictions, references)["ter"]
    chrf = CHRFPlusPlus().compute(predictions, references)["chrf++"]
    assert ter.score == sacrebleu.corpus_ter(predictions, streams(references), case_sensitive=True).score
    assert chrf.score == sacrebleu.corpus_chrf(predictions, streams(references), word_order=2).score


def test_default_threshold_sends_large_inputs_to_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    # A failure in a worker arrives with the worker's traceback as its cause; in-process it has none.
    predictions, references = dataset("en")
    predictions[SAMPLES - 5] = None  # type: ignore[call-overload]
    monkeypatch.setenv("AIGC_EVAL_WORKERS", "2")
    assert TER.parallel_min_items is not None and TER.parallel_min_items <= SAMPLES
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute") as remote:
        TER().sample_stats(predictions, references)
    assert type(remote.value.__cause__).__name__ == "_RemoteTraceback"
    assert "_extract_corpus_statistics" in str(remote.value.__cause__)
    monkeypatch.setenv("AIGC_EVAL_WORKERS", "1")
    with pytest.raises(AttributeError) as local:
        TER().sample_stats(predictions, references)
    assert str(local.value) == str(remote.value) and local.value.__cause__ is None


def test_below_min_items_runs_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGC_EVAL_WORKERS", "2")
    task = functools.partial(sacrebleu_segment_statistics, sb.CHRF())
    bad = [("a b", ["a b"])] * 9 + [(None, ["a"])]
    with pytest.raises(AttributeError) as local:
        map_chunks(task, bad, min_items=11)
    assert local.value.__cause__ is None
    with pytest.raises(AttributeError) as remote:
        map_chunks(task, bad, min_items=10)
    assert type(remote.value.__cause__).__name__ == "_RemoteTraceback"


def test_map_chunks_concatenates_chunks_in_order() -> None:
    assert map_chunks(list, range(1001), min_items=1, workers=2) == list(range(1001))
    assert map_chunks(list, ["x"], min_items=1, workers=2) == ["x"]
    assert map_chunks(list, [], min_items=0, workers=2) == []


def test_a_dying_worker_raises_instead_of_hanging() -> None:
    # Built from builtins so the worker needs nothing from this module: exec(code, {}, chunk).
    die = functools.partial(exec, "(lambda: __import__('os')._exit(3))()", {})
    with pytest.raises(BrokenProcessPool, match="AIGC_EVAL_WORKERS=1"):
        map_chunks(die, [1, 2, 3, 4], min_items=1, workers=2)


def test_worker_count_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIGC_EVAL_WORKERS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cpus = len(os.sched_getaffinity(0))
    assert worker_count() == cpus
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert worker_count() == max(1, cpus // 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cpus * 4))
    assert worker_count() == 1
    monkeypatch.setenv("AIGC_EVAL_WORKERS", " 3 ")
    assert worker_count() == 3  # an explicit count wins over the rank split


@pytest.mark.parametrize(
    ("name", "value"), [("AIGC_EVAL_WORKERS", "0"), ("AIGC_EVAL_WORKERS", "two"), ("LOCAL_WORLD_SIZE", "-1")]
)
def test_bad_worker_settings_name_the_variable(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIGC_EVAL_WORKERS", raising=False)
    monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match=f"{name}='{value}' is not a whole number"):
        worker_count()


def test_inside_a_daemonic_pool_worker_it_runs_in_process() -> None:
    # multiprocessing.Pool workers are daemonic and may not have children of their own.
    nested = functools.partial(map_chunks, list, min_items=1, workers=2)
    with multiprocessing.get_context("forkserver").Pool(1) as pool:
        assert pool.apply(nested, ([3, 1, 2],)) == [3, 1, 2]
