# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Dynamics: local and global geometry at every step
#
# **In short:** whether recurrence compacts each category and pushes the categories apart, at
# every step, for the feature and decision stages (with the study's Table 2, tests and Fig. 1).
#
# Does recurrence pull the exemplars of a category towards their prototype (local compaction)
# and push the prototypes apart (global separation)? The reference study answers for two
# states per model; this chapter follows both at every step, for both stages (feature stage
# `penult`, decision stage `logits`), then reproduces the study's Table 2 with its mixed-model
# and permutation tests, its Figure 1 and its ConvRNN image-off supplement (Figure 4).

# %% tags=["parameters", "hide-input"]
scale = "mini"  # "mini" (64 px, the mini zoo) or "full" (official checkpoints)
weights = "trained"  # "trained" (mini zoo), "untrained" (random, seeded) or "official"
probe = "tiny"  # "tiny" (Tiny-ImageNet val) or "imagenet" (the study's ImageNet val probe)
data_dir = None  # folder with the probe images; None: $ANALYSIS_UTILS_DATA or the user cache
models = None  # None for every catalogue model, or a comma-separated list such as "lrm3,bl"
readouts = "penult,logits"
baseline = None  # per-model step overrides (see Methods); None keeps the states on each card
after = None
n_perm = 1000  # permutations of the global test (the study used 10000: -p n_perm 10000)
seed = 0  # seed of untrained weights
device = "auto"
cache_dir = None  # the feature cache; None: $ANALYSIS_UTILS_CACHE or the user cache
images_per_category = None  # None: all 50; fewer for a quick run
plugins = None  # modules that register your own models, e.g. "examples.conv_gru" (see chapter 7)

# %% tags=["hide-input"]
import numpy as np
import pandas as pd
from IPython.display import HTML, Markdown, display

from analysis_utils import book, catalogue, geometry, plotting, results, stats

P = book.check_parameters(scale=scale, weights=weights, probe=probe, data_dir=data_dir,
                          models=models, readouts=readouts, baseline=baseline, after=after,
                          n_perm=n_perm, seed=seed, device=device, cache_dir=cache_dir,
                          images_per_category=images_per_category, plugins=plugins)
probe_set = book.open_chapter(P)
NOTE = P.weights_label()
PERMUTATION_SEED = 42  # the study's seed for the permutation test
CHAPTER = "02_dynamics"  # names this chapter's result tables (book/_build/html/results/)

# %% tags=["hide-input"]
features, extraction = book.load_features(P, probe_set)
display(book.features_summary(features, extraction))
labels = probe_set.labels
recurrent = [name for name in P.models if catalogue.card(name).recurrent]

# %% [markdown]
# ## Geometry at every step
#
# For every model, stage and step: the mean exemplar-to-prototype cosine distance (local
# cluster size), the mean and SD of the between-prototype distances (global separation, raw
# prototypes), nearest-centroid accuracy, the effective dimension (participation ratio) and
# the mean activation. Feedforward models have one step and are drawn as dashed reference
# lines. One figure per question and stage: the local and global geometry first, then how
# readable, how high-dimensional and how active the features are.

# %% tags=["hide-input"]
rows = []
for name in P.models:
    for readout in ("penult", "logits"):
        table = geometry.trajectory(features[name][readout], labels)
        table.insert(0, "readout", readout)
        table.insert(0, "model", name)
        table["n_steps"] = features[name][readout].shape[0]
        rows.append(table)
trajectories = pd.concat(rows, ignore_index=True)

MEASURES = {"cluster_size": "cluster size (cosine)",
            "between_mean": "between-prototype mean",
            "between_sd": "between-prototype SD",
            "nc_top1": "nearest-centroid top-1 (%)",
            "effective_dimension": "effective dimension",
            "mean_activation": "mean activation"}
FIGURES = {"local and global geometry": ["cluster size (cosine)", "between-prototype mean",
                                         "between-prototype SD"],
           "readability, dimension and activity": ["nearest-centroid top-1 (%)",
                                                   "effective dimension", "mean activation"]}
named = trajectories.rename(columns=MEASURES)
for readout in ("penult", "logits"):
    part = named[named["readout"] == readout]
    for topic, measures in FIGURES.items():
        fig = plotting.plot_trajectories(part, measures, time="normalised", note=NOTE,
                                         title=f"{readout}: {topic} over normalised time")
        display(fig)
        plotting.plt.close(fig)

# %% [markdown]
# The same measures in each model's own steps (pass 1..3, t = 1..T), for the decision stage:

# %% tags=["hide-input"]
for topic, measures in FIGURES.items():
    fig = plotting.plot_trajectories(named[named["readout"] == "logits"], measures,
                                     time="steps", note=NOTE,
                                     title=f"logits: {topic} in each model's own steps")
    display(fig)
    plotting.plt.close(fig)

