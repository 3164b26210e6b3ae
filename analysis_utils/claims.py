"""The reference study's claims as testable statements, each with a verdict rule in code.

A :class:`Claim` is one statement of the study about one model (or about all models at once):
an id, the statement in our words, the study's published number(s) (labelled as the study's,
never ours), the readout it concerns, the chapter that shows it, an estimate function and a
verdict rule. The estimate function takes the features the chapters get from the feature cache
(``{model: {readout: Tensor[T, N, D]}}``) and returns our value with a 95 % interval. It is
built only from the functions the chapters call, with the chapters' steps, so a claim's value
is the chapter's number for the same features:

- Table 1 (chapter 1): :func:`geometry.logit_accuracy` and
  :func:`geometry.nearest_centroid_accuracy`, baseline vs after; interval: bootstrap over
  categories of the per-category change (:func:`stats.bootstrap_ci`).
- Local test (chapter 2): :func:`stats.local_lme` on
  :func:`geometry.exemplar_prototype_distances`; interval: the LME's Wald 95 % interval.
- Global test (chapter 2): :func:`stats.permutation_between` (seed 42); the interval shown is
  the central 95 % of the permutation null, and the verdict uses the study's two-tailed p.
- Proto RDM ρ (chapter 2, Table 2): :func:`geometry.pair_metrics`; interval: bootstrap over
  categories with :func:`rsa.between_model_rho_bootstrap` on the two states' RDMs.
- Figure 2 (chapter 3): :func:`geometry.between_prototype_summary`; interval: bootstrap over
  categories of the mean over pairs of distinct categories (the resampling convention of
  :func:`rsa.between_model_rho_bootstrap`: a pair of positions whose categories are a and b
  contributes ``rdm[a, b]``; pairs of a category with its own copy are dropped).
- Figure 3 (chapter 4): :func:`rsa.between_model_rho_bootstrap` at the feature stage minus at
  the decision stage, every model at its after step (its only step if feedforward); with the
  cards' after steps (the last steps) this is chapter 4's claim test at τ = 1.
- ConvRNN image-off supplement (chapter 2, Figure 4): the local and global tests between the
  card's ``image_off`` step and the after step, at the logits.

Verdicts are "holds", "reversed" or "unclear" (:class:`IntervalRule`, :class:`PermutationRule`);
a claim whose model, readout or step is absent from the features, or whose estimate fails on
degenerate features, is "not evaluated" with the reason in ``note``. The thresholds that turn
"near 1" and "near-orthogonal" into testable statements (0.9) are ours, not the study's.

:func:`evaluate_all` evaluates every claim (and, given untrained features, the same estimates
for each seed as a reference) and returns one row per claim as a pandas DataFrame.

The findings chapter shows that table through :func:`findings_table` (one row per claim, with a
link to the chapter section that shows it, :func:`chapter_href`), :func:`verdict_matrix` (the
verdicts of ours and of each untrained seed) and :func:`discussion` (sentences drawn from the
verdicts, never fixed text; with untrained weights it says first that they mean nothing yet).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
import torch

from . import catalogue, geometry, rsa, stats
from .errors import AnalysisUtilsError, choice_error

VERDICTS = ("holds", "reversed", "unclear")
NOT_EVALUATED = "not evaluated"

#: the study's recurrent models, in its order
RECURRENT_MODELS = ("lrm3", "lra3", "bl", "cornet_rt", "convrnn")

#: the study's readout for its headline tests: logits, penult for CORnet-RT (whose baseline
#: logits are at chance); equals each card's ``headline_readout``
HEADLINE_READOUT = {"lrm3": "logits", "lra3": "logits", "bl": "logits",
                    "cornet_rt": "penult", "convrnn": "logits"}

#: ours, not the study's: "Proto RDM ρ near 1" means ρ above this
RHO_NEAR_ONE = 0.9
#: ours, not the study's: "near-orthogonal" means a mean raw between-prototype distance above this
NEAR_ORTHOGONAL = 0.9
#: significance level of the permutation verdicts
ALPHA = 0.05

#: the seed of the study's permutation test, also used for the bootstrap draws (as chapter 4)
DEFAULT_SEED = 42


# --------------------------------------------------------------------------------------------
# estimates and verdict rules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Our value of a claim's quantity, its 95 % interval and how the interval was made."""

    value: float
    ci_low: float
    ci_high: float
    interval: str  # for example "bootstrap over categories (1000 resamples)"
    p_value: float = float("nan")  # only for claims judged by a test's p-value
    detail: str = ""  # which states were compared, for example "pass 1 → pass 3"


def _side(value: float, reference: float) -> str:
    if value > reference:
        return "above"
    if value < reference:
        return "below"
    return "at"


@dataclass(frozen=True)
class IntervalRule:
    """The claim holds when the value and its whole 95 % interval lie on the expected side of
    ``reference`` ("above" or "below"), is reversed when both lie on the other side, and is
    unclear otherwise (the interval contains the reference, or is not finite)."""

    expected: str  # "above" or "below"
    reference: float = 0.0

    def __post_init__(self):
        if self.expected not in ("above", "below"):
            raise choice_error("expected side", self.expected, ("above", "below"))

    def verdict(self, estimate: Estimate) -> str:
        """'holds', 'reversed' or 'unclear' for ``estimate``."""
        bounds = (estimate.value, estimate.ci_low, estimate.ci_high)
        if not all(np.isfinite(bounds)):
            return "unclear"
        sides = {_side(b, self.reference) for b in bounds}
        if sides == {self.expected}:
            return "holds"
        if sides == {"below" if self.expected == "above" else "above"}:
            return "reversed"
        return "unclear"

    def describe(self) -> str:
        other = "below" if self.expected == "above" else "above"
        return (f"holds if the value and its 95 % interval lie {self.expected} "
                f"{self.reference:g}; reversed if they lie {other}; otherwise unclear")


