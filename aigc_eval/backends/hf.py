"""Local Hugging Face transformers backend: batched generation and sliding-window log-likelihood.

Longer than ~400 lines because a backend is one file (the plug-in rule): its row options, its
capabilities, its plan-time folder checks, loading, generation, log-likelihood and provenance.
torch is imported when a backend is created (to pick the device); transformers only when a
tokenizer, config or model loads, which a rerun whose every generation and log-likelihood is
cached never does: what it needs from them (context length, truncated-prompt counts, the fused-GELU
count) comes from the cache, keyed by the files it was derived from (``derived_from_files``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from aigc_eval.backends import backends
from aigc_eval.backends.base import (
    CONTEXT_KEYS,
    Backend,
    BatchCallback,
    Capabilities,
    GenerationSettings,
    TokenLogLikelihood,
    prompt_room,
    prompt_seeds,
)
from aigc_eval.config import Device, ModelRow, local_path, looks_like_path
from aigc_eval.errors import UserError
from aigc_eval.files import resolve_device, sha256_files
from aigc_eval.record import Provenance

if TYPE_CHECKING:
    import torch
    import transformers
    from safetensors import SafetensorError
    from transformers import GenerationConfig

    from aigc_eval.cache import GenerationCache

_DTYPES = ("float32", "bfloat16", "float16")
T = TypeVar("T")
R = TypeVar("R")
W = TypeVar("W", bound=tuple)
# Scored positions per float32 log-softmax chunk: 4,096 x a 150k vocabulary is 2.5 GB.
_NLL_CHUNK = 4096
# Any one of these makes a folder's tokenizer loadable (fast tokenizer, slow vocabularies, sentencepiece).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
# Every file a tokenizer may be loaded from (what its identity hashes); chat templates saved on
# their own (chat_template.jinja) are hashed apart, only for rows that use them.
_TOKENIZER_STATE = (*TOKENIZER_FILES, "merges.txt", "special_tokens_map.json", "added_tokens.json")
# The model's architecture and the generation defaults ``generate`` falls back on.
_CONFIG_FILES = ("config.json", "generation_config.json")
_TRUE = ("1", "true", "yes", "on")


class HFRow(ModelRow):
    """An ``hf`` row: a transformers causal LM (local folder or hub id) and its decoding settings.

    Field names and defaults are those of the single-backend schema (``device_map`` is dumped only
    when set), so a row's JSON dump, the suite's config hash and the generation logs' resume keys
    are unchanged.
    """

    backend: Literal["hf"] = "hf"
    path: str = Field(description="a local model folder or a hub id")
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Device = "auto"
    # accelerate spreads the layers over the GPUs (then CPU memory) that are there; instead of `device`.
    device_map: Literal["auto"] | None = None
    batch_size: int = Field(8, ge=1)
    trust_remote_code: bool = False
    chat: bool = False
    system: str | None = None
    # PyTorch's fused tanh-GELU for GPT-2-style activations: same function up to float rounding.
    fused_activations: bool = True
    generation: GenerationSettings = Field(default_factory=GenerationSettings)

    path_fields = ("path",)

    @model_validator(mode="after")
    def _one_placement(self) -> HFRow:
        if self.device_map is not None and self.device != "auto":
            raise ValueError(
                f"device_map: {self.device_map!r} places the model itself, so it cannot go with "
                f"device: {self.device!r}; remove one of the two"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out while unset, so rows written before device_map existed keep their dump, the
        # suite's config hash and their generation logs' resume keys.
        data = handler(self)
        if self.device_map is None:
            data.pop("device_map", None)
        return data


def _looks_local(path: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a folder."""
    return Path(path).expanduser().exists() or path.startswith((".", "/", "~")) or path.count("/") > 1


def _pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    import torch

    if dtype == "auto":
        # bf16 halves memory on GPUs that support it; fp32 elsewhere keeps CPU scores exact.
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"dtype {dtype!r} is not supported; use auto, {', '.join(_DTYPES)}")
    return getattr(torch, dtype)


def _is_oom(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err)
    )


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif torch.backends.mps.is_available():
        torch.mps.empty_cache()


def _halving_on_oom(items: list[T], run: Callable[[list[T]], list[R]]) -> list[R]:
    """Run ``items`` as one batch; on out-of-memory retry it in halves, down to single items."""
    try:
        return run(items)
    except RuntimeError as err:
        if not _is_oom(err) or len(items) == 1:
            raise
    _empty_cache()
    half = len(items) // 2
    return _halving_on_oom(items[:half], run) + _halving_on_oom(items[half:], run)


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(cuts)] if cuts else text


