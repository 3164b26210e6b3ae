"""Category geometry of feature tensors: tensors in, numbers out.

Every measure here follows the reference study's definitions (``repgeo/geometry.py``, described in
``docs/reference/reference-study.md`` section 3) to float32 precision, and extends them from the
study's two states to every time step:

- A **prototype** is the arithmetic mean of the raw (unnormalised, uncentred) features of a class,
  ordered by sorted unique label; each exemplar contributes to its own prototype.
- Cosine distance is ``1 - cosine similarity`` (range [0, 2]); the cosine RDM normalises rows,
  takes ``1 - P P^T`` and sets the diagonal to 0.
- Only "Δ Between-Proto (%)" uses **centred** prototypes (the across-class mean prototype is
  subtracted). The between-prototype summary, the RDMs for RSA and "Proto RDM ρ" use raw ones.

Functions that say so accept features ``[N, D]`` or a batch over steps ``[T, N, D]`` and then
return one value per step, computed as one batched tensor operation. Where a measure needs an
``N x N`` or ``D x D`` matrix per step (k-NN, effective dimension) it runs one step at a time to
bound memory. Labels are any integers; a measure built on prototypes needs at least 2 exemplars
per category (with 1, each exemplar is its own prototype). Steps are numbered from 1 in every
table a reader sees.

Measures that are ours rather than the study's are labelled as such in their docstrings: the
leave-one-out nearest-centroid accuracy, the centred orthogonality measures and the
per-step tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from .errors import AnalysisUtilsError, choice_error

#: the five keys of the study's pairwise metrics (its Table 2), in its order
PAIR_METRIC_KEYS = (
    "Δ Cluster Size",
    "Δ Cluster Size (%)",
    "Avg Proto Shift",
    "Δ Between-Proto (%)",
    "Proto RDM ρ",
)

#: values at or below this are dropped from percentage changes, as in the study
_PCT_FLOOR = 1e-12


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Labels:
    """Integer labels resolved against their classes (sorted unique label order)."""

    classes: torch.Tensor  # [C] the sorted unique labels
    index: torch.Tensor  # [N] position of each exemplar's label in ``classes``
    counts: torch.Tensor  # [C] exemplars per class

    @property
    def n_classes(self) -> int:
        return int(self.classes.numel())


def as_features(X, name: str = "X", allow_steps: bool = True) -> torch.Tensor:
    """Return ``X`` as a float32 tensor [N, D] (or [T, N, D] when ``allow_steps``), checked."""
    if isinstance(X, np.ndarray):
        X = torch.from_numpy(X)
    if not isinstance(X, torch.Tensor):
        raise AnalysisUtilsError(
            f"{name} must be a torch tensor or numpy array of features, got {type(X).__name__}."
        )
    dims = (2, 3) if allow_steps else (2,)
    if X.dim() not in dims:
        layout = "[N, D] or [T, N, D]" if allow_steps else "[N, D]"
        raise AnalysisUtilsError(
            f"{name} must have the layout {layout}, got shape {tuple(X.shape)}; "
            "pool spatial maps to one vector per image first."
        )
    if not (X.is_floating_point() or X.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise AnalysisUtilsError(f"{name} must hold real numbers, got dtype {X.dtype}.")
    X = X.float()
    if X.shape[-2] < 2 or X.shape[-1] < 1:
        raise AnalysisUtilsError(
            f"{name} needs at least 2 exemplars and 1 feature, got shape {tuple(X.shape)}."
        )
    # A finite sum proves every element finite (NaN and inf propagate), ~30x faster than an
    # element-wise check on [T, N, D]; only a non-finite sum (perhaps an overflow) needs that.
    if not bool(torch.isfinite(X.sum())) and not bool(torch.isfinite(X).all()):
        raise AnalysisUtilsError(
            f"{name} contains NaN or infinite values; check the extraction that produced it."
        )
    return X


#: exemplars per category that a measure built on prototypes needs: with 1, each exemplar is
#: its own prototype, so its distance to it is 0 and a change of it (for example "Δ Cluster
#: Size (%)" of -100) means nothing
MIN_PER_PROTOTYPE = 2


def as_labels(labels, n: int, device=None, min_classes: int = 2,
              min_per_class: int = MIN_PER_PROTOTYPE) -> Labels:
    """Resolve integer ``labels`` for ``n`` exemplars; classes are the sorted unique labels.

    ``min_classes`` categories are needed, each with at least ``min_per_class`` exemplars
    (the default, 2, is what every measure built on prototypes needs).
    """
    if isinstance(labels, torch.Tensor):
        values = labels.detach().cpu().numpy()
    else:
        values = np.asarray(labels)
    if values.ndim != 1 or values.shape[0] != n:
        raise AnalysisUtilsError(
            f"labels must be a 1-D sequence with one integer per exemplar ({n}), "
            f"got shape {values.shape}."
        )
    if values.dtype.kind not in "iub":
        raise AnalysisUtilsError(
            f"labels must be integers, got dtype {values.dtype}; map category names to integers "
            "first (for example with numpy.unique(..., return_inverse=True))."
        )
    classes, index, counts = np.unique(values.astype(np.int64), return_inverse=True,
                                       return_counts=True)
    if classes.size < min_classes:
        raise AnalysisUtilsError(
            f"This measure needs at least {min_classes} categories, got {classes.size}."
        )
    short = np.flatnonzero(counts < min_per_class)
    if short.size:
        raise AnalysisUtilsError(
            f"This measure builds category prototypes and needs at least {min_per_class} "
            f"exemplars per category (with 1, each image is its own prototype), but "
            f"{short.size} of the {classes.size} categories have fewer (category "
            f"{classes[short[0]]} has {counts[short[0]]}); drop them or add images."
        )
    return Labels(
        classes=torch.from_numpy(classes).to(device),
        index=torch.from_numpy(index.reshape(-1)).to(device),
        counts=torch.from_numpy(counts).to(device),
    )


def _check_choice(what, value, valid):
    if value not in valid:
        raise choice_error(what, value, valid)


def _steps_or_single(value: torch.Tensor, batched: bool):
    """A per-step tensor as a numpy array, or as a float when the input was a single state."""
    array = value.detach().cpu().double().numpy()
    return array if batched else float(array.reshape(-1)[0])


# --------------------------------------------------------------------------------------------
# prototypes, distances, RDMs
# --------------------------------------------------------------------------------------------


def _prototypes(X: torch.Tensor, lab: Labels) -> torch.Tensor:
    shape = X.shape[:-2] + (lab.n_classes, X.shape[-1])
    summed = torch.zeros(shape, dtype=X.dtype, device=X.device).index_add_(X.dim() - 2,
                                                                           lab.index, X)
    return summed / lab.counts.to(X.dtype).unsqueeze(-1)


def prototypes(X, labels) -> torch.Tensor:
    """Class means of the raw features: [N, D] -> [C, D] (or [T, N, D] -> [T, C, D]).

    Rows are ordered by sorted unique label, as in the study.
    """
    X = as_features(X)
    return _prototypes(X, as_labels(labels, X.shape[-2], X.device, min_classes=1,
                                    min_per_class=1))


def _exemplar_distances(X: torch.Tensor, lab: Labels, metric: str = "cosine",
                        own: torch.Tensor | None = None) -> torch.Tensor:
    """``own``: each exemplar's prototype [..., N, D], when the caller already has it."""
    if own is None:
        own = _prototypes(X, lab).index_select(X.dim() - 2, lab.index)
    if metric == "cosine":
        return 1.0 - F.cosine_similarity(X, own, dim=-1)
    return torch.linalg.vector_norm(X - own, dim=-1)