@dataclass(frozen=True)
class PermutationRule:
    """The claim holds when the observed statistic lies on the expected side of 0 ("above" or
    "below") and the study's two-tailed permutation p-value is below ``alpha``; reversed when it
    lies on the other side with p below ``alpha``; unclear otherwise."""

    expected: str  # "above" or "below"
    alpha: float = ALPHA

    def __post_init__(self):
        if self.expected not in ("above", "below"):
            raise choice_error("expected side", self.expected, ("above", "below"))

    def verdict(self, estimate: Estimate) -> str:
        """'holds', 'reversed' or 'unclear' for ``estimate``."""
        if not (np.isfinite(estimate.value) and np.isfinite(estimate.p_value)):
            return "unclear"
        if estimate.p_value >= self.alpha:
            return "unclear"
        side = _side(estimate.value, 0.0)
        if side == self.expected:
            return "holds"
        return "reversed" if side != "at" else "unclear"

    def describe(self) -> str:
        other = "below" if self.expected == "above" else "above"
        return (f"holds if the statistic is {self.expected} 0 with two-tailed permutation "
                f"p < {self.alpha:g}; reversed if {other} 0 with p < {self.alpha:g}; "
                "otherwise unclear")


# --------------------------------------------------------------------------------------------
# the features a claim is evaluated on
# --------------------------------------------------------------------------------------------


class MissingInput(AnalysisUtilsError):
    """A claim's model, readout or step is not in the features: the claim is not evaluated."""


@dataclass(frozen=True)
class ClaimInputs:
    """The features of one run and the settings every estimate uses.

    ``features``: ``{model: {readout: Tensor[T, N, D]}}`` as the chapters get them from
    ``extract.features``; ``labels``: [N] category numbers 0..C-1 (probe order);
    ``class_index``: the classifier output of each category (``probe.class_index(scale)``), or
    None when the probe has none (logit accuracy is then not evaluated); ``baseline`` /
    ``after``: per-model step overrides (1-based), as the chapters' parameters.
    :func:`evaluate_all` checks all of these before building one.
    """

    features: Mapping[str, Mapping[str, torch.Tensor]]
    labels: np.ndarray
    class_index: torch.Tensor | None = None
    baseline: Mapping[str, int] = field(default_factory=dict)
    after: Mapping[str, int] = field(default_factory=dict)
    n_perm: int = 1000
    n_boot: int = 1000
    seed: int = DEFAULT_SEED

    def readout(self, model: str, readout: str) -> torch.Tensor:
        """The features [T, N, D] of ``model`` at ``readout``, or MissingInput."""
        if model not in self.features:
            raise MissingInput(f"{model} is not among this run's models.")
        if readout not in self.features[model]:
            raise MissingInput(f"{model}'s {readout} readout is not among this run's readouts.")
        return self.features[model][readout]

    def step(self, model: str, state: str) -> int:
        """The 1-based step of ``state`` ("baseline", "after" or another named state on the card)
        for ``model``: the override if given, else the card's."""
        overrides = {"baseline": self.baseline, "after": self.after}.get(state, {})
        if model in overrides:
            return int(overrides[model])
        card = catalogue.card(model)
        if state == "after":
            return card.after
        if state not in card.states:
            raise MissingInput(f"{card.display_name}'s card names no {state!r} step.")
        return card.states[state]

    def state(self, model: str, readout: str, state: str) -> torch.Tensor:
        """The features [N, D] of ``model`` at ``readout`` and named ``state``."""
        X = self.readout(model, readout)
        step = self.step(model, state)
        if step > X.shape[0]:
            raise MissingInput(
                f"{model}'s {readout} has {X.shape[0]} steps, but its {state} step is {step}."
            )
        return X[step - 1]

    def step_label(self, model: str, state: str) -> str:
        """How a reader sees the step of ``state``: 'pass 3' or 't=17'."""
        return catalogue.card(model).step_label(self.step(model, state))

    @property
    def n_categories(self) -> int:
        """C, the number of distinct labels."""
        return int(np.unique(self.labels).size)

    def draws(self) -> np.ndarray:
        """The bootstrap resamples of the categories [n_boot, C], drawn as chapter 4 draws
        them: ``default_rng(seed).integers(0, C, size=(n_boot, C))``."""
        rng = np.random.default_rng(self.seed)
        return rng.integers(0, self.n_categories, size=(self.n_boot, self.n_categories))


def _quantiles(values: np.ndarray) -> tuple[float, float]:
    """The central 95 % of ``values`` (NaN-skipping); NaN when every value is NaN."""
    values = np.asarray(values, dtype=np.float64)
    if not np.any(np.isfinite(values)):
        return float("nan"), float("nan")
    low, high = np.nanquantile(values, [0.025, 0.975])
    return float(low), float(high)


def _boot_label(inputs: ClaimInputs) -> str:
    return f"bootstrap over categories ({inputs.n_boot} resamples)"


# --------------------------------------------------------------------------------------------
# estimate functions (each calls the chapter's own function for its value)
# --------------------------------------------------------------------------------------------


def _per_category_top1(scores: torch.Tensor, target: torch.Tensor,
                       category: np.ndarray) -> np.ndarray:
    """Top-1 (%) per category and step [C, T] of ``scores`` [T, N, K] against ``target`` [N],
    by the same scoring code as the accuracy functions (``geometry._topk_hits``)."""
    rows = []
    for c in np.unique(category):
        keep = torch.from_numpy(np.flatnonzero(category == c))
        rows.append(geometry._topk_hits(scores[:, keep], target[keep])[0].numpy())
    return np.stack(rows)


def accuracy_change(inputs: ClaimInputs, model: str, source: str) -> Estimate:
    """After minus baseline top-1 (%, percentage points) of ``model`` (the study's Table 1).

    ``source="logits"``: :func:`geometry.logit_accuracy` of the logits; ``"nearest_centroid"``:
    :func:`geometry.nearest_centroid_accuracy` of the penult (100-way at the study's probe).
    Interval: bootstrap over categories of the per-category change (the probe is balanced, so
    the mean of the per-category accuracies is the accuracy).
    """
    if source not in ("logits", "nearest_centroid"):
        raise choice_error("accuracy source", source, ("logits", "nearest_centroid"))
    readout = "logits" if source == "logits" else "penult"
    X = torch.stack([inputs.state(model, readout, "baseline"),
                     inputs.state(model, readout, "after")])
    if source == "logits":
        if inputs.class_index is None:
            raise MissingInput("The probe has no classifier index at this scale, so logit "
                               "accuracy is not defined.")
        top1 = geometry.logit_accuracy(X, inputs.labels, inputs.class_index)["top1"]
        scores = X
        target = torch.as_tensor(inputs.class_index)[torch.from_numpy(inputs.labels)]
    else:
        top1 = geometry.nearest_centroid_accuracy(X, inputs.labels)["top1"]
        lab = geometry.as_labels(inputs.labels, X.shape[1])
        scores = geometry._nearest_centroid_scores(X, lab, False)
        target = lab.index
    per_category = _per_category_top1(scores, target, inputs.labels)
    low, high = stats.bootstrap_ci(per_category[:, 1] - per_category[:, 0],
                                   n_boot=inputs.n_boot, seed=inputs.seed)
    return Estimate(float(top1[1] - top1[0]), low, high, _boot_label(inputs),
                    detail=f"{inputs.step_label(model, 'baseline')} {top1[0]:.2f} % → "
                           f"{inputs.step_label(model, 'after')} {top1[1]:.2f} %")


