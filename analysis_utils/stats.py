"""Everything that returns a p-value or an interval.

- :func:`local_lme`: the study's local test, a linear mixed-effects model of the per-exemplar
  change in exemplar-prototype distance with a random intercept per category, fitted by REML
  with an exact solver for this one model (numpy/scipy, a few ms) that equals statsmodels'
  ``mixedlm`` fit to its optimiser tolerance; ``engine="statsmodels"`` runs the study's call.
- :func:`permutation_between`: the study's global test, a paired permutation test of
  "Δ Between-Proto (%)". The swap masks are drawn exactly as the study draws them (one
  ``rng.random(N) < 0.5`` per permutation, in order, from ``numpy.random.default_rng(seed)``),
  so the null distribution is the study's; it is computed in batches of permutations as matrix
  products instead of a Python loop.
- :func:`bootstrap_ci`: percentile bootstrap intervals over categories for any per-category
  summary.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from .errors import AnalysisUtilsError, choice_error
from .geometry import (
    _check_pair,
    _masked_mean_pct_change,
    _prototypes,
    as_labels,
    upper_triangle,
)

# --------------------------------------------------------------------------------------------
# local test: linear mixed-effects model
# --------------------------------------------------------------------------------------------


def _vector(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype.kind not in "fiu":
        raise AnalysisUtilsError(
            f"{name} must be a 1-D array of numbers (one per exemplar), got shape "
            f"{values.shape} and dtype {values.dtype}."
        )
    if not np.all(np.isfinite(values)):
        raise AnalysisUtilsError(f"{name} contains NaN or infinite values.")
    return values


LME_ENGINES = ("exact", "statsmodels")

#: log10 of the grid of gamma = tau^2 / sigma^2 searched for sign changes of the REML slope
_LOG10_GAMMA_GRID = np.linspace(-12.0, 12.0, 241)


@dataclass(frozen=True)
class _GroupSummary:
    """Sufficient statistics of ``y ~ 1 + (1 | group)``: per group size, mean and within SS."""

    sizes: np.ndarray  # n_g [G]
    means: np.ndarray  # ybar_g [G]
    within_ss: float  # sum_g sum_i (y_gi - ybar_g)^2

    @classmethod
    def of(cls, values: np.ndarray, groups: np.ndarray) -> _GroupSummary:
        index = np.unique(groups, return_inverse=True)[1].ravel()
        sizes = np.bincount(index).astype(np.float64)
        means = np.bincount(index, weights=values) / sizes
        order = np.lexsort((values, index))
        same_group = index[order][1:] == index[order][:-1]
        if not np.any(same_group & (values[order][1:] != values[order][:-1])):
            raise AnalysisUtilsError(
                "The mixed model needs distance_diff to vary within at least one category "
                "(it is constant within every category, so the REML fit is undefined)."
            )
        within_ss = float(np.sum((values - means[index]) ** 2))
        return cls(sizes=sizes, means=means, within_ss=within_ss)

    @property
    def n_total(self) -> float:
        return float(self.sizes.sum())

    def weights(self, gamma):
        """w_g = n_g / (1 + n_g gamma), for a scalar gamma [G] or a column of gammas [K, G]."""
        return self.sizes / (1.0 + self.sizes * gamma)

    def reml_terms(self, gamma):
        """For gamma [K, 1] (or scalar): mu, Q, the REML criterion and its slope in gamma.

        ``mu = sum w ybar / sum w`` (the GLS intercept), ``Q = SSW + sum w (ybar - mu)^2``
        (the GLS residual quadratic form r' V^-1 r with V = I + gamma Z Z'), criterion
        ``(N - 1) log Q + sum log(1 + n gamma) + log sum w`` (-2 x the profiled REML
        log-likelihood up to a constant) and its derivative
        ``-(N - 1) sum w^2 (ybar - mu)^2 / Q + sum w - sum w^2 / sum w``.
        """
        w = self.weights(gamma)
        total_w = w.sum(axis=-1, keepdims=True)
        mu = (w * self.means).sum(axis=-1, keepdims=True) / total_w
        deviation = self.means - mu
        q = self.within_ss + (w * deviation**2).sum(axis=-1, keepdims=True)
        dof = self.n_total - 1.0
        criterion = (dof * np.log(q) + np.log1p(self.sizes * gamma).sum(axis=-1, keepdims=True)
                     + np.log(total_w))
        slope = (-dof * (w**2 * deviation**2).sum(axis=-1, keepdims=True) / q
                 + total_w - (w**2).sum(axis=-1, keepdims=True) / total_w)
        return mu, q, criterion, slope


def _reml_gamma(summary: _GroupSummary) -> float:
    """The REML estimate of gamma = tau^2 / sigma^2 >= 0: the global minimiser of the profiled
    criterion. Local minima are the boundary gamma = 0 (if the slope there is >= 0) and every
    sign change - to + of the slope on a log grid of gamma (1e-12 .. 1e12), each refined to
    machine precision by Brent's root finder on the analytic slope."""
    from scipy.optimize import brentq

    def slope(gamma: float) -> float:
        return summary.reml_terms(np.array([[gamma]]))[3].item()

    def criterion(gamma: float) -> float:
        return summary.reml_terms(np.array([[gamma]]))[2].item()

    grid = np.concatenate([[0.0], 10.0 ** _LOG10_GAMMA_GRID])
    slopes = summary.reml_terms(grid[:, None])[3][:, 0]
    if slopes[-1] < 0:
        raise AnalysisUtilsError(
            "The mixed model's REML fit diverges (the within-category variance is zero up to "
            "rounding); distance_diff must vary within at least one category."
        )
    candidates = [0.0] if slopes[0] >= 0 else []
    for k in np.flatnonzero((slopes[:-1] < 0) & (slopes[1:] >= 0)):
        candidates.append(brentq(slope, grid[k], grid[k + 1], xtol=1e-300,
                                 rtol=4 * np.finfo(float).eps, maxiter=200))
    return min(candidates, key=criterion)


