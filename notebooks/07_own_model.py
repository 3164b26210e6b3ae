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
# # Analyse your own model
#
# **In short:** a recurrent network written in plain PyTorch, registered in a few lines, runs
# through every analysis of the book; here the example ConvGRU, next to BL.
#
# Every analysis of this book works for a recurrent network of your own, written in plain
# PyTorch. Nothing has to subclass anything from `analysis_utils`: the model only has to reuse
# its modules, one call per time step, as a recurrent network does. The adapter
# `analysis_utils.plugins.time_resolved` puts a forward hook on each module you name and
# records every call of it as one step, pooled (global average over space) inside the hook as
# every catalogue model pools inside its pass. A module that runs a different number of times
# than the steps, or not at all, is refused with one sentence. A feedforward model is the
# one-step case.
#
# Other tools keep one value per hooked module, so a recurrent model gives them only its last
# step. Here the whole trajectory is kept, and one parameter, `plugins`, brings the model into
# every chapter:
#
# ```bash
# make book PARAMS="-p plugins examples.conv_gru -p models conv_gru,bl,b"
# ```
#
# This page walks through the example, `examples/conv_gru.py`: a two-layer convolutional GRU
# that a user might write, registered in a few lines, and puts it next to BL.

# %% tags=["parameters", "hide-input"]
scale = "mini"  # "mini" (64 px, the mini zoo) or "full" (official checkpoints)
weights = "trained"  # "trained" (mini zoo), "untrained" (random, seeded) or "official"
probe = "tiny"  # "tiny" (Tiny-ImageNet val) or "imagenet" (the study's ImageNet val probe)
data_dir = None  # folder with the probe images; None: $ANALYSIS_UTILS_DATA or the user cache
models = "conv_gru,bl"  # your model next to catalogue models, as a comma-separated list
readouts = "penult,logits"
baseline = None  # per-model step overrides (see Methods); None keeps the states on each card
after = None
n_perm = 1000  # not used in this chapter; kept so one PARAMS line serves every chapter
seed = 0  # seed of untrained weights
device = "auto"
cache_dir = None  # the feature cache; None: $ANALYSIS_UTILS_CACHE or the user cache
images_per_category = None  # None: all 50; fewer for a quick run
plugins = "examples.conv_gru"  # modules that register your own models when imported

# %% tags=["hide-input"]
import importlib
import inspect

import pandas as pd
import torch
from IPython.display import HTML, Markdown, display

from analysis_utils import book, catalogue, geometry, plotting, results
from analysis_utils import plugins as plugin_tools
from analysis_utils.errors import AnalysisUtilsError

P = book.check_parameters(scale=scale, weights=weights, probe=probe, data_dir=data_dir,
                          models=models, readouts=readouts, baseline=baseline, after=after,
                          n_perm=n_perm, seed=seed, device=device, cache_dir=cache_dir,
                          images_per_category=images_per_category, plugins=plugins)
if not P.plugins:
    raise AnalysisUtilsError(
        "This chapter shows a plug-in model, but plugins is empty; give the module that "
        "registers it, for example -p plugins examples.conv_gru."
    )
probe_set = book.open_chapter(P)
NOTE = P.weights_label()
CHAPTER = "07_own_model"  # names this chapter's result tables (book/_build/html/results/)

# %% [markdown]
# ## The model, as its author wrote it
#
# The plug-in module below is ordinary PyTorch: a stem reads the image once, then two
# convolutional GRU cells update their hidden maps at every step and a linear classifier reads
# the upper cell at every step. Only its last lines use this package: one
# `plugins.register_model` call names the model, how to build it at a scale, which module
# gives each readout, the number of steps and the loss timing. A module given as `"path"`
# records its output, `"path:input"` its first input (the penultimate features are often the
# classifier's input) and `"path[k]"` one element of a tuple (an LSTM cell's `h`).

# %% tags=["hide-input"]
for module_name in P.plugins:
    module = importlib.import_module(module_name)
    display(Markdown(f"**`{module_name}`** ({inspect.getsourcefile(module)}), registering "
                     f"{', '.join(plugin_tools.load_plugins(module_name)[module_name])}:\n\n"
                     f"```python\n{inspect.getsource(module)}\n```"))

# %% [markdown]
# ## What the adapter records
#
# The registered model is a `TimeResolvedModel` like every catalogue model: `readouts(x)`
# returns `{readout: [T, N, D]}`. One row per readout: the module whose calls are recorded,
# and the steps, images and units of two probe images.

