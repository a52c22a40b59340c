"""The regression gate on real run folders: a truly worse system is flagged, reruns of one system are
not (false-positive rate near alpha), min_delta and corrections act as documented, unpaired runs are
refused, results are deterministic across processes, the reports parse, and runs are read only through
``RunFolder`` (a folder whose caches hold what was just written is not read again)."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats
from sacrebleu.significance import PairedTest

from aigc_eval.config import Regression
from aigc_eval.errors import UserError
from aigc_eval.gate import (
    CHANGED,
    IMPROVEMENT,
    NO_CHANGE,
    NOT_TESTED,
    REGRESSION,
    Comparison,
    compare_runs,
    parse_pair,
    with_overrides,
)
from aigc_eval.gate.runs import rows_array
from aigc_eval.metrics.registry import build_metric
from aigc_eval.record import (
    Environment,
    Provenance,
    ResultEntry,
    RunRecord,
    SampleRecord,
    StatsRecord,
    TaskRecord,
)
from aigc_eval.report.compare import escape, format_delta, format_p, to_json, to_junit_xml, to_markdown
from aigc_eval.report.tables import format_score
from aigc_eval.run_folder import RunFolder
from aigc_eval.stats import benjamini_hochberg, holm

WORDS = [f"w{i}" for i in range(80)]
FAST = {"n_trials": 1000}  # fewer trials than the default 10,000 keeps the file fast


def sentences(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 14))) for _ in range(n)]


def noisy(refs: list[str], p: float, seed: int) -> list[str]:
    """A system that replaces each reference word with probability p: the "sampling" noise process."""
    rnd = random.Random(seed)
    return [" ".join(w if rnd.random() > p else rnd.choice(WORDS) for w in r.split()) for r in refs]


def make_run(
    folder: Path,
    data: dict[str, list[str]],
    systems: dict[str, dict[str, list[str]]],
    metrics: list[Any] | None = None,
    regression: dict[str, Any] | None = None,
    n_resamples: int = 200,
    limit: int | None = None,
) -> Path:
    """A run folder of given predictions (model -> task -> texts) on tasks of given references, written
    through ``RunFolder`` from the metrics' own rows and scores (``sample_stats``, ``aggregate``)."""
    specs = [m if isinstance(m, dict) else {"name": m} for m in metrics or ["bleu", "chrf"]]
    suite = {
        "name": "synthetic",
        "intervals": {"n_resamples": n_resamples},
        "regression": {**FAST, **(regression or {})},
        "metrics": specs,
    }
    results, samples, stats = [], [], []
    for model, by_task in systems.items():
        for task, refs in data.items():
            n = min(len(refs), limit or len(refs))
            ids, predictions, references = [f"s{i:03d}" for i in range(n)], by_task[task][:n], refs[:n]
            scores, per_sample = {}, {}
            for index, spec in enumerate(specs):
                options = {k: v for k, v in spec.items() if k != "name"}
                metric = build_metric(spec["name"], options, lang="en")
                rows = metric.sample_stats(predictions, [[r] for r in references])
                scores.update({k: s.to_record() for k, s in metric.aggregate(rows).items()})
                per_sample.update(metric.sample_scores(rows))
                stats.append(
                    StatsRecord(
                        model=model,
                        task=task,
                        metric_index=index,
                        metric=spec["name"],
                        options=options,
                        lang="en",
                        ids=ids,
                        rows=rows.tolist(),
                    )
                )
            results.append(ResultEntry(model=model, task=task, n=n, metrics=scores))
            samples += [
                SampleRecord(
                    model=model,
                    task=task,
                    id=ids[i],
                    prompt=f"say {i}",
                    prediction=predictions[i],
                    references=[references[i]],
                    scores={k: v[i] for k, v in per_sample.items()},
                )
                for i in range(n)
            ]
    content = {t: hashlib.sha256(json.dumps(refs).encode()).hexdigest() for t, refs in data.items()}
    record = RunRecord(
        run_id=f"run{len(list(folder.glob('run*')))}",
        suite_name="synthetic",
        config_hash="0" * 16,
        finished="2026-01-01T00:00:00+00:00",
        limit=limit,
        suite=suite,
        environment=Environment(python="3", platform="test"),
        models={m: Provenance(backend="hf", model=m) for m in systems},
        tasks={
            t: TaskRecord(kind="text", path=f"{t}.jsonl", content_hash=content[t], n=len(data[t]), lang="en")
            for t in data
        },
        results=results,
    )
    run = RunFolder(folder / record.run_id)
    run.path.mkdir(parents=True)
    run.write_record(record)
    run.write_stats(stats)
    run.write_samples(samples)
    return run.path


