"""Tests for analysis_utils.rsa: tagged RDMs, the study's RSA matrix (Spearman, NaN -> 0),
rho-a, MDS and the rsatoolbox export."""

import importlib.util
import warnings

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


# --------------------------------------------------------------------------------------------
# the claim test's bootstrap: between_model_rho_bootstrap against the direct computation
# --------------------------------------------------------------------------------------------


def _direct_mean_between_model_rho(rdms, index):
    """The oracle, the chapter's former code: gather the resampled vectors, rankdata, Pearson."""
    i, j = np.triu_indices(len(index), k=1)
    keep = index[i] != index[j]
    vectors = rdms[:, index[i][keep], index[j][keep]]
    ranks = rankdata(vectors, axis=1)
    ranks -= ranks.mean(axis=1, keepdims=True)
    unit = ranks / np.linalg.norm(ranks, axis=1, keepdims=True)
    rho = unit @ unit.T
    upper = np.triu_indices(len(rdms), k=1)
    return float(np.nanmean(rho[upper]))


def _bootstrap_against_oracle(rdms, draws):
    tagged = [rsa.TaggedRDM(f"M{m}", "penult", 1, torch.from_numpy(rdm))
              for m, rdm in enumerate(rdms)]
    observed, values = rsa.between_model_rho_bootstrap(tagged, draws)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.array([_direct_mean_between_model_rho(rdms, d) for d in draws])
        expected_observed = _direct_mean_between_model_rho(rdms, np.arange(rdms.shape[1]))
    assert values.shape == (len(draws),) and values.dtype == np.float64
    # a draw of one category has no pair; the former code's empty matmul gave 0 there, not NaN
    one_category = np.array([len(np.unique(d)) == 1 for d in draws])
    assert (expected[one_category] == 0).all() and np.isnan(values[one_category]).all()
    np.testing.assert_allclose(values[~one_category], expected[~one_category], rtol=0,
                               atol=1e-12)
    assert observed == pytest.approx(expected_observed, abs=1e-12, nan_ok=True)
    return observed, values


def _symmetric(values):
    rdms = (values + values.transpose(0, 2, 1)) / 2.0
    rdms[:, np.arange(rdms.shape[1]), np.arange(rdms.shape[1])] = 0.0
    return rdms


def test_bootstrap_equals_the_direct_computation_on_random_rdms():
    rng = np.random.default_rng(1)
    rdms = _symmetric(rng.random((5, 15, 15)))
    draws = rng.integers(0, 15, size=(70, 15))  # more than one chunk of 32 draws
    observed, values = _bootstrap_against_oracle(rdms, draws)
    assert np.isfinite(values).all() and np.unique(values).size > 60
    # an RDM that is not exactly symmetric: (a, b) and (b, a) hold different values
    _bootstrap_against_oracle(rng.random((4, 11, 11)), rng.integers(0, 11, size=(40, 11)))


def test_bootstrap_equals_the_direct_computation_on_cosine_rdms_of_features():
    tags, _, _ = _tags(n_steps=5, n_classes=9, seed=3)
    rdms = np.stack([t.rdm.numpy() for t in tags]).astype(np.float64)
    draws = np.random.default_rng(42).integers(0, 9, size=(30, 9))
    observed, values = _bootstrap_against_oracle(rdms, draws)
    got_observed, got_values = rsa.between_model_rho_bootstrap(tags, draws)  # float32 RDMs
    assert got_observed == observed
    np.testing.assert_array_equal(got_values, values)


def test_bootstrap_handles_ties_constant_rdms_and_repeated_categories():
    rng = np.random.default_rng(2)
    n = 12
    tied = _symmetric(np.round(rng.random((3, n, n)), 1))  # few distinct values: many ties
    duplicated = tied[0].copy()
    duplicated[duplicated > 0.5] = 0.75  # one large tie group
    constant = 1.0 - np.eye(n)  # an untrained step: every distance the same
    rdms = np.stack([*tied, duplicated, constant])
    draws = np.concatenate([
        rng.integers(0, n, size=(20, n)),
        rng.integers(0, 3, size=(20, n)),  # three categories, each repeated about 4 times
        np.stack([np.r_[np.zeros(n - 1, int), [k]] for k in range(1, 4)]),  # one pair: NaN
        np.full((2, n), 5),  # one category only: no pair at all, NaN
    ])
    observed, values = _bootstrap_against_oracle(rdms, draws)
    assert np.isnan(values[-5:]).all() and np.isfinite(values[:20]).all()
    # every rho with the constant RDM is NaN and dropped, so it does not change the mean
    _, without_constant = rsa.between_model_rho_bootstrap(
        [rsa.TaggedRDM(f"M{m}", "logits", 1, torch.from_numpy(r)) for m, r in enumerate(rdms[:4])],
        draws)
    np.testing.assert_allclose(without_constant, values, rtol=0, atol=1e-12, equal_nan=True)
    # only constant RDMs: NaN everywhere, the observed value included
    flat = [rsa.TaggedRDM(f"F{m}", "logits", 1, torch.from_numpy(constant * (m + 1)))
            for m in range(3)]
    flat_observed, flat_values = rsa.between_model_rho_bootstrap(flat, draws[:5])
    assert np.isnan(flat_observed) and np.isnan(flat_values).all()


def test_bootstrap_bad_inputs_raise_one_clear_error():
    tags, _, _ = _tags(n_steps=3, n_classes=6)
    good = np.zeros((2, 6), dtype=int)
    cases = [
        ((tags[:1], good), "at least 2"),
        (([tags[0], tags[0].rdm], good), "must be a TaggedRDM"),
        ((tags, np.zeros((2, 6))), "integer array"),
        ((tags, np.arange(6)), "integer array"),
        ((tags, np.zeros((0, 6), dtype=int)), "integer array"),
        ((tags, np.full((2, 6), 6)), "categories 0..5"),
        ((tags, np.full((2, 6), -1)), "categories 0..5"),
        (([*tags[:2], rsa.TaggedRDM("X", "logits", 1, torch.full((6, 6), float("nan")))],
          good), "NaN"),
    ]
    for (tagged, draws), message in cases:
        with pytest.raises(AnalysisUtilsError, match=message) as error:
            rsa.between_model_rho_bootstrap(tagged, draws)
        assert str(error.value).count(". ") == 0 or str(error.value).endswith(".")
