"""Probes: order, labels, names, hashes, class indices, the shipped manifest, and every error."""

import hashlib
import os
from pathlib import Path

import pytest
import torch
from conftest import write_imagenet_folder, write_tiny_layout

from analysis_utils import probes
from analysis_utils.errors import AnalysisUtilsError

pytestmark = pytest.mark.usefixtures("isolated_cache")

SHIPPED = {
    "stimulus_set_manifest.csv": "bd37baec9635a9478827025f17e6d87fed424cf1109a1e228708bc338642d8ff",
    "category_metadata.csv": "47f378f813e94efae93d0859b5fa5441b49ef64bf2d00c0a79796f5bd23716aa",
    "LICENSE-reference-study": "8ab9243455107ea4791ee95d159ce24e6c81eda20d6c123c87f027cbe8afe451",
}


# ----------------------------------------------------------------------------- tiny, generated


def test_tiny_order_labels_and_names(tiny_dir):
    probe = probes.load("tiny", data_dir=tiny_dir, images_per_category=3)
    root = tiny_dir / "tiny-imagenet-200"
    wnids = (root / "wnids.txt").read_text().split()
    assert list(probe.category_ids) == sorted(wnids)[::2]
    assert probe.n_categories == 4 and len(probe) == 12
    assert probe.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    words = dict(line.split("\t") for line in (root / "words.txt").read_text().splitlines())
    assert list(probe.category_names) == [words[w] for w in probe.category_ids]
    annotations = dict(line.split("\t")[:2]
                       for line in (root / "val/val_annotations.txt").read_text().splitlines())
    for c in range(4):  # category, then file name (string order, as ImageFolder sorts)
        names = list(probe.file_names[3 * c:3 * c + 3])
        assert names == sorted(names)
        assert all(annotations[name] == probe.category_ids[c] for name in names)
    assert probe.images[0].mode == "RGB" and probe.images[0].size == (64, 64)
    assert torch.equal(probe.class_index("mini"), torch.arange(4))


def test_cut_and_subset_agree_and_change_the_hash(tiny_dir):
    full = probes.load("tiny", data_dir=tiny_dir, images_per_category=3)
    cut = probes.load("tiny", data_dir=tiny_dir, images_per_category=2)
    sub = full.subset(2)
    assert sub.file_names == cut.file_names and torch.equal(sub.labels, cut.labels)
    assert sub.content_hash == cut.content_hash != full.content_hash
    assert len(sub) == 8 and sub.images_per_category == 2
    with pytest.raises(AnalysisUtilsError, match="has 2 images per category.*at most 2"):
        sub.subset(3)


def test_content_hash_follows_file_bytes(tiny_dir):
    before = probes.load("tiny", data_dir=tiny_dir, images_per_category=3)
    again = probes.load("tiny", data_dir=tiny_dir, images_per_category=3)
    assert before.content_hash == again.content_hash
    target = tiny_dir / "tiny-imagenet-200/val/images" / before.file_names[4]
    write_tiny_layout(tiny_dir.parent / "other", seed=1)  # same names, other pixels
    target.write_bytes((tiny_dir.parent / "other/tiny-imagenet-200/val/images"
                        / before.file_names[4]).read_bytes())
    after = probes.load("tiny", data_dir=tiny_dir, images_per_category=3)
    assert after.content_hash != before.content_hash


def test_environment_variable_and_the_tree_itself_are_accepted(tiny_dir, monkeypatch):
    monkeypatch.setenv("ANALYSIS_UTILS_DATA", str(tiny_dir))
    from_env = probes.load("tiny", images_per_category=1)
    direct = probes.load("tiny", data_dir=tiny_dir / "tiny-imagenet-200", images_per_category=1)
    assert from_env.file_names == direct.file_names and len(direct) == 4


def test_missing_folder_says_where_it_looked(tmp_path):
    with pytest.raises(AnalysisUtilsError, match=r"No Tiny-ImageNet folder at .*nowhere.*unzip"):
        probes.load("tiny", data_dir=tmp_path / "nowhere")