def entry(comparison: Comparison, metric: str, task: str = "en"):
    return next(e for e in comparison.entries if e.metric == metric and e.task == task)


@pytest.fixture(scope="module")
def good_bad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A baseline and a truly worse current system (many more words replaced) on 150 samples."""
    folder = tmp_path_factory.mktemp("good_bad")
    refs = sentences(150, seed=1)
    data = {"en": refs}
    worse = noisy(refs, 0.45, seed=3)
    worse[0] = "a|b\nnew line"  # user text a table must escape
    baseline = make_run(folder, data, {"m": {"en": noisy(refs, 0.15, seed=2)}})
    current = make_run(folder, data, {"m": {"en": worse}})
    return folder, baseline, current


def test_truly_worse_system_is_a_regression(good_bad: tuple[Path, Path, Path]) -> None:
    _, baseline, current = good_bad
    comparison = compare_runs(baseline, current)
    assert comparison.has_regression
    assert (comparison.test, comparison.n_trials, comparison.correction) == ("paired-ar", 1000, "holm")
    for metric in ("bleu", "chrf"):
        e = entry(comparison, metric)
        assert e.verdict == REGRESSION and e.delta < 0
        assert e.p_corrected == pytest.approx(2 / 1001)  # the smallest p, Holm over the 2 tests
        assert e.ci_low < e.ci_high < 0  # the paired interval of the delta excludes zero
        deltas = [s.delta for s in e.top_changes]
        assert len(deltas) == 5 and deltas == sorted(deltas) and deltas[0] < 0  # worst first
        assert all(len(s.current_prediction) <= 120 for s in e.top_changes)


def test_object_and_mean_rows_round_trip(tmp_path: Path) -> None:
    """ROUGE (mean rows) and descriptors (n-gram object rows) re-aggregate from stats.jsonl to the
    saved scores; shorter outputs change `length`, which has no better direction: reported, not gated."""
    refs = sentences(40, seed=4)
    data = {"en": refs}
    shorter = [" ".join(s.split()[:-3]) for s in noisy(refs, 0.5, seed=2)]
    metrics = [{"name": "rouge", "rouge_types": ["rouge1", "rougeL"]}, "descriptors"]
    regression = {"n_trials": 200}
    baseline = make_run(tmp_path, data, {"m": {"en": noisy(refs, 0.1, 1)}}, metrics, regression, 50)
    current = make_run(tmp_path, data, {"m": {"en": shorter}}, metrics, regression, 50)
    comparison = compare_runs(baseline, current)
    folder = RunFolder.open(current)
    saved = folder.read_record().results[0].metrics
    assert {e.metric: e.current for e in comparison.entries} == {k: v.score for k, v in saved.items()}
    for stats in folder.read_stats():  # object rows (n-grams) and mean rows re-aggregate to the saved scores
        metric = build_metric(stats.metric, stats.options, stats.lang)
        rebuilt = metric.aggregate(rows_array(stats.rows))
        assert {k: s.score for k, s in rebuilt.items()} == {k: saved[k].score for k in rebuilt}
    assert entry(comparison, "rouge1").verdict == entry(comparison, "rougeL").verdict == REGRESSION
    length = entry(comparison, "length")
    assert length.higher_is_better is None and length.delta < 0 and length.verdict == CHANGED
    assert all(e.p_value is not None for e in comparison.entries)


def test_improvement_is_reported_not_failed(good_bad: tuple[Path, Path, Path]) -> None:
    _, baseline, current = good_bad
    comparison = compare_runs(current, baseline)
    assert not comparison.has_regression
    assert {entry(comparison, m).verdict for m in ("bleu", "chrf")} == {IMPROVEMENT}
    assert all(s.delta > 0 for s in entry(comparison, "bleu").top_changes)  # best first


def test_paired_tests_and_delta_interval_match_sacrebleu(good_bad: tuple[Path, Path, Path]) -> None:
    """Compare's uncorrected p equals sacrebleu's PairedTest, and its delta interval is the percentile
    bootstrap of the paired difference with sacrebleu's index matrix."""
    _, baseline, current = good_bad
    samples = [s for run in (baseline, current) for s in RunFolder.open(run).read_samples()]
    refs = [s.references[0] for s in samples[:150]]
    hyps = [[s.prediction for s in samples[:150]], [s.prediction for s in samples[150:]]]
    for test in ("ar", "bootstrap"):
        # ties: strict is sacrebleu's count, for parity (the gate's default counts ties).
        regression = Regression(test=test, n_trials=500, correction="none", ties="strict")
        comparison = compare_runs(baseline, current, regression)
        for name in ("bleu", "chrf"):
            sb_metric = build_metric(name)._corpus  # type: ignore[attr-defined]
            _, table = PairedTest(
                [("b", hyps[0]), ("c", hyps[1])],
                {name: sb_metric},
                [refs],
                test_type="ar" if test == "ar" else "bs",
                n_samples=500,
            )()
            sb_baseline, sb_system = next(v for k, v in table.items() if k != "System")
            e = entry(comparison, name)
            assert (e.baseline, e.current) == (sb_baseline.score, sb_system.score)
            assert e.p_corrected == e.p_value == sb_system.p_value

    metric = build_metric("bleu")
    rows_b = metric.sample_stats(hyps[0], [[r] for r in refs])
    rows_c = metric.sample_stats(hyps[1], [[r] for r in refs])
    idxs = np.random.default_rng(12345).choice(150, size=(200, 150), replace=True)
    deltas = sorted(
        metric.aggregate(rows_c[i])["bleu"].score - metric.aggregate(rows_b[i])["bleu"].score for i in idxs
    )
    e = entry(comparison, "bleu")
    assert (e.ci_low, e.ci_high) == pytest.approx((deltas[200 // 40], deltas[200 - 200 // 40 - 1]), abs=1e-9)


def test_reruns_of_one_system_keep_false_positives_near_alpha(tmp_path: Path) -> None:
    """Two draws of the same noise process (different sampling seeds) per comparison, many seeds:
    the share flagged stays within a binomial bound around alpha."""
    trials, alpha = 50, 0.05
    regression = {"correction": "none", "n_trials": 500, "rules": [{"metric": "bleu"}]}
    flagged, p_values = 0, []
    for seed in range(trials):
        folder = tmp_path / str(seed)
        folder.mkdir()
        refs = sentences(60, seed=10_000 + seed)
        data = {"en": refs}
        runs = [
            make_run(
                folder, data, {"m": {"en": noisy(refs, 0.3, seed=2 * seed + k)}}, ["bleu"], regression, 0
            )
            for k in (0, 1)
        ]
        e = entry(compare_runs(*runs), "bleu")
        flagged += e.verdict != NO_CHANGE
        p_values.append(e.p_value)
    assert flagged <= scipy.stats.binom.ppf(0.999, trials, alpha)
    assert 0.3 < float(np.mean(p_values)) < 0.7  # p-values spread over (0, 1], not stuck at either end


def test_one_changed_sample_is_not_a_regression(tmp_path: Path) -> None:
    """A greedy rerun whose output changed on one sample of 100 is noise, not a regression."""
    refs = sentences(100, seed=9)
    data = {"en": refs}
    same = noisy(refs, 0.3, seed=1)
    baseline = make_run(tmp_path, data, {"m": {"en": same}})
    current = make_run(tmp_path, data, {"m": {"en": ["something else", *same[1:]]}})
    assert not compare_runs(baseline, current).has_regression


def test_min_delta_absolute_and_relative(good_bad: tuple[Path, Path, Path]) -> None:
    _, baseline, current = good_bad
    base = Regression(n_trials=200)
    bleu = entry(compare_runs(baseline, current, base), "bleu")
    delta, baseline_bleu = abs(bleu.delta), bleu.baseline
    for flag, verdict in (
        (f"bleu={delta * 1.01}", NO_CHANGE),
        (f"bleu={delta * 0.99}", REGRESSION),
        (f"bleu={100 * delta / baseline_bleu * 1.01}%", NO_CHANGE),
        (f"bleu={100 * delta / baseline_bleu * 0.99}%", REGRESSION),
    ):
        rules = with_overrides(base, min_deltas=[flag])
        comparison = compare_runs(baseline, current, rules)
        assert entry(comparison, "bleu").verdict == verdict, flag
        assert entry(comparison, "chrf").verdict == REGRESSION  # the added rule is for bleu only
    assert with_overrides(base, min_deltas=["bleu=2%"]).rules[-1].relative
    with pytest.raises(UserError, match="METRIC=VALUE"):
        with_overrides(base, min_deltas=["bleu"])
    with pytest.raises(UserError, match="alpha"):
        with_overrides(base, alpha=2.0)
    assert parse_pair("a=b") == ("a", "b")


def test_corrections_adjust_p_values_across_tasks_and_metrics(tmp_path: Path) -> None:
    refs_a, refs_b = sentences(80, seed=5), sentences(80, seed=6)
    data = {"a": refs_a, "b": refs_b}
    metrics = ["bleu", "chrf", "ter"]
    baseline = make_run(
        tmp_path, data, {"m": {"a": noisy(refs_a, 0.3, 1), "b": noisy(refs_b, 0.2, 2)}}, metrics
    )
    current = make_run(
        tmp_path, data, {"m": {"a": noisy(refs_a, 0.34, 3), "b": noisy(refs_b, 0.4, 4)}}, metrics
    )
    by = {
        c: compare_runs(baseline, current, Regression(correction=c, **FAST)) for c in ("none", "holm", "bh")
    }
    raw = [e.p_value for e in by["none"].entries]
    assert len(raw) == 6 and [e.p_corrected for e in by["none"].entries] == raw
    assert [e.p_corrected for e in by["holm"].entries] == holm(raw)
    assert [e.p_corrected for e in by["bh"].entries] == benjamini_hochberg(raw)
    for none, bh, hb in zip(by["none"].entries, by["bh"].entries, by["holm"].entries, strict=True):
        assert none.p_corrected <= bh.p_corrected <= hb.p_corrected
        for e in (none, bh, hb):
            worse = (e.delta < 0) == e.higher_is_better and e.p_corrected < 0.05
            assert (e.verdict == REGRESSION) == worse


def test_suite_rules_are_the_default_and_unmatched_metrics_are_not_gated(tmp_path: Path) -> None:
    refs = sentences(40, seed=7)
    data = {"en": refs}
    regression = {"test": "bootstrap", "n_trials": 300, "rules": [{"metric": "bleu"}]}
    baseline = make_run(tmp_path, data, {"a": {"en": noisy(refs, 0.1, 1)}}, regression=regression)
    current = make_run(tmp_path, data, {"b": {"en": noisy(refs, 0.5, 2)}}, regression=regression)
    comparison = compare_runs(baseline, current)  # one row each: paired whatever the names
    assert comparison.pairs == (("a", "b"),)
    assert (comparison.test, comparison.n_trials) == ("paired-bs", 300)
    assert entry(comparison, "bleu").verdict == REGRESSION
    chrf = entry(comparison, "chrf")
    assert chrf.verdict == NOT_TESTED and chrf.p_value is None and "no regression rule" in chrf.note


def test_unpaired_runs_are_refused(tmp_path: Path) -> None:
    refs = sentences(20, seed=8)
    systems = {"m": {"en": noisy(refs, 0.2, 1)}, "n": {"en": noisy(refs, 0.2, 2)}}
    data = {"en": refs}
    baseline = make_run(tmp_path, data, systems)
    fewer = make_run(tmp_path, data, systems, limit=15)
    with pytest.raises(UserError, match=r"task 'en': the runs are not paired: their sample ids differ"):
        compare_runs(baseline, fewer)
    other = tmp_path / "other"
    other.mkdir()
    changed = make_run(other, {"en": [*refs[:-1], "x"]}, systems)
    with pytest.raises(UserError, match=r"task 'en': the runs are not paired: its data file differs"):
        compare_runs(baseline, changed)
    renamed = make_run(tmp_path, data, {"p": systems["m"], "q": systems["n"]})
    with pytest.raises(UserError, match=r"no model rows to pair \(baseline rows: m, n; current rows: p, q\)"):
        compare_runs(baseline, renamed)
    assert compare_runs(baseline, renamed, pairs=[("m", "q")]).pairs == (("m", "q"),)
    with pytest.raises(UserError, match=r"no results\.json"):
        compare_runs(tmp_path / "missing", baseline)


def _numbers(comparison: Comparison) -> list[tuple[Any, ...]]:
    return [(e.metric, e.p_value, e.p_corrected, e.ci_low, e.ci_high) for e in comparison.entries]


def test_same_inputs_and_seed_give_the_same_numbers_across_processes(
    good_bad: tuple[Path, Path, Path],
) -> None:
    _, baseline, current = good_bad
    first = _numbers(compare_runs(baseline, current))
    assert first == _numbers(compare_runs(baseline, current))
    code = (
        "import json, sys; from aigc_eval.gate import compare_runs; "
        "c = compare_runs(sys.argv[1], sys.argv[2]); "
        "print(json.dumps([(e.metric, e.p_value, e.p_corrected, e.ci_low, e.ci_high) for e in c.entries]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(baseline), str(current)], capture_output=True, text=True, check=True
    )
    assert [tuple(x) for x in json.loads(out.stdout)] == first


def test_markdown_is_a_pull_request_comment(good_bad: tuple[Path, Path, Path]) -> None:
    _, baseline, current = good_bad
    comparison = compare_runs(baseline, current)
    text = to_markdown(comparison)
    assert text.splitlines()[2].startswith("**REGRESSION**: 2 regressed")
    bleu = entry(comparison, "bleu")
    row = next(line for line in text.splitlines() if line.startswith("| bleu ↑ |"))
    for value in (format_score(bleu.baseline), format_score(bleu.current), format_delta(bleu)):
        assert value in row
    assert format_p(bleu.p_corrected) in row and "**REGRESSION**" in row
    assert text.count("<details>") == len(comparison.regressions) == 2
    assert "a\\|b<br>new line" in text  # the worst sample's prediction, escaped for a table cell
    for line in text.splitlines():
        if line.startswith("| id |"):
            columns = 8
        elif line.startswith("| metric |"):
            columns = 6
        else:
            continue
        assert line.replace("\\|", "").count("|") == columns + 1
    assert escape("x|y\n<b>*z*") == "x\\|y<br>&lt;b&gt;\\*z\\*"


def test_junit_and_json_outputs(good_bad: tuple[Path, Path, Path]) -> None:
    _, baseline, current = good_bad
    comparison = compare_runs(baseline, current)
    root = ET.fromstring(to_junit_xml(comparison))
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(comparison.entries) and root.get("failures") == "2"
    failed = {(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None}
    assert failed == {(e.task, e.metric) for e in comparison.regressions}
    assert "regression" in root.find("./testsuite/testcase/failure").get("message")

    data = json.loads(json.dumps(to_json(comparison), allow_nan=False))
    assert data["has_regression"] and len(data["entries"]) == len(comparison.entries)
    assert data["entries"][0]["top_changes"][0]["id"].startswith("s")


def test_cli_compare_exit_codes_and_files(good_bad: tuple[Path, Path, Path], tmp_path: Path, capsys) -> None:
    from aigc_eval.cli import main

    _, baseline, current = good_bad
    outputs = [
        f"--markdown={tmp_path / 'c.md'}",
        f"--junit={tmp_path / 'j.xml'}",
        f"--json={tmp_path / 'c.json'}",
    ]
    assert main(["compare", str(baseline), str(current), "--n-trials", "300", *outputs]) == 1
    printed = capsys.readouterr().out
    assert printed.strip() == (tmp_path / "c.md").read_text().strip() and "REGRESSION" in printed
    assert ET.parse(tmp_path / "j.xml").getroot().find(".//failure") is not None
    assert json.loads((tmp_path / "c.json").read_text())["has_regression"] is True
    # The reverse direction is an improvement: reported, exit 0.
    assert main(["compare", str(current), str(baseline), "--n-trials", "300"]) == 0
    # A large enough minimum effect on every metric turns the regression into noise.
    assert (
        main(
            [
                "compare",
                str(baseline),
                str(current),
                "--n-trials",
                "300",
                "--min-delta",
                "bleu=50",
                "--min-delta",
                "chrf=50",
                "--min-delta",
                "rouge=0.9",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["compare", str(baseline), str(tmp_path / "missing")]) == 2
    assert "no results.json" in capsys.readouterr().err
    assert main(["compare", str(baseline), str(current), "--min-delta", "bleu"]) == 2