def _exact_fit(summary: _GroupSummary) -> tuple[float, float]:
    """(beta, se) of the REML fit: beta = mu(gamma_hat); se as statsmodels' ``bse_fe``.

    statsmodels takes the standard error from the inverse of minus the Hessian of the profiled
    REML log-likelihood (sigma^2 profiled out) in (beta, psi) with psi = gamma, evaluated at
    the estimate. For this model, with d_g = ybar_g - beta, S = sum w and Q as above:
    ``-H_bb = (N - 1) S / Q``, ``-H_bp = (N - 1) sum w^2 d / Q``,
    ``-H_pp = (N - 1) (sum w^3 d^2 / Q - (sum w^2 d^2)^2 / (2 Q^2)) - sum w^2 / 2
    + sum w^3 / S - (sum w^2)^2 / (2 S^2)``, and se^2 is the (beta, beta) entry of the inverse
    of that 2 x 2 matrix. On a balanced design -H_bp = 0 and se^2 = (Q / (N - 1)) / S.
    """
    gamma = _reml_gamma(summary)
    mu, q = (value.item() for value in summary.reml_terms(np.array([[gamma]]))[:2])
    w = summary.weights(gamma)
    d = summary.means - mu
    dof = summary.n_total - 1.0
    total_w, w2, w3 = w.sum(), (w**2).sum(), (w**3).sum()
    info_bb = dof * total_w / q
    info_bp = dof * np.sum(w**2 * d) / q
    info_pp = (dof * (np.sum(w**3 * d**2) / q - np.sum(w**2 * d**2) ** 2 / (2 * q**2))
               - w2 / 2 + w3 / total_w - w2**2 / (2 * total_w**2))
    variance = info_pp / (info_bb * info_pp - info_bp**2)
    if not variance > 0:
        raise AnalysisUtilsError(
            "The mixed model's information matrix is not positive definite at the REML "
            "estimate, so the intercept has no standard error; check distance_diff."
        )
    return mu, float(np.sqrt(variance))


def _statsmodels_fit(values: np.ndarray, groups: np.ndarray) -> dict:
    """The study's literal statsmodels call (warnings suppressed as there) and its numbers."""
    import statsmodels.formula.api as smf

    frame = pd.DataFrame({"distance_diff": values, "category": groups})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.mixedlm("distance_diff ~ 1", frame, groups=frame["category"]).fit(reml=True)
    interval = fit.conf_int().loc["Intercept"]
    return {
        "beta": float(fit.fe_params["Intercept"]),
        "se": float(fit.bse_fe["Intercept"]),
        "ci_low": float(interval.iloc[0]),
        "ci_high": float(interval.iloc[1]),
        "p": float(fit.pvalues["Intercept"]),
    }