def local_change(inputs: ClaimInputs, model: str, readout: str, before: str = "baseline",
                 after: str = "after") -> Estimate:
    """The study's local test: the LME intercept of the per-exemplar change in
    exemplar-to-prototype cosine distance from state ``before`` to ``after`` (negative:
    compaction), with its Wald 95 % interval and p-value (:func:`stats.local_lme`)."""
    d_before = geometry.exemplar_prototype_distances(inputs.state(model, readout, before),
                                                     inputs.labels)
    d_after = geometry.exemplar_prototype_distances(inputs.state(model, readout, after),
                                                    inputs.labels)
    result = stats.local_lme(d_before, d_after, inputs.labels)
    return Estimate(result["beta"], result["ci_low"], result["ci_high"], "LME Wald 95 %",
                    p_value=result["p"],
                    detail=f"{readout}, {inputs.step_label(model, before)} → "
                           f"{inputs.step_label(model, after)}")


def global_change(inputs: ClaimInputs, model: str, readout: str, before: str = "baseline",
                  after: str = "after") -> Estimate:
    """The study's global test: "Δ Between-Proto (%)" from ``before`` to ``after`` and its paired
    permutation test (:func:`stats.permutation_between`, seed ``inputs.seed``); the interval is
    the central 95 % of the null, the p-value the study's two-tailed one (no +1)."""
    result = stats.permutation_between(inputs.state(model, readout, before),
                                       inputs.state(model, readout, after), inputs.labels,
                                       n_perm=inputs.n_perm, seed=inputs.seed)
    low, high = _quantiles(result.null)
    return Estimate(result.observed, low, high,
                    f"permutation null, central 95 % ({inputs.n_perm} permutations)",
                    p_value=result.p_two_tailed,
                    detail=f"{readout}, {inputs.step_label(model, before)} → "
                           f"{inputs.step_label(model, after)}")


def rdm_stability(inputs: ClaimInputs, model: str, readout: str) -> Estimate:
    """"Proto RDM ρ" between the baseline and after states (:func:`geometry.pair_metrics`);
    interval: bootstrap over categories of the Spearman ρ between the two raw-prototype RDMs
    (:func:`rsa.between_model_rho_bootstrap`)."""
    Xb = inputs.state(model, readout, "baseline")
    Xa = inputs.state(model, readout, "after")
    value = geometry.pair_metrics(Xb, Xa, inputs.labels)["Proto RDM ρ"]
    tagged = [rsa.tagged_rdm(model, readout, inputs.step(model, "baseline"), Xb, inputs.labels),
              rsa.tagged_rdm(model, readout, inputs.step(model, "after"), Xa, inputs.labels)]
    _observed, boot = rsa.between_model_rho_bootstrap(tagged, inputs.draws())
    low, high = _quantiles(boot)
    return Estimate(float(value), low, high, _boot_label(inputs),
                    detail=f"{readout}, {inputs.step_label(model, 'baseline')} vs "
                           f"{inputs.step_label(model, 'after')}")


def pair_mean_bootstrap(rdm, draws: np.ndarray) -> np.ndarray:
    """The mean of a symmetric RDM [C, C] over pairs of distinct categories, per resample.

    For a draw (C category indices), every pair of positions p < q whose categories a != b
    contributes ``rdm[a, b]``, so category pair (a, b) has weight ``n_a n_b``; pairs of a
    category with its own copy are dropped (as :func:`rsa.between_model_rho_bootstrap`). A
    draw of the categories 0..C-1 once each gives the mean of the upper triangle. Returns
    float64 [B] (NaN for a draw of a single category).
    """
    rdm = np.asarray(torch.as_tensor(rdm).detach().cpu().double())
    n = rdm.shape[0]
    rows, cols = np.triu_indices(n, k=1)
    counts = np.stack([np.bincount(draw, minlength=n) for draw in np.asarray(draws)])
    weights = counts[:, rows] * counts[:, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights * rdm[rows, cols]).sum(axis=1) / weights.sum(axis=1)


def _raw_rdm(X, labels) -> torch.Tensor:
    return geometry.cosine_rdm(geometry.prototypes(X, labels))


def between_level(inputs: ClaimInputs, model: str, state: str = "after") -> Estimate:
    """The mean raw between-prototype cosine distance of the logits at ``state`` (the study's
    Figure 2 summary, :func:`geometry.between_prototype_summary`; near 1: near-orthogonal);
    interval: bootstrap over categories (:func:`pair_mean_bootstrap`)."""
    X = inputs.state(model, "logits", state)
    summary = geometry.between_prototype_summary(X, inputs.labels)
    low, high = _quantiles(pair_mean_bootstrap(_raw_rdm(X, inputs.labels), inputs.draws()))
    return Estimate(summary["mean"], low, high, _boot_label(inputs),
                    detail=f"logits, {inputs.step_label(model, state)}, "
                           f"SD {summary['sd']:.3f}")


def between_growth(inputs: ClaimInputs, model: str) -> Estimate:
    """After minus baseline mean raw between-prototype cosine distance of the logits (Figure 2);
    interval: paired bootstrap over categories of the change (:func:`pair_mean_bootstrap` of
    the difference of the two RDMs)."""
    Xb = inputs.state(model, "logits", "baseline")
    Xa = inputs.state(model, "logits", "after")
    before = geometry.between_prototype_summary(Xb, inputs.labels)["mean"]
    after = geometry.between_prototype_summary(Xa, inputs.labels)["mean"]
    change = _raw_rdm(Xa, inputs.labels) - _raw_rdm(Xb, inputs.labels)
    low, high = _quantiles(pair_mean_bootstrap(change, inputs.draws()))
    return Estimate(after - before, low, high, _boot_label(inputs),
                    detail=f"logits, {inputs.step_label(model, 'baseline')} {before:.3f} → "
                           f"{inputs.step_label(model, 'after')} {after:.3f}")


