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
# # Findings: which of the study's claims hold here?
#
# **In short:** every claim of the reference study as a testable statement, with our estimate
# and its 95 % interval, the untrained reference and a verdict, and a link to the evidence.
#
# The four result chapters each reproduce part of the reference study. This page puts the
# study's claims side by side, each as a testable statement with a rule that gives its
# verdict (the registry in `analysis_utils.claims`): accuracy rises with recurrence (its
# Table 1), local compaction or expansion and global separation (its mixed-model and
# permutation tests, Table 2), decision-stage orthogonality (Figure 2), convergence of models
# at the feature stage (Figure 3), and ConvRNN after the image is switched off (Figure 4).
#
# Every estimate is computed with the same functions and steps as the chapter that shows it,
# on the same features, so it is that chapter's number. Next to it stand the study's published
# value (the study's, on ImageNet with its checkpoints; never ours) and the same estimate for
# untrained networks of the same architectures (several seeds, on the same images): a claim
# that also holds for random weights says something about the architecture, not about what
# was learned.
#
# A verdict is **holds** when our value and its whole 95 % interval lie on the side the study
# states (for the permutation tests: the study's side with two-tailed p < 0.05), **reversed**
# when they lie on the other side, and **unclear** otherwise. The thresholds that make "near 1"
# and "near-orthogonal" testable (0.9) are ours, not the study's.

# %% tags=["parameters", "hide-input"]
scale = "mini"  # "mini" (64 px, the mini zoo) or "full" (official checkpoints)
weights = "trained"  # "trained" (mini zoo), "untrained" (random, seeded) or "official"
probe = "tiny"  # "tiny" (Tiny-ImageNet val) or "imagenet" (the study's ImageNet val probe)
data_dir = None  # folder with the probe images; None: $ANALYSIS_UTILS_DATA or the user cache
models = None  # None for every catalogue model, or a comma-separated list such as "lrm3,bl"
readouts = "penult,logits"
baseline = None  # per-model step overrides (see Methods); None keeps the states on each card
after = None
n_perm = 1000  # permutations of the global tests (the study used 10000: -p n_perm 10000)
seed = 0  # seed of untrained weights
device = "auto"
cache_dir = None  # the feature cache; None: $ANALYSIS_UTILS_CACHE or the user cache
images_per_category = None  # None: all 50; fewer for a quick run
plugins = None  # modules that register your own models, e.g. "examples.conv_gru" (see chapter 7)
n_boot = 1000  # bootstrap resamples of the categories for the intervals
untrained_seeds = "0,1,2"  # seeds of the untrained reference networks
reference_images_per_category = 50  # images per category of the untrained reference (at most the chapter's own; fewer is faster but not like for like)

# %% tags=["hide-input"]
from IPython.display import HTML, Markdown, display
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from analysis_utils import book, catalogue, claims, plotting, results

CHAPTER = "05_findings"  # names this chapter's result tables (book/_build/html/results/)
from analysis_utils.errors import AnalysisUtilsError

P = book.check_parameters(scale=scale, weights=weights, probe=probe, data_dir=data_dir,
                          models=models, readouts=readouts, baseline=baseline, after=after,
                          n_perm=n_perm, seed=seed, device=device, cache_dir=cache_dir,
                          images_per_category=images_per_category, plugins=plugins)
N_BOOT = book.check_count(n_boot, "n_boot")
SEEDS = book.check_seeds(untrained_seeds, "untrained_seeds")
if not set(P.models) & set(catalogue.BOOK_ORDER):
    raise AnalysisUtilsError(
        f"The study's claims concern its models ({', '.join(catalogue.BOOK_ORDER)}), and none "
        f"is among models ({', '.join(P.models)}); add some of them or use the default."
    )
probe_set = book.open_chapter(P)
REFERENCE_K = min(book.check_count(reference_images_per_category,
                                   "reference_images_per_category", minimum=2),
                  probe_set.images_per_category)
like_for_like = REFERENCE_K == probe_set.images_per_category
display(Markdown(
    f"Untrained reference: seeds {', '.join(map(str, SEEDS))} of every model, on "
    + ("the same images as ours." if like_for_like else
       f"the first {REFERENCE_K} of the {probe_set.images_per_category} images of each "
       "category. **Not like for like:** with fewer images the prototypes are noisier, which "
       "moves prototype distances and RDM correlations and widens intervals; use "
       f"`-p reference_images_per_category {probe_set.images_per_category}` to compare on the "
       "same images.")
    + (f" Seed {P.seed} is the chapter's own (untrained) models, so its column repeats ours."
       if P.untrained and P.seed in SEEDS else "")
))

