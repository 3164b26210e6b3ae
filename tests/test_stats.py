"""Tests for analysis_utils.stats: the permutation null is the study's, the LME and bootstrap
give known answers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_info

from analysis_utils import geometry, stats
from analysis_utils.errors import AnalysisUtilsError


def _two_states(n_per_class=(7, 5, 6, 8, 6, 4), dim=10, seed=0, expand=0.0):
    """Before/after features with unequal class sizes; ``expand`` adds a class-specific
    one-hot direction to the after state, so its prototypes become more orthogonal (a global
    expansion of the centred between-prototype distances)."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, 10 * c + 3) for c, n in enumerate(n_per_class)])
    rng.shuffle(labels)
    centres = rng.normal(size=(len(n_per_class), dim))
    index = np.unique(labels, return_inverse=True)[1]
    before = centres[index] + rng.normal(scale=1.0, size=(len(labels), dim)) + 1.0
    after = before + 0.3 * rng.normal(size=before.shape) + expand * np.eye(dim)[index]
    return (torch.tensor(np.maximum(before, 0), dtype=torch.float32),
            torch.tensor(np.maximum(after, 0), dtype=torch.float32), labels)


def _loop_null(X_before, X_after, labels, n_perm, seed, dtype=torch.float64):
    """The study's algorithm, one permutation at a time: clone, swap masked rows, recompute
    prototypes, centre, RDMs and the mean per-pair % change."""
    classes, index = np.unique(labels, return_inverse=True)
    index = torch.from_numpy(index)
    counts = torch.bincount(index).to(dtype)
    rows, cols = np.triu_indices(len(classes), 1)

    def statistic(b, a):
        distances = []
        for X in (b, a):
            P = torch.zeros(len(classes), X.shape[1], dtype=dtype).index_add_(0, index, X)
            P = P / counts[:, None]
            unit = F.normalize(P - P.mean(0, keepdim=True), dim=1)
            rdm = 1 - unit @ unit.T
            rdm.fill_diagonal_(0)
            distances.append(rdm.numpy()[rows, cols])
        d_before, d_after = distances
        keep = d_before > 1e-12
        return float(np.mean((d_after[keep] - d_before[keep]) / d_before[keep] * 100))

    Xb, Xa = X_before.to(dtype), X_after.to(dtype)
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(n_perm):
        swap = torch.from_numpy(rng.random(len(labels)) < 0.5)
        b, a = Xb.clone(), Xa.clone()
        b[swap] = Xa[swap]
        a[swap] = Xb[swap]
        null.append(statistic(b, a))
    return statistic(Xb, Xa), np.array(null)


def test_swap_masks_are_the_studys_sequential_draws():
    rng = np.random.default_rng(42)
    batched = np.concatenate([stats.swap_masks(rng, 3, 11), stats.swap_masks(rng, 2, 11)])
    rng = np.random.default_rng(42)
    sequential = np.stack([rng.random(11) < 0.5 for _ in range(5)])
    np.testing.assert_array_equal(batched, sequential)


@pytest.mark.parametrize("batch_size", [1, 7, None])
def test_batched_null_equals_plain_loop(batch_size):
    Xb, Xa, labels = _two_states()
    observed, null = _loop_null(Xb, Xa, labels, n_perm=60, seed=5)
    result = stats.permutation_between(Xb, Xa, labels, n_perm=60, seed=5, batch_size=batch_size)
    assert result.null.shape == (60,)
    np.testing.assert_allclose(result.null, null, rtol=0, atol=1e-6)
    assert result.observed == pytest.approx(observed, abs=1e-6)
    # the study's float32 loop agrees to its own float32 rounding
    _, null32 = _loop_null(Xb, Xa, labels, n_perm=60, seed=5, dtype=torch.float32)
    np.testing.assert_allclose(result.null, null32, rtol=0, atol=1e-3)
    # and a different seed gives a different null
    other = stats.permutation_between(Xb, Xa, labels, n_perm=60, seed=6, batch_size=batch_size)
    assert np.abs(other.null - result.null).max() > 1e-3


def test_float32_and_observed_agree_with_pair_metrics():
    Xb, Xa, labels = _two_states(seed=2)
    result = stats.permutation_between(Xb, Xa, labels, n_perm=40, seed=1)
    single = stats.permutation_between(Xb, Xa, labels, n_perm=40, seed=1, dtype=torch.float32)
    np.testing.assert_allclose(single.null, result.null, atol=1e-3)
    table_value = geometry.pair_metrics(Xb, Xa, labels)["Δ Between-Proto (%)"]
    assert result.observed == pytest.approx(table_value, abs=1e-4)


