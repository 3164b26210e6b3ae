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
# # Orthogonality: how far apart are the category prototypes?
#
# **In short:** how close to orthogonal the category prototypes are, per model, state and step
# (the study's Fig. 2), on raw and centred prototypes, against untrained networks of 3 seeds.
#
# The reference study reads "learned category orthogonality" off one distribution: the 4950
# cosine distances between the 100 category prototypes at the decision stage (its Figure 2,
# a ridge plot). A mean near 1 with a small spread means near-orthogonal prototypes. This
# chapter draws that distribution for every model and state, follows it over every step, adds
# measures on *centred* prototypes and a mean-activity control, and uses untrained networks
# of the same architectures (several seeds) as the reference for what is *learned*.

# %% tags=["parameters", "hide-input"]
scale = "mini"  # "mini" (64 px, the mini zoo) or "full" (official checkpoints)
weights = "trained"  # "trained" (mini zoo), "untrained" (random, seeded) or "official"
probe = "tiny"  # "tiny" (Tiny-ImageNet val) or "imagenet" (the study's ImageNet val probe)
data_dir = None  # folder with the probe images; None: $ANALYSIS_UTILS_DATA or the user cache
models = None  # None for every catalogue model, or a comma-separated list such as "lrm3,bl"
readouts = "penult,logits"
baseline = None  # per-model step overrides (see Methods); None keeps the states on each card
after = None
n_perm = 1000  # not used in this chapter; kept so one PARAMS line serves every chapter
seed = 0  # seed of untrained weights
device = "auto"
cache_dir = None  # the feature cache; None: $ANALYSIS_UTILS_CACHE or the user cache
images_per_category = None  # None: all 50; fewer for a quick run
plugins = None  # modules that register your own models, e.g. "examples.conv_gru" (see chapter 7)
untrained_seeds = "0,1,2"  # seeds of the untrained reference networks
reference_images_per_category = 10  # images per category for the comparison with untrained seeds

# %% tags=["hide-input"]
import numpy as np
import pandas as pd
from IPython.display import HTML, Markdown, display

from analysis_utils import book, catalogue, geometry, plotting, results

P = book.check_parameters(scale=scale, weights=weights, probe=probe, data_dir=data_dir,
                          models=models, readouts=readouts, baseline=baseline, after=after,
                          n_perm=n_perm, seed=seed, device=device, cache_dir=cache_dir,
                          images_per_category=images_per_category, plugins=plugins)
SEEDS = book.check_seeds(untrained_seeds, "untrained_seeds")
probe_set = book.open_chapter(P)
REFERENCE_K = min(book.check_count(reference_images_per_category,
                                   "reference_images_per_category", minimum=2),
                  probe_set.images_per_category)
NOTE = P.weights_label()
CHAPTER = "03_orthogonality"  # names this chapter's result tables (book/_build/html/results/)
#: what the tables compared with the untrained networks depend on besides P
REFERENCE = {"chapter": P, "untrained_seeds": list(SEEDS), "reference_images_per_category":
             REFERENCE_K}
display(Markdown(
    f"Untrained reference: seeds {', '.join(map(str, SEEDS))} of every model, on the first "
    f"{REFERENCE_K} images of each category; every comparison with them uses those same images."
))

# %% tags=["hide-input"]
labels = probe_set.labels
features, extraction = book.load_features(P, probe_set)
display(book.features_summary(features, extraction))
# The comparison with untrained networks uses the first REFERENCE_K images of each category,
# for the chapter's models and the untrained seeds alike.
reference_images, keep = book.reference_probe(probe_set, REFERENCE_K)
reference_labels = reference_images.labels
compared = {name: {r: X[:, keep] for r, X in features[name].items()} for name in P.models}
reference = book.untrained_reference(P, probe_set, SEEDS, REFERENCE_K, own_features=features)


def between(X, labels=labels):
    """The raw between-prototype cosine distances of features [N, D] (or [T, pairs])."""
    return geometry.upper_triangle(geometry.cosine_rdm(geometry.prototypes(X, labels))).numpy()


