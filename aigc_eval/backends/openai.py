"""OpenAI-compatible HTTP backend: any server speaking ``/v1/completions`` or ``/v1/chat/completions``
(vLLM, SGLang, TGI, llama.cpp server, Ollama, LM Studio) or a hosted API.

Requests run concurrently (``max_concurrency``) on one ``httpx.AsyncClient``; transient failures
(429, 5xx, dropped connections, timeouts, unreadable bodies) are retried with exponential backoff and
jitter, honouring ``Retry-After``. Each finished sample is handed to ``on_batch`` as it arrives, so
an interrupted run resumes with only the missing samples. Log-likelihoods come from prompt logprobs
(``echo: true, logprobs, max_tokens: 0``) on token-id prompts built with the server's ``/tokenize``,
using the HF backend's sliding windows and BOS rule so perplexity matches it. The API key is read from
the environment variable ``api_key_env`` names at request time and is never stored or echoed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, field_validator

from aigc_eval.backends import backends
from aigc_eval.backends.base import (
    Backend,
    BatchCallback,
    Capabilities,
    GenerationSettings,
    TokenLogLikelihood,
    prompt_room,
    prompt_seeds,
)
from aigc_eval.backends.hf import _cut_at_stop, _windows
from aigc_eval.config import ModelRow
from aigc_eval.errors import UserError
from aigc_eval.record import Provenance

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")
# Retried statuses: rate limiting, request timeout, and server-side failures.
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_BACKOFF_S = 30.0
# The fields of a ``/models`` entry that say which model is served (``cache_identity``). Not
# ``created``: vLLM fills it with the time of each /models request.
_CARD_FIELDS = ("id", "root", "parent", "max_model_len", "owned_by")


class OpenAIRow(ModelRow):
    """An ``openai`` row: a model behind an OpenAI-compatible endpoint and how to talk to it."""

    backend: Literal["openai"] = "openai"
    base_url: str = Field(description="the API root, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="the model name the server serves (`--served-model-name`)")
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the key")
    endpoint: Literal["completions", "chat"] = "completions"
    max_concurrency: int = Field(8, ge=1)
    timeout: float = Field(60.0, gt=0, description="seconds per request")
    max_retries: int = Field(5, ge=0)
    backoff: float = Field(0.5, gt=0, description="first retry delay in seconds, doubled per retry")
    on_error: Literal["fail", "record"] = "fail"
    extra_body: dict[str, Any] = Field(default_factory=dict)
    system: str | None = None
    batch_size: int = Field(1, ge=1, description="finished samples per on_batch call (log append)")
    logprobs: bool = True  # the server returns prompt logprobs (echo) and has /tokenize
    bos_token: str | None = None  # text of the token prepend_bos puts first; None: ask the server
    generation: GenerationSettings = Field(default_factory=GenerationSettings)

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is no http(s) URL; give e.g. http://127.0.0.1:8000/v1")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        # A key pasted here would be written to results.json; only names of variables are accepted.
        if value is not None and not value.replace("_", "").isalnum():
            raise ValueError("give the NAME of an environment variable (e.g. OPENAI_API_KEY), not the key")
        return value


class _Transient(Exception):
    """A failure worth retrying; ``retry_after`` is the server's Retry-After in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Fatal(Exception):
    """A failure retrying cannot fix (a 4xx other than 429, a response of the wrong shape)."""


@dataclass
class RequestStats:
    """What the transport did, for provenance and tests: requests sent, retries, failed samples."""

    requests: int = 0
    retries: int = 0
    failed: int = 0
    retried: list[str] = field(default_factory=list)  # the reason of each retry, in order


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to backoff


def _server_message(response: httpx.Response) -> str:
    """The server's error message in one line, short."""
    try:
        body = response.json()
        message = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(message, dict):
            message = message.get("message", message)
    except ValueError:
        message = response.text
    return " ".join(str(message).split())[:300]


