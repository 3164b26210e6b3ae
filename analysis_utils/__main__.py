"""The command line: ``python -m analysis_utils {list,extract,download,train} ...``.

- ``list [--scale mini]``: the catalogue table.
- ``extract --model cornet_rt --scale mini --weights untrained --probe tiny``: compute (or read
  from the cache) the time-resolved readouts; prints each readout's shape and the cache files.
- ``download tiny-imagenet [--dest DIR]``: download the official archive (checked by size and
  md5) and unpack the probe and training images of the 100 probe categories into
  ``DIR/tiny-imagenet-200`` (default: the user cache, where the tiny probe looks last).
- ``train ...``: the mini-zoo trainer (``analysis_utils.train``), imported only when asked for.

``list`` and ``extract`` take ``--plugins mypkg.models,...``: modules that register models of
your own when imported (see ``analysis_utils.plugins``).
"""

from __future__ import annotations

import argparse
import sys

from .errors import AnalysisUtilsError


def _add_plugins_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugins", default=None,
                        help="comma-separated modules that register your own models, for "
                             "example examples.conv_gru")


def _add_extract_arguments(parser: argparse.ArgumentParser) -> None:
    _add_plugins_argument(parser)
    parser.add_argument("--model", required=True, action="append", dest="models",
                        help="catalogue model name (repeat for several)")
    parser.add_argument("--scale", default="mini", help="mini (default) or full")
    parser.add_argument("--weights", default=None,
                        help="trained, official, untrained or a checkpoint path "
                             "(default: trained at mini, official at full)")
    parser.add_argument("--seed", type=int, default=0, help="seed for untrained weights")
    parser.add_argument("--probe", default="tiny", help="tiny (default) or imagenet")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding tiny-imagenet-200/ (tiny) or the ILSVRC2012 val "
                             "images (imagenet); default $ANALYSIS_UTILS_DATA")
    parser.add_argument("--images-per-category", type=int, default=50)
    parser.add_argument("--readouts", nargs="+", default=["penult", "logits"])
    parser.add_argument("--steps", type=int, default=None, help="steps to unroll (card default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--cache-dir", default=None, help="default $ANALYSIS_UTILS_CACHE")
    parser.add_argument("--force", action="store_true", help="recompute and overwrite the cache")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis_utils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="print the model catalogue")
    listing.add_argument("--scale", default="mini")
    _add_plugins_argument(listing)
    _add_extract_arguments(commands.add_parser("extract", help="extract time-resolved features"))
    download = commands.add_parser("download", help="download a data set (tiny-imagenet)")
    download.add_argument("dataset", choices=["tiny-imagenet"])
    download.add_argument("--dest", default=None,
                          help="folder to hold tiny-imagenet-200/ (default: the user cache)")
    commands.add_parser("train", help="train the mini zoo (see 'train --help')", add_help=False)
    return parser


def _run_list(args) -> None:
    import pandas as pd

    from . import catalogue

    catalogue.check_scale(args.scale)
    with pd.option_context("display.max_columns", None, "display.width", 250,
                           "display.max_colwidth", 60):
        print(catalogue.table(args.scale).to_string(index=False))


def _run_extract(args) -> None:
    from . import extract, probes

    probe = probes.load(args.probe, data_dir=args.data_dir,
                        images_per_category=args.images_per_category)
    print(f"probe {probe.name}: {len(probe)} images, {probe.n_categories} categories, "
          f"from {probe.source}")
    for name in args.models:
        feats, meta = extract.features(
            name, probe, scale=args.scale, weights=args.weights, seed=args.seed,
            readouts=args.readouts, steps=args.steps, device=args.device,
            batch_size=args.batch_size, cache_dir=args.cache_dir, force=args.force)
        for readout, tensor in feats.items():
            origin = "cached" if meta["cache"]["from_cache"][readout] else "computed"
            print(f"{name} {readout}: [T, N, D] = {list(tensor.shape)} ({origin}) -> "
                  f"{meta['cache']['files'][readout]}")
        print(f"{name}: {meta['seconds']:.1f} s on {meta['device']}")


def _run_download(args) -> None:
    from . import tiny_imagenet

    folder = tiny_imagenet.download(args.dest)
    print(f"Tiny-ImageNet is in {folder}; the tiny probe finds it there"
          + ("" if args.dest is None else f" with ANALYSIS_UTILS_DATA={folder.parent}") + ".")


def _run_train(argv: list[str]) -> int:
    try:
        from . import train
    except ImportError as exc:
        if getattr(exc, "name", None) not in ("analysis_utils.train", None):
            raise
        print("error: the trainer (analysis_utils.train) is not part of this installation yet, "
              "so 'train' cannot run; use weights='untrained' or the shipped mini zoo.",
              file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m analysis_utils train")
    train.add_arguments(parser)
    train.main(parser.parse_args(argv))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "train":
            return _run_train(argv[1:])
        args = build_parser().parse_args(argv)
        from .plugins import load_plugins

        load_plugins(getattr(args, "plugins", None))  # 'download' takes no plugins
        if args.command == "list":
            _run_list(args)
        elif args.command == "extract":
            _run_extract(args)
        elif args.command == "download":
            _run_download(args)
        return 0
    except AnalysisUtilsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