def _benchmark_states(n_images=5000, dim=1000, n_classes=100, seed=0, shift=0.0):
    """The states of benchmarks/permutation.py: ReLU features with class structure and an
    'after' state with a class-specific change; ``shift`` adds a change common to all."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(n_images // n_classes)
    centres = torch.randn(n_classes, dim, generator=generator)
    change = torch.randn(n_classes, dim, generator=generator)
    before = (centres[labels] + 1.5 * torch.randn(n_images, dim, generator=generator)).relu()
    after = (before + 0.3 * change[labels] + shift
             + 0.2 * torch.randn(n_images, dim, generator=generator)).relu()
    return before, after, labels.numpy()


@pytest.mark.parametrize("shape, shift", [((5000, 1000), 0.0), ((2000, 300), 5.0)])
def test_float32_default_null_equals_float64_to_1e6(shape, shift):
    """On the benchmark's shape (and with a large common change, where float32 Gram matrices
    would cancel badly) the default float32 null equals the float64 one to 1e-6 % and the
    observed value does not depend on the dtype."""
    Xb, Xa, labels = _benchmark_states(*shape, n_classes=100 if shape[0] == 5000 else 40,
                                       shift=shift)
    default = stats.permutation_between(Xb, Xa, labels, n_perm=48, seed=3)
    wide = stats.permutation_between(Xb, Xa, labels, n_perm=48, seed=3, dtype=torch.float64)
    assert np.abs(default.null - wide.null).max() < 1e-6
    assert default.observed == wide.observed
    assert np.abs(wide.null).max() > 1e-5  # the null is not trivially zero at this tolerance


def _blas_threads():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_torch_and_blas_threads_are_restored_after_the_cpu_run():
    Xb, Xa, labels = _two_states()
    threads, blas = torch.get_num_threads(), _blas_threads()
    torch.set_num_threads(2)
    try:
        stats.permutation_between(Xb, Xa, labels, n_perm=5)
        assert torch.get_num_threads() == 2
        assert _blas_threads() == blas
    finally:
        torch.set_num_threads(threads)


def test_the_null_does_not_depend_on_the_number_of_workers():
    """Batches finish out of order on several workers; each lands at its own place, and every
    worker reads the masks the study's generator gives in order."""
    Xb, Xa, labels = _two_states(seed=4)
    one = stats.permutation_between(Xb, Xa, labels, n_perm=61, seed=9, batch_size=4, workers=1)
    three = stats.permutation_between(Xb, Xa, labels, n_perm=61, seed=9, batch_size=4,
                                      workers=3)
    np.testing.assert_array_equal(three.null, one.null)
    _, loop = _loop_null(Xb, Xa, labels, n_perm=61, seed=9)
    np.testing.assert_allclose(three.null, loop, rtol=0, atol=1e-6)


def test_permutation_refuses_one_image_per_category():
    Xb, Xa, labels = _two_states(n_per_class=(3, 1, 4))
    with pytest.raises(AnalysisUtilsError, match="at least 2 exemplars per category.*1 of the "
                                                 "3 categories.*category 13 has 1"):
        stats.permutation_between(Xb, Xa, labels, n_perm=10)


def test_p_values_are_the_studys_and_the_plus_one_versions():
    Xb, Xa, labels = _two_states(seed=3)
    result = stats.permutation_between(Xb, Xa, labels, n_perm=200, seed=42)
    null, obs = result.null, result.observed
    assert result.p_two_tailed == np.mean(np.abs(null) >= abs(obs))
    assert result.p_greater == np.mean(null >= obs)
    assert result.p_less == np.mean(null <= obs)
    k = np.sum(null >= obs)
    assert result.p_greater_plus_one == pytest.approx((k + 1) / 201)
    assert result["p_less"] == result.p_less
    assert 0 < result.p_greater < 1  # no true effect here: the observed value is inside
    strong = _two_states(n_per_class=(40,) * 6, seed=3, expand=3.0)
    expanded = stats.permutation_between(*strong, n_perm=200, seed=42)
    assert expanded.observed > 0
    assert (expanded.p_two_tailed, expanded.p_greater, expanded.p_less) == (0.0, 0.0, 1.0)
    assert expanded.p_greater_plus_one == pytest.approx(1 / 201)


