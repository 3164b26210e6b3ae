"""Training the mini zoo: archive reading, loss timing, preprocessing, and a short end-to-end run.

Everything runs on CPU on tiny synthetic archives (10 categories x 8 images, written into a
tmp folder) with tiny models registered here, so nothing touches analysis_utils/zoo/mini.
"""

import argparse
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from analysis_utils import catalogue, train
from analysis_utils.errors import AnalysisUtilsError
from analysis_utils.models.base import StepRecorder, TimeResolvedModel
from analysis_utils.preprocess import mini_imagenet, square_minus1to1
from analysis_utils.weights import file_sha256

WNIDS = [f"n{i:08d}" for i in range(200)]  # a stand-in for the official 200 ids
PROBE = sorted(WNIDS)[::2]
N_CLASSES, PER_CLASS, VAL_PER_CLASS = 10, 8, 3
COLOURS = [(230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20), (230, 20, 230),
           (20, 230, 230), (130, 130, 130), (250, 250, 250), (10, 10, 10), (130, 60, 10)]
REAL_DATA = Path(train.default_data_dir())


# ----------------------------------------------------------------------------- fixtures


class TinyRecurrent(TimeResolvedModel):
    """A small recurrent net: conv, a recurrent conv with per-step BN, pooled linear readout."""

    def __init__(self, steps: int, norm_per_step: bool = True):
        super().__init__(steps, ("penult", "logits"))
        self.stem = nn.Conv2d(3, 8, 5, stride=4, padding=2)
        self.lateral = nn.Conv2d(8, 8, 3, padding=1)
        self.norms = nn.ModuleList(nn.BatchNorm2d(8) for _ in range(steps if norm_per_step else 1))
        self.fc = nn.Linear(8, 100)

    def _readouts(self, x, names):
        record = StepRecorder(names)
        drive = self.stem(x)
        state = torch.zeros_like(drive)
        for t in range(self.n_steps):
            norm = self.norms[min(t, len(self.norms) - 1)]
            state = torch.relu(norm(drive + self.lateral(state)))
            pooled = state.mean(dim=(2, 3))
            record.add("penult", pooled)
            record.add("logits", self.fc(pooled))
        return record.stacked()


def _card(name, loss_timing, steps, preprocessing):
    return catalogue.ModelCard(
        name=name, display_name=name, family="test", recurrence="within-layer",
        mechanism="additive", loss_timing=loss_timing, counterpart=None, step_unit="t",
        default_steps=steps, readouts=("penult", "logits"), headline_readout="logits",
        states={"baseline": 1, "after": steps},
        preprocessing={"mini": preprocessing, "full": preprocessing}, official_weights=None,
        colors=("#000000", "#888888"), reference="test model")


