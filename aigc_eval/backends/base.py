"""The backend contract, small enough that vLLM or an HTTP backend can be added
later without touching metrics or the runner."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# Where a transformers config states the context length, in order of preference.
CONTEXT_KEYS = ("n_positions", "max_position_embeddings")


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings; defaults are greedy decoding."""

    max_new_tokens: int = 64
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    early_stopping: bool = False
    seed: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class TokenLogLikelihood:
    """Log-likelihood of one text: NLL summed over its scored tokens (nats), and, when asked
    for (``per_token=True``), each scored token's NLL in text order."""

    nll: float
    tokens: int
    token_nll: tuple[float, ...] | None = None


# Called after each finished batch with (indices into the prompt list, texts, tokens generated):
# the count is what the model generated (EOS included, padding not), for tokens/s.
BatchCallback = Callable[[list[int], list[str], int], None]


class Backend(Protocol):
    """What the runner needs from a model."""

    def generate(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        on_batch: BatchCallback | None = None,
        skip: set[int] | None = None,
    ) -> list[str]:
        """Continuations only (prompt stripped, stop strings applied), in prompt order.

        ``skip`` holds indices already generated (resume): whole batches of them
        are not run again, and their slots in the result are empty strings.
        """

    def truncated_prompts(self, prompts: Sequence[str], settings: GenerationSettings) -> int:
        """How many of ``prompts`` ``generate`` cuts from the left (lm-eval's convention) so that
        prompt plus ``max_new_tokens`` fit the model's context."""

    def loglikelihood(
        self,
        texts: Sequence[str],
        max_length: int | None = None,
        stride: int | None = None,
        prepend_bos: bool = True,
        contexts: Sequence[str] | None = None,
        per_token: bool = False,
    ) -> list[TokenLogLikelihood]:
        """Per-text NLL sums and scored-token counts, sliding-window for long texts.

        With ``prepend_bos`` the BOS (or EOS) token is put before each text so its
        first token is scored too; pad tokens are never scored. ``contexts`` (one per
        text) condition the texts without being scored. ``per_token`` adds each scored
        token's NLL (``token_nll``); metrics need only the sums.
        """

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens in these texts under the model's tokenizer (for tokens/s)."""

    def describe(self) -> dict[str, str]:
        """Provenance for results.json: model path, revision, weights hash, dtype, device."""