# %% tags=["hide-input"]
pair = [0, len(probe_set) - 1]  # first image of the first and of the last category
own, batches = {}, {}
for name in P.plugin_models:
    card = catalogue.card(name)
    own[name] = catalogue.load(name, scale=P.scale, weights=P.weights, seed=P.seed)
    batches[name] = torch.stack([card.preprocessing[P.scale](probe_set.images[i]) for i in pair])
    display(Markdown(f"**{card.display_name}** (`{name}`), {own[name].n_steps} steps:"))
    recorded = plugin_tools.readout_table(own[name], batches[name])
    display(recorded.style.hide(axis="index"))
    display(HTML(results.links_html(results.write_table(recorded, CHAPTER, f"readouts_{name}",
                                                        parameters=P))))

# %% [markdown]
# Its card is filled from the registration (plain defaults where it said nothing: baseline
# step 1, after the last step, the ImageNet preprocessing), next to the catalogue models it is
# compared with:

# %% tags=["hide-input"]
columns = ["model", "family", "recurrence", "mechanism", "loss timing", "steps", "baseline",
           "after", "readouts", "preprocessing", "parameters"]
cards = catalogue.table(P.scale).set_index("name")
shown = list(dict.fromkeys(list(P.plugin_models) + list(P.models)))
cards = cards.loc[shown, columns].reset_index(drop=True)
display(cards.style.hide(axis="index"))
display(HTML(results.links_html(results.write_table(cards, CHAPTER, "cards", parameters=P))))

# %% [markdown]
# ## Training it with the project's trainer
#
# The trainer reads the loss timing from the card ("all steps" here: the loss on the logits of
# every step), so a plug-in trains exactly like a zoo model, and its weights go to the
# `trained_dir` it registered (`examples/trained/` for the example), where
# `weights="trained"` finds them, hash-checked against that folder's manifest:
#
# ```bash
# PYTHONPATH=. .venv/bin/python -m analysis_utils train --model conv_gru \
#     --plugins examples.conv_gru --epochs 2 --batch-size 64 --lr 1e-3 --device cpu
# ```
#
# Its training record, next to the catalogue models it is compared with:

# %% tags=["hide-input"]
if P.scale == "mini" and P.weights == "trained":
    from analysis_utils import train
    from analysis_utils import weights as zoo_weights

    trained = zoo_weights.trained_records(shown, "mini")
    record = pd.DataFrame(train.training_table(trained))
    display(record.style.hide(axis="index"))
    display(HTML(results.links_html(results.write_table(record, CHAPTER, "training",
                                                        parameters=P))))
else:
    display(Markdown(f"*This build uses {NOTE}; the training records are shown when the "
                     "chapter runs with `weights=\"trained\"` at mini scale.*"))

# %% [markdown]
# ## A wrong number of steps gets one sentence
#
# The adapter counts the calls of every named module in each forward pass. Asking the same
# model for one step more than it runs:

# %% tags=["hide-input"]
for name, model in own.items():
    if not isinstance(model, plugin_tools.TimeResolvedAdapter):
        display(Markdown(f"`{name}` is a `TimeResolvedModel` written by hand: no hooks to count."))
        continue
    wrong = plugin_tools.time_resolved(model.model, model.paths, steps=model.n_steps + 1)
    try:
        wrong.readouts(batches[name])
    except AnalysisUtilsError as error:
        display(Markdown(f"> {error}"))

# %% [markdown]
# ## Next to BL: accuracy and geometry at every step
#
# The features of every model of this page go through the feature cache as in every chapter
# (the plug-in's cache key includes a hash of its source file, so editing the model
# invalidates them). First, accuracy at every step, as in chapter 1: logit top-1 and
# nearest-centroid top-1 on the penultimate features.

# %% tags=["hide-input"]
features, extraction = book.load_features(P, probe_set)
display(book.features_summary(features, extraction))
labels = probe_set.labels
class_index = probe_set.class_index(P.scale)

rows = []
for name in P.models:
    logits = geometry.logit_accuracy(features[name]["logits"], labels, class_index)
    nc = geometry.nearest_centroid_accuracy(features[name]["penult"], labels)
    n_steps = features[name]["logits"].shape[0]
    for index in range(n_steps):
        rows += [{"model": name, "step": index + 1, "n_steps": n_steps,
                  "measure": "logits top-1", "value": logits["top1"][index]},
                 {"model": name, "step": index + 1, "n_steps": n_steps,
                  "measure": "nearest-centroid penult top-1", "value": nc["top1"][index]}]
