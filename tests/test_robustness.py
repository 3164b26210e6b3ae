"""Chapter 6's measures (analysis_utils.robustness) and the perturbed extraction they read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from analysis_utils import book, build, extract, geometry, probes, robustness
from analysis_utils.errors import AnalysisUtilsError
from analysis_utils.perturb import PerturbationSpec

ROOT = Path(__file__).resolve().parents[1]


def test_check_levels_reads_a_literal_adds_the_clean_level_and_sorts():
    grid = robustness.check_levels("{'occlusion': [0.5, 0.25, 0.5], 'clutter': [3]}")
    assert grid == {"occlusion": (0, 0.25, 0.5), "clutter": (0, 3)}
    assert robustness.check_levels({"noise": (0.2,)}) == {"noise": (0, 0.2)}
    specs = robustness.level_specs(grid, seed=4)
    assert [(s.name, s.level, s.seed) for s in specs] == [
        ("occlusion", 0.25, 4), ("occlusion", 0.5, 4), ("clutter", 3, 4)]


@pytest.mark.parametrize("levels, words", [
    ("{'occlusion': [0.2]", "must be a dict of perturbation -> list of levels"),
    ({}, "non-empty dict"),
    ("[0.2, 0.4]", "non-empty dict"),
    ({"blur": [1]}, "Unknown perturbation 'blur'"),
    ({"occlusion": [1.5]}, "The occlusion level must be a number from 0 to 1"),
    ({"clutter": [2.5]}, "The clutter level must be an integer"),
    ({"noise": "0.2"}, "must be a non-empty list of numbers"),
])
def test_bad_level_grids_get_one_sentence(levels, words):
    with pytest.raises(AnalysisUtilsError, match=words):
        robustness.check_levels(levels)


def _states(seed=0, n_steps=3, n_classes=5, per_class=4, dim=6):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    centres = torch.randn(n_classes, dim, generator=generator)
    penult = (centres[labels] + 0.8 * torch.randn(n_steps, len(labels), dim,
                                                  generator=generator)).relu()
    logits = torch.randn(n_steps, len(labels), 8, generator=generator)
    return penult, logits, labels


def test_level_measures_on_the_clean_set_equal_the_studys_measures():
    """With the perturbed set equal to the clean probe, every measure is the one the other
    chapters compute (nearest-centroid including the exemplar, as the study)."""
    penult, logits, labels = _states()
    class_index = torch.tensor([7, 2, 5, 0, 3])
    values = robustness.level_measures(penult, logits, labels, class_index, penult, labels)
    np.testing.assert_allclose(values["top1"],
                               geometry.logit_accuracy(logits, labels, class_index)["top1"])
    np.testing.assert_allclose(values["nc_top1"],
                               geometry.nearest_centroid_accuracy(penult, labels)["top1"])
    trajectory = geometry.trajectory(penult, labels)
    np.testing.assert_allclose(values["cluster_size"], trajectory["cluster_size"], rtol=1e-6)
    np.testing.assert_allclose(values["between_mean"], trajectory["between_mean"], rtol=1e-6)
    assert values["top1_per_category"].shape == (3, 5)
    np.testing.assert_allclose(values["top1_per_category"].mean(-1), values["top1"])


def test_nearest_centroid_uses_the_clean_prototypes_not_the_perturbed_ones():
    penult, logits, labels = _states()
    # perturbed exemplars: each moved onto the next category's clean prototype
    clean_protos = geometry.prototypes(penult, labels)
    moved = clean_protos[:, (labels + 1) % 5]
    values = robustness.level_measures(moved, logits, labels, torch.arange(5), penult, labels)
    np.testing.assert_array_equal(values["nc_top1"], 0.0)  # read as the wrong categories
    # while on the perturbed set itself each category is one point: cluster size 0
    np.testing.assert_allclose(values["cluster_size"], 0.0, atol=1e-6)


def test_measure_levels_equals_level_measures_per_key():
    """The shared clean prototypes and the shared level 0 give exactly what measuring every
    entry on its own gives."""
    penult, logits, labels = _states()
    noisy, noisy_logits, _ = _states(seed=1)
    clean = {"a": {"penult": penult, "logits": logits},
             "b": {"penult": penult * 2 + 0.1, "logits": logits.flip(0)}}
    perturbed = {}
    for model, X in clean.items():
        for name in ("occlusion", "noise"):
            perturbed[model, name, 0] = X
            perturbed[model, name, 0.5] = {"penult": noisy + (name == "noise"),
                                           "logits": noisy_logits}
    class_index = torch.tensor([7, 2, 5, 0, 3])
    shared = robustness.measure_levels(perturbed, clean, labels, class_index, labels)
    assert list(shared) == list(perturbed)
    for (model, name, level), X in perturbed.items():
        alone = robustness.level_measures(X["penult"], X["logits"], labels, class_index,
                                          clean[model]["penult"], labels)
        for measure, values in alone.items():
            np.testing.assert_array_equal(shared[model, name, level][measure], values)
    with pytest.raises(AnalysisUtilsError, match="needs the clean prototypes"):
        robustness.level_measures(penult, logits, labels, class_index)


def _measured(benefit_clean, benefit_hard, n_classes=40, seed=0):
    """A recurrent model 'lrm3' (3 steps) and its counterpart 'alexnet' at levels 0 and 0.5,
    with per-category top-1 whose step 3 - step 1 difference is the given mean."""
    rng = np.random.default_rng(seed)
    measured = {}
    for level, gain in ((0, benefit_clean), (0.5, benefit_hard)):
        first = rng.uniform(20, 60, n_classes)
        per_category = np.stack([first, first + gain / 2, first + gain
                                 + rng.normal(0, 1, n_classes)])
        measured[("lrm3", "occlusion", level)] = {"top1_per_category": per_category}
        measured[("alexnet", "occlusion", level)] = {
            "top1_per_category": first[None] + (0 if level == 0 else -10)}
    return measured


def test_benefit_table_is_after_minus_baseline_with_a_bootstrap_interval():
    measured = _measured(2.0, 12.0)
    table = robustness.benefit_table(measured, {"lrm3": (1, 3)}, n_boot=500)
    assert list(table["model"]) == ["lrm3", "lrm3"] and list(table["level"]) == [0, 0.5]
    for row in table.itertuples():
        per_category = measured[("lrm3", "occlusion", row.level)]["top1_per_category"]
        expected = (per_category[2] - per_category[0]).mean()
        assert row.benefit == pytest.approx(expected)
        assert row.lo < row.benefit < row.hi and row.hi - row.lo < 2
    assert table["benefit"].iloc[1] == pytest.approx(12.0, abs=0.5)


def test_literature_table_verdicts_follow_the_interval():
    states, partners = {"lrm3": (1, 3)}, {"lrm3": "alexnet"}
    grows = robustness.literature_table(_measured(2.0, 12.0), states, partners, n_boot=500)
    assert list(grows["prediction"]) == ["benefit grows", "advantage grows"]
    assert list(grows["verdict"]) == ["agrees", "agrees"]
    assert grows["value"].iloc[0] == pytest.approx(10.0, abs=0.5)
    shrinks = robustness.literature_table(_measured(12.0, 2.0), states, partners, n_boot=500)
    assert shrinks["verdict"].iloc[0] == "disagrees"
    flat = robustness.literature_table(_measured(5.0, 5.0), states, partners, n_boot=500)
    assert flat["verdict"].iloc[0] == "unclear"
    # no counterpart measured: only the benefit prediction
    alone = robustness.literature_table(_measured(2.0, 12.0), states, {}, n_boot=500)
    assert list(alone["prediction"]) == ["benefit grows"]


def test_relative_to_clean_divides_by_the_same_models_clean_value():
    import pandas as pd

    table = pd.DataFrame({"model": ["a", "a", "b", "b"], "perturbation": ["noise"] * 4,
                          "step": [1] * 4, "level": [0, 0.2, 0, 0.2],
                          "cluster_size": [0.5, 0.6, 0.2, 0.1]})
    out = robustness.relative_to_clean(table, ["cluster_size"])
    np.testing.assert_allclose(out["cluster_size / clean"], [1.0, 1.2, 1.0, 0.5])


def test_perturbed_extraction_is_cached_under_its_own_key_and_level_zero_reads_clean(
        tiny_dir, isolated_cache):
    probe = probes.load("tiny", data_dir=tiny_dir, images_per_category=3)
    kwargs = dict(weights="untrained", seed=0, progress=False, device="cpu")
    clean, meta = extract.features("alexnet", probe, **kwargs)
    assert meta["perturbation"] is None
    zero, meta = extract.features("alexnet", probe, perturbation=PerturbationSpec("noise", 0),
                                  **kwargs)
    assert all(meta["cache"]["from_cache"].values())  # the clean entry
    torch.testing.assert_close(zero["penult"], clean["penult"])
    spec = PerturbationSpec("occlusion", 0.5, seed=1)
    assert not extract.is_cached("alexnet", probe, perturbation=spec, weights="untrained",
                                 device="cpu")
    occluded, meta = extract.features("alexnet", probe, perturbation=spec, **kwargs)
    assert not any(meta["cache"]["from_cache"].values())
    assert meta["perturbation"] == spec.key()
    assert not torch.allclose(occluded["penult"], clean["penult"])
    assert extract.is_cached("alexnet", probe, perturbation=spec, weights="untrained",
                             device="cpu")
    again, meta = extract.features("alexnet", probe, perturbation=spec, **kwargs)
    assert all(meta["cache"]["from_cache"].values())
    torch.testing.assert_close(again["logits"], occluded["logits"])
    other, meta = extract.features("alexnet", probe,
                                   perturbation=PerturbationSpec("occlusion", 0.5, seed=2),
                                   **kwargs)
    assert not any(meta["cache"]["from_cache"].values())
    assert meta["cache"]["files"]["penult"] != extract.features(
        "alexnet", probe, perturbation=spec, **kwargs)[1]["cache"]["files"]["penult"]
    with pytest.raises(AnalysisUtilsError, match="perturbation must be None or"):
        extract.features("alexnet", probe, perturbation=("noise", 0.2), **kwargs)


def test_prefill_lists_every_perturbed_extraction_of_chapter_6(tmp_path):
    import jupytext

    source = tmp_path / "06_perturbations.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks" / "06_perturbations.py"), source)
    pairs = ["-p", "weights", "untrained", "-p", "models", "alexnet,bl",
             "-p", "perturbation_levels", "{'occlusion': [0.5], 'clutter': [2, 4]}",
             "-p", "perturbation_images_per_category", "3"]
    jobs = build.prefill_jobs([source], pairs)
    assert [job.label for job in jobs] == [
        "alexnet", "bl", "alexnet occlusion 0.5", "bl occlusion 0.5", "alexnet clutter 2",
        "bl clutter 2", "alexnet clutter 4", "bl clutter 4"]
    perturbed = [job for job in jobs if job.kind == "perturbed"]
    assert {job.reference_images for job in perturbed} == {3}
    assert perturbed[0].perturbation_spec() == PerturbationSpec("occlusion", 0.5, 0)
    assert {job.readouts for job in perturbed} == {book.STAGE_READOUTS}
    with pytest.raises(AnalysisUtilsError, match="Unknown perturbation 'blur'"):
        build.prefill_jobs([source], pairs[:6] + ["-p", "perturbation_levels", "{'blur': [1]}"])
