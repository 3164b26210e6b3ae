"""RDMs of tagged features, cross-model RSA and MDS, as the reference study computes them.

An RDM travels with its tag (model, readout, state or step) in a :class:`TaggedRDM`, so no
analysis has to remember what row 17 was. The study's cross-model analysis (its Fig. 3):

- RDM: the C x C cosine-distance RDM of the **raw** (uncentred) class prototypes.
- RSA matrix: Spearman ρ between every two RDMs' strict upper triangles, all pairs computed
  (diagonal 1), stored as float32, NaN replaced by 0. ``method="rho_a"`` gives ρ_A instead,
  ``12 r's' / (n^3 - n)`` on centred average ranks (rsatoolbox's ``rho-a``: Spearman's ρ
  without the tie normalisation, so tied RDMs score below 1).
- MDS: metric MDS of ``1 - ρ`` with 2 components, random_state 42, n_init 10, max_iter 500;
  the raw stress is reported.

The book's claim test (mean ρ over pairs of different models, bootstrapped over categories)
is :func:`between_model_rho_bootstrap`, which ranks each RDM once instead of once per draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from .errors import AnalysisUtilsError, choice_error
from .geometry import _cosine_rdm, _prototypes, as_features, as_labels, upper_triangle


@dataclass(frozen=True)
class TaggedRDM:
    """One RDM [C, C] and what it is of: model, readout and state (a name or a 1-based step)."""

    model: str
    readout: str
    state: str | int
    rdm: torch.Tensor

    @property
    def label(self) -> str:
        """"<model> <readout> <state>", with an integer state written as "step <t>"."""
        state = f"step {self.state}" if isinstance(self.state, (int, np.integer)) else self.state
        return f"{self.model} {self.readout} {state}"


def tagged_rdm(model: str, readout: str, state: str | int, X, labels) -> TaggedRDM:
    """The raw-prototype cosine RDM of features X [N, D], tagged."""
    X = as_features(X, allow_steps=False)
    lab = as_labels(labels, X.shape[0], X.device)
    return TaggedRDM(str(model), str(readout), state, _cosine_rdm(_prototypes(X, lab)))


def tagged_rdms_over_steps(model: str, readout: str, features, labels) -> list[TaggedRDM]:
    """One tagged RDM per step of features [T, N, D]; states are steps 1..T."""
    features = as_features(features, "features")
    if features.dim() != 3:
        raise AnalysisUtilsError(
            f"features must have the layout [T, N, D], got shape {tuple(features.shape)}."
        )
    lab = as_labels(labels, features.shape[1], features.device)
    rdms = _cosine_rdm(_prototypes(features, lab))
    return [TaggedRDM(str(model), str(readout), step, rdms[step - 1])
            for step in range(1, features.shape[0] + 1)]


def _checked_labels(tagged: Sequence[TaggedRDM], at_least: int = 1) -> list[str]:
    """The tag labels of ``tagged`` after checking: TaggedRDMs, same shape, distinct tags."""
    if isinstance(tagged, TaggedRDM) or len(tagged) < at_least:
        raise AnalysisUtilsError(
            f"Pass a list of TaggedRDM objects (at least {'one' if at_least == 1 else at_least})."
        )
    for item in tagged:
        if not isinstance(item, TaggedRDM):
            raise AnalysisUtilsError(
                f"Every entry must be a TaggedRDM (see tagged_rdm), got {type(item).__name__}."
            )
    shapes = {tuple(item.rdm.shape) for item in tagged}
    if len(shapes) != 1:
        raise AnalysisUtilsError(
            f"All RDMs must have the same categories, got shapes {sorted(shapes)}; compute them "
            "on the same probe set."
        )
    labels = [item.label for item in tagged]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise AnalysisUtilsError(
            f"Each RDM needs a distinct tag, but these repeat: {', '.join(duplicates)}."
        )
    return labels


def _upper_vectors(tagged: Sequence[TaggedRDM]) -> tuple[np.ndarray, list[str]]:
    labels = _checked_labels(tagged)
    vectors = np.stack([upper_triangle(torch.as_tensor(item.rdm)).detach().cpu().numpy()
                        for item in tagged])
    return vectors, labels


def rank_correlation_matrix(vectors: np.ndarray, method: str = "spearman") -> np.ndarray:
    """Rank correlation between every two rows of ``vectors`` [M, P] (float64, NaN kept)."""
    if method not in ("spearman", "rho_a"):
        raise choice_error("RSA method", method, ("spearman", "rho_a"))
    ranks = rankdata(vectors, axis=1)
    ranks -= ranks.mean(axis=1, keepdims=True)
    products = ranks @ ranks.T
    if method == "rho_a":
        n = vectors.shape[1]
        return 12.0 * products / (n**3 - n)
    norms = np.sqrt(np.diag(products))
    with np.errstate(invalid="ignore", divide="ignore"):
        return products / np.outer(norms, norms)


def cross_model_rsa(tagged: Sequence[TaggedRDM], method: str = "spearman") -> pd.DataFrame:
    """RSA matrix between tagged RDMs: a DataFrame indexed (rows and columns) by tag label.

    Entry (i, j) is the Spearman ρ (or ρ_A with ``method="rho_a"``) between the strict upper
    triangles of RDMs i and j; all pairs are computed, values are float32 and NaN (a constant
    RDM) becomes 0, as in the study. Rows keep the order of ``tagged``.
    """
    vectors, labels = _upper_vectors(tagged)
    matrix = rank_correlation_matrix(vectors, method)
    matrix = np.nan_to_num((matrix + matrix.T) / 2.0, nan=0.0).astype(np.float32)
    return pd.DataFrame(matrix, index=labels, columns=labels)


def between_model_rho_bootstrap(tagged: Sequence[TaggedRDM], draws) -> tuple[float, np.ndarray]:
    """Mean Spearman ρ over every pair of different RDMs, observed and per bootstrap draw.

    ``tagged``: at least two TaggedRDMs over the same C categories (one per model, say).
    ``draws``: integer array [B, K], one resample of category indices 0..C-1 per row (for
    the usual bootstrap, ``rng.integers(0, C, size=(B, C))``).

    For one draw the statistic is what resampling the RDMs would give: every pair of positions
    p < q of the draw whose categories differ contributes the entry ``rdm[draw[p], draw[q]]``
    (pairs of a category with its own copy are dropped), each RDM's vector is ranked (average
    ranks for ties), ρ is the Pearson correlation of the ranks of two RDMs, and the statistic
    is the mean ρ over all pairs of RDMs, NaN-skipping: an RDM that is constant on the draw
    gives NaN ρ and drops out; if every ρ is NaN the statistic is NaN (so is a draw of a single
    category, which has no pair at all).

    No resampled vector is built. A draw only repeats the C (C - 1) off-diagonal entries,
    entry (a, b) with multiplicity ``#{p < q: draw[p] = a, draw[q] = b}`` (``n_a n_b`` on the
    upper triangle for a symmetric RDM). So each RDM is sorted once and its exactly-equal
    values grouped; per draw, a group's average rank is (weight of the groups below it) +
    (its weight + 1) / 2, and ρ is the weighted Pearson correlation of those ranks. The ranks
    are half-integers and their weighted sums are exact in float64, so the values equal the
    direct computation (scipy ``rankdata`` on the resampled vectors) to float64 rounding.

    Returns ``(observed, values)``: the statistic on the categories 0..C-1 once each (a float)
    and one value per draw (float64 array [B]).
    """
    labels = _checked_labels(tagged, at_least=2)
    rdms = np.stack([torch.as_tensor(item.rdm).detach().cpu().numpy() for item in tagged])
    rdms = rdms.astype(np.float64)
    if rdms.ndim != 3 or rdms.shape[1] != rdms.shape[2] or rdms.shape[1] < 2:
        raise AnalysisUtilsError(
            f"Each RDM must be a square matrix [C, C] with C >= 2, got shape {rdms.shape[1:]}."
        )
    if not np.all(np.isfinite(rdms)):
        bad = [label for label, rdm in zip(labels, rdms) if not np.all(np.isfinite(rdm))]
        raise AnalysisUtilsError(
            f"The RDMs of {', '.join(bad)} contain NaN or infinite values; rank correlations "
            "need finite distances."
        )
    n_categories = rdms.shape[1]
    draws = np.concatenate([np.arange(n_categories)[None, :],  # the observed statistic first
                            _checked_draws(draws, n_categories)])
    symmetric = np.array_equal(rdms, rdms.transpose(0, 2, 1))
    if symmetric:  # a pair (a, b) and (b, a) of a draw gather the same value
        rows, cols = np.triu_indices(n_categories, k=1)
    else:
        rows, cols = np.nonzero(~np.eye(n_categories, dtype=bool))
    tie_groups = [_TieGroups.of(rdm[rows, cols]) for rdm in rdms]
    values = np.empty(len(draws))
    for start in range(0, len(draws), _DRAWS_PER_CHUNK):
        chunk = draws[start:start + _DRAWS_PER_CHUNK]
        if symmetric:
            counts = np.stack([np.bincount(draw, minlength=n_categories) for draw in chunk])
            weights = counts[:, rows] * counts[:, cols]
        else:
            weights = _ordered_pair_counts(chunk, n_categories)[:, rows, cols]
        values[start:start + len(chunk)] = _weighted_mean_between_rho(tie_groups, weights)
    return float(values[0]), values[1:]


_DRAWS_PER_CHUNK = 32  # bounds the memory: 32 draws x M RDMs x C (C - 1) entries of float64


def _checked_draws(draws, n_categories: int) -> np.ndarray:
    draws = np.asarray(draws)
    if draws.ndim != 2 or draws.shape[0] < 1 or draws.shape[1] < 2 \
            or draws.dtype.kind not in "iu":
        raise AnalysisUtilsError(
            f"draws must be an integer array [B, K] of category indices with B >= 1 and K >= 2, "
            f"got {draws.dtype} of shape {draws.shape}; use rng.integers(0, C, size=(B, C))."
        )
    if draws.min() < 0 or draws.max() >= n_categories:
        raise AnalysisUtilsError(
            f"draws must index categories 0..{n_categories - 1}, got values from {draws.min()} "
            f"to {draws.max()}."
        )
    return draws.astype(np.int64)


def _ordered_pair_counts(draws: np.ndarray, n_categories: int) -> np.ndarray:
    """[B, C, C]: entry (a, b) counts the positions p < q of a draw with categories a, b."""
    n_draws, n_positions = draws.shape
    p, q = np.triu_indices(n_positions, k=1)
    keys = draws[:, p] * n_categories + draws[:, q]
    keys += np.arange(n_draws)[:, None] * n_categories**2
    counts = np.bincount(keys.ravel(), minlength=n_draws * n_categories**2)
    return counts.reshape(n_draws, n_categories, n_categories)


@dataclass(frozen=True)
class _TieGroups:
    """One RDM's entries sorted once, for ranking them under any weights.

    ``order`` sorts the entries; in that sorted order, the tie group (exactly equal values) of
    entry e spans the positions ``group_start[e]`` to ``group_end[e] - 1``. With the cumulative
    weight ``cum`` of the sorted entries (``cum[0] = 0``), the average rank of entry e is
    ``cum[group_start[e]] + (group weight + 1) / 2 = (cum[group_start[e]] + cum[group_end[e]]
    + 1) / 2``.
    """

    order: np.ndarray
    group_start: np.ndarray
    group_end: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> _TieGroups:
        order = np.argsort(values, kind="stable")
        sorted_values = values[order]
        starts_group = np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])
        starts = np.flatnonzero(starts_group)
        ends = np.append(starts[1:], len(values))
        group_of_sorted = np.cumsum(starts_group) - 1
        group_start = np.empty(len(values), dtype=np.int64)
        group_end = np.empty(len(values), dtype=np.int64)
        group_start[order] = starts[group_of_sorted]
        group_end[order] = ends[group_of_sorted]
        return cls(order, group_start, group_end)


def _weighted_mean_between_rho(tie_groups: list[_TieGroups], weights: np.ndarray) -> np.ndarray:
    """Mean Spearman ρ over pairs of RDMs for each row of integer entry weights [B, E]."""
    weights = weights.astype(np.float64)
    n_draws, n_entries = weights.shape
    total = weights.sum(axis=1, keepdims=True)  # the length of the resampled vectors
    cumulative = np.zeros((n_draws, n_entries + 1))
    # twice the centred average ranks: 2 rank - (total + 1), where (total + 1) / 2 is the mean
    # of the average ranks of any `total` values
    centred = np.empty((n_draws, len(tie_groups), n_entries))
    weighted = np.empty_like(centred)
    for m, groups in enumerate(tie_groups):
        np.cumsum(weights[:, groups.order], axis=1, out=cumulative[:, 1:])
        np.add(cumulative[:, groups.group_start], cumulative[:, groups.group_end],
               out=centred[:, m])
        centred[:, m] -= total
        np.multiply(centred[:, m], weights, out=weighted[:, m])
    # integer ranks and weights: these sums are exact in float64, so the variance of a vector
    # that is constant on the draw is exactly 0 and its ρ is 0 / 0 = NaN; the factor 2 cancels
    products = weighted @ centred.transpose(0, 2, 1)
    variances = np.diagonal(products, axis1=1, axis2=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = products / np.sqrt(variances[:, :, None] * variances[:, None, :])
        upper = np.triu_indices(len(tie_groups), k=1)
        pairs = rho[:, upper[0], upper[1]]
        valid = ~np.isnan(pairs)
        return np.where(valid, pairs, 0.0).sum(axis=1) / valid.sum(axis=1)


def mds(rsa_frame: pd.DataFrame, n_components: int = 2, random_state: int = 42,
        n_init: int = 10, max_iter: int = 500):
    """Metric MDS of the dissimilarity ``1 - ρ`` with the study's settings.

    Returns ``(coords, stress)``: a DataFrame indexed like ``rsa_frame`` with columns
    "dim1".."dimK", and sklearn's raw stress (``normalized_stress=False``). Random starts
    (``init="random"``) as the study's sklearn; note that sklearn >= 1.7 changed the
    convergence tolerance, so stresses can differ slightly from the study's 0.107 / 0.086.
    """
    from sklearn.manifold import MDS

    if not isinstance(rsa_frame, pd.DataFrame) or rsa_frame.shape[0] != rsa_frame.shape[1] \
            or list(rsa_frame.index) != list(rsa_frame.columns):
        raise AnalysisUtilsError(
            "rsa_frame must be the square DataFrame from cross_model_rsa (same rows and columns)."
        )
    if rsa_frame.shape[0] <= n_components:
        raise AnalysisUtilsError(
            f"MDS into {n_components} dimensions needs more than {n_components} RDMs, got "
            f"{rsa_frame.shape[0]}."
        )
    rho = rsa_frame.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(rho)):
        raise AnalysisUtilsError("rsa_frame contains NaN or infinite values.")
    dissimilarity = 1.0 - (rho + rho.T) / 2.0
    np.fill_diagonal(dissimilarity, 0.0)
    model = MDS(n_components=n_components, metric_mds=True, metric="precomputed",
                init="random", n_init=n_init, max_iter=max_iter, random_state=random_state,
                normalized_stress=False)
    coords = model.fit_transform(dissimilarity)
    columns = [f"dim{i + 1}" for i in range(n_components)]
    return pd.DataFrame(coords, index=rsa_frame.index, columns=columns), float(model.stress_)


def to_rsatoolbox(tagged: Sequence[TaggedRDM], categories=None):
    """Export tagged RDMs to one ``rsatoolbox.rdm.RDMs`` object (needs rsatoolbox installed).

    The RDM descriptors carry "model", "readout", "state" and "label"; ``categories`` (one name
    per RDM row, optional) becomes the pattern descriptor "category".
    """
    try:
        from rsatoolbox.rdm import RDMs
    except ImportError:
        raise AnalysisUtilsError(
            "to_rsatoolbox needs the rsatoolbox package, which is not installed; install it "
            "with `pip install rsatoolbox` or use cross_model_rsa instead."
        ) from None
    vectors, labels = _upper_vectors(tagged)
    n_categories = tagged[0].rdm.shape[0]
    pattern_descriptors = None
    if categories is not None:
        categories = list(categories)
        if len(categories) != n_categories:
            raise AnalysisUtilsError(
                f"categories must name each of the {n_categories} RDM rows, got "
                f"{len(categories)} names."
            )
        pattern_descriptors = {"category": categories}
    return RDMs(
        dissimilarities=vectors.astype(np.float64),
        dissimilarity_measure="cosine",
        rdm_descriptors={
            "model": [item.model for item in tagged],
            "readout": [item.readout for item in tagged],
            "state": [str(item.state) for item in tagged],
            "label": labels,
        },
        pattern_descriptors=pattern_descriptors,
    )
