"""The binned KDE of the ridge plots draws scipy's Gaussian KDE."""

import numpy as np
import pytest
from scipy.stats import gaussian_kde

from analysis_utils import plotting

GRID = np.linspace(-0.5, 2.0, 500)


def _samples():
    rng = np.random.default_rng(0)
    return {
        "skewed": rng.beta(5, 2, size=4950),
        "two narrow modes": np.r_[rng.normal(0.3, 0.01, 3000), rng.normal(1.1, 0.2, 1950)],
        "near 1": rng.uniform(0.99, 1.01, size=4950),
        "few values": rng.normal(0.5, 0.05, size=12),
        "ties": np.repeat(rng.uniform(0, 1, size=40), 20),
    }


@pytest.mark.parametrize("name", list(_samples()))
def test_kde_curve_draws_scipys_gaussian_kde(name):
    values = _samples()[name]
    expected = gaussian_kde(values)(GRID)
    got = plotting.kde_curve(values, GRID)
    assert got.shape == GRID.shape
    assert np.max(np.abs(got - expected)) < 1e-4 * expected.max()


def test_kde_curve_of_two_point_masses_and_an_outlier():
    values = np.r_[np.zeros(2000), np.ones(2000), [40.0]]  # the widest range for its SD
    expected = gaussian_kde(values)(GRID)
    assert np.max(np.abs(plotting.kde_curve(values, GRID) - expected)) < 1e-4 * expected.max()


def test_kde_curve_of_constant_or_empty_data_is_zero():
    assert not plotting.kde_curve(np.full(50, 0.7), GRID).any()
    assert not plotting.kde_curve(np.array([np.nan, 1.0]), GRID).any()


def test_learning_curves_draw_one_line_per_model_in_each_panel():
    import pandas as pd

    curves = pd.DataFrame([{"model": m, "epoch": e, "loss": 4.0 - e / 10 - i,
                            "val top-1 (%)": 10.0 * e + i}
                           for i, m in enumerate(["b", "bl"]) for e in (1, 2, 3)])
    fig = plotting.plot_learning_curves(curves, note="test")
    left, right = fig.axes
    assert [line.get_label() for line in left.lines] == ["B", "BL"]
    assert list(left.lines[1].get_ydata()) == [11.0, 21.0, 31.0]
    assert list(right.lines[0].get_ydata()) == pytest.approx([3.9, 3.8, 3.7])
    plotting.plt.close(fig)