def stage_convergence(inputs: ClaimInputs) -> Estimate:
    """Mean Spearman ρ between the RDMs of different models at the feature stage (penult) minus
    at the decision stage (logits), every model at its after step (its only step if
    feedforward); interval: bootstrap over categories, the same resamples for both stages
    (:func:`rsa.between_model_rho_bootstrap`). Positive: the models agree more at the feature
    stage. Uses the study's models (``catalogue.BOOK_ORDER``; not a user's own) that have both
    readouts; needs at least 3."""
    models = [name for name in catalogue.BOOK_ORDER if name in inputs.features
              and {"penult", "logits"} <= set(inputs.features[name])]
    if len(models) < 3:
        raise MissingInput(
            f"Comparing models needs at least 3 models with both readouts, got {len(models)}."
        )
    draws = inputs.draws()
    observed, boot = {}, {}
    for readout in ("penult", "logits"):
        tagged = [rsa.tagged_rdm(name, readout, inputs.step(name, "after"),
                                 inputs.state(name, readout, "after"), inputs.labels)
                  for name in models]
        observed[readout], boot[readout] = rsa.between_model_rho_bootstrap(tagged, draws)
    low, high = _quantiles(boot["penult"] - boot["logits"])
    return Estimate(observed["penult"] - observed["logits"], low, high, _boot_label(inputs),
                    detail=f"mean ρ penult {observed['penult']:.3f}, logits "
                           f"{observed['logits']:.3f}; models {', '.join(models)}")


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One statement of the study, testable on any features."""

    id: str
    group: str  # the study's table or figure the claim comes from
    statement: str  # the study's sentence, in our words
    study: str  # the study's published value(s), as printed in its notebook or paper
    study_value: float  # the study's number for the same quantity as ``estimate`` (NaN: none)
    models: tuple[str, ...]  # () means every model of the run
    readout: str
    chapter: str  # the book chapter that shows it
    section: str  # the section of that chapter
    rule: IntervalRule | PermutationRule
    estimate: Callable[[ClaimInputs], Estimate]
    label: str = ""  # its short name in a sentence, unique in the registry: "BL (separation)"


_NAMES = {"lrm3": "LRM3", "lra3": "LRA3", "bl": "BL", "cornet_rt": "CORnet-RT",
          "convrnn": "ConvRNN", "alexnet": "AlexNet", "b": "B"}

#: the study's Table 1 (ImageNet val, 100 x 50): top-1 (%) at (baseline, after)
_STUDY_LOGITS_TOP1 = {"lrm3": (57.36, 58.98), "lra3": (57.74, 58.48), "bl": (51.06, 57.02),
                      "cornet_rt": (0.30, 56.20), "convrnn": (67.96, 70.90)}
_STUDY_NC_TOP1 = {"lrm3": (80.60, 83.20), "lra3": (80.86, 82.68), "bl": (75.98, 83.44),
                  "cornet_rt": (52.52, 75.90), "convrnn": (90.04, 90.14)}
#: the study's local LME: (beta, 95 % CI low, high, p)
_STUDY_LME = {"lrm3": (-0.031038, -0.035190, -0.026886, "1.3e-48"),
              "lra3": (-0.021206, -0.024202, -0.018211, "8.8e-44"),
              "bl": (0.014048, 0.010569, 0.017527, "2.5e-15"),
              "cornet_rt": (-0.100120, -0.104020, -0.096221, "0 (underflow)"),
              "convrnn": (0.023382, 0.020276, 0.026488, "2.8e-49")}
#: the study's global permutation test: obs_pct ("Δ Between-Proto (%)"), p two-tailed 0.0
_STUDY_PERMUTATION = {"lrm3": 0.207025, "lra3": 0.181170, "bl": 3.904939,
                      "cornet_rt": 3.380208, "convrnn": 2.125149}
#: the study's Table 2 "Proto RDM ρ"
_STUDY_RHO = {"lrm3": 0.955, "lra3": 0.973, "bl": 0.977, "cornet_rt": 0.804, "convrnn": 0.978}
#: the study's Figure 2 (logits): between-prototype mean ± SD at the state compared
_STUDY_BETWEEN = {"lrm3": (0.959, 0.115, "after"), "lra3": (0.960, 0.119, "after"),
                  "bl": (0.603, 0.231, "after"), "b": (0.519, 0.230, "baseline")}


def _table1_claims() -> list[Claim]:
    claims = []
    for source, table, readout, label, kind in (
            ("logits", _STUDY_LOGITS_TOP1, "logits", "logit top-1", "logit"),
            ("nearest_centroid", _STUDY_NC_TOP1, "penult", "nearest-centroid top-1 (penult)",
             "nearest-centroid")):
        for model in RECURRENT_MODELS:
            before, after = table[model]
            short = "logits" if source == "logits" else "nc"
            claims.append(Claim(
                id=f"accuracy-{short}-{model}",
                label=f"{_NAMES[model]} ({kind} accuracy)",
                group="Table 1: accuracy",
                statement=f"Recurrence raises {_NAMES[model]}'s {label} from the baseline to "
                          "the after step.",
                study=f"{before:.2f} → {after:.2f} % ({after - before:+.2f} points)",
                study_value=round(after - before, 2),
                models=(model,), readout=readout,
                chapter="01_model_catalogue", section="Table 1: the two named states",
                rule=IntervalRule("above"),
                estimate=partial(accuracy_change, model=model, source=source)))
    return claims


def _dynamics_claims() -> list[Claim]:
    claims = []
    for model in RECURRENT_MODELS:
        readout = HEADLINE_READOUT[model]
        beta, low, high, p = _STUDY_LME[model]
        compaction = beta < 0
        claims.append(Claim(
            id=f"local-{model}",
            label=f"{_NAMES[model]} ({'compaction' if compaction else 'expansion'})",
            group="Local test (LME)",
            statement=f"{_NAMES[model]}'s exemplars move "
                      + ("towards their prototype (local compaction)" if compaction else
                         "away from their prototype (local expansion)")
                      + f" from the baseline to the after step ({readout}).",
            study=f"β = {beta:+.6f} [{low:+.6f}, {high:+.6f}], p = {p}",
            study_value=beta, models=(model,), readout=readout,
            chapter="02_dynamics", section="Local test: mixed model of the per-exemplar change",
            rule=IntervalRule("below" if compaction else "above"),
            estimate=partial(local_change, model=model, readout=readout)))
    for model in RECURRENT_MODELS:
        readout = HEADLINE_READOUT[model]
        observed = _STUDY_PERMUTATION[model]
        claims.append(Claim(
            id=f"global-{model}",
            label=f"{_NAMES[model]} (separation)",
            group="Global test (permutation)",
            statement=f"{_NAMES[model]}'s centred prototypes move apart (global separation "
                      f"increases) from the baseline to the after step ({readout}).",
            study=f"Δ Between-Proto {observed:+.6f} %, p two-tailed 0.0 (10000 permutations)",
            study_value=observed, models=(model,), readout=readout,
            chapter="02_dynamics",
            section="Global test: paired permutation test of Δ Between-Proto (%)",
            rule=PermutationRule("above"),
            estimate=partial(global_change, model=model, readout=readout)))
    for model in RECURRENT_MODELS:
        readout = HEADLINE_READOUT[model]
        rho = _STUDY_RHO[model]
        stable = model != "cornet_rt"
        claims.append(Claim(
            id=f"rdm-rho-{model}",
            label=f"{_NAMES[model]} ({'stable' if stable else 'reorganised'} RDM)",
            group="Table 2: Proto RDM ρ",
            statement=(f"{_NAMES[model]} keeps its global category structure: the prototype "
                       f"RDMs of the baseline and after steps correlate near 1 "
                       f"(ρ > {RHO_NEAR_ONE:g}, our threshold)." if stable else
                       f"{_NAMES[model]}, unlike the other four, reorganises its global "
                       f"category structure: baseline and after prototype RDMs correlate "
                       f"below {RHO_NEAR_ONE:g} (our threshold)."),
            study=f"ρ = {rho:.3f}", study_value=rho, models=(model,), readout=readout,
            chapter="02_dynamics",
            section="Table 2: baseline vs after at each model's headline readout",
            rule=IntervalRule("above" if stable else "below", RHO_NEAR_ONE),
            estimate=partial(rdm_stability, model=model, readout=readout)))
    return claims


def _orthogonality_claims() -> list[Claim]:
    claims = []
    for model, (mean, sd, state) in _STUDY_BETWEEN.items():
        orthogonal = mean > NEAR_ORTHOGONAL
        claims.append(Claim(
            id=f"orthogonal-{model}",
            label=f"{_NAMES[model]} ({'' if orthogonal else 'not '}near-orthogonal)",
            group="Figure 2: between-prototype distances",
            statement=f"{_NAMES[model]}'s decision-stage prototypes ({state} step) are "
                      + ("" if orthogonal else "not ")
                      + "near-orthogonal: their mean raw between-prototype cosine distance "
                      + ("exceeds" if orthogonal else "stays below")
                      + f" {NEAR_ORTHOGONAL:g} (our threshold).",
            study=f"{mean:.3f} ± {sd:.3f} ({state})", study_value=mean, models=(model,),
            readout="logits", chapter="03_orthogonality",
            section="Figure 2: the between-prototype distances per model and state",
            rule=IntervalRule("above" if orthogonal else "below", NEAR_ORTHOGONAL),
            estimate=partial(between_level, model=model, state=state)))
    claims.append(Claim(
        id="separation-grows-cornet_rt",
        label="CORnet-RT (growing distances)",
        group="Figure 2: between-prototype distances",
        statement="CORnet-RT's decision-stage prototypes move apart from the baseline to the "
                  "after step (the mean raw between-prototype distance grows).",
        study="0.397 ± 0.200 → 0.807 ± 0.375 (+0.410)", study_value=0.410,
        models=("cornet_rt",), readout="logits", chapter="03_orthogonality",
        section="Figure 2: the between-prototype distances per model and state",
        rule=IntervalRule("above"), estimate=partial(between_growth, model="cornet_rt")))
    return claims


def _rsa_claims() -> list[Claim]:
    return [Claim(
        id="rsa-feature-vs-decision",
        label="the study's models (feature-stage convergence)",
        group="Figure 3: cross-model RSA",
        statement="Models converge at the feature stage and diverge at the decision stage: "
                  "the RDMs of different models agree more at the penult than at the logits.",
        study="stated in words only (the ρ matrices are published as a figure): \"Models "
              "converge at the feature stage but split into families at the decision stage.\"",
        study_value=float("nan"), models=(), readout="penult, logits",
        chapter="04_cross_model_rsa",
        section="Testing the claim: convergence at the feature stage, divergence at the "
                "decision stage",
        rule=IntervalRule("above"), estimate=stage_convergence)]


def _image_off_claims() -> list[Claim]:
    section = "Figure 4: ConvRNN after the image is switched off"
    return [
        Claim(id="image-off-clusters-convrnn", group="Figure 4: ConvRNN image off",
              label="ConvRNN (image-off expansion)",
              statement="After the image is switched off, ConvRNN's clusters expand: from the "
                        "last image step to the final step the exemplars move away from their "
                        "prototypes (logits).",
              study="Δ Cluster Size +0.0456 (+26.8 %), t=12 → t=17", study_value=0.04561,
              models=("convrnn",), readout="logits", chapter="02_dynamics", section=section,
              rule=IntervalRule("above"),
              estimate=partial(local_change, model="convrnn", readout="logits",
                               before="image_off")),
        Claim(id="image-off-separation-convrnn", group="Figure 4: ConvRNN image off",
              label="ConvRNN (image-off separation)",
              statement="After the image is switched off, ConvRNN's centred prototypes move "
                        "apart (logits).",
              study="Δ Between-Proto +14.6 %, t=12 → t=17", study_value=14.617,
              models=("convrnn",), readout="logits", chapter="02_dynamics", section=section,
              rule=PermutationRule("above"),
              estimate=partial(global_change, model="convrnn", readout="logits",
                               before="image_off")),
    ]


CLAIMS: tuple[Claim, ...] = tuple(_table1_claims() + _dynamics_claims()
                                  + _orthogonality_claims() + _rsa_claims()
                                  + _image_off_claims())


def ids() -> list[str]:
    """The ids of every registered claim, in the registry's order."""
    return [claim.id for claim in CLAIMS]


