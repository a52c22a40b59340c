"""Perplexity metric over a real tiny GPT-2, checked against per-token sums computed here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from pydantic import ValidationError

from aigc_eval.backends.hf import HFBackend, HFRow
from aigc_eval.errors import UserError
from aigc_eval.metrics.base import MetricContext, SampleInputs
from aigc_eval.metrics.perplexity import Perplexity


def hf(path: Path | str, **options: object) -> HFBackend:
    """An HFBackend built from its row, as ``create_backend`` builds a suite's."""
    return HFBackend(HFRow(name="m", path=str(path), **options))


TEXTS = [
    "The cat reads a long letter.",
    "今天天气很好。",
    "A",
    "My friend remembers the morning light, and the old teacher paints the quiet city every day.",
]


@pytest.fixture(scope="module")
def scorer(tiny_lm_dir: Path) -> HFBackend:
    return hf(str(tiny_lm_dir), batch_size=3)


def ppl(scorer: HFBackend, options: Perplexity.Options | None = None, lang: str | None = None) -> Perplexity:
    """The metric as the runner builds it: the scorer's provenance in its context, no model."""
    return Perplexity(options, lang=lang, context=MetricContext(scorer=scorer.describe()))


def given(scorer: HFBackend, prompts: list[str] | None = None) -> SampleInputs:
    return SampleInputs(prompts=prompts, scorer=scorer)


def reference(scorer: HFBackend, model: torch.nn.Module, text: str) -> tuple[float, int]:
    """(NLL sum, tokens) with BOS prepended: one forward per token on its whole prefix."""
    seq = [scorer.tokenizer.bos_token_id, *scorer.tokenizer(text, add_special_tokens=False)["input_ids"]]
    nll = 0.0
    with torch.no_grad():
        for t in range(1, len(seq)):
            logits = model(torch.tensor([seq[:t]])).logits[0, -1]
            nll -= torch.log_softmax(logits.double(), dim=-1)[seq[t]].item()
    return nll, len(seq) - 1


def test_rows_hold_nll_tokens_and_bytes(scorer: HFBackend, plain_lm: torch.nn.Module) -> None:
    stats = ppl(scorer).sample_stats(TEXTS, [[""]] * len(TEXTS), given(scorer))
    assert stats.shape == (len(TEXTS), 3)
    for row, text in zip(stats, TEXTS, strict=True):
        nll, tokens = reference(scorer, plain_lm, text)
        assert row[0] == pytest.approx(nll, rel=1e-4)
        assert row[1] == tokens
        assert row[2] == len(text.encode("utf-8"))


def test_corpus_perplexity_is_token_weighted(scorer: HFBackend, plain_lm: torch.nn.Module) -> None:
    metric = ppl(scorer)
    refs = [reference(scorer, plain_lm, t) for t in TEXTS]
    total_nll = sum(n for n, _ in refs)
    total_tokens = sum(k for _, k in refs)
    total_bytes = sum(len(t.encode("utf-8")) for t in TEXTS)

    score = metric.compute(TEXTS, [[t] for t in TEXTS], given(scorer))["perplexity"]
    assert score.score == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-4)
    mean_of_samples = np.mean([math.exp(n / k) for n, k in refs])
    assert abs(score.score - mean_of_samples) > 0.01 * score.score
    assert score.details["bits_per_byte"] == pytest.approx(total_nll / (math.log(2) * total_bytes), rel=1e-4)
    assert score.details["tokens"] == total_tokens
    assert score.details["nll"] == pytest.approx(total_nll, rel=1e-4)
    assert score.higher_is_better is False
    assert score.name == "perplexity"


def test_sample_scores_and_empty_texts(scorer: HFBackend, plain_lm: torch.nn.Module) -> None:
    metric = ppl(scorer)
    stats = metric.sample_stats([*TEXTS[:2], ""], [[""]] * 3, given(scorer))
    per_sample = metric.sample_scores(stats)["perplexity"]
    for value, text in zip(per_sample[:2], TEXTS[:2], strict=True):
        nll, tokens = reference(scorer, plain_lm, text)
        assert value == pytest.approx(math.exp(nll / tokens), rel=1e-4)
    assert math.isnan(per_sample[2])
    assert list(stats[2]) == [0.0, 0.0, 0.0]
    assert math.isnan(metric.aggregate(stats[2:])["perplexity"].score)
    assert math.isnan(metric.aggregate(np.zeros((0, 3)))["perplexity"].score)


def test_scores_first_reference_when_asked(scorer: HFBackend) -> None:
    metric = ppl(scorer, Perplexity.Options(target="references"))
    stats = metric.sample_stats(["ignored", "also ignored"], [[TEXTS[0], "x"], [TEXTS[1]]], given(scorer))
    expected = ppl(scorer).sample_stats(TEXTS[:2], [[""]] * 2, given(scorer))
    np.testing.assert_allclose(stats, expected)
    # Its own output name, so a suite can report both perplexities side by side.
    assert list(metric.aggregate(stats)) == ["ref_perplexity"]


