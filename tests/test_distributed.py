"""Data-parallel runs on torchrun (gloo on CPU): results identical to one process, whatever the number
of processes; resume after a killed rank with another process count; two "nodes" on loopback.

Every launch here is the real torchrun (``python -m torch.distributed.run``) starting real
``aigc-eval run`` processes that talk over gloo on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from aigc_eval.cli import main

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "suites" / "data" / "images"
LAUNCH_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_EVALUATE_OFFLINE="1",
        OMP_NUM_THREADS="1",
        GLOO_SOCKET_IFNAME="lo",
        MASTER_ADDR="127.0.0.1",
        AIGC_EVAL_CACHE_DIR=str(tmp_path / "cache"),
        AIGC_EVAL_WORKERS="1",
    )
    return env


def torchrun(args: list[str], nproc: int, tmp_path: Path, extra: list[str] | None = None) -> subprocess.Popen:
    """``torchrun --nproc_per_node N -m aigc_eval ARGS`` on loopback, not waited for."""
    launcher = extra or ["--nnodes", "1", "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, "--nproc_per_node", str(nproc)]
    return subprocess.Popen(
        [*command, "-m", "aigc_eval", *args],
        env=_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen) -> str:
    try:
        out, _ = process.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode == 0, out
    return out


def _images(tmp_path: Path, name: str, n: int) -> str:
    files = sorted((IMAGES / name).glob("*.png"))[:n]
    path = tmp_path / f"{name}.txt"
    path.write_text("".join(f"{f}\n" for f in files), encoding="utf-8")
    return str(path)


def write_suite(
    tmp_path: Path, model: Path, n: int = 13, max_new_tokens: int = 8, images: bool = True
) -> Path:
    """Greedy, beam and sampling rows on English and Chinese, plus two image rows on an image task."""
    rows: list[dict[str, Any]] = [
        {"name": "greedy", "path": str(model), "dtype": "float32", "batch_size": 4},
        {
            "name": "beam",
            "path": str(model),
            "dtype": "float32",
            "batch_size": 3,
            "generation": {"num_beams": 3},
        },
        {
            "name": "sample",
            "path": str(model),
            "dtype": "float32",
            "batch_size": 5,
            "generation": {"do_sample": True, "temperature": 0.9, "top_p": 0.95, "seed": 7},
        },
    ]
    for row in rows:
        row.setdefault("generation", {})["max_new_tokens"] = max_new_tokens
    tasks: list[dict[str, Any]] = []
    for lang, words in (("en", ["The cat", "A small dog", "My friend"]), ("zh", ["今天", "老师", "小猫"])):
        data = tmp_path / f"{lang}.jsonl"
        lines = [
            {"id": f"{lang}{i}", "prompt": f"{words[i % 3]} {i}", "reference": f"{words[(i + 1) % 3]} reads."}
            for i in range(n)
        ]
        data.write_text(
            "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8"
        )
        tasks.append({"name": lang, "data": str(data), "references": ["reference"], "lang": lang})
    if images:
        rows += [
            {
                "name": "faithful",
                "backend": "images",
                "images": {"shapes": _images(tmp_path, "gen-faithful", 20)},
            },
            {
                "name": "degraded",
                "backend": "images",
                "images": {"shapes": _images(tmp_path, "gen-degraded", 20)},
            },
        ]
        tasks.append(
            {
                "name": "shapes",
                "kind": "image",
                "reference": _images(tmp_path, "reference", 21),
                "backbone": "efficientnet-lite0",
                "image_metrics": ["fid", "kid", "precision", "coverage"],
            }
        )
    suite = {
        "name": "dp",
        "seed": 0,
        "models": rows,
        "tasks": tasks,
        "metrics": [
            "bleu",
            "chrf",
            {"name": "rouge", "rouge_types": ["rouge1", "rougeL"]},
            {"name": "perplexity", "target": "references", "context": "prompt"},
        ],
        "regression": {"baseline": "greedy", "n_trials": 500},
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, allow_unicode=True), encoding="utf-8")
    return path


def only_run(out: Path) -> Path:
    (run_dir,) = list((out / "dp").iterdir())
    return run_dir


def outcome(run_dir: Path) -> dict[str, Any]:
    """Everything a run concluded: scores with intervals and signatures, significance, provenance,
    and the per-sample files byte for byte (not timings, run ids or the process count)."""
    record = json.loads((run_dir / "results.json").read_text())
    return {
        "results": [
            {k: e[k] for k in ("model", "task", "n", "metrics", "skipped_images")} for e in record["results"]
        ],
        "significance": record["significance"],
        "models": {
            name: {k: v for k, v in m.items() if k != "images"} for name, m in record["models"].items()
        },
        "tasks": {
            name: {k: v for k, v in task.items() if k != "path"} for name, task in record["tasks"].items()
        },
        "samples": (run_dir / "samples.jsonl").read_text(),
        "stats": (run_dir / "stats.jsonl").read_text(),
    }


@pytest.fixture(scope="module")
def single(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The suite in one plain process: the reference every distributed run must equal."""
    tmp = tmp_path_factory.mktemp("single")
    suite = write_suite(tmp, tiny_lm_dir)
    os.environ.pop("WORLD_SIZE", None)
    assert main(["run", str(suite), "--output-dir", str(tmp / "out"), "--quiet", "--no-cache"]) == 0
    return outcome(only_run(tmp / "out"))


