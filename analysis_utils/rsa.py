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


def _upper_vectors(tagged: Sequence[TaggedRDM]) -> tuple[np.ndarray, list[str]]:
    if isinstance(tagged, TaggedRDM) or len(tagged) < 1:
        raise AnalysisUtilsError("Pass a list of TaggedRDM objects (at least one).")
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
