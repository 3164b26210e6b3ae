"""Benchmark: the study's permutation test as a Python loop vs the batched version in stats.

The loop is written here the way the reference study runs it: per permutation, draw
``swap = rng.random(N) < 0.5`` from ``numpy.random.default_rng(seed)``, clone both float32
feature tensors, swap the masked rows, recompute both sets of prototypes (``index_add_``),
centre them, build both cosine RDMs, move them to numpy and average the per-pair % change.
The batched version is :func:`analysis_utils.stats.permutation_between`, which draws the same
masks in the same order.

A full loop at 5000 x 4096 with 10,000 permutations takes hours on a 2-core machine, so the
loop is timed on ``--loop-perms`` permutations and extrapolated per permutation (the
table says so); the batched version runs all ``--n-perm``, with the library's defaults unless
``--dtype`` or ``--batch-size`` say otherwise. The first ``--loop-perms`` null values of both
are compared (the loop is float32 as in the study, so they agree to its float32 rounding);
``--compare-float64`` also runs the batched test in float64 and compares the two nulls;
``--workers`` sets the batched test's worker threads.

Times are wall-clock. The load average is printed before and after, and the ratios are marked
not valid when it exceeds the number of cores (see ``_machine.py``): on a busy machine the
single-threaded loop and the batched code slow down by different factors.

Run: .venv/bin/python benchmarks/permutation.py [--n-perm 10000] [--loop-perms 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from _machine import is_busy, load_average, load_note, ratio_note

from analysis_utils.stats import permutation_between


def synthetic_states(n_images: int, dim: int, n_classes: int, seed: int = 0):
    """ReLU features with class structure, and an 'after' state with a class-specific change."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(n_images // n_classes)
    centres = torch.randn(n_classes, dim, generator=generator)
    change = torch.randn(n_classes, dim, generator=generator)
    before = (centres[labels] + 1.5 * torch.randn(n_images, dim, generator=generator)).relu()
    after = (before + 0.3 * change[labels]
             + 0.2 * torch.randn(n_images, dim, generator=generator)).relu()
    return before, after, labels.numpy()


def loop_null(X_before, X_after, labels, n_perm: int, seed: int) -> np.ndarray:
    """The study's loop: clone, swap, recompute prototypes and RDMs, once per permutation."""
    classes, index = np.unique(labels, return_inverse=True)
    index = torch.from_numpy(index)
    counts = torch.bincount(index).float().unsqueeze(1)
    rows, cols = np.triu_indices(len(classes), 1)

    def upper_rdm(X):
        protos = torch.zeros(len(classes), X.shape[1]).index_add_(0, index, X) / counts
        unit = F.normalize(protos - protos.mean(0, keepdim=True), dim=1)
        rdm = 1.0 - unit @ unit.T
        rdm.fill_diagonal_(0.0)
        return rdm.numpy()[rows, cols]

    rng = np.random.default_rng(seed)
    null = np.empty(n_perm)
    for k in range(n_perm):
        swap = torch.from_numpy(rng.random(X_before.shape[0]) < 0.5)
        before, after = X_before.clone(), X_after.clone()
        before[swap] = X_after[swap]
        after[swap] = X_before[swap]
        d_before, d_after = upper_rdm(before), upper_rdm(after)
        keep = d_before > 1e-12
        null[k] = np.mean((d_after[keep] - d_before[keep]) / d_before[keep] * 100.0)
    return null


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["5000x1000", "5000x4096"])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--n-perm", type=int, default=10000)
    parser.add_argument("--loop-perms", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None,
                        help="batched dtype (default: the library's, float32)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None,
                        help="worker threads of the batched test (default: the library's, "
                             "torch's thread count)")
    parser.add_argument("--compare-float64", action="store_true",
                        help="also run the batched test in float64 and report the largest "
                             "difference of the two nulls")
    args = parser.parse_args()
    options = {"batch_size": args.batch_size, "workers": args.workers}
    if args.dtype is not None:
        options["dtype"] = getattr(torch, args.dtype)
    dtype_name = args.dtype or "float32 (default)"

    load_before = load_average()
    print(f"before: {load_note()}")
    workers = args.workers or f"{torch.get_num_threads()} (default)"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batched dtype "
          f"{dtype_name}, {workers} workers")
    lines = []
    for shape in args.shapes:
        n_images, dim = (int(v) for v in shape.split("x"))
        before, after, labels = synthetic_states(n_images, dim, args.classes)

        start = time.perf_counter()
        reference = loop_null(before, after, labels, args.loop_perms, args.seed)
        loop_per_perm = (time.perf_counter() - start) / args.loop_perms

        start = time.perf_counter()
        result = permutation_between(before, after, labels, n_perm=args.n_perm, seed=args.seed,
                                     **options)
        batched_total = time.perf_counter() - start

        checked = min(args.loop_perms, args.n_perm)
        difference = float(np.abs(result.null[:checked] - reference[:checked]).max())
        loop_total = loop_per_perm * args.n_perm
        line = (f"{shape:>10} {loop_per_perm * 1e3:>13.2f} {loop_total:>19.0f} s "
                f"{batched_total:>12.1f} s {batched_total / args.n_perm * 1e3:>10.3f} "
                f"{loop_total / batched_total:>6.0f}x {difference:>16.2e}")
        if args.compare_float64:
            wide = permutation_between(before, after, labels, n_perm=args.n_perm,
                                       seed=args.seed, batch_size=args.batch_size,
                                       workers=args.workers, dtype=torch.float64)
            line += f" {float(np.abs(result.null - wide.null).max()):>14.2e}"
        lines.append(line)
        print(f"{shape}: observed {result.observed:.6f}, p_two_tailed {result.p_two_tailed}, "
              f"first nulls {np.round(result.null[:3], 6)} (loop {np.round(reference[:3], 6)})",
              flush=True)

    load_after = load_average()
    valid = not (is_busy(load_before) or is_busy(load_after))
    print(f"\nloop timed on {args.loop_perms} permutations and extrapolated to {args.n_perm}; "
          f"batched ran all {args.n_perm}; null compared with the loop's on the first "
          f"{min(args.loop_perms, args.n_perm)}")
    header = (f"{'shape':>10} {'loop ms/perm':>13} {'loop total (extrap.)':>21} "
              f"{'batched total':>14} {'ms/perm':>10} {'ratio' if valid else 'ratio*':>7} "
              f"{'max |null diff|':>16}")
    if args.compare_float64:
        header += f" {'|f32 - f64|':>14}"
    print(header)
    print("\n".join(lines))
    print(f"after: {load_note()}")
    print(("" if valid else "* ") + ratio_note(load_before, load_after))


if __name__ == "__main__":
    main()