accuracy = pd.DataFrame(rows)
fig = plotting.plot_accuracy_over_steps(accuracy, note=NOTE)
display(fig)
plotting.plt.close(fig)
display(HTML(results.links_html(results.write_table(
    accuracy.drop(columns="n_steps"), CHAPTER, "accuracy_per_step", parameters=P,
    extraction=extraction))))

# %% [markdown]
# Then chapter 2's descriptive geometry at every step, for both stages: local cluster size
# (exemplar-to-prototype cosine distance), the mean and SD of the between-prototype
# distances, and the effective dimension, over normalised time $\tau = (t-1)/(T-1)$
# (feedforward models are dashed lines), two panels a row. Every other measure of chapters 2 to 4 runs the same
# way: give the same `plugins` and `models` to those chapters.

# %% tags=["hide-input"]
MEASURES = {"cluster_size": "cluster size (cosine)",
            "between_mean": "between-prototype mean",
            "between_sd": "between-prototype SD",
            "effective_dimension": "effective dimension"}
tables = []
for name in P.models:
    for readout in ("penult", "logits"):
        table = geometry.trajectory(features[name][readout], labels)
        table.insert(0, "readout", readout)
        table.insert(0, "model", name)
        table["n_steps"] = features[name][readout].shape[0]
        tables.append(table)
trajectories = pd.concat(tables, ignore_index=True).rename(columns=MEASURES)
for readout in ("penult", "logits"):
    part = trajectories[trajectories["readout"] == readout]
    fig = plotting.plot_trajectories(part, list(MEASURES.values()), time="normalised",
                                     note=NOTE, ncols=2,
                                     title=f"{readout}: geometry over normalised time")
    display(fig)
    plotting.plt.close(fig)

# %% [markdown]
# ## Every chapter, and training it
#
# The `plugins` parameter is accepted by every chapter and by `make book`'s prefill, which
# extracts the plug-in's features once for all chapters:
#
# ```bash
# # one chapter
# .venv/bin/jupytext --to ipynb notebooks/02_dynamics.py -o /tmp/02.ipynb
# PYTHONPATH=. .venv/bin/papermill /tmp/02.ipynb /tmp/02-out.ipynb \
#     -p plugins examples.conv_gru -p models conv_gru,bl
# # the whole book, with your model in every chapter
# make book PARAMS="-p plugins examples.conv_gru -p models conv_gru,bl,b"
# ```
#
# A module named in `plugins` must be importable: installed, or on `PYTHONPATH` (`make book`
# puts the repository root there). An installed package can instead declare its modules in the
# entry-point group `analysis_utils.models` (in its `pyproject.toml`:
# `[project.entry-points."analysis_utils.models"]`, `mine = "mypkg.models"`); its models are
# then in the catalogue without any parameter. The project's trainer trains a plug-in with the
# loss timing on its card (the command above); its weights then load with `weights="trained"`
# from the `trained_dir` it registered.
#
# **Cost.** The seconds column of the extraction table above is this run's cost per model
# (near 0 when the features came from the cache). Measured on a 2-core CPU: the example's
# features over the 5000-image probe took 32 s on one thread in a cold build (BL 56 s); the whole-book
# line above, from a cache that already held the catalogue models' features and the example's
# own, took 3 min 5 s, of which 92 s extracted what only the example needs (its untrained
# reference networks for chapters 3 and 5, and its perturbed probes for chapter 6).

# %% [markdown]
# ## Rerun this chapter
#
# With other parameters, for the whole book (every chapter gets the same `-p` pairs):
#
# ```bash
# make book PARAMS="-p plugins examples.conv_gru -p models conv_gru,bl,b"
# ```
#
# This chapter alone, from the repository root (its tables go to
# `book/_build/html/results/`; `papermill --help-notebook /tmp/07_own_model.ipynb` lists
# every parameter with its default):
#
# ```bash
# .venv/bin/jupytext --to ipynb notebooks/07_own_model.py -o /tmp/07_own_model.ipynb
# PYTHONPATH=. .venv/bin/papermill /tmp/07_own_model.ipynb /tmp/07_out.ipynb \
#     -p plugins examples.conv_gru -p models conv_gru,bl,b
# ```