@backends.register("openai")
class OpenAIBackend(Backend):
    """A model served over HTTP; nothing is loaded locally."""

    Options = OpenAIRow
    capabilities = Capabilities(generate=True, loglikelihood=True, sampling=True, seeds=True, logprobs=True)

    def __init__(self, row: ModelRow) -> None:
        assert isinstance(row, OpenAIRow), f"an openai row, not {type(row).__name__}"
        self.row = row
        self.stats = RequestStats()
        self._root = row.base_url.removesuffix("/v1")
        self._facts: dict[str, str] = {}
        self._provenance: Provenance | None = None
        self._bos_id: int | None = None
        self._key()  # a missing variable fails now, not after the first request
        card = self._run(self._model_card)
        self._card = {key: card.get(key) for key in _CARD_FIELDS}
        self._context = card.get("max_model_len") if isinstance(card.get("max_model_len"), int) else None
        self._note("server_model", str(card.get("id", row.model)))

    @classmethod
    def check_row(cls, row: ModelRow, base_dir: Path, where: Callable[[str], str]) -> int | None:
        """Options the OpenAI API cannot carry are refused here, before anything runs."""
        assert isinstance(row, OpenAIRow)
        settings = row.generation
        if settings.repetition_penalty != 1.0 and "repetition_penalty" not in row.extra_body:
            raise UserError(
                f"{where('generation.repetition_penalty')}: the OpenAI API has no repetition penalty; "
                "put `repetition_penalty` in extra_body if the server accepts it (vLLM, SGLang do)"
            )
        if row.api_key_env is not None and not os.environ.get(row.api_key_env):
            raise UserError(
                f"{where('api_key_env')}: environment variable {row.api_key_env} is not set; "
                "export it, or remove api_key_env for a server without a key"
            )
        return None

    # -- transport ----------------------------------------------------------------------------------

    def _key(self) -> str | None:
        """The API key, read from the environment at request time and never kept on the object."""
        name = self.row.api_key_env
        if name is None:
            return None
        value = os.environ.get(name)
        if not value:
            raise UserError(
                f"model {self.row.name!r}: environment variable {name} (api_key_env) is not set; export it"
            )
        return value

    def _headers(self) -> dict[str, str]:
        key = self._key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _client(self) -> httpx.AsyncClient:
        import httpx

        limits = httpx.Limits(max_connections=self.row.max_concurrency)
        return httpx.AsyncClient(timeout=self.row.timeout, limits=limits)

    def _run(self, job: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
        """Run ``job`` on a fresh client in its own event loop (generate is synchronous)."""

        async def main() -> T:
            async with self._client() as client:
                return await job(client)

        return asyncio.run(main())

    async def _request(
        self, client: httpx.AsyncClient, method: str, url: str, body: dict | None = None
    ) -> dict[str, Any]:
        """One JSON request with retries; transient failures are retried ``max_retries`` times with
        exponential backoff and full jitter (or the server's Retry-After), then raised as ``_Transient``."""
        import httpx

        attempt = 0
        while True:
            self.stats.requests += 1
            try:
                response = await client.request(method, url, json=body, headers=self._headers())
                if response.status_code in _RETRY_STATUS:
                    raise _Transient(
                        f"HTTP {response.status_code}: {_server_message(response)}", _retry_after(response)
                    )
                if response.status_code >= 400:
                    raise _Fatal(f"HTTP {response.status_code}: {_server_message(response)}")
                try:
                    data = response.json()
                except ValueError as err:
                    raise _Transient(f"unreadable JSON in the response ({err})") from None
                if not isinstance(data, dict):
                    raise _Transient("the response is JSON but not an object")
                return data
            except httpx.TimeoutException:
                error = _Transient(f"no response within timeout {self.row.timeout} s")
            except httpx.TransportError as err:
                error = _Transient(f"connection failed ({type(err).__name__}: {err or 'no detail'})")
            except _Transient as err:
                error = err
            if attempt >= self.row.max_retries:
                raise _Transient(f"{error} (after {attempt} retries)")
            delay = error.retry_after
            if delay is None:
                delay = random.uniform(0, min(_MAX_BACKOFF_S, self.row.backoff * 2**attempt))
            attempt += 1
            self.stats.retries += 1
            self.stats.retried.append(str(error))
            await asyncio.sleep(delay)

    async def _model_card(self, client: httpx.AsyncClient) -> dict[str, Any]:
        """The served model's entry in ``/models``: it exists, and (vLLM) its context length."""
        url = f"{self.row.base_url}/models"
        try:
            listing = await self._request(client, "GET", url)
        except (_Transient, _Fatal) as err:
            raise UserError(
                f"model {self.row.name!r}: cannot reach {url}: {err}; start the server or fix base_url"
            ) from None
        cards = [c for c in listing.get("data", []) if isinstance(c, dict)]
        served = [str(c.get("id")) for c in cards]
        if served and self.row.model not in served:
            raise UserError(
                f"model {self.row.name!r}: the server at {self.row.base_url} does not serve "
                f"{self.row.model!r}; it serves {', '.join(served)} (fix `model`)"
            )
        return next((c for c in cards if c.get("id") == self.row.model), {})

    def _note(self, key: str, value: str) -> None:
        """Record a server fact; the provenance already handed out is completed in place, because the
        runner asks for it before generating and the fingerprint arrives with the responses."""
        self._facts[key] = value
        if self._provenance is not None:
            self._provenance.extra[key] = value

    def _seen(self, data: dict[str, Any]) -> None:
        if "model" in data:
            self._note("server_model", str(data["model"]))
        if data.get("system_fingerprint"):
            self._note("system_fingerprint", str(data["system_fingerprint"]))

    async def _gather(
        self,
        jobs: list[tuple[int, Callable[[], Awaitable[T]]]],
        on_done: Callable[[int, T], None],
    ) -> None:
        """Run ``(index, job)`` pairs, at most ``max_concurrency`` at once, reporting each as it
        finishes; the first uncaught error cancels the rest (finished ones are already reported)."""
        limit = asyncio.Semaphore(self.row.max_concurrency)

        async def one(index: int, job: Callable[[], Awaitable[T]]) -> None:
            async with limit:
                result = await job()
            on_done(index, result)

        tasks = [asyncio.ensure_future(one(i, job)) for i, job in jobs]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- generation ---------------------------------------------------------------------------------

    def _body(self, prompt: str | list[int], settings: GenerationSettings, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.row.model, "max_tokens": settings.max_new_tokens, "seed": seed}
        if settings.do_sample:
            body.update(temperature=settings.temperature, top_p=settings.top_p)
        else:
            body.update(temperature=0.0, top_p=1.0)
        if settings.stop:
            body["stop"] = list(settings.stop)
        if self.row.endpoint == "chat":
            messages = [{"role": "system", "content": self.row.system}] if self.row.system else []
            body["messages"] = [*messages, {"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return {**body, **self.row.extra_body}

    def _text(self, data: dict[str, Any]) -> tuple[str, int]:
        """(continuation, generated tokens) of a response; a wrong shape is not retried."""
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] if self.row.endpoint == "chat" else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise _Fatal(f"the response has no choices[0] text: {json.dumps(data)[:200]}") from None
        usage = data.get("usage") or {}
        return str(text or ""), int(usage.get("completion_tokens") or 0)

    def generate(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        on_batch: BatchCallback | None = None,
        skip: set[int] | None = None,
        *,
        seeds: Sequence[int] | None = None,
    ) -> list[str]:
        """Continuations in prompt order, reported through ``on_batch`` in order of arrival
        (``batch_size`` at a time); ``skip`` indices are never sent. Each request carries its prompt's
        seed (``seeds``, see ``Backend.generate``), whatever the concurrency or shard.

        A sample that still fails after ``max_retries``: ``on_error: fail`` raises a UserError naming
        it (the finished ones are already reported, so ``--resume`` sends only the rest);
        ``on_error: record`` gives it an empty prediction, lists it in a warning and provenance and
        in ``on_batch``'s ``failed``, so it is logged but never cached.
        """
        skip = skip or set()
        row_seeds = prompt_seeds(prompts, settings, seeds)
        results = [""] * len(prompts)
        url = f"{self.row.base_url}/{'chat/completions' if self.row.endpoint == 'chat' else 'completions'}"
        fitted = self._fitted(prompts, settings)
        pending: list[tuple[int, str, int]] = []
        failed: dict[int, str] = {}

        def flush() -> None:
            if pending and on_batch is not None:
                indices = [i for i, _, _ in pending]
                texts, tokens = [t for _, t, _ in pending], sum(n for *_, n in pending)
                recorded = [i for i in indices if i in failed]
                if recorded:
                    on_batch(indices, texts, tokens, failed=recorded)
                else:
                    on_batch(indices, texts, tokens)
            pending.clear()

        def done(index: int, outcome: tuple[str, int] | str) -> None:
            if isinstance(outcome, str):  # the reason a recorded failure failed
                failed[index] = outcome
                outcome = ("", 0)
            text, tokens = outcome
            results[index] = _cut_at_stop(text, settings.stop)
            pending.append((index, results[index], tokens))
            if len(pending) >= self.row.batch_size:
                flush()

        async def main(client: httpx.AsyncClient) -> None:
            def job(index: int) -> Callable[[], Awaitable[tuple[str, int] | str]]:
                async def send() -> tuple[str, int] | str:
                    try:
                        data = await self._request(
                            client, "POST", url, self._body(fitted[index], settings, row_seeds[index])
                        )
                        self._seen(data)
                        return self._text(data)
                    except (_Transient, _Fatal) as err:
                        if self.row.on_error == "record":
                            return str(err)
                        raise UserError(
                            f"model {self.row.name!r}: prompt {index} failed: {err}; finished samples "
                            "are saved, rerun with --resume to send only the rest (or set on_error: record)"
                        ) from None

                return send

            await self._gather([(i, job(i)) for i in range(len(prompts)) if i not in skip], done)

        try:
            self._run(main)
        finally:
            flush()
            if failed:
                self.stats.failed += len(failed)
                self._note("failed_samples", str(self.stats.failed))
                first = "; ".join(f"prompt {i}: {failed[i]}" for i in sorted(failed)[:3])
                warnings.warn(
                    f"{self.row.name}: {len(failed)} of {len(prompts) - len(skip)} requests failed and are "
                    "recorded as empty predictions "
                    f"(on_error: record); prompts {sorted(failed)}; {first}",
                    stacklevel=2,
                )
        return results

    def _fitted(self, prompts: Sequence[str], settings: GenerationSettings) -> list[str | list[int]]:
        """Prompts as sent: a completions prompt too long for the context is cut from the left in
        tokens (the HF backend's rule) and sent as token ids; the rest go as text."""
        room = self._room(settings)
        if room is None or self.row.endpoint == "chat":
            return list(prompts)
        ids = self._tokenize(prompts, special=True)
        return [p if len(t) <= room else t[-room:] for p, t in zip(prompts, ids, strict=True)]

    def _room(self, settings: GenerationSettings) -> int | None:
        """Prompt tokens that fit beside ``max_new_tokens``; None when the server's context or
        tokenizer is unknown (the server then rejects what does not fit)."""
        if self._context is None or not self.row.logprobs:
            return None
        return prompt_room(self._context, settings, self.row.model)

    def truncated_prompts(self, prompts: Sequence[str], settings: GenerationSettings) -> int:
        room = self._room(settings)
        if room is None or self.row.endpoint == "chat":
            return 0
        return sum(len(ids) > room for ids in self._tokenize(prompts, special=True))

    # -- tokens and log-likelihood ------------------------------------------------------------------

    def _tokenize(self, texts: Sequence[str], special: bool = False) -> list[list[int]]:
        """Token ids of each text from the server's ``/tokenize`` (vLLM, SGLang); ``special`` adds what
        the tokenizer adds to a prompt (BOS), as a text prompt gets."""
        url = f"{self._root}/tokenize"

        async def main(client: httpx.AsyncClient) -> list[list[int]]:
            out: list[list[int]] = [[] for _ in texts]

            async def one(text: str) -> list[int]:
                if not text and not special:
                    return []
                body = {"model": self.row.model, "prompt": text, "add_special_tokens": special}
                return await self._tokens(client, url, body)

            def put(i: int, ids: list[int]) -> None:
                out[i] = ids

            await self._gather([(i, lambda t=t: one(t)) for i, t in enumerate(texts)], put)
            return out

        return self._run(main)

    async def _tokens(self, client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> list[int]:
        try:
            data = await self._request(client, "POST", url, body)
        except (_Transient, _Fatal) as err:
            raise UserError(
                f"model {self.row.name!r}: {url} failed ({err}); the server cannot tokenize, so scoring "
                "and prompt fitting are unavailable: set `logprobs: false` on this row"
            ) from None
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise UserError(f"model {self.row.name!r}: {url} returned no `tokens`; set `logprobs: false`")
        return [int(t) for t in tokens]

    def _start_id(self) -> int:
        """The id ``prepend_bos`` puts first, as the HF backend does (BOS, else EOS): ``bos_token``
        when set, else what the server's tokenizer adds to an empty prompt, else the BOS/EOS text
        of ``/tokenizer_info`` (vLLM with ``--enable-tokenizer-info-endpoint``)."""
        if self._bos_id is not None:
            return self._bos_id
        text = self.row.bos_token

        async def main(client: httpx.AsyncClient) -> int | None:
            url = f"{self._root}/tokenize"
            if text is not None:
                body = {"model": self.row.model, "prompt": text, "add_special_tokens": False}
                ids = await self._tokens(client, url, body)
                if len(ids) != 1:
                    raise UserError(
                        f"model {self.row.name!r}: bos_token {text!r} is {len(ids)} tokens for the "
                        "server's tokenizer, not one; give the BOS (or EOS) token's exact text"
                    )
                return ids[0]
            ids = await self._tokens(
                client, url, {"model": self.row.model, "prompt": "", "add_special_tokens": True}
            )
            if len(ids) == 1:
                return ids[0]
            try:
                info = await self._request(client, "GET", f"{self._root}/tokenizer_info")
            except (_Transient, _Fatal):
                return None
            for key in ("bos_token", "eos_token"):
                token = info.get(key)
                token = token.get("content") if isinstance(token, dict) else token
                if isinstance(token, str) and token:
                    body = {"model": self.row.model, "prompt": token, "add_special_tokens": False}
                    found = await self._tokens(client, url, body)
                    if len(found) == 1:
                        return found[0]
            return None

        start = self._run(main)
        if start is None:
            raise UserError(
                f"model {self.row.name!r}: the server does not say its BOS token; set `bos_token` on the row "
                "(e.g. '<|endoftext|>' for GPT-2) or `prepend_bos: false` on the metric"
            )
        self._bos_id = start
        return start

    def loglikelihood(
        self,
        texts: Sequence[str],
        max_length: int | None = None,
        stride: int | None = None,
        prepend_bos: bool = True,
        contexts: Sequence[str] | None = None,
        per_token: bool = False,
    ) -> list[TokenLogLikelihood]:
        """Summed NLL per text from prompt logprobs, with the HF backend's windows, BOS and context
        rules (token counts from ``/tokenize``, never ``text_offset``), so the two agree."""
        if not self.row.logprobs:
            raise UserError(
                f"model {self.row.name!r} has `logprobs: false`, so it cannot score texts; name a scoring "
                "model with the metric's `model:`"
            )
        # An echo request still generates one token, which vLLM counts against max_model_len.
        limit = self._context - 1 if self._context is not None else None
        max_length = max_length or limit
        if max_length is None:
            raise UserError(f"the server does not state the context of {self.row.model!r}; set `max_length`")
        if max_length < 2 or (limit is not None and max_length > limit):
            raise UserError(
                f"max_length {max_length} must be between 2 and {limit}: the server's context "
                f"({self._context}) less the one token an echo request generates"
            )
        stride = stride or max_length
        if stride < 1:
            raise UserError(f"stride must be at least 1, got {stride}")
        prefix = [self._start_id()] if prepend_bos else []
        contexts = list(contexts) if contexts else [""] * len(texts)
        joined = self._tokenize([c + t for c, t in zip(contexts, texts, strict=True)])
        context_ids = self._tokenize(contexts)
        windows: list[tuple[int, int, list[int], int]] = []  # (text, window, ids, context-only positions)
        for number, (ids, ctx) in enumerate(zip(joined, context_ids, strict=True)):
            seq = prefix + ids
            first = max(1, len(prefix) + len(ctx))
            parts = _windows(seq, max_length, stride, first)
            windows += [(number, part, w, c) for part, (w, c) in enumerate(parts)]
        url = f"{self.row.base_url}/completions"
        scored: dict[tuple[int, int], list[float]] = {}

        async def main(client: httpx.AsyncClient) -> None:
            def job(ids: list[int], context: int) -> Callable[[], Awaitable[list[float]]]:
                async def send() -> list[float]:
                    body = {
                        "model": self.row.model,
                        "prompt": ids,
                        "echo": True,
                        "logprobs": 1,
                        "max_tokens": 0,
                        "temperature": 0.0,
                    }
                    try:
                        data = await self._request(client, "POST", url, body)
                    except (_Transient, _Fatal) as err:
                        raise UserError(
                            f"model {self.row.name!r}: scoring request failed: {err}; if the server "
                            "cannot echo prompt logprobs, set `logprobs: false`"
                        ) from None
                    self._seen(data)
                    return self._prompt_nll(data, len(ids), context)

                return send

            def put(position: int, values: list[float]) -> None:
                scored[windows[position][:2]] = values

            await self._gather([(p, job(w[2], w[3])) for p, w in enumerate(windows)], put)

        if windows:
            self._run(main)
        per_text: list[list[float]] = [[] for _ in texts]
        for key in sorted(scored):
            per_text[key[0]] += scored[key]
        return [TokenLogLikelihood(sum(v), len(v), tuple(v) if per_token else None) for v in per_text]

    def _prompt_nll(self, data: dict[str, Any], length: int, context: int) -> list[float]:
        """NLL of positions ``context..length-1`` from an echoed prompt's token logprobs."""
        try:
            values = data["choices"][0]["logprobs"]["token_logprobs"]
        except (KeyError, IndexError, TypeError):
            values = None
        if (
            not isinstance(values, list)
            or len(values) < length
            or any(v is None for v in values[context:length])
        ):
            raise UserError(
                f"model {self.row.name!r}: the server returned no prompt logprobs for an echoed prompt "
                f"(`echo: true, logprobs: 1, max_tokens: 0`); set `logprobs: false` on this row"
            )
        return [-float(v) for v in values[context:length]]

    def count_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(ids) for ids in self._tokenize(texts))

    def context_length(self) -> int | None:
        return self._context

    def cache_identity(self) -> dict[str, Any]:
        """The served model id, a hash of its ``/models`` entry (id, root, parent, max_model_len,
        owned_by), the endpoint kind and the row options that change the request (system prompt,
        ``extra_body``) or its truncation (``logprobs``: prompts are cut only with a tokenizer);
        not the base URL, key, concurrency, retries or batch size."""
        card = json.dumps(self._card, sort_keys=True, ensure_ascii=False)
        return {
            "backend": "openai",
            "model": self.row.model,
            "server_model_sha256": hashlib.sha256(card.encode()).hexdigest(),
            "endpoint": self.row.endpoint,
            "system": self.row.system if self.row.endpoint == "chat" else None,
            "extra_body": self.row.extra_body,
            "logprobs": self.row.logprobs,
        }

    def describe(self) -> Provenance:
        """Provenance: the served model and what the server said about itself, never the key."""
        extra = {"base_url": self.row.base_url, "endpoint": self.row.endpoint, **self._facts}
        self._provenance = Provenance(
            backend="openai", model=self.row.model, context_length=self._context, extra=extra
        )
        return self._provenance


def wait_until_ready(base_url: str, timeout: float = 180.0) -> float:
    """Poll ``{base_url}/models`` until the server answers (seconds waited); for scripts and tests
    that start a server themselves. A UserError when it does not answer within ``timeout``."""
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(f"{base_url.rstrip('/')}/models", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise UserError(f"no server answered at {base_url}/models within {timeout:.0f} s")
