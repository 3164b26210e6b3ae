"""Time `make book` cold (empty feature cache) and warm, per chapter, with peak memory.

Runs `make book PARAMS=...` first with a fresh, empty feature cache (cold: every feature is
extracted) and then `--warm` more times on the filled cache, and prints for each run: the wall
time, the prefill's summary line, each chapter's papermill duration, the peak memory of the
whole build (the sum of the proportional set size, PSS, over make, papermill and the kernels,
so shared libraries count once; sampled every 0.5 s) and the load average before the run.
The targets set for the untrained book on a 2-core CPU were cold <= 180 s and warm <= 45 s;
the trained book (the default) takes longer (the README gives the measured times).

    .venv/bin/python benchmarks/book.py --data-dir /tmp/probe            # the default book
    .venv/bin/python benchmarks/book.py --data-dir /tmp/probe --warm 3 --params "-p n_perm 10000"

``--chapter-cost NAME`` measures what one chapter adds: the same builds (cold, then
``--warm`` warm ones, each cold build with its own empty cache) of the book as it is and of a
copy of the working tree without that chapter (its source, its table-of-contents entry and the
lines of ``book/*.md`` that link it removed), alternating (``--without-first`` swaps the
order), each started once the load average is below the number of cores, and prints the
differences:

    .venv/bin/python benchmarks/book.py --data-dir /tmp/probe --chapter-cost 06_perturbations

Two whole cold builds drift apart on a shared machine (identical extractions measured up to
1.9x apart between builds), so ``--chapter-prefill NAME`` times only the extraction the
chapter adds: the prefill of every chapter on a copy of a cache that already holds the other
chapters' features (filled first, not timed), ``--warm`` times. The chapter's cold cost is that
plus its execution, which the warm difference of ``--chapter-cost`` measures:

    .venv/bin/python benchmarks/book.py --data-dir /tmp/probe --chapter-prefill 06_perturbations

``--data-dir`` is the folder holding ``tiny-imagenet-200/`` (default: $ANALYSIS_UTILS_DATA).
Memory is read with psutil (installed with ipykernel, which the book needs).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
from _machine import cores, load_note

ROOT = Path(__file__).resolve().parents[1]


def _tree_pss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def run_build(params: str, env: dict, root: Path = ROOT) -> dict:
    """One `make book` in ``root``; its wall time, output and the peak PSS of its process
    tree."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen(["make", "--no-print-directory", "book", f"PARAMS={params}"],
                               cwd=root, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        watched = psutil.Process(process.pid)
        while not done.is_set():
            try:
                peak = max(peak, _tree_pss(watched))
            except psutil.Error:
                pass
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"make book failed (exit {process.returncode}):\n{output[-3000:]}")
    prefill = next((line for line in output.splitlines() if line.startswith("Features for")), "")
    chapters = {}
    for notebook in sorted((root / "book" / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        meta = json.loads(notebook.read_text())["metadata"].get("papermill", {})
        chapters[notebook.stem] = meta.get("duration")
    return {"wall": wall, "prefill": prefill, "chapters": chapters, "peak_pss": peak,
            "load": load}


def check_chapter(chapter: str) -> str:
    """``chapter`` when notebooks/<chapter>.py exists; otherwise exit with one sentence."""
    if not (ROOT / "notebooks" / f"{chapter}.py").exists():
        raise SystemExit(f"There is no chapter {chapter!r} in notebooks/; give the name of a "
                         "notebooks/NN_*.py file without .py, for example 06_perturbations.")
    return chapter


def tree_without(chapter: str, destination: Path) -> Path:
    """A copy of the working tree's tracked files at ``destination`` without ``chapter``: its
    source notebook, its _toc.yml entry and the lines of book/*.md that link it are removed;
    .venv is linked, not copied."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    (destination / ".venv").symlink_to(ROOT / ".venv")
    (destination / "notebooks" / f"{chapter}.py").unlink()
    link = f"notebooks/{chapter}"
    for text_file in [destination / "_toc.yml", *(destination / "book").glob("*.md")]:
        lines = text_file.read_text().splitlines(keepends=True)
        text_file.write_text("".join(line for line in lines if link not in line))
    return destination


def _print_build(kind: str, result: dict) -> None:
    chapters = ", ".join(f"{name[:2]} {seconds:.1f} s"
                         for name, seconds in result["chapters"].items())
    print(f"{kind}: {result['wall']:.1f} s (load before {result['load']:.2f}; peak PSS "
          f"{result['peak_pss'] / 2**30:.2f} GiB); chapters: {chapters}")
    print(f"      {result['prefill']}")


def settle(limit: float = 180.0) -> None:
    """Wait (at most ``limit`` s) until the 1-minute load average is below the number of
    cores, so that a build does not start in the tail of the previous one."""
    started = time.perf_counter()
    while os.getloadavg()[0] >= cores() and time.perf_counter() - started < limit:
        time.sleep(5)


def chapter_cost(chapter: str, params: str, warm: int, data_dir: str,
                 without_first: bool = False) -> None:
    """Cold and warm builds with and without ``chapter``, alternating (the build with it
    first, unless ``without_first``); the differences."""
    with tempfile.TemporaryDirectory(prefix="book-benchmark-") as scratch:
        scratch = Path(scratch)
        trees = {"with": ROOT, "without": tree_without(chapter, scratch / "tree")}
        if without_first:
            trees = {"without": trees["without"], "with": trees["with"]}
        print(f"before: {load_note()}")
        print(f"make book PARAMS=\"{params}\" on {os.cpu_count()} CPUs, with and without "
              f"{chapter}")
        walls: dict[str, list[float]] = {"with": [], "without": []}
        for index in range(1 + warm):
            kind = "cold" if index == 0 else "warm"
            for label, root in trees.items():
                env = {**os.environ, "ANALYSIS_UTILS_DATA": data_dir,  # a fresh cache per tree
                       "ANALYSIS_UTILS_CACHE": str(scratch / f"cache-{label}")}
                settle()
                result = run_build(params, env, root)
                walls[label].append(result["wall"])
                _print_build(f"{kind} {label}", result)
            print(f"   {chapter} adds {walls['with'][-1] - walls['without'][-1]:.1f} s to this "
                  f"{kind} build")
        print(f"after: {load_note()}")


def _prefill(notebooks: list[Path], params: str, env: dict) -> tuple[float, str]:
    """One `analysis_utils.build prefill` of ``notebooks``: (wall seconds, its summary)."""
    started = time.perf_counter()
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "analysis_utils.build",
                           "prefill", *map(str, notebooks), *shlex.split(params)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"prefill failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout.strip().splitlines()[-1]


def chapter_prefill(chapter: str, params: str, repeat: int, data_dir: str) -> None:
    """The extraction only ``chapter`` adds to a cold build: the prefill of every chapter on
    a cache that holds every other chapter's features (filled first, not timed), ``repeat``
    times on fresh copies of that cache. With the warm build's difference from
    :func:`chapter_cost` (the chapter's execution, which reads the cache alike cold or warm)
    it gives the chapter's cold cost without the drift of two whole cold builds."""
    sources = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    with tempfile.TemporaryDirectory(prefix="book-benchmark-") as scratch:
        scratch = Path(scratch)
        notebooks = []
        for source in sources:
            notebook = scratch / f"{source.stem}.ipynb"
            subprocess.run([str(ROOT / ".venv" / "bin" / "jupytext"), "--quiet", "--to",
                            "ipynb", str(source), "-o", str(notebook)], check=True)
            notebooks.append(notebook)
        others = [nb for nb in notebooks if nb.stem != chapter]
        base = scratch / "cache-others"
        env = {**os.environ, "ANALYSIS_UTILS_DATA": data_dir, "PYTHONPATH": str(ROOT),
               "ANALYSIS_UTILS_CACHE": str(base)}
        seconds, summary = _prefill(others, params, env)
        print(f"the other chapters' features (not timed): {seconds:.1f} s; {summary}")
        print(f"before: {load_note()}")
        for index in range(repeat):
            cache = scratch / f"cache-{index}"
            shutil.copytree(base, cache)
            settle()
            load = os.getloadavg()[0]
            seconds, summary = _prefill(notebooks, params,
                                        {**env, "ANALYSIS_UTILS_CACHE": str(cache)})
            print(f"{chapter}'s own extraction, run {index + 1}: {seconds:.1f} s (load before "
                  f"{load:.2f}); {summary}")
            shutil.rmtree(cache)
        print(f"after: {load_note()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("ANALYSIS_UTILS_DATA"),
                        help="folder holding tiny-imagenet-200/")
    parser.add_argument("--params", default="",
                        help="papermill parameters, as for make book PARAMS=... "
                        "(default: none, the default book)")
    parser.add_argument("--warm", type=int, default=2, help="warm runs after the cold one")
    parser.add_argument("--chapter-cost", metavar="NAME",
                        help="measure what chapter NAME (e.g. 06_perturbations) adds")
    parser.add_argument("--chapter-prefill", metavar="NAME",
                        help="time only the extraction that chapter NAME adds (--warm runs)")
    parser.add_argument("--without-first", action="store_true",
                        help="with --chapter-cost: build without the chapter first")
    args = parser.parse_args()
    if not args.data_dir or not (Path(args.data_dir) / "tiny-imagenet-200").is_dir():
        raise SystemExit("Pass --data-dir (or set ANALYSIS_UTILS_DATA) to the folder that holds "
                         "tiny-imagenet-200/, for example the unpacked val-probe100.tar.gz.")
    if args.chapter_prefill:
        chapter_prefill(check_chapter(args.chapter_prefill), args.params, max(1, args.warm),
                        args.data_dir)
        return
    if args.chapter_cost:
        chapter_cost(check_chapter(args.chapter_cost), args.params, args.warm, args.data_dir,
                     args.without_first)
        return
    with tempfile.TemporaryDirectory(prefix="book-benchmark-cache-") as cache:
        env = {**os.environ, "ANALYSIS_UTILS_DATA": args.data_dir,
               "ANALYSIS_UTILS_CACHE": cache}
        print(f"before: {load_note()}")
        print(f"make book PARAMS=\"{args.params}\" on {os.cpu_count()} CPUs")
        for index in range(1 + args.warm):
            _print_build("cold" if index == 0 else "warm", run_build(args.params, env))
        print(f"after: {load_note()}")


if __name__ == "__main__":
    main()
