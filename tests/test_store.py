"""The feature cache: keys, round trips, atomic writes, unreadable entries, the cache root."""

import json
import os
from pathlib import Path

import pytest
import torch

from analysis_utils import store

SPEC = {"model": "m", "scale": "mini", "steps": 3, "weights": {"kind": "untrained", "seed": 0},
        "probe": {"name": "tiny", "content_hash": "abc"}, "readout": "penult",
        "preprocessing": {"size": 64}, "code_version": "1", "load_spec": {"steps": 3}}


def test_key_ignores_dict_order_and_sees_every_value():
    reordered = dict(reversed(list(SPEC.items())))
    assert store.key(reordered) == store.key(SPEC)
    changed = [
        {**SPEC, "model": "n"}, {**SPEC, "scale": "full"}, {**SPEC, "steps": 4},
        {**SPEC, "weights": {"kind": "untrained", "seed": 1}},
        {**SPEC, "probe": {"name": "tiny", "content_hash": "abd"}}, {**SPEC, "readout": "logits"},
        {**SPEC, "preprocessing": {"size": 65}}, {**SPEC, "code_version": "2"},
        {**SPEC, "load_spec": {"steps": 3, "options": {"a": 1}}},
    ]
    keys = {store.key(spec) for spec in changed}
    assert len(keys) == len(changed) and store.key(SPEC) not in keys


def test_round_trip(tmp_path):
    features = torch.randn(3, 5, 7)
    path = store.save(tmp_path, "m", SPEC, features, {"note": "x"})
    assert path.exists() and path.suffix == ".safetensors"
    loaded, metadata = store.load(tmp_path, "m", SPEC)
    assert torch.equal(loaded, features) and loaded.dtype == torch.float32
    assert metadata == {"note": "x"}
    assert store.load(tmp_path, "m", {**SPEC, "steps": 4}) is None
    assert not list(Path(tmp_path).rglob("*.part"))


def test_interrupted_write_leaves_no_complete_entry(tmp_path, monkeypatch):
    real_replace = os.replace

    def crash_on_metadata(src, dst):
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt  # the run is killed between the two renames
        real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", crash_on_metadata)
    with pytest.raises(KeyboardInterrupt):
        store.save(tmp_path, "m", SPEC, torch.ones(2, 2, 2), {})
    monkeypatch.setattr(store.os, "replace", real_replace)
    tensor_path, meta_path = store.entry_paths(tmp_path, "m", store.key(SPEC))
    assert tensor_path.exists() and not meta_path.exists()
    assert store.load(tmp_path, "m", SPEC) is None  # not complete: nothing is read
    assert not list(Path(tmp_path).rglob("*.part"))
    store.save(tmp_path, "m", SPEC, torch.zeros(2, 2, 2), {})  # a later run completes it
    assert torch.equal(store.load(tmp_path, "m", SPEC)[0], torch.zeros(2, 2, 2))


@pytest.mark.parametrize("damage", ["truncate", "garbage_json", "other_spec"])
def test_unreadable_entry_warns_and_reads_as_absent(tmp_path, damage):
    store.save(tmp_path, "m", SPEC, torch.randn(2, 3, 4), {})
    tensor_path, meta_path = store.entry_paths(tmp_path, "m", store.key(SPEC))
    if damage == "truncate":
        tensor_path.write_bytes(tensor_path.read_bytes()[:40])
    elif damage == "garbage_json":
        meta_path.write_text("{not json")
    else:
        record = json.loads(meta_path.read_text())
        record["spec"]["steps"] = 99
        meta_path.write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="could not be read.*recomputing"):
        assert store.load(tmp_path, "m", SPEC) is None


def test_cache_root_argument_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ANALYSIS_UTILS_CACHE", str(tmp_path / "env"))
    assert store.cache_dir() == tmp_path / "env"
    assert store.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("ANALYSIS_UTILS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.cache_dir() == tmp_path / "xdg" / "analysis_utils" / "features"


# a child process that extracts one readout and stops, at the named point of writing its cache
# entry, until it is killed; it writes the marker file when it has stopped there
_KILLED_EXTRACTION = r"""
import os, sys, time
from pathlib import Path
import safetensors.torch
from analysis_utils import extract, probes

data_dir, cache, where, marker = sys.argv[1:5]


def stop_here():
    Path(marker).write_text(where)
    time.sleep(600)


if where == "tensor file half written":
    real_save = safetensors.torch.save_file

    def save_half(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata)
        with open(filename, "r+b") as handle:
            handle.truncate(os.path.getsize(filename) // 2)
        stop_here()

    safetensors.torch.save_file = save_half
else:  # the tensor file renamed into place, its metadata not yet
    real_replace = os.replace

    def replace_then_stop(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(".safetensors"):
            stop_here()

    os.replace = replace_then_stop
probe = probes.load("tiny", data_dir=data_dir, images_per_category=3)
extract.features("alexnet", probe, weights="untrained", readouts="penult", cache_dir=cache,
                 device="cpu", progress=False, force=where.startswith("overwriting"))
"""


@pytest.mark.parametrize("where", ["tensor file half written", "tensor file renamed",
                                   "overwriting a complete entry, tensor file renamed"])
def test_a_killed_extraction_leaves_no_entry_a_later_run_reads(tiny_dir, tmp_path, where):
    """A real child process is killed (SIGKILL) while it writes a cache entry; a later run
    finds no entry, recomputes without a warning and gets the numbers of a clean cache."""
    import signal
    import subprocess
    import sys
    import time
    import warnings

    from analysis_utils import extract, probes

    probe = probes.load("tiny", data_dir=tiny_dir, images_per_category=3)
    cache, marker = tmp_path / "cache", tmp_path / "stopped"
    options = {"weights": "untrained", "readouts": "penult", "device": "cpu"}
    quiet = {**options, "progress": False}
    if where.startswith("overwriting"):
        extract.features("alexnet", probe, cache_dir=cache, **quiet)
        assert extract.is_cached("alexnet", probe, cache_dir=cache, **options)
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_EXTRACTION, str(tiny_dir), str(cache), where,
         str(marker)], env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), f"the child did not reach the write: {child.communicate()[1]}"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    written = {path.name for path in (cache / "alexnet").iterdir()}
    assert not any(name.endswith(".json") for name in written), written  # the write was cut
    assert where.startswith("tensor file half") or any(
        name.endswith(".safetensors") for name in written), written  # its tensor file is there

    assert not extract.is_cached("alexnet", probe, cache_dir=cache, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "could not be read": the entry is simply absent
        again, meta = extract.features("alexnet", probe, cache_dir=cache, **quiet)
    assert meta["cache"]["from_cache"] == {"penult": False}
    clean, _ = extract.features("alexnet", probe, cache_dir=tmp_path / "clean", **quiet)
    assert torch.equal(again["penult"], clean["penult"])
    _, meta = extract.features("alexnet", probe, cache_dir=cache, **quiet)
    assert meta["cache"]["from_cache"] == {"penult": True}
