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
# # Cross-model RSA: do models share a category geometry?
#
# **In short:** how alike the category geometries of the models are (cross-model RSA and MDS,
# the study's Fig. 3), at the named states and every step, with a bootstrap test of its claim.
#
# Each model state has a category geometry: the 100 x 100 matrix of cosine distances between
# its category prototypes (its RDM). Representational similarity analysis compares these
# matrices across models: the Spearman correlation between two RDMs' upper triangles. The
# reference study concluded that "models converge at the feature stage but split into
# families at the decision stage" (its Figure 3). This chapter reproduces that figure, extends
# it to every step (each model's path through the MDS space), and tests the claim with
# bootstrap intervals over categories.

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
n_boot = 500  # bootstrap resamples of the categories for the claim test

# %% tags=["hide-input"]
import numpy as np
import pandas as pd
from IPython.display import HTML, Markdown, display

from analysis_utils import book, catalogue, geometry, plotting, results, rsa
from analysis_utils.errors import AnalysisUtilsError

P = book.check_parameters(scale=scale, weights=weights, probe=probe, data_dir=data_dir,
                          models=models, readouts=readouts, baseline=baseline, after=after,
                          n_perm=n_perm, seed=seed, device=device, cache_dir=cache_dir,
                          images_per_category=images_per_category, plugins=plugins)
N_BOOT = book.check_count(n_boot, "n_boot")
if len(P.models) < 3:
    raise AnalysisUtilsError(
        f"Cross-model RSA needs at least 3 models, got {len(P.models)}; add models or use the "
        "default (every model)."
    )
probe_set = book.open_chapter(P)
NOTE = P.weights_label()
CHAPTER = "04_cross_model_rsa"  # names this chapter's result tables (book/_build/html/results/)

# %% tags=["hide-input"]
labels = probe_set.labels
features, extraction = book.load_features(P, probe_set)
display(book.features_summary(features, extraction))


def state_tags(name):
    """(model, step) of each state shown in Figure 3: baseline and after, or the only step."""
    card = catalogue.card(name)
    if not card.recurrent:
        return [(name, 1)]
    return [(name, P.state_step(name, "baseline")), (name, P.state_step(name, "after"))]


# %% [markdown]
# ## Figure 3: RSA and MDS at the named states
#
# One row per stage. Left: the Spearman correlation between every two model states' RDMs
# (raw prototypes). Right: metric MDS of the dissimilarity 1 − ρ (the study's settings);
# hollow circles are recurrent baselines, arrows run from baseline to after. The matrices and
# the MDS coordinates are written as result tables.

# %% tags=["hide-input"]
panels, rsa_frames = [], {}
for readout, title in (("penult", "Penultimate"), ("logits", "Logits")):
    tags = [tag for name in P.models for tag in state_tags(name)]
    tagged = [rsa.tagged_rdm(name, readout, step, features[name][readout][step - 1], labels)
              for name, step in tags]
    frame = rsa.cross_model_rsa(tagged)
    coords, stress = rsa.mds(frame)
    rsa_frames[readout] = frame
    panels.append({"title": title, "tags": tags, "rho": frame.to_numpy(),
                   "coords": coords.to_numpy(), "stress": stress})
fig = plotting.plot_rsa_mds(panels, note=NOTE)
display(fig)
plotting.plt.close(fig)
display(Markdown(
    f"MDS stress: penult {panels[0]['stress']:.3f}, logits {panels[1]['stress']:.3f} "
    f"(the study reports 0.086 and 0.107 on its own models and probe)."
))
written = []
for (readout, frame), panel in zip(rsa_frames.items(), panels):
    written.append(results.write_table(frame, CHAPTER, f"rsa_{readout}", parameters=P,
                                       extraction=extraction, index=True))
    coords = pd.DataFrame(panel["coords"], index=frame.index, columns=["MDS 1", "MDS 2"])
    written.append(results.write_table(coords.assign(stress=panel["stress"]), CHAPTER,
                                       f"mds_{readout}", parameters=P, extraction=extraction,
                                       index=True))
display(HTML(results.links_html(written)))

# %% [markdown]
# ## Every step in one MDS space
#
# The RDM of every model at every step, for each readout, in one cross-model RSA; each
# model's states form a path from its first step (hollow circle) to its last step (large
# dot). Feedforward models are single squares. A path starts at the first step at which the
# readout depends on the image (`geometry.first_image_dependent_step`: step 1 for most
# models, later for CORnet-RT and ConvRNN, whose top areas receive the image after a delay):
# before it, every image gives the same features up to float rounding, so those RDMs hold
# rounding noise and would scatter at random across the map.

# %% tags=["hide-input"]
def image_steps(name, readout):
    """The steps at which ``readout`` of model ``name`` depends on the image."""
    X = features[name][readout]
    start = geometry.first_image_dependent_step(X)
    if start is None:
        raise AnalysisUtilsError(
            f"{name}'s {readout} is the same for every image at every step, so it has no "
            "category geometry; leave the model out with the models parameter."
        )
    return list(range(start, X.shape[0] + 1))


