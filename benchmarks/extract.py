"""Benchmark: feature extraction per catalogue model, cold (computed) and warm (cached).

Mini scale on the tiny probe (default 100 categories x 50 images), untrained weights::

    .venv/bin/python benchmarks/extract.py --data-dir /tmp/tinyprobe
    .venv/bin/python benchmarks/extract.py --models bl cornet_rt --images-per-category 10
    .venv/bin/python benchmarks/extract.py --data-dir /tmp/tinyprobe --threads 1

``--threads`` sets torch's intra-op threads (default: torch's choice). The load average is
printed before and after (see ``_machine.py``): times from a busy machine are not valid.

With ``--full-gpu`` (and CUDA), also full-scale models with random weights on ``--full-images``
copies of one generated 500x375 image, against a bare forward loop over the same number of
preprocessed images already on the GPU. Targets (issue 7): all seven mini models cold within
2 minutes on a 2-core CPU, warm within 5 seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import load_note
from PIL import Image

from analysis_utils import catalogue, extract, probes


def mini_benchmark(args) -> None:
    probe = probes.load("tiny", data_dir=args.data_dir,
                        images_per_category=args.images_per_category)
    names = args.models or catalogue.names()
    cache = args.cache_dir or tempfile.mkdtemp(prefix="bench-cache-")
    print(f"before: {load_note()}")
    print(f"mini scale, {len(probe)} images, {torch.get_num_threads()} torch threads, "
          f"cache {cache}")
    print(f"{'model':<10} {'steps':>5} {'cold s':>8} {'img/s':>8} {'warm s':>8}")
    total_cold = total_warm = 0.0
    for name in names:
        kwargs = {"weights": "untrained", "cache_dir": cache, "device": args.device,
                  "batch_size": args.batch_size, "progress": False}
        start = time.perf_counter()
        _, meta = extract.features(name, probe, force=True, **kwargs)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        _, warm_meta = extract.features(name, probe, **kwargs)
        warm = time.perf_counter() - start
        assert all(warm_meta["cache"]["from_cache"].values())
        total_cold += cold
        total_warm += warm
        print(f"{name:<10} {meta['steps']:>5} {cold:>8.1f} {len(probe) / cold:>8.1f} "
              f"{warm:>8.2f}", flush=True)
    print(f"{'all':<10} {'':>5} {total_cold:>8.1f} {'':>8} {total_warm:>8.2f}")
    print(f"after: {load_note()}")


def repeated_probe(n: int) -> probes.Probe:
    """``n`` copies of one generated 500x375 image (a stand-in for ImageNet val photos)."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8), "RGB")
    return probes.Probe(
        name=f"repeated-{n}", images=[image] * n, labels=torch.zeros(n, dtype=torch.int64),
        category_ids=("n00000000",), category_names=("noise",),
        file_names=tuple(f"copy_{i}" for i in range(n)), file_hashes=("0" * 64,) * n,
        source=Path("."),
    )


def bare_loop(name: str, n: int, batch_size: int, device: torch.device) -> float:
    """Seconds for ``model.readouts`` over ``n`` images already preprocessed on the device."""
    model = catalogue.load(name, scale="full", weights="untrained", device=device)
    size = catalogue.card(name).input_size("full")
    x = torch.randn(batch_size, 3, size, size, device=device)
    with torch.inference_mode():
        model.readouts(x, ("penult", "logits"))  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        for first in range(0, n, batch_size):
            model.readouts(x[: min(batch_size, n - first)], ("penult", "logits"))
        torch.cuda.synchronize()
    return time.perf_counter() - start


def full_gpu_benchmark(args) -> None:
    if not torch.cuda.is_available():
        print("full-scale GPU benchmark skipped: CUDA is not available")
        return
    device = torch.device("cuda")
    probe = repeated_probe(args.full_images)
    cache = tempfile.mkdtemp(prefix="bench-full-")
    batch = args.full_batch_size
    print(f"before: {load_note()}")
    print(f"full scale on {torch.cuda.get_device_name()}, {len(probe)} images, batch {batch}")
    print(f"{'model':<10} {'steps':>5} {'extract s':>10} {'img/s':>8} {'bare s':>8} "
          f"{'bare img/s':>10} {'warm s':>8}")
    for name in args.models or catalogue.names():
        kwargs = {"scale": "full", "weights": "untrained", "cache_dir": cache, "device": "cuda",
                  "batch_size": batch, "progress": False}
        torch.cuda.synchronize()
        start = time.perf_counter()
        _, meta = extract.features(name, probe, force=True, **kwargs)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        extract.features(name, probe, **kwargs)
        warm = time.perf_counter() - start
        bare = bare_loop(name, len(probe), batch, device)
        print(f"{name:<10} {meta['steps']:>5} {cold:>10.1f} {len(probe) / cold:>8.0f} "
              f"{bare:>8.1f} {len(probe) / bare:>10.0f} {warm:>8.2f}", flush=True)
    print(f"after: {load_note()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder holding tiny-imagenet-200/")
    parser.add_argument("--models", nargs="*", default=None, help="default: every model")
    parser.add_argument("--images-per-category", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--skip-mini", action="store_true")
    parser.add_argument("--full-gpu", action="store_true")
    parser.add_argument("--full-images", type=int, default=5000)
    parser.add_argument("--full-batch-size", type=int, default=250)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not args.skip_mini:
        mini_benchmark(args)
    if args.full_gpu:
        full_gpu_benchmark(args)


if __name__ == "__main__":
    main()