def test_permutation_rejects_bad_input():
    Xb, Xa, labels = _two_states()
    for bad in (0, 2.5, "many", True):
        with pytest.raises(AnalysisUtilsError, match="n_perm must be a positive integer"):
            stats.permutation_between(Xb, Xa, labels, n_perm=bad)
    with pytest.raises(AnalysisUtilsError, match="same images"):
        stats.permutation_between(Xb, Xa[:-1], labels)
    with pytest.raises(AnalysisUtilsError, match="batch_size"):
        stats.permutation_between(Xb, Xa, labels, batch_size=2.5)
    with pytest.raises(AnalysisUtilsError, match="dtype"):
        stats.permutation_between(Xb, Xa, labels, dtype=torch.float16)
    for bad in (0, -2, 1.5, "two"):
        with pytest.raises(AnalysisUtilsError, match="workers must be a positive integer"):
            stats.permutation_between(Xb, Xa, labels, workers=bad)
    with pytest.raises(AnalysisUtilsError, match="workers=2 applies to a CPU run"):
        stats.permutation_between(Xb, Xa, labels, workers=2, device="meta")


def test_lme_beta_equals_mean_difference_on_a_balanced_design():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 10)
    category_effect = rng.normal(scale=0.02, size=8)[labels]
    d_before = rng.uniform(0.2, 0.4, size=80)
    d_after = d_before - 0.03 + category_effect + rng.normal(scale=0.01, size=80)
    result = stats.local_lme(d_before, d_after, labels)
    assert result["beta"] == pytest.approx(np.mean(d_after - d_before), abs=1e-9)
    assert result["direction"] == ("compaction" if result["beta"] < 0 else "expansion")
    assert result["se"] > 0
    assert result["ci_low"] == pytest.approx(result["beta"] - 1.959964 * result["se"], abs=1e-6)
    assert result["ci_high"] == pytest.approx(result["beta"] + 1.959964 * result["se"], abs=1e-6)
    # the random intercept absorbs the category spread: the SE is the between-category one,
    # wider than the naive per-exemplar standard error of the mean
    naive_se = np.std(d_after - d_before, ddof=1) / np.sqrt(80)
    assert result["se"] > naive_se
    flipped = stats.local_lme(d_after, d_before, labels)
    assert flipped["beta"] == pytest.approx(-result["beta"], abs=1e-9)
    assert flipped["direction"] == "expansion"


def test_lme_rejects_mismatched_input():
    with pytest.raises(AnalysisUtilsError, match="one entry per exemplar"):
        stats.local_lme(np.zeros(5), np.zeros(5), np.arange(4))
    with pytest.raises(AnalysisUtilsError, match="at least 2 categories"):
        stats.local_lme(np.zeros(4), np.ones(4), np.zeros(4, dtype=int))


