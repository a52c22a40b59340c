"""Model backends by kind; each is imported only when used, so the package imports without torch."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from aigc_eval.backends.base import Backend
from aigc_eval.errors import UserError

# kind -> "module:class"
_REGISTRY = {"hf": "aigc_eval.backends.hf:HFBackend"}


def create_backend(kind: str, **kwargs: Any) -> Backend:
    """Build the backend of ``kind`` from its options; bad kinds or options are user errors."""
    if kind not in _REGISTRY:
        raise UserError(f"unknown backend {kind!r}; known backends: {', '.join(sorted(_REGISTRY))}")
    module, name = _REGISTRY[kind].split(":")
    cls = getattr(importlib.import_module(module), name)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        options = ", ".join(p for p in inspect.signature(cls).parameters)
        raise UserError(f"backend {kind!r}: {err}; its options are: {options}") from err
    return cls(**kwargs)
