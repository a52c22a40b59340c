"""Where the wall time of a warm-cache rerun goes (default: the demo suite), as ``aigc-eval run`` pays it.

    .venv/bin/python benchmarks/profile_run.py [--suite suites/demo.yaml]

A first run, in a subprocess, fills fresh generation and feature caches (in a temp folder); this
process then runs the suite once, finding every generation and image feature there, as a rerun of an
unchanged suite does, with everything imported fresh. Each phase is timed by wrapping the function
that does it; the phases do not overlap, and "the rest" is what none of them covers. "Model forward
passes" are the backends' ``generate``/``loglikelihood`` and the image backbones' ``embed`` (with a
warm cache: none, as the perplexity log-likelihoods are cached too, and no weights are read). The
imports are timed before the run (aigc_eval with its metrics, and torch through the backbones);
"tokenizers and configs" includes importing transformers, the meta-device architecture its modeling
code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def timed(owner: Any, name: str, phase: str, spent: dict[str, float]) -> None:
    """Wrap ``owner.name`` so that its (outermost) calls add to ``spent[phase]``."""
    original: Callable[..., Any] = getattr(owner, name)
    depth = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        depth[0] += 1
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - began

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="suites/demo.yaml")
    args = parser.parse_args()
    suite = REPO / args.suite
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(HF_HUB_OFFLINE="1", AIGC_EVAL_CACHE_DIR=str(Path(tmp) / "cache"))
        warm_up = [sys.executable, "-m", "aigc_eval", "run", str(suite), "--quiet"]
        subprocess.run(
            [*warm_up, "--output-dir", str(Path(tmp) / "warm-up")], check=True, capture_output=True
        )

        started = time.perf_counter()
        import aigc_eval.api as api  # the package, its metrics and (through the backbones) torch
        import aigc_eval.backends.hf as hf
        import aigc_eval.cli  # noqa: F401
        import aigc_eval.finalize as finalize
        import aigc_eval.outputs as outputs
        from aigc_eval.backends.hf import HFBackend
        from aigc_eval.features.base import Backbone

        imports = time.perf_counter() - started
        spent: dict[str, float] = {"model forward passes": 0.0}  # shown even when nothing ran
        timed(HFBackend, "_load_tokenizer", "tokenizers (transformers import)", spent)
        timed(HFBackend, "_load_config", "configs (transformers import)", spent)
        timed(HFBackend, "_load_model", "model weights", spent)
        timed(hf, "_fusable_activations", "architecture on the meta device (fused-GELU count)", spent)
        for method in ("generate", "loglikelihood"):
            timed(HFBackend, method, "model forward passes", spent)
        timed(Backbone, "embed", "model forward passes", spent)
        timed(finalize, "_text_scores", "corpus scores + bootstrap intervals", spent)
        timed(finalize, "_within_run_comparison", "within-run significance tests", spent)
        timed(outputs, "write_outputs", "tables and report.html", spent)
        warnings.simplefilter("ignore")
        began = time.perf_counter()
        api.run(suite, output_dir=Path(tmp) / "rerun")
        wall = time.perf_counter() - began
    rest = "the rest (plan, data, cache look-ups, metric rows, image scoring, run files)"
    spent[rest] = wall - sum(spent.values())
    total = wall + imports
    print(f"suite {args.suite}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print(f"\n| phase | s | share of {total:.2f} s |\n| --- | ---: | ---: |")
    print(f"| imports (aigc_eval and its metrics, torch) | {imports:.2f} | {imports / total:.1%} |")
    for phase, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"| {phase} | {seconds:.2f} | {seconds / total:.1%} |")
    forward = spent.get("model forward passes", 0.0)
    print(f"\neverything but model forward passes: {(total - forward) / total:.1%} of the wall time")


if __name__ == "__main__":
    sys.exit(main())
