"""Benchmark: the study's local test (LME) with the exact REML solver vs statsmodels.

Both engines of :func:`analysis_utils.stats.local_lme` run on synthetic, seeded data shaped
like the book's: ``--categories`` categories of ``--per-category`` exemplars (5000 in 100
by default), per-exemplar distances before and after with a small category effect. For each
seed the table gives the milliseconds per call of each engine (the exact one averaged over
``--repeats`` calls, statsmodels timed once: it takes seconds) and the largest relative
difference between their returned numbers (beta, se, ci_low, ci_high, p). statsmodels'
optimisers stop at their own tolerance (and on some seeds fail to converge or raise), so the
differences are statsmodels' error, not the exact solver's: tests/test_stats.py checks the
exact solution against a tightly converged statsmodels fit and its likelihood and Hessian, and
where the differences here are large (se ~10 %), statsmodels' own REML ``loglike`` is higher
at the exact variance ratio than at the one its optimiser returned (not converged).

Run: .venv/bin/python benchmarks/lme.py [--seeds 0 1 2 3 4] [--repeats 50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _machine import load_average, load_note, ratio_note

from analysis_utils.stats import local_lme

KEYS = ("beta", "se", "ci_low", "ci_high", "p")


def synthetic_distances(n_categories: int, per_category: int, seed: int):
    """Distances before/after: a common shrink, a category effect and exemplar noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_categories), per_category)
    category_effect = rng.normal(scale=0.01, size=n_categories)[labels]
    d_before = rng.uniform(0.2, 0.6, size=labels.size)
    d_after = d_before - 0.01 + category_effect + rng.normal(scale=0.05, size=labels.size)
    return d_before.astype(np.float32), d_after.astype(np.float32), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", type=int, default=100)
    parser.add_argument("--per-category", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    load_before = load_average()
    print(f"before: {load_note()}")
    print(f"{args.categories} categories x {args.per_category} exemplars; exact engine "
          f"timed over {args.repeats} calls, statsmodels over 1")
    print(f"{'seed':>4}  {'exact ms':>9}  {'statsmodels ms':>14}  {'speed-up':>8}  "
          "largest relative difference")
    for seed in args.seeds:
        data = synthetic_distances(args.categories, args.per_category, seed)
        start = time.perf_counter()
        for _ in range(args.repeats):
            exact = local_lme(*data, engine="exact")
        exact_ms = 1e3 * (time.perf_counter() - start) / args.repeats
        start = time.perf_counter()
        try:
            reference = local_lme(*data, engine="statsmodels")
        except np.linalg.LinAlgError as error:  # statsmodels' optimiser can hit this
            reference_ms = 1e3 * (time.perf_counter() - start)
            print(f"{seed:>4}  {exact_ms:>9.2f}  {reference_ms:>14.0f}  {'':>8}  "
                  f"statsmodels raised LinAlgError ({error})")
            continue
        reference_ms = 1e3 * (time.perf_counter() - start)
        differences = {key: abs(exact[key] - reference[key]) / abs(reference[key])
                       for key in KEYS}
        worst = max(differences, key=differences.get)
        listed = ", ".join(f"{key} {value:.1e}" for key, value in differences.items())
        print(f"{seed:>4}  {exact_ms:>9.2f}  {reference_ms:>14.0f}  "
              f"{reference_ms / exact_ms:>7.0f}x  {worst} {differences[worst]:.1e} ({listed})")
    print(f"after: {load_note()}")
    print(ratio_note(load_before, load_average()))


if __name__ == "__main__":
    main()
