"""Perplexity metric over a real tiny GPT-2, checked against per-token sums computed here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from pydantic import ValidationError

from aigc_eval.backends.hf import HFBackend
from aigc_eval.metrics.perplexity import Perplexity

TEXTS = [
    "The cat reads a long letter.",
    "今天天气很好。",
    "A",
    "My friend remembers the morning light, and the old teacher paints the quiet city every day.",
]


@pytest.fixture(scope="module")
def scorer(tiny_lm_dir: Path) -> HFBackend:
    return HFBackend(str(tiny_lm_dir), batch_size=3)


def reference(scorer: HFBackend, text: str) -> tuple[float, int]:
    """(NLL sum, tokens) with BOS prepended: one forward per token on its whole prefix."""
    seq = [scorer.tokenizer.bos_token_id, *scorer.tokenizer(text, add_special_tokens=False)["input_ids"]]
    nll = 0.0
    with torch.no_grad():
        for t in range(1, len(seq)):
            logits = scorer.model(torch.tensor([seq[:t]])).logits[0, -1]
            nll -= torch.log_softmax(logits.double(), dim=-1)[seq[t]].item()
    return nll, len(seq) - 1


def test_rows_hold_nll_tokens_and_bytes(scorer: HFBackend) -> None:
    stats = Perplexity(scorer).sample_stats(TEXTS, [[""]] * len(TEXTS))
    assert stats.shape == (len(TEXTS), 3)
    for row, text in zip(stats, TEXTS, strict=True):
        nll, tokens = reference(scorer, text)
        assert row[0] == pytest.approx(nll, rel=1e-4)
        assert row[1] == tokens
        assert row[2] == len(text.encode("utf-8"))


def test_corpus_perplexity_is_token_weighted(scorer: HFBackend) -> None:
    metric = Perplexity(scorer)
    refs = [reference(scorer, t) for t in TEXTS]
    total_nll = sum(n for n, _ in refs)
    total_tokens = sum(k for _, k in refs)
    total_bytes = sum(len(t.encode("utf-8")) for t in TEXTS)

    score = metric.compute(TEXTS, [[t] for t in TEXTS])["perplexity"]
    assert score.score == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-4)
    mean_of_samples = np.mean([math.exp(n / k) for n, k in refs])
    assert abs(score.score - mean_of_samples) > 0.01 * score.score
    assert score.details["bits_per_byte"] == pytest.approx(total_nll / (math.log(2) * total_bytes), rel=1e-4)
    assert score.details["tokens"] == total_tokens
    assert score.details["nll"] == pytest.approx(total_nll, rel=1e-4)
    assert score.higher_is_better is False
    assert score.name == "perplexity"


def test_sample_scores_and_empty_texts(scorer: HFBackend) -> None:
    metric = Perplexity(scorer)
    stats = metric.sample_stats([*TEXTS[:2], ""], [[""]] * 3)
    per_sample = metric.sample_scores(stats)["perplexity"]
    for value, text in zip(per_sample[:2], TEXTS[:2], strict=True):
        nll, tokens = reference(scorer, text)
        assert value == pytest.approx(math.exp(nll / tokens), rel=1e-4)
    assert math.isnan(per_sample[2])
    assert list(stats[2]) == [0.0, 0.0, 0.0]
    assert math.isnan(metric.aggregate(stats[2:])["perplexity"].score)
    assert math.isnan(metric.aggregate(np.zeros((0, 3)))["perplexity"].score)


def test_scores_first_reference_when_asked(scorer: HFBackend) -> None:
    metric = Perplexity(scorer, Perplexity.Options(target="references"))
    stats = metric.sample_stats(["ignored", "also ignored"], [[TEXTS[0], "x"], [TEXTS[1]]])
    expected = Perplexity(scorer).sample_stats(TEXTS[:2], [[""]] * 2)
    np.testing.assert_allclose(stats, expected)
    # Its own output name, so a suite can report both perplexities side by side.
    assert list(metric.aggregate(stats)) == ["ref_perplexity"]


def test_window_options_reach_the_scorer(scorer: HFBackend) -> None:
    long_text = " ".join(TEXTS) * 3
    options = Perplexity.Options(max_length=32, stride=8, prepend_bos=False)
    [row] = Perplexity(scorer, options).sample_stats([long_text], [[""]])
    [direct] = scorer.loglikelihood([long_text], max_length=32, stride=8, prepend_bos=False)
    assert row[0] == pytest.approx(direct.nll) and row[1] == direct.tokens
    assert row[1] == len(scorer.tokenizer(long_text, add_special_tokens=False)["input_ids"]) - 1


def test_signature(scorer: HFBackend, tiny_lm_dir: Path) -> None:
    sha = scorer.describe()["weights_sha256"]
    ver = transformers.__version__
    assert Perplexity(scorer).signature() == (
        f"ppl|model:{tiny_lm_dir}|weights:{sha[:12]}|window:64|stride:64|bos:yes"
        f"|agg:token-weighted|transformers:{ver}"
    )
    options = Perplexity.Options(max_length=32, stride=8, prepend_bos=False)
    assert "|window:32|stride:8|bos:no|" in Perplexity(scorer, options).signature()


def test_options_reject_unknown_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        Perplexity.Options(windw=32)
    with pytest.raises(ValidationError):
        Perplexity.Options(target="prompts")
    with pytest.raises(ValidationError):
        Perplexity.Options(max_length=1)
