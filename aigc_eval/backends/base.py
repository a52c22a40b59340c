"""The backend contract: what a backend declares (options model, capabilities) and what the runner
calls on it, small enough that vLLM or an HTTP backend is one new file touching nothing else.

A backend module defines a row options model (a subclass of ``aigc_eval.config.ModelRow`` with
``backend: Literal["name"]``) and a ``Backend`` subclass registered with
``@backends.register("name")`` (``aigc_eval.backends``). Suites validate ``models[i]`` with that
options model, ``preflight`` checks the row against the class's ``capabilities`` before anything
runs, and ``create_backend(row)`` builds it from the row alone.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

from aigc_eval.errors import UserError

if TYPE_CHECKING:
    from aigc_eval.cache import GenerationCache
    from aigc_eval.config import ModelRow
    from aigc_eval.record import Provenance

# Where a transformers config states the context length, in order of preference.
CONTEXT_KEYS = ("n_positions", "max_position_embeddings")


class GenerationSettings(BaseModel):
    """Decoding settings (a row's ``generation:``); defaults are greedy decoding.

    One model for both the suite schema and the backends, frozen so settings hash and compare.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(64, ge=1)
    num_beams: int = Field(1, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(50, ge=0)
    repetition_penalty: float = Field(1.0, gt=0)
    early_stopping: bool = False
    seed: int = 0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the plan refuses a suite asking for more (``preflight``)."""

    generate: bool = False  # text continuations (rows without it take part in image tasks only)
    loglikelihood: bool = False  # scores texts (perplexity)
    beam_search: bool = False  # generation.num_beams > 1
    sampling: bool = False  # generation.do_sample
    seeds: bool = False  # sampling reproducible from generation.seed
    chat_templates: bool = False  # chat: true
    logprobs: bool = False  # per-token log-probabilities (loglikelihood per_token)


@dataclass(frozen=True)
class TokenLogLikelihood:
    """Log-likelihood of one text: NLL summed over its scored tokens (nats), and, when asked
    for (``per_token=True``), each scored token's NLL in text order."""

    nll: float
    tokens: int
    token_nll: tuple[float, ...] | None = None


class BatchCallback(Protocol):
    """Called after each finished batch with (indices into the prompt list, texts, tokens generated);
    the count is what the model generated (EOS included, padding not), for tokens/s.

    ``failed`` lists the indices (into the prompt list, a subset of ``indices``) whose text is a
    recorded failure, not a generation (the ``openai`` backend's ``on_error: record`` gives them
    empty texts): they belong in the log but never in a cache of generations. Backends pass it only
    when it is non-empty, so callbacks written before it existed keep working with backends that
    never record failures.
    """

    def __call__(
        self, indices: list[int], texts: list[str], tokens: int, /, *, failed: Sequence[int] = ()
    ) -> None: ...


def example_seed(seed: int, task: str, example_id: str) -> int:
    """The sampling seed of one example: 31 bits of a sha256 (every server's seed type holds it).

    Each part is there for a reason: ``seed`` (the row's ``generation.seed``) lets a user draw
    another set of samples; ``task`` keeps examples of two tasks that share ids ("0", "1", ...)
    from sharing draws; ``example_id`` gives each example its own stream, so a sample never depends
    on the batch size, on which examples share its batch or shard, on their order or on resume.
    The row name is left out on purpose: rows with the same seed draw common random numbers, which
    makes paired comparisons between them less noisy. A hash rather than ``seed + index``, so
    neighbouring seeds do not sample shifted copies of each other.
    """
    payload = json.dumps([seed, task, example_id], ensure_ascii=False).encode()
    return int.from_bytes(hashlib.sha256(payload).digest()[:4], "big") >> 1


def prompt_seeds(
    prompts: Sequence[str], settings: GenerationSettings, seeds: Sequence[int] | None
) -> list[int]:
    """One seed per prompt: ``seeds`` as given, or for a caller without example ids, prompt ``i``'s
    ``example_seed(settings.seed, "", str(i))``."""
    if seeds is None:
        return [example_seed(settings.seed, "", str(i)) for i in range(len(prompts))]
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: give one seed per prompt")
    return list(seeds)


class Backend(ABC):
    """A model the runner generates with or scores with, built from its row (``create_backend``).

    Subclasses set ``Options`` (their row model) and ``capabilities``; methods they cannot do keep
    the defaults below, which the plan's capability checks make unreachable from a suite.
    """

    Options: ClassVar[type[ModelRow]]
    capabilities: ClassVar[Capabilities] = Capabilities()

    @abstractmethod
    def __init__(self, row: ModelRow) -> None:
        """Load (or connect to) the model the row describes; user errors name the option at fault."""

    @classmethod
    def check_row(cls, row: ModelRow, base_dir: Path, where: Callable[[str], str]) -> int | None:
        """Plan-time check of what the row refers to, reading no weights (a missing folder fails
        here, before anything runs); returns the model's context length when it is known.

        ``where(option)`` is the prefix naming that option in an error, e.g. ``suite.yaml: models[1].path``.
        """
        return None

    def generate(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        on_batch: BatchCallback | None = None,
        skip: set[int] | None = None,
        *,
        seeds: Sequence[int] | None = None,
    ) -> list[str]:
        """Continuations only (prompt stripped, stop strings applied), in prompt order.

        ``skip`` holds indices already generated (resume): whole batches of them
        are not run again, and their slots in the result are empty strings. ``seeds`` holds one
        sampling seed per prompt (``example_seed`` of its task and example id); a sample depends on
        its prompt, settings and seed only. None: ``prompt_seeds``' default, from positions.
        """
        raise self._cannot("generate")

    def cache_identity(self) -> dict[str, Any]:
        """Everything besides settings, prompt and seed that determines a generation, JSON-able:
        the backend and library versions, hashes of the weights, tokenizer and chat template,
        dtype, device type and the row options that change outputs (never the row name, batch size,
        device index or the model's path). Two backends with equal identities generate the same
        text for the same (settings, prompt, seed), so a cache of generations may key on it.
        Computed once per loaded model."""
        raise self._cannot("generate")

    def use_cache(self, cache: GenerationCache) -> None:
        """Where the backend may keep what it derives from its files across runs (context length,
        truncated-prompt counts, the HF fused-GELU count), so a cached rerun loads neither tokenizer,
        model nor engine to learn them. The default keeps nothing."""
        return None

    def truncated_prompts(self, prompts: Sequence[str], settings: GenerationSettings) -> int:
        """How many of ``prompts`` ``generate`` cuts from the left (lm-eval's convention) so that
        prompt plus ``max_new_tokens`` fit the model's context."""
        raise self._cannot("generate")

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
        raise self._cannot("loglikelihood")

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens in these texts under the model's tokenizer (for tokens/s)."""
        raise self._cannot("generate")

    @abstractmethod
    def describe(self) -> Provenance:
        """Provenance for results.json: backend, model, revision, weights hash, dtype, device."""

    def _cannot(self, capability: str) -> NotImplementedError:
        # The plan checks capabilities first, so reaching this is a bug in the caller.
        return NotImplementedError(f"backend {type(self).__name__} has no {capability!r} capability")


def prompt_room(context: int, settings: GenerationSettings, model: str) -> int:
    """Tokens left for the prompt once ``max_new_tokens`` are reserved in a ``context``-token window;
    a user error when none are (every backend truncates prompts to this room, lm-eval's rule)."""
    room = context - settings.max_new_tokens
    if room < 1:
        raise UserError(
            f"max_new_tokens {settings.max_new_tokens} leaves no room for a prompt in the "
            f"{context}-token context of {model!r}; lower generation.max_new_tokens"
        )
    return room
