"""Plug-ins: the time-resolved adapter against native readouts, its refusals, register_model,
the plugins parameter, the entry-point group, the trainer, and a chapter run for the example."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from analysis_utils import book, build, catalogue, plugins
from analysis_utils.errors import AnalysisUtilsError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples.conv_gru"

CORNET_READOUTS = {"penult": "IT.output", "logits": "decoder", "V1": "V1.output",
                   "V2": "V2.output", "V4": "V4.output", "IT": "IT.output"}
BL_READOUTS = {"penult": "readout:input", "logits": "readout"}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the catalogue: models registered by a test are gone afterwards, and
    plug-in modules imported by it are imported afresh by the next test."""
    catalogue.names()  # import the families (and entry points) first
    monkeypatch.setattr(catalogue, "_REGISTRY", dict(catalogue._REGISTRY))
    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.syspath_prepend(str(ROOT))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("examples", "plugin_nothing", "plugin_broken"):
            del sys.modules[name]


def _native_and_adapted(name, readouts, steps=None):
    native = catalogue.build(name, scale="mini", steps=steps, seed=1).eval()
    adapted = plugins.time_resolved(native, readouts, steps=native.n_steps).eval()
    return native, adapted


# ------------------------------------------------------------------ the adapter


@pytest.mark.parametrize("name, readouts, steps", [
    ("cornet_rt", CORNET_READOUTS, None),
    ("cornet_rt", CORNET_READOUTS, 7),  # the study's 7 steps
    ("bl", BL_READOUTS, None),
    ("b", BL_READOUTS, None),  # feedforward: the one-step case
])
def test_adapter_equals_native_readouts_at_every_step(name, readouts, steps):
    native, adapted = _native_and_adapted(name, readouts, steps)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = native.readouts(x, tuple(readouts))
        got = adapted.readouts(x)
    assert tuple(got) == tuple(readouts)
    for readout, values in got.items():
        assert values.shape == expected[readout].shape == (native.n_steps, 3, values.shape[2])
        torch.testing.assert_close(values, expected[readout], rtol=0, atol=1e-6)
    # the steps really differ (a wrong adapter repeating one call would give equal steps)
    if native.n_steps > 1:
        assert not torch.allclose(got["logits"][-1], got["logits"][-2])
    torch.testing.assert_close(adapted(x), expected["logits"][-1], rtol=0, atol=1e-6)


def test_a_module_called_a_different_number_of_times_is_refused():
    native = catalogue.build("cornet_rt", scale="mini").eval()
    adapted = plugins.time_resolved(native, CORNET_READOUTS, steps=4)
    with pytest.raises(AnalysisUtilsError,
                       match=r"'decoder' \(readout 'logits'\) of CORnetRT ran 5 times in one "
                             r"forward pass, but steps=4; pass steps=5"):
        adapted.readouts(torch.randn(1, 3, 64, 64), ("logits",))
    # the hooks are gone after the refusal: the native model runs as before
    assert not native.decoder._forward_hooks


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3)
        self.spare = nn.Linear(4, 2)
        self.head = nn.Linear(4, 2)
        self.cell = nn.LSTMCell(4, 4)

    def forward(self, x):
        features = self.body(x).mean(dim=(2, 3))
        return self.head(self.cell(features)[0])


def test_a_module_never_called_or_missing_or_not_a_map_is_refused():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(AnalysisUtilsError, match="'spare' .* was not called in a forward pass"):
        plugins.time_resolved(Unused(), {"penult": "body", "logits": "spare"}, 1).readouts(x)
    with pytest.raises(AnalysisUtilsError, match="does not have; use a path .* 'head'"):
        plugins.time_resolved(Unused(), {"penult": "body", "logits": "heads"}, 1)
    with pytest.raises(AnalysisUtilsError,
                       match=r"is a tuple of 2; pick one element with 'cell\[0"):
        plugins.time_resolved(Unused(), {"penult": "cell", "logits": "head"}, 1).readouts(x)
    out = plugins.time_resolved(Unused(), {"penult": "cell[0]", "logits": "head",
                                           "body_in": "body:input"}, 1).readouts(x)
    assert out["penult"].shape == (1, 2, 4) and out["body_in"].shape == (1, 2, 3)
    torch.testing.assert_close(out["body_in"][0], x.mean(dim=(2, 3)))
    with pytest.raises(AnalysisUtilsError, match="must name the module of 'logits'"):
        plugins.time_resolved(Unused(), {"penult": "body"}, 1)
    with pytest.raises(AnalysisUtilsError, match="steps must be a positive integer"):
        plugins.time_resolved(Unused(), {"penult": "body", "logits": "head"}, 0)
    with pytest.raises(AnalysisUtilsError, match="needs a torch.nn.Module"):
        plugins.time_resolved(Unused, {"penult": "body", "logits": "head"}, 1)


