"""Tests for analysis_utils.claims: every verdict rule on synthetic features built to make its
claim hold, reverse and be unclear; each claim's estimate is the chapter's own number for the
same features; evaluate_all's table, its untrained reference and its input checks; and the
findings chapter's view of the table (links to the chapters' headings, its rows, the verdict
matrix, the sentences drawn from the verdicts)."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis_utils import book, catalogue, claims, geometry, rsa, stats
from analysis_utils.errors import AnalysisUtilsError

STUDY_MODELS = ("lrm3", "lra3", "bl", "cornet_rt", "convrnn", "alexnet", "b")

C, K = 16, 12  # categories, images per category
LABELS = np.repeat(np.arange(C), K)
N = C * K
N_PERM, N_BOOT = 200, 300


# --------------------------------------------------------------------------------------------
# synthetic features
# --------------------------------------------------------------------------------------------


def _centres(seed, dim=C, common=0.0, one_hot=0.0):
    """Category centres [C, dim]: Gaussian, plus ``common`` times a shared direction (all ones;
    raises every raw cosine between prototypes) and ``one_hot`` times the category's own unit
    (makes the category's own output the largest, for logit accuracy)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(C, dim)) + common * np.ones(dim)
    centres[:, :C] += one_hot * np.eye(C)
    return centres


def _clusters(centres, noise, seed):
    """Exemplars [N, D]: each category's centre plus Gaussian noise of SD ``noise``."""
    rng = np.random.default_rng(seed)
    X = centres[LABELS] + noise * rng.normal(size=(N, centres.shape[1]))
    return torch.tensor(X, dtype=torch.float32)


def _shuffled(X, seed=5):
    """The same exemplars, shuffled within each category: the same prototypes (up to float
    rounding) and the same per-category sets of exemplars, so no change of any kind."""
    rng = np.random.default_rng(seed)
    return X[np.concatenate([c * K + rng.permutation(K) for c in range(C)])]


def _step(model, state):
    card = catalogue.card(model)
    return card.after if state == "after" else card.states[state]


def _features(model, before, after, before_state="baseline", after_state="after"):
    """``{model: {penult, logits}}`` [T, N, D]: ``before`` at every step except ``after`` at the
    after state (both readouts get the same features)."""
    X = before.unsqueeze(0).repeat(catalogue.card(model).default_steps, 1, 1)
    X[_step(model, after_state) - 1] = after
    X[_step(model, before_state) - 1] = before
    return {model: {"penult": X, "logits": X.clone()}}


def _solve(measure, target, low, high, steps=40):
    """x in [low, high] with measure(x) = target (measure monotone), by bisection."""
    below_at_low = measure(low) < target
    for _ in range(steps):
        middle = (low + high) / 2
        if (measure(middle) < target) == below_at_low:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _row(claim_id, features, **kwargs):
    kwargs = {"labels": LABELS, "n_perm": N_PERM, "n_boot": N_BOOT, **kwargs}
    table = claims.evaluate_all(features, claim_ids=[claim_id], **kwargs)
    assert len(table) == 1
    return table.iloc[0]


def _verdict(claim_id, features, **kwargs):
    row = _row(claim_id, features, **kwargs)
    assert row["note"] == "", row["note"]
    return row["verdict"]


OPPOSITE = {"holds": "reversed", "reversed": "holds"}


# --------------------------------------------------------------------------------------------
# the rules themselves
# --------------------------------------------------------------------------------------------


def test_interval_rule_needs_value_and_whole_interval_on_one_side():
    above = claims.IntervalRule("above")
    below_09 = claims.IntervalRule("below", 0.9)
    estimate = claims.Estimate
    assert above.verdict(estimate(0.5, 0.1, 0.9, "")) == "holds"
    assert above.verdict(estimate(-0.5, -0.9, -0.1, "")) == "reversed"
    assert above.verdict(estimate(0.5, -0.1, 0.9, "")) == "unclear"
    assert above.verdict(estimate(0.0, 0.0, 0.0, "")) == "unclear"
    assert above.verdict(estimate(-0.1, 0.1, 0.9, "")) == "unclear"  # value outside interval
    assert above.verdict(estimate(0.5, float("nan"), 0.9, "")) == "unclear"
    assert below_09.verdict(estimate(0.8, 0.7, 0.85, "")) == "holds"
    assert below_09.verdict(estimate(0.95, 0.92, 0.97, "")) == "reversed"
    with pytest.raises(AnalysisUtilsError, match="expected side"):
        claims.IntervalRule("up")


def test_permutation_rule_needs_the_sign_and_a_small_p():
    rule = claims.PermutationRule("above")
    estimate = claims.Estimate
    assert rule.verdict(estimate(2.0, -1, 1, "", p_value=0.0)) == "holds"
    assert rule.verdict(estimate(-2.0, -1, 1, "", p_value=0.01)) == "reversed"
    assert rule.verdict(estimate(2.0, -1, 1, "", p_value=0.05)) == "unclear"
    assert rule.verdict(estimate(2.0, -1, 1, "")) == "unclear"  # no p-value


# --------------------------------------------------------------------------------------------
# each claim on features built to make it hold, reverse and be unclear
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("claim_id", ["accuracy-logits-lrm3", "accuracy-nc-lrm3",
                                      "accuracy-logits-cornet_rt", "accuracy-nc-convrnn"])
def test_accuracy_claims(claim_id):
    model = claim_id.rsplit("-", 1)[1]
    centres = _centres(0, one_hot=3.0)
    noisy, clean = _clusters(centres, 1.3, 1), _clusters(centres, 0.3, 2)
    index = {"class_index": np.arange(C)}
    assert _verdict(claim_id, _features(model, noisy, clean), **index) == "holds"
    assert _verdict(claim_id, _features(model, clean, noisy), **index) == "reversed"
    assert _verdict(claim_id, _features(model, noisy, _shuffled(noisy)), **index) == "unclear"


@pytest.mark.parametrize("claim_id, model, before_state, compaction_verdict", [
    ("local-lrm3", "lrm3", "baseline", "holds"),
    ("local-cornet_rt", "cornet_rt", "baseline", "holds"),
    ("local-bl", "bl", "baseline", "reversed"),
    ("image-off-clusters-convrnn", "convrnn", "image_off", "reversed"),
])
def test_local_claims(claim_id, model, before_state, compaction_verdict):
    centres = _centres(1, common=1.0)
    wide, tight = _clusters(centres, 1.0, 1), _clusters(centres, 0.4, 2)
    compaction = _features(model, wide, tight, before_state)
    expansion = _features(model, tight, wide, before_state)
    assert _verdict(claim_id, compaction) == compaction_verdict
    assert _verdict(claim_id, expansion) == OPPOSITE[compaction_verdict]
    assert _verdict(claim_id, _features(model, wide, _shuffled(wide), before_state)) == "unclear"


@pytest.mark.parametrize("claim_id, model, before_state", [
    ("global-lrm3", "lrm3", "baseline"),
    ("global-cornet_rt", "cornet_rt", "baseline"),
    ("image-off-separation-convrnn", "convrnn", "image_off"),
])
def test_global_claims(claim_id, model, before_state):
    # Centring fixes the mean centred distance near 1 + 1 / (C - 1), so "Δ Between-Proto (%)"
    # (a mean per-pair % change) grows when a lump of categories (15 around one centre, one
    # opposite: most centred distances near 0) opens into a spread, and falls the other way.
    rng = np.random.default_rng(2)
    own, centre = rng.normal(size=(C, C)), rng.normal(size=C)
    lumped = 0.3 * own + 3 * centre + 1.0
    lumped[-1] = -3 * centre + 2.0
    lump, spread = _clusters(lumped, 0.3, 2), _clusters(3 * own + 1.0, 1.0, 1)
    assert _verdict(claim_id, _features(model, lump, spread, before_state)) == "holds"
    assert _verdict(claim_id, _features(model, spread, lump, before_state)) == "reversed"
    assert _verdict(claim_id,
                    _features(model, spread, _shuffled(spread), before_state)) == "unclear"


def _rho_features(model, s):
    """Baseline clusters and an after state whose centres are moved by ``s`` times independent
    centres: Proto RDM ρ falls from 1 (s = 0) towards 0."""
    centres = _centres(4)
    before = _clusters(centres, 0.1, 1)
    after = _clusters(centres + s * _centres(5), 0.1, 2)
    return _features(model, before, after)


@pytest.mark.parametrize("claim_id, model, similar_verdict", [
    ("rdm-rho-lrm3", "lrm3", "holds"),
    ("rdm-rho-cornet_rt", "cornet_rt", "reversed"),
])
def test_rdm_rho_claims(claim_id, model, similar_verdict):
    assert _verdict(claim_id, _rho_features(model, 0.05)) == similar_verdict
    assert _verdict(claim_id, _rho_features(model, 20.0)) == OPPOSITE[similar_verdict]
    readout = claims.get(claim_id).readout

    def rho(s):
        X = _rho_features(model, s)[model][readout]
        return geometry.pair_metrics(X[_step(model, "baseline") - 1],
                                     X[_step(model, "after") - 1], LABELS)["Proto RDM ρ"]

    at_threshold = _solve(rho, claims.RHO_NEAR_ONE, 0.0, 3.0)
    row = _row(claim_id, _rho_features(model, at_threshold))
    assert row["ci_low"] < claims.RHO_NEAR_ONE < row["ci_high"]
    assert row["verdict"] == "unclear"


def _prototype_features(model, common, seed=6):
    """Near-zero-noise clusters whose raw prototype cosines grow with ``common``."""
    return _clusters(_centres(seed, dim=48, common=common), 0.05, seed)


@pytest.mark.parametrize("claim_id, model, orthogonal_verdict", [
    ("orthogonal-lrm3", "lrm3", "holds"),
    ("orthogonal-b", "b", "reversed"),
    ("orthogonal-bl", "bl", "reversed"),
])
def test_orthogonality_claims(claim_id, model, orthogonal_verdict):
    def single(X):
        return {model: {"logits": X.unsqueeze(0).repeat(
            catalogue.card(model).default_steps, 1, 1)}}

    assert _verdict(claim_id, single(_prototype_features(model, 0.0))) == orthogonal_verdict
    assert _verdict(claim_id, single(_prototype_features(model, 3.0))) == \
        OPPOSITE[orthogonal_verdict]
    common = _solve(lambda c: geometry.between_prototype_summary(
        _prototype_features(model, c), LABELS)["mean"], claims.NEAR_ORTHOGONAL, 0.0, 3.0)
    row = _row(claim_id, single(_prototype_features(model, common)))
    assert row["estimate"] == pytest.approx(claims.NEAR_ORTHOGONAL, abs=1e-4)
    assert row["verdict"] == "unclear"


def test_separation_growth_claim():
    model, claim_id = "cornet_rt", "separation-grows-cornet_rt"
    close, apart = _prototype_features(model, 3.0), _prototype_features(model, 0.0, seed=7)
    assert _verdict(claim_id, _features(model, close, apart)) == "holds"
    assert _verdict(claim_id, _features(model, apart, close)) == "reversed"
    target = geometry.between_prototype_summary(close, LABELS)["mean"]
    common = _solve(lambda c: geometry.between_prototype_summary(
        _prototype_features(model, c, seed=7), LABELS)["mean"], target, 0.0, 6.0)
    row = _row(claim_id, _features(model, close, _prototype_features(model, common, seed=7)))
    assert abs(row["estimate"]) < 1e-4
    assert row["ci_low"] < 0 < row["ci_high"] and row["verdict"] == "unclear"


def _stage_features(shared_stage):
    """Three models whose RDMs share one structure at ``shared_stage`` ("penult", "logits" or
    "both") and are independent per model otherwise."""
    shared = _centres(8)
    features = {}
    for m, model in enumerate(("alexnet", "b", "lrm3")):
        own = _centres(20 + m)
        common = _clusters(shared + 0.3 * own, 0.1, 30 + m)
        independent = _clusters(own, 0.1, 40 + m)
        penult = common if shared_stage in ("penult", "both") else independent
        logits = common if shared_stage in ("logits", "both") else independent
        T = catalogue.card(model).default_steps
        features[model] = {"penult": penult.unsqueeze(0).repeat(T, 1, 1),
                           "logits": logits.unsqueeze(0).repeat(T, 1, 1)}
    return features


def test_cross_model_claim():
    claim_id = "rsa-feature-vs-decision"
    assert _verdict(claim_id, _stage_features("penult")) == "holds"
    assert _verdict(claim_id, _stage_features("logits")) == "reversed"
    row = _row(claim_id, _stage_features("both"))
    assert row["estimate"] == 0 and row["verdict"] == "unclear"
    assert row["models"] == "lrm3, alexnet, b"  # the book's order


# --------------------------------------------------------------------------------------------
# one source of truth: each estimate is the chapter's own number
# --------------------------------------------------------------------------------------------


def _run_features():
    """The seven models of the study with noisy, changing features at both readouts (not
    catalogue.names(): other tests may have registered plug-in models)."""
    rng = np.random.default_rng(11)
    centres = _centres(9, one_hot=2.0, common=0.5)
    features = {}
    for name in STUDY_MODELS:
        T = catalogue.card(name).default_steps
        scales = rng.uniform(0.4, 1.4, size=T)
        X = torch.stack([_clusters(centres, s, 100 + t) for t, s in enumerate(scales)])
        features[name] = {"penult": torch.relu(X), "logits": X}
    return features


def _inputs(features):
    return claims.ClaimInputs(features=features, labels=LABELS,
                              class_index=torch.arange(C), n_perm=N_PERM, n_boot=N_BOOT)


def test_accuracy_estimates_are_chapter_1s_table_1():
    features = _run_features()
    for name in claims.RECURRENT_MODELS:
        b, a = catalogue.card(name).baseline, catalogue.card(name).after
        logits = geometry.logit_accuracy(features[name]["logits"], LABELS, np.arange(C))
        nc = geometry.nearest_centroid_accuracy(features[name]["penult"], LABELS)
        ours_logits = claims.get(f"accuracy-logits-{name}").estimate(_inputs(features))
        ours_nc = claims.get(f"accuracy-nc-{name}").estimate(_inputs(features))
        assert ours_logits.value == logits["top1"][a - 1] - logits["top1"][b - 1]
        assert ours_nc.value == nc["top1"][a - 1] - nc["top1"][b - 1]
        # the per-category accuracies behind the interval average to the chapter's accuracy
        X = features[name]["penult"][[b - 1, a - 1]]
        lab = geometry.as_labels(LABELS, N)
        per_category = claims._per_category_top1(
            geometry._nearest_centroid_scores(X, lab, False), lab.index, LABELS)
        np.testing.assert_allclose(per_category.mean(0), nc["top1"][[b - 1, a - 1]])


def test_dynamics_estimates_are_chapter_2s_tests_and_table_2():
    features = _run_features()
    for name in claims.RECURRENT_MODELS:
        card = catalogue.card(name)
        readout = card.headline_readout
        assert claims.HEADLINE_READOUT[name] == readout
        Xb = features[name][readout][card.baseline - 1]
        Xa = features[name][readout][card.after - 1]
        lme = stats.local_lme(geometry.exemplar_prototype_distances(Xb, LABELS),
                              geometry.exemplar_prototype_distances(Xa, LABELS), LABELS)
        ours = claims.get(f"local-{name}").estimate(_inputs(features))
        assert (ours.value, ours.ci_low, ours.ci_high, ours.p_value) == \
            (lme["beta"], lme["ci_low"], lme["ci_high"], lme["p"])
        permutation = stats.permutation_between(Xb, Xa, LABELS, n_perm=N_PERM, seed=42)
        ours = claims.get(f"global-{name}").estimate(_inputs(features))
        assert (ours.value, ours.p_value) == (permutation.observed, permutation.p_two_tailed)
        assert (ours.ci_low, ours.ci_high) == tuple(np.quantile(permutation.null,
                                                                [0.025, 0.975]))
        table2 = geometry.pair_metrics(Xb, Xa, LABELS)
        ours = claims.get(f"rdm-rho-{name}").estimate(_inputs(features))
        assert ours.value == table2["Proto RDM ρ"]


def test_orthogonality_estimates_are_chapter_3s_figure_2_numbers():
    features = _run_features()

    def between(X):  # chapter 3's helper
        return geometry.upper_triangle(geometry.cosine_rdm(geometry.prototypes(X, LABELS)))

    for claim_id in ("orthogonal-lrm3", "orthogonal-lra3", "orthogonal-bl", "orthogonal-b"):
        name = claim_id.split("-", 1)[1]
        step = catalogue.card(name).after  # the only step of a feedforward model
        chapter = between(features[name]["logits"][step - 1]).numpy()
        ours = claims.get(claim_id).estimate(_inputs(features))
        assert ours.value == pytest.approx(float(chapter.mean()), rel=1e-6)
        assert ours.ci_low < ours.value < ours.ci_high
    card = catalogue.card("cornet_rt")
    X = features["cornet_rt"]["logits"]
    growth = claims.get("separation-grows-cornet_rt").estimate(_inputs(features))
    assert growth.value == pytest.approx(float(between(X[card.after - 1]).numpy().mean()
                                               - between(X[card.baseline - 1]).numpy().mean()),
                                         abs=1e-6)


def test_pair_mean_bootstrap_resamples_pairs_of_distinct_categories():
    rdm = geometry.cosine_rdm(geometry.prototypes(_clusters(_centres(3), 0.5, 3), LABELS))
    upper = geometry.upper_triangle(rdm).double().numpy()
    draws = np.array([np.arange(C), [0, 0, 1] + [2] * (C - 3)])
    values = claims.pair_mean_bootstrap(rdm, draws)
    assert values[0] == pytest.approx(upper.mean())
    # positions (0,1) pair category 0 with itself (dropped); 0-1 twice, 0-2 and 1-2 many times
    pairs = [(0, 1)] * 2 + [(0, 2)] * (2 * (C - 3)) + [(1, 2)] * (C - 3)
    assert values[1] == pytest.approx(np.mean([float(rdm[a, b]) for a, b in pairs]))


def test_cross_model_estimate_is_chapter_4s_claim_test_at_the_last_step():
    features = _run_features()
    # chapter 4's cell at tau = 1, with its draws (every step here depends on the image)
    rng = np.random.default_rng(42)
    draws = rng.integers(0, int(LABELS.max()) + 1, size=(N_BOOT, int(LABELS.max()) + 1))
    observed, boot = {}, {}
    for readout in ("penult", "logits"):
        tagged = []
        for name in STUDY_MODELS:
            step = features[name][readout].shape[0]
            tagged.append(rsa.tagged_rdm(name, readout, step,
                                         features[name][readout][step - 1], LABELS))
        observed[readout], boot[readout] = rsa.between_model_rho_bootstrap(tagged, draws)
    low, high = np.quantile(boot["penult"] - boot["logits"], [0.025, 0.975])
    ours = claims.get("rsa-feature-vs-decision").estimate(_inputs(features))
    assert ours.value == observed["penult"] - observed["logits"]
    assert (ours.ci_low, ours.ci_high) == (low, high)


def test_image_off_estimates_are_chapter_2s_supplement():
    features = _run_features()
    card = catalogue.card("convrnn")
    X = features["convrnn"]["logits"]
    supplement = geometry.pair_metrics(X[card.states["image_off"] - 1], X[card.after - 1],
                                       LABELS)
    clusters = claims.get("image-off-clusters-convrnn").estimate(_inputs(features))
    separation = claims.get("image-off-separation-convrnn").estimate(_inputs(features))
    # balanced design: the LME intercept is the mean change, the study's Δ Cluster Size
    assert clusters.value == pytest.approx(supplement["Δ Cluster Size"], abs=1e-6)
    assert separation.value == pytest.approx(supplement["Δ Between-Proto (%)"], rel=1e-4)
    assert "t=12 → t=17" in clusters.detail


# --------------------------------------------------------------------------------------------
# the registry and evaluate_all
# --------------------------------------------------------------------------------------------


def test_registry_covers_the_studys_claims():
    ids = claims.ids()
    assert len(ids) == len(set(ids))
    expected = ([f"accuracy-{s}-{m}" for s in ("logits", "nc") for m in claims.RECURRENT_MODELS]
                + [f"{kind}-{m}" for kind in ("local", "global", "rdm-rho")
                   for m in claims.RECURRENT_MODELS]
                + ["orthogonal-lrm3", "orthogonal-lra3", "orthogonal-bl", "orthogonal-b",
                   "separation-grows-cornet_rt", "rsa-feature-vs-decision",
                   "image-off-clusters-convrnn", "image-off-separation-convrnn"])
    assert sorted(ids) == sorted(expected)
    for claim in claims.CLAIMS:
        assert claim.chapter in book.CHAPTERS and claim.statement and claim.study
    # compaction claimed for LRM3, LRA3, CORnet-RT; expansion for BL, ConvRNN (the study's LME)
    assert {m for m in claims.RECURRENT_MODELS
            if claims.get(f"local-{m}").rule.expected == "below"} == {"lrm3", "lra3",
                                                                      "cornet_rt"}
    assert claims.get("local-lrm3").study_value == -0.031038
    assert claims.get("accuracy-logits-bl").study_value == pytest.approx(57.02 - 51.06)
    table = claims.registry_table()
    assert list(table["id"]) == ids


def test_evaluate_all_fills_every_row_and_the_untrained_reference():
    features = _run_features()
    reference_labels = np.repeat(np.arange(C), 4)
    keep = np.concatenate([c * K + np.arange(4) for c in range(C)])
    untrained = {s: {name: {r: torch.flip(X, dims=[0])[:, keep] + 0.01 * s for r, X in
                            readouts.items()} for name, readouts in features.items()}
                 for s in (0, 1)}
    table = claims.evaluate_all(features, untrained, labels=LABELS, class_index=np.arange(C),
                                untrained_labels=reference_labels, n_perm=N_PERM,
                                n_boot=N_BOOT)
    assert list(table.columns) == list(claims.COLUMNS)
    assert list(table["id"]) == claims.ids()
    assert set(table["verdict"]) <= set(claims.VERDICTS)
    assert table["estimate"].notna().all() and (table["note"] == "").all()
    assert (table["untrained_seeds"] == "0,1").all()
    # the untrained columns are the same estimates on each seed's features
    for claim_id in ("local-bl", "orthogonal-b", "rsa-feature-vs-decision"):
        per_seed = [claims.evaluate(claims.get(claim_id), claims.ClaimInputs(
            features=untrained[s], labels=reference_labels, class_index=torch.arange(C),
            n_perm=N_PERM, n_boot=N_BOOT)) for s in (0, 1)]
        row = table.set_index("id").loc[claim_id]
        assert row["untrained_mean"] == pytest.approx(np.mean([r["estimate"]
                                                               for r in per_seed]))
        assert row["untrained_verdicts"] == ",".join(r["verdict"] for r in per_seed)
    # byte-stable: the same features give the same table
    again = claims.evaluate_all(features, untrained, labels=LABELS, class_index=np.arange(C),
                                untrained_labels=reference_labels, n_perm=N_PERM,
                                n_boot=N_BOOT)
    pd.testing.assert_frame_equal(table, again)


def test_absent_models_readouts_and_steps_are_not_evaluated_with_a_reason():
    features = _run_features()
    partial = {"lrm3": features["lrm3"], "bl": {"penult": features["bl"]["penult"]},
               "convrnn": {r: X[:10] for r, X in features["convrnn"].items()}}
    table = claims.evaluate_all(partial, labels=LABELS, n_perm=N_PERM,
                                n_boot=N_BOOT).set_index("id")
    assert table.loc["local-lrm3", "verdict"] in claims.VERDICTS
    missing = table.loc["local-lra3"]
    assert missing["verdict"] == claims.NOT_EVALUATED and np.isnan(missing["estimate"])
    assert "lra3 is not among this run's models" in missing["note"]
    assert "bl's logits readout" in table.loc["local-bl", "note"]
    assert "has 10 steps, but its image_off step is 12" in \
        table.loc["image-off-clusters-convrnn", "note"]
    assert "no classifier index" in table.loc["accuracy-logits-lrm3", "note"]
    assert "at least 3 models" in table.loc["rsa-feature-vs-decision", "note"]


def test_step_overrides_change_the_states_compared():
    features = _run_features()
    table = claims.evaluate_all(features, labels=LABELS, baseline={"bl": 2}, after={"bl": 5},
                                n_perm=N_PERM, n_boot=N_BOOT, claim_ids=["local-bl"])
    X = features["bl"]["logits"]
    lme = stats.local_lme(geometry.exemplar_prototype_distances(X[1], LABELS),
                          geometry.exemplar_prototype_distances(X[4], LABELS), LABELS)
    assert table["estimate"].iloc[0] == lme["beta"]
    assert "t=2 → t=5" in table["detail"].iloc[0]


@pytest.mark.parametrize("kwargs, message", [
    ({"labels": LABELS[:-1]}, "with N = 191"),
    ({"labels": LABELS.astype(float)}, "1-D integer sequence"),
    ({"n_boot": 0}, "n_boot must be a positive integer"),
    ({"n_perm": 1.5}, "n_perm must be a positive integer"),
    ({"claim_ids": ["local-alexnet"]}, "Unknown claim id"),
    ({"baseline": {"vgg16": 1}}, "not among the features' models"),
    ({"after": {"bl": 9}}, "steps 1..8"),
    ({"class_index": np.arange(C) + 40}, "outputs 0..15"),
    ({"class_index": np.arange(C - 1)}, "class_index must be 16 integers"),
    ({"untrained": {0: {"lrm3": {"logits": torch.zeros(3, 10, C)}}}}, "untrained_labels|N = "),
])
def test_bad_input_gets_one_sentence(kwargs, message):
    features = {"lrm3": _run_features()["lrm3"], "bl": _run_features()["bl"]}
    kwargs = {"labels": LABELS, **kwargs}
    untrained = kwargs.pop("untrained", None)
    with pytest.raises(AnalysisUtilsError, match=message):
        claims.evaluate_all(features, untrained, **kwargs)


def test_features_must_be_the_chapters_dict():
    with pytest.raises(AnalysisUtilsError, match="non-empty dict"):
        claims.evaluate_all([], labels=LABELS)
    with pytest.raises(AnalysisUtilsError, match=r"\[T, N, D\]"):
        claims.evaluate_all({"lrm3": {"logits": torch.zeros(N, C)}}, labels=LABELS)


def test_the_claims_table_writes_byte_identical_files_for_the_same_features(tmp_path):
    from analysis_utils import results

    features = _run_features()
    written = []
    for build in ("first", "second"):
        table = claims.evaluate_all(features, labels=LABELS, class_index=np.arange(C),
                                    n_perm=N_PERM, n_boot=N_BOOT)
        written.append(results.write_table(table, "findings", "claims", records=True,
                                           parameters={"n_perm": N_PERM, "n_boot": N_BOOT},
                                           directory=tmp_path / build))
    for attribute in ("csv", "json", "sidecar"):
        assert getattr(written[0], attribute).read_bytes() == \
            getattr(written[1], attribute).read_bytes()
    back = pd.read_csv(written[0].csv)
    assert list(back["id"]) == claims.ids() and back["estimate"].notna().all()


# --------------------------------------------------------------------------------------------
# the findings chapter's view of the table: links, rows, verdict matrix, discussion
# --------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_LABELS = np.repeat(np.arange(C), 4)


@pytest.fixture(scope="module")
def evaluated():
    """evaluate_all on the run features, with two untrained seeds on 4 images per category."""
    features = _run_features()
    keep = np.concatenate([c * K + np.arange(4) for c in range(C)])
    untrained = {s: {name: {r: torch.flip(X, dims=[0])[:, keep] + 0.01 * s
                            for r, X in readouts.items()} for name, readouts in features.items()}
                 for s in (0, 1)}
    return claims.evaluate_all(features, untrained, labels=LABELS, class_index=np.arange(C),
                               untrained_labels=REFERENCE_LABELS, n_perm=50, n_boot=50)


def _heading_ids(chapter):
    """The ids Sphinx gives the headings of a chapter's source (docutils' make_id)."""
    from docutils.nodes import make_id

    text = (ROOT / "notebooks" / f"{chapter}.py").read_text(encoding="utf-8")
    return {make_id(m.group(1)) for m in re.finditer(r"^# #+ (.+)$", text, flags=re.M)}


def test_each_claim_links_to_a_heading_of_the_chapter_that_shows_it():
    assert claims.chapter_href("02_dynamics", "Global test: paired permutation test of Δ "
                               "Between-Proto (%)") == \
        "02_dynamics.html#global-test-paired-permutation-test-of-between-proto"
    assert claims.chapter_href("04_cross_model_rsa") == "04_cross_model_rsa.html"
    for claim in claims.CLAIMS:
        page, anchor = claims.chapter_href(claim.chapter, claim.section).split("#")
        assert page == f"{claim.chapter}.html"  # side by side in book/notebooks: relative
        assert anchor in _heading_ids(claim.chapter), (claim.id, claim.section)
    with pytest.raises(AnalysisUtilsError, match="named like '02_dynamics'"):
        claims.chapter_href("notebooks/02_dynamics.ipynb")


def test_labels_name_each_claim_once():
    labels = [claim.label for claim in claims.CLAIMS]
    assert all(labels) and len(set(labels)) == len(labels)


def test_findings_table_shows_every_row_of_the_evaluated_table(evaluated):
    shown = claims.findings_table(evaluated)
    assert list(shown.columns) == ["Claim", "The study's value", "Ours [95 % interval]",
                                   "Untrained reference (seeds)", "Verdict", "Shown in"]
    assert len(shown) == len(evaluated) == len(claims.ids())
    for (_, row), (_, cells) in zip(evaluated.iterrows(), shown.iterrows()):
        claim = claims.get(row["id"])
        assert f"<code>{row['id']}</code>" in cells["Claim"]
        assert cells["Verdict"] == f"<b>{row['verdict']}</b>"
        assert cells["Ours [95 % interval]"].startswith(
            f"{row['estimate']:.4g} [{row['ci_low']:.4g}, {row['ci_high']:.4g}]")
        seeds = row["untrained_verdicts"].split(",")
        assert f"seed 0: {seeds[0]}, seed 1: {seeds[1]}" in cells["Untrained reference (seeds)"]
        assert f'href="{claims.chapter_href(claim.chapter, claim.section)}"' in cells["Shown in"]
        assert "'" not in cells["Claim"]  # escaped for HTML: "LRM3&#x27;s"
    partial = claims.evaluate_all({"bl": _run_features()["bl"]}, labels=LABELS, n_perm=20,
                                  n_boot=20, claim_ids=["local-lrm3"])
    cells = claims.findings_table(partial).iloc[0]
    assert cells["Ours [95 % interval]"] == "not evaluated: lrm3 is not among this run&#x27;s " \
                                            "models."
    assert cells["Untrained reference (seeds)"] == "none"
    with pytest.raises(AnalysisUtilsError, match="lacks verdict"):
        claims.findings_table(evaluated.drop(columns="verdict"))


def test_verdict_matrix_has_ours_and_each_seed(evaluated):
    matrix = claims.verdict_matrix(evaluated)
    assert list(matrix.columns) == ["ours", "seed 0", "seed 1"]
    assert list(matrix.index) == claims.ids()
    assert list(matrix["ours"]) == list(evaluated["verdict"])
    assert list(matrix["seed 1"]) == [v.split(",")[1] for v in evaluated["untrained_verdicts"]]


def _set(table, verdicts, untrained=None, note=None):
    """A copy of ``table`` with every claim unclear (also in every seed), then ``verdicts``
    and ``untrained`` verdicts {id: 'holds,unclear'} set."""
    table = table.copy()
    table["verdict"], table["untrained_verdicts"] = "unclear", "unclear,unclear"
    for claim_id, verdict in verdicts.items():
        table.loc[table["id"] == claim_id, "verdict"] = verdict
    for claim_id, seeds in (untrained or {}).items():
        table.loc[table["id"] == claim_id, "untrained_verdicts"] = seeds
    for claim_id, text in (note or {}).items():
        table.loc[table["id"] == claim_id, "note"] = text
    return table


def test_discussion_is_drawn_from_the_verdicts(evaluated):
    table = _set(evaluated, {"local-lrm3": "holds", "local-lra3": "holds", "local-bl": "reversed",
                             "local-convrnn": "holds", "image-off-clusters-convrnn": "holds",
                             "global-bl": claims.NOT_EVALUATED},
                 untrained={"local-lrm3": "holds,holds", "local-convrnn": "holds,unclear",
                            "image-off-clusters-convrnn": "reversed,unclear"},
                 note={"global-bl": "bl's logits readout is not among this run's readouts."})
    text = claims.discussion(table, scale="mini", weights="trained", probe="tiny")
    assert "mean nothing yet" not in text
    assert text.startswith("At mini scale (the mini zoo, trained by this project on "
                           "Tiny-ImageNet-100, on the Tiny-ImageNet validation probe), of the "
                           "32 claims evaluated 4 hold, 1 is reversed and 27 are unclear; 1 could "
                           "not be evaluated in this run.")
    assert "- **Local test (LME)**: holds for LRM3, LRA3 and ConvRNN; reversed for BL; unclear " \
           "for CORnet-RT.\n" in text
    assert "- **Global test (permutation)**: unclear for LRM3, LRA3, CORnet-RT and ConvRNN; not " \
           "evaluated for BL.\n" in text
    # two ConvRNN claims in one group: named by their labels
    assert "- **Figure 4: ConvRNN image off**: holds for ConvRNN (image-off expansion); unclear " \
           "for ConvRNN (image-off separation)." in text
    assert "*Reversed* means" in text and "*Unclear* means" in text
    assert "in every untrained network of the same architecture: LRM3 (compaction). " in text
    assert "comes with training: LRA3 (compaction) and ConvRNN (image-off expansion)." in text
    assert text.endswith("Not evaluated: BL (separation) (global-bl): bl's logits readout is not "
                         "among this run's readouts.")
    # other verdicts, other sentences
    flipped = claims.discussion(_set(evaluated, {"local-bl": "holds"}), scale="full",
                                weights="official", probe="imagenet")
    assert flipped.startswith("At full scale (the official checkpoints, on the study's ImageNet "
                              "validation probe), of the 33 claims evaluated 1 holds, 0 are "
                              "reversed and 32 are unclear.")
    assert "- **Local test (LME)**: holds for BL; unclear for LRM3, LRA3, CORnet-RT and " \
           "ConvRNN.\n" in flipped
    assert "*Reversed* means" not in flipped and "Not evaluated" not in flipped
    assert "comes with training: BL (expansion)." in flipped


def test_discussion_says_first_that_untrained_verdicts_mean_nothing(evaluated):
    table = _set(evaluated, {"local-lrm3": "holds"}, untrained={"local-lrm3": "unclear,unclear"})
    text = claims.discussion(table, scale="mini", weights="untrained", probe="tiny", seed=3)
    assert text.startswith("**These models are untrained (random weights, seed 3), so the "
                           "verdicts below mean nothing yet.**")
    assert "comes with training" not in text and "without training" not in text
    assert "- **Local test (LME)**: holds for LRM3; unclear for LRA3, BL" in text


def test_discussion_reads_the_written_csv_back(evaluated, tmp_path):
    from analysis_utils import results

    written = results.write_table(evaluated, "05_findings", "claims", records=True,
                                  directory=tmp_path)
    back = pd.read_csv(written.csv)
    for weights in ("trained", "untrained"):
        assert claims.discussion(back, scale="mini", weights=weights, probe="tiny") == \
            claims.discussion(evaluated, scale="mini", weights=weights, probe="tiny")
    pd.testing.assert_frame_equal(claims.verdict_matrix(back), claims.verdict_matrix(evaluated))


@pytest.mark.parametrize("kwargs, message", [
    ({"scale": "huge"}, "Unknown scale 'huge'"),
    ({"weights": "pretrained"}, "Unknown weights 'pretrained'"),
    ({"probe": "coco"}, "Unknown probe 'coco'"),
])
def test_discussion_bad_input_gets_one_sentence(evaluated, kwargs, message):
    kwargs = {"scale": "mini", "weights": "trained", "probe": "tiny", **kwargs}
    with pytest.raises(AnalysisUtilsError, match=message):
        claims.discussion(evaluated, **kwargs)
