"""Training speed of the mini models on this machine: images/s of one training iteration.

For each model and each speed option set (eager float32, bf16 autocast, channels_last,
torch.compile, and combinations), the training step of ``analysis_utils.train`` (augmentation,
normalisation, forward, the card's loss timing, backward, AdamW) runs on random 64x64 images;
the first iterations (and compilation) are excluded from the timing. The load average is
printed before and after: a ratio between option sets is only valid when the load stays below
the number of cores.

    .venv/bin/python benchmarks/train_speed.py --models alexnet,bl --threads 1 --batch-size 64
    .venv/bin/python benchmarks/train_speed.py --options eager,bf16,compile,compile+bf16
"""

from __future__ import annotations

import argparse
import time

import torch
from _machine import load_note

from analysis_utils import catalogue, train

OPTION_SETS = {
    "eager": train.SpeedOptions("float32", False, False),
    "bf16": train.SpeedOptions("bf16-autocast", False, False),
    "channels_last": train.SpeedOptions("float32", False, True),
    "bf16+channels_last": train.SpeedOptions("bf16-autocast", False, True),
    "compile": train.SpeedOptions("float32", True, False),
    "compile+bf16": train.SpeedOptions("bf16-autocast", True, False),
}


def images_per_second(name: str, options: train.SpeedOptions, batch_size: int,
                      timed: int) -> float:
    card = catalogue.card(name)
    config = train.TrainConfig(epochs=1, batch_size=batch_size)
    model = catalogue.build(name, scale="mini", steps=train.training_steps(card), seed=0)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4 * batch_size, 3, 64, 64), dtype=torch.uint8,
                           generator=generator)
    labels = torch.randint(0, 100, (4 * batch_size,), generator=generator)
    trainer = train._Trainer(model, card, images, labels, config, torch.device("cpu"), options)
    warmup = 3 if options.compile else 2  # compilation happens in the first iterations
    return trainer.measure_images_per_second(warmup=warmup, timed=timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(train.ZOO_MODELS))
    parser.add_argument("--options", default="eager,bf16,channels_last",
                        help=f"comma-separated, from: {', '.join(OPTION_SETS)}")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--timed", type=int, default=6, help="timed iterations per measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chosen = [o.strip() for o in args.options.split(",") if o.strip()]
    unknown = [o for o in chosen if o not in OPTION_SETS]
    if unknown:
        raise SystemExit(f"Unknown option set {unknown[0]!r}; expected one of "
                         f"{', '.join(OPTION_SETS)}.")
    print(f"before: {load_note()}; torch {torch.__version__}, {args.threads} threads, "
          f"batch {args.batch_size}")
    print("| model | " + " | ".join(chosen) + " |")
    print("|---|" + "---|" * len(chosen))
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        speeds = []
        for option in chosen:
            start = time.perf_counter()
            speed = images_per_second(name, OPTION_SETS[option], args.batch_size, args.timed)
            speeds.append(f"{speed:,.0f} ({time.perf_counter() - start:.0f} s)")
        print(f"| {name} | " + " | ".join(speeds) + " |", flush=True)
    print(f"after: {load_note()}")


if __name__ == "__main__":
    main()