@pytest.mark.parametrize("remove", ["wnids.txt", "words.txt", "val/val_annotations.txt"])
def test_wrong_layout_names_the_missing_file(tiny_dir, remove):
    (tiny_dir / "tiny-imagenet-200" / remove).unlink()
    message = f"not in the official Tiny-ImageNet layout: {remove}"
    with pytest.raises(AnalysisUtilsError, match=message):
        probes.load("tiny", data_dir=tiny_dir)


def test_corrupt_image_is_named(tiny_dir):
    probe = probes.load("tiny", data_dir=tiny_dir, images_per_category=3)
    bad = tiny_dir / "tiny-imagenet-200/val/images" / probe.file_names[5]
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(AnalysisUtilsError, match=f"{probe.file_names[5]} cannot be decoded"):
        probes.load("tiny", data_dir=tiny_dir, images_per_category=3)


def test_a_truncated_jpeg_that_starts_right_loads_and_is_named_when_decoded(tiny_dir):
    probe = probes.load("tiny", data_dir=tiny_dir, images_per_category=3)
    bad = tiny_dir / "tiny-imagenet-200/val/images" / probe.file_names[4]
    bad.write_bytes(bad.read_bytes()[:3])  # the JPEG signature only
    loaded = probes.load("tiny", data_dir=tiny_dir, images_per_category=3)
    with pytest.raises(AnalysisUtilsError, match=f"{probe.file_names[4]} cannot be decoded"):
        loaded.images[4]


def test_missing_image_file_is_named(tiny_dir):
    probe = probes.load("tiny", data_dir=tiny_dir, images_per_category=3)
    name = probe.file_names[0]
    (tiny_dir / "tiny-imagenet-200/val/images" / name).unlink()
    with pytest.raises(AnalysisUtilsError, match=f"1 of the 12 probe images .* missing .*{name}"):
        probes.load("tiny", data_dir=tiny_dir, images_per_category=3)


def test_too_few_images_in_a_category(tiny_dir):
    with pytest.raises(AnalysisUtilsError, match=r"has 3 validation images .* fewer than the 5"):
        probes.load("tiny", data_dir=tiny_dir, images_per_category=5)


@pytest.mark.parametrize("k", [0, 51, 2.0, True])
def test_bad_images_per_category(tiny_dir, k):
    with pytest.raises(AnalysisUtilsError, match="images_per_category must be an integer"):
        probes.load("tiny", data_dir=tiny_dir, images_per_category=k)


def test_unknown_probe_lists_the_valid_ones():
    with pytest.raises(AnalysisUtilsError, match="Unknown probe 'coco'.*'tiny', 'imagenet'"):
        probes.load("coco")


def test_full_scale_index_of_generated_wnids_is_unavailable_with_a_reason(tiny_dir):
    probe = probes.load("tiny", data_dir=tiny_dir, images_per_category=1)
    with pytest.raises(AnalysisUtilsError, match="is not an ImageNet-1k class.*unavailable"):
        probe.class_index("full")  # the generated wnids are not ImageNet classes
    with pytest.raises(AnalysisUtilsError, match="Unknown scale 'huge'"):
        probe.class_index("huge")


def test_shipped_imagenet_wnids_are_the_classifier_order():
    wnids = probes.imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) and wnids == sorted(wnids)
    for row in probes.reference_categories():  # 100 independent anchors
        assert wnids.index(row["WordNet_ID"]) == int(row["number_index"]), row
    assert (wnids[0], wnids[999]) == ("n01440764", "n15075141")


def test_real_tiny_probe_full_scale_index(real_tiny_dir):
    probe = probes.load("tiny", data_dir=real_tiny_dir, images_per_category=1)
    wnids = probes.imagenet_wnids()
    root = Path(real_tiny_dir) / "tiny-imagenet-200"
    assert set((root / "wnids.txt").read_text().split()) <= set(wnids)
    index = probe.class_index("full")
    assert [wnids[i] for i in index.tolist()] == list(probe.category_ids)
    assert index[0].item() == 1  # n01443537, goldfish


# ----------------------------------------------------------------------------- imagenet


@pytest.mark.parametrize("name, sha", SHIPPED.items())
def test_shipped_study_files_are_byte_identical(name, sha):
    assert hashlib.sha256((probes.DATA_DIR / name).read_bytes()).hexdigest() == sha