def test_window_options_reach_the_scorer(scorer: HFBackend) -> None:
    long_text = " ".join(TEXTS) * 3
    options = Perplexity.Options(max_length=32, stride=8, prepend_bos=False)
    [row] = ppl(scorer, options).sample_stats([long_text], [[""]], given(scorer))
    [direct] = scorer.loglikelihood([long_text], max_length=32, stride=8, prepend_bos=False)
    assert row[0] == pytest.approx(direct.nll) and row[1] == direct.tokens
    assert row[1] == len(scorer.tokenizer(long_text, add_special_tokens=False)["input_ids"]) - 1


def test_signature(scorer: HFBackend, tiny_lm_dir: Path) -> None:
    """Built from the scorer's provenance (a ``Provenance``), stateless: the same from saved rows."""
    sha = scorer.describe().weights_sha256
    ver = transformers.__version__
    rows = ppl(scorer).sample_stats(TEXTS[:1], [[""]], given(scorer))
    assert ppl(scorer).signature(rows) == (
        f"ppl|model:{tiny_lm_dir}|weights:{sha[:12]}|window:64|stride:64|bos:yes|context:none"
        f"|agg:token-weighted|gelu:fused|transformers:{ver}"
    )
    options = Perplexity.Options(max_length=32, stride=8, prepend_bos=False)
    assert "|window:32|stride:8|bos:no|" in ppl(scorer, options).signature(rows)
    exact = hf(str(tiny_lm_dir), fused_activations=False)
    assert "|agg:token-weighted|transformers:" in ppl(exact).signature(rows)


def test_demo_signature_is_unchanged() -> None:
    """The demo's scoring model gives the signature the run made before the backend refactor kept
    (/work/before/...: ``ppl|model:<abs path>|weights:aa432fdb6366|window:128|...``)."""
    folder = Path(__file__).parents[1] / "suites" / "models" / "demo-gpt2"
    if not folder.is_dir():
        pytest.skip("demo model not built (scripts/train_demo_models.py)")
    demo = hf(str(folder.resolve()), dtype="float32", device="cpu", batch_size=16)
    metric = ppl(demo, Perplexity.Options(target="references", context="prompt"))
    assert metric.signature(np.zeros((0, 3))) == (
        f"ppl|model:{folder.resolve()}|weights:aa432fdb6366|window:128|stride:128|bos:yes|context:prompt"
        f"|agg:token-weighted|gelu:fused|transformers:{transformers.__version__}"
    )


def test_scorer_and_prompts_come_from_the_inputs(scorer: HFBackend) -> None:
    with pytest.raises(UserError, match="perplexity needs a scoring model"):
        ppl(scorer).sample_stats(TEXTS[:1], [[""]])
    prompted = ppl(scorer, Perplexity.Options(context="prompt"))
    with pytest.raises(UserError, match="context: prompt needs the prompts"):
        prompted.sample_stats(TEXTS[:1], [[""]], given(scorer))


def test_options_reject_unknown_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        Perplexity.Options(windw=32)
    with pytest.raises(ValidationError):
        Perplexity.Options(target="prompts")
    with pytest.raises(ValidationError):
        Perplexity.Options(max_length=1)


def _conditional_reference(
    scorer: HFBackend, model: torch.nn.Module, context: str, text: str
) -> tuple[float, int]:
    """NLL of the tokens of ``context + text`` after the context's own tokens, one forward each."""
    ids = scorer.tokenizer
    whole = [ids.bos_token_id, *ids(context + text, add_special_tokens=False)["input_ids"]]
    first = 1 + len(ids(context, add_special_tokens=False)["input_ids"])
    nll = 0.0
    with torch.no_grad():
        for t in range(first, len(whole)):
            logits = model(torch.tensor([whole[:t]])).logits[0, -1]
            nll -= torch.log_softmax(logits.double(), dim=-1)[whole[t]].item()
    return nll, len(whole) - first


def test_context_prompt_scores_only_the_continuation(scorer: HFBackend, plain_lm: torch.nn.Module) -> None:
    prompts = [
        "The cat reads",
        "今天天气",
        "My friend remembers the morning light, and the old teacher paints ",
    ]
    refs = ["a long letter.", "很好。", "the quiet city every day."]
    metric = ppl(scorer, Perplexity.Options(target="references", context="prompt"))
    stats = metric.sample_stats(["x"] * 3, [[r] for r in refs], given(scorer, prompts))
    # A space is put between an English prompt and its reference; the trailing space of the third
    # prompt moves onto the scored text, as lm-eval does.
    expected = [
        _conditional_reference(scorer, plain_lm, "The cat reads", " a long letter."),
        _conditional_reference(scorer, plain_lm, "今天天气", " 很好。"),
        _conditional_reference(scorer, plain_lm, prompts[2].rstrip(), " the quiet city every day."),
    ]
    for row, (nll, tokens) in zip(stats, expected, strict=True):
        assert row[0] == pytest.approx(nll, rel=1e-4) and row[1] == tokens
    zh_options = Perplexity.Options(target="references", context="prompt")
    zh = ppl(scorer, zh_options, lang="zh")
    row = zh.sample_stats(["x"], [["很好。"]], given(scorer, prompts[:1]))[0]  # CJK: no delimiter
    assert row[0] == pytest.approx(
        _conditional_reference(scorer, plain_lm, "The cat reads", "很好。")[0], rel=1e-4
    )
    assert "context:prompt" in metric.aggregate(stats)["ref_perplexity"].signature
