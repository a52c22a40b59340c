"""Token-weighted perplexity of texts under a scoring model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aigc_eval.backends.base import Backend
from aigc_eval.errors import UserError
from aigc_eval.metrics.base import Metric, References, Score, check_aligned
from aigc_eval.metrics.tokenize import is_cjk_language

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
    additive = True

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        model: str | None = None  # which model scores; the runner resolves it to ``scorer``
        target: Literal["predictions", "references"] = "predictions"  # `on` would be a YAML boolean
        max_length: int | None = Field(default=None, ge=2)
        stride: int | None = Field(default=None, ge=1)
        prepend_bos: bool = True
        # `prompt`: score each text as the continuation of its prompt (conditional perplexity,
        # lm-eval's loglikelihood convention); the prompt itself is never scored.
        context: Literal["none", "prompt"] = "none"
        # Put between prompt and text when neither has whitespace there; None: " " except for CJK.
        delimiter: str | None = None

    def __init__(
        self,
        scorer: Backend,
        options: Options | None = None,
        lang: str | None = None,
        prompts: Sequence[str] | None = None,
    ) -> None:
        self.scorer = scorer
        self.options = options or self.Options()
        self.prompts = prompts
        if self.options.context == "prompt" and prompts is None:
            raise UserError("perplexity with context: prompt needs the prompts; use it in a suite task")
        default = "" if is_cjk_language(lang) else " "
        self.delimiter = default if self.options.delimiter is None else self.options.delimiter
        self.outputs = self.output_names(self.options)

    @staticmethod
    def output_names(options: Options) -> tuple[str, ...]:
        # Two perplexity entries (references and predictions) can sit in one suite.
        return ("ref_perplexity",) if options.target == "references" else ("perplexity",)

    def sample_stats(self, predictions: Sequence[str], references: References) -> np.ndarray:
        if self.options.target == "references":
            check_aligned(predictions, references)
            texts = [refs[0] for refs in references]
        else:
            texts = list(predictions)
        contexts = None
        if self.options.context == "prompt":
            pairs = [self._split(prompt, text) for prompt, text in zip(self.prompts, texts, strict=True)]
            contexts, texts = [c for c, _ in pairs], [t for _, t in pairs]
        scored = self.scorer.loglikelihood(
            texts,
            max_length=self.options.max_length,
            stride=self.options.stride,
            prepend_bos=self.options.prepend_bos,
            contexts=contexts,
        )
        if sum(s.tokens for s in scored) == 0:
            # exp(0 / 0): no perplexity exists; an empty file or all-empty texts is a mistake to report.
            what = "reference" if self.options.target == "references" else "prediction"
            raise UserError(
                f"perplexity: the {len(texts)} {what} text(s) hold no token to score (empty file or "
                f"empty texts); give texts with content"
            )
        rows = [[s.nll, s.tokens, len(t.encode("utf-8"))] for s, t in zip(scored, texts, strict=True)]
        return np.array(rows, dtype=np.float64).reshape(len(texts), 3)

    def _split(self, prompt: str, text: str) -> tuple[str, str]:
        """(context, scored text): trailing spaces move from the prompt to the text, as lm-eval
        does, because BPE tokenizers attach a space to the word after it; the delimiter goes
        where prompt and text would otherwise run together."""
        context = prompt.rstrip(" ")
        moved = prompt[len(context) :]
        if not moved and context and text and not text[0].isspace():
            moved = self.delimiter
        return context, moved + text

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
        # Scores from a model whose tanh-GELUs were swapped for the fused kernel say so.
        fused = "|gelu:fused" if info.get("fused_activations", "0") != "0" else ""
        return (
            f"ppl|model:{info.get('model', '?')}|weights:{info.get('weights_sha256', 'unknown')[:12]}"
            f"|window:{window}|stride:{stride}|bos:{bos}|context:{self.options.context}|agg:token-weighted{fused}"
            f"|transformers:{info.get('transformers', '?')}"
        )