def local_lme(d_before, d_after, labels, engine: str = "exact") -> dict:
    """The study's local test: ``distance_diff ~ 1`` with a random intercept per category.

    ``distance_diff = d_after - d_before`` per exemplar (for example from
    :func:`analysis_utils.geometry.exemplar_prototype_distances`), grouped by category
    (labels as strings, as the study), fitted by REML. Returns ``dict(beta, se, ci_low,
    ci_high, p, direction)``: the fixed intercept, its standard error (statsmodels'
    ``bse_fe``), the Wald 95 % interval ``beta -+ z_0.975 se`` (statsmodels' ``conf_int()``),
    the two-tailed z-test p-value ``2 (1 - Phi(|beta| / se))`` (``pvalues``), and
    "compaction" if beta < 0 else "expansion". On a balanced design beta equals the mean
    difference (the study's Δ Cluster Size).

    ``engine="exact"`` (default) solves this one model in closed form per variance ratio:
    with gamma = tau^2 / sigma^2, per category n_g, mean ybar_g and w_g = n_g / (1 + n_g
    gamma), beta = sum w ybar / sum w, Q = (within-category SS) + sum w (ybar - beta)^2, and
    gamma minimises the profiled REML criterion ``(N - 1) log Q + sum log(1 + n_g gamma) +
    log sum w`` over gamma >= 0 (the boundary gamma = 0, no category effect, included); the
    slope is zero to machine precision (log grid plus Brent root finding). The standard error
    is statsmodels' (the inverse Hessian in (beta, gamma), see :func:`_exact_fit`; on an
    unbalanced design it exceeds ``sqrt(sigma^2 / sum w)``). It equals statsmodels' fit up
    to statsmodels' optimiser tolerance: with its default tolerance the two differ by up to
    about 1e-5 relative on se (1e-4 on p); with ``gtol=1e-10`` by about 1e-11 (1e-9 at the boundary,
    where statsmodels stops at gamma ~ 1e-10); see tests/test_stats.py. On many 100 x 50
    designs (benchmarks/lme.py) statsmodels' optimisers stop short with a ConvergenceWarning
    that the study suppresses (se then off by up to ~10 %) or raise ``LinAlgError``; there
    the exact solution has the higher REML likelihood by statsmodels' own ``loglike``. It
    takes about 3 ms for 5000 exemplars in 100 categories instead of 0.7-2 s.
    ``engine="statsmodels"`` runs the study's literal call, ``smf.mixedlm("distance_diff ~ 1",
    frame, groups=frame["category"]).fit(reml=True)``, as a cross-check.
    """
    from scipy.stats import norm

    if engine not in LME_ENGINES:
        raise choice_error("local_lme engine", engine, LME_ENGINES)
    before = _vector(d_before, "d_before")
    after = _vector(d_after, "d_after")
    groups = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels
    groups = np.asarray(groups)
    if not (before.shape == after.shape == groups.shape):
        raise AnalysisUtilsError(
            f"d_before, d_after and labels must have one entry per exemplar, got shapes "
            f"{before.shape}, {after.shape} and {groups.shape}."
        )
    if np.unique(groups).size < 2:
        raise AnalysisUtilsError("The mixed model needs at least 2 categories.")
    values = after.astype(np.float64) - before.astype(np.float64)
    groups = groups.astype(str)
    if engine == "statsmodels":
        result = _statsmodels_fit(values, groups)
    else:
        beta, se = _exact_fit(_GroupSummary.of(values, groups))
        half_width = norm.ppf(0.975) * se
        result = {"beta": beta, "se": se, "ci_low": beta - half_width,
                  "ci_high": beta + half_width, "p": float(2 * norm.sf(abs(beta) / se))}
    result["direction"] = "compaction" if result["beta"] < 0 else "expansion"
    return result