# ------------------------------------------------------------------ register_model and plugins


def test_the_example_registers_through_the_adapter(registry, tmp_path):
    assert plugins.load_plugins(EXAMPLE) == {EXAMPLE: ("conv_gru",)}
    assert plugins.load_plugins(f" {EXAMPLE} ,") == {EXAMPLE: ("conv_gru",)}  # a second time
    card = catalogue.card("conv_gru")
    assert card.readouts == ("penult", "logits", "gru1") and card.default_steps == 5
    assert card.loss_timing == "all steps" and card.states == {"baseline": 1, "after": 5}
    assert card.code_version.startswith("source ")
    model = catalogue.load("conv_gru", weights="untrained", seed=2)
    x = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        out = model.readouts(x)
        own = model.model(x)  # the user's model returns its logits of every step itself
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "penult": (5, 4, 64), "logits": (5, 4, 100), "gru1": (5, 4, 32)}
    torch.testing.assert_close(out["logits"], own, rtol=0, atol=1e-6)

    # a torch.save(state_dict) file of the user's model loads by path, strictly
    other = catalogue.build("conv_gru", seed=7).model
    torch.save(other.state_dict(), tmp_path / "mine.pt")
    loaded = catalogue.load("conv_gru", weights=tmp_path / "mine.pt")
    torch.testing.assert_close(loaded.model.classifier.weight, other.classifier.weight)
    torch.save({"classifier.weight": other.classifier.weight}, tmp_path / "partial.pt")
    with pytest.raises(AnalysisUtilsError, match="lacks the key"):
        catalogue.load("conv_gru", weights=tmp_path / "partial.pt")


def test_plugin_modules_that_are_unknown_or_register_nothing_get_one_sentence(
        registry, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "plugin_nothing.py").write_text("import torch\n")
    (tmp_path / "plugin_broken.py").write_text("import no_such_dependency_xyz\n")
    cases = [("examples.no_such_module", "cannot be imported .* on PYTHONPATH"),
             ("plugin_nothing", "registers no model when imported"),
             ("plugin_broken", "needs the missing module 'no_such_dependency_xyz'"),
             ("examples/conv_gru.py", "not a module name"),
             (3, "plugins must be a comma-separated string")]
    for spec, words in cases:
        with pytest.raises(AnalysisUtilsError, match=words):
            plugins.load_plugins(spec)
    assert plugins.load_plugins(None) == {} and plugins.load_plugins("") == {}


def test_a_module_imported_before_load_plugins_still_counts(registry):
    import examples.conv_gru  # noqa: F401  (a user imported it in their own session)

    assert plugins.load_plugins(EXAMPLE) == {EXAMPLE: ("conv_gru",)}


def test_register_model_refuses_bad_names_builds_and_readouts(registry):
    def build(scale, steps):
        return Unused()

    good = {"penult": "body", "logits": "head"}
    with pytest.raises(AnalysisUtilsError, match="in the catalogue already"):
        plugins.register_model("bl", build, readouts=good, steps=1, code_version="1")
    with pytest.raises(AnalysisUtilsError, match="lower-case letters"):
        plugins.register_model("My Model", build, readouts=good, steps=1, code_version="1")
    with pytest.raises(AnalysisUtilsError, match="build must be a function"):
        plugins.register_model("mine", Unused(), readouts=good, steps=1, code_version="1")
    with pytest.raises(AnalysisUtilsError, match="must name the module of 'penult'"):
        plugins.register_model("mine", build, readouts={"logits": "head"}, steps=1)
    for options, words in [({"loss_timing": "all steps"}, "does not fit a model of 1 step"),
                           ({"headline_readout": "V1"}, "headline_readout 'V1' is not one"),
                           ({"states": {"baseline": 2}}, "each from 1 to 1")]:
        with pytest.raises(AnalysisUtilsError, match=words):
            plugins.register_model("mine", build, readouts=good, steps=1, code_version="1",
                                   **options)
    card = plugins.register_model("mine", build, readouts=good, steps=1, code_version="1")
    assert card.recurrence == "none" and card.states == {"baseline": 1}
    assert card.loss_timing == "single output"
    assert "mine" in catalogue.names()