def test_manifest_and_categories_agree():
    rows = probes.reference_manifest()
    categories = probes.reference_categories()
    assert len(rows) == 5000 and len(categories) == 100
    order = list(dict.fromkeys(wnid for wnid, _ in rows))
    assert order == [row["WordNet_ID"] for row in categories] == sorted(order)
    assert rows[0] == ("n01518878", "ILSVRC2012_val_00001031.JPEG")


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "per-wnid"])
def test_imagenet_probe_follows_the_manifest(tmp_path, nested):
    folder = write_imagenet_folder(tmp_path / "val", k=1, nested=nested)
    probe = probes.load("imagenet", data_dir=folder, images_per_category=1)
    rows = probes.reference_manifest()
    firsts = [rows[50 * c][1] for c in range(100)]
    assert list(probe.file_names) == firsts
    assert probe.labels.tolist() == list(range(100))
    categories = probes.reference_categories()
    assert probe.class_index("full").tolist() == [int(r["number_index"]) for r in categories]
    assert probe.class_index("full")[:3].tolist() == [9, 24, 30]
    assert probe.category_names[0] == "ostrich" and probe.images[0].size == (80, 60)
    with pytest.raises(AnalysisUtilsError, match="mini zoo was trained on the 100 tiny"):
        probe.class_index("mini")


def test_imagenet_missing_files_are_counted_and_named(tmp_path):
    folder = write_imagenet_folder(tmp_path / "val", k=1)
    first = probes.reference_manifest()[50][1]
    os.remove(folder / first)
    message = f"1 of the 100 probe images are missing .*{first}"
    with pytest.raises(AnalysisUtilsError, match=message):
        probes.load("imagenet", data_dir=folder, images_per_category=1)
    with pytest.raises(AnalysisUtilsError, match="101 of the 200 probe images are missing"):
        probes.load("imagenet", data_dir=folder, images_per_category=2)


def test_imagenet_needs_a_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("ANALYSIS_UTILS_IMAGENET", raising=False)
    with pytest.raises(AnalysisUtilsError, match="needs your ILSVRC2012 validation images"):
        probes.load("imagenet")
    with pytest.raises(AnalysisUtilsError, match="does not exist"):
        probes.load("imagenet", data_dir=tmp_path / "absent")


# ----------------------------------------------------------------------------- the real probe


def test_real_tiny_probe(real_tiny_dir):
    probe = probes.load("tiny", data_dir=real_tiny_dir)
    root = Path(real_tiny_dir) / "tiny-imagenet-200"
    wnids = (root / "wnids.txt").read_text().split()
    assert len(wnids) == 200
    assert list(probe.category_ids) == sorted(wnids)[::2]
    assert len(probe) == 5000 and probe.images_per_category == 50
    assert torch.equal(torch.bincount(probe.labels), torch.full((100,), 50))
    assert all(image.size == (64, 64) and image.mode == "RGB" for image in probe.images[::97])
    words = dict(line.split("\t") for line in (root / "words.txt").read_text().splitlines())
    assert probe.category_names[0] == words[probe.category_ids[0]]
    assert len(set(probe.file_names)) == 5000


def test_images_are_decoded_on_first_use_and_kept(tiny_dir):
    probe = probes.load("tiny", data_dir=tiny_dir, images_per_category=3)
    assert isinstance(probe.images, probes.ProbeImages)
    assert probe.images._decoded == {}  # loading hashes and checks the files, decodes nothing
    first = probe.images[4]
    assert probe.images[4] is first and probe.images[-len(probe) + 4] is first
    assert probe.images[3:6][1] is first
    sub = probe.subset(2)
    assert sub.images.paths == tuple(probe.images.paths[i] for i in range(len(probe))
                                     if i % 3 < 2)
    assert sub.images[3] is first  # image 4 of the probe is image 3 of the subset
    with pytest.raises(IndexError):
        probe.images[len(probe)]


def test_an_image_that_breaks_after_loading_is_named_when_decoded(tiny_dir):
    probe = probes.load("tiny", data_dir=tiny_dir, images_per_category=3)
    path = probe.images.paths[2]
    path.write_bytes(path.read_bytes()[:40])  # a valid header, truncated pixels
    with pytest.raises(AnalysisUtilsError, match=f"{path.name} cannot be decoded"):
        probe.images[2]