# %% [markdown]
# ## Change from the first step that sees the image
#
# The study's five pairwise measures between a reference step and every later step (for the
# recurrent models): Δ Cluster Size (%) below 0 means the categories compacted, Δ
# Between-Proto (%) above 0 that the (centred) prototypes moved apart, and Proto RDM ρ how
# much of the global structure survives. The reference is step 1, except where a readout
# does not yet depend on the image at step 1 (CORnet-RT and ConvRNN, whose top areas receive
# the image after a delay): there the features are the same for every image up to float
# rounding, a percentage change from them divides by rounding noise, so the reference is the
# first step at which the readout varies across images (`geometry.first_image_dependent_step`).
# Each curve starts at the first step after its reference. Per stage, one figure for the
# change of the local and global geometry, one for how far the prototypes move.

# %% tags=["hide-input"]
pair_rows, references = [], []
for name in recurrent:
    for readout in ("penult", "logits"):
        X = features[name][readout]
        start = geometry.first_image_dependent_step(X)
        references.append({"model": name, "readout": readout,
                           "reference step": "never" if start is None
                           else catalogue.card(name).step_label(start)})
        if start is None or start == X.shape[0]:
            continue
        table = geometry.pair_metrics_over_steps(X, labels, reference=start)
        table.insert(0, "readout", readout)
        table.insert(0, "model", name)
        table["n_steps"] = X.shape[0]
        pair_rows.append(table)
reference_steps = pd.DataFrame(references).pivot(index="model", columns="readout",
                                                 values="reference step").loc[recurrent]
display(reference_steps)
display(HTML(results.links_html(results.write_table(
    reference_steps, CHAPTER, "reference_steps", parameters=P, extraction=extraction,
    index=True))))
CHANGES = {"change of the local and global geometry": ["Δ Cluster Size (%)",
                                                       "Δ Between-Proto (%)"],
           "how far the prototypes move": ["Avg Proto Shift", "Proto RDM ρ"]}
if pair_rows:
    from_reference = pd.concat(pair_rows, ignore_index=True).rename(columns={"step_to": "step"})
    for readout in ("penult", "logits"):
        part = from_reference[from_reference["readout"] == readout]
        for topic, measures in CHANGES.items():
            fig = plotting.plot_trajectories(part, measures, time="normalised", note=NOTE,
                                             title=f"{readout}, from the reference step: {topic}")
            display(fig)
            plotting.plt.close(fig)
else:
    display(Markdown("No recurrent model of this run has a later step to compare."))

# %% [markdown]
# ## Table 2: baseline vs after at each model's headline readout
#
# The study's geometry summary: the five pairwise measures between each recurrent model's
# *baseline* and *after* steps, at its headline readout (logits; penult for CORnet-RT, whose
# baseline logits are at chance).

# %% tags=["hide-input"]
summary_rows, pairs = [], {}
for name in recurrent:
    card = catalogue.card(name)
    readout = card.headline_readout
    b, a = P.state_step(name, "baseline"), P.state_step(name, "after")
    Xb, Xa = features[name][readout][b - 1], features[name][readout][a - 1]
    pairs[name] = (readout, b, a, Xb, Xa)
    metrics = geometry.pair_metrics(Xb, Xa, labels)
    summary_rows.append({"Model": card.display_name, "Rep": readout,
                         "Baseline": card.step_label(b), "After": card.step_label(a), **metrics})
table2 = pd.DataFrame(summary_rows)
display(Markdown(f"**Table 2** ({NOTE}): geometry summary, baseline → after."))
display(table2.round(3).style.hide(axis="index").format(precision=3))
display(HTML(results.links_html(results.write_table(table2, CHAPTER, "table2", parameters=P,
                                                    extraction=extraction))))

# %% [markdown]
# ### Local test: mixed model of the per-exemplar change
#
# `distance_diff ~ 1 + (1 | category)`, fitted by REML: is the mean change in
# exemplar-to-prototype distance different from zero, allowing each category its own offset?

# %% tags=["hide-input"]
lme_rows, distance_changes = [], {}
for name, (readout, _b, _a, Xb, Xa) in pairs.items():
    d_before = geometry.exemplar_prototype_distances(Xb, labels)
    d_after = geometry.exemplar_prototype_distances(Xa, labels)
    distance_changes[name] = (d_after - d_before).numpy()
    result = stats.local_lme(d_before, d_after, labels)
    lme_rows.append({"Model": catalogue.card(name).display_name, "Rep": readout, **result})
lme = pd.DataFrame(lme_rows)
display(Markdown(f"**Local test** ({NOTE}): LME of d_after − d_before."))
display(lme.style.hide(axis="index").format(precision=6))
display(HTML(results.links_html(results.write_table(lme, CHAPTER, "local_lme", parameters=P,
                                                    extraction=extraction))))

# %% [markdown]
# ### Global test: paired permutation test of Δ Between-Proto (%)
#
# Each permutation swaps the before/after rows of a random half of the exemplars (the study's
# paired swap, seed 42) and recomputes the statistic. The study's *p*-values have no +1
# correction, so they can be exactly 0; the $(k+1)/(n+1)$ version is given beside them.

