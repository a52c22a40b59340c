"""Token-weighted perplexity of texts under a scoring model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aigc_eval.errors import UserError
from aigc_eval.metrics.base import Metric, MetricContext, References, SampleInputs, Score, check_aligned
from aigc_eval.metrics.registry import metrics
from aigc_eval.metrics.tokenize import is_cjk_language

NLL, TOKENS, BYTES = 0, 1, 2


@metrics.register("perplexity")
class Perplexity(Metric):
    """exp(total NLL / total scored tokens) over the corpus.

    Rows are ``[nll_sum, scored_tokens, utf8_bytes]`` so the corpus value is token-weighted
    (a mean of per-sample perplexities overweights short texts), and bits per byte compares
    models with different tokenizers.
    """

    name = "perplexity"
    description = (
        "Token-weighted perplexity: exp(total negative log-likelihood / total tokens) over all "
        "samples, not a mean of per-sample perplexities; the signature names the scoring model, its "
        "weights and the context window."
    )
    outputs = ("perplexity",)
    higher_is_better = False
    additive = True
    needs_scorer = True

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
        self, options: Options | None = None, lang: str | None = None, context: MetricContext | None = None
    ) -> None:
        super().__init__(options, lang, context)
        default = "" if is_cjk_language(lang) else " "
        self.delimiter = default if self.options.delimiter is None else self.options.delimiter
        self.outputs = self.output_names(self.options)

    @classmethod
    def output_names(cls, options: Options) -> tuple[str, ...]:  # type: ignore[override]
        # Two perplexity entries (references and predictions) can sit in one suite.
        return ("ref_perplexity",) if options.target == "references" else ("perplexity",)

    def sample_stats(
        self, predictions: Sequence[str], references: References, inputs: SampleInputs | None = None
    ) -> np.ndarray:
        """Log-likelihoods come from the scorer the runner provides (``inputs.scorer``)."""
        if inputs is None or inputs.scorer is None:
            raise UserError(
                "perplexity needs a scoring model; give one with --model PATH or a suite model row"
            )
        prompts = inputs.prompts
        if self.options.context == "prompt" and prompts is None:
            raise UserError("perplexity with context: prompt needs the prompts; use it in a suite task")
        if self.options.target == "references":
            check_aligned(predictions, references)
            texts = [refs[0] for refs in references]
        else:
            texts = list(predictions)
        contexts = None
        if self.options.context == "prompt":
            pairs = [self._split(prompt, text) for prompt, text in zip(prompts or (), texts, strict=True)]
            contexts, texts = [c for c, _ in pairs], [t for _, t in pairs]
        scored = inputs.scorer.loglikelihood(
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
        nll, tokens, size = _sums(stats)
        bpb = nll / (math.log(2) * size) if tokens > 0 and size > 0 else math.nan
        details = {"bits_per_byte": bpb, "tokens": tokens, "nll": nll}
        (output,) = self.outputs
        ppl = _perplexity(nll, tokens)
        return {output: Score(output, ppl, self.signature(stats), self.higher_is_better, details)}

    def values(self, stats: np.ndarray) -> dict[str, float]:
        nll, tokens, _ = _sums(stats)
        return {self.outputs[0]: _perplexity(nll, tokens)}

    def stacked_values(self, stack: np.ndarray) -> dict[str, np.ndarray]:
        if stack.shape[1] != 1:
            return super().stacked_values(stack)
        # Summed rows (resampling an additive metric): each row is its own sum.
        sums = stack[:, 0, :].astype(np.float64).tolist()
        return {self.outputs[0]: np.array([_perplexity(row[NLL], row[TOKENS]) for row in sums])}

    def sample_scores(self, stats: np.ndarray) -> dict[str, list[float]]:
        return {
            self.outputs[0]: [
                math.exp(row[NLL] / row[TOKENS]) if row[TOKENS] > 0 else math.nan for row in stats
            ]
        }

    def signature(self, stats: np.ndarray) -> str:
        """The scoring model (from ``context.scorer``, its provenance), window, stride, BOS, context."""
        scorer = self.context.scorer
        window = self.options.max_length or (scorer.context_length if scorer else None) or "model"
        stride = self.options.stride or window
        bos = "yes" if self.options.prepend_bos else "no"
        extra = scorer.extra if scorer else {}
        # Scores from a model whose tanh-GELUs were swapped for the fused kernel say so.
        fused = "|gelu:fused" if extra.get("fused_activations", "0") != "0" else ""
        model = (scorer.model if scorer else None) or "?"
        weights = ((scorer.weights_sha256 if scorer else None) or "unknown")[:12]
        return (
            f"ppl|model:{model}|weights:{weights}"
            f"|window:{window}|stride:{stride}|bos:{bos}|context:{self.options.context}|agg:token-weighted{fused}"
            f"|transformers:{extra.get('transformers', '?')}"
        )


def _sums(stats: np.ndarray) -> tuple[float, float, float]:
    """Summed NLL, scored tokens and UTF-8 bytes of the rows."""
    if not len(stats):
        return 0.0, 0.0, 0.0
    nll, tokens, size = (float(x) for x in stats.sum(axis=0))
    return nll, tokens, size


def _perplexity(nll: float, tokens: float) -> float:
    """Token-weighted perplexity; undefined (NaN) over no tokens."""
    return math.exp(nll / tokens) if tokens > 0 else math.nan
