"""Plan-time checks: everything about a suite that can fail is checked before the first model loads.

A run that dies after an hour of generation on a typo in the last metric entry wastes the hour;
these checks read only small files (``config.json``, file listings), never weights. Each error
names the suite file and the key at fault, e.g. ``suite.yaml: models[1].path: ...``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from aigc_eval.backends.base import CONTEXT_KEYS
from aigc_eval.config import MetricSpec, ModelRow, Suite
from aigc_eval.errors import UserError
from aigc_eval.metrics.registry import MODEL_METRICS

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
_TRUE = ("1", "true", "yes", "on")


def looks_like_path(value: str) -> bool:
    """Written as a path (``./m``, ``/m``, ``~/m``, ``a/b/c``), not a hub id (``name``, ``org/name``)."""
    return value.startswith((".", "/", "~")) or value.count("/") > 1


def local_path(value: str, base_dir: Path) -> Path:
    """Where a relative path in the suite points: against the suite's folder, ``~`` expanded."""
    return base_dir / Path(value).expanduser()


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


def model_folder(row: ModelRow, base_dir: Path, where: str) -> Path | None:
    """The checked local folder of an ``hf`` row (a cached hub snapshot counts), or None for a hub id
    that will be downloaded. A path that is not there says so, instead of a hub connection error."""
    assert row.path is not None  # the schema requires it for hf rows
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


def check_suite(suite: Suite, source: str) -> None:
    """Checks that need no files: what the suite's entries refer to exists in the suite."""
    rows = [row.name for row in suite.models if row.backend == "hf"]
    for index, spec in enumerate(suite.metrics):
        name = spec.options.get("model") if spec.name in MODEL_METRICS else None
        if name is not None and name not in rows and not looks_like_path(name) and "/" not in name:
            raise UserError(
                f"{source}: metrics[{index}].model: {name!r} is neither a model row ({', '.join(rows)}) "
                "nor a path; name a row, or a model folder such as ./models/scorer"
            )


def check_plan(suite: Suite, base_dir: Path, source: str) -> None:
    """Everything checkable before generating: model folders, contexts, scoring models, modules."""
    check_suite(suite, source)
    contexts: dict[str, int | None] = {}  # row name -> context length (None: unknown)
    for index, row in enumerate(suite.models):
        if row.backend != "hf":
            continue
        folder = model_folder(row, base_dir, f"{source}: models[{index}].path")
        contexts[row.name] = context_length(folder) if folder is not None else None
        context = contexts[row.name]
        if context is not None and row.generation.max_new_tokens >= context:
            raise UserError(
                f"{source}: models[{index}].generation.max_new_tokens: {row.generation.max_new_tokens} "
                f"leaves no room for a prompt in the model's {context}-token context; lower it"
            )
    for index, spec in enumerate(suite.metrics):
        where = f"{source}: metrics[{index}]"
        if spec.name in MODEL_METRICS:
            _check_scoring_model(spec, contexts, base_dir, where)
        if spec.name == "evaluate":
            _check_evaluate_module(spec, base_dir, where)


def _check_scoring_model(
    spec: MetricSpec, contexts: dict[str, int | None], base_dir: Path, where: str
) -> None:
    """The ``model:`` of a perplexity entry exists, and ``max_length`` fits every model it scores with."""
    name = spec.options.get("model")
    if name is None:
        scorers = contexts  # each row scores with its own model
    elif name in contexts:
        scorers = {name: contexts[name]}
    else:
        folder = local_path(name, base_dir)
        if not folder.exists():
            raise UserError(
                f"{where}.model: {name!r} is neither a model row nor an existing path "
                f"(relative paths resolve against {base_dir}); name a row or fix the path"
            )
        check_model_folder(folder, f"{where}.model")
        scorers = {name: context_length(folder)}
    max_length = spec.options.get("max_length")
    for scorer, context in scorers.items():
        if max_length is not None and context is not None and max_length > context:
            raise UserError(
                f"{where}.max_length: {max_length} is larger than the {context}-token context of "
                f"{scorer!r} (its config.json); set max_length to at most {context} or leave it out"
            )


def _check_evaluate_module(spec: MetricSpec, base_dir: Path, where: str) -> None:
    """The module is loaded now (it is cached for scoring), so a missing one fails before generating."""
    from aigc_eval.metrics.evaluate_module import EvaluateMetric

    module = spec.options["module"]
    local = local_path(module, base_dir)
    if not local.exists() and (module.endswith(".py") or looks_like_path(module)):
        raise UserError(
            f"{where}.module: {module!r} not found (relative paths resolve against {base_dir}); fix the path"
        )
    resolved = str(local.resolve()) if local.exists() else module
    options = EvaluateMetric.Options.model_validate({**spec.options, "module": resolved})
    try:
        EvaluateMetric(options).load_module()
    except UserError as error:
        offline = os.environ.get("HF_EVALUATE_OFFLINE", "").lower() in _TRUE
        hint = (
            "; HF_EVALUATE_OFFLINE is set, so hub modules cannot be downloaded: give a local module path"
            if offline and not local.exists()
            else ""
        )
        raise UserError(f"{where}.module: {error}{hint}") from None
