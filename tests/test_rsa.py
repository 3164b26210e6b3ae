"""Tests for analysis_utils.rsa: tagged RDMs, the study's RSA matrix (Spearman, NaN -> 0),
rho-a, MDS and the rsatoolbox export."""

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import pdist, squareform
from scipy.stats import rankdata, spearmanr

from analysis_utils import geometry, rsa
from analysis_utils.errors import AnalysisUtilsError

HAS_RSATOOLBOX = importlib.util.find_spec("rsatoolbox") is not None


def _tags(n_steps=4, n_classes=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = np.arange(n_classes * 5) % n_classes
    features = torch.randn(n_steps, n_classes * 5, 12, generator=generator)
    return rsa.tagged_rdms_over_steps("LRM3", "logits", features, labels), features, labels


def test_tagged_rdm_is_the_raw_prototype_cosine_rdm_with_a_readable_label():
    tags, features, labels = _tags()
    assert [t.label for t in tags] == [f"LRM3 logits step {s}" for s in (1, 2, 3, 4)]
    expected = geometry.cosine_rdm(geometry.prototypes(features[2], labels))
    torch.testing.assert_close(tags[2].rdm, expected)
    single = rsa.tagged_rdm("BL", "penult", "after", features[2], labels)
    assert single.label == "BL penult after"
    torch.testing.assert_close(single.rdm, expected)


def test_spearman_rsa_matches_scipy_pair_by_pair():
    tags, _, _ = _tags()
    frame = rsa.cross_model_rsa(tags)
    assert list(frame.index) == list(frame.columns) == [t.label for t in tags]
    assert frame.to_numpy().dtype == np.float32
    vectors = [geometry.upper_triangle(t.rdm).numpy() for t in tags]
    for i in range(4):
        for j in range(4):
            assert frame.iloc[i, j] == pytest.approx(spearmanr(vectors[i], vectors[j])[0],
                                                     abs=1e-6)
    np.testing.assert_allclose(np.diag(frame.to_numpy()), 1.0, atol=1e-6)


def test_constant_rdm_gives_zero_not_nan():
    tags, _, _ = _tags(n_steps=2)
    # one-hot prototypes: every between-prototype distance is 1, a constant RDM
    one_hot = torch.eye(7).repeat_interleave(2, dim=0)
    flat = rsa.tagged_rdm("Flat", "logits", "baseline", one_hot, np.arange(14) // 2)
    frame = rsa.cross_model_rsa([*tags, flat])
    assert not frame.isna().any().any()
    assert (frame.loc["Flat logits baseline"] == 0).all()


def test_rho_a_is_twelve_rs_over_n_cubed_and_below_one_with_ties():
    tags, _, _ = _tags()
    spearman = rsa.cross_model_rsa(tags).to_numpy()
    rho_a = rsa.cross_model_rsa(tags, method="rho_a").to_numpy()
    np.testing.assert_allclose(rho_a, spearman, atol=1e-6)  # no ties: the two agree
    # two 7 x 7 RDMs whose 21 upper-triangle values contain ties
    tied = [np.array([1, 1, 2, 3, 3, 3, 4.0]), np.array([2, 1, 1, 3, 5, 4, 4.0])]
    rdms = [torch.tensor(squareform(np.concatenate([v, v + 10, [0.5] * 7]))) for v in tied]
    tagged = [rsa.TaggedRDM("M", "r", i, rdm) for i, rdm in enumerate(rdms)]
    vectors = [geometry.upper_triangle(r).numpy() for r in rdms]
    got = rsa.cross_model_rsa(tagged, method="rho_a")
    ra, rb = (rankdata(v) - rankdata(v).mean() for v in vectors)
    n = vectors[0].size
    assert got.iloc[0, 1] == pytest.approx(12 * ra @ rb / (n**3 - n), abs=1e-6)
    assert got.iloc[0, 0] < 1.0  # ties: self-similarity below 1, unlike Spearman
    assert rsa.cross_model_rsa(tagged).iloc[0, 0] == pytest.approx(1.0)
    with pytest.raises(AnalysisUtilsError, match="RSA method"):
        rsa.cross_model_rsa(tagged, method="kendall")


def test_mds_recovers_an_embeddable_configuration_with_zero_stress():
    points = np.array([[0, 0], [0.3, 0], [0, 0.4], [0.3, 0.4], [0.15, 0.2]])
    dissimilarity = squareform(pdist(points))
    labels = [f"m{i}" for i in range(5)]
    frame = pd.DataFrame(1.0 - dissimilarity, index=labels, columns=labels)
    coords, stress = rsa.mds(frame)
    assert list(coords.index) == labels and list(coords.columns) == ["dim1", "dim2"]
    assert stress == pytest.approx(0.0, abs=1e-4)
    np.testing.assert_allclose(squareform(pdist(coords.to_numpy())), dissimilarity, atol=5e-3)
    again, stress_again = rsa.mds(frame)
    np.testing.assert_array_equal(again.to_numpy(), coords.to_numpy())
    # a configuration that needs 3 dimensions leaves positive raw stress in 2
    tetra = squareform(pdist(np.vstack([np.eye(4), np.zeros(4)])))
    _, stress_3d = rsa.mds(pd.DataFrame(1.0 - tetra, index=labels, columns=labels))
    assert stress_3d > 1e-3


def test_bad_tags_raise_one_clear_error():
    tags, _, _ = _tags()
    with pytest.raises(AnalysisUtilsError, match="distinct tag"):
        rsa.cross_model_rsa([tags[0], tags[0]])
    other = rsa.TaggedRDM("X", "logits", "after", torch.zeros(5, 5))
    with pytest.raises(AnalysisUtilsError, match="same categories"):
        rsa.cross_model_rsa([tags[0], other])
    with pytest.raises(AnalysisUtilsError, match="square DataFrame"):
        rsa.mds(pd.DataFrame(np.eye(3), index=list("abc"), columns=list("abd")))


@pytest.mark.skipif(not HAS_RSATOOLBOX, reason="rsatoolbox is not installed in this environment")
def test_to_rsatoolbox_carries_the_tags():
    tags, _, _ = _tags()
    rdms = rsa.to_rsatoolbox(tags, categories=[f"c{i}" for i in range(7)])
    assert rdms.n_rdm == 4
    assert list(rdms.rdm_descriptors["label"]) == [t.label for t in tags]
    np.testing.assert_allclose(rdms.dissimilarities[1], geometry.upper_triangle(tags[1].rdm))


@pytest.mark.skipif(HAS_RSATOOLBOX, reason="rsatoolbox is installed; the export is tested above")
def test_to_rsatoolbox_without_the_package_says_how_to_fix_it():
    tags, _, _ = _tags()
    with pytest.raises(AnalysisUtilsError, match="pip install rsatoolbox"):
        rsa.to_rsatoolbox(tags)