def _lme_data(sizes, category_sd, seed, noise_sd=0.05, shift=-0.02):
    """Per-exemplar distances before/after with a category effect of SD ``category_sd``."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    effect = rng.normal(scale=category_sd, size=len(sizes))[labels]
    d_before = rng.uniform(0.2, 0.4, size=labels.size)
    d_after = d_before + shift + effect + rng.normal(scale=noise_sd, size=labels.size)
    return d_before, d_after, labels


LME_DATASETS = {
    "balanced, strong category effect": ([20] * 8, 0.05, 0),
    "balanced, no category effect (boundary)": ([20] * 8, 0.0, 0),
    "unbalanced, sizes 1 to 40": ([1, 3, 7, 12, 25, 5, 40, 9, 2, 15], 0.03, 2),
    "100 categories x 50 like the book": ([50] * 100, 0.01, 5),
}


def _statsmodels_model(d_before, d_after, labels):
    import pandas as pd
    import statsmodels.formula.api as smf

    frame = pd.DataFrame({"distance_diff": d_after - d_before, "category": labels.astype(str)})
    return smf.mixedlm("distance_diff ~ 1", frame, groups=frame["category"])


@pytest.mark.parametrize("name", LME_DATASETS)
def test_lme_exact_equals_a_tightly_converged_statsmodels_fit(name):
    """The exact solver against statsmodels' own fit run to gtol 1e-10 (its default 1e-5
    leaves relative errors of ~1e-5 in se). Measured differences: beta <= 1e-11, se and the
    interval <= 1e-9 (at the boundary statsmodels stops at gamma ~ 1e-10, not 0), p <= 1e-8
    relative; the tolerances below are 10-100x those."""
    import warnings

    data = _lme_data(*LME_DATASETS[name])
    exact = stats.local_lme(*data)
    model = _statsmodels_model(*data)  # outside: importing statsmodels adds warning filters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(reml=True, gtol=1e-10)
    assert fit.converged
    interval = fit.conf_int().loc["Intercept"]
    assert exact["beta"] == pytest.approx(fit.fe_params["Intercept"], rel=1e-10, abs=1e-15)
    assert exact["se"] == pytest.approx(fit.bse_fe["Intercept"], rel=1e-8)
    assert exact["ci_low"] == pytest.approx(interval.iloc[0], rel=1e-8, abs=1e-12)
    assert exact["ci_high"] == pytest.approx(interval.iloc[1], rel=1e-8, abs=1e-12)
    assert exact["p"] == pytest.approx(fit.pvalues["Intercept"], rel=1e-7, abs=1e-12)
    assert exact["direction"] == ("compaction" if fit.fe_params["Intercept"] < 0 else "expansion")


@pytest.mark.parametrize("name", LME_DATASETS)
def test_lme_exact_gamma_maximises_statsmodels_reml_likelihood(name):
    """statsmodels' own REML log-likelihood (sigma^2 and beta profiled, packed as sqrt(gamma))
    is highest at the exact gamma, and its Hessian there gives exactly the exact se."""
    from statsmodels.regression.mixed_linear_model import MixedLMParams

    d_before, d_after, labels = _lme_data(*LME_DATASETS[name])
    model = _statsmodels_model(d_before, d_after, labels)
    model.reml, model.cov_pen, model.fe_pen = True, None, None  # what fit() sets first
    summary = stats._GroupSummary.of(d_after - d_before, labels.astype(str))
    gamma = stats._reml_gamma(summary)

    def loglike(g):
        return model.loglike(np.array([np.sqrt(g)]))

    # the exact criterion is -2 x statsmodels' REML log-likelihood up to a constant, and its
    # slope is the criterion's derivative
    gammas = np.array([1e-3, 0.03, 0.3, 3.0])
    _, _, criterion, slope = summary.reml_terms(gammas[:, None])
    offsets = criterion[:, 0] + 2 * np.array([loglike(g) for g in gammas])
    assert np.ptp(offsets) < 1e-9 * np.abs(offsets).max()
    step = 1e-6 * gammas[:, None]
    numeric = (summary.reml_terms(gammas[:, None] + step)[2]
               - summary.reml_terms(gammas[:, None] - step)[2]) / (2 * step)
    assert slope[:, 0] == pytest.approx(numeric[:, 0], rel=1e-5, abs=1e-6)
    if "boundary" in name:
        assert gamma == 0.0
        assert loglike(1e-8) > loglike(1e-4) > loglike(1e-2)
        return
    assert gamma > 0
    for factor in (1 - 1e-3, 1 + 1e-3, 0.5, 2.0):
        assert loglike(gamma) > loglike(gamma * factor)
    params = MixedLMParams(1, 1, 0)
    params.cov_re = np.array([[gamma]])
    params.vcomp = np.zeros(0)
    params.fe_params = model.get_fe_params(params.cov_re, params.vcomp)[0]
    hessian = model.hessian(params)[0]
    beta, se = stats._exact_fit(summary)
    assert beta == pytest.approx(params.fe_params[0], rel=1e-12)
    assert se == pytest.approx(np.sqrt(np.linalg.inv(-hessian)[0, 0]), rel=1e-10)


def test_lme_statsmodels_engine_runs_the_studys_call():
    """engine="statsmodels" (the literal call, default tolerance) agrees with the exact engine
    to statsmodels' default optimiser tolerance (measured: se 2e-5 relative, p 5e-6)."""
    data = _lme_data(*LME_DATASETS["unbalanced, sizes 1 to 40"])
    exact = stats.local_lme(*data, engine="exact")
    literal = stats.local_lme(*data, engine="statsmodels")
    assert set(literal) == set(exact)
    assert literal["beta"] == pytest.approx(exact["beta"], rel=1e-4)
    assert literal["se"] == pytest.approx(exact["se"], rel=2e-4)
    assert literal["ci_low"] == pytest.approx(exact["ci_low"], abs=1e-5)
    assert literal["ci_high"] == pytest.approx(exact["ci_high"], abs=1e-5)
    assert literal["p"] == pytest.approx(exact["p"], abs=5e-5)
    assert literal["direction"] == exact["direction"]
    assert literal["se"] != exact["se"]  # two different solvers, not one code path


