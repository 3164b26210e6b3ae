"""Behaviour and geometry at every step on perturbed images: the measures of chapter 6.

The chapter perturbs the first ``k`` images of every probe category (:mod:`analysis_utils.perturb`:
occlusion, clutter, noise, phase noise; each at a grid of levels), extracts every model's
readouts at every step on them (:func:`analysis_utils.extract.features` with a
``perturbation``; cached like any extraction), and measures per model, step, perturbation and
level:

- ``top1``: the classifier's own top-1 (logits), in percent, as :func:`geometry.logit_accuracy`;
- ``nc_top1``: nearest-centroid top-1 on ``penult`` against the prototypes of the *clean*
  probe (every clean image of each category, the perturbed image's clean version included, as
  the study includes the exemplar in its prototype): how far the perturbed exemplars stay
  readable by the categories the model learned;
- ``cluster_size``: the study's local geometry on the perturbed set itself: the mean cosine
  distance of each perturbed exemplar to its category's prototype (the class mean of the
  perturbed exemplars), on ``penult``;
- ``between_mean``: the study's global geometry on the perturbed set: the mean cosine distance
  between the perturbed prototypes (raw, as :func:`geometry.between_prototype_summary`).

Level 0 is the clean probe: its features are the clean extraction's rows for the same images
(perturbing at level 0 returns the pixels unchanged, so nothing is extracted again).

The recurrence benefit of a recurrent model is top-1 at its analysed final step (the card's
"after" state) minus top-1 at its first image-dependent state (the card's "baseline"), per
category, with a percentile bootstrap interval over categories (:func:`stats.bootstrap_ci`).
Its feedforward counterpart (AlexNet for LRM3/LRA3, B for BL and CORnet-RT, from the card)
has one step, so the comparison there is of accuracy against level (:func:`final_table`).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import geometry, perturb, stats
from .errors import AnalysisUtilsError

#: the chapter's default level grid: cheap enough for a cold book build on 2 cores (its cost
#: is measured by benchmarks/book.py); level 0 (clean) is always added and costs nothing
DEFAULT_LEVELS = {"occlusion": (0.25, 0.5), "clutter": (3,), "noise": (0.2,), "phase": (0.5,)}

#: the columns of :func:`step_table`
MEASURES = ("top1", "nc_top1", "cluster_size", "between_mean")


def check_levels(levels) -> dict[str, tuple]:
    """``{perturbation: (0, level, ...)}`` from a dict, or its Python literal as a string
    (papermill's ``-p perturbation_levels "{'occlusion': [0.2, 0.4]}"``).

    Every name must be a registered perturbation and every level in its range (one sentence
    otherwise); each grid is sorted, made unique and starts at level 0, the clean images.
    """
    if isinstance(levels, str):
        try:
            levels = ast.literal_eval(levels)
        except (ValueError, SyntaxError):
            raise AnalysisUtilsError(
                "perturbation_levels must be a dict of perturbation -> list of levels, for "
                f"example \"{{'occlusion': [0.25, 0.5], 'noise': [0.2]}}\", got {levels!r}."
            ) from None
    if not isinstance(levels, Mapping) or not levels:
        raise AnalysisUtilsError(
            "perturbation_levels must be a non-empty dict of perturbation -> list of levels, "
            f"for example {{'occlusion': [0.25, 0.5]}} (known: "
            f"{', '.join(perturb.PERTURBATIONS)}), got {levels!r}."
        )
    grid = {}
    for name, values in levels.items():
        perturb.perturbation(name)  # an unknown name lists the known ones
        specs = perturb.specs(name, list(values) if isinstance(values, tuple) else values)
        grid[name] = tuple(sorted({0, *(spec.level for spec in specs)}))
    return grid


def level_specs(levels: Mapping[str, tuple], seed: int = 0) -> list[perturb.PerturbationSpec]:
    """The specs to extract for a grid from :func:`check_levels`: every level but 0."""
    return [perturb.PerturbationSpec(name, level, seed)
            for name, values in levels.items() for level in values if level != 0]


# --------------------------------------------------------------------------- measures


def per_category_mean(values: torch.Tensor, labels) -> np.ndarray:
    """The mean of ``values`` [T, N] over the images of each category: float64 [T, C]."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    n_classes = int(labels.max()) + 1
    sums = torch.zeros(values.shape[0], n_classes, dtype=torch.float64)
    sums.index_add_(1, labels, values.double())
    counts = torch.bincount(labels, minlength=n_classes).double()
    return (sums / counts).numpy()


def logit_hits(logits: torch.Tensor, labels, class_index) -> torch.Tensor:
    """[T, N] 1.0 where the argmax over all outputs is the image's category's output."""
    target = geometry._logit_targets(labels, class_index, logits.shape[-2], logits.shape[-1],
                                     logits.device)
    return (logits.argmax(-1) == target).double()


def clean_prototype_hits(penult: torch.Tensor, labels, clean_prototypes: torch.Tensor
                         ) -> torch.Tensor:
    """[T, N] 1.0 where the cosine-nearest clean prototype (at the same step; ``clean_prototypes``
    [T, C, D] from :func:`geometry.prototypes` of the clean probe) is the image's own
    category's: nearest-centroid readout of perturbed features by the clean categories."""
    scores = (F.normalize(penult, dim=-1)
              @ F.normalize(clean_prototypes, dim=-1).transpose(-1, -2))
    labels = torch.as_tensor(labels, dtype=torch.long)
    return (scores.argmax(-1) == labels).double()


def level_measures(penult: torch.Tensor, logits: torch.Tensor, labels, class_index,
                   clean_penult: torch.Tensor | None = None, clean_labels=None,
                   clean_prototypes: torch.Tensor | None = None) -> dict:
    """Every measure at every step on one perturbed set.

    ``penult`` [T, n, D] and ``logits`` [T, n, K] of the perturbed images (``labels`` [n]),
    and the clean probe's prototypes: ``clean_penult`` [T, N, D] with ``clean_labels`` [N], or
    ``clean_prototypes`` [T, C, D] computed once (:func:`geometry.prototypes`). Returns
    ``{"top1", "nc_top1", "cluster_size", "between_mean"}``: float64 arrays [T], and
    ``"top1_per_category"``, ``"nc_top1_per_category"``: [T, C] in percent.
    """
    if (clean_penult is None) == (clean_prototypes is None):
        raise AnalysisUtilsError(
            "level_measures needs the clean prototypes: give clean_penult and clean_labels, or "
            "clean_prototypes (geometry.prototypes of the clean penult), not both."
        )
    if clean_prototypes is None:
        clean_prototypes = geometry.prototypes(clean_penult, clean_labels)  # [T, C, D]
    if penult.shape[:2] != logits.shape[:2] or penult.shape[0] != clean_prototypes.shape[0]:
        raise AnalysisUtilsError(
            f"penult {tuple(penult.shape)}, logits {tuple(logits.shape)} and the clean "
            f"prototypes {tuple(clean_prototypes.shape)} must share their steps T (and the "
            "first two their images n)."
        )
    top1 = per_category_mean(logit_hits(logits, labels, class_index), labels) * 100.0
    nc = per_category_mean(clean_prototype_hits(penult, labels, clean_prototypes),
                           labels) * 100.0
    return {
        "top1": top1.mean(-1), "nc_top1": nc.mean(-1),
        "cluster_size": geometry.exemplar_prototype_distances(penult, labels)
        .double().mean(-1).numpy(),
        "between_mean": np.asarray(geometry.between_prototype_summary(penult, labels)["mean"],
                                   dtype=np.float64),
        "top1_per_category": top1, "nc_top1_per_category": nc,
    }


def measure_levels(perturbed: Mapping[tuple[str, str, float], Mapping[str, torch.Tensor]],
                   clean: Mapping[str, Mapping[str, torch.Tensor]], labels, class_index,
                   clean_labels) -> dict[tuple[str, str, float], dict]:
    """:func:`level_measures` for every ``(model, perturbation, level)`` of ``perturbed`` (its
    ``penult`` and ``logits`` on the perturbed images, ``labels``), against the clean
    prototypes of ``clean[model]["penult"]`` (``clean_labels``).

    Each model's clean prototypes are computed once, and level 0 (the same clean images under
    every perturbation) is measured once per model and shared by every perturbation's entry.
    """
    measured, prototypes, clean_level = {}, {}, {}
    for (model, name, level), X in perturbed.items():
        if model not in prototypes:
            prototypes[model] = geometry.prototypes(clean[model]["penult"], clean_labels)
        if level == 0 and model in clean_level:
            measured[model, name, level] = clean_level[model]
            continue
        measured[model, name, level] = level_measures(
            X["penult"], X["logits"], labels, class_index, clean_prototypes=prototypes[model])
        if level == 0:
            clean_level[model] = measured[model, name, level]
    return measured


def step_table(measured: Mapping[tuple[str, str, float], dict]) -> pd.DataFrame:
    """One row per model, perturbation, level and step: the columns of :data:`MEASURES`.

    ``measured[(model, perturbation, level)]`` is a :func:`level_measures` result.
    """
    rows = []
    for (model, name, level), values in measured.items():
        n_steps = len(values["top1"])
        for index in range(n_steps):
            rows.append({"model": model, "perturbation": name, "level": level,
                         "step": index + 1, "n_steps": n_steps,
                         **{m: float(values[m][index]) for m in MEASURES}})
    return pd.DataFrame(rows)


def _benefit(values: dict, baseline: int, after: int) -> np.ndarray:
    """Per category: top-1 at step ``after`` minus top-1 at step ``baseline``."""
    per_category = values["top1_per_category"]
    return per_category[after - 1] - per_category[baseline - 1]


def benefit_table(measured: Mapping[tuple[str, str, float], dict], states: Mapping[str, tuple],
                  n_boot: int = 2000, seed: int = 42) -> pd.DataFrame:
    """The recurrence benefit per recurrent model, perturbation and level.

    ``states[model] = (baseline_step, after_step)`` (1-based). ``benefit`` = mean over
    categories of top-1(after) - top-1(baseline) in percentage points, ``lo``/``hi`` its 95%
    percentile bootstrap interval over categories (``n_boot`` resamples from ``seed``); also
    the two accuracies.
    """
    rows = []
    for (model, name, level), values in measured.items():
        if model not in states:
            continue
        baseline, after = states[model]
        per_category = values["top1_per_category"]
        difference = _benefit(values, baseline, after)
        low, high = stats.bootstrap_ci(difference, n_boot=n_boot, seed=seed)
        rows.append({"model": model, "perturbation": name, "level": level,
                     "baseline step": baseline, "after step": after,
                     "top1 baseline": float(per_category[baseline - 1].mean()),
                     "top1 after": float(per_category[after - 1].mean()),
                     "benefit": float(difference.mean()), "lo": float(low), "hi": float(high)})
    return pd.DataFrame(rows)


def _interval(values: np.ndarray, n_boot: int, seed: int) -> dict:
    low, high = stats.bootstrap_ci(values, n_boot=n_boot, seed=seed)
    verdict = "agrees" if low > 0 else "disagrees" if high < 0 else "unclear"
    return {"value": float(values.mean()), "lo": float(low), "hi": float(high),
            "verdict": verdict}


#: what the literature predicts, per perturbation: (prediction, where it comes from)
PREDICTIONS = {
    "benefit grows": ("the recurrence benefit is larger at the hardest level than on clean "
                      "images", "Kar et al. 2019 (harder images are solved later); for "
                      "occlusion Tang et al. 2018 (recurrence completes occluded patterns)"),
    "advantage grows": ("the recurrent model's final-step top-1 exceeds its feedforward "
                        "counterpart's by more at the hardest level than on clean images",
                        "Spoerer, McClure & Kriegeskorte 2017 (occlusion and clutter)"),
}
#: the perturbations each prediction is about
PREDICTION_PERTURBATIONS = {"benefit grows": None, "advantage grows": ("occlusion", "clutter")}


def _advantage(values: dict, partner: dict, after: int) -> np.ndarray:
    """Per category: the model's top-1 at step ``after`` minus its counterpart's at the
    counterpart's last step (a feedforward model has one)."""
    return values["top1_per_category"][after - 1] - partner["top1_per_category"][-1]


def literature_table(measured: Mapping[tuple[str, str, float], dict],
                     states: Mapping[str, tuple], counterparts: Mapping[str, str],
                     n_boot: int = 2000, seed: int = 42) -> pd.DataFrame:
    """Each prediction of :data:`PREDICTIONS` tested per recurrent model and perturbation at
    its hardest level, on per-category differences of differences (percentage points):

    - "benefit grows": [top-1(after) - top-1(baseline)] at the hardest level minus the same
      on clean images;
    - "advantage grows": [top-1(model, after) - top-1(counterpart)] at the hardest level minus
      the same on clean images (only where the counterpart was measured).

    ``value`` is the mean over categories, ``lo``/``hi`` its 95% bootstrap interval; the
    verdict is "agrees" when the interval is above 0, "disagrees" when below, else "unclear".
    """
    rows = []
    grid: dict[tuple[str, str], list] = {}
    for model, name, level in measured:
        grid.setdefault((model, name), []).append(level)
    for (model, name), levels in grid.items():
        if model not in states or 0 not in levels or max(levels) == 0:
            continue
        hardest = max(levels)
        baseline, after = states[model]
        clean, hard = measured[(model, name, 0)], measured[(model, name, hardest)]
        base = {"model": model, "perturbation": name, "level": hardest}
        growth = (_benefit(hard, baseline, after) - _benefit(clean, baseline, after))
        rows.append({**base, "prediction": "benefit grows", "against": "",
                     **_interval(growth, n_boot, seed)})
        partner = counterparts.get(model)
        wanted = PREDICTION_PERTURBATIONS["advantage grows"]
        if (partner and name in wanted and (partner, name, 0) in measured
                and (partner, name, hardest) in measured):
            growth = (_advantage(hard, measured[(partner, name, hardest)], after)
                      - _advantage(clean, measured[(partner, name, 0)], after))
            rows.append({**base, "prediction": "advantage grows", "against": partner,
                         **_interval(growth, n_boot, seed)})
    return pd.DataFrame(rows, columns=["model", "perturbation", "level", "prediction",
                                       "against", "value", "lo", "hi", "verdict"])


def final_table(steps: pd.DataFrame, after: Mapping[str, int]) -> pd.DataFrame:
    """The rows of :func:`step_table` at each model's analysed final step ``after[model]``."""
    keep = [row.step == after[row.model] for row in steps.itertuples()]
    return steps[keep].reset_index(drop=True)


def with_benefit(final: pd.DataFrame, benefit: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`final_table` with each recurrent model's benefit from
    :func:`benefit_table` beside them (``benefit``, ``benefit lo``, ``benefit hi``; NaN for a
    feedforward model): the table of the chapter's benefit-and-accuracy figure."""
    keys = ["model", "perturbation", "level"]
    extra = benefit[[*keys, "benefit", "lo", "hi"]].rename(
        columns={"lo": "benefit lo", "hi": "benefit hi"})
    return final.merge(extra, on=keys, how="left")


def relative_to_clean(table: pd.DataFrame, columns) -> pd.DataFrame:
    """``table`` with ``<column> / clean`` added: each value over the same model's, step's and
    perturbation's value at level 0 (so the geometry of models on different scales compares)."""
    out = table.copy()
    clean = table[table["level"] == 0].set_index(["model", "perturbation", "step"])
    for column in columns:
        reference = clean[column].reindex(
            pd.MultiIndex.from_frame(table[["model", "perturbation", "step"]])).to_numpy()
        out[f"{column} / clean"] = table[column].to_numpy() / reference
    return out


def summary_sentences(benefit: pd.DataFrame, final: pd.DataFrame, counterparts: Mapping[str, str],
                      display_names: Mapping[str, str]) -> list[str]:
    """Plain sentences from the tables: per recurrent model, its benefit on clean images and
    at the hardest level of each perturbation (with the interval, and whether it excludes 0),
    and its final-step top-1 there against its feedforward counterpart's."""
    sentences = []
    for model, rows in benefit.groupby("model", sort=False):
        name = display_names[model]
        clean = rows[rows["level"] == 0]
        parts = []
        for perturbation, part in rows[rows["level"] > 0].groupby("perturbation", sort=False):
            hardest = part.sort_values("level").iloc[-1]
            sign = ("beyond chance" if hardest["lo"] > 0 or hardest["hi"] < 0
                    else "not distinguishable from 0")
            text = (f"{perturbation} {hardest['level']:g}: {hardest['benefit']:+.1f} pp "
                    f"[{hardest['lo']:+.1f}, {hardest['hi']:+.1f}], {sign}")
            partner = counterparts.get(model)
            if partner is not None:
                own = final[(final["model"] == model) & (final["perturbation"] == perturbation)
                            & (final["level"] == hardest["level"])]["top1"]
                other = final[(final["model"] == partner)
                              & (final["perturbation"] == perturbation)
                              & (final["level"] == hardest["level"])]["top1"]
                if len(own) and len(other):
                    text += (f"; final-step top-1 {own.iloc[0]:.1f}% vs "
                             f"{display_names[partner]} {other.iloc[0]:.1f}%")
            parts.append(text)
        if clean.empty:
            continue
        c = clean.iloc[0]
        sentences.append(f"**{name}**: recurrence benefit on clean images "
                         f"{c['benefit']:+.1f} pp [{c['lo']:+.1f}, {c['hi']:+.1f}]; "
                         + "; ".join(parts) + ".")
    return sentences
