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
# # The model catalogue
#
# **In short:** the cards of the book's models, how each one unrolls in time, and how well
# each classifies the probe at every step (the study's Table 1, extended to all steps).
#
# Every model of the book, as its card describes it; how each one unrolls in time (which area
# first carries information about the image, at which step); and how well it classifies the
# probe at **every** step: the reference study's Table 1 (logit accuracy, and nearest-centroid
# accuracy on the penultimate features), extended from its two states to all steps.

# %% tags=["parameters", "hide-input"]
scale = "mini"  # "mini" (64 px, the mini zoo) or "full" (official checkpoints)
weights = "trained"  # "trained" (mini zoo), "untrained" (random, seeded) or "official"
probe = "tiny"  # "tiny" (Tiny-ImageNet val) or "imagenet" (the study's ImageNet val probe)
data_dir = None  # folder with the probe images; None: $ANALYSIS_UTILS_DATA or the user cache
models = None  # None for every catalogue model, or a comma-separated list such as "lrm3,bl"
readouts = "penult,logits"
baseline = None  # per-model step overrides (see Methods); None keeps the states on each card
after = None
n_perm = 1000  # permutations of the global test (chapter 2)
seed = 0  # seed of untrained weights
device = "auto"
cache_dir = None  # the feature cache; None: $ANALYSIS_UTILS_CACHE or the user cache
images_per_category = None  # None: all 50; fewer for a quick run
plugins = None  # modules that register your own models, e.g. "examples.conv_gru" (see chapter 7)

# %% tags=["hide-input"]
import numpy as np
import pandas as pd
import torch
from IPython.display import HTML, Markdown, display

from analysis_utils import book, catalogue, geometry, plotting, results

P = book.check_parameters(scale=scale, weights=weights, probe=probe, data_dir=data_dir,
                          models=models, readouts=readouts, baseline=baseline, after=after,
                          n_perm=n_perm, seed=seed, device=device, cache_dir=cache_dir,
                          images_per_category=images_per_category, plugins=plugins)
probe_set = book.open_chapter(P)
NOTE = P.weights_label()
CHAPTER = "01_model_catalogue"  # names this chapter's result tables (book/_build/html/results/)

# %% [markdown]
# ## The cards
#
# One row per model: its family, the kind of recurrence and how it acts, when the training
# loss is applied, its feedforward counterpart, the number of steps (passes), the default
# *baseline* and *after* steps (the study's choices), the readout the study's headline tests
# use, and the parameter count at this scale.

# %% tags=["hide-input"]
columns = ["model", "family", "recurrence", "mechanism", "loss timing", "counterpart", "steps",
           "baseline", "after", "headline readout", "readouts", "input", "parameters"]
cards = catalogue.table(P.scale)
cards = cards[cards["name"].isin(P.models)].set_index("name").loc[list(P.models)]
cards["counterpart"] = [catalogue.card(c).display_name if c else "none"
                        for c in cards["counterpart"]]
for name in P.models:
    if not catalogue.card(name).recurrent:
        cards.loc[name, "after"] = "none"
cards = cards[columns].reset_index(drop=True)
display(cards.style.hide(axis="index").format({"parameters": "{:,}"}))
display(HTML(results.links_html(results.write_table(cards, CHAPTER, "cards", parameters=P))))

# %% [markdown]
# ## How each model unrolls in time
#
# For each model and each of its areas, the first step at which the area's output depends on
# the image, measured here: two probe images of different categories go through the model,
# and an area "sees the image" from the first step at which its pooled output differs
# between them. Before that step an area's output is the same for every image (driven by
# biases and its own state only). Filled cells: steps at which the area carries image
# information; the bottom row says whether the input frame is the image or a blank.

# %% tags=["hide-input"]
def first_image_step(model, x, areas):
    """First 1-based step at which each area's readout differs between the two images in x."""
    with torch.inference_mode():
        values = model.readouts(x, areas)
    first = {}
    for area in areas:
        differs = (values[area][:, 0] - values[area][:, 1]).abs().amax(dim=-1) > 1e-6
        steps = torch.nonzero(differs).flatten()
        first[area] = int(steps[0]) + 1 if steps.numel() else None
    return first


