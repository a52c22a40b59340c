"""aigc-eval: evaluate generative AI output with exact, signed, reproducible metrics."""

__version__ = "0.1.0"