def _windows(
    seq: list[int], max_length: int, stride: int, first_scored: int = 1
) -> list[tuple[list[int], int]]:
    """Split ``seq`` into (window ids, leading context-only positions); positions ``first_scored``..
    are each scored once (earlier positions are BOS or a conditioning context).

    The transformers docs' sliding-window recipe: windows start ``stride`` tokens apart, each holds
    up to ``max_length`` tokens and scores those after the previous window's end, so every scored
    token outside the first window sees at least ``max_length - stride`` tokens of context. A token
    needs one token before it inside its window, so the step is capped at ``max_length - 1``
    (``stride == max_length``: disjoint windows that each reuse one token as context).
    """
    step = min(stride, max_length - 1)
    windows = []
    scored_until = first_scored
    end = min(max(first_scored + step, max_length), len(seq))
    begin = max(0, end - max_length)
    while scored_until < len(seq):
        windows.append((seq[begin:end], scored_until - begin))
        scored_until, begin = end, begin + step
        end = min(begin + max_length, len(seq))
    return windows


def _width_batches(windows: list[W], size: int) -> Iterator[list[W]]:
    """Batches of longest-first windows, cut early where a window is under half the batch's width,
    so short windows are not padded to a long one's length."""
    batch: list[W] = []
    for window in windows:
        if batch and (len(batch) == size or 2 * len(window[1]) < len(batch[0][1])):
            yield batch
            batch = []
        batch.append(window)
    if batch:
        yield batch


def fuse_activations(model: torch.nn.Module) -> int:
    """Swap Python-composed tanh-GELUs (GPT-2's ``gelu_new``, ``gelu_fast``) for PyTorch's fused kernel.

    They compute the same function; transformers documents ``GELUTanh`` as their faster equivalent,
    equal up to float rounding. Composed of five element-wise passes, the activation took about a
    fifth of a GPT-2 forward on a CPU. Returns how many modules were swapped.
    """
    from transformers.activations import FastGELUActivation, GELUTanh, NewGELUActivation

    swapped = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, (NewGELUActivation, FastGELUActivation)):
                setattr(parent, name, GELUTanh())
                swapped += 1
    return swapped


def _generated_lengths(new_tokens: torch.Tensor, eos: int | list[int] | None, pad: int | None) -> list[int]:
    """Tokens each row actually generated: up to and including its first EOS; the padding that
    ``generate`` appends after a row finished (EOS or a stop string) is not generated text."""
    import torch

    width = new_tokens.shape[1]
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    is_eos = torch.isin(new_tokens, torch.tensor(eos_ids, dtype=new_tokens.dtype))
    is_pad = (new_tokens == pad) & ~is_eos if pad is not None else torch.zeros_like(is_eos)
    positions = torch.arange(width).expand_as(new_tokens)
    first_eos = torch.where(is_eos, positions, width).min(dim=1).values
    first_pad = torch.where(is_pad, positions, width).min(dim=1).values
    return torch.minimum(first_eos + 1, first_pad).clamp(max=width).tolist()


def _weight_files(folder: Path) -> list[Path]:
    """The weights transformers would load: safetensors when present, else pickled ``.bin``."""
    files = sorted(folder.glob("*.safetensors"))
    return files or sorted(folder.glob("*.bin"))


def _weight_files_of(folder: Path | None) -> list[Path]:
    return _weight_files(folder) if folder is not None else []


def weights_sha256(folder: Path | None) -> str:
    """sha256 over the weight files' bytes in sorted name order ("unknown" without a folder)."""
    files = _weight_files_of(folder)
    return sha256_files(files) if files else "unknown"