# %% tags=["hide-input"]
perm_rows, nulls = [], {}
for name, (readout, _b, _a, Xb, Xa) in pairs.items():
    result = stats.permutation_between(Xb, Xa, labels, n_perm=P.n_perm, seed=PERMUTATION_SEED)
    values = result.to_dict()
    nulls[name] = np.asarray(values.pop("null"))
    perm_rows.append({"Model": catalogue.card(name).display_name, "Rep": readout, **values})
permutation = pd.DataFrame(perm_rows)
display(Markdown(f"**Global test** ({NOTE}): permutation test, {P.n_perm} permutations."))
display(permutation.style.hide(axis="index").format(precision=6))
display(HTML(results.links_html(results.write_table(
    permutation, CHAPTER, "global_permutation",
    parameters={"chapter": P, "permutation_seed": PERMUTATION_SEED}, extraction=extraction))))

# %% [markdown]
# ## Figure 1: local and global change
#
# Top: the density of the per-exemplar change in cluster size (negative: the exemplar moved
# towards its prototype); the red dashed line is the mean. Bottom: the baseline (grey) and
# after (colour) prototypes in one PCA fitted on the baseline exemplars, joined by a line per
# category.

# %% tags=["hide-input"]
panels = []
for name, (readout, b, a, Xb, Xa) in pairs.items():
    pb, pa = geometry.prototypes(Xb, labels), geometry.prototypes(Xa, labels)
    pca_b, pca_a = plotting.prototype_pca(Xb, pb, pa)
    panels.append({"model": name, "readout": readout, "baseline_step": b, "after_step": a,
                   "delta": distance_changes[name], "pca_baseline": pca_b, "pca_after": pca_a,
                   "annotation": f"{catalogue.card(name).recurrence}, "
                                 f"{catalogue.card(name).mechanism}"})
if panels:
    fig = plotting.plot_local_global_composite(panels, note=NOTE)
    display(fig)
    plotting.plt.close(fig)

# %% [markdown]
# ## Figure 4: ConvRNN after the image is switched off
#
# ConvRNN sees the image for the first steps and a blank afterwards. The study's supplement
# compares the last step with the image on with the final step: (a) the per-exemplar change in
# cluster size, (b) k-NN category preservation, (c) prototype shifts in PCA, (d) the shift of
# each category's prototype.

# %% tags=["hide-input"]
if "convrnn" in P.models and "image_off" in catalogue.card("convrnn").states:
    card = catalogue.card("convrnn")
    b, a = card.states["image_off"], P.state_step("convrnn", "after")
    Xb, Xa = features["convrnn"]["logits"][b - 1], features["convrnn"]["logits"][a - 1]
    d_before = geometry.exemplar_prototype_distances(Xb, labels)
    d_after = geometry.exemplar_prototype_distances(Xa, labels)
    ks, pct = geometry.knn_category_preservation(
        features["convrnn"]["logits"][[b - 1, a - 1]], labels, max_k=min(50, len(labels) - 1))
    pb, pa = geometry.prototypes(Xb, labels), geometry.prototypes(Xa, labels)
    pca_b, pca_a = plotting.prototype_pca(Xb, pb, pa)
    shifts = 1 - np.sum(pb.numpy() * pa.numpy(), axis=1) / (
        np.linalg.norm(pb.numpy(), axis=1) * np.linalg.norm(pa.numpy(), axis=1))
    supplement = geometry.pair_metrics(Xb, Xa, labels)
    display(Markdown(f"**ConvRNN {card.step_label(b)} → {card.step_label(a)}, logits** ({NOTE})"))
    supplement = pd.DataFrame([{"Model": card.display_name, "Rep": "logits",
                                "Before": card.step_label(b), "After": card.step_label(a),
                                **supplement}])
    display(supplement.round(4).style.hide(axis="index"))
    display(HTML(results.links_html(results.write_table(
        supplement, CHAPTER, "convrnn_image_off", parameters=P,
        extraction={"convrnn": extraction["convrnn"]}))))
    fig = plotting.plot_convrnn_supplement(
        (d_after - d_before).numpy(), ks, pct[0], pct[1], pca_b, pca_a, shifts,
        before_label=card.step_label(b) + " (image on)", after_label=card.step_label(a),
        note=NOTE)
    display(fig)
    plotting.plt.close(fig)
else:
    display(Markdown("ConvRNN is not among this run's models, so its supplement is skipped."))

# %% [markdown]
# ## Rerun this chapter
#
# With other parameters, for the whole book (every chapter gets the same `-p` pairs; add
# `-p weights untrained` where the mini zoo is not trained; the study used 10000
# permutations):
#
# ```bash
# make book PARAMS="-p models lrm3,bl,alexnet -p n_perm 1000"
# ```
#
# This chapter alone, from the repository root (its tables go to
# `book/_build/html/results/`; `papermill --help-notebook /tmp/02_dynamics.ipynb` lists every
# parameter with its default):
#
# ```bash
# .venv/bin/jupytext --to ipynb notebooks/02_dynamics.py -o /tmp/02_dynamics.ipynb
# PYTHONPATH=. .venv/bin/papermill /tmp/02_dynamics.ipynb /tmp/02_out.ipynb \
#     -p models lrm3,bl -p n_perm 1000
# ```
