"""gather: the units of one row × task merged back into one set of rows, in example order.

Units of a task are shards of its examples; they may have run in any order or process. Merging by
example index makes the result independent of how the examples were split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aigc_eval.execute import UnitResult
from aigc_eval.metrics.base import MetricContext

# Timing fields that add up over shards; shards run at the same time (one per process), so the
# generation time of a row × task is its slowest shard's and its throughput the shards' sum.
_SUMMED = (
    "resumed_samples",
    "truncated_prompts",
    "cache_hits",
    "scored_from_cache",
    "generated_tokens",
    "timed_tokens",
)
_SLOWEST = ("generation_s", "timed_s", "scoring_s")


@dataclass
class Gathered:
    model: str
    task: str
    kind: str
    predictions: list[str] = field(default_factory=list)  # in example order
    stats: list[np.ndarray] = field(default_factory=list)  # per metric entry, rows in example order
    contexts: list[MetricContext] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)
    image: Any = None  # image_scoring.ImageOutcome for image tasks


def gather(results: list[UnitResult]) -> list[Gathered]:
    """One ``Gathered`` per row × task, in the order their first unit appears."""
    groups: dict[tuple[str, str], list[UnitResult]] = {}
    for result in results:
        groups.setdefault((result.unit.row.name, result.unit.task), []).append(result)
    return [_merge(parts) for parts in groups.values()]


def _merge(parts: list[UnitResult]) -> Gathered:
    first = parts[0]
    merged = Gathered(first.unit.row.name, first.unit.task, first.unit.kind, image=first.image)
    if first.unit.kind == "image":
        merged.timing = dict(first.timing)
        return merged
    parts = [part for part in parts if part.indices]  # a process may have had no example of a task
    indices = [i for part in parts for i in part.indices]
    if len(set(indices)) != len(indices):
        raise ValueError(f"{merged.model} × {merged.task}: units overlap in their examples")
    order = np.argsort(indices, kind="stable")
    predictions = [p for part in parts for p in part.predictions]
    merged.predictions = [predictions[i] for i in order]
    merged.stats = [
        np.concatenate([part.stats[m] for part in parts])[order] for m in range(len(parts[0].stats))
    ]
    merged.contexts = parts[0].contexts
    merged.timing = _merged_timing([part.timing for part in parts])
    return merged


def _merged_timing(timings: list[dict[str, Any]]) -> dict[str, Any]:
    if len(timings) == 1:
        return dict(timings[0])
    out = dict(timings[0])
    for keys, combine in ((_SUMMED, sum), (_SLOWEST, max)):
        for key in keys:
            values = [t[key] for t in timings if t.get(key) is not None]
            out[key] = round(combine(values), 4) if values else None
    if not any("tokens_per_s_method" in t for t in timings):  # nothing generated (resumed, cached)
        return out
    rates = [t.get("tokens_per_s") for t in timings]
    measured = all(rate is not None for rate in rates)
    out["tokens_per_s"] = round(sum(rates), 2) if measured else None  # type: ignore[arg-type]
    out["tokens_per_s_method"] = (
        f"sum over {len(timings)} processes of each one's {timings[0]['tokens_per_s_method']}"
        if measured
        else "not measured: a process timed a single batch only"
    )
    return out
