"""Parameter counts and compute per image for every catalogue model.

For each model: parameters at mini and full scale, GFLOP per image for one forward pass over all
steps at mini scale (torch.utils.flop_counter, which counts 2 FLOPs per multiply-add; convolutions
and matrix products only), and CPU milliseconds per image for that pass (batch 64, after one
warm-up batch).

    .venv/bin/python benchmarks/model_cost.py [--models lrm3 bl] [--full-flops]
"""

from __future__ import annotations

import argparse
import time

import torch
from _machine import load_note
from torch.utils.flop_counter import FlopCounterMode

from analysis_utils import catalogue

MINI_BUDGET_GFLOP = {"convrnn": 0.4}  # every other model: 0.2


def gflop_per_image(model, size: int, batch: int = 2) -> float:
    x = torch.randn(batch, 3, size, size)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.readouts(x)
    return counter.get_total_flops() / batch / 1e9


def ms_per_image(model, size: int, batch: int = 64, repeats: int = 3) -> float:
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        model.readouts(x)
        start = time.perf_counter()
        for _ in range(repeats):
            model.readouts(x)
    return (time.perf_counter() - start) / repeats / batch * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--full-flops", action="store_true", help="also count full-scale FLOPs")
    args = parser.parse_args()
    names = args.models or catalogue.names()
    header = f"{'model':<10} {'steps':>5} {'params mini':>12} {'params full':>12} " \
             f"{'GFLOP/img mini':>15} {'budget':>6} {'ms/img CPU':>10}"
    if args.full_flops:
        header += f" {'GFLOP/img full':>15}"
    print(f"before: {load_note()}")
    print(header)
    for name in names:
        card = catalogue.card(name)
        mini = catalogue.load(name, scale="mini", weights="untrained")
        flops = gflop_per_image(mini, card.input_size("mini"))
        budget = MINI_BUDGET_GFLOP.get(name, 0.2)
        params_mini = catalogue.parameter_count(name, "mini")
        params_full = catalogue.parameter_count(name, "full")
        line = (f"{name:<10} {card.default_steps:>5} {params_mini:>12,} "
                f"{params_full:>12,} {flops:>15.3f} {budget:>6.1f} "
                f"{ms_per_image(mini, card.input_size('mini')):>10.2f}")
        if args.full_flops:
            full = catalogue.load(name, scale="full", weights="untrained")
            line += f" {gflop_per_image(full, card.input_size('full'), batch=1):>15.2f}"
        print(line, flush=True)
    print(f"after: {load_note()}")


if __name__ == "__main__":
    main()
