"""Token-weighted perplexity of texts under a scoring model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aigc_eval.backends.base import Backend
from aigc_eval.metrics.base import Metric, References, Score, check_aligned

NLL, TOKENS, BYTES = 0, 1, 2


class Perplexity(Metric):
    """exp(total NLL / total scored tokens) over the corpus.

    Rows are ``[nll_sum, scored_tokens, utf8_bytes]`` so the corpus value is token-weighted
    (a mean of per-sample perplexities overweights short texts), and bits per byte compares
    models with different tokenizers.
    """

    name = "perplexity"
    outputs = ("perplexity",)
    higher_is_better = False

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        model: str | None = None  # which model scores; the runner resolves it to ``scorer``
        target: Literal["predictions", "references"] = "predictions"  # `on` would be a YAML boolean
        max_length: int | None = Field(default=None, ge=2)
        stride: int | None = Field(default=None, ge=1)
        prepend_bos: bool = True

    def __init__(self, scorer: Backend, options: Options | None = None, lang: str | None = None) -> None:
        """``lang`` is accepted like every metric's, but perplexity does not depend on it."""
        self.scorer = scorer
        self.options = options or self.Options()
        # Two perplexity entries (references and predictions) can sit in one suite.
        self.outputs = ("ref_perplexity",) if self.options.target == "references" else ("perplexity",)

    def sample_stats(self, predictions: Sequence[str], references: References) -> np.ndarray:
        if self.options.target == "references":
            check_aligned(predictions, references)
            texts = [refs[0] for refs in references]
        else:
            texts = list(predictions)
        scored = self.scorer.loglikelihood(
            texts,
            max_length=self.options.max_length,
            stride=self.options.stride,
            prepend_bos=self.options.prepend_bos,
        )
        rows = [[s.nll, s.tokens, len(t.encode("utf-8"))] for s, t in zip(scored, texts, strict=True)]
        return np.array(rows, dtype=np.float64).reshape(len(texts), 3)

    def aggregate(self, stats: np.ndarray) -> dict[str, Score]:
        nll, tokens, size = (float(x) for x in stats.sum(axis=0)) if len(stats) else (0.0, 0.0, 0.0)
        ppl = math.exp(nll / tokens) if tokens > 0 else math.nan
        bpb = nll / (math.log(2) * size) if tokens > 0 and size > 0 else math.nan
        details = {"bits_per_byte": bpb, "tokens": tokens, "nll": nll}
        (output,) = self.outputs
        return {output: Score(output, ppl, self.signature(), self.higher_is_better, details)}

    def sample_scores(self, stats: np.ndarray) -> dict[str, list[float]]:
        return {
            self.outputs[0]: [
                math.exp(row[NLL] / row[TOKENS]) if row[TOKENS] > 0 else math.nan for row in stats
            ]
        }

    def signature(self) -> str:
        info = self.scorer.describe()
        window = self.options.max_length or info.get("context_length") or "model"
        stride = self.options.stride or window
        bos = "yes" if self.options.prepend_bos else "no"
        return (
            f"ppl|model:{info.get('model', '?')}|weights:{info.get('weights_sha256', 'unknown')[:12]}"
            f"|window:{window}|stride:{stride}|bos:{bos}|agg:token-weighted"
            f"|transformers:{info.get('transformers', '?')}"
        )
