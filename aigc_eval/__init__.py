"""aigc-eval: evaluate generative AI output with exact, signed metrics.

The public API (``run``, ``load_run``, ``score``, ``compare``, ``Run``) lives in ``aigc_eval.api``
and is imported on first use, so ``import aigc_eval`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Run", "compare", "load_run", "run", "score", "score_images"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from aigc_eval import api

        return getattr(api, name)
    raise AttributeError(f"module 'aigc_eval' has no attribute {name!r}")