TEST_MODELS = {  # name: loss timing, steps, preprocessing, a BatchNorm per step
    "_train_test_final": ("final step", 3, mini_imagenet(), True),
    "_train_test_all": ("all steps", 3, square_minus1to1(64), True),
    "_train_test_passes": ("both passes", 3, mini_imagenet(), False),
    "_train_test_bad_passes": ("both passes", 3, mini_imagenet(), True),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors run fastest on one thread (two threads on a busy machine spin-wait)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def tiny_models():
    catalogue.names()  # import the families first
    for name, (timing, steps, prep, per_step) in TEST_MODELS.items():
        catalogue.register(
            _card(name, timing, steps, prep),
            build=lambda scale, steps, per_step=per_step, **_: TinyRecurrent(steps, per_step),
            load_checkpoint=lambda model, path: None)
    yield
    for name in TEST_MODELS:  # leave the catalogue as other test files expect it
        catalogue._REGISTRY.pop(name, None)


def _jpeg(colour, seed):
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.integers(-8, 9, (64, 64, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _add(archive, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Synthetic archives in the project's layout; category k's images have colour k."""
    root = tmp_path_factory.mktemp("tiny")
    # shard k holds image numbers i with i % 2 == k; files written in scrambled order
    for shard in (0, 1):
        with tarfile.open(root / f"train-probe100-{shard}.tar.gz", "w:gz") as archive:
            for k in reversed(range(N_CLASSES)):
                wnid = PROBE[k]
                for i in range(shard, PER_CLASS, 2):
                    _add(archive, f"tiny-imagenet-200/train/{wnid}/images/{wnid}_{i}.JPEG",
                         _jpeg(COLOURS[k], 100 * k + i))
                if shard == 0:
                    _add(archive, f"tiny-imagenet-200/train/{wnid}/{wnid}_boxes.txt", b"x")
    annotations, number = [], 0
    with tarfile.open(root / "val-probe100.tar.gz", "w:gz") as archive:
        _add(archive, "tiny-imagenet-200/wnids.txt", "\n".join(WNIDS).encode())
        for _ in range(VAL_PER_CLASS):
            for k in range(N_CLASSES):
                name = f"val_{number}.JPEG"
                annotations.append(f"{name}\t{PROBE[k]}\t0\t0\t63\t63")
                _add(archive, f"tiny-imagenet-200/val/images/{name}", _jpeg(COLOURS[k], 7 + number))
                number += 1
        _add(archive, "tiny-imagenet-200/val/val_annotations.txt",
             "\n".join(annotations).encode())
    return root


def _colour_labels(images):
    """Recover the category of each synthetic image from its mean colour."""
    means = images.float().mean(dim=(2, 3))
    palette = torch.tensor(COLOURS, dtype=torch.float32)
    return torch.cdist(means, palette).argmin(dim=1)


# ----------------------------------------------------------------------------- reading data


def test_archive_reader_pairs_each_image_with_its_probe_index(data_dir):
    data = train.load_training_data(data_dir, max_classes=N_CLASSES)
    assert data.images.shape == (N_CLASSES * PER_CLASS, 3, 64, 64)
    assert data.images.dtype == torch.uint8
    assert data.wnids == tuple(PROBE)
    assert torch.equal(data.labels, _colour_labels(data.images))
    assert torch.equal(torch.bincount(data.labels), torch.full((N_CLASSES,), PER_CLASS))
    assert data.sources == {f"train-probe100-{k}.tar.gz":
                            file_sha256(data_dir / f"train-probe100-{k}.tar.gz") for k in (0, 1)}
    one_shard = train.load_training_data(data_dir, shards=[1], limit_per_class=2, max_classes=4)
    assert one_shard.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert list(one_shard.sources) == ["train-probe100-1.tar.gz"]


def test_val_reader_and_official_folder_agree(data_dir, tmp_path):
    val = train.load_validation_data(data_dir, max_classes=N_CLASSES)
    assert len(val) == N_CLASSES * VAL_PER_CLASS
    assert torch.equal(val.labels, _colour_labels(val.images))
    first = train.load_validation_data(data_dir, per_class=1, max_classes=N_CLASSES)
    assert first.labels.tolist() == list(range(10))
    # the same images unpacked into the official layout read the same
    for archive in sorted(data_dir.glob("*.tar.gz")):
        with tarfile.open(archive) as handle:
            handle.extractall(tmp_path, filter="data")
    (tmp_path / "tiny-imagenet-200" / "wnids.txt").write_text("\n".join(WNIDS))
    folder_train = train.load_training_data(tmp_path, max_classes=N_CLASSES)
    archive_train = train.load_training_data(data_dir, max_classes=N_CLASSES)
    assert torch.equal(folder_train.images, archive_train.images)
    assert torch.equal(folder_train.labels, archive_train.labels)
    folder_val = train.load_validation_data(tmp_path, max_classes=N_CLASSES)
    assert torch.equal(folder_val.images, val.images)


@pytest.mark.skipif(not (REAL_DATA / "train-probe100-0.tar.gz").exists(),
                    reason="the project's Tiny-ImageNet archives are not in ../shared")
def test_real_archive_has_every_probe_category():
    data = train.load_training_data(REAL_DATA, shards=[0], limit_per_class=1)
    assert data.labels.tolist() == list(range(100))
    official = (REAL_DATA / "wnids.txt").read_text().split()
    assert data.wnids == tuple(sorted(official)[::2])


# ----------------------------------------------------------------------------- tensor ops


@pytest.mark.parametrize("preprocessing", [mini_imagenet(), square_minus1to1(64)])
def test_tensor_preprocessing_matches_the_card_transform(preprocessing):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    expected = preprocessing(Image.fromarray(pixels))
    batch = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    actual = train.normalizer(preprocessing)(batch)[0]
    assert torch.allclose(actual, expected, atol=1e-6)


def test_augment_crops_and_flips_within_the_padded_image():
    images = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)
    plain = images.float() / 255
    same = train.augment(images, 0, False, torch.Generator().manual_seed(0))
    assert torch.equal(same, plain)
    flipped = train.augment(images, 0, True, torch.Generator().manual_seed(0))
    for a, b in zip(flipped, plain):
        assert torch.equal(a, b) or torch.equal(a, b.flip(2))
    assert not torch.equal(flipped, plain)  # 6 coin flips all tails: p = 1/64, seeded
    cropped = train.augment(images, 4, False, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(plain, (4, 4, 4, 4), mode="reflect")
    for a, p in zip(cropped, padded):
        windows = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(a, p[:, dy:dy + 64, dx:dx + 64])]
        assert windows, "every crop is a 64x64 window of the padded image"
    again = train.augment(images, 4, True, torch.Generator().manual_seed(1))
    assert torch.equal(again, train.augment(images, 4, True, torch.Generator().manual_seed(1)))


# ----------------------------------------------------------------------------- loss timing


def _logits(steps=3):
    torch.manual_seed(0)
    return torch.randn(steps, 5, 100, requires_grad=True), torch.randint(0, 100, (5,))


def test_final_step_loss_ignores_earlier_steps():
    logits, labels = _logits()
    loss = train.training_loss(logits, labels, "final step")
    loss.backward()
    assert torch.allclose(loss, nn.functional.cross_entropy(logits[-1], labels))
    assert logits.grad[:-1].abs().sum() == 0
    assert logits.grad[-1].abs().sum() > 0


def test_all_steps_loss_is_the_mean_over_every_step():
    logits, labels = _logits()
    loss = train.training_loss(logits, labels, "all steps", label_smoothing=0.1)
    loss.backward()
    per_step = [nn.functional.cross_entropy(logits[t], labels, label_smoothing=0.1)
                for t in range(3)]
    assert torch.allclose(loss, torch.stack(per_step).mean())
    assert all(logits.grad[t].abs().sum() > 0 for t in range(3))


def test_loss_timing_rules_per_card():
    assert train.training_steps(catalogue.card("_train_test_passes")) == 2  # trained on 2
    assert train.training_steps(catalogue.card("_train_test_final")) == 3
    assert train.loss_step_indices("both passes", 2) == [0, 1]
    assert train.loss_step_indices("single output", 1) == [0]
    with pytest.raises(AnalysisUtilsError, match="single output"):
        train.loss_step_indices("single output", 3)
    with pytest.raises(AnalysisUtilsError, match="Unknown loss timing"):
        train.loss_step_indices("middle step", 3)
    expected = {"lrm3": ("both passes", 2), "lra3": ("both passes", 2), "bl": ("all steps", 8),
                "cornet_rt": ("final step", None), "convrnn": ("final step", None),
                "alexnet": ("single output", 1), "b": ("single output", 1)}
    for name in set(expected) & set(catalogue.names()):
        card = catalogue.card(name)
        timing, steps = expected[name]
        assert card.loss_timing == timing, name
        assert train.training_steps(card) == (steps or card.default_steps), name


# ----------------------------------------------------------------------------- end to end


def test_train_writes_weights_and_manifest_that_load_and_reproduce(data_dir, tmp_path):
    out = tmp_path / "zoo"
    entry = train.train_model("_train_test_final", archives=data_dir, out_dir=out, epochs=4,
                              device="cpu", batch_size=16, max_classes=N_CLASSES, lr=1e-2,
                              log=lambda line: None)
    path = out / "_train_test_final.safetensors"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["_train_test_final"] == entry
    assert entry["sha256"] == file_sha256(path)
    assert entry["epochs"] == 4 and len(entry["history"]) == 4
    assert entry["parameters"] == sum(p.numel() for p in TinyRecurrent(3).parameters())
    assert entry["config"]["loss_steps"] == [3] and entry["config"]["lr"] == 1e-2
    assert set(entry["archives"]) == {"train-probe100-0.tar.gz", "train-probe100-1.tar.gz",
                                      "val-probe100.tar.gz"}
    assert len(entry["accuracy"]["top1"]) == len(entry["accuracy"]["top5"]) == 3
    assert all(v.dtype == torch.float32 for k, v in load_file(path).items()
               if v.is_floating_point())
    # colour categories are easy: the final step is far above chance (10%) after 4 epochs
    assert entry["accuracy"]["top1"][-1] >= 0.5
    assert entry["history"][-1]["loss"] < entry["history"][0]["loss"]
    loaded = catalogue.load("_train_test_final", weights=path)
    val = train.load_validation_data(data_dir, max_classes=N_CLASSES)
    prep = catalogue.card("_train_test_final").preprocessing["mini"]
    assert train.evaluate(loaded, val, prep, nearest_centroid=True) == entry["accuracy"]
    assert len(entry["accuracy"]["nearest_centroid_top1"]) == 3
    # per-epoch validation on the fixed subset, and the speed record
    assert [row["epoch"] for row in entry["history"]] == [1, 2, 3, 4]
    assert all(0 <= row["val_top1"] <= 1 and len(row["val_top1_per_step"]) == 3
               for row in entry["history"])
    assert entry["speed"]["eager_float32_images_per_second"] > 0
    assert entry["speed"]["options"] == "float32"
    assert not (out / "checkpoints" / "_train_test_final.pt").exists()  # removed when done
    # the chapter's views of the manifest
    (row,) = train.training_table(manifest)
    assert row["model"] == "_train_test_final" and row["epochs"] == 4
    assert row["top-1 (%)"] == round(100 * entry["accuracy"]["top1"][-1], 2)
    assert row["NC top-1 (%)"] == round(100 * entry["accuracy"]["nearest_centroid_top1"][-1], 2)
    curves = train.learning_curves(manifest)
    assert [c["epoch"] for c in curves] == [1, 2, 3, 4]
    assert curves[-1]["val top-1 (%)"] == round(100 * entry["history"][-1]["val_top1"], 2)
    assert curves[0]["loss"] == entry["history"][0]["loss"]
    untrained = catalogue.build("_train_test_final", seed=0)
    assert not torch.equal(loaded.fc.weight, untrained.fc.weight)


def test_cli_trains_one_by_one_and_merges_the_manifest(data_dir, tmp_path):
    out = tmp_path / "zoo"
    parser = train.add_arguments(argparse.ArgumentParser())
    common = ["--archives", str(data_dir), "--out", str(out), "--device", "cpu",
              "--batch-size", "16", "--max-classes", "10", "--limit-per-class", "4",
              "--val-per-class", "1"]
    assert train.main(parser.parse_args(["--model", "_train_test_all", "--epochs", "1",
                                         *common])) == 0
    assert train.main(parser.parse_args(["--model", "_train_test_passes", "--budget", "0.5",
                                         "--max-epochs", "2", *common])) == 0
    models = json.loads((out / "manifest.json").read_text())["models"]
    assert set(models) == {"_train_test_all", "_train_test_passes"}
    assert models["_train_test_all"]["config"]["loss_steps"] == [1, 2, 3]
    passes = models["_train_test_passes"]
    assert passes["config"]["training_steps"] == 2 and passes["config"]["analysed_steps"] == 3
    assert passes["config"]["loss_steps"] == [1, 2] and 1 <= passes["epochs"] <= 2
    assert passes["config"]["epochs_rule"].startswith("budget 0.5 s")
    assert len(passes["accuracy"]["top1"]) == 3  # evaluated at the 3 analysed passes
    assert passes["config"]["train_images"] == N_CLASSES * 4
    log = (out / "train.log").read_text()
    assert "_train_test_all epoch 1/1: loss" in log and "images/s" in log
    # resuming skips what is done and changes nothing
    before = (out / "manifest.json").read_text()
    train.main(parser.parse_args(["--model", "_train_test_all", "--epochs", "1",
                                  "--skip-existing", *common]))
    assert (out / "manifest.json").read_text() == before


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs_get_one_clear_sentence(data_dir, tmp_path):
    quiet = {"log": lambda line: None, "device": "cpu"}
    with pytest.raises(AnalysisUtilsError, match="Unknown model 'no_such_model'"):
        train.train_model("no_such_model", archives=data_dir, out_dir=tmp_path, epochs=1, **quiet)
    with pytest.raises(AnalysisUtilsError, match="does not exist; pass --archives"):
        train.train_model("_train_test_final", archives=tmp_path / "missing", out_dir=tmp_path,
                          epochs=1, **quiet)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "wnids.txt").write_text("\n".join(WNIDS))
    with pytest.raises(AnalysisUtilsError, match="no train-probe100-.*tar.gz archives"):
        train.load_training_data(tmp_path / "empty")
    with pytest.raises(AnalysisUtilsError, match="lack 90 of the 100 probe categories"):
        train.load_training_data(data_dir)  # the synthetic archives hold 10 categories
    with pytest.raises(AnalysisUtilsError, match="no train-probe100-7.tar.gz"):
        train.load_training_data(data_dir, shards=[7])
    with pytest.raises(AnalysisUtilsError, match="Give either epochs"):
        train.train_model("_train_test_final", archives=data_dir, out_dir=tmp_path, **quiet)
    with pytest.raises(AnalysisUtilsError, match="Unknown training setting 'learning_rate'"):
        train.train_model("_train_test_final", archives=data_dir, out_dir=tmp_path, epochs=1,
                          learning_rate=0.1, **quiet)
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "wnids.txt").write_text("n1\nn2\n")
    with pytest.raises(AnalysisUtilsError, match="not the official 200"):
        train.load_training_data(tmp_path / "short")
    with pytest.raises(AnalysisUtilsError, match="parameters differ between 2 and 3 steps"):
        train.train_model("_train_test_bad_passes", archives=data_dir, out_dir=tmp_path,
                          epochs=1, **quiet)
    parser = train.add_arguments(argparse.ArgumentParser())
    with pytest.raises(AnalysisUtilsError, match="--shards must be"):
        train.main(parser.parse_args(["--model", "_train_test_final", "--epochs", "1",
                                      "--shards", "a,b", "--out", str(tmp_path)]))
    assert not list(tmp_path.glob("*.safetensors"))


# ----------------------------------------------------------------------------- resume, recipes


def test_an_interrupted_model_resumes_to_the_same_weights(data_dir, tmp_path):
    """Killed after epoch 2 of 3 (simulated by raising in the log), resumed: same file."""
    common = dict(archives=data_dir, epochs=3, device="cpu", batch_size=16,
                  max_classes=N_CLASSES, lr=1e-2)
    whole = train.train_model("_train_test_final", out_dir=tmp_path / "whole",
                              log=lambda line: None, **common)

    class Interrupt(Exception):
        pass

    def stop_after_epoch_2(line):
        if "epoch 2/3" in line:
            raise Interrupt

    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        train.train_model("_train_test_final", out_dir=out, log=stop_after_epoch_2, **common)
    assert not (out / "_train_test_final.safetensors").exists()
    # the checkpoint is written after the epoch's log line: the interrupted run left epoch 1
    saved = torch.load(out / "checkpoints" / "_train_test_final.pt", weights_only=True)
    assert saved["epoch"] == 1
    lines = []
    resumed = train.train_model("_train_test_final", out_dir=out, log=lines.append, resume=True,
                                **common)
    assert any("resumed from" in line and "after epoch 1" in line for line in lines)
    assert resumed["sha256"] == whole["sha256"]
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3]
    assert resumed["accuracy"] == whole["accuracy"]
    # a checkpoint of other settings is refused
    with pytest.raises(Interrupt):
        train.train_model("_train_test_final", out_dir=out, log=stop_after_epoch_2, **common)
    with pytest.raises(AnalysisUtilsError,
                       match="written with other settings \\(epochs, lr, n_epochs differ\\)"):
        train.train_model("_train_test_final", out_dir=out, log=lambda line: None, resume=True,
                          **{**common, "lr": 5e-3, "epochs": 4})


def test_recipes_give_per_model_settings_that_options_override():
    settings, why = train.recipe_settings("cpu-zoo", "bl")
    assert settings["compile"] is True and why.startswith("recipe cpu-zoo: ")
    assert set(train.CPU_ZOO_RECIPE) == set(train.ZOO_MODELS)
    for name in train.ZOO_MODELS:  # every recipe entry is a valid configuration
        train.TrainConfig(**train.recipe_settings("cpu-zoo", name)[0]).check()
    with pytest.raises(AnalysisUtilsError, match="Unknown recipe 'fast'"):
        train.recipe_settings("fast", "bl")
    with pytest.raises(AnalysisUtilsError, match="has no settings for '_train_test_final'"):
        train.recipe_settings("cpu-zoo", "_train_test_final")
    with pytest.raises(AnalysisUtilsError, match="precision must be one of"):
        train.TrainConfig(epochs=1, precision="fp8").check()


def test_the_recipe_trains_in_float32_on_a_cpu_without_native_bf16(tmp_path):
    """bf16 autocast is emulated (about 10x slower) on a CPU without AVX-512 BF16."""
    with_bf16 = tmp_path / "with"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    without = tmp_path / "without"
    without.write_text("processor\t: 0\nflags\t\t: fpu avx2\n")
    assert train.cpu_has_native_bf16(with_bf16) is True
    assert train.cpu_has_native_bf16(without) is False
    assert train.cpu_has_native_bf16(tmp_path / "missing") is None
    native, why = train.recipe_settings("cpu-zoo", "alexnet", "cpu", native_bf16=True)
    assert native["precision"] == "bf16-autocast" and "float32" not in why
    emulated, why = train.recipe_settings("cpu-zoo", "alexnet", "cpu", native_bf16=False)
    assert emulated["precision"] == "float32" and "no native bf16" in why
    assert {k: v for k, v in emulated.items() if k != "precision"} == {
        k: v for k, v in native.items() if k != "precision"}
    on_gpu, _ = train.recipe_settings("cpu-zoo", "alexnet", "cuda", native_bf16=False)
    assert on_gpu["precision"] == "bf16-autocast"


def test_bf16_autocast_and_compile_train_the_same_architecture(data_dir, tmp_path):
    entry = train.train_model("_train_test_final", archives=data_dir, out_dir=tmp_path,
                              epochs=1, device="cpu", batch_size=16, max_classes=N_CLASSES,
                              precision="bf16-autocast", log=lambda line: None)
    assert entry["speed"]["options"] == "bf16-autocast"
    assert entry["config"]["speed_options"] == "bf16-autocast"
    model = catalogue.load("_train_test_final", weights=tmp_path / "_train_test_final.safetensors")
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_batch_norm_recalibration_sets_the_plain_mean_and_variance_of_the_data():
    model = TinyRecurrent(3)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 3, 64, 64), dtype=torch.uint8, generator=generator)
    data = train.ImageSet(images, torch.zeros(30, dtype=torch.int64))
    preprocessing = mini_imagenet(64)
    model.eval()
    assert train.recalibrate_batch_norm(model, data, preprocessing, batch_size=10)
    assert not model.training and model.norms[0].momentum == 0.1  # restored
    with torch.no_grad():  # step 1: the norm's input is stem(x) + lateral(0)
        x = train.normalizer(preprocessing)(images)
        drive = model.stem(x) + model.lateral.bias[None, :, None, None]
    expected_mean = drive.mean(dim=(0, 2, 3))
    assert torch.allclose(model.norms[0].running_mean, expected_mean, atol=1e-5)
    # the average over the three batches of their unbiased variances
    batches = [drive[i:i + 10] for i in range(0, 30, 10)]
    variances = torch.stack([b.transpose(0, 1).reshape(8, -1).var(dim=1) for b in batches])
    assert torch.allclose(model.norms[0].running_var, variances.mean(dim=0), atol=1e-4)
    assert not train.recalibrate_batch_norm(nn.Sequential(nn.Linear(2, 2)), data, preprocessing)


def test_a_saved_model_gets_its_batch_norm_statistics_recomputed(data_dir, tmp_path):
    common = dict(archives=data_dir, epochs=2, device="cpu", batch_size=16,
                  max_classes=N_CLASSES, lr=1e-2, log=lambda line: None)
    train.train_model("_train_test_final", out_dir=tmp_path, bn_recalibration_per_class=0,
                      **common)
    before = train.read_manifest(tmp_path)["models"]["_train_test_final"]
    old = load_file(tmp_path / "_train_test_final.safetensors")
    train_data = train.load_training_data(data_dir, max_classes=N_CLASSES)
    val = train.load_validation_data(data_dir, max_classes=N_CLASSES)
    entry = train.recalibrate_saved_model("_train_test_final", tmp_path, train_data=train_data,
                                          val_data=val, per_class=4, log=lambda line: None)
    path = tmp_path / "_train_test_final.safetensors"
    assert entry["sha256"] == file_sha256(path) != before["sha256"]
    assert train.read_manifest(tmp_path)["models"]["_train_test_final"] == entry
    assert entry["config"]["bn_recalibration_per_class"] == 4
    loaded = catalogue.load("_train_test_final", weights=path)
    prep = catalogue.card("_train_test_final").preprocessing["mini"]
    assert train.evaluate(loaded, val, prep, nearest_centroid=True) == entry["accuracy"]
    new = load_file(path)  # only the BatchNorm statistics changed
    changed = sorted(k for k in old if not torch.equal(old[k], new[k]))
    assert changed and all("running" in k or "num_batches" in k for k in changed)
    with pytest.raises(AnalysisUtilsError, match="has no entry for 'b'"):
        train.recalibrate_saved_model("b", tmp_path, train_data=train_data, val_data=val)
