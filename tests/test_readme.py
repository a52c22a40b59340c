"""The README's Python and shell examples run as documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu

from aigc_eval.run_folder import RunFolder

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    [code] = _blocks("python")
    monkeypatch.chdir(REPO)
    exec(compile(code.replace('output_dir="reports"', f"output_dir={str(tmp_path)!r}"), "README", "exec"), {})
    bleu_line, rouge_line, run_bleu, samples, regression = capsys.readouterr().out.splitlines()
    expected = sacrebleu.corpus_bleu(["今天天气很好"], [["今天天气不错"]], tokenize="zh")
    assert float(bleu_line.split()[0]) == pytest.approx(expected.score, abs=1e-9)
    assert rouge_line == "0.6666666666666666"
    [run_dir] = (tmp_path / "demo").iterdir()
    entry = RunFolder(run_dir).read_record().entry("demo-greedy", "en")
    assert entry is not None and float(run_bleu) == entry.metrics["bleu"].score
    assert int(samples) == 4 * 4 * 2  # 4 text rows × 2 tasks × 4 examples
    assert regression == "False"  # a run compared with itself


def test_score_example_runs(tmp_path: Path) -> None:
    [shell] = [b for b in _blocks("bash") if "aigc-eval score" in b]
    script = shell.replace("/tmp/", f"{tmp_path}/")
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert '"rouge1"' in done.stdout and "perplexity" in done.stdout


def test_suite_reference_is_a_valid_suite() -> None:
    """The documented suite parses as printed (strict schema, no duplicate keys) and passes the
    plan-time checks that need no files: every key it shows is real and every reference resolves."""
    from aigc_eval.config import parse_suite, read_yaml
    from aigc_eval.preflight import check_suite

    [block] = [b for b in _blocks("yaml") if b.startswith("name: demo")]
    suite = parse_suite(read_yaml(block), "README")
    check_suite(suite, "README")
    assert [t.kind for t in suite.tasks] == ["text", "image"]
    assert [m.name for m in suite.metrics][-2:] == ["perplexity", "descriptors"]
    assert suite.metrics[-2].options["model"] in {row.name for row in suite.models}