def test_the_plugins_parameter_reaches_check_parameters_and_prefill(registry):
    params = book.check_parameters(weights="untrained", plugins=EXAMPLE, models="conv_gru,bl")
    assert params.plugins == (EXAMPLE,) and params.plugin_models == ("conv_gru",)
    assert params.models == ("conv_gru", "bl")
    assert "examples.conv_gru" in book.rendered_with(params)
    with pytest.raises(AnalysisUtilsError, match="cannot be imported"):
        book.check_parameters(weights="untrained", plugins="examples.nope", models="bl")
    assert build.preflight(["-p", "plugins", "examples.nope"]) == 2


def test_prefill_extracts_a_plugin_in_spawned_workers(registry, tmp_path, capsys):
    """The prefill's workers start with the catalogue's own models: each job names the plug-in
    module of its model, and the worker imports it before extracting."""
    import jupytext
    from conftest import write_tiny_layout

    from analysis_utils import extract, probes

    data = write_tiny_layout(tmp_path / "data", n_wnids=8, images_per_wnid=3)
    source = tmp_path / "07_own_model.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks" / "07_own_model.py"), source)
    cache = tmp_path / "cache"
    pairs = ["-p", "weights", "untrained", "-p", "models", "conv_gru,b", "-p", "data_dir",
             str(data), "-p", "cache_dir", str(cache), "-p", "images_per_category", "3"]
    jobs = build.prefill_jobs([source], pairs)  # the chapter's default plugins: the example
    assert [(job.model, job.plugins) for job in jobs] == [("conv_gru", (EXAMPLE,)), ("b", ())]
    assert build.main(["prefill", "--workers", "2", str(source), *pairs]) == 0
    assert "2 of 2 extractions to run on 2 worker(s)" in capsys.readouterr().out
    probe = probes.load("tiny", data_dir=data, images_per_category=3)
    _, meta = extract.features("conv_gru", probe, weights="untrained", cache_dir=cache,
                               progress=False)
    assert all(meta["cache"]["from_cache"].values())