# %% [markdown]
# ## Figure 2: the between-prototype distances per model and state
#
# One row per model: the density of the 4950 raw between-prototype cosine distances at the
# baseline step (solid) and the after step (dashed), with mean and SD (ddof 0). 0 marks
# identical prototypes, 1 orthogonal ones.

# %% tags=["hide-input"]
summary_rows = []
for readout in ("logits", "penult"):
    rows = []
    for name in P.models:
        card = catalogue.card(name)
        X = features[name][readout]
        b = P.state_step(name, "baseline")
        row = {"model": name, "baseline": between(X[b - 1]), "baseline_step": b}
        if card.recurrent:
            a = P.state_step(name, "after")
            row.update({"after": between(X[a - 1]), "after_step": a})
        rows.append(row)
        for state in ("baseline", "after"):
            if state in row:
                summary_rows.append({"Readout": readout,
                                     "Model/State": f"{card.display_name} {state}",
                                     "Step": card.step_label(row[f"{state}_step"]),
                                     "Mean": row[state].mean(), "SD": row[state].std(),
                                     "n_pairs": row[state].size})
    title = ("Decision stage (logits)" if readout == "logits" else "Feature stage (penult)")
    fig = plotting.plot_separation_ridge(rows, note=NOTE, title=f"{title}: between-prototype "
                                         "cosine distances")
    display(fig)
    plotting.plt.close(fig)
between_summary = pd.DataFrame(summary_rows)
display(Markdown(f"**Between-prototype distances, mean ± SD (ddof 0)** ({NOTE})."))
display(between_summary.round(3).style.hide(axis="index").format(precision=3))
display(HTML(results.links_html(results.write_table(
    between_summary, CHAPTER, "between_prototype_distances", parameters=P,
    extraction=extraction))))

# %% [markdown]
# ## The distribution over every step, against untrained networks
#
# For each recurrent model, the decision-stage distribution at every step (colour: from the
# baseline colour at step 1 to the after colour at the last step). The grey band is the range
# of the same density over the untrained seeds: where the trained distribution lies inside the
# band, the architecture alone explains it. Both are computed on the same reference images
# (the first images of each category, see above), so their prototypes are equally noisy.

# %% tags=["hide-input"]
for name in P.models:
    card = catalogue.card(name)
    if not card.recurrent:
        continue
    steps = between(compared[name]["logits"], reference_labels)
    untrained = np.stack([between(reference[s][name]["logits"], reference_labels)
                          for s in SEEDS])
    fig = plotting.plot_ridge_over_steps(name, steps, note=NOTE, readout="logits",
                                         reference=untrained)
    display(fig)
    plotting.plt.close(fig)

# %% [markdown]
# ## Centred measures and the mean-activity control
#
# Raw cosine distances between prototypes of non-negative (ReLU) features mix two things:
# the *structure* of the categories relative to each other, and the *common mean* that every
# prototype shares. Adding the same positive offset to every unit pulls all raw cosines
# towards 1 (distances towards 0) while leaving the arrangement of the categories unchanged.
# So a raw distribution can look "less orthogonal" simply because mean activity rose. The
# centred measures subtract the grand-mean prototype first:
#
# - **RMS centred cosine** and **mean |centred cosine|**: 0 for orthogonal prototypes;
# - **equiangularity**: the SD of the centred cosines (0 when all angles are equal);
# - **prototype PR / (C−1)**: how many directions the centred prototypes really span;
# - **mean-activity ratio**: the norm of the grand-mean prototype over the spread of the
#   centred prototypes. When it is large, the raw distances mostly report the mean.
#
# Where the raw mean distance and the centred measures move in opposite directions over
# steps, the change in the raw distribution is a change of mean activity, not of category
# structure. Per stage, one figure compares the raw distance with the centred cosines, one
# shows the structure of the centred prototypes and the mean activity.

# %% tags=["hide-input"]
ORTHO = {"raw_between_mean": "raw between mean",
         "centred_rms_cosine": "RMS centred cosine",
         "centred_mean_abs_cosine": "mean |centred cosine|",
         "centred_equiangularity": "equiangularity (SD)",
         "centred_pr_fraction": "prototype PR / (C−1)",
         "grand_mean_norm_ratio": "mean-activity ratio"}