# --------------------------------------------------------------------------------------------
# global test: permutation of "Δ Between-Proto (%)"
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PermutationResult:
    """The global permutation test; fields can also be read like a dict (``result["p_less"]``).

    The study's p-values have no +1 correction (so they can be exactly 0.0); the ``*_plus_one``
    versions are ``(k + 1) / (n_perm + 1)``.
    """

    observed: float
    p_two_tailed: float
    p_greater: float
    p_less: float
    p_two_tailed_plus_one: float
    p_greater_plus_one: float
    p_less_plus_one: float
    null: np.ndarray
    n_perm: int
    seed: int

    def __getitem__(self, key: str):
        if key not in self.__dataclass_fields__:
            raise AnalysisUtilsError(
                f"Unknown field {key!r}; expected one of: {', '.join(self.__dataclass_fields__)}."
            )
        return getattr(self, key)

    def to_dict(self) -> dict:
        return asdict(self)


def swap_masks(rng: np.random.Generator, n_perm: int, n: int) -> np.ndarray:
    """The next ``n_perm`` swap masks [n_perm, n], the same draws as ``n_perm`` calls of
    ``rng.random(n) < 0.5`` in order (numpy fills a 2-D request row by row from one stream)."""
    return rng.random((n_perm, n)) < 0.5