# %% tags=["hide-input"]
features, extraction = book.load_features(P, probe_set)
display(book.features_summary(features, extraction))
reference_images, _ = book.reference_probe(probe_set, REFERENCE_K)
reference = book.untrained_reference(P, probe_set, SEEDS, REFERENCE_K, own_features=features)

# %% [markdown]
# ## The claims, one table
#
# One row per claim: the study's statement in our words, the study's published value, ours
# with its 95 % interval (and the states compared), the untrained reference (mean and range
# over the seeds, and each seed's verdict), our verdict, and the chapter section that shows
# it. The whole table, with every column of the registry (the rule behind each verdict, the
# p-values, the notes), is written as CSV and JSON with a sidecar of the parameters, weights
# and software that produced it; the links are below the table.

# %% tags=["hide-input"]
table = claims.evaluate_all(features, reference, labels=probe_set.labels,
                            class_index=probe_set.class_index(P.scale),
                            untrained_labels=reference_images.labels, baseline=P.baseline,
                            after=P.after, n_perm=P.n_perm, n_boot=N_BOOT)
written = results.write_table(
    table, CHAPTER, "claims", records=True, extraction=extraction,
    parameters={"chapter": P, "n_boot": N_BOOT, "untrained_seeds": SEEDS,
                "reference_images_per_category": REFERENCE_K})
NOTE = P.weights_label()
display(Markdown(f"**The study's claims, tested** ({NOTE}; {P.n_perm} permutations, {N_BOOT} "
                 "bootstrap resamples)."))
display(claims.findings_table(table).style.hide(axis="index"))
display(HTML(results.links_html([written])))

# %% [markdown]
# ## Verdicts at a glance
#
# The verdict of every claim for our models and for each untrained seed. A row whose colours
# agree across all columns is a verdict that training did not change.

# %% tags=["hide-input"]
matrix = claims.verdict_matrix(table)  # one row per claim: ours, then each untrained seed
COLOURS = {"holds": "#1b9e77", "reversed": "#d95f02", "unclear": "#dddddd",
           claims.NOT_EVALUATED: "#ffffff"}
codes = matrix.apply(lambda column: column.map(list(COLOURS).index)).to_numpy()
fig, ax = plotting.plt.subplots(figsize=(3 + 0.9 * matrix.shape[1], 1 + 0.25 * len(matrix)))
ax.imshow(codes, cmap=ListedColormap(list(COLOURS.values())), vmin=-0.5,
          vmax=len(COLOURS) - 0.5, aspect="auto")
ax.set_xticks(range(matrix.shape[1]), matrix.columns)
ax.set_yticks(range(len(matrix)), matrix.index, fontsize=8)
ax.xaxis.tick_top()
ax.set_xticks([x - 0.5 for x in range(1, matrix.shape[1])], minor=True)
ax.set_yticks([y - 0.5 for y in range(1, len(matrix))], minor=True)
ax.grid(which="minor", color="white", linewidth=1)
ax.grid(which="major", visible=False)
ax.tick_params(which="both", length=0)
ax.legend(handles=[Patch(facecolor=c, edgecolor="#888888", label=v) for v, c in COLOURS.items()],
          loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
ax.set_title(plotting.titled("Verdicts: ours and each untrained seed", NOTE), fontsize=10,
             loc="left", pad=28)
display(fig)
plotting.plt.close(fig)

# %% [markdown]
# ## What holds at this scale and what does not
#
# The sentences below are drawn from the table above, so they change with the weights, the
# scale and the parameters this page was rendered with.

# %% tags=["hide-input"]
display(Markdown(claims.discussion(table, scale=P.scale, weights=P.weights,
                                      probe=P.probe, seed=P.seed)))

# %% [markdown]
# ## Rerun this chapter
#
# With other parameters, for the whole book (every chapter gets the same `-p` pairs; add
# `-p weights untrained` where the mini zoo is not trained):
#
# ```bash
# make book PARAMS="-p models lrm3,lra3,bl,cornet_rt,convrnn,alexnet,b -p n_perm 10000"
# ```
#
# This chapter alone, from the repository root (its tables go to
# `book/_build/html/results/`; `papermill --help-notebook /tmp/05_findings.ipynb` lists every
# parameter with its default):
#
# ```bash
# .venv/bin/jupytext --to ipynb notebooks/05_findings.py -o /tmp/05_findings.ipynb
# PYTHONPATH=. .venv/bin/papermill /tmp/05_findings.ipynb /tmp/05_out.ipynb \
#     -p n_perm 1000 -p n_boot 1000 -p untrained_seeds 0,1,2
# ```
