"""Benchmark: the claim test's bootstrap, direct (rankdata per draw) vs the one-sort version.

The direct version is the chapter's former loop: for each draw, gather the resampled RDM
vectors (pairs of positions p < q with different categories), rank each with scipy
``rankdata``, correlate the ranks (Spearman) and take the nanmean over model pairs. The new
version ranks every RDM once and weights its entries by how often a draw repeats them.

Inputs are cosine RDMs of random ReLU prototypes, M models x C categories, and draws
``default_rng(42).integers(0, C, size=(B, C))`` as in the chapter. ``--constant`` replaces
one model's RDM by a constant one (an untrained first step) to time the tie handling too.

Run: .venv/bin/python benchmarks/rsa_bootstrap.py [--models 7] [--categories 100] [--draws 500]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from _machine import load_average, load_note, ratio_note
from scipy.stats import rankdata

from analysis_utils import geometry, rsa


def direct_mean_between_model_rho(rdms: np.ndarray, index: np.ndarray) -> float:
    i, j = np.triu_indices(len(index), k=1)
    keep = index[i] != index[j]
    vectors = rdms[:, index[i][keep], index[j][keep]]
    ranks = rankdata(vectors, axis=1)
    ranks -= ranks.mean(axis=1, keepdims=True)
    unit = ranks / np.linalg.norm(ranks, axis=1, keepdims=True)
    rho = unit @ unit.T
    upper = np.triu_indices(len(rdms), k=1)
    return float(np.nanmean(rho[upper]))


def best_of(repeat: int, run):
    """(fastest wall time in seconds, result) over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=7)
    parser.add_argument("--categories", type=int, default=100)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--dim", type=int, default=512, help="prototype dimension")
    parser.add_argument("--repeat", type=int, default=3, help="timings: best of this many runs")
    parser.add_argument("--constant", action="store_true",
                        help="make the first model's RDM constant (ties)")
    args = parser.parse_args()

    load_before = load_average()
    print(f"before: {load_note()}")
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(args.models, args.categories, args.dim, generator=generator).relu()
    tagged = [rsa.TaggedRDM(f"M{m}", "penult", 1, geometry.cosine_rdm(prototypes[m]))
              for m in range(args.models)]
    if args.constant:
        flat = 1.0 - torch.eye(args.categories)
        tagged[0] = rsa.TaggedRDM("M0", "penult", 1, flat)
    rdms = np.stack([t.rdm.numpy() for t in tagged]).astype(np.float64)
    draws = np.random.default_rng(42).integers(0, args.categories,
                                               size=(args.draws, args.categories))

    def direct_run():
        return (direct_mean_between_model_rho(rdms, np.arange(args.categories)),
                np.array([direct_mean_between_model_rho(rdms, d) for d in draws]))

    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN rho of a constant RDM
        direct_s, (direct_observed, direct) = best_of(args.repeat, direct_run)
    new_s, (observed, values) = best_of(
        args.repeat, lambda: rsa.between_model_rho_bootstrap(tagged, draws))

    difference = max(abs(observed - direct_observed), float(np.max(np.abs(values - direct))))
    print(f"M={args.models} models, C={args.categories} categories, B={args.draws} draws"
          f"{', one constant RDM' if args.constant else ''}")
    print(f"best of {args.repeat} runs")
    print(f"direct (rankdata per draw):        {direct_s:8.3f} s")
    print(f"between_model_rho_bootstrap:       {new_s:8.3f} s   ({direct_s / new_s:.0f}x)")
    print(f"max |difference| (observed, draws): {difference:.2e}")
    print(f"after: {load_note()}")
    print(ratio_note(load_before, load_average()))


if __name__ == "__main__":
    main()
