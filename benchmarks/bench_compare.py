"""compare's resampled FID (permutation test and bootstrap draws) vs pytorch-fid's formula per draw.

``aigc-eval compare`` tests an image metric by reshuffling (permutation test) and resampling with
replacement (bootstrap interval) the pooled generated images of both runs, thousands of times. This
times one draw of each kind on seeded random features of the demo's size (100 generated images per
run, 100 reference images, 1,280 dimensions: efficientnet-lite0), in two cases: two runs with
different images, and two runs that scored the same images (a rerun; every row pooled twice).

* aigc-eval: ``FrechetToReference`` (what compare calls), with one BLAS thread as compare runs it,
  and with the default threads;
* the alternative: mean and covariance of the drawn rows and pytorch-fid's
  ``calculate_frechet_distance`` (``scipy.linalg.sqrtm``), as a script around pytorch-fid would.

Both see the same draws (the formula only the first ``--formula-draws``: each takes seconds); the
ratio and the largest relative differences are printed: against the formula (which is itself only
good to ~1e-8 when N < d) and against ``frechet_distance_of_sets`` of the drawn rows, repeats
included (aigc-eval's FID of a set).

    .venv/bin/python benchmarks/bench_compare.py [--draws 200] [--formula-draws 3] [--dim 1280]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from scipy import linalg
from threadpoolctl import threadpool_limits

from aigc_eval.metrics.image import FeatureSet, frechet_distance_of_sets
from aigc_eval.metrics.image.frechet import FrechetToReference


def sqrtm_fid(rows: np.ndarray, reference: FeatureSet) -> float:
    """pytorch-fid's calculate_frechet_distance on the drawn rows (without SciPy 1.18's removed
    ``disp=``)."""
    mu, sigma = rows.mean(axis=0), np.cov(rows, rowvar=False)
    diff = mu - reference.mu
    covmean = linalg.sqrtm(sigma.dot(reference.sigma))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma) + np.trace(reference.sigma) - 2 * np.trace(covmean))


def timed(fn: Callable[[np.ndarray], float], draws: list[np.ndarray]) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    values = np.array([fn(idx) for idx in draws])
    return (time.perf_counter() - started) / len(draws), values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200, help="draws of each kind per case")
    parser.add_argument("--formula-draws", type=int, default=3, help="of those, timed with sqrtm too")
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--n", type=int, default=100, help="generated images per run (and reference)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, dim = args.n, args.dim
    reference = FeatureSet.from_features(rng.normal(size=(n, dim)))
    generated = rng.normal(0.2, 1.0, size=(n, dim))
    cases = {
        "different images": np.vstack([generated, rng.normal(0.25, 1.0, size=(n, dim))]),
        "same images (a rerun)": np.vstack([generated, generated]),
    }
    print(
        f"{n} + {n} generated images, {n} reference images, {dim} dimensions; {args.draws} draws "
        f"of each kind ({args.formula_draws} with the sqrtm formula)"
    )
    print(
        "| case | draw | aigc-eval, 1 BLAS thread | aigc-eval, default threads | sqrtm formula "
        "| speed-up | max rel. diff vs formula | vs the set's FID |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for case, pool in cases.items():
        statistic = FrechetToReference(pool, reference)
        kinds = {
            "permutation": [rng.permutation(2 * n)[:n] for _ in range(args.draws)],
            "bootstrap": [rng.integers(0, 2 * n, n) for _ in range(args.draws)],
        }
        for kind, draws in kinds.items():
            statistic(draws[0])  # the reference's accurate factor, built once on a slow-route draw
            with threadpool_limits(limits=1, user_api="blas"):
                ours, values = timed(statistic, draws)
            threaded, _ = timed(statistic, draws)
            few = draws[: args.formula_draws]
            alternative, expected = timed(lambda idx, pool=pool: sqrtm_fid(pool[idx], reference), few)
            worst = float(np.max(np.abs(values[: len(few)] - expected) / np.abs(expected)))
            direct = np.array(
                [frechet_distance_of_sets(FeatureSet.from_features(pool[i]), reference) for i in draws]
            )
            exact = float(np.max(np.abs(values - direct) / np.abs(direct)))
            print(
                f"| {case} | {kind} | {ours * 1e3:.2f} ms | {threaded * 1e3:.2f} ms | "
                f"{alternative * 1e3:.1f} ms | {alternative / ours:.0f}x | {worst:.1e} | {exact:.1e} |"
            )


if __name__ == "__main__":
    main()
