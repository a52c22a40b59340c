"""Scale and cache on a real suite (default: the demo), each figure a ratio measured in this one run.

    .venv/bin/python benchmarks/bench_scale.py [--suite suites/demo.yaml] [--nproc 2]

1. Data parallel: the suite without the cache in one process (all cores, then one thread, as each
   torchrun process on a CPU), then under ``torchrun --nproc_per_node N`` (gloo on CPU); wall times, the
   speed-up, and whether the scores are identical. From the one-process run's own timings it splits
   the wall time into the work that is sharded (generation, per-sample statistics) and the rest, and
   gives the expected speed-up on N devices by Amdahl's law.
2. Generation cache (a fresh ``AIGC_EVAL_CACHE_DIR``): a first run, an unchanged rerun (bar: its
   generation time <= 5% of the first run's), a rerun with one row's settings edited (bar: only that
   row regenerates), and one that only adds a metric (bar: nothing regenerates).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], env: dict[str, str], launcher: list[str] | None = None) -> tuple[float, Path]:
    """Wall seconds of one ``aigc-eval run`` and its run folder."""
    out = Path(env["BENCH_OUT"]) / f"r{time.monotonic_ns()}"
    command = [
        *(launcher or [sys.executable]),
        "-m",
        "aigc_eval",
        "run",
        *args,
        "--output-dir",
        str(out),
        "--quiet",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    (suite_dir,) = list(out.iterdir())
    (run_dir,) = list(suite_dir.iterdir())
    return wall, run_dir


def record(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "results.json").read_text())


def scores(run_dir: Path) -> list[Any]:
    return [(e["model"], e["task"], e["metrics"]) for e in record(run_dir)["results"]]


def significance(run_dir: Path) -> Any:
    return record(run_dir).get("significance")


def largest_difference(a: Path, b: Path) -> float:
    """The largest relative difference between two runs' scores (0.0: every score equal)."""
    values = [
        (x["score"], y["score"])
        for (_, _, left), (_, _, right) in zip(scores(a), scores(b), strict=True)
        for x, y in zip(left.values(), right.values(), strict=True)
        if x["score"] is not None and y["score"] is not None
    ]
    return max(abs(x - y) / max(abs(x), abs(y), 1e-300) for x, y in values)


def timing_sum(run_dir: Path, key: str) -> float:
    return sum(e["timing"].get(key) or 0 for e in record(run_dir)["results"])


def regenerated(run_dir: Path) -> dict[str, int]:
    """Samples generated (not taken from the cache) per model row."""
    out: dict[str, int] = {}
    for entry in record(run_dir)["results"]:
        if entry["timing"].get("cache_hits") is not None:
            out[entry["model"]] = out.get(entry["model"], 0) + entry["n"] - entry["timing"]["cache_hits"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="suites/demo.yaml")
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    suite = (REPO / args.suite).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", BENCH_OUT=tmp)
        env.update(AIGC_EVAL_CACHE_DIR=str(Path(tmp) / "cache"), GLOO_SOCKET_IFNAME="lo")
        print(f"suite {args.suite}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")

        # 1. data parallel, no generation cache (the feature cache is warmed first so both sides skip it)
        run([str(suite)], env)
        one_wall, one_dir = run([str(suite), "--no-cache"], env)
        # torchrun gives each CPU process one thread (OMP_NUM_THREADS=1); one process uses every
        # core, and CPU kernels round differently with another thread count: the exact comparison
        # is against one process on one thread too.
        single_wall, single_dir = run([str(suite), "--no-cache"], dict(env, OMP_NUM_THREADS="1"))
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(args.nproc),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            "29517",
        ]
        n_wall, n_dir = run([str(suite), "--no-cache"], env, launcher)
        identical = scores(single_dir) == scores(n_dir) and significance(single_dir) == significance(n_dir)
        sharded = timing_sum(one_dir, "generation_s") + timing_sum(one_dir, "scoring_s")
        rest = one_wall - sharded
        print("\n## data parallel (no generation cache)")
        print(f"1 process, all cores        {one_wall:7.2f} s")
        print(f"1 process, OMP_NUM_THREADS=1 {single_wall:7.2f} s")
        print(
            f"{args.nproc} processes (torchrun)     {n_wall:7.2f} s   speed-up {one_wall / n_wall:.2f}x "
            f"(vs one thread {single_wall / n_wall:.2f}x)"
        )
        print(
            f"scores, intervals and significance identical to one process at one thread: {identical}; "
            f"largest relative difference to one process on all cores: "
            f"{largest_difference(one_dir, n_dir):.1e}"
        )
        print(
            f"one-process split: sharded work (generation + per-sample stats) {sharded:.2f} s, "
            f"the rest (start-up, model loads, finalize, reports) {rest:.2f} s"
        )
        for n in (2, 4, 8):
            print(
                f"  expected on {n} devices (Amdahl, same per-rank work): "
                f"{one_wall / (rest + sharded / n):.2f}x"
            )

        # 2. the generation cache, from empty
        env["AIGC_EVAL_CACHE_DIR"] = str(Path(tmp) / "cache-fresh")
        first_wall, first = run([str(suite)], env)
        again_wall, again = run([str(suite)], env)
        first_gen, again_gen = timing_sum(first, "generation_s"), timing_sum(again, "generation_s")
        print("\n## generation cache")
        print(
            f"first run   wall {first_wall:6.2f} s, generation {first_gen:6.2f} s, "
            f"regenerated {regenerated(first)}"
        )
        print(
            f"rerun       wall {again_wall:6.2f} s, generation {again_gen:6.2f} s, "
            f"regenerated {regenerated(again)}"
        )
        print(
            f"rerun generation time / first run's: {again_gen / first_gen:.3%} (bar <= 5%); "
            f"wall ratio {again_wall / first_wall:.2f}; scores identical: {scores(first) == scores(again)}"
        )

        config = yaml.safe_load(suite.read_text(encoding="utf-8"))
        sampled = [m for m in config["models"] if m.get("generation", {}).get("do_sample")]
        edited_row = (sampled or config["models"])[0]
        settings = edited_row.setdefault("generation", {})
        settings["temperature"] = settings.get("temperature", 1.0) * 0.9
        edited = suite.with_name(".bench-edited.yaml")
        edited.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        try:
            _, edit_dir = run([str(edited)], env)
            print(f"one row edited ({edited_row['name']} temperature): regenerated {regenerated(edit_dir)}")
            config["metrics"].append("ter")
            edited.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
            _, metric_dir = run([str(edited)], env)
            print(f"a metric added (ter): regenerated {regenerated(metric_dir)}")
        finally:
            edited.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