def get(claim_id: str) -> Claim:
    """The claim with id ``claim_id``."""
    for claim in CLAIMS:
        if claim.id == claim_id:
            return claim
    raise choice_error("claim id", claim_id, ids())


def registry_table() -> pd.DataFrame:
    """Every claim without evaluating it: id, group, statement, study's value, rule, chapter."""
    return pd.DataFrame([{"id": c.id, "group": c.group, "models": ", ".join(c.models) or "all",
                          "readout": c.readout, "statement": c.statement, "study": c.study,
                          "rule": c.rule.describe(), "chapter": c.chapter,
                          "section": c.section} for c in CLAIMS])


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


def evaluate(claim: Claim, inputs: ClaimInputs) -> dict:
    """One claim on one run: ``dict(estimate, ci_low, ci_high, interval, p_value, detail,
    verdict, note)``. A missing model, readout or step, or an estimate that fails on these
    features, gives the verdict "not evaluated", NaN values and the reason in ``note``."""
    try:
        estimate = claim.estimate(inputs)
    except AnalysisUtilsError as error:
        return {"estimate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                "interval": "", "p_value": float("nan"), "detail": "",
                "verdict": NOT_EVALUATED, "note": str(error)}
    return {"estimate": float(estimate.value), "ci_low": float(estimate.ci_low),
            "ci_high": float(estimate.ci_high), "interval": estimate.interval,
            "p_value": float(estimate.p_value), "detail": estimate.detail,
            "verdict": claim.rule.verdict(estimate), "note": ""}