pair = [0, len(probe_set) - 1]  # first image of the first and of the last category
unrolling = {}
for name in P.models:
    card = catalogue.card(name)
    model = catalogue.load(name, scale=P.scale, weights=P.weights, seed=P.seed)
    x = torch.stack([card.preprocessing[P.scale](probe_set.images[i]) for i in pair])
    areas = [r for r in card.readouts if r not in book.STAGE_READOUTS] + ["penult", "logits"]
    shown = ([t for t in range(1, model.n_steps + 1) if model.shows_image(t)]
             if hasattr(model, "shows_image") else None)
    unrolling[name] = (first_image_step(model, x, areas), model.n_steps, shown)

for name, (first, n_steps, shown) in unrolling.items():
    card = catalogue.card(name)
    feedback = f"{card.recurrence}; loss: {card.loss_timing}"
    fig = plotting.plot_unrolling(name, first, n_steps, feedback=feedback, image_steps=shown,
                                  note=NOTE)
    display(fig)
    plotting.plt.close(fig)
    if card.notes:
        display(Markdown(f"*{card.display_name}:* {card.notes}"))

# %% [markdown]
# ## How the mini zoo was trained
#
# With `weights="trained"` (the default at mini scale) every model is a file of the mini zoo,
# trained from scratch by `make zoo` on the Tiny-ImageNet training images of the 100 probe
# categories (50,000 images), each with its card's loss timing. The table gives, per model,
# what its manifest records: epochs, wall time, device, the speed options used in training
# (the analysed model is always the plain eager float32 model loading the saved file), the
# measured training speed, the recipe, and the final-step accuracy on the whole probe. The
# learning curves show validation top-1 at the analysed final step after every epoch, on a
# fixed subset of the probe (the first 10 images of each category).

# %% tags=["hide-input"]
if P.scale == "mini" and P.weights == "trained":
    from analysis_utils import train
    from analysis_utils import weights as zoo_weights

    zoo = zoo_weights.trained_records(P.models, "mini")
    display(Markdown("**The mini zoo's training record** (from "
                     "`analysis_utils/zoo/mini/manifest.json`, and a plug-in's own "
                     "`trained_dir`)."))
    training = pd.DataFrame(train.training_table(zoo))
    display(training.style.hide(axis="index"))
    display(HTML(results.links_html(results.write_table(training, CHAPTER, "training",
                                                        parameters=P))))
    fig = plotting.plot_learning_curves(pd.DataFrame(train.learning_curves(zoo)), note=NOTE)
    display(fig)
    plotting.plt.close(fig)
else:
    display(Markdown(f"*This build uses {NOTE}; the training record of the mini zoo is shown "
                     "when the chapter runs with `weights=\"trained\"` at mini scale.*"))

# %% [markdown]
# ## Accuracy at every step
#
# The study's Table 1 reports two numbers per state: top-1/top-5 of the classifier's own output
# (logits) against each image's class, and nearest-centroid accuracy on the penultimate
# features (each image goes to the most similar of the 100 category prototypes; chance 1 %).
# Here both are computed at every step. Features come from the shared feature cache, so the
# other chapters reuse them.

# %% tags=["hide-input"]
features, extraction = book.load_features(P, probe_set)
display(book.features_summary(features, extraction))
labels = probe_set.labels
class_index = probe_set.class_index(P.scale)

rows = []
for name in P.models:
    card = catalogue.card(name)
    logits = geometry.logit_accuracy(features[name]["logits"], labels, class_index)
    nc = geometry.nearest_centroid_accuracy(features[name]["penult"], labels)
    nc_loo = geometry.nearest_centroid_accuracy(features[name]["penult"], labels,
                                                leave_one_out=True)
    n_steps = features[name]["logits"].shape[0]
    for index in range(n_steps):
        step = index + 1
        state = ("baseline" if step == P.state_step(name, "baseline") else
                 "after" if card.recurrent and step == P.state_step(name, "after") else "")
        rows.append({"model": name, "Model": card.display_name, "step": step,
                     "n_steps": n_steps, "Step": card.step_label(step), "State": state,
                     "Logits top-1 (%)": logits["top1"][index],
                     "Logits top-5 (%)": logits["top5"][index],
                     "NC penult top-1 (%)": nc["top1"][index],
                     "NC penult top-5 (%)": nc["top5"][index],
                     "NC penult leave-one-out top-1 (%)": nc_loo["top1"][index]})
