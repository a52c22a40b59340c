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
    """The model paths whose weights were read, in order, "skeleton" for every meta-device
    architecture built to count fused GELUs, "tokenizer" and "config" for every tokenizer and
    config loaded (spies around the real functions)."""
    loads: list[str] = []
    load, count = HFBackend._load_model, hf._fusable_activations
    load_tokenizer, load_config = HFBackend._load_tokenizer, HFBackend._load_config

    def spy_load(backend: HFBackend) -> None:
        loads.append(backend.path)
        load(backend)

    def spy_count(*args: object) -> int:
        loads.append("skeleton")
        return count(*args)

    def spy_tokenizer(backend: HFBackend) -> object:
        loads.append("tokenizer")
        return load_tokenizer(backend)

    def spy_config(backend: HFBackend) -> object:
        loads.append("config")
        return load_config(backend)

    monkeypatch.setattr(HFBackend, "_load_model", spy_load)
    monkeypatch.setattr(hf, "_fusable_activations", spy_count)
    monkeypatch.setattr(HFBackend, "_load_tokenizer", spy_tokenizer)
    monkeypatch.setattr(HFBackend, "_load_config", spy_config)
    return loads


def test_a_warm_rerun_loads_no_weights_and_changes_no_number(
    tmp_path: Path, tiny_lm_dir: Path, weight_loads: list[str]
) -> None:
    suite = write_suite(tmp_path, tiny_lm_dir, n=N, images=False)
    first = run(suite, output_dir=tmp_path / "first")
    assert weight_loads  # the first run generated and scored
    weight_loads.clear()

    rerun = run(suite, output_dir=tmp_path / "rerun")
    # Nor a skeleton, tokenizer or config: the fused-GELU count, the context length and the
    # truncated-prompt counts were cached too (so transformers is not even needed).
    assert weight_loads == []
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


def test_cached_truncation_counts_equal_the_tokenizers(
    tmp_path: Path, tiny_lm_dir: Path, weight_loads: list[str]
) -> None:
    """A second backend on the same cache answers the context length and truncated-prompt count
    without loading the tokenizer or config; other prompts or another room are counted afresh."""
    from aigc_eval.backends import create_backend
    from aigc_eval.backends.base import GenerationSettings
    from aigc_eval.cache import GenerationCache
    from aigc_eval.config import parse_row

    long = " ".join(["The old teacher remembers the quiet city."] * 12)  # over the 64-token context
    prompts = [long, "The cat", long + " again"]
    settings = GenerationSettings(max_new_tokens=8)
    row = parse_row({"name": "m", "path": str(tiny_lm_dir), "dtype": "float32"})
    with GenerationCache.open(tmp_path / "cache") as cache:
        first = create_backend(row)
        first.use_cache(cache)
        assert (first.context_length(), first.truncated_prompts(prompts, settings)) == (64, 2)
        assert weight_loads == ["config", "tokenizer"]
        weight_loads.clear()

        second = create_backend(row)
        second.use_cache(cache)
        assert (second.context_length(), second.truncated_prompts(prompts, settings)) == (64, 2)
        assert weight_loads == []
        assert second.truncated_prompts(prompts[1:], settings) == 1  # other prompts: counted
        assert second.truncated_prompts(prompts, GenerationSettings(max_new_tokens=63)) == 3  # room 1
        assert weight_loads == ["tokenizer"]