step_panels = []
for readout, title in (("penult", "Penultimate"), ("logits", "Logits")):
    tagged = [rsa.tagged_rdm(name, readout, step, features[name][readout][step - 1], labels)
              for name in P.models for step in image_steps(name, readout)]
    frame = rsa.cross_model_rsa(tagged)
    coords, stress = rsa.mds(frame)
    step_panels.append({"title": title, "tags": [(t.model, t.state) for t in tagged],
                        "coords": coords.to_numpy(), "stress": stress})
fig = plotting.plot_mds_trajectories(step_panels, note=NOTE)
display(fig)
plotting.plt.close(fig)

# %% [markdown]
# ## Testing the claim: convergence at the feature stage, divergence at the decision stage
#
# The statistic is the mean Spearman ρ over all pairs of *different* models, each at the same
# normalised time τ (for a recurrent model the step nearest to τ on its image-dependent steps,
# so τ = 0 is the first step at which the readout sees the image and τ = 1 the last; for a
# feedforward model its only step), at the feature stage minus at the decision stage. The claim predicts a positive
# difference. Intervals come from resampling the 100 categories with replacement and
# recomputing every RDM on the resampled categories (pairs of a category with its own copy are
# dropped, as rsatoolbox does); an interval that excludes 0 supports the claim at that τ.

# %% tags=["hide-input"]
def nearest_step(name, readout, tau):
    """The image-dependent step of model ``name`` nearest to normalised time τ."""
    steps = image_steps(name, readout)
    return steps[int(round(tau * (len(steps) - 1)))]


def rdms_at(readout, tau):
    """Every model's RDM of ``readout`` at its step nearest to τ, tagged."""
    tagged = []
    for name in P.models:
        step = nearest_step(name, readout, tau)
        tagged.append(rsa.tagged_rdm(name, readout, step, features[name][readout][step - 1],
                                     labels))
    return tagged


BOOTSTRAP_SEED = 42  # draws of the categories for the bootstrap
rng = np.random.default_rng(BOOTSTRAP_SEED)
n_categories = int(labels.max()) + 1
draws = rng.integers(0, n_categories, size=(N_BOOT, n_categories))
claim_rows, curve_rows = [], []
for tau in (0.0, 0.5, 1.0):
    observed, boot = {}, {}
    for readout in ("penult", "logits"):
        observed[readout], boot[readout] = rsa.between_model_rho_bootstrap(
            rdms_at(readout, tau), draws)
    difference = boot["penult"] - boot["logits"]
    lo, hi = np.quantile(difference, [0.025, 0.975])
    claim_rows.append({"τ": tau, "mean ρ penult": observed["penult"],
                       "mean ρ logits": observed["logits"],
                       "penult − logits": observed["penult"] - observed["logits"],
                       "95% CI low": lo, "95% CI high": hi,
                       "supports the claim": bool(lo > 0)})
    for readout in boot:
        q = np.quantile(boot[readout], [0.025, 0.975])
        curve_rows.append({"readout": readout, "tau": tau, "mean": observed[readout],
                           "lo": q[0], "hi": q[1]})
claim = pd.DataFrame(claim_rows)
display(Markdown(f"**Claim test** ({NOTE}; {N_BOOT} bootstrap resamples of the categories)."))
display(claim.round(3).style.hide(axis="index").format(precision=3))
display(HTML(results.links_html(results.write_table(
    claim, CHAPTER, "claim_test", parameters={"chapter": P, "n_boot": N_BOOT,
                                        "bootstrap_seed": BOOTSTRAP_SEED},
    extraction=extraction))))
fig = plotting.plot_claim_test(pd.DataFrame(curve_rows), note=NOTE)
display(fig)
plotting.plt.close(fig)

# %% [markdown]
# ## Rerun this chapter
#
# With other parameters, for the whole book (every chapter gets the same `-p` pairs; add
# `-p weights untrained` where the mini zoo is not trained; this chapter needs at least 3
# models):
#
# ```bash
# make book PARAMS="-p models lrm3,bl,alexnet -p n_boot 1000"
# ```
#
# This chapter alone, from the repository root (its tables go to
# `book/_build/html/results/`; `papermill --help-notebook /tmp/04_cross_model_rsa.ipynb`
# lists every parameter with its default):
#
# ```bash
# .venv/bin/jupytext --to ipynb notebooks/04_cross_model_rsa.py -o /tmp/04_cross_model_rsa.ipynb
# PYTHONPATH=. .venv/bin/papermill /tmp/04_cross_model_rsa.ipynb /tmp/04_out.ipynb \
#     -p models lrm3,bl,alexnet -p n_boot 1000
# ```