def _check_features(features, labels, what: str) -> tuple[dict, np.ndarray]:
    """``features`` as ``{model: {readout: float tensor [T, N, D]}}`` and labels as int64 [N]."""
    if not isinstance(features, Mapping) or not features:
        raise AnalysisUtilsError(
            f"{what} must be a non-empty dict {{model: {{readout: Tensor[T, N, D]}}}} as the "
            f"chapters get from extract.features, got {type(features).__name__}."
        )
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise AnalysisUtilsError(
            f"The labels of {what} must be a 1-D integer sequence (probe.labels), got shape "
            f"{labels.shape} and dtype {labels.dtype}."
        )
    checked = {}
    for model, readouts in features.items():
        if not isinstance(readouts, Mapping):
            raise AnalysisUtilsError(
                f"{what}[{model!r}] must be a dict {{readout: Tensor[T, N, D]}}, got "
                f"{type(readouts).__name__}."
            )
        checked[model] = {}
        for readout, X in readouts.items():
            X = geometry.as_features(X, f"{what}[{model!r}][{readout!r}]")
            if X.dim() != 3 or X.shape[1] != labels.shape[0]:
                raise AnalysisUtilsError(
                    f"{what}[{model!r}][{readout!r}] must be [T, N, D] with N = "
                    f"{labels.shape[0]} (one row per label), got shape {tuple(X.shape)}."
                )
            checked[model][readout] = X
    return checked, labels.astype(np.int64)


def _check_overrides(value, what: str, features: Mapping) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AnalysisUtilsError(
            f"{what} must be a dict {{model: step}} (1-based), as ChapterParameters.{what}, "
            f"got {type(value).__name__}."
        )
    checked = {}
    for model, step in value.items():
        if model not in features:
            raise AnalysisUtilsError(
                f"{what} names {model!r}, which is not among the features' models "
                f"({', '.join(features)})."
            )
        n_steps = min(X.shape[0] for X in features[model].values())
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) \
                or not 1 <= step <= n_steps:
            raise AnalysisUtilsError(
                f"{what} gives {model!r} the step {step!r}, but its features have steps "
                f"1..{n_steps}."
            )
        checked[model] = int(step)
    return checked


def _check_class_index(class_index, features: Mapping, n_categories: int):
    """``class_index`` as an int64 tensor [C] whose entries are outputs of every model's logits."""
    if class_index is None:
        return None
    index = np.asarray(class_index.detach().cpu() if isinstance(class_index, torch.Tensor)
                       else class_index)
    if index.ndim != 1 or index.dtype.kind not in "iu" or index.size != n_categories:
        raise AnalysisUtilsError(
            f"class_index must be {n_categories} integers, the classifier output of each "
            f"category (probe.class_index(scale)), got shape {index.shape} and dtype "
            f"{index.dtype}."
        )
    for model, readouts in features.items():
        n_outputs = readouts["logits"].shape[-1] if "logits" in readouts else None
        if n_outputs is not None and not 0 <= index.min() <= index.max() < n_outputs:
            raise AnalysisUtilsError(
                f"class_index must name outputs 0..{n_outputs - 1} of "
                f"{model}'s logits, got values from {index.min()} to {index.max()}; pass the "
                "probe's class_index for the features' scale."
            )
    return torch.from_numpy(index.astype(np.int64))