def test_accelerate_launch_equals_one_process(
    single: dict[str, Any], tiny_lm_dir: Path, tmp_path: Path
) -> None:
    """``accelerate launch --multi_gpu`` starts its processes through torchrun's launcher and sets the
    same variables: the same run (here on CPU processes over gloo; accelerate's ``--cpu`` would start
    one process, or MPI ones)."""
    pytest.importorskip("accelerate")
    suite = write_suite(tmp_path, tiny_lm_dir)
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launcher += ["--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()), "-m", "aigc_eval"]
    env = {**_env(tmp_path), "HF_HOME": str(tmp_path / "hf-home")}  # no accelerate config of the user's
    process = subprocess.Popen(
        [*launcher, "run", str(suite), "--output-dir", "out", "--quiet", "--no-cache"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    finish(process)
    run_dir = only_run(tmp_path / "out")
    assert outcome(run_dir) == single
    assert json.loads((run_dir / "results.json").read_text())["environment"]["processes"] == 2


def test_two_processes_equal_one(single: dict[str, Any], tiny_lm_dir: Path, tmp_path: Path) -> None:
    suite = write_suite(tmp_path, tiny_lm_dir)
    finish(torchrun(["run", str(suite), "--output-dir", "out", "--quiet", "--no-cache"], 2, tmp_path))
    run_dir = only_run(tmp_path / "out")
    assert outcome(run_dir) == single
    record = json.loads((run_dir / "results.json").read_text())
    assert record["environment"]["processes"] == 2
    assert record["environment"]["process_group"] == "gloo"
    # Each rank wrote its own generation log; only rank 0 wrote results.
    logs = sorted(p.name for p in (run_dir / "generations").iterdir())
    assert "sample__zh__shard0of2.jsonl" in logs and "sample__zh__shard1of2.jsonl" in logs
    sampled = [json.loads(line)["prediction"] for line in single["samples"].splitlines()]
    assert len(set(sampled)) > 10  # the rows really generated different text


def test_batch_size_changes_no_sample(single: dict[str, Any], tiny_lm_dir: Path, tmp_path: Path) -> None:
    """Sampling is seeded per example: other batch sizes give the same samples and scores."""
    suite = write_suite(tmp_path, tiny_lm_dir, images=False)
    config = yaml.safe_load(suite.read_text())
    for row, size in zip(config["models"], (1, 7, 2), strict=True):
        row["batch_size"] = size
    suite.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    assert main(["run", str(suite), "--output-dir", str(tmp_path / "out"), "--quiet", "--no-cache"]) == 0
    mine = outcome(only_run(tmp_path / "out"))
    text_rows = [r for r in single["results"] if r["task"] != "shapes"]
    assert mine["results"] == text_rows
    assert mine["samples"] == single["samples"]


def _log_lines(run_dir: Path) -> int:
    folder = run_dir / "generations"
    return sum(len(p.read_text().splitlines()) for p in folder.glob("*.jsonl")) if folder.is_dir() else 0


def test_killed_rank_resumes_with_another_process_count(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """SIGKILL one rank mid-generation (torchrun then stops the other); resume the run folder with one
    process, then check it equals an uninterrupted run."""
    suite = write_suite(tmp_path, tiny_lm_dir, n=40, max_new_tokens=24, images=False)
    config = yaml.safe_load(suite.read_text())
    for row in config["models"]:
        row["batch_size"] = 1  # a log line per example: a kill lands mid-task
    suite.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    process = torchrun(["run", str(suite), "--output-dir", "out", "--quiet", "--no-cache"], 2, tmp_path)
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    run_dir = None
    while time.monotonic() < deadline:
        runs = list((tmp_path / "out" / "dp").glob("*")) if (tmp_path / "out" / "dp").is_dir() else []
        if runs and _log_lines(runs[0]) > 30:
            run_dir = runs[0]
            break
        time.sleep(0.05)
    assert run_dir is not None, "no generations appeared"
    workers = subprocess.run(
        ["pgrep", "-f", "-P", str(process.pid), "aigc_eval"], capture_output=True, text=True
    )
    victim = int(workers.stdout.split()[-1])  # a worker of the launcher, not the launcher itself
    os.kill(victim, signal.SIGKILL)
    out, _ = process.communicate(timeout=LAUNCH_TIMEOUT_S)
    assert process.returncode != 0, out
    assert not (run_dir / "results.json").exists()
    partial = _log_lines(run_dir)

    os.environ.pop("WORLD_SIZE", None)
    assert main(["run", str(suite), "--resume", str(run_dir), "--quiet", "--no-cache"]) == 0
    record = json.loads((run_dir / "results.json").read_text())
    resumed = sum(e["timing"]["resumed_samples"] or 0 for e in record["results"])
    assert 0 < resumed <= partial

    clean = tmp_path / "clean"
    assert main(["run", str(suite), "--output-dir", str(clean), "--quiet", "--no-cache"]) == 0
    assert outcome(run_dir) == outcome(only_run(clean))


def test_two_nodes_on_loopback(single: dict[str, Any], tiny_lm_dir: Path, tmp_path: Path) -> None:
    """The multi-node launch line (c10d rendezvous, --nnodes 2), as two torchrun invocations on one
    machine sharing the output folder."""
    suite = write_suite(tmp_path, tiny_lm_dir)
    endpoint = f"127.0.0.1:{free_port()}"
    args = ["run", str(suite), "--output-dir", "out", "--quiet", "--no-cache"]
    nodes = [
        torchrun(
            args,
            1,
            tmp_path,
            [
                "--nnodes",
                "2",
                "--node_rank",
                str(rank),
                "--rdzv_backend",
                "c10d",
                "--rdzv_endpoint",
                endpoint,
                "--rdzv_id",
                "aigc-eval-test",
            ],
        )
        for rank in (0, 1)
    ]
    for node in nodes:
        finish(node)
    run_dir = only_run(tmp_path / "out")
    assert outcome(run_dir) == single
    assert json.loads((run_dir / "results.json").read_text())["environment"]["processes"] == 2