class _ClassBlocks:
    """Exemplars regrouped as [C, n_max] slots (padded), so class sums become one bmm."""

    def __init__(self, lab, n: int, device):
        counts = lab.counts.cpu().numpy()
        index = lab.index.cpu().numpy()
        self.n_classes, self.width = counts.size, int(counts.max())
        order = np.argsort(index, kind="stable")
        rank_in_class = np.empty(n, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank_in_class[order] = np.arange(n) - np.repeat(starts, counts)
        #: flat slot (class * width + rank within class) of each exemplar
        self.slot = torch.from_numpy(index * self.width + rank_in_class).to(device)

    def blocks(self, rows: torch.Tensor) -> torch.Tensor:
        """[N, ...] -> [C, n_max, ...] with zero padding."""
        out = rows.new_zeros((self.n_classes * self.width,) + tuple(rows.shape[1:]))
        out[self.slot] = rows
        return out.view(self.n_classes, self.width, *rows.shape[1:])


def _cosine_distances_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Upper-triangle cosine distances [B, C (C - 1) / 2] from Gram matrices [B, C, C].

    The same numbers as normalising rows (``F.normalize``, eps 1e-12) and taking ``1 - u u^T``.
    """
    norms = torch.diagonal(gram, dim1=-2, dim2=-1).clamp_min(0).sqrt().clamp_min(1e-12)
    return upper_triangle(1.0 - gram / (norms.unsqueeze(-1) * norms.unsqueeze(-2)))


def _column_centred(matrix: torch.Tensor) -> torch.Tensor:
    """``A H`` with the centring matrix H: subtract each row's mean."""
    return matrix - matrix.mean(dim=-1, keepdim=True)


def _double_centred(gram: torch.Tensor) -> torch.Tensor:
    """``H G H``: the Gram matrix of the rows after subtracting their mean row."""
    return _column_centred(gram) - _column_centred(gram).mean(dim=-2, keepdim=True)


def _p_values(null: np.ndarray, observed: float) -> dict:
    counts = {
        "p_two_tailed": int(np.sum(np.abs(null) >= abs(observed))),
        "p_greater": int(np.sum(null >= observed)),
        "p_less": int(np.sum(null <= observed)),
    }
    n = null.size
    values = {key: k / n for key, k in counts.items()}
    values.update({f"{key}_plus_one": (k + 1) / (n + 1) for key, k in counts.items()})
    return values


def permutation_between(X_before, X_after, labels, n_perm: int = 10000, seed: int = 42,
                        batch_size: int | None = None, device=None,
                        dtype: torch.dtype = torch.float64) -> PermutationResult:
    """The study's global test: is the change in between-prototype distance beyond chance?

    Statistic: "Δ Between-Proto (%)" (mean over prototype pairs of the % change of the cosine
    distance between centred prototypes). Null: for each permutation, in order, the study's
    paired per-exemplar swap ``swap = rng.random(N) < 0.5`` from
    ``numpy.random.default_rng(seed)`` exchanges the two states of the swapped exemplars, and
    the statistic is recomputed.

    Instead of cloning and re-averaging the features per permutation, a swapped prototype is
    the original plus the masked class mean of the differences: ``P_before' = P_before + E``
    and ``P_after' = P_after - E`` with ``E[c] = (1/n_c) sum_{i in c} swap_i (x_after_i -
    x_before_i)``. For ``batch_size`` permutations at once, E is one batched matrix product
    over classes, and the centred prototypes' Gram matrices follow from
    ``G' = G ± (P E^T H + H E P^T) + H E E^T H`` (H the centring matrix), so only [B, C, C]
    Gram matrices are formed per state; cosine distances come from the Gram matrices.

    The arithmetic runs in ``dtype`` (float64 by default, so the batched algebra adds no
    rounding of its own and the null equals a float64 loop to ~1e-12 and the study's float32
    loop to its float32 rounding; float32 is about 1.5-3x faster on this CPU and more on a GPU,
    but carries float32 rounding, amplified when the states differ by a large common shift)
    on ``device`` (default: the features' device). ``batch_size`` defaults to about 8 MB (CPU;
    larger batches measured up to 2.5x slower there, their allocations cost page faults) or
    512 MB (GPU) of class sums ``[C, B, D]`` per batch. The observed value is computed by the
    same code with no swaps (it equals "Δ Between-Proto (%)" of
    :func:`analysis_utils.geometry.pair_metrics`). Returns a :class:`PermutationResult` with
    the study's p-values (two-tailed ``mean(|null| >= |obs|)``, ``mean(null >= obs)``,
    ``mean(null <= obs)``; no +1), their ``(k + 1) / (n + 1)`` versions and the null.
    """
    if int(n_perm) != n_perm or n_perm < 1:
        raise AnalysisUtilsError(f"n_perm must be a positive integer, got {n_perm}.")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise AnalysisUtilsError(
            f"batch_size must be a positive integer or None, got {batch_size}."
        )
    if dtype not in (torch.float32, torch.float64):
        raise AnalysisUtilsError(f"dtype must be torch.float32 or torch.float64, got {dtype}.")
    Xb, Xa = _check_pair(X_before, X_after)
    device = torch.device(device) if device is not None else Xb.device
    n, dim = Xb.shape
    lab = as_labels(labels, n, device)
    Xb, Xa = Xb.to(device=device, dtype=dtype), Xa.to(device=device, dtype=dtype)

    # Centred prototypes of both states and their Gram matrices G = P P^T [C, C].
    proto_before = _prototypes(Xb, lab)
    proto_after = _prototypes(Xa, lab)
    centred_before = proto_before - proto_before.mean(0, keepdim=True)
    centred_after = proto_after - proto_after.mean(0, keepdim=True)
    gram_before = centred_before @ centred_before.T
    gram_after = centred_after @ centred_after.T

    # A swap adds E[c] = sum_{i in c} swap_i (x_after_i - x_before_i) / n_c to the before
    # prototype of class c and subtracts it from the after prototype; centring subtracts the
    # class mean of E. With the differences already divided by their class size, the class
    # sums become one batched product over classes. The cross terms P E^T are built from
    # Q = P (weighted differences)^T [C, N], so no [B, C, D] product per state is needed.
    blocks = _ClassBlocks(lab, n, device)
    weighted_diff = (Xa - Xb) / lab.counts.to(dtype)[lab.index].unsqueeze(1)
    diff_blocks = blocks.blocks(weighted_diff)  # [C, n_max, D]
    cross_before_blocks = blocks.blocks(weighted_diff @ centred_before.T).transpose(1, 2)
    cross_after_blocks = blocks.blocks(weighted_diff @ centred_after.T).transpose(1, 2)

    observed = float(_masked_mean_pct_change(_cosine_distances_from_gram(gram_before[None]),
                                             _cosine_distances_from_gram(gram_after[None]))[0])
    if batch_size is None:  # [C, B, D] class sums of ~8 MB on a CPU, ~512 MB on a GPU
        budget = 2**29 if device.type == "cuda" else 2**23
        batch_size = min(1024, max(16, budget // (lab.n_classes * dim * Xb.element_size())))
    batch_size = int(batch_size)

    rng = np.random.default_rng(seed)
    null = np.empty(int(n_perm), dtype=np.float64)
    for start in range(0, int(n_perm), batch_size):
        count = min(batch_size, int(n_perm) - start)
        swap = torch.from_numpy(swap_masks(rng, count, n)).to(device=device, dtype=dtype)
        swap_blocks = blocks.blocks(swap.T)  # [C, n_max, B]
        shift = torch.bmm(swap_blocks.transpose(1, 2), diff_blocks)  # [C, B, D]: E per perm
        shift = shift.transpose(0, 1)  # [B, C, D], a strided view
        shift_gram = _double_centred(torch.matmul(shift, shift.transpose(1, 2)))  # Ẽ Ẽ^T
        # P_centred E^T, then centred over E's class: [C', C, B] -> [B, C, C']
        cross_before = _column_centred(torch.bmm(cross_before_blocks, swap_blocks).permute(2, 1, 0))
        cross_after = _column_centred(torch.bmm(cross_after_blocks, swap_blocks).permute(2, 1, 0))
        swapped_before = gram_before + cross_before + cross_before.transpose(1, 2) + shift_gram
        swapped_after = gram_after - cross_after - cross_after.transpose(1, 2) + shift_gram
        null[start:start + count] = _masked_mean_pct_change(
            _cosine_distances_from_gram(swapped_before),
            _cosine_distances_from_gram(swapped_after),
        ).cpu().numpy()

    return PermutationResult(observed=observed, **_p_values(null, observed), null=null,
                             n_perm=int(n_perm), seed=int(seed))


# --------------------------------------------------------------------------------------------
# bootstrap intervals over categories
# --------------------------------------------------------------------------------------------


def bootstrap_ci(per_category_values, n_boot: int = 10000, seed: int = 42,
                 statistic: Callable = np.mean, level: float = 0.95, chunk: int = 1000):
    """Percentile bootstrap interval of ``statistic`` over categories.

    ``per_category_values`` is [K] (one value per category) or [K, ...] (for example [K, T]:
    one value per category and step, giving one interval per step). Categories are resampled
    with replacement ``n_boot`` times from ``numpy.random.default_rng(seed)``; ``statistic``
    is called as ``statistic(samples, axis=1)`` on [n_boot, K, ...] (numpy reductions such as
    ``np.mean`` or ``np.median`` work). Returns ``(low, high)``: floats for [K] input, arrays
    otherwise.
    """
    if isinstance(per_category_values, torch.Tensor):
        per_category_values = per_category_values.detach().cpu().numpy()
    values = np.asarray(per_category_values, dtype=np.float64)
    if values.ndim < 1 or values.shape[0] < 2:
        raise AnalysisUtilsError(
            f"per_category_values must have one row per category (at least 2), got shape "
            f"{values.shape}."
        )
    if not np.all(np.isfinite(values)):
        raise AnalysisUtilsError(
            "per_category_values contains NaN or infinite values; drop those categories first."
        )
    if not 0 < level < 1:
        raise AnalysisUtilsError(f"level must lie strictly between 0 and 1, got {level}.")
    if int(n_boot) != n_boot or n_boot < 1:
        raise AnalysisUtilsError(f"n_boot must be a positive integer, got {n_boot}.")
    rng = np.random.default_rng(seed)
    n_categories = values.shape[0]
    draws = []
    for start in range(0, int(n_boot), chunk):
        count = min(chunk, int(n_boot) - start)
        samples = values[rng.integers(0, n_categories, size=(count, n_categories))]
        try:
            result = np.asarray(statistic(samples, axis=1), dtype=np.float64)
        except TypeError as error:
            raise AnalysisUtilsError(
                "statistic must accept an axis argument, like np.mean or np.median "
                f"({error})."
            ) from None
        if result.shape != (count,) + values.shape[1:]:
            raise AnalysisUtilsError(
                f"statistic(samples, axis=1) must reduce the category axis, giving shape "
                f"{(count,) + values.shape[1:]}, got {result.shape}."
            )
        draws.append(result)
    draws = np.concatenate(draws)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail], axis=0)
    if values.ndim == 1:
        return float(low), float(high)
    return low, high
