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
# # Perturbations: occlusion, clutter and noise at every step
#
# **In short:** how accuracy and category geometry degrade under occlusion, clutter, noise and
# phase noise at every step, and whether recurrence helps more on harder images.
#
# The reference study ends on an open question: do these dynamic models have different
# behavioural capacities for clutter and occlusion? The literature predicts that recurrence
# matters most on hard images: recurrent networks beat feedforward ones on occluded and
# cluttered objects (Spoerer, McClure & Kriegeskorte 2017), recurrence completes occluded
# patterns (Tang et al. 2018), and images that feedforward models fail on are solved later in
# monkey IT (Kar et al. 2019). This chapter perturbs the first images of every probe category
# (every model sees the same perturbed pixels, then its own preprocessing) and measures, at
# every step: top-1 of the classifier, nearest-centroid top-1 against the *clean* prototypes,
# and the study's local and global geometry on the perturbed images.

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
images_per_category = None  # None: all 50 clean images (the clean prototypes); fewer for speed
plugins = None  # modules that register your own models, e.g. "examples.conv_gru" (see chapter 7)
# the level grid per perturbation (level 0, the clean images, is always added); for example
# -p perturbation_levels "{'occlusion': [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 'noise': [0.1, 0.2]}"
perturbation_levels = "{'occlusion': [0.25, 0.5], 'clutter': [3], 'noise': [0.2], 'phase': [0.5]}"
perturbation_images_per_category = 3  # perturbed images per category (the first ones)
perturbation_seed = 0  # seed of the perturbations' draws
n_boot = 2000  # bootstrap resamples over categories for the 95% intervals

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import HTML, Markdown, display

from analysis_utils import book, catalogue, extract, perturb, plotting, results, robustness

P = book.check_parameters(scale=scale, weights=weights, probe=probe, data_dir=data_dir,
                          models=models, readouts=readouts, baseline=baseline, after=after,
                          n_perm=n_perm, seed=seed, device=device, cache_dir=cache_dir,
                          images_per_category=images_per_category, plugins=plugins)
LEVELS = robustness.check_levels(perturbation_levels)
PERTURBATION_SEED = book.check_count(perturbation_seed, "perturbation_seed", minimum=0)
SPECS = robustness.level_specs(LEVELS, PERTURBATION_SEED)
N_BOOT = book.check_count(n_boot, "n_boot")
probe_set = book.open_chapter(P)
K = min(book.check_count(perturbation_images_per_category, "perturbation_images_per_category",
                         minimum=2), probe_set.images_per_category)
cut, keep = book.reference_probe(probe_set, K)
NOTE = P.weights_label()
CHAPTER = "06_perturbations"  # names this chapter's result tables (book/_build/html/results/)
#: what this chapter's tables depend on besides P
SETTINGS = {"chapter": P, "perturbation_levels": {k: list(v) for k, v in LEVELS.items()},
            "perturbation_images_per_category": K, "perturbation_seed": perturbation_seed,
            "n_boot": N_BOOT}
display(pd.DataFrame([{"perturbation": name, "levels": ", ".join(f"{x:g}" for x in levels),
                       "level means": perturb.perturbation(name).meaning}
                      for name, levels in LEVELS.items()]).style.hide(axis="index"))
display(Markdown(
    f"Perturbed images: the first {K} of each of the {probe_set.n_categories} categories "
    f"({len(cut)} images, perturbation seed {perturbation_seed}); clean prototypes from all "
    f"{probe_set.images_per_category} clean images per category."))

# %% [markdown]
# ## What the models see
#
# Three of the perturbed images at every level (the same pixels go to every model; each
# model's preprocessing then brings them to its input size).