def _positive(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise AnalysisUtilsError(f"{what} must be a positive integer, got {value!r}.")
    return int(value)


#: the columns of :func:`evaluate_all`, in order
COLUMNS = ("id", "group", "models", "readout", "statement", "study", "study_value", "estimate",
           "ci_low", "ci_high", "interval", "p_value", "verdict", "rule", "detail",
           "untrained_mean", "untrained_min", "untrained_max", "untrained_seeds",
           "untrained_verdicts", "chapter", "section", "note")


def evaluate_all(features, untrained=None, *, labels, class_index=None, untrained_labels=None,
                 baseline: Mapping[str, int] | None = None,
                 after: Mapping[str, int] | None = None, n_perm: int = 1000,
                 n_boot: int = 1000, seed: int = DEFAULT_SEED,
                 claim_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Every claim (or those in ``claim_ids``) on ``features``: one row per claim.

    ``features``: ``{model: {readout: Tensor[T, N, D]}}`` (the chapters' feature dict) with
    ``labels`` [N] (``probe.labels``) and ``class_index`` (``probe.class_index(scale)``; None
    leaves logit accuracy not evaluated). ``untrained``: optional ``{seed: features dict}``
    (for example ``book.untrained_reference``) on the images of ``untrained_labels`` (default
    ``labels``); each claim is evaluated on each seed the same way, giving the untrained
    reference columns. ``baseline`` / ``after``: step overrides as the chapters' parameters.
    ``n_perm`` permutations for the global tests and ``n_boot`` bootstrap resamples, both with
    ``seed`` (42, the study's).

    Columns (:data:`COLUMNS`): the claim's id, group, models, readout, statement, the study's
    value as printed (``study``) and as a number for the same quantity (``study_value``), our
    ``estimate`` with ``ci_low`` / ``ci_high`` and how the interval was made, ``p_value``
    (permutation and LME claims), ``verdict`` and the ``rule`` that gave it, ``detail`` (the
    states compared), the untrained reference (mean, min and max of the estimate over seeds,
    the seeds, each seed's verdict), the ``chapter`` and ``section`` that show the claim, and a
    ``note`` when a claim is not evaluated.
    """
    features, labels = _check_features(features, labels, "features")
    inputs = ClaimInputs(
        features=features, labels=labels,
        class_index=_check_class_index(class_index, features,
                                       int(np.unique(labels).size)),
        baseline=_check_overrides(baseline, "baseline", features),
        after=_check_overrides(after, "after", features),
        n_perm=_positive(n_perm, "n_perm"), n_boot=_positive(n_boot, "n_boot"),
        seed=int(seed))
    seeds_inputs = {}
    if untrained is not None:
        if not isinstance(untrained, Mapping) or not untrained:
            raise AnalysisUtilsError(
                "untrained must be a non-empty dict {seed: {model: {readout: Tensor}}}, as "
                f"book.untrained_reference returns, got {type(untrained).__name__}."
            )
        reference_labels = labels if untrained_labels is None else untrained_labels
        for s, seed_features in untrained.items():
            checked, seed_labels = _check_features(seed_features, reference_labels,
                                                   f"untrained[{s!r}]")
            _check_class_index(class_index, checked, int(np.unique(seed_labels).size))
            overrides = {state: {m: step for m, step in getattr(inputs, state).items()
                                 if m in checked} for state in ("baseline", "after")}
            seeds_inputs[s] = ClaimInputs(
                features=checked, labels=seed_labels, class_index=inputs.class_index,
                baseline=overrides["baseline"], after=overrides["after"],
                n_perm=inputs.n_perm, n_boot=inputs.n_boot, seed=inputs.seed)
    selected = CLAIMS if claim_ids is None else tuple(get(i) for i in claim_ids)
    rows = []
    for claim in selected:
        row = {"id": claim.id, "group": claim.group,
               "models": ", ".join(claim.models)
               or ", ".join(m for m in catalogue.BOOK_ORDER if m in features),
               "readout": claim.readout, "statement": claim.statement, "study": claim.study,
               "study_value": claim.study_value, "rule": claim.rule.describe(),
               "chapter": claim.chapter, "section": claim.section}
        row.update(evaluate(claim, inputs))
        row.update(_untrained_columns(claim, seeds_inputs))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _untrained_columns(claim: Claim, seeds_inputs: Mapping) -> dict:
    """The untrained reference of one claim: its estimate over seeds and each seed's verdict."""
    if not seeds_inputs:
        return {"untrained_mean": float("nan"), "untrained_min": float("nan"),
                "untrained_max": float("nan"), "untrained_seeds": "",
                "untrained_verdicts": ""}
    results = {s: evaluate(claim, seed_inputs) for s, seed_inputs in seeds_inputs.items()}
    values = np.array([r["estimate"] for r in results.values()], dtype=np.float64)
    finite = values[np.isfinite(values)]
    return {"untrained_mean": float(finite.mean()) if finite.size else float("nan"),
            "untrained_min": float(finite.min()) if finite.size else float("nan"),
            "untrained_max": float(finite.max()) if finite.size else float("nan"),
            "untrained_seeds": ",".join(str(s) for s in results),
            "untrained_verdicts": ",".join(r["verdict"] for r in results.values())}


# --------------------------------------------------------------------------------------------
# the findings page: the evaluated table as the book shows it, and what it says
# --------------------------------------------------------------------------------------------

_CHAPTER_NAME = re.compile(r"^(\d\d)_[a-z0-9_]+$")


def chapter_href(chapter: str, section: str | None = None) -> str:
    """The link from one chapter page of the built book to ``chapter`` (at its ``section``):
    for example ``02_dynamics.html#local-test-mixed-model-of-the-per-exemplar-change``.

    The chapters' pages lie side by side (``book/notebooks/NN_name.html``), so the link is
    relative and works wherever the built book is copied; the anchor is the id Sphinx gives the
    section's heading (docutils' ``make_id`` of its title).
    """
    if not isinstance(chapter, str) or not _CHAPTER_NAME.match(chapter):
        raise AnalysisUtilsError(
            f"A chapter is named like '02_dynamics' (two digits, '_', lower-case name), got "
            f"{chapter!r}."
        )
    if not section:
        return f"{chapter}.html"
    from docutils.nodes import make_id

    return f"{chapter}.html#{make_id(section)}"


def _check_evaluated(table) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame) or not set(COLUMNS) <= set(table.columns):
        missing = (sorted(set(COLUMNS) - set(table.columns))
                   if isinstance(table, pd.DataFrame) else ["(not a DataFrame)"])
        raise AnalysisUtilsError(
            "Pass the table of claims.evaluate_all (or its CSV read back with pandas); this one "
            f"lacks {', '.join(missing)}."
        )
    return table


def _number(value) -> str:
    value = float(value)
    return "–" if not np.isfinite(value) else f"{value:.4g}"


def _seed_list(value) -> list[str]:
    """The seeds of an ``untrained_seeds`` cell ('0,1,2'; a number or NaN when read from CSV)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return []
    return [s for s in str(value).split(",") if s.strip()]


def findings_table(table) -> pd.DataFrame:
    """The findings page's table: one row per claim of ``table`` (from :func:`evaluate_all`).

    Columns: the claim (statement and id), the study's value (as the study printed it), ours
    with its 95 % interval (and p-value, the states compared), the untrained reference (mean,
    range and verdict per seed), the verdict, and a link to the chapter section that shows the
    claim (:func:`chapter_href`). Cells are HTML (text escaped), for ``DataFrame.style``.
    """
    from html import escape

    table = _check_evaluated(table)
    rows = []
    for row in table.itertuples(index=False):
        claim = get(row.id)
        if row.verdict == NOT_EVALUATED:
            ours = f"not evaluated: {escape(str(row.note))}"
        else:
            ours = f"{_number(row.estimate)} [{_number(row.ci_low)}, {_number(row.ci_high)}]"
            if np.isfinite(float(row.p_value)):
                ours += f", p = {float(row.p_value):.2g}"
            ours += f"<br><small>{escape(str(row.detail))}; {escape(str(row.interval))}</small>"
        seeds = _seed_list(row.untrained_seeds)
        if not seeds:
            untrained = "none"
        else:
            verdicts = str(row.untrained_verdicts).split(",")
            untrained = (f"{_number(row.untrained_mean)} (range {_number(row.untrained_min)} "
                         f"to {_number(row.untrained_max)})<br><small>"
                         + ", ".join(f"seed {s}: {v}" for s, v in zip(seeds, verdicts))
                         + "</small>")
        number = int(_CHAPTER_NAME.match(claim.chapter).group(1))
        link = (f'<a href="{escape(chapter_href(claim.chapter, claim.section))}">Chapter '
                f"{number}: {escape(claim.section)}</a>")
        rows.append({"Claim": f"{escape(str(row.statement))}<br><code>{escape(row.id)}</code>",
                     "The study's value": escape(str(row.study)),
                     "Ours [95 % interval]": ours,
                     "Untrained reference (seeds)": untrained,
                     "Verdict": f"<b>{escape(str(row.verdict))}</b>",
                     "Shown in": link})
    return pd.DataFrame(rows)


def verdict_matrix(table) -> pd.DataFrame:
    """The verdicts of ``table`` (from :func:`evaluate_all`): one row per claim (indexed by id),
    a column "ours" and one column per untrained seed ("seed s")."""
    table = _check_evaluated(table)
    rows = {}
    for row in table.itertuples(index=False):
        seeds = _seed_list(row.untrained_seeds)
        verdicts = str(row.untrained_verdicts).split(",") if seeds else []
        rows[row.id] = {"ours": row.verdict,
                        **{f"seed {s.strip()}": v for s, v in zip(seeds, verdicts)}}
    return pd.DataFrame.from_dict(rows, orient="index")


def _join(names: Sequence[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _names(claim_ids: Sequence[str], group: Sequence[str] = ()) -> str:
    """The claims' short names (their labels); within a ``group`` of claim ids whose claims
    each concern one model and no model twice, the models' display names."""
    claimed = [get(i).models for i in group]
    by_model = bool(group) and all(len(m) == 1 for m in claimed) \
        and len(set(claimed)) == len(claimed)
    return _join(_NAMES.get(get(i).models[0], get(i).models[0]) if by_model else get(i).label
                 for i in claim_ids)


#: how the discussion names the weights and the probe of a run
_WEIGHTS = {"trained": "the mini zoo, trained by this project on Tiny-ImageNet-100",
            "untrained": "random weights", "official": "the official checkpoints"}
_PROBES = {"tiny": "the Tiny-ImageNet validation probe",
           "imagenet": "the study's ImageNet validation probe"}


def discussion(table, *, scale: str, weights: str, probe: str, seed: int = 0) -> str:
    """What ``table`` (from :func:`evaluate_all`) says, as Markdown sentences drawn from it.

    The counts of verdicts at this ``scale``, ``weights`` and ``probe``; per group of claims,
    which hold, which are reversed, which are unclear or not evaluated; with trained weights,
    which of the claims that hold also hold in every untrained network of the reference (the
    architecture gives them) and which in none; the reasons of claims not evaluated. With
    ``weights="untrained"`` it says first, plainly, that the verdicts mean nothing yet.
    """
    table = _check_evaluated(table)
    for what, value, known in (("scale", scale, ("mini", "full")), ("weights", weights, _WEIGHTS),
                               ("probe", probe, _PROBES)):
        if value not in known:
            raise choice_error(what, value, tuple(known))
    verdicts = dict(zip(table["id"], table["verdict"]))
    paragraphs = []
    if weights == "untrained":
        paragraphs.append(
            f"**These models are untrained (random weights, seed {seed}), so the verdicts "
            "below mean nothing yet.** They test the architectures at initialisation: a claim "
            "that holds here holds by construction or by chance, not because a model learned "
            "it. Build the book with trained weights to read them as findings."
        )
    evaluated = [i for i, v in verdicts.items() if v in VERDICTS]
    counts = {v: sum(verdicts[i] == v for i in evaluated) for v in VERDICTS}
    one = {"holds": ("holds", "hold"), "reversed": ("is reversed", "are reversed"),
           "unclear": ("is unclear", "are unclear")}
    said = [f"{counts[v]} {one[v][counts[v] != 1]}" for v in VERDICTS]
    sentence = (f"At {scale} scale ({_WEIGHTS[weights]}, on {_PROBES[probe]}), of the "
                f"{len(evaluated)} claims evaluated {said[0]}, {said[1]} and {said[2]}")
    skipped = len(verdicts) - len(evaluated)
    if skipped:
        sentence += f"; {skipped} could not be evaluated in this run"
    paragraphs.append(sentence + ".")

    lines = []
    for group in dict.fromkeys(table["group"]):
        ids = list(table.loc[table["group"] == group, "id"])
        parts = [f"{v} for {_names(chosen, ids)}" for v in (*VERDICTS, NOT_EVALUATED)
                 if (chosen := [i for i in ids if verdicts[i] == v])]
        lines.append(f"- **{group}**: {'; '.join(parts)}.")
    paragraphs.append("\n".join(lines))
    meaning = []
    if counts["reversed"]:
        meaning.append("*Reversed* means that our estimate and its whole interval (or a "
                       "significant test) lie on the other side of the study's statement: here "
                       "the claim does not hold as the study states it.")
    if counts["unclear"]:
        meaning.append("*Unclear* means that the interval includes the rule's reference (or the "
                       "test is not significant): this run neither confirms nor reverses the "
                       "claim, and more images or permutations would narrow the interval.")
    if meaning:
        paragraphs.append(" ".join(meaning))
    held = [i for i in evaluated if verdicts[i] == "holds"]
    by_id = table.set_index("id")
    if weights != "untrained" and held and _seed_list(by_id.loc[held[0], "untrained_seeds"]):
        seed_verdicts = {i: str(by_id.loc[i, "untrained_verdicts"]).split(",") for i in held}
        everywhere = [i for i in held if all(v == "holds" for v in seed_verdicts[i])]
        nowhere = [i for i in held if all(v != "holds" for v in seed_verdicts[i])]
        if everywhere:
            paragraphs.append(
                "Of the claims that hold, these also hold in every untrained network of the "
                f"same architecture: {_names(everywhere)}. There the verdict comes without "
                "training and is no evidence that it was learned."
            )
        if nowhere:
            paragraphs.append(
                "These claims hold, and in none of the untrained networks, so their verdict "
                f"comes with training: {_names(nowhere)}."
            )
    missing = [i for i, v in verdicts.items() if v == NOT_EVALUATED]
    if missing:
        paragraphs.append("Not evaluated: " + "; ".join(
            f"{get(i).label} ({i}): {by_id.loc[i, 'note']}" for i in missing))
    return "\n\n".join(paragraphs)