def ortho_table(source, tag):
    rows = []
    for name in P.models:
        for readout in ("penult", "logits"):
            X = source[name][readout]
            values = geometry.orthogonality(X, reference_labels)
            table = pd.DataFrame({k: np.atleast_1d(values[k]) for k in ORTHO})
            table.insert(0, "step", np.arange(1, X.shape[0] + 1))
            table.insert(0, "readout", readout)
            table.insert(0, "model", name)
            table["n_steps"] = X.shape[0]
            table["source"] = tag
            rows.append(table)
    return pd.concat(rows, ignore_index=True).rename(columns=ORTHO)


FIGURES = {"raw distance and centred cosines": ["raw between mean", "RMS centred cosine",
                                               "mean |centred cosine|"],
           "centred structure and mean activity": ["equiangularity (SD)",
                                                   "prototype PR / (C−1)",
                                                   "mean-activity ratio"]}
observed = ortho_table(compared, NOTE)
untrained = pd.concat([ortho_table(reference[s], f"untrained seed {s}") for s in SEEDS],
                      ignore_index=True)
for readout in ("logits", "penult"):
    for topic, measures in FIGURES.items():
        fig = plotting.plot_trajectories(observed[observed["readout"] == readout], measures,
                                         time="normalised", note=NOTE,
                                         reference=untrained[untrained["readout"] == readout],
                                         title=f"{readout}: {topic} at every step "
                                               "(hatched: untrained seeds)")
        display(fig)
        plotting.plt.close(fig)

# %% [markdown]
# ### Learned or architectural?
#
# At each model's *after* step (its only step for feedforward models): the measure, and the
# range over the untrained seeds. "outside" marks a value beyond the untrained range.

# %% tags=["hide-input"]
rows = []
for name in P.models:
    card = catalogue.card(name)
    step = P.state_step(name, "after") if card.recurrent else 1
    for readout in ("penult", "logits"):
        mine = observed[(observed["model"] == name) & (observed["readout"] == readout)
                        & (observed["step"] == step)]
        ref = untrained[(untrained["model"] == name) & (untrained["readout"] == readout)
                        & (untrained["step"] == step)]
        for measure in ("raw between mean", "RMS centred cosine", "prototype PR / (C−1)",
                        "mean-activity ratio"):
            value = float(mine[measure].iloc[0])
            lo, hi = float(ref[measure].min()), float(ref[measure].max())
            rows.append({"Model": card.display_name, "Step": card.step_label(step),
                         "Readout": readout, "Measure": measure, "Value": value,
                         "Untrained min": lo, "Untrained max": hi,
                         "vs untrained": "inside" if lo <= value <= hi else "outside"})
learned = pd.DataFrame(rows)
display(Markdown(f"**Orthogonality at the after step vs untrained seeds** ({NOTE})."))
display(learned.round(3).style.hide(axis="index").format(precision=3))
display(HTML(results.links_html(results.write_table(
    learned, CHAPTER, "orthogonality_vs_untrained", parameters=REFERENCE,
    extraction=extraction))))
if P.untrained:
    display(Markdown(
        "These models are themselves untrained, so every value should fall inside the range "
        "of the untrained seeds (up to seed-to-seed variation); 'outside' here only measures "
        "how much one seed differs from the others."
    ))

# %% [markdown]
# ## Rerun this chapter
#
# With other parameters, for the whole book (every chapter gets the same `-p` pairs; add
# `-p weights untrained` where the mini zoo is not trained):
#
# ```bash
# make book PARAMS="-p models lrm3,bl,alexnet -p untrained_seeds 0,1,2,3,4"
# ```
#
# This chapter alone, from the repository root (its tables go to
# `book/_build/html/results/`; `papermill --help-notebook /tmp/03_orthogonality.ipynb` lists
# every parameter with its default):
#
# ```bash
# .venv/bin/jupytext --to ipynb notebooks/03_orthogonality.py -o /tmp/03_orthogonality.ipynb
# PYTHONPATH=. .venv/bin/papermill /tmp/03_orthogonality.ipynb /tmp/03_out.ipynb \
#     -p models lrm3,bl -p untrained_seeds 0,1,2,3,4 -p reference_images_per_category 20
# ```