def test_an_installed_package_registers_through_the_entry_point_group(tmp_path):
    """A package installed in site-packages style (module + dist-info with entry_points.txt)
    is registered on first use of the catalogue, with no plugins parameter."""
    site = tmp_path / "site"
    (site / "dummy_models").mkdir(parents=True)
    (site / "dummy_models" / "__init__.py").write_text(textwrap.dedent("""
        from torch import nn
        from analysis_utils import plugins

        class Net(nn.Module):
            def __init__(self, classes):
                super().__init__()
                self.body = nn.Conv2d(3, 4, 3)
                self.head = nn.Linear(4, classes)

            def forward(self, x):
                return self.head(self.body(x).mean(dim=(2, 3)))

        def register():
            plugins.register_model("dummy_net", lambda scale, steps: Net(10), steps=1,
                                   readouts={"penult": "body", "logits": "head"})
    """))
    info = site / "dummy_models-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dummy-models\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[analysis_utils.models]\ndummy = dummy_models:register\n")
    script = ("from analysis_utils import book, catalogue; print(catalogue.names()[-1]); "
              "print(book.check_parameters(weights='untrained', models='dummy_net,b').models)")
    env = {"PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["dummy_net", "('dummy_net', 'b')"]

    (info / "entry_points.txt").write_text("[analysis_utils.models]\ndummy = dummy_models\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, cwd=tmp_path)  # a module that registers nothing on import
    assert result.returncode != 0
    assert "registered no model" in result.stderr and "'dummy'" in result.stderr


# ------------------------------------------------------------------ the trainer


def test_the_trainer_trains_a_plugin_with_its_cards_loss_timing(registry, tmp_path):
    from analysis_utils import train

    plugins.load_plugins(EXAMPLE)
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(4)
    images = torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8, generator=generator)
    data = train.ImageSet(images, labels)
    entry = train.train_model("conv_gru", train_data=data, val_data=data, out_dir=tmp_path,
                              epochs=1, device="cpu", batch_size=8, val_subset_per_class=2,
                              log=lambda line: None)
    assert entry["config"]["loss_steps"] == [1, 2, 3, 4, 5]  # "all steps" on the card (1-based)
    trained = catalogue.load("conv_gru", weights=tmp_path / "conv_gru.safetensors")
    initial = catalogue.build("conv_gru", seed=0)
    assert not torch.equal(trained.model.classifier.weight, initial.model.classifier.weight)


def test_a_plugins_trained_dir_receives_and_serves_its_trained_weights(registry, tmp_path):
    """train writes a plug-in's weights into the trained_dir it registered (not the package's
    zoo), and weights="trained" reads them from there, hash-checked."""
    from analysis_utils import train, weights

    plugins.load_plugins(EXAMPLE)
    from examples.conv_gru import ConvGRUNet

    folder = tmp_path / "mine"
    plugins.register_model("gru_here", build=lambda scale, steps: ConvGRUNet(100, steps=steps),
                           readouts={"penult": "cell2", "logits": "classifier"}, steps=2,
                           loss_timing="all steps", trained_dir=folder)
    assert train.default_out_dir(["gru_here"]) == folder
    assert train.default_out_dir(["bl"]) == weights.ZOO_DIR / "mini"
    with pytest.raises(AnalysisUtilsError, match="different folders"):
        train.default_out_dir(["gru_here", "bl"])
    with pytest.raises(AnalysisUtilsError, match=f"No trained mini weights for 'gru_here' are "
                                                 f"in {folder}"):
        catalogue.load("gru_here", weights="trained")
    labels = torch.arange(4).repeat(4)
    images = torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    data = train.ImageSet(images, labels)
    train.train_model("gru_here", train_data=data, val_data=data,
                      out_dir=train.default_out_dir(["gru_here"]), epochs=1, device="cpu",
                      batch_size=8, val_subset_per_class=2, log=lambda line: None)
    path = folder / "gru_here.safetensors"
    assert "gru_here" in weights.zoo_manifest("mini", folder)["models"]
    assert "gru_here" not in weights.zoo_manifest("mini").get("models", {})
    loaded = catalogue.load("gru_here", weights="trained")
    assert loaded.weights_id == {"kind": "trained", "sha256": weights.file_sha256(path)}
    from_file = catalogue.load("gru_here", weights=path)
    assert torch.equal(loaded.model.classifier.weight, from_file.model.classifier.weight)
    changed = bytearray(path.read_bytes())
    changed[-1] ^= 1  # one bit of the last weight: the hash no longer matches
    path.write_bytes(bytes(changed))
    with pytest.raises(AnalysisUtilsError, match="zoo manifest expects"):
        catalogue.load("gru_here", weights="trained")


def test_the_train_command_loads_plugins_before_it_checks_the_model(registry, tmp_path):
    import argparse

    from analysis_utils import train

    parser = train.add_arguments(argparse.ArgumentParser())
    with pytest.raises(AnalysisUtilsError, match="no_such_plugin_module"):
        train.main(parser.parse_args(["--model", "conv_gru", "--plugins", "no_such_plugin_module",
                                      "--epochs", "1", "--out", str(tmp_path)]))
    with pytest.raises(AnalysisUtilsError, match="Unknown model 'conv_gru'"):
        train.main(parser.parse_args(["--model", "conv_gru", "--epochs", "1",
                                      "--out", str(tmp_path)]))
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ a chapter for the example


@pytest.mark.slow
def test_a_chapter_runs_for_the_example_next_to_bl(tmp_path, real_tiny_dir, monkeypatch):
    """papermill ... -p plugins examples.conv_gru -p models conv_gru,bl, as make book runs it
    (the repository root on PYTHONPATH, the chapter in its own folder)."""
    import jupytext

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("ANALYSIS_UTILS_RESULTS", str(tmp_path / "results"))  # not the book's
    source = tmp_path / "02_dynamics.src.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks" / "02_dynamics.py"), source)
    output = tmp_path / "02_dynamics.ipynb"
    command = [str(Path(sys.executable).parent / "papermill"), "--no-progress-bar",
               "--log-level", "WARNING", "-k", "python3", "--cwd", str(tmp_path),
               str(source), str(output), "-p", "plugins", EXAMPLE, "-p", "models", "conv_gru,bl",
               "-p", "weights", "untrained", "-p", "images_per_category", "3",
               "-p", "n_perm", "20", "-p", "device", "cpu", "-p", "data_dir", str(real_tiny_dir),
               "-p", "cache_dir", str(tmp_path / "cache")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert build.check_outputs([output]) == []
    text = output.read_text()
    assert "ConvGRU (example)" in text and "conv_gru" in text and "image/png" in text