def exemplar_prototype_distances(X, labels, metric: str = "cosine") -> torch.Tensor:
    """Distance of each exemplar to its own class prototype (the study's local "cluster size").

    ``metric`` is "cosine" (``1 - cosine similarity``, the study's default) or "euclidean".
    Returns [N] (or [T, N] for features [T, N, D]).
    """
    _check_choice("metric", metric, ("cosine", "euclidean"))
    X = as_features(X)
    return _exemplar_distances(X, as_labels(labels, X.shape[-2], X.device, min_classes=1), metric)


def cosine_rdm(P) -> torch.Tensor:
    """Cosine-distance RDM of prototypes: [C, D] -> [C, C] (or [T, C, D] -> [T, C, C]).

    Rows are L2-normalised, the RDM is ``1 - P P^T`` and its diagonal is set to 0, as in the
    study.
    """
    P = as_features(P, "P")
    return _cosine_rdm(P)


def _cosine_rdm(P: torch.Tensor) -> torch.Tensor:
    unit = F.normalize(P, dim=-1)
    rdm = 1.0 - unit @ unit.transpose(-1, -2)
    rdm.diagonal(dim1=-2, dim2=-1).zero_()
    return rdm


def upper_triangle(rdm) -> torch.Tensor:
    """The strict upper triangle of a square RDM, row by row: [C, C] -> [C (C - 1) / 2].

    A batch [T, C, C] gives [T, C (C - 1) / 2].
    """
    if isinstance(rdm, np.ndarray):
        rdm = torch.from_numpy(rdm)
    if not isinstance(rdm, torch.Tensor) or rdm.dim() not in (2, 3) or \
            rdm.shape[-1] != rdm.shape[-2]:
        shape = tuple(rdm.shape) if hasattr(rdm, "shape") else type(rdm).__name__
        raise AnalysisUtilsError(f"Expected a square RDM [C, C] or a batch [T, C, C], got {shape}.")
    rows, cols = torch.triu_indices(rdm.shape[-1], rdm.shape[-1], offset=1, device=rdm.device)
    return rdm[..., rows, cols]


