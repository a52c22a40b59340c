"""Model backends by name: suites (``models[i].backend``), the plan checks and the ``score`` CLI all
look them up here.

A backend is one module registering its ``Backend`` subclass with ``@backends.register(name)``;
third-party packages add one through an entry point in the ``aigc_eval.backends`` group. Built-in
modules are imported on first lookup and import torch only when a model is loaded, so a suite
validates without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aigc_eval.backends.base import Backend, Capabilities
from aigc_eval.registry import Registry

if TYPE_CHECKING:
    from aigc_eval.config import ModelRow

backends: Registry[type[Backend]] = Registry(
    "backend",
    "aigc_eval.backends",
    builtins={
        "hf": "aigc_eval.backends.hf",
        "images": "aigc_eval.backends.images",
        "openai": "aigc_eval.backends.openai",
        "vllm": "aigc_eval.backends.vllm",
    },
)

# The backend of a row whose suite entry names none, and of a scoring model given as a path.
DEFAULT_BACKEND = "hf"


def backend_class(kind: str, where: str = "") -> type[Backend]:
    """The registered class of ``kind``; a user error listing the known backends when unknown."""
    return backends.get(kind, where)


def capabilities(kind: str) -> Capabilities:
    """What backend ``kind`` can do."""
    return backend_class(kind).capabilities


def create_backend(row: ModelRow) -> Backend:
    """Build the backend a validated row names, from the row alone (its paths already resolved)."""
    return backend_class(row.backend)(row)


def scorer_row(model: str, kind: str = DEFAULT_BACKEND, **options: Any) -> ModelRow:
    """The row of a scoring model given as a folder or hub id rather than a suite row (a perplexity
    entry's ``model:``, the ``score`` CLI's ``--model``): validated as ``models[i]`` is, and in
    float32 where the backend has a ``dtype`` (reference numbers are full precision)."""
    from aigc_eval.config import parse_row

    defaults = {"dtype": "float32"} if "dtype" in backend_class(kind).Options.model_fields else {}
    data = {"name": "scorer", "backend": kind, "path": model, **defaults, **options}
    return parse_row(data, f"backend {kind!r}")


def scorer_for(model: str, kind: str = DEFAULT_BACKEND, **options: Any) -> Backend:
    """The backend of ``scorer_row(model, kind, **options)``, built as a suite row's is."""
    return create_backend(scorer_row(model, kind, **options))


def with_capability(name: str) -> list[str]:
    """Backends having capability ``name`` (for error messages suggesting one)."""
    return [kind for kind, cls in backends.load_all().items() if getattr(cls.capabilities, name)]


__all__ = [
    "DEFAULT_BACKEND",
    "Backend",
    "Capabilities",
    "backend_class",
    "backends",
    "capabilities",
    "create_backend",
    "scorer_for",
    "scorer_row",
    "with_capability",
]