# %% tags=["hide-input"]
n = probe_set.n_categories
picks = [K * (i * n // 3) for i in range(3)]
examples = {spec: perturb.perturb_probe(spec, cut, positions=picks) for spec in SPECS}
fig = plotting.plot_perturbation_examples(cut, examples, picks=picks, note=NOTE)
display(fig)
plotting.plt.close(fig)

# %% tags=["hide-input"]
clean, extraction = book.load_features(P, probe_set, readouts=book.STAGE_READOUTS)
perturbed = {}
for name in P.models:  # in the book's order, each perturbation's levels from 0 up
    for level_name, levels in LEVELS.items():
        for level in levels:
            if level == 0:  # the clean features of the same images
                perturbed[name, level_name, 0] = {r: X[:, keep] for r, X in clean[name].items()}
                continue
            spec = perturb.PerturbationSpec(level_name, level, PERTURBATION_SEED)
            perturbed[name, level_name, level] = extract.features(
                name, cut, readouts=book.STAGE_READOUTS, perturbation=spec, progress=False,
                **P.extract_kwargs())[0]
display(book.features_summary(clean, extraction))

# %% tags=["hide-input"]
class_index = probe_set.class_index(P.scale)
measured = robustness.measure_levels(perturbed, clean, cut.labels, class_index,
                                     probe_set.labels)
steps = robustness.step_table(measured)
after_step = {name: P.state_step(name, "after") for name in P.models}
recurrent = [name for name in P.models if catalogue.card(name).recurrent]
states = {name: (P.state_step(name, "baseline"), after_step[name]) for name in recurrent}
counterparts = {name: catalogue.card(name).counterpart for name in recurrent
                if catalogue.card(name).counterpart in P.models}
final = robustness.final_table(steps, after_step)
display(HTML(results.links_html(results.write_table(
    steps, CHAPTER, "per_step", parameters=SETTINGS, extraction=extraction))))

# %% [markdown]
# ## Accuracy at every step, per level
#
# One figure per perturbation, one panel per recurrent model, one line per level (darker =
# stronger). The feedforward counterpart of a recurrent model (AlexNet for LRM3/LRA3, B for BL
# and CORnet-RT) has one step: its levels are the dashed lines in that model's panel.

# %% tags=["hide-input"]
for name in LEVELS:
    fig = plotting.plot_steps_by_level(steps, "top1", name, note=NOTE,
                                       ylabel="logits top-1 (%)", counterparts=counterparts)
    display(fig)
    plotting.plt.close(fig)

# %% [markdown]
# ## Recurrence benefit against level
#
# Left, the benefit of each recurrent model: its top-1 at the analysed final step minus its
# top-1 at its baseline state (the first state that sees the image; the card's states), in
# percentage points, with 95% bootstrap intervals over categories. Right, top-1 at the final
# step of every model against level: the feedforward counterparts are the dashed lines.

# %% tags=["hide-input"]
benefit = robustness.benefit_table(measured, states, n_boot=N_BOOT)
fig = plotting.plot_against_level(
    robustness.with_benefit(final, benefit),
    [("benefit", "recurrence benefit (pp)"), ("top1", "top-1 at the final step (%)")],
    "Recurrence benefit and final-step accuracy against level", note=NOTE,
    zero_line=("benefit",))
display(fig)
plotting.plt.close(fig)
display(HTML(results.links_html(results.write_table(
    benefit, CHAPTER, "benefit", parameters=SETTINGS, extraction=extraction))))

# %% [markdown]
# ## Geometry against level
#
# At the analysed final step, on `penult`: nearest-centroid top-1 against the clean
# prototypes (can the learned categories still read the perturbed exemplars?), and the
# study's cluster size and between-prototype distance computed on the perturbed images
# themselves, each relative to the same model's clean value (1 = unchanged), so models with
# different feature scales share an axis.

# %% tags=["hide-input"]
geometry_final = robustness.relative_to_clean(final, ["cluster_size", "between_mean"])
fig = plotting.plot_against_level(
    geometry_final, [("nc_top1", "nearest-centroid top-1 (%)"),
                     ("cluster_size / clean", "cluster size / clean"),
                     ("between_mean / clean", "between-prototype distance / clean")],
    "Geometry at the final step against level: read by the clean prototypes, local and "
    "global", note=NOTE)
display(fig)
plotting.plt.close(fig)

# %% [markdown]
# ## What the literature predicts, tested
#
# Each prediction is tested per recurrent model and perturbation at its hardest level, on
# per-category differences of differences with 95% bootstrap intervals: "agrees" when the
# interval lies above 0, "disagrees" when below, "unclear" when it contains 0.

# %% tags=["hide-input"]
literature = robustness.literature_table(measured, states, counterparts, n_boot=N_BOOT)
display(pd.DataFrame([{"prediction": key, "states": text, "source": source}
                      for key, (text, source) in robustness.PREDICTIONS.items()]
                     ).style.hide(axis="index"))
display(literature.round(2).style.hide(axis="index"))
display(HTML(results.links_html(results.write_table(
    literature, CHAPTER, "literature", parameters=SETTINGS, extraction=extraction))))
names = {name: catalogue.card(name).display_name for name in P.models}
lines = robustness.summary_sentences(benefit, final, counterparts, names)
counts = literature["verdict"].value_counts().to_dict() if len(literature) else {}
display(Markdown(
    f"**What this run shows** ({NOTE}): the literature's predictions "
    f"{', '.join(f'{v} {k}' for k, v in counts.items()) or 'could not be tested'}"
    f" of {len(literature)} tests.\n\n" + "\n\n".join(f"- {line}" for line in lines)))

# %% [markdown]
# ## Rerun this chapter
#
# A finer grid and more images per category (the defaults keep a cold `make book` cheap on a
# laptop; each level costs one extraction per model of the perturbed images). Measured on 2
# cores with `benchmarks/book.py`: the defaults' 35 perturbed extractions (5 levels x 7 models
# x 300 images) add 51-54 s to a cold build (`--chapter-prefill 06_perturbations`), and the
# chapter's own run adds nothing measurable to a warm one (101.1 s with it, 103.2 s without,
# `--chapter-cost 06_perturbations`); the extraction grows in proportion to levels x images:
#
# ```bash
# make book PARAMS="-p perturbation_images_per_category 20 -p perturbation_levels \
#     \"{'occlusion': [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 'clutter': [1, 2, 4, 6]}\""
# ```
#
# This chapter alone, from the repository root (its tables go to
# `book/_build/html/results/`; `papermill --help-notebook /tmp/06_perturbations.ipynb` lists
# every parameter with its default):
#
# ```bash
# .venv/bin/jupytext --to ipynb notebooks/06_perturbations.py -o /tmp/06_perturbations.ipynb
# PYTHONPATH=. .venv/bin/papermill /tmp/06_perturbations.ipynb /tmp/06_out.ipynb \
#     -p models lrm3,alexnet,bl,b -p perturbation_images_per_category 10
# ```
