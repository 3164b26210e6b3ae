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

import queue
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from .errors import AnalysisUtilsError, choice_error
from .geometry import _PCT_FLOOR, _check_pair, _prototypes, as_labels

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


def _matmul(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = a @ b`` for stacks of matrices. On a CPU the product runs in numpy on the same
    memory: numpy's OpenBLAS ran these shapes 1.6-2x faster than torch's MKL on the AMD CPU
    of benchmarks/permutation.py (MKL takes its AVX2 path there). On a GPU it is torch's."""
    if out.device.type == "cpu":
        np.matmul(a.numpy(), b.numpy(), out=out.numpy())
        return out
    return torch.matmul(a, b, out=out)


def _between_change(grams: torch.Tensor, upper: torch.Tensor, scratch: torch.Tensor,
                    kept: torch.Tensor) -> torch.Tensor:
    """"Δ Between-Proto (%)" [k] from the centred prototypes' Gram matrices of both states,
    ``grams`` [k, 2 (before, after), C, C] in float64, which it overwrites with the cosines.

    Cosines are ``G[c, c'] / (n_c n_c')`` with the norms ``n = sqrt(diag G)`` clamped at 1e-12
    (as ``F.normalize``); the study's per-pair % change of the distance, ``(d_after - d_before)
    / d_before * 100`` with ``d = 1 - cos``, is ``(cos_before - cos_after) / d_before * 100``,
    averaged over the pairs c < c' (``upper`` [C, C], the study's upper triangle) whose
    ``d_before`` exceeds 1e-12. ``scratch`` [k, C, C] (float64) and ``kept`` [k, C, C] (bool)
    are work buffers. An excluded pair is divided by at least 1e-12 (so it stays finite) before
    its weight 0 removes it: on a CPU this is faster than ``torch.where``.
    """
    inverse_norms = grams.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt_().clamp_min_(1e-12)
    inverse_norms.reciprocal_()
    grams *= inverse_norms.unsqueeze(-1)
    grams *= inverse_norms.unsqueeze(-2)
    cos_before, cos_after = grams[:, 0], grams[:, 1]
    baseline = torch.sub(1.0, cos_before, out=scratch)
    torch.gt(baseline, _PCT_FLOOR, out=kept)
    kept &= upper
    change = cos_before.sub_(cos_after).div_(baseline.clamp_min_(_PCT_FLOOR)).mul_(kept)
    return change.sum((-1, -2)) * 100.0 / kept.sum((-1, -2))


class _SwapAlgebra:
    """What a swap does to the centred prototypes' Gram matrices, for batches of swap masks.

    A swap adds ``E[c] = sum_{i in c} swap_i (x_after_i - x_before_i) / n_c`` to the before
    prototype of class c and subtracts it from the after prototype. With ``P`` a state's
    centred prototypes (so ``H P = P`` for the centring matrix H) and ``G = P P^T``, the swapped
    centred prototypes have the Gram matrices

    - before: ``G_before + X_before H + H X_before^T + H E E^T H``,
    - after:  ``G_after - X_after H - H X_after^T + H E E^T H``,

    with ``X = P E^T`` for that state's ``P``. The change common to all exemplars, ``mu`` (the
    mean of ``x_after - x_before``), is taken out before anything is rounded to ``dtype``:
    ``E = Ẽ + phi mu^T`` with ``phi[c]`` the fraction of class c swapped and ``Ẽ[c] = sum_{i in
    c} swap_i w_i``, ``w_i = (x_after_i - x_before_i - mu) / n_c``. Then ``X = X̃ + m phi^T``
    with ``X̃ = P Ẽ^T`` and ``m = P mu``, and ``E E^T = Ẽ Ẽ^T + b phi^T + phi b^T`` with ``b =
    Ẽ mu + |mu|^2 phi / 2``. Since ``X̃[c, c'] = sum_{i in c'} swap_i (P_c . w_i)``, Ẽ, both
    X̃ and ``Ẽ mu`` come from one product per class: the masks of its exemplars [B, n_c] times
    its rows of ``[w | w P_before^T | w P_after^T | w . mu]`` [n_c, D + 2C + 1]; ``Ẽ Ẽ^T`` is one
    batched product.

    Centring turns a matrix M into ``M - r 1^T - 1 r^T`` plus a constant, so each swapped Gram
    matrix is ``G + Y + U V^T + V U^T`` with the class-specific part ``Y = ±(X̃ + X̃^T) + Ẽ
    Ẽ^T`` (+ before, - after), ``V = [phi | 1]`` and ``U = [q | -r]``, ``q = ±m + b`` and ``r``
    the centring terms (``±x + f``: ``x`` the row means of X, ``f`` those of ``E E^T`` less half
    their mean). The products and ``Y`` are in ``dtype``; ``G``, the rank-4 term ``U V^T + V
    U^T`` (one batched float64 product) and the cosines are in float64, so float32 rounds only
    the part of the change a swap makes that is not common to all classes, which the centring
    would otherwise cancel.
    """

    def __init__(self, Xb: torch.Tensor, Xa: torch.Tensor, lab, dtype: torch.dtype):
        device = Xb.device
        n, dim = Xb.shape
        counts = lab.counts.cpu().numpy()
        index = lab.index.cpu().numpy()
        c = counts.size
        self.n, self.dim, self.n_classes = n, dim, c
        self.dtype, self.device = dtype, device
        # slots[c, k]: the k-th exemplar of class c; slots past a class's size point at the
        # extra column n, which never holds a swap
        order = np.argsort(index, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(n) - np.repeat(starts, counts)
        slots = np.full((c, int(counts.max())), n, dtype=np.int64)
        slots[index[order], rank] = order
        self.slots = torch.from_numpy(slots.reshape(-1)).to(device)
        self.counts = lab.counts.to(dtype)

        proto_before = _prototypes(Xb.double(), lab)
        weighted = Xa.double()  # becomes w in place (one [N, D] float64 array at a time)
        proto_after = _prototypes(weighted, lab)
        centred_before = proto_before - proto_before.mean(0, keepdim=True)
        centred_after = proto_after - proto_after.mean(0, keepdim=True)
        # G of both states [2, C, C], m = P mu [2, C] and the sign of X̃ in each
        self.grams = torch.stack([centred_before @ centred_before.T,
                                  centred_after @ centred_after.T])
        sizes = lab.counts.double()
        common = sizes @ (proto_after - proto_before) / n  # mu [D]
        self.common_sq = float(common @ common)
        self.common_cross = torch.stack([centred_before @ common, centred_after @ common])
        self.signs = torch.tensor([1.0, -1.0], dtype=torch.float64, device=device).view(2, 1)
        self.upper = torch.ones(c, c, dtype=torch.bool, device=device).triu_(1)  # c < c'
        weighted -= Xb
        weighted -= common
        weighted /= sizes[lab.index].unsqueeze(1)
        rows = torch.zeros(n + 1, dim + 2 * c + 1, dtype=dtype, device=device)
        rows[:n, :dim] = weighted
        rows[:n, dim:dim + c] = weighted @ centred_before.T
        rows[:n, dim + c:dim + 2 * c] = weighted @ centred_after.T
        rows[:n, -1] = weighted @ common
        self.class_rows = rows[self.slots].view(c, -1, rows.shape[1])

    def observed(self) -> float:
        """The statistic with no swaps."""
        c = self.n_classes
        grams = self.grams.unsqueeze(0).clone()
        scratch = torch.empty(1, c, c, dtype=torch.float64, device=self.device)
        kept = torch.empty(1, c, c, dtype=torch.bool, device=self.device)
        return float(_between_change(grams, self.upper, scratch, kept)[0])

    def null(self, masks: np.ndarray, space: _Workspace) -> np.ndarray:
        """The statistic for each of up to ``space.batch_size`` swap masks [B, N]."""
        count, size = masks.shape[0], space.batch_size
        space.swaps[:count, :self.n] = torch.from_numpy(masks).to(self.device)
        space.swaps[count:] = 0  # a short last batch: the rest swap nothing
        class_swaps = space.swaps.index_select(1, self.slots).view(size, self.n_classes, -1)
        fractions = class_swaps.sum(-1) / self.counts  # phi [B, C]
        products = _matmul(class_swaps.transpose(0, 1), self.class_rows, space.products)
        shift = products[:, :, :self.dim].transpose(0, 1)  # Ẽ for each mask [B, C, D]
        shift_grams = _matmul(shift, shift.transpose(1, 2), space.shift_grams)
        null = np.empty(count)
        for start in range(0, count, space.chunk):
            stop = min(start + space.chunk, count)
            null[start:stop] = self._statistic(products[:, start:stop], shift_grams[start:stop],
                                               fractions[start:stop], space).cpu().numpy()
        return null

    def _statistic(self, products: torch.Tensor, shift_gram: torch.Tensor,
                   fractions: torch.Tensor, space: _Workspace) -> torch.Tensor:
        """The statistic [k] from the class products [C, k, D + 2C + 1], ``Ẽ Ẽ^T`` [k, C, C]
        and ``phi`` [k, C]: the swapped Gram matrices ``G + Y + U V^T + V U^T`` of both states
        as one stack [k, 2 (before, after), C, C] in float64 (see the class)."""
        c, k = self.n_classes, shift_gram.shape[0]
        # X̃_s[c, c'] = cross[:, c', s C + c], copied out of the products to be read twice
        cross = space.cross[:k]
        cross.copy_(products[:, :, self.dim:-1].transpose(0, 1))  # [k, C (c'), 2C]
        phi = fractions.double()
        b = products[:, :, -1].T.double() + self.common_sq / 2 * phi  # [k, C]
        # f: the row means of E E^T = Ẽ Ẽ^T + b phi^T + phi b^T, less half their mean
        row_means = (shift_gram.sum(-1).double() / c
                     + b * phi.mean(-1, keepdim=True) + phi * b.mean(-1, keepdim=True))
        f = row_means - row_means.mean(-1, keepdim=True) / 2
        # x_s: the row means of X_s = X̃_s + m_s phi^T [k, 2, C]
        common = self.common_cross.unsqueeze(0)  # m [1, 2, C]
        x = cross.sum(1).double().view(k, 2, c) / c + common * phi.mean(-1).view(k, 1, 1)
        signs = self.signs.unsqueeze(0)  # [1, 2, 1]: X enters the after state with -1
        q = signs * common + b.unsqueeze(1)  # [k, 2, C]
        r = signs * x + f.unsqueeze(1)
        fraction = phi.unsqueeze(1).expand(k, 2, c)
        ones = torch.ones_like(fraction)
        left = torch.stack([q, -r, fraction, ones], -1).view(2 * k, c, 4)  # [U | V]
        right = torch.stack([fraction, ones, q, -r], -2).view(2 * k, 4, c)  # [V | U]^T
        # Y = ±(X̃ + X̃^T) + Ẽ Ẽ^T in dtype
        tilde = cross.view(k, c, 2, c).permute(0, 2, 3, 1)  # X̃_s [k, 2, C (c), C (c')]
        class_part = space.class_part[:k]
        torch.add(tilde, tilde.transpose(-1, -2), out=class_part)
        class_part[:, 0] += shift_gram
        torch.sub(shift_gram, class_part[:, 1], out=class_part[:, 1])
        # G + Y + U V^T + V U^T in float64
        swapped = space.swapped[:k]
        swapped.copy_(class_part)
        swapped += self.grams
        swapped.view(2 * k, c, c).baddbmm_(left, right)
        return _between_change(swapped, self.upper, space.scratch[:k], space.kept[:k])


class _Workspace:
    """One worker's buffers for :class:`_SwapAlgebra`, reused from batch to batch (fresh ones
    per batch cost page faults on a CPU): the swap masks, the class products and ``Ẽ Ẽ^T`` of
    a batch, and the per-step buffers of the float64 part, which runs ``chunk`` masks at a
    time (on a CPU 16 for C = 100, so that a step's float64 matrices, 2.6 MB, stay in cache; on
    a GPU the whole batch)."""

    def __init__(self, algebra: _SwapAlgebra, batch_size: int):
        c, dtype, device = algebra.n_classes, algebra.dtype, algebra.device
        self.batch_size = batch_size
        self.swaps = torch.zeros(batch_size, algebra.n + 1, dtype=dtype, device=device)
        self.products = torch.empty(c, batch_size, algebra.class_rows.shape[2], dtype=dtype,
                                    device=device)
        self.shift_grams = torch.empty(batch_size, c, c, dtype=dtype, device=device)
        self.chunk = batch_size if device.type == "cuda" else min(batch_size,
                                                                  max(1, 160_000 // c**2))
        k = self.chunk
        self.cross = torch.empty(k, c, 2 * c, dtype=dtype, device=device)
        self.class_part = torch.empty(k, 2, c, c, dtype=dtype, device=device)
        self.swapped = torch.empty(k, 2, c, c, dtype=torch.float64, device=device)
        self.scratch = torch.empty(k, c, c, dtype=torch.float64, device=device)
        self.kept = torch.empty(k, c, c, dtype=torch.bool, device=device)


def _null_distribution(algebra: _SwapAlgebra, rng: np.random.Generator, n_perm: int,
                       batch_size: int, workers: int) -> np.ndarray:
    """The statistic under ``n_perm`` swap masks drawn from ``rng`` in order, in batches of
    ``batch_size`` that ``workers`` threads compute side by side, each in its own workspace.

    The masks are drawn in this thread, batch after batch, so the null is the study's whatever
    the number of workers; at most two batches per worker wait at any time."""
    null = np.empty(n_perm, dtype=np.float64)
    spaces: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(workers):
        spaces.put(_Workspace(algebra, batch_size))

    def run(start: int, masks: np.ndarray) -> None:
        space = spaces.get()
        try:
            null[start:start + masks.shape[0]] = algebra.null(masks, space)
        finally:
            spaces.put(space)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        waiting: deque = deque()
        for start in range(0, n_perm, batch_size):
            masks = swap_masks(rng, min(batch_size, n_perm - start), algebra.n)
            waiting.append(pool.submit(run, start, masks))
            if len(waiting) >= 2 * workers:
                waiting.popleft().result()
        for future in waiting:
            future.result()
    return null


@contextmanager
def _one_thread_per_worker(device: torch.device):
    """On a CPU, torch and numpy's BLAS on one thread each for the duration (restored after),
    since the parallelism is the worker threads' (see :func:`_null_distribution`).

    Measured on 2 cores at 5000 x 1000: the small batched products ran only 1.3x faster on two
    BLAS threads than on one, and torch's threads spin for the cores while BLAS works; two
    workers of one thread each ran the test 1.8x faster than one worker. On a GPU nothing
    changes.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


def _is_positive_integer(value) -> bool:
    """An integer >= 1 (a float with an integer value counts; a bool or a string does not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return float(value).is_integer() and value >= 1


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
                        dtype: torch.dtype = torch.float32,
                        workers: int | None = None) -> PermutationResult:
    """The study's global test: is the change in between-prototype distance beyond chance?

    Statistic: "Δ Between-Proto (%)" (mean over prototype pairs of the % change of the cosine
    distance between centred prototypes). Null: for each permutation, in order, the study's
    paired per-exemplar swap ``swap = rng.random(N) < 0.5`` from
    ``numpy.random.default_rng(seed)`` exchanges the two states of the swapped exemplars, and
    the statistic is recomputed.

    Instead of cloning and re-averaging the features per permutation, a swapped prototype is
    the original plus the masked class sum of the differences, and for ``batch_size``
    permutations at once the centred prototypes' Gram matrices [B, 2, C, C] follow from two
    batched matrix products and a rank-4 float64 update (see :class:`_SwapAlgebra`); cosine
    distances come from them.

    The two products and their class-specific sum run in ``dtype`` (float32 by default;
    float64 is an option) and everything else in float64, with the change common to all
    exemplars taken out first, so float32 rounds only the class-specific part of the change a
    swap makes. The float32 null equals the float64 one to 6e-9 (5000 x 1000) and 5e-9 (5000
    x 4096) in the statistic's % units on the states of benchmarks/permutation.py
    (``--compare-float64`` measures it); tests/test_stats.py checks 1e-6, also with a common
    change of 5 added to every feature, and that both equal the study's loop. The work runs
    on ``device`` (default: the features' device). On a CPU, ``workers`` threads (default:
    torch's thread count) compute batches side by side, each with one torch and one BLAS
    thread and its own buffers (see :func:`_one_thread_per_worker`), and the products go
    through numpy's BLAS (see :func:`_matmul`); on a GPU one worker runs the batches (leave
    ``workers`` unset there).
    ``batch_size`` defaults to about 32 MB (CPU, per worker) or 512 MB (GPU) of class products
    ``[C, B, D + 2C + 1]`` per batch, in buffers reused from batch to batch. Neither the
    number of workers nor anything else about the run changes which masks are drawn; the
    batch size changes the float32 null only by its rounding (about 5e-9 here). The observed
    value is computed in float64 from the same Gram
    matrices with no swap (it equals "Δ Between-Proto (%)" of
    :func:`analysis_utils.geometry.pair_metrics`). Every category needs at least 2 exemplars.
    Returns a :class:`PermutationResult` with the study's p-values (two-tailed ``mean(|null|
    >= |obs|)``, ``mean(null >= obs)``, ``mean(null <= obs)``; no +1), their ``(k + 1) / (n +
    1)`` versions and the null.
    """
    if not _is_positive_integer(n_perm):
        raise AnalysisUtilsError(f"n_perm must be a positive integer, got {n_perm!r}.")
    if batch_size is not None and not _is_positive_integer(batch_size):
        raise AnalysisUtilsError(
            f"batch_size must be a positive integer or None, got {batch_size!r}."
        )
    if dtype not in (torch.float32, torch.float64):
        raise AnalysisUtilsError(f"dtype must be torch.float32 or torch.float64, got {dtype}.")
    if workers is not None and not _is_positive_integer(workers):
        raise AnalysisUtilsError(
            f"workers must be a positive integer or None, got {workers!r}."
        )
    Xb, Xa = _check_pair(X_before, X_after)
    device = torch.device(device) if device is not None else Xb.device
    n, dim = Xb.shape
    lab = as_labels(labels, n, device)
    n_perm = int(n_perm)
    if batch_size is None:
        budget = 2**29 if device.type == "cuda" else 2**25
        row_bytes = lab.n_classes * (dim + 2 * lab.n_classes + 1) * dtype.itemsize
        batch_size = min(1024, max(8, budget // row_bytes))
    batch_size = min(int(batch_size), n_perm)
    if device.type != "cpu":
        if workers not in (None, 1):
            raise AnalysisUtilsError(
                f"workers={workers!r} applies to a CPU run; on {device.type} one worker runs "
                "the batches: leave workers unset."
            )
        workers = 1
    workers = min(int(workers or torch.get_num_threads()), -(-n_perm // batch_size))

    with torch.no_grad():  # the set-up's large products on all of torch's threads
        algebra = _SwapAlgebra(Xb.to(device), Xa.to(device), lab, dtype)
    with torch.no_grad(), _one_thread_per_worker(device):
        rng = np.random.default_rng(seed)
        null = _null_distribution(algebra, rng, n_perm, batch_size, workers)
        observed = algebra.observed()
    return PermutationResult(observed=observed, **_p_values(null, observed), null=null,
                             n_perm=n_perm, seed=int(seed))


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