def _text_sha256(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _named_sha256(files: Sequence[Path]) -> str | None:
    """One hash of several files by name and content (not their folder); None when there are none."""
    found = [f for f in files if f.is_file()]
    return _text_sha256({f.name: sha256_files([f]) for f in found}) if found else None


def folder_identity(folder: Path | None, trust_remote_code: bool) -> dict[str, str | None]:
    """Hashes of what decides a model folder's outputs besides its weights, independent of where the
    folder is: config and generation defaults, tokenizer files, and the model code it ships when
    that code runs (``trust_remote_code``)."""
    if folder is None:
        return {"config_sha256": None, "tokenizer_sha256": None, "code_sha256": None}
    code = sorted(folder.glob("*.py")) if trust_remote_code else []
    return {
        "config_sha256": _named_sha256([folder / name for name in _CONFIG_FILES]),
        "tokenizer_sha256": _named_sha256([folder / name for name in _TOKENIZER_STATE]),
        "code_sha256": _named_sha256(code),
    }


def _transformers_version() -> str:
    """transformers' version without importing it (about a second)."""
    return importlib.metadata.version("transformers")


def derived_from_files(
    cache: GenerationCache | None,
    folder: Path | None,
    trust_remote_code: bool,
    kind: str,
    compute: Callable[[], Any],
    label: str,
    **inputs: Any,
) -> Any:
    """A JSON value a backend derives from its model folder (and ``inputs``: library versions,
    options), kept in ``cache`` by the folder's hashes (``folder_identity``), so a rerun reads it
    instead of loading what computes it; computed every time without a cache or a local folder."""
    from aigc_eval.cache import derived_key

    if cache is None or folder is None:
        return compute()
    key = derived_key(kind, {**folder_identity(folder, trust_remote_code), **inputs})
    found = cache.get_many([key]).get(key)
    if found is not None:
        return json.loads(found.text)
    value = compute()
    cache.put_many([(key, json.dumps(value), None, f"{label} {kind}")])
    return value


def chat_template_sha256(tokenizer: transformers.PreTrainedTokenizerBase) -> str:
    """Hash of the chat template a chat row renders its prompts with (a string or named templates)."""
    return _text_sha256(tokenizer.chat_template)


def _placement(model: torch.nn.Module) -> dict[str, str]:
    """Where each part of the model is: accelerate's map when it spread the model over several devices
    (it sets ``hf_device_map`` only then), else ``{"": its one device}``."""
    import torch

    placed = getattr(model, "hf_device_map", None)
    if not placed:
        return {"": str(model.device)}
    return {
        name: value if isinstance(value, str) else str(torch.device(value)) for name, value in placed.items()
    }


def _fusable_activations(config: transformers.PretrainedConfig, trust_remote_code: bool) -> int:
    """How many modules ``fuse_activations`` would swap in this architecture, counted on an empty
    (meta-device) instance: no weights are read or allocated."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return fuse_activations(skeleton)


def _device_types(model: torch.nn.Module) -> str:
    """The kinds of device the model computes on ("cpu", "cuda", "cpu+cuda" when offloaded): float
    results differ between kinds, not between two GPUs of one kind."""
    return "+".join(sorted({device.split(":")[0] for device in _placement(model).values()}))


class SeededSampler:
    """Multinomial sampling with one ``torch.Generator`` per batch row, as a logits processor.

    ``generate`` runs greedy with this processor last: it applies transformers' own temperature,
    top-k and top-p warpers (the order and ``min_tokens_to_keep`` its sampling uses without beams)
    after the other processors (repetition penalty...), draws one token per row from that row's
    generator (seeded with its example seed, on the logits' device) and returns scores that are
    -inf but at the drawn token, which greedy selection then picks. Every row draws exactly once
    per step from its own generator, so its k-th token is its k-th draw whatever its batch-mates
    are; rows that finished keep drawing, but their tokens are replaced by padding and touch no
    other row's generator. At batch size 1 it draws what transformers' ``do_sample=True`` draws
    after ``torch.manual_seed(seed)``.
    """

    def __init__(self, seeds: Sequence[int], settings: GenerationSettings) -> None:
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.seeds = list(seeds)
        self.warpers: list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = []
        if settings.temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k != 0:
            self.warpers.append(TopKLogitsWarper(top_k=settings.top_k, min_tokens_to_keep=1))
        if settings.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=settings.top_p, min_tokens_to_keep=1))
        self.generators: list[torch.Generator] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        if not self.generators:
            self.generators = [torch.Generator(scores.device).manual_seed(s) for s in self.seeds]
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{scores.shape[0]} rows of scores for {len(self.generators)} seeds")
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probs = torch.softmax(scores, dim=-1)
        # torch.multinomial's own one-sample draw (argmax of p / Exp(1) noise), the noise of each row
        # from its generator: same tokens as a multinomial call per row, without its per-call checks.
        noise = torch.empty_like(probs)
        for row, generator in zip(noise, self.generators, strict=True):
            row.exponential_(generator=generator)
        drawn = (probs / noise).argmax(dim=-1, keepdim=True)
        return torch.full_like(scores, float("-inf")).scatter_(1, drawn, 0.0)


# -- plan-time checks (no weights read) -------------------------------------------------------------


def context_length(folder: Path) -> int | None:
    """The model's context from its ``config.json`` (what ``HFBackend.context_length`` reports)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in CONTEXT_KEYS:
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_model_folder(folder: Path, where: str) -> None:
    """A local model folder has a config, a tokenizer and weights; without a tokenizer transformers
    used to load one that produced empty outputs for every prompt (every score 0, exit 0)."""
    if not folder.is_dir():
        raise UserError(f"{where}: {folder} is a file; give the model's folder")
    if not (folder / "config.json").is_file():
        raise UserError(f"{where}: {folder} has no config.json, so it is not a transformers model folder")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(
            f"{where}: {folder} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer there too (tokenizer.save_pretrained(folder))"
        )
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise UserError(
            f"{where}: {folder} has no weights (*.safetensors or *.bin); save the model there "
            "(model.save_pretrained(folder))"
        )


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


def _cached_hub_folder(model_id: str, revision: str | None) -> Path | None:
    """The local snapshot of a hub model, if its config was ever downloaded."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def model_folder(row: HFRow, base_dir: Path, where: str) -> Path | None:
    """The checked local folder of an ``hf`` row (a cached hub snapshot counts), or None for a hub id
    that will be downloaded. A path that is not there says so, instead of a hub connection error."""
    local = local_path(row.path, base_dir)
    if local.exists():
        check_model_folder(local, where)
        return local
    # `models/x` where `models/` exists: a mistyped folder, not the hub model `models/x`.
    first = Path(row.path).parts[0] if Path(row.path).parts else ""
    if looks_like_path(row.path) or ("/" in row.path and (base_dir / first).is_dir()):
        raise UserError(
            f"{where}: folder not found: {row.path!r} (relative paths resolve against {base_dir}); "
            "fix the path"
        )
    cached = _cached_hub_folder(row.path, row.revision)
    if cached is None and _hub_offline():
        raise UserError(
            f"{where}: {row.path!r} is no folder in {base_dir} and not in the Hugging Face cache, and "
            "HF_HUB_OFFLINE is set, so it cannot be downloaded; fix the path or unset HF_HUB_OFFLINE"
        )
    return cached


# -- the backend ------------------------------------------------------------------------------------


@backends.register("hf")
class HFBackend(Backend):
    """A causal LM loaded once with transformers."""

    Options = HFRow
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
        assert isinstance(row, HFRow), f"an hf row, not {type(row).__name__}"
        self.row = row
        self.path = row.path
        self.revision = row.revision
        self.batch_size = row.batch_size
        self.chat = row.chat
        self.system = row.system
        self.device_map = row.device_map
        # With a device map, inputs go to the model's first device (set once it is placed).
        self.device = resolve_device(row.device)
        self.dtype = _pick_dtype(row.dtype, self.device)
        self._local = _looks_local(row.path)
        self._folder = Path(row.path).expanduser()
        if self._local and not self._folder.exists():
            raise UserError(
                f"model folder {row.path!r} does not exist; fix `path`, or give a hub id such as 'org/name'"
            )
        if self._local:
            check_model_folder(self._folder, f"model {row.path!r}")
        if self.device_map is not None and importlib.util.find_spec("accelerate") is None:
            raise UserError(f"device_map: {self.device_map!r} needs accelerate; pip install accelerate")
        self._tokenizer: transformers.PreTrainedTokenizerBase | None = None
        self._config: transformers.PretrainedConfig | None = None
        self._context: tuple[int | None] | None = None
        self._model: torch.nn.Module | None = None
        self._fused: int | None = None
        self._cache: GenerationCache | None = None
        self._keeps_logits = False
        self._weights_sha256: str | None = None
        self._identity: dict[str, Any] | None = None
        # Loaded now: a chat row's template (missing is an error; the identity hashes it), and a hub
        # id not in the local cache (downloads, or fails with a clear error, before any work).
        if self.chat or (not self._local and self._snapshot()[0] is None):
            self.tokenizer  # noqa: B018
        if self.device_map is not None:
            self._load_model()  # accelerate's placement decides where inputs go: needed now

    @property
    def tokenizer(self) -> transformers.PreTrainedTokenizerBase:
        """The tokenizer (left padding), loaded on first use."""
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    @property
    def config(self) -> transformers.PretrainedConfig:
        """The model's config as transformers reads it, loaded on first use."""
        if self._config is None:
            self._config = self._load_config()
        return self._config

    @property
    def model(self) -> torch.nn.Module:
        """The network, loaded on first use: a run whose every generation and log-likelihood is
        cached (an unchanged rerun) never reads the weights."""
        if self._model is None:
            self._load_model()
        assert self._model is not None
        return self._model

    @property
    def fused_activations(self) -> int:
        """How many tanh-GELUs run as PyTorch's fused kernel (``fuse_activations``); before the
        weights load, counted on an empty (meta-device) copy of the architecture."""
        if not self.row.fused_activations:
            return 0
        if self._fused is None:
            self._fused = self._counted_fusable_activations()
        return self._fused

    def use_cache(self, cache: GenerationCache) -> None:
        self._cache = cache

    def _derived(self, kind: str, compute: Callable[[], Any], **inputs: Any) -> Any:
        """``derived_from_files`` for this model: what needs transformers (a second to import), the
        tokenizer or the model's code to compute, which an unchanged rerun should not pay for."""
        return derived_from_files(
            self._cache,
            self._snapshot()[0],
            self.row.trust_remote_code,
            kind,
            compute,
            f"hf:{self.path}",
            transformers=_transformers_version(),
            **inputs,
        )

    def _counted_fusable_activations(self) -> int:
        """Counted on the meta-device skeleton (which imports the modeling code: over a second)."""
        return int(self._derived("fusable_activations", self._skeleton_count))

    def _skeleton_count(self) -> int:
        try:
            return _fusable_activations(self.config, self.row.trust_remote_code)
        except Exception:  # any architecture that cannot be built on the meta device (custom code...)
            self._load_model()  # counts on the model itself, which a first run loads anyway
            assert self._fused is not None
            return self._fused

    @classmethod
    def check_row(cls, row: ModelRow, base_dir: Path, where: Callable[[str], str]) -> int | None:
        """The model folder (or cached hub snapshot) is complete; its context from ``config.json``."""
        assert isinstance(row, HFRow)
        folder = model_folder(row, base_dir, where("path"))
        return context_length(folder) if folder is not None else None

    def _load_config(self) -> transformers.PretrainedConfig:
        from transformers import AutoConfig

        with self._load_errors():
            return AutoConfig.from_pretrained(
                self.path, revision=self.revision, trust_remote_code=self.row.trust_remote_code
            )

    def _load_tokenizer(self) -> transformers.PreTrainedTokenizerBase:
        from transformers import AutoTokenizer

        with self._load_errors():
            tokenizer = AutoTokenizer.from_pretrained(
                self.path,
                padding_side="left",
                revision=self.revision,
                trust_remote_code=self.row.trust_remote_code,
            )
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise UserError(f"tokenizer of {self.path!r} has neither a pad nor an eos token; add one")
            tokenizer.pad_token = tokenizer.eos_token
        if self.chat and not tokenizer.chat_template:
            raise UserError(f"model {self.path!r} has no chat template; set `chat: false`")
        return tokenizer

    def _load_model(self) -> None:
        from transformers import AutoModelForCausalLM

        safetensors = True if self._local and any(self._folder.glob("*.safetensors")) else None
        mapped = {"device_map": self.device_map} if self.device_map is not None else {}
        with self._load_errors():
            model = AutoModelForCausalLM.from_pretrained(
                self.path,
                config=self.config,
                dtype=self.dtype,
                use_safetensors=safetensors,
                revision=self.revision,
                trust_remote_code=self.row.trust_remote_code,
                **mapped,
            )
        if mapped:
            self.device = model.device  # where the input embeddings are, so where inputs go
        else:
            model = model.to(self.device)
        self._fused = fuse_activations(model) if self.row.fused_activations else 0
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._model = model.eval()

    @contextmanager
    def _load_errors(self) -> Iterator[None]:
        """A damaged weights file, a missing file or an unreachable hub id as one ``UserError``."""
        from safetensors import SafetensorError

        try:
            yield
        except SafetensorError as err:
            raise self._corrupt_weights(err) from err
        except (OSError, ValueError) as err:
            reason = " ".join(str(err).split())
            where = "the folder" if self._local else "the hub id, revision and network (or HF_HUB_OFFLINE)"
            raise UserError(f"cannot load model {self.path!r}: {reason} (check {where})") from err

    def _corrupt_weights(self, err: SafetensorError) -> UserError:
        """A truncated or damaged safetensors file (an interrupted download or save), named."""
        from safetensors import SafetensorError, safe_open

        folder, _ = self._snapshot()
        files = sorted(folder.glob("*.safetensors")) if folder is not None else []
        bad = []
        for file in files:
            try:
                with safe_open(file, "pt"):
                    pass
            except SafetensorError:
                bad.append(file)
        named = ", ".join(map(str, bad or files)) or f"the safetensors weights of {self.path!r}"
        return UserError(
            f"{named}: corrupt or truncated weights file ({err}); re-download the model, "
            "or re-save it with save_pretrained"
        )

    # -- generation ---------------------------------------------------------------------------------

    def _prompt_ids(self, prompt: str) -> list[int]:
        if self.chat:
            messages = [{"role": "system", "content": self.system}] if self.system else []
            messages.append({"role": "user", "content": prompt})
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            # The template writes its own special tokens (BOS etc.); adding them again would double them.
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(prompt)["input_ids"]
        # generate() needs at least one input token; an empty prompt starts from BOS/EOS.
        return ids or [self._start_id()]

    def _start_id(self) -> int:
        start = self.tokenizer.bos_token_id
        return start if start is not None else self.tokenizer.eos_token_id

    def _generation_config(self, settings: GenerationSettings) -> GenerationConfig:
        """Decoding is set from ``settings``; fields left unset follow the model's generation_config.

        Sampling without beams runs as greedy search with a ``SeededSampler`` (per-example seeds),
        so the config asks for greedy and the sampler holds temperature, top-k and top-p.
        """
        from transformers import GenerationConfig

        beam_sampling = settings.do_sample and settings.num_beams > 1
        eos = self.model.generation_config.eos_token_id
        config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens,
            num_beams=settings.num_beams,
            do_sample=beam_sampling,
            repetition_penalty=settings.repetition_penalty,
            early_stopping=settings.early_stopping,
            stop_strings=list(settings.stop) or None,
            bos_token_id=self.tokenizer.bos_token_id,
            # Chat models often list several end-of-turn ids in their generation_config: keep them.
            eos_token_id=eos if eos is not None else self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if beam_sampling:
            config.temperature = settings.temperature
            config.top_p = settings.top_p
            config.top_k = settings.top_k
        return config

    def _prompt_room(self, settings: GenerationSettings) -> int | None:
        """Prompt tokens that fit in the context beside ``max_new_tokens`` (None: no stated context)."""
        context = self.context_length()
        if context is None:
            return None
        return prompt_room(context, settings, self.path)

    def _fitted_prompt_ids(self, prompts: Sequence[str], settings: GenerationSettings) -> list[list[int]]:
        """Prompt ids, each cut from the left to leave room for ``max_new_tokens`` (lm-eval's rule:
        the end of a prompt, next to what is generated, matters most)."""
        room = self._prompt_room(settings)
        encoded = [self._prompt_ids(p) for p in prompts]
        return encoded if room is None else [ids[-room:] for ids in encoded]

    def truncated_prompts(self, prompts: Sequence[str], settings: GenerationSettings) -> int:
        room = self._prompt_room(settings)
        if room is None:
            return 0

        def count() -> int:
            return sum(len(self._prompt_ids(p)) > room for p in prompts)

        if self.chat:  # the template is the tokenizer's (loaded anyway for the cache identity)
            return count()
        return int(
            self._derived("truncated_prompts", count, prompts_sha256=_text_sha256(list(prompts)), room=room)
        )

    def generate(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        on_batch: BatchCallback | None = None,
        skip: set[int] | None = None,
        *,
        seeds: Sequence[int] | None = None,
    ) -> list[str]:
        """Continuations in prompt order; batches are cut longest-first over the full list.

        Batches depend only on the prompts and ``batch_size``, so a resumed run forms the same ones.
        Sampling is seeded per example (``seeds``, see ``Backend.generate``) and still batched: a
        ``SeededSampler`` gives each row its own generator, so a sample is the same at any batch size,
        order or shard. Beam sampling runs each example alone after ``torch.manual_seed(its seed)``.
        Prompts longer than the context allows are cut from the left (``truncated_prompts``).
        """
        import torch

        skip = skip or set()
        row_seeds = prompt_seeds(prompts, settings, seeds)
        encoded = self._fitted_prompt_ids(prompts, settings)
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        config = self._generation_config(settings)
        extra = {"tokenizer": self.tokenizer} if settings.stop else {}
        results = [""] * len(prompts)

        def run(part: list[int]) -> list[tuple[str, int]]:
            if settings.do_sample and settings.num_beams > 1:
                outputs = []
                for i in part:
                    torch.manual_seed(row_seeds[i])
                    outputs += self._generate_batch([encoded[i]], config, settings.stop, extra)
                return outputs
            sampler = [SeededSampler([row_seeds[i] for i in part], settings)] if settings.do_sample else None
            ids = [encoded[i] for i in part]
            return self._generate_batch(ids, config, settings.stop, {**extra, "logits_processor": sampler})

        for start in range(0, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            if all(i in skip for i in indices):
                continue
            outputs = _halving_on_oom(indices, run)
            texts = [text for text, _ in outputs]
            for i, text in zip(indices, texts, strict=True):
                results[i] = text
            if on_batch is not None:
                on_batch(indices, texts, sum(n for _, n in outputs))
        return results

    def _generate_batch(
        self, ids: list[list[int]], config: GenerationConfig, stops: Sequence[str], extra: dict
    ) -> list[tuple[str, int]]:
        """(continuation, tokens the model generated for it) per prompt."""
        import torch

        batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                generation_config=config,
                **extra,
            )
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        lengths = _generated_lengths(new_tokens.cpu(), config.eos_token_id, config.pad_token_id)
        return [(_cut_at_stop(t, stops), n) for t, n in zip(texts, lengths, strict=True)]

    # -- log-likelihood -----------------------------------------------------------------------------

    def context_length(self) -> int | None:
        if self._context is None:
            self._context = (self._derived("context_length", self._config_context_length),)
        return self._context[0]

    def _config_context_length(self) -> int | None:
        return next((v for v in (getattr(self.config, k, None) for k in CONTEXT_KEYS) if v), None)

    def loglikelihood(
        self,
        texts: Sequence[str],
        max_length: int | None = None,
        stride: int | None = None,
        prepend_bos: bool = True,
        contexts: Sequence[str] | None = None,
        per_token: bool = False,
    ) -> list[TokenLogLikelihood]:
        """Summed NLL (nats) and scored-token count per text, sliding windows for long texts.

        ``max_length`` defaults to the model context; ``stride`` (new tokens scored per window)
        defaults to ``max_length``, i.e. windows do not overlap beyond the one token of context each
        needs. With ``prepend_bos`` every text token is scored; without it the first one is context
        only. An empty text scores 0 tokens with NLL 0. A text's windows are batched
        together, never with other texts.
        ``contexts`` (one per text) condition each text without being scored: the text is
        tokenized as the tail of ``context + text`` (lm-eval's convention), so token boundaries
        match what the model would generate. ``per_token`` also returns each scored token's NLL.
        """
        import torch

        limit = self.context_length()
        max_length = max_length or limit
        if max_length is None:
            raise UserError(f"model {self.path!r} does not state its context length; set `max_length`")
        if max_length < 2 or (limit is not None and max_length > limit):
            raise UserError(f"max_length {max_length} must be between 2 and the model context ({limit})")
        stride = stride or max_length
        if stride < 1:
            raise UserError(f"stride must be at least 1, got {stride}")
        prefix = []
        if prepend_bos:
            start = self._start_id()
            if start is None:
                raise UserError(
                    f"tokenizer of {self.path!r} has no bos or eos token; set `prepend_bos: false`"
                )
            prefix = [start]

        # (text number, window ids, context-only positions, window number within the text)
        windows: list[tuple[int, list[int], int, int]] = []
        for number, text in enumerate(texts):
            context = contexts[number] if contexts else ""
            seq = prefix + self._encode(context + text)
            first = max(1, len(prefix) + len(self._encode(context)))
            parts = _windows(seq, max_length, stride, first)
            windows += [(number, ids, ctx, part) for part, (ids, ctx) in enumerate(parts)]
        # Batches never mix texts: a text's NLL then does not depend on which texts it is scored
        # with (shards of a torchrun run, other prompts), to the last bit — padding a window into
        # another text's batch changes the float rounding. Long texts still batch their windows.
        by_text: dict[int, list[tuple[int, list[int], int, int]]] = {}
        for window in windows:
            by_text.setdefault(window[0], []).append(window)
        scored: dict[tuple[int, int], torch.Tensor] = {}  # (text, window) -> NLL per scored token
        for own in by_text.values():
            own.sort(key=lambda w: -len(w[1]))
            for batch in _width_batches(own, self.batch_size):
                scored.update(zip(((w[0], w[3]) for w in batch), self._window_nll(batch), strict=True))
        per_text: list[list[torch.Tensor]] = [[] for _ in texts]
        for key in sorted(scored):
            per_text[key[0]].append(scored[key])
        results = []
        for parts in per_text:
            values = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
            token_nll = tuple(values.tolist()) if per_token else None
            results.append(TokenLogLikelihood(float(values.sum()), len(values), token_nll))
        return results

    def _window_nll(self, batch: list[tuple[int, list[int], int, int]]) -> list[torch.Tensor]:
        """Per-window float64 NLL of each scored token (right padding); logits only where the
        next token is scored."""
        import torch

        width = max(len(w[1]) for w in batch)
        input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        scored = torch.zeros((len(batch), width), dtype=torch.bool)  # position t predicts token t + 1
        targets: list[int] = []
        for row, (_, ids, context, _) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
            scored[row, context - 1 : len(ids) - 1] = True
            targets += ids[context:]
        with torch.inference_mode():
            logits = self._scored_logits(
                input_ids.to(self.device), mask.to(self.device), scored.to(self.device)
            )
            target = torch.tensor(targets, device=logits.device).unsqueeze(-1)
            nll = torch.empty(len(targets), dtype=torch.float64)
            for begin in range(0, len(targets), _NLL_CHUNK):  # bounds the float32 copy of the logits
                part = logits[begin : begin + _NLL_CHUNK].float()
                picked = part.gather(-1, target[begin : begin + _NLL_CHUNK]).squeeze(-1)
                nll[begin : begin + _NLL_CHUNK] = (torch.logsumexp(part, dim=-1) - picked).double().cpu()
        return list(torch.split(nll, scored.sum(dim=1).tolist()))

    def _scored_logits(
        self, input_ids: torch.Tensor, mask: torch.Tensor, scored: torch.Tensor
    ) -> torch.Tensor:
        """``[n_scored, vocab]`` logits in row-major order of ``scored``.

        transformers 5 models take a boolean ``logits_to_keep`` and run the LM head on those positions
        only: context-only and padded positions (half of every overlapping window) skip the
        ``hidden x vocab`` matmul, the costliest layer of small models with large vocabularies.
        Models without it get full logits, sliced here.
        """
        if self._keeps_logits:
            try:
                logits = self.model(
                    input_ids=input_ids,
                    attention_mask=mask,
                    logits_to_keep=scored,
                    use_cache=False,
                ).logits
                if logits.dim() == 2:
                    return logits
            except (TypeError, IndexError):
                pass
            self._keeps_logits = False
        logits = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        return logits[scored]

    # -- provenance ---------------------------------------------------------------------------------

    def _snapshot(self) -> tuple[Path | None, str | None]:
        """Folder holding the weights, and the resolved commit for hub models."""
        if self._local:
            return self._folder, self.revision
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(self.path, "config.json", revision=self.revision)
        if not isinstance(cached, str):
            return None, self.revision
        snapshot = Path(cached).parent
        return snapshot, snapshot.name

    def _encode(self, text: str) -> list[int]:
        # verbose=False: texts longer than the context are expected here (sliding windows).
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] if text else []

    def count_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"])

    def _weights_hash(self) -> str:
        if self._weights_sha256 is None:
            self._weights_sha256 = weights_sha256(self._snapshot()[0])
        return self._weights_sha256

    def describe(self) -> Provenance:
        """Provenance: the weights hash is sha256 over the weight files' bytes in sorted name order;
        a row with ``device_map`` records where each part of the model went."""
        import torch

        _, revision = self._snapshot()
        extra = {
            "fused_activations": str(self.fused_activations),
            "transformers": _transformers_version(),
            "torch": torch.__version__,
        }
        if self.device_map is not None:
            extra["device_map"] = json.dumps(_placement(self.model), sort_keys=True)
        return Provenance(
            backend="hf",
            model=self.path,
            revision=revision,
            weights_sha256=self._weights_hash(),
            dtype=str(self.dtype).removeprefix("torch."),
            device=str(self.device),
            context_length=self.context_length(),
            extra=extra,
        )

    def cache_identity(self) -> dict[str, Any]:
        """Library versions, hashes of weights, config, tokenizer (and chat template and system
        prompt when ``chat``), dtype, device type, context (prompt truncation) and the fused-kernel
        swap (float rounding); not the path, name, batch size or device index. A model without a
        local snapshot adds its id and revision, so two such models never share an identity."""
        import torch

        if self._identity is None:
            if not self._local and not _weight_files_of(self._snapshot()[0]):
                self.model  # noqa: B018 - downloads the files the identity hashes (a first run)
            folder, revision = self._snapshot()
            identity: dict[str, Any] = {
                "backend": "hf",
                "transformers": _transformers_version(),
                "torch": torch.__version__,
                "weights_sha256": self._weights_hash(),
                **folder_identity(folder, self.row.trust_remote_code),
                "chat": self.chat,
                "chat_template_sha256": chat_template_sha256(self.tokenizer) if self.chat else None,
                "system": self.system if self.chat else None,
                "dtype": str(self.dtype).removeprefix("torch."),
                "device_type": _device_types(self.model) if self.device_map is not None else self.device.type,
                "context_length": self.context_length(),
                "fused_activations": self.fused_activations,
                "trust_remote_code": self.row.trust_remote_code,
            }
            if folder is None:
                identity.update(model=self.path, revision=revision)
            self._identity = identity
        return dict(self._identity)