accuracy = pd.DataFrame(rows)

# %% [markdown]
# ### Table 1: the two named states
#
# The study's layout: one row per model and state. Chance is 1 % for nearest-centroid
# (100-way); for the logits it is 1 % at mini scale (100 classes) and 0.1 % at full scale.

# %% tags=["hide-input"]
value_columns = ["Logits top-1 (%)", "Logits top-5 (%)", "NC penult top-1 (%)",
                 "NC penult top-5 (%)", "NC penult leave-one-out top-1 (%)"]
table1 = accuracy[accuracy["State"] != ""][["Model", "State", "Step"] + value_columns]
display(Markdown(f"**Table 1** ({NOTE}): accuracy at the baseline and after states."))
display(table1.round(2).style.hide(axis="index").format(precision=2))
display(HTML(results.links_html(results.write_table(table1, CHAPTER, "table1", parameters=P,
                                                    extraction=extraction))))

# %% [markdown]
# ### Table 1 extended to every step

# %% tags=["hide-input"]
per_step = accuracy[["Model", "Step", "State"] + value_columns]
display(Markdown(f"**Accuracy at every step** ({NOTE})."))
display(per_step.round(2).style.hide(axis="index").format(precision=2))
display(HTML(results.links_html(results.write_table(per_step, CHAPTER, "accuracy_per_step",
                                                    parameters=P, extraction=extraction))))

# %% tags=["hide-input"]
long = pd.concat([
    accuracy.assign(measure="logits top-1", value=accuracy["Logits top-1 (%)"]),
    accuracy.assign(measure="nearest-centroid penult top-1", value=accuracy["NC penult top-1 (%)"]),
])[["model", "step", "n_steps", "measure", "value"]]
fig = plotting.plot_accuracy_over_steps(long, note=NOTE)
display(fig)
plotting.plt.close(fig)

# %% [markdown]
# Feedforward models (one step) are drawn as dashed horizontal lines; recurrent models as a
# line over normalised time $\tau = (t-1)/(T-1)$, with an open circle at step 1. Models whose
# top areas see the image only after a delay (CORnet-RT, ConvRNN) start at chance.

# %% tags=["hide-input"]
summary = accuracy.groupby("Model", sort=False).agg(
    steps=("step", "max"),
    first_step_top1=("Logits top-1 (%)", "first"),
    best_top1=("Logits top-1 (%)", "max"),
    best_step=("Logits top-1 (%)", lambda s: int(np.argmax(s.to_numpy())) + 1),
    last_step_top1=("Logits top-1 (%)", "last"),
)
display(Markdown(f"**Logit top-1 at the first, best and last step** ({NOTE})."))
display(summary.round(2))
display(HTML(results.links_html(results.write_table(summary, CHAPTER, "logit_top1_summary",
                                                    parameters=P, extraction=extraction,
                                                    index=True))))

# %% [markdown]
# ## Rerun this chapter
#
# With other parameters, for the whole book (every chapter gets the same `-p` pairs; add
# `-p weights untrained` where the mini zoo is not trained):
#
# ```bash
# make book PARAMS="-p models lrm3,bl,alexnet -p images_per_category 20"
# ```
#
# This chapter alone, from the repository root (its tables go to
# `book/_build/html/results/`; `papermill --help-notebook /tmp/01_model_catalogue.ipynb`
# lists every parameter with its default):
#
# ```bash
# .venv/bin/jupytext --to ipynb notebooks/01_model_catalogue.py -o /tmp/01_model_catalogue.ipynb
# PYTHONPATH=. .venv/bin/papermill /tmp/01_model_catalogue.ipynb /tmp/01_out.ipynb \
#     -p models lrm3,bl,alexnet -p images_per_category 20
# ```
