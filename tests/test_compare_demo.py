"""The regression gate on copies of a real demo run (made by the runner before the run-record refactor,
schema 1, migrated on read): a run against its copy, a run derived through ``RunFolder`` against the
within-run pairing it mirrors, and the within-run comparison of a folder whose caches already hold its
files (what finalize does), which reads none of them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from aigc_eval.config import Regression
from aigc_eval.gate import NO_CHANGE, Comparison, compare_runs
from aigc_eval.report.compare import to_markdown
from aigc_eval.run_folder import RunFolder

DEMO_RUN = (
    Path(__file__).parent / "assets" / "run_v1"
)  # a real run of suites/demo.yaml made before the run-record refactor (schema 1)
TEXT_ROWS = ["demo-greedy", "demo-beam5", "demo-sample", "untrained-greedy"]
DEMO_RULES = Regression(n_trials=300)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two copies of a real demo run made by the runner before the run-record refactor (schema 1)."""
    folder = tmp_path_factory.mktemp("demo")
    return shutil.copytree(DEMO_RUN, folder / "a"), shutil.copytree(DEMO_RUN, folder / "b")


def test_real_runs_of_the_same_rows_do_not_regress(demo_runs: tuple[Path, Path]) -> None:
    """A real run (old schema, migrated on read) against its copy: every text output of every row is
    identical, so every randomization trial ties and nothing regresses: the delta rule, not p alone."""
    comparison = compare_runs(*demo_runs, DEMO_RULES, pairs=[(r, r) for r in TEXT_ROWS])
    assert not comparison.has_regression and len(comparison.entries) == 4 * 2 * 6
    assert {e.metric for e in comparison.entries} == {
        "bleu",
        "chrf",
        "rouge1",
        "rouge2",
        "rougeL",
        "ref_perplexity",
    }
    record = RunFolder.open(demo_runs[0]).read_record()
    for e in comparison.entries:
        assert e.delta == 0 and e.verdict == NO_CHANGE and e.p_value == 1.0
        assert e.current == record.entry(e.current_model, e.task).metrics[e.metric].value
        assert e.baseline_signature == e.current_signature and e.ci_low == e.ci_high == 0
    assert "**No regression**" in to_markdown(comparison)


def test_a_derived_run_compares_as_the_within_run_pair(demo_runs: tuple[Path, Path], tmp_path: Path) -> None:
    """A current run whose demo-greedy row is the demo run's demo-sample row (derived through RunFolder)
    gives exactly the numbers of pairing demo-greedy with demo-sample inside one run folder."""
    source = RunFolder.open(demo_runs[0])
    derived = RunFolder(shutil.copytree(demo_runs[0], tmp_path / "derived"))
    record = source.read_record()

    def as_greedy(items: list[Any]) -> list[Any]:
        keep = [x for x in items if x.model != "demo-greedy"]
        return keep + [
            x.model_copy(update={"model": "demo-greedy"}) for x in items if x.model == "demo-sample"
        ]

    derived.write_record(record.model_copy(update={"results": as_greedy(record.results)}))
    derived.write_stats(as_greedy(source.read_stats()))
    derived.write_samples(as_greedy(source.read_samples()))
    across = compare_runs(source, RunFolder.open(derived.path), DEMO_RULES, pairs=[("demo-greedy",) * 2])
    within = compare_runs(source, source, DEMO_RULES, pairs=[("demo-greedy", "demo-sample")])
    assert _numbers(across) == _numbers(within) and len(across.entries) == 12
    assert [e.delta for e in across.entries] == [e.delta for e in within.entries]
    assert any(e.delta != 0 for e in across.entries)


def test_a_folder_holding_its_files_is_not_read_again(demo_runs: tuple[Path, Path], tmp_path: Path) -> None:
    """What finalize does: the within-run comparison of a folder whose caches hold what was just
    written reads no file of it (proved by deleting them), with the numbers of a comparison from disk."""
    folder = RunFolder(shutil.copytree(demo_runs[0], tmp_path / "run"))
    pairs = [("demo-greedy", "demo-beam5"), ("demo-greedy", "untrained-greedy")]
    from_disk = compare_runs(folder.path, folder.path, DEMO_RULES, pairs=pairs)
    folder.write_record(folder.read_record())
    folder.write_stats(folder.read_stats())
    folder.write_samples(folder.read_samples())
    for name in (RunFolder.RESULTS, RunFolder.STATS, RunFolder.SAMPLES):
        folder.file(name).unlink()
    in_memory = compare_runs(folder, folder, DEMO_RULES, pairs=pairs)
    assert _numbers(in_memory) == _numbers(from_disk) and len(in_memory.entries) == 24
    assert [e.verdict for e in in_memory.entries] == [e.verdict for e in from_disk.entries]


def _numbers(comparison: Comparison) -> list[tuple[Any, ...]]:
    return [(e.metric, e.p_value, e.p_corrected, e.ci_low, e.ci_high) for e in comparison.entries]