def _centred(P: torch.Tensor) -> torch.Tensor:
    return P - P.mean(dim=-2, keepdim=True)


# --------------------------------------------------------------------------------------------
# the study's pairwise metrics (its Table 2)
# --------------------------------------------------------------------------------------------


def _class_means(values: torch.Tensor, lab: Labels) -> torch.Tensor:
    """Per-class mean of per-exemplar values [..., N] -> [..., C], in float64."""
    values = values.double()
    shape = values.shape[:-1] + (lab.n_classes,)
    summed = torch.zeros(shape, dtype=values.dtype, device=values.device)
    summed.index_add_(values.dim() - 1, lab.index, values)
    return summed / lab.counts.double()


def _masked_mean_pct_change(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Mean over the last axis of ``(after - before) / before * 100`` where before > 1e-12."""
    before, after = before.double(), after.double()
    keep = before > _PCT_FLOOR
    pct = torch.where(keep, (after - before) / torch.where(keep, before, 1.0) * 100.0, 0.0)
    return pct.sum(-1) / keep.sum(-1)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman ρ between matching rows of ``a`` and ``b`` [..., P] (average ranks, as scipy).

    A constant row gives NaN, as ``scipy.stats.spearmanr`` does.
    """
    ranks_a = rankdata(a, axis=-1)
    ranks_b = rankdata(b, axis=-1)
    ranks_a -= ranks_a.mean(axis=-1, keepdims=True)
    ranks_b -= ranks_b.mean(axis=-1, keepdims=True)
    numerator = (ranks_a * ranks_b).sum(-1)
    denominator = np.sqrt((ranks_a**2).sum(-1) * (ranks_b**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return numerator / denominator


def _pair_metrics_batched(Xb: torch.Tensor, Xa: torch.Tensor, lab: Labels) -> dict:
    """The five metrics for matching batches Xb, Xa [B, N, D] -> {key: array [B]}."""
    dist_before = _exemplar_distances(Xb, lab)
    dist_after = _exemplar_distances(Xa, lab)
    proto_before = _prototypes(Xb, lab)
    proto_after = _prototypes(Xa, lab)

    cluster_change = dist_after.mean(-1) - dist_before.mean(-1)
    cluster_change_pct = _masked_mean_pct_change(_class_means(dist_before, lab),
                                                 _class_means(dist_after, lab))
    proto_shift = (1.0 - F.cosine_similarity(proto_before, proto_after, dim=-1)).mean(-1)
    between_before = upper_triangle(_cosine_rdm(_centred(proto_before)))
    between_after = upper_triangle(_cosine_rdm(_centred(proto_after)))
    between_change_pct = _masked_mean_pct_change(between_before, between_after)
    rdm_rho = spearman_rows(upper_triangle(_cosine_rdm(proto_before)).cpu().numpy(),
                            upper_triangle(_cosine_rdm(proto_after)).cpu().numpy())
    values = (cluster_change, cluster_change_pct, proto_shift, between_change_pct, rdm_rho)
    return {key: (v if isinstance(v, np.ndarray) else v.detach().cpu().double().numpy())
            for key, v in zip(PAIR_METRIC_KEYS, values)}


def _check_pair(X_before, X_after, allow_steps=False):
    Xb = as_features(X_before, "X_before", allow_steps)
    Xa = as_features(X_after, "X_after", allow_steps)
    if Xb.shape != Xa.shape:
        raise AnalysisUtilsError(
            f"X_before and X_after must hold the same images in the same order, got shapes "
            f"{tuple(Xb.shape)} and {tuple(Xa.shape)}."
        )
    return Xb, Xa.to(Xb.device)


def pair_metrics(X_before, X_after, labels) -> dict:
    """The study's five pairwise metrics between two states of the same images (its Table 2).

    Keys, exactly as the study: "Δ Cluster Size" (mean exemplar-prototype cosine distance after
    minus before, each state with its own prototypes), "Δ Cluster Size (%)" (macro mean over
    classes of the % change of the class-mean distance; classes with a baseline <= 1e-12
    dropped), "Avg Proto Shift" (mean over classes of ``1 - cos(prototype before, after)``),
    "Δ Between-Proto (%)" (mean over pairs of the % change of the cosine distance between
    **centred** prototypes; pairs with a baseline <= 1e-12 dropped) and "Proto RDM ρ"
    (Spearman ρ between the raw-prototype RDM upper triangles). Values are floats.
    """
    Xb, Xa = _check_pair(X_before, X_after)
    lab = as_labels(labels, Xb.shape[0], Xb.device)
    batched = _pair_metrics_batched(Xb.unsqueeze(0), Xa.unsqueeze(0), lab)
    return {key: float(value[0]) for key, value in batched.items()}


#: elements of features [t, N, D] that the measures over steps process at once (16 MB float32)
STEP_CHUNK_ELEMENTS = 4 * 2**20


def _steps_per_block(features: torch.Tensor) -> int:
    """How many steps of features [T, N, D] to process at once: temporaries of ~16 MB are
    reused by the allocator, while [T, N, D] ones are fresh memory maps each time (measured
    1.5-2x slower, half of it page faults)."""
    return max(1, STEP_CHUNK_ELEMENTS // (features.shape[1] * features.shape[2]))


def _step_pairs(n_steps: int, reference: str | int) -> tuple[list[int], list[int]]:
    """0-based (from, to) step indices for consecutive or reference-to-each comparisons."""
    if isinstance(reference, (int, np.integer)) and not isinstance(reference, bool):
        if not 1 <= reference < n_steps:
            raise AnalysisUtilsError(
                f"reference step must be from 1 to {n_steps - 1} (a later step must exist), "
                f"got {reference}."
            )
        to = list(range(int(reference), n_steps))
        return [int(reference) - 1] * len(to), to
    if reference not in ("previous", "first"):
        raise AnalysisUtilsError(
            f"reference must be 'previous', 'first' or a 1-based step number, got {reference!r}."
        )
    if n_steps < 2:
        raise AnalysisUtilsError(
            f"Comparing steps needs features with at least 2 steps, got {n_steps}."
        )
    to = list(range(1, n_steps))
    start = [t - 1 for t in to] if reference == "previous" else [0] * len(to)
    return start, to


def pair_metrics_over_steps(features, labels, reference: str | int = "previous"
                            ) -> pd.DataFrame:
    """The five pairwise metrics between steps of features [T, N, D], batched over pairs.

    ``reference="previous"`` compares each step with the one before (1->2, 2->3, ...);
    ``"first"`` compares step 1 with each later step (1->2, 1->3, ...); a 1-based step ``s``
    compares step s with each later step (s->s+1, s->s+2, ...; for example the step from
    :func:`first_image_dependent_step`). Returns one row per pair with the 1-based columns
    "step_from", "step_to" and the study's five keys.
    """
    features = as_features(features, "features")
    if features.dim() != 3:
        raise AnalysisUtilsError(
            f"features must have the layout [T, N, D], got shape {tuple(features.shape)}."
        )
    start, to = _step_pairs(features.shape[0], reference)
    lab = as_labels(labels, features.shape[1], features.device)
    chunk = _steps_per_block(features)  # blocks of pairs, as trajectory() takes steps
    blocks = []
    for first in range(0, len(to), chunk):
        Xb = features[start[first:first + chunk]]
        Xa = features[to[first:first + chunk]]
        blocks.append(_pair_metrics_batched(Xb, Xa, lab))
    values = {key: np.concatenate([np.atleast_1d(np.asarray(block[key])) for block in blocks])
              for key in PAIR_METRIC_KEYS}
    table = pd.DataFrame({"step_from": np.array(start) + 1, "step_to": np.array(to) + 1})
    for key in PAIR_METRIC_KEYS:
        table[key] = values[key]
    return table


def first_image_dependent_step(features, rtol: float = 1e-4) -> int | None:
    """The first 1-based step at which features [T, N, D] depend on the image, or None.

    A step depends on the image when its features vary across the N images by more than
    ``rtol`` times their largest magnitude. Before the image reaches a readout (CORnet-RT's
    penult at t=1..3, ConvRNN's top areas for its first steps), every image gives the same
    features, driven by biases and the network's own state, and they differ only by float
    rounding (measured: ~1e-7 relative, against >= 1e-2 once the image arrives). Changes
    measured *from* such a step divide by distances that are rounding noise, so comparisons
    over steps start here.
    """
    features = as_features(features, "features")
    if features.dim() != 3:
        raise AnalysisUtilsError(
            f"features must have the layout [T, N, D], got shape {tuple(features.shape)}."
        )
    if not rtol > 0:
        raise AnalysisUtilsError(f"rtol must be positive, got {rtol}.")
    for index, state in enumerate(features):  # usually step 1 answers
        spread = (state - state.mean(0, keepdim=True)).abs().max()
        if spread > rtol * state.abs().max():
            return index + 1
    return None


# --------------------------------------------------------------------------------------------
# descriptive measures
# --------------------------------------------------------------------------------------------


def between_prototype_summary(X, labels) -> dict:
    """Mean and SD (numpy std, ddof 0) of the raw between-prototype cosine distances.

    This is the study's ``between_prototype_summary`` (its Fig. 2 numbers; it rounds to 3
    decimals when printing, we do not round). Returns ``dict(mean, sd, n_pairs)``; for features
    [T, N, D] ``mean`` and ``sd`` are arrays with one value per step.
    """
    X = as_features(X)
    lab = as_labels(labels, X.shape[-2], X.device)
    between = upper_triangle(_cosine_rdm(_prototypes(X, lab))).double()
    batched = X.dim() == 3
    return {
        "mean": _steps_or_single(between.mean(-1), batched),
        "sd": _steps_or_single(between.std(-1, correction=0), batched),
        "n_pairs": int(between.shape[-1]),
    }


def _topk_hits(scores: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 and top-5 accuracy in percent of ``scores`` [..., N, K] against ``target`` [N].

    With fewer than 5 choices every target is within the top 5 (top-k uses k = min(5, K)).
    """
    top1 = (scores.argmax(-1) == target).double().mean(-1) * 100.0
    top = scores.topk(min(5, scores.shape[-1]), dim=-1).indices
    top5 = (top == target.unsqueeze(-1)).any(-1).double().mean(-1) * 100.0
    return top1, top5


def _nearest_centroid_scores(X: torch.Tensor, lab: Labels, leave_one_out: bool) -> torch.Tensor:
    protos = _prototypes(X, lab)
    scores = F.normalize(X, dim=-1) @ F.normalize(protos, dim=-1).transpose(-1, -2)
    if leave_one_out:
        scores = _leave_one_out_scores(X, lab, scores, protos.index_select(X.dim() - 2, lab.index))
    return scores


def _leave_one_out_scores(X: torch.Tensor, lab: Labels, scores: torch.Tensor,
                          own: torch.Tensor) -> torch.Tensor:
    """``scores`` with each exemplar's own-class column rescored against its prototype
    computed without it (``own``: each exemplar's prototype [..., N, D])."""
    counts = lab.counts.to(X.dtype)[lab.index].unsqueeze(-1)
    own_without_self = (own * counts - X) / (counts - 1.0)
    own_score = F.cosine_similarity(X, own_without_self, dim=-1, eps=1e-12)
    return scores.scatter(-1, lab.index.expand(scores.shape[:-1]).unsqueeze(-1),
                          own_score.unsqueeze(-1))


def nearest_centroid_accuracy(X, labels, leave_one_out: bool = False) -> dict:
    """Nearest-centroid top-1/top-5 accuracy in percent, C-way (100-way in the study).

    Exemplars and prototypes are L2-normalised and each exemplar goes to the prototype with the
    highest cosine similarity. As in the study, prototypes include the exemplar being scored.
    ``leave_one_out=True`` (ours, not the study's) scores each exemplar against its own class
    prototype computed without it; it needs at least 2 exemplars per class. Returns
    ``dict(top1, top5)``: floats, or arrays over steps for features [T, N, D].
    """
    X = as_features(X)
    lab = as_labels(labels, X.shape[-2], X.device)
    batched = X.dim() == 3
    if not batched:
        top1, top5 = _topk_hits(_nearest_centroid_scores(X, lab, leave_one_out), lab.index)
        return {"top1": float(top1), "top5": float(top5)}
    chunk = _steps_per_block(X)
    hits = [_topk_hits(_nearest_centroid_scores(X[start:start + chunk], lab, leave_one_out),
                       lab.index) for start in range(0, X.shape[0], chunk)]
    return {"top1": _steps_or_single(torch.cat([h[0] for h in hits]), True),
            "top5": _steps_or_single(torch.cat([h[1] for h in hits]), True)}


def _logit_targets(labels, class_index, n: int, n_outputs: int, device) -> torch.Tensor:
    lab = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    index = np.asarray(class_index.detach().cpu() if isinstance(class_index, torch.Tensor)
                       else class_index)
    if lab.ndim != 1 or lab.shape[0] != n or lab.dtype.kind not in "iu":
        raise AnalysisUtilsError(
            f"labels must be {n} integers 0..C-1 (one per image), got shape {lab.shape} and "
            f"dtype {lab.dtype}."
        )
    if index.ndim != 1 or index.dtype.kind not in "iu" or index.size == 0:
        raise AnalysisUtilsError(
            "class_index must be a 1-D integer sequence: class_index[c] is the classifier "
            f"output of category c; got shape {index.shape} and dtype {index.dtype}."
        )
    if lab.min() < 0 or lab.max() >= index.size:
        raise AnalysisUtilsError(
            f"labels must lie in 0..{index.size - 1} (one per entry of class_index), got "
            f"values from {lab.min()} to {lab.max()}."
        )
    if index.min() < 0 or index.max() >= n_outputs:
        raise AnalysisUtilsError(
            f"class_index entries must be classifier outputs 0..{n_outputs - 1}, got values "
            f"from {index.min()} to {index.max()}."
        )
    return torch.from_numpy(index.astype(np.int64)[lab.astype(np.int64)]).to(device)


def logit_accuracy(logits, labels, class_index) -> dict:
    """Top-1/top-5 accuracy in percent of the classifier's own outputs (the study's Table 1).

    ``logits`` is [N, K] (or [T, N, K]); ``labels`` are category numbers 0..C-1 and
    ``class_index[c]`` is the output index of category c (for example its ImageNet index), so
    an image counts as correct when the argmax over all K outputs is its category's output.
    Returns ``dict(top1, top5)``: floats, or arrays over steps.
    """
    logits = as_features(logits, "logits")
    target = _logit_targets(labels, class_index, logits.shape[-2], logits.shape[-1],
                            logits.device)
    top1, top5 = _topk_hits(logits, target)
    batched = logits.dim() == 3
    return {"top1": _steps_or_single(top1, batched), "top5": _steps_or_single(top5, batched)}


def _knn_same_label_counts(X: torch.Tensor, lab: Labels, n_neighbours: int,
                           chunk: int = 1024) -> torch.Tensor:
    """For one state [N, D]: how many of the r-th nearest neighbours share the label, per r."""
    unit = F.normalize(X, dim=-1)
    counts = torch.zeros(n_neighbours, dtype=torch.float64, device=X.device)
    for start in range(0, X.shape[0], chunk):
        rows = torch.arange(start, min(start + chunk, X.shape[0]), device=X.device)
        similarity = unit[rows] @ unit.T
        similarity[torch.arange(rows.numel(), device=X.device), rows] = -torch.inf
        neighbours = similarity.topk(n_neighbours, dim=1).indices
        same = lab.index[neighbours] == lab.index[rows].unsqueeze(1)
        counts += same.double().sum(0)
    return counts


def knn_category_preservation(X, labels, max_k: int = 50):
    """k-NN category preservation curve (cosine similarity), as the study defines it.

    For k = 2..max_k the neighbourhood of a point has k - 1 other points (k counts the point
    itself, as in the study) and the score is ``100 * #same-label neighbours / (N (k - 1))``.
    Unlike the study, the point itself is excluded by index rather than assumed to rank first,
    so duplicate images cannot break it. Returns ``(ks, pct)``: ``ks`` [max_k - 1] and ``pct``
    [max_k - 1] (or [T, max_k - 1] for features [T, N, D]; one step at a time, since each step
    needs an N x N similarity matrix).
    """
    X = as_features(X)
    n = X.shape[-2]
    if int(max_k) != max_k or not 2 <= max_k <= n:
        raise AnalysisUtilsError(f"max_k must be an integer from 2 to N = {n}, got {max_k}.")
    max_k = int(max_k)
    lab = as_labels(labels, n, X.device, min_classes=1, min_per_class=1)  # no prototypes
    ks = np.arange(2, max_k + 1)
    states = X if X.dim() == 3 else X.unsqueeze(0)
    pct = np.stack([
        100.0 * torch.cumsum(_knn_same_label_counts(state, lab, max_k - 1), 0).cpu().numpy()
        / (n * (ks - 1))
        for state in states
    ])
    return ks, (pct if X.dim() == 3 else pct[0])


def _participation_ratio_of_rows(X: torch.Tensor) -> float:
    """(tr Σ)^2 / tr(Σ^2) of the covariance of the rows of one state [N, D]."""
    centred = X - X.mean(dim=0, keepdim=True)
    gram = centred @ centred.T if centred.shape[0] <= centred.shape[1] else centred.T @ centred
    gram = gram.double()
    trace = torch.diagonal(gram).sum()
    return float(trace**2 / (gram**2).sum())


def effective_dimension(X):
    """Participation ratio ``(tr Σ)^2 / tr(Σ^2)`` of the centred feature covariance.

    The study's definition (eigenvalues of Σ = centred covariance / (N - 1)); the same number is
    computed without an eigendecomposition, from the smaller of the N x N and D x D Gram
    matrices (the 1 / (N - 1) cancels). Returns a float, or an array over steps for [T, N, D]
    (one step at a time to bound memory).
    """
    X = as_features(X)
    if X.dim() == 2:
        return _participation_ratio_of_rows(X)
    return np.array([_participation_ratio_of_rows(state) for state in X])


def _orthogonality_batched(P: torch.Tensor) -> dict:
    """Orthogonality measures of prototypes [B, C, D] -> {name: tensor [B]}."""
    P = P.double()
    n_classes = P.shape[-2]
    raw_between = upper_triangle(_cosine_rdm(P))
    centred = _centred(P)
    centred_cos = 1.0 - upper_triangle(_cosine_rdm(centred))
    gram = centred @ centred.transpose(-1, -2)
    trace = torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1)
    grand_mean_norm = torch.linalg.vector_norm(P.mean(dim=-2), dim=-1)
    spread = torch.sqrt((centred**2).sum(-1).mean(-1))
    return {
        "raw_between_mean": raw_between.mean(-1),
        "raw_between_sd": raw_between.std(-1, correction=0),
        "centred_mean_cosine": centred_cos.mean(-1),
        "centred_rms_cosine": torch.sqrt((centred_cos**2).mean(-1)),
        "centred_mean_abs_cosine": centred_cos.abs().mean(-1),
        "centred_equiangularity": centred_cos.std(-1, correction=0),
        "centred_pr_fraction": trace**2 / (gram**2).sum((-1, -2)) / (n_classes - 1),
        "grand_mean_norm_ratio": grand_mean_norm / spread,
    }


def orthogonality(X, labels) -> dict:
    """How orthogonal the category prototypes are, raw and centred (ours, beyond the study).

    The study reads orthogonality only off the raw between-prototype distribution (a mean near
    1 with a small SD); that is "raw_between_mean" / "raw_between_sd" (ddof 0). Raw cosines of
    ReLU features are dominated by the shared mean, so the centred prototypes
    ``μ_c - mean_c μ_c`` are measured too, over the C (C - 1) / 2 pairs:

    - "centred_mean_cosine": mean centred cosine; with equal norms it is exactly -1 / (C - 1)
      whatever the geometry, so it says little on its own.
    - "centred_rms_cosine": root mean square centred cosine (= the Gram deviation
      ``||G - I||_F / sqrt(C (C - 1))``); 0 for orthogonal, 1 / (C - 1) for a simplex ETF.
    - "centred_mean_abs_cosine": mean absolute centred cosine.
    - "centred_equiangularity": SD (ddof 0) of the centred cosines; 0 when all angles are equal.
    - "centred_pr_fraction": participation ratio of the centred prototypes' C x C Gram
      eigenvalues divided by its maximum C - 1 (1 for a simplex ETF).
    - "grand_mean_norm_ratio": norm of the grand-mean prototype over the RMS norm of the centred
      prototypes, so a change in mean activity can be told apart from a change in structure.

    Returns floats, or arrays over steps for features [T, N, D].
    """
    X = as_features(X)
    lab = as_labels(labels, X.shape[-2], X.device, min_classes=3)
    P = _prototypes(X, lab)
    batched = X.dim() == 3
    values = _orthogonality_batched(P if batched else P.unsqueeze(0))
    return {key: _steps_or_single(value if batched else value[0], batched)
            for key, value in values.items()}


def trajectory(features, labels, logits_class_index=None) -> pd.DataFrame:
    """Every descriptive measure at every step of features [T, N, D]: one row per step.

    Columns: "step" (1-based); "cluster_size" and "cluster_size_euclidean" (mean
    exemplar-prototype cosine / Euclidean distance); "between_mean", "between_sd" (raw
    between-prototype cosine distances, ddof 0); "nc_top1", "nc_top5" (nearest-centroid, as the
    study) and "nc_loo_top1", "nc_loo_top5" (leave-one-out, ours); "effective_dimension";
    the centred orthogonality measures of :func:`orthogonality`; "mean_activation" and
    "zero_fraction" (mean feature value and fraction of exact zeros, to see activity changes).
    With ``logits_class_index`` the features are taken as logits and "logit_top1",
    "logit_top5" are added (labels must then be 0..C-1, see :func:`logit_accuracy`).
    """
    features = as_features(features, "features")
    if features.dim() != 3:
        raise AnalysisUtilsError(
            f"features must have the layout [T, N, D], got shape {tuple(features.shape)}."
        )
    lab = as_labels(labels, features.shape[1], features.device, min_classes=3)
    chunk = _steps_per_block(features)
    tables = [_trajectory_rows(features[start:start + chunk], lab, start + 1)
              for start in range(0, features.shape[0], chunk)]
    table = pd.concat(tables, ignore_index=True)
    if logits_class_index is not None:
        accuracy = logit_accuracy(features, labels, logits_class_index)
        table["logit_top1"] = accuracy["top1"]
        table["logit_top5"] = accuracy["top5"]
    return table


def _trajectory_rows(features: torch.Tensor, lab: Labels, first_step: int) -> pd.DataFrame:
    """The rows of :func:`trajectory` (without logit accuracy) for a block of steps."""
    P = _prototypes(features, lab)
    own = P.index_select(1, lab.index)  # each exemplar's prototype, shared by the measures below
    table = pd.DataFrame({"step": np.arange(first_step, first_step + features.shape[0])})
    table["cluster_size"] = (_exemplar_distances(features, lab, "cosine", own)
                             .double().mean(-1).cpu().numpy())
    table["cluster_size_euclidean"] = (_exemplar_distances(features, lab, "euclidean", own)
                                       .double().mean(-1).cpu().numpy())
    orth = {k: v.cpu().numpy() for k, v in _orthogonality_batched(P).items()}
    table["between_mean"] = orth.pop("raw_between_mean")
    table["between_sd"] = orth.pop("raw_between_sd")
    scores = F.normalize(features, dim=-1) @ F.normalize(P, dim=-1).transpose(-1, -2)
    for name, values in (("nc", scores),
                         ("nc_loo", _leave_one_out_scores(features, lab, scores, own))):
        top1, top5 = _topk_hits(values, lab.index)
        table[f"{name}_top1"] = top1.cpu().numpy()
        table[f"{name}_top5"] = top5.cpu().numpy()
    table["effective_dimension"] = effective_dimension(features)
    for key, value in orth.items():
        table[key] = value
    table["mean_activation"] = features.double().mean((-1, -2)).cpu().numpy()
    table["zero_fraction"] = (features == 0).double().mean((-1, -2)).cpu().numpy()
    return table
