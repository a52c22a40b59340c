"""A rerun of an unchanged suite with a warm cache: every generation and every perplexity
log-likelihood comes from the cache, no model's weights are read, and every number equals the first
run's (and a run without the cache) bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigc_eval.api import Run, run
from aigc_eval.backends import hf
from aigc_eval.backends.hf import HFBackend
from tests.test_distributed import write_suite

N = 6


def _scores(result: Run) -> dict[tuple[str, str, str], float | None]:
    return {(e.model, e.task, m): s.score for e in result.record.results for m, s in e.metrics.items()}


def _sample_scores(result: Run) -> list[tuple[str, ...]]:
    frame = result.samples().drop(columns=["references"])
    return [tuple(map(str, row)) for row in frame.itertuples(index=False)]


@pytest.fixture
def weight_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The model paths whose weights were read, in order, and "skeleton" for every meta-device
    architecture built to count fused GELUs (spies around the real functions)."""
    loads: list[str] = []
    load, count = HFBackend._load_model, hf._fusable_activations

    def spy_load(backend: HFBackend) -> None:
        loads.append(backend.path)
        load(backend)

    def spy_count(*args: object) -> int:
        loads.append("skeleton")
        return count(*args)

    monkeypatch.setattr(HFBackend, "_load_model", spy_load)
    monkeypatch.setattr(hf, "_fusable_activations", spy_count)
    return loads


def test_a_warm_rerun_loads_no_weights_and_changes_no_number(
    tmp_path: Path, tiny_lm_dir: Path, weight_loads: list[str]
) -> None:
    suite = write_suite(tmp_path, tiny_lm_dir, n=N, images=False)
    first = run(suite, output_dir=tmp_path / "first")
    assert weight_loads  # the first run generated and scored
    weight_loads.clear()

    rerun = run(suite, output_dir=tmp_path / "rerun")
    assert weight_loads == []  # nor a skeleton: the fused-GELU count was cached too
    for entry in rerun.record.results:
        assert (entry.timing.cache_hits, entry.timing.scored_from_cache) == (N, N), entry.model
    assert _scores(rerun) == _scores(first)
    assert _sample_scores(rerun) == _sample_scores(first)
    assert rerun.record.models == first.record.models  # provenance (fused GELUs counted without weights)

    uncached = run(suite, output_dir=tmp_path / "uncached", cache=False)
    assert weight_loads  # without the cache the model scores again ...
    assert _scores(uncached) == _scores(first)  # ... to the same floats the cache returned
    assert {e.timing.scored_from_cache for e in uncached.record.results} == {0}


def test_a_changed_perplexity_window_scores_again(
    tmp_path: Path, tiny_lm_dir: Path, weight_loads: list[str]
) -> None:
    """The window is part of the log-likelihood key: another max_length is a miss (for the first row;
    the rows after it share its model, so its new entries answer them), the generations still hit."""
    import yaml

    suite = write_suite(tmp_path, tiny_lm_dir, n=N, images=False)
    run(suite, output_dir=tmp_path / "first")
    config = yaml.safe_load(suite.read_text(encoding="utf-8"))
    config["metrics"] = [{"name": "perplexity", "target": "references", "max_length": 16}]
    suite.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    weight_loads.clear()
    changed = run(suite, output_dir=tmp_path / "changed")
    assert weight_loads  # scoring needs the model again
    for entry in changed.record.results:
        expected = 0 if entry.model == "greedy" else N
        assert (entry.timing.cache_hits, entry.timing.scored_from_cache) == (N, expected), entry.model