@pytest.mark.parametrize("shrink", [0.0, 0.9])
def test_lme_balanced_design_has_the_anova_closed_form(shrink):
    """On a balanced one-way design REML gives the ANOVA estimators truncated at 0:
    tau^2 = (MSB - MSW) / n and sigma^2 = MSW if MSB > MSW (se^2 = MSB / N), else tau^2 = 0
    and sigma^2 = SST / (N - 1) (se^2 = SST / ((N - 1) N)). ``shrink`` pulls the category
    means 90 % towards the grand mean, giving MSB < MSW (the boundary case)."""
    from scipy.stats import norm

    n, groups = 12, 9
    d_before, d_after, labels = _lme_data([n] * groups, 0.05, seed=7)
    y = (d_after - d_before).reshape(groups, n)
    y = y - shrink * (y.mean(1, keepdims=True) - y.mean())
    d_after = d_before + y.ravel()
    total = y.size
    msb = n * np.sum((y.mean(1) - y.mean()) ** 2) / (groups - 1)
    msw = np.sum((y - y.mean(1, keepdims=True)) ** 2) / (total - groups)
    assert (msb > msw) == (shrink == 0)  # the two cases: interior and boundary
    if msb > msw:
        gamma, se = (msb - msw) / n / msw, np.sqrt(msb / total)
    else:
        gamma, se = 0.0, np.sqrt(np.sum((y - y.mean()) ** 2) / (total - 1) / total)
    summary = stats._GroupSummary.of(y.ravel(), labels.astype(str))
    assert stats._reml_gamma(summary) == pytest.approx(gamma, rel=1e-10, abs=0)
    result = stats.local_lme(d_before, d_after, labels)
    assert result["beta"] == pytest.approx(y.mean(), rel=1e-12)
    assert result["se"] == pytest.approx(se, rel=1e-10)
    assert result["ci_low"] == pytest.approx(y.mean() - norm.ppf(0.975) * se, rel=1e-10)
    assert result["ci_high"] == pytest.approx(y.mean() + norm.ppf(0.975) * se, rel=1e-10)
    assert result["p"] == pytest.approx(2 * norm.sf(abs(y.mean()) / se), rel=1e-8)


def test_lme_rejects_bad_engine_and_degenerate_data():
    d_before, d_after, labels = _lme_data([5] * 4, 0.02, seed=1)
    with pytest.raises(AnalysisUtilsError, match="Unknown local_lme engine 'lme4'"):
        stats.local_lme(d_before, d_after, labels, engine="lme4")
    constant_within = np.repeat([0.1, 0.3, -0.2, 0.0], 5)
    with pytest.raises(AnalysisUtilsError, match="vary within at least one category"):
        stats.local_lme(np.zeros(20), constant_within, labels)


def test_bootstrap_ci_known_answers():
    assert stats.bootstrap_ci(np.full(10, 0.3), n_boot=200) == (pytest.approx(0.3),
                                                                pytest.approx(0.3))
    values = np.random.default_rng(1).normal(size=40)
    low, high = stats.bootstrap_ci(values, n_boot=2000, seed=3)
    assert low < values.mean() < high
    assert (low, high) == stats.bootstrap_ci(values, n_boot=2000, seed=3)
    narrow = stats.bootstrap_ci(values, n_boot=2000, seed=3, level=0.5)
    assert low < narrow[0] < narrow[1] < high
    # the percentile interval of the mean is close to mean +- 1.96 SE
    se = values.std(ddof=1) / np.sqrt(40)
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    per_step = np.stack([values, values + 5.0], axis=1)
    low2, high2 = stats.bootstrap_ci(per_step, n_boot=2000, seed=3, statistic=np.median)
    assert low2.shape == (2,) and high2[1] - 5.0 == pytest.approx(high2[0])
    with pytest.raises(AnalysisUtilsError, match="axis"):
        stats.bootstrap_ci(values, n_boot=10, statistic=lambda x: float(np.mean(x)))
    with pytest.raises(AnalysisUtilsError, match="NaN"):
        stats.bootstrap_ci(np.array([1.0, np.nan, 2.0]))
