"""Tests for analysis_utils.geometry: the study's definitions, known answers, batching over steps.

The reference values are computed here by plain per-class / per-pair loops written from the
study's definitions (docs/reference/reference-study.md section 3), not by the module's code.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.stats import spearmanr

from analysis_utils import geometry as g
from analysis_utils.errors import AnalysisUtilsError


def _relu_features(n_per_class=(6, 7, 5, 6, 8), dim=24, seed=0, steps=None):
    """ReLU-like features with class structure; labels unsorted and non-contiguous."""
    rng = np.random.default_rng(seed)
    label_values = np.array([40, 3, 17, 8, 25])
    labels = np.concatenate([np.full(n, v) for v, n in zip(label_values, n_per_class)])
    rng.shuffle(labels)
    centres = {v: rng.normal(size=dim) for v in label_values}
    shape = (len(labels), dim) if steps is None else (steps, len(labels), dim)
    noise = rng.normal(scale=0.8, size=shape)
    base = np.stack([centres[v] for v in labels])
    X = np.maximum(base + noise + 0.5, 0.0).astype(np.float32)
    return torch.from_numpy(X), labels


# ---- plain reference implementations from the study's definitions ----------------------------


def _ref_prototypes(X, labels):
    X = np.asarray(X, dtype=np.float64)
    return np.stack([X[labels == c].mean(0) for c in np.unique(labels)])


def _ref_cos_dist(a, b):
    return 1.0 - np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))


def _ref_pair_metrics(Xb, Xa, labels):
    classes = np.unique(labels)
    Pb, Pa = _ref_prototypes(Xb, labels), _ref_prototypes(Xa, labels)
    Xb, Xa = np.asarray(Xb, np.float64), np.asarray(Xa, np.float64)
    pos = {c: i for i, c in enumerate(classes)}
    db = np.array([_ref_cos_dist(x, Pb[pos[c]]) for x, c in zip(Xb, labels)])
    da = np.array([_ref_cos_dist(x, Pa[pos[c]]) for x, c in zip(Xa, labels)])
    per_class = []
    for c in classes:
        mb, ma = db[labels == c].mean(), da[labels == c].mean()
        if mb > 1e-12:
            per_class.append((ma - mb) / mb * 100)
    shift = np.mean([_ref_cos_dist(Pb[i], Pa[i]) for i in range(len(classes))])
    Cb, Ca = Pb - Pb.mean(0), Pa - Pa.mean(0)
    pairs = [(i, j) for i in range(len(classes)) for j in range(i + 1, len(classes))]
    between = []
    for i, j in pairs:
        b, a = _ref_cos_dist(Cb[i], Cb[j]), _ref_cos_dist(Ca[i], Ca[j])
        if b > 1e-12:
            between.append((a - b) / b * 100)
    raw_b = [_ref_cos_dist(Pb[i], Pb[j]) for i, j in pairs]
    raw_a = [_ref_cos_dist(Pa[i], Pa[j]) for i, j in pairs]
    return {
        "Δ Cluster Size": da.mean() - db.mean(),
        "Δ Cluster Size (%)": np.mean(per_class),
        "Avg Proto Shift": shift,
        "Δ Between-Proto (%)": np.mean(between),
        "Proto RDM ρ": spearmanr(raw_b, raw_a)[0],
    }


def _assert_metrics_close(got, expected, atol):
    assert list(got) == list(g.PAIR_METRIC_KEYS)
    for key in g.PAIR_METRIC_KEYS:
        assert got[key] == pytest.approx(expected[key], abs=atol), key


# ---- prototypes, distances, RDMs -------------------------------------------------------------


def test_prototypes_are_raw_class_means_in_sorted_label_order():
    X, labels = _relu_features()
    P = g.prototypes(X, labels)
    assert P.dtype == torch.float32 and P.shape == (5, X.shape[1])
    np.testing.assert_allclose(P.numpy(), _ref_prototypes(X, labels), rtol=1e-5, atol=1e-6)


def test_exemplar_distances_cosine_and_euclidean():
    X, labels = _relu_features()
    P = _ref_prototypes(X, labels)
    pos = {c: i for i, c in enumerate(np.unique(labels))}
    own = P[[pos[c] for c in labels]]
    cosine = g.exemplar_prototype_distances(X, labels)
    euclid = g.exemplar_prototype_distances(X, labels, metric="euclidean")
    expected_cos = [_ref_cos_dist(x, p) for x, p in zip(X.numpy().astype(float), own)]
    np.testing.assert_allclose(cosine.numpy(), expected_cos, atol=2e-6)
    np.testing.assert_allclose(euclid.numpy(), np.linalg.norm(X.numpy() - own, axis=1),
                               rtol=1e-5)
    with pytest.raises(AnalysisUtilsError, match="metric"):
        g.exemplar_prototype_distances(X, labels, metric="manhattan")


def test_cosine_rdm_and_upper_triangle_match_scipy_and_triu_order():
    P = torch.randn(6, 10)
    rdm = g.cosine_rdm(P)
    expected = cdist(P.numpy().astype(float), P.numpy().astype(float), "cosine")
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(rdm.numpy(), expected, atol=1e-6)
    assert torch.all(torch.diagonal(rdm) == 0)
    upper = g.upper_triangle(rdm)
    rows, cols = np.triu_indices(6, 1)
    assert upper.shape == (15,)
    np.testing.assert_array_equal(upper.numpy(), rdm.numpy()[rows, cols])
    with pytest.raises(AnalysisUtilsError, match="square"):
        g.upper_triangle(torch.zeros(3, 4))


# ---- the study's pair metrics ----------------------------------------------------------------


def test_pair_metrics_match_plain_study_definitions():
    X, labels = _relu_features(steps=2)
    got = g.pair_metrics(X[0], X[1], labels)
    _assert_metrics_close(got, _ref_pair_metrics(X[0], X[1], labels), atol=2e-5)


def test_shrink_toward_prototypes_gives_the_expected_negative_cluster_change():
    # prototypes in the first 6 dims, residuals (paired +-, so class means are exact) in
    # dims orthogonal to every prototype: cos(x, p) = |p| / sqrt(|p|^2 + |r|^2)
    rng = np.random.default_rng(1)
    n_classes, dim, per_class, radius, shrink = 5, 40, 6, 0.8, 0.5
    protos = rng.normal(size=(n_classes, 6))
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    before, after, labels = [], [], []
    for c in range(n_classes):
        for j in range(per_class // 2):
            residual = np.zeros(dim)
            residual[6 + (c * per_class + j) % (dim - 6)] = radius
            for sign in (1, -1):
                p = np.concatenate([protos[c], np.zeros(dim - 6)])
                before.append(p + sign * residual)
                after.append(p + sign * shrink * residual)
                labels.append(c)
    Xb = torch.tensor(np.array(before), dtype=torch.float32)
    Xa = torch.tensor(np.array(after), dtype=torch.float32)
    d_before = 1 - 1 / np.sqrt(1 + radius**2)
    d_after = 1 - 1 / np.sqrt(1 + (shrink * radius) ** 2)
    got = g.pair_metrics(Xb, Xa, np.array(labels))
    assert got["Δ Cluster Size"] == pytest.approx(d_after - d_before, abs=1e-6)
    assert got["Δ Cluster Size"] < -0.1
    assert got["Δ Cluster Size (%)"] == pytest.approx((d_after - d_before) / d_before * 100,
                                                       abs=1e-4)
    assert got["Avg Proto Shift"] == pytest.approx(0.0, abs=1e-6)
    assert got["Δ Between-Proto (%)"] == pytest.approx(0.0, abs=1e-4)
    assert got["Proto RDM ρ"] == pytest.approx(1.0)


def test_uniform_offset_changes_raw_but_not_centred_measures():
    X, labels = _relu_features()
    offset = torch.linspace(0.5, 2.0, X.shape[1])
    shifted = X + offset
    got = g.pair_metrics(X, shifted, labels)
    assert got["Δ Between-Proto (%)"] == pytest.approx(0.0, abs=1e-3)  # centred: unchanged
    assert got["Avg Proto Shift"] > 1e-3  # raw prototypes move
    assert abs(got["Δ Cluster Size"]) > 1e-3  # raw cosine cluster size moves
    before, after = g.orthogonality(X, labels), g.orthogonality(shifted, labels)
    for key in ("centred_mean_cosine", "centred_rms_cosine", "centred_mean_abs_cosine",
                "centred_equiangularity", "centred_pr_fraction"):
        assert after[key] == pytest.approx(before[key], abs=1e-5), key
    assert abs(after["raw_between_mean"] - before["raw_between_mean"]) > 1e-3
    assert after["grand_mean_norm_ratio"] > before["grand_mean_norm_ratio"] + 0.1


def test_scaling_features_leaves_cosine_measures_unchanged():
    X, labels = _relu_features(steps=2)
    plain = g.pair_metrics(X[0], X[1], labels)
    scaled = g.pair_metrics(3.0 * X[0], 0.25 * X[1], labels)
    _assert_metrics_close(scaled, plain, atol=1e-4)  # % values carry float32 rounding x 100
    for fn in (g.nearest_centroid_accuracy, g.between_prototype_summary, g.orthogonality):
        a, b = fn(X[0], labels), fn(7.0 * X[0], labels)
        for key in a:
            assert b[key] == pytest.approx(a[key], abs=1e-5), (fn.__name__, key)
    np.testing.assert_allclose(g.knn_category_preservation(5.0 * X[0], labels, 6)[1],
                               g.knn_category_preservation(X[0], labels, 6)[1])


# ---- descriptive measures --------------------------------------------------------------------


def _one_hot_features(n_classes=6, per_class=4):
    """Exemplars 0.5 e_c and 1.5 e_c, so the prototypes are exactly the one-hot vectors e_c."""
    rows, labels = [], []
    for c in range(n_classes):
        for k in range(per_class):
            row = np.zeros(n_classes + 2, dtype=np.float32)
            row[c] = 0.5 if k % 2 == 0 else 1.5
            rows.append(row)
            labels.append(c)
    return torch.tensor(np.array(rows)), np.array(labels)


def test_orthogonal_one_hot_prototypes_give_distance_one_and_a_simplex():
    X, labels = _one_hot_features()
    summary = g.between_prototype_summary(X, labels)
    assert summary == {"mean": pytest.approx(1.0, abs=1e-6), "sd": pytest.approx(0.0, abs=1e-6),
                       "n_pairs": 15}
    orth = g.orthogonality(X, labels)
    c = 6
    assert orth["raw_between_mean"] == pytest.approx(1.0, abs=1e-6)
    assert orth["centred_mean_cosine"] == pytest.approx(-1 / (c - 1), abs=1e-6)
    assert orth["centred_rms_cosine"] == pytest.approx(1 / (c - 1), abs=1e-6)
    assert orth["centred_equiangularity"] == pytest.approx(0.0, abs=1e-6)
    assert orth["centred_pr_fraction"] == pytest.approx(1.0, abs=1e-6)
    # grand mean (1/C, ..., 1/C): norm 1/sqrt(C); centred norms sqrt(1 - 1/C)
    assert orth["grand_mean_norm_ratio"] == pytest.approx(
        (1 / np.sqrt(c)) / np.sqrt(1 - 1 / c), rel=1e-5)


def test_between_prototype_summary_uses_raw_prototypes_and_ddof_zero():
    X, labels = _relu_features()
    P = _ref_prototypes(X, labels)
    distances = [_ref_cos_dist(P[i], P[j]) for i in range(5) for j in range(i + 1, 5)]
    got = g.between_prototype_summary(X, labels)
    assert got["n_pairs"] == 10
    assert got["mean"] == pytest.approx(np.mean(distances), abs=1e-6)
    assert got["sd"] == pytest.approx(np.std(distances, ddof=0), abs=1e-6)
    assert got["sd"] != pytest.approx(np.std(distances, ddof=1), abs=1e-6)


def _ref_nearest_centroid(X, labels, leave_one_out):
    X = np.asarray(X, dtype=np.float64)
    classes = list(np.unique(labels))
    P = _ref_prototypes(X, labels)
    top1 = top5 = 0
    for i, (x, c) in enumerate(zip(X, labels)):
        protos = P.copy()
        if leave_one_out:
            members = [j for j in range(len(X)) if labels[j] == c and j != i]
            protos[classes.index(c)] = X[members].mean(0)
        sims = np.array([1 - _ref_cos_dist(x, p) for p in protos])
        order = np.argsort(-sims, kind="stable")
        top1 += order[0] == classes.index(c)
        top5 += classes.index(c) in order[:5]
    return 100 * top1 / len(X), 100 * top5 / len(X)


@pytest.mark.parametrize("leave_one_out", [False, True])
def test_nearest_centroid_accuracy_matches_plain_loop(leave_one_out):
    # 7 weakly separated classes, so that top-5 is below 100 %
    rng = np.random.default_rng(3)
    labels = np.arange(35) % 7
    X = torch.tensor(rng.normal(size=(35, 6)) + 0.3 * rng.normal(size=(7, 6))[labels],
                     dtype=torch.float32)
    got = g.nearest_centroid_accuracy(X, labels, leave_one_out=leave_one_out)
    top1, top5 = _ref_nearest_centroid(X, labels, leave_one_out)
    assert got["top1"] == pytest.approx(top1)
    assert got["top5"] == pytest.approx(top5)
    assert got["top5"] < 100.0


def test_leave_one_out_excludes_the_exemplar_from_its_prototype():
    # the exemplar at 53 degrees is 27 degrees from its own prototype (which contains it) and
    # 34 degrees from class 1; without itself its prototype is the exemplar at 0 degrees
    X = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.1, 1.0]])
    labels = np.array([0, 0, 1, 1])
    assert g.nearest_centroid_accuracy(X, labels)["top1"] == pytest.approx(100.0)
    loo = g.nearest_centroid_accuracy(X, labels, leave_one_out=True)
    assert loo["top1"] == pytest.approx(75.0)
    with pytest.raises(AnalysisUtilsError, match="at least 2 exemplars"):
        g.nearest_centroid_accuracy(X[:3], labels[:3], leave_one_out=True)


def test_logit_accuracy_goes_through_class_index():
    logits = torch.zeros(4, 10)
    class_index = [7, 2]  # category 0 is output 7, category 1 is output 2
    labels = np.array([0, 0, 1, 1])
    logits[0, 7] = 5  # correct
    logits[1, 0] = 5  # wrong, but category 0's output is second
    logits[1, 7] = 4
    logits[2, 2] = 5  # correct
    logits[3, :] = torch.arange(10.0)  # output 2 ranks 8th: wrong in top-5
    got = g.logit_accuracy(logits, labels, class_index)
    assert got == {"top1": pytest.approx(50.0), "top5": pytest.approx(75.0)}
    with pytest.raises(AnalysisUtilsError, match="0..1"):
        g.logit_accuracy(logits, np.array([0, 1, 2, 1]), class_index)
    with pytest.raises(AnalysisUtilsError, match="classifier outputs"):
        g.logit_accuracy(logits, labels, [7, 12])


def _ref_knn(X, labels, max_k):
    X = np.asarray(X, dtype=np.float64)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, : max_k - 1]
    same = labels[order] == labels[:, None]
    ks = np.arange(2, max_k + 1)
    return ks, 100 * np.cumsum(same.sum(0)) / (len(X) * (ks - 1))


def test_knn_preservation_counts_k_with_self_and_excludes_self_by_index():
    X, labels = _relu_features(seed=4)
    ks, pct = g.knn_category_preservation(X, labels, max_k=8)
    ref_ks, ref_pct = _ref_knn(X, labels, 8)
    np.testing.assert_array_equal(ks, ref_ks)
    np.testing.assert_allclose(pct, ref_pct)
    # duplicate images in different classes: the twin ranks with the point itself; excluding
    # self by index makes k = 2 score exactly the twin (another class: 0 % for those rows)
    twins = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ks, pct = g.knn_category_preservation(twins, np.array([0, 1, 2, 3]), max_k=2)
    assert pct[0] == 0.0
    ks, pct = g.knn_category_preservation(twins, np.array([0, 0, 1, 1]), max_k=2)
    assert pct[0] == 100.0
    with pytest.raises(AnalysisUtilsError, match="max_k"):
        g.knn_category_preservation(twins, np.array([0, 0, 1, 1]), max_k=5)


def test_effective_dimension_is_the_participation_ratio_of_the_covariance():
    X, _ = _relu_features(dim=9)
    data = X.numpy().astype(np.float64)
    eig = np.clip(np.linalg.eigvalsh(np.cov(data, rowvar=False)), 0, None)
    assert g.effective_dimension(X) == pytest.approx(eig.sum() ** 2 / (eig**2).sum(), rel=1e-5)
    wide = torch.randn(10, 50)  # N < D uses the N x N Gram
    eig = np.clip(np.linalg.eigvalsh(np.cov(wide.numpy().astype(float), rowvar=False)), 0, None)
    assert g.effective_dimension(wide) == pytest.approx(eig.sum() ** 2 / (eig**2).sum(),
                                                        rel=1e-5)
    square = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])
    assert g.effective_dimension(square) == pytest.approx(2.0)


# ---- batched over steps ----------------------------------------------------------------------


def test_batched_steps_equal_step_by_step():
    features, labels = _relu_features(steps=4)
    P = g.prototypes(features, labels)
    assert P.shape == (4, 5, features.shape[-1])
    for t in range(4):
        torch.testing.assert_close(P[t], g.prototypes(features[t], labels))
        torch.testing.assert_close(g.exemplar_prototype_distances(features, labels)[t],
                                   g.exemplar_prototype_distances(features[t], labels))
        torch.testing.assert_close(g.cosine_rdm(P)[t], g.cosine_rdm(P[t]))
    for fn in (g.between_prototype_summary, g.nearest_centroid_accuracy, g.orthogonality):
        batched = fn(features, labels)
        for t in range(4):
            single = fn(features[t], labels)
            for key in single:
                if key == "n_pairs":
                    assert batched[key] == single[key]
                else:
                    assert batched[key][t] == pytest.approx(single[key], abs=1e-6), key
    np.testing.assert_allclose(g.effective_dimension(features)[2],
                               g.effective_dimension(features[2]))
    np.testing.assert_allclose(g.knn_category_preservation(features, labels, 5)[1][3],
                               g.knn_category_preservation(features[3], labels, 5)[1])


@pytest.mark.parametrize("reference, expected_from, expected_to", [
    ("previous", [1, 2, 3], [2, 3, 4]), ("first", [1, 1, 1], [2, 3, 4]),
    (2, [2, 2], [3, 4]), (3, [3], [4]),
])
def test_pair_metrics_over_steps_equals_pairwise_calls(reference, expected_from, expected_to):
    features, labels = _relu_features(steps=4)
    table = g.pair_metrics_over_steps(features, labels, reference=reference)
    assert list(table.columns) == ["step_from", "step_to", *g.PAIR_METRIC_KEYS]
    assert table["step_from"].tolist() == expected_from
    assert table["step_to"].tolist() == expected_to
    for _, row in table.iterrows():
        start, end = int(row["step_from"]) - 1, int(row["step_to"]) - 1
        single = g.pair_metrics(features[start], features[end], labels)
        _assert_metrics_close(dict(row[list(g.PAIR_METRIC_KEYS)]), single, atol=1e-9)
    with pytest.raises(AnalysisUtilsError, match="reference"):
        g.pair_metrics_over_steps(features, labels, reference="last")
    with pytest.raises(AnalysisUtilsError, match="from 1 to 3"):
        g.pair_metrics_over_steps(features, labels, reference=4)


def test_first_image_dependent_step_skips_steps_that_are_the_same_for_every_image():
    features, labels = _relu_features(steps=5)
    state = torch.rand(1, 1, features.shape[-1]) + 0.5  # bias-driven, identical for every image
    noise = 1e-7 * torch.randn(2, *features.shape[1:])  # float rounding across the batch
    features[:2] = state + noise
    assert g.first_image_dependent_step(features) == 3
    assert g.first_image_dependent_step(features[2:]) == 1
    assert g.first_image_dependent_step(features[:2]) is None
    assert g.first_image_dependent_step(features, rtol=1e-8) == 1  # noise above this tolerance
    with pytest.raises(AnalysisUtilsError, match="rtol"):
        g.first_image_dependent_step(features, rtol=0)


def test_trajectory_rows_equal_single_state_measures():
    features, labels = _relu_features(steps=3)
    table = g.trajectory(features, labels)
    assert table["step"].tolist() == [1, 2, 3]
    t = 1
    row = table.iloc[t]
    X = features[t]
    assert row["cluster_size"] == pytest.approx(
        float(g.exemplar_prototype_distances(X, labels).double().mean()), abs=1e-7)
    assert row["between_mean"] == pytest.approx(g.between_prototype_summary(X, labels)["mean"])
    assert row["nc_top1"] == pytest.approx(g.nearest_centroid_accuracy(X, labels)["top1"])
    assert row["cluster_size_euclidean"] == pytest.approx(
        float(g.exemplar_prototype_distances(X, labels, "euclidean").double().mean()), abs=1e-6)
    nc, loo = (g.nearest_centroid_accuracy(X, labels, leave_one_out=flag) for flag in (0, 1))
    assert (row["nc_top1"], row["nc_top5"]) == pytest.approx((nc["top1"], nc["top5"]))
    assert (row["nc_loo_top1"], row["nc_loo_top5"]) == pytest.approx((loo["top1"], loo["top5"]))
    assert row["effective_dimension"] == pytest.approx(g.effective_dimension(X))
    assert row["centred_rms_cosine"] == pytest.approx(
        g.orthogonality(X, labels)["centred_rms_cosine"])
    assert row["zero_fraction"] == pytest.approx(float((X == 0).double().mean()))
    logits = torch.randn(2, 12, 9)
    table = g.trajectory(logits, np.arange(12) % 3, logits_class_index=[4, 0, 8])
    accuracy = g.logit_accuracy(logits[1], np.arange(12) % 3, [4, 0, 8])
    assert table.loc[1, "logit_top1"] == pytest.approx(accuracy["top1"])


# ---- bad input -------------------------------------------------------------------------------


def test_bad_inputs_raise_one_clear_error():
    X, labels = _relu_features()
    with pytest.raises(AnalysisUtilsError, match="layout"):
        g.prototypes(X[None, None], labels)
    with pytest.raises(AnalysisUtilsError, match="one integer per exemplar"):
        g.prototypes(X, labels[:-1])
    with pytest.raises(AnalysisUtilsError, match="integers"):
        g.prototypes(X, labels.astype(float))
    with pytest.raises(AnalysisUtilsError, match="same images"):
        g.pair_metrics(X, X[:-1], labels)
    bad = X.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(AnalysisUtilsError, match="NaN"):
        g.between_prototype_summary(bad, labels)
    bad[0, 0], bad[1, 0] = float("inf"), float("-inf")  # their sum is NaN: still refused
    with pytest.raises(AnalysisUtilsError, match="infinite"):
        g.between_prototype_summary(bad, labels)
    huge = torch.full_like(X, 3e38)  # finite values whose float32 sum overflows: accepted
    assert g.between_prototype_summary(huge, labels)["n_pairs"] > 0
    with pytest.raises(AnalysisUtilsError, match=r"\[T, N, D\]"):
        g.trajectory(X, labels)


def test_trajectory_in_blocks_of_steps_equals_all_steps_at_once(monkeypatch):
    features, labels = _relu_features(steps=5)
    whole = g.trajectory(features, labels)
    monkeypatch.setattr(g, "STEP_CHUNK_ELEMENTS", 2 * features.shape[1] * features.shape[2])
    blocks = g.trajectory(features, labels)  # blocks of 2, 2 and 1 steps
    assert blocks["step"].tolist() == [1, 2, 3, 4, 5]
    pd.testing.assert_frame_equal(blocks, whole, rtol=1e-6)
    for flag in (False, True):
        accuracy = g.nearest_centroid_accuracy(features, labels, leave_one_out=flag)
        column = "nc_loo" if flag else "nc"
        np.testing.assert_allclose(accuracy["top1"], whole[f"{column}_top1"])
        np.testing.assert_allclose(accuracy["top5"], whole[f"{column}_top5"])


@pytest.mark.parametrize("reference", ["previous", "first", 2])
def test_pair_metrics_over_steps_in_blocks_equals_all_pairs_at_once(reference, monkeypatch):
    features, labels = _relu_features(steps=5)
    whole = g.pair_metrics_over_steps(features, labels, reference=reference)
    monkeypatch.setattr(g, "STEP_CHUNK_ELEMENTS", features.shape[1] * features.shape[2])
    blocks = g.pair_metrics_over_steps(features, labels, reference=reference)  # one pair each
    pd.testing.assert_frame_equal(blocks, whole, rtol=1e-6)


def test_measures_built_on_prototypes_refuse_one_image_per_category():
    """With one image per category each image is its own prototype ("Δ Cluster Size (%)" came
    out as -100); every measure that builds prototypes refuses it in one sentence, naming how
    many categories are short and one of them; measures without prototypes still run."""
    from analysis_utils import rsa, stats

    X, labels = _relu_features(n_per_class=(6, 1, 5, 6, 1))
    steps, _ = _relu_features(n_per_class=(6, 1, 5, 6, 1), steps=3)
    refusals = {
        "pair_metrics": lambda: g.pair_metrics(X, X + 0.1, labels),
        "pair_metrics_over_steps": lambda: g.pair_metrics_over_steps(steps, labels),
        "exemplar_prototype_distances": lambda: g.exemplar_prototype_distances(X, labels),
        "between_prototype_summary": lambda: g.between_prototype_summary(X, labels),
        "nearest_centroid_accuracy": lambda: g.nearest_centroid_accuracy(X, labels),
        "orthogonality": lambda: g.orthogonality(X, labels),
        "trajectory": lambda: g.trajectory(steps, labels),
        "tagged_rdm": lambda: rsa.tagged_rdm("m", "penult", 1, X, labels),
        "permutation_between": lambda: stats.permutation_between(X, X + 0.1, labels, n_perm=5),
    }
    for call in refusals.values():
        with pytest.raises(AnalysisUtilsError, match=r"at least 2 exemplars per category "
                           r".*but 2 of the 5 categories have fewer \(category 3 has 1\)"):
            call()
    one_each = np.arange(5)
    with pytest.raises(AnalysisUtilsError, match="5 of the 5 categories"):
        g.pair_metrics(X[:5], X[:5] + 0.1, one_each)
    assert g.prototypes(X[:5], one_each).shape == (5, X.shape[1])  # a building block, no measure
    assert g.knn_category_preservation(X, labels, max_k=3)[1].shape == (2,)
    assert g.effective_dimension(X) > 1
