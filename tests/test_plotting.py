"""The binned KDE of the ridge plots draws scipy's Gaussian KDE; every figure fits a laptop
screen (at most three panels a row, at most PAGE_WIDTH inches wide); the seaborn parts draw
the chapters' numbers (learning curves, the untrained seeds' band, the RSA heatmap)."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import gaussian_kde

from analysis_utils import catalogue, plotting
from analysis_utils.errors import AnalysisUtilsError

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
    curves = pd.DataFrame([{"model": m, "epoch": e, "loss": 4.0 - e / 10 - i,
                            "val top-1 (%)": 10.0 * e + i}
                           for i, m in enumerate(["b", "bl"]) for e in (1, 2, 3)])
    fig = plotting.plot_learning_curves(curves, note="test")
    left, right = fig.axes
    assert [text.get_text() for text in left.get_legend().get_texts()] == ["B", "BL"]
    drawn = [list(line.get_ydata()) for line in left.lines if len(line.get_ydata())]
    assert drawn == [[10.0, 20.0, 30.0], [11.0, 21.0, 31.0]]
    loss = [list(line.get_ydata()) for line in right.lines if len(line.get_ydata())]
    assert loss[0] == pytest.approx([3.9, 3.8, 3.7])
    assert left.lines[1].get_color() == plotting.model_color("bl")
    plotting.plt.close(fig)


# ------------------------------------------------------------------ readable on a laptop


MODELS = ["lrm3", "bl", "convrnn", "alexnet"]
RNG = np.random.default_rng(0)


def _steps_table(columns):
    rows = []
    for name in MODELS:
        steps = catalogue.card(name).default_steps
        for step in range(1, steps + 1):
            rows.append({"model": name, "step": step, "n_steps": steps,
                         **{c: float(RNG.random()) for c in columns}})
    return pd.DataFrame(rows)


SIX = ["a", "b", "c", "d", "e", "f"]


def _tags():
    return [(m, s) for m in MODELS for s in ((1, catalogue.card(m).default_steps)
                                             if catalogue.card(m).recurrent else (1,))]


def _rsa_panels():
    k = len(_tags())
    rho = RNG.random((k, k))
    return [{"title": title, "tags": _tags(), "rho": (rho + rho.T) / 2,
             "coords": RNG.normal(size=(k, 2)), "stress": 0.1} for title in ("P", "L")]


def _level_table():
    """A step table of chapter 6: lrm3 (3 steps), bl (8) and the one-step alexnet and b, at
    levels 0, 0.25 and 0.5 of occlusion and noise."""
    rows = []
    for name in ("lrm3", "alexnet", "bl", "b"):
        steps = catalogue.card(name).default_steps
        for perturbation in ("occlusion", "noise"):
            for level in (0, 0.25, 0.5):
                for step in range(1, steps + 1):
                    rows.append({"model": name, "perturbation": perturbation, "level": level,
                                 "step": step, "n_steps": steps,
                                 "top1": 40 * (1 - level) + step, "benefit": 5 - level,
                                 "benefit lo": 4 - level, "benefit hi": 6 - level,
                                 "x": float(RNG.random())})
    return pd.DataFrame(rows)


class _ProbeStub:
    """What plot_perturbation_examples reads of a probe."""

    def __init__(self, n=6, side=16):
        from PIL import Image

        self.images = [Image.fromarray(RNG.integers(0, 256, (side, side, 3), dtype=np.uint8))
                       for _ in range(n)]
        self.labels = np.arange(n) % 3
        self.category_names = ["goldfish, Carassius auratus", "barn", "pole"]

    def __len__(self):
        return len(self.images)


def _examples(probe, picks):
    from analysis_utils import perturb

    pixels = perturb.images_to_tensor([probe.images[i] for i in picks])
    return {spec: [perturb.tensor_to_pil(x) for x in perturb.apply(spec, pixels)]
            for spec in perturb.specs("noise", [0.1, 0.3])}


FIGURES = {
    "steps by level": lambda: plotting.plot_steps_by_level(
        _level_table(), "top1", "occlusion", counterparts={"lrm3": "alexnet", "bl": "b"}),
    "against level": lambda: plotting.plot_against_level(
        _level_table(), [("benefit", "benefit"), ("top1", "top-1"), ("x", "x")], "t",
        zero_line=("benefit",)),
    "perturbed images": lambda: plotting.plot_perturbation_examples(
        _ProbeStub(), _examples(_ProbeStub(), [0, 1, 2]), picks=[0, 1, 2]),
    "trajectories, six measures": lambda: plotting.plot_trajectories(
        _steps_table(SIX), SIX, reference=_steps_table(SIX)),
    "accuracy": lambda: plotting.plot_accuracy_over_steps(
        _steps_table(["value"]).assign(measure="logits top-1")),
    "learning curves": lambda: plotting.plot_learning_curves(pd.DataFrame(
        [{"model": m, "epoch": e, "loss": 1.0, "val top-1 (%)": 1.0} for m in MODELS
         for e in (1, 2)])),
    "Fig. 1, five models": lambda: plotting.plot_local_global_composite([
        {"model": m, "readout": "logits", "baseline_step": 1, "after_step": 2,
         "delta": RNG.normal(size=200), "pca_baseline": RNG.normal(size=(10, 2)),
         "pca_after": RNG.normal(size=(10, 2))}
        for m in ("lrm3", "lra3", "bl", "cornet_rt", "convrnn")]),
    "Fig. 2": lambda: plotting.plot_separation_ridge(
        [{"model": m, "baseline": RNG.random(300)} for m in MODELS]),
    "Fig. 2 over steps": lambda: plotting.plot_ridge_over_steps(
        "convrnn", RNG.random((17, 300)), reference=RNG.random((2, 17, 300))),
    "Fig. 3": lambda: plotting.plot_rsa_mds(_rsa_panels()),
    "MDS over steps": lambda: plotting.plot_mds_trajectories(_rsa_panels()),
    "claim test": lambda: plotting.plot_claim_test(pd.DataFrame(
        [{"readout": r, "tau": tau, "mean": 0.5, "lo": 0.4, "hi": 0.6}
         for r in ("penult", "logits") for tau in (0.0, 1.0)])),
    "Fig. 4": lambda: plotting.plot_convrnn_supplement(
        RNG.normal(size=200), np.arange(1, 6), np.ones(5), np.ones(5), RNG.normal(size=(10, 2)),
        RNG.normal(size=(10, 2)), RNG.random(10), "t=16", "t=17"),
    "unrolling of ConvRNN": lambda: plotting.plot_unrolling(
        "convrnn", {"conv1": 1, "penult": 5, "logits": 6}, 17),
}


@pytest.mark.parametrize("figure", list(FIGURES))
def test_every_figure_fits_a_laptop_screen(figure):
    plotting.apply_style()
    fig = FIGURES[figure]()
    assert fig.get_size_inches()[0] <= plotting.PAGE_WIDTH + 1e-9
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison
              and ax.get_label() != "<colorbar>"]
    rows: dict[float, int] = {}
    for ax in panels:
        box = ax.get_position()
        middle = round((box.y0 + box.y1) / 2, 2)
        rows[middle] = rows.get(middle, 0) + 1
    assert max(rows.values()) <= plotting.MAX_COLUMNS, rows
    plotting.plt.close(fig)


def test_six_measures_wrap_into_two_rows_and_four_columns_are_refused():
    fig = plotting.plot_trajectories(_steps_table(SIX), SIX)
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert titles == SIX and len({round(ax.get_position().y0, 2) for ax in fig.axes}) == 2
    plotting.plt.close(fig)
    with pytest.raises(AnalysisUtilsError, match="ncols must be an integer from 1 to 3"):
        plotting.plot_trajectories(_steps_table(SIX), SIX, ncols=4)
    with pytest.raises(AnalysisUtilsError, match="lacks the column"):
        plotting.plot_trajectories(_steps_table(["a"]), ["a", "missing"])
    with pytest.raises(AnalysisUtilsError, match="time must be"):
        plotting.plot_trajectories(_steps_table(["a"]), ["a"], time="seconds")


def test_the_untrained_band_spans_min_to_max_over_seeds_at_each_step():
    table = pd.DataFrame({"model": "bl", "step": [1, 2, 3], "n_steps": 3, "m": [0.5] * 3})
    seeds = pd.concat([table.assign(m=[0.1, 0.2, 0.3]), table.assign(m=[0.4, 0.0, 0.9]),
                       table.assign(m=[0.2, 0.1, 0.5])])
    fig = plotting.plot_trajectories(table, ["m"], reference=seeds, time="steps")
    (band,) = [c for c in fig.axes[0].collections if len(c.get_paths()[0].vertices) > 4]
    vertices = band.get_paths()[0].vertices
    for step, low, high in ((1, 0.1, 0.4), (2, 0.0, 0.2), (3, 0.3, 0.9)):
        at = vertices[np.isclose(vertices[:, 0], step), 1]
        assert at.min() == pytest.approx(low) and at.max() == pytest.approx(high)
    plotting.plt.close(fig)


def test_the_rsa_heatmap_shows_each_rho_and_each_states_label():
    panels = _rsa_panels()
    fig = plotting.plot_rsa_mds(panels)
    heatmap = fig.axes[0]
    shown = [text.get_text() for text in heatmap.texts]
    rho = panels[0]["rho"]
    assert shown == [f"{value:.2f}" for value in rho.ravel()]
    labels = [text.get_text() for text in heatmap.get_yticklabels()]
    assert labels[:2] == ["LRM3 (pass 1)", "LRM3 (pass 3)"] and labels[-1] == "AlexNet"
    plotting.plt.close(fig)


def test_steps_by_level_draws_each_counterpart_dashed_in_its_recurrent_models_panel():
    table = _level_table()
    fig = plotting.plot_steps_by_level(table, "top1", "noise",
                                       counterparts={"lrm3": "alexnet", "bl": "b"})
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == ["LRM3 (dashed: AlexNet)", "BL (dashed: B)"]
    lrm3 = panels[0]
    solid = [list(line.get_ydata()) for line in lrm3.lines if line.get_linestyle() == "-"]
    dashed = [line.get_ydata()[0] for line in lrm3.lines if line.get_linestyle() == "--"]
    assert solid == [[41.0, 42.0, 43.0], [31.0, 32.0, 33.0], [21.0, 22.0, 23.0]]
    assert dashed == [41.0, 31.0, 21.0]  # alexnet at its one step, per level
    plotting.plt.close(fig)
    # without counterparts (or when the recurrent model is not shown) each model has a panel
    fig = plotting.plot_steps_by_level(table[table["model"] != "bl"], "top1", "noise",
                                       counterparts={"lrm3": "alexnet", "bl": "b"})
    assert [ax.get_title() for ax in fig.axes if ax.axison] == [
        "LRM3 (dashed: AlexNet)", "B"]
    plotting.plt.close(fig)


def test_against_level_has_a_row_per_perturbation_a_column_per_measure_and_the_band():
    fig = plotting.plot_against_level(_level_table(), [("benefit", "b"), ("top1", "t")], "x")
    assert len(fig.axes) == 4 and [ax.get_title() for ax in fig.axes[:2]] == ["b", "t"]
    bands = fig.axes[0].collections
    assert len(bands) == 4 and not fig.axes[1].collections  # one band per model, benefit only
    top = max(bands[0].get_paths()[0].vertices[:, 1])
    assert top == pytest.approx(6.0)  # benefit hi at level 0
    plotting.plt.close(fig)
    with pytest.raises(AnalysisUtilsError, match="ncols must be an integer from 1 to 3"):
        plotting.plot_against_level(_level_table(), [(c, c) for c in ("top1",) * 4], "x")


def test_the_perturbation_mosaic_holds_every_images_own_pixels():
    probe = _ProbeStub()
    rows = [probe.images[:3], probe.images[3:]]
    mosaic, (height, width), gap = plotting.perturbation_mosaic(rows, gap=2)
    assert mosaic.shape == (2 * 16 + 2, 3 * 16 + 2 * 2, 3) and (height, width) == (16, 16)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            y, x = r * (16 + gap), c * (16 + gap)
            np.testing.assert_array_equal(mosaic[y:y + 16, x:x + 16], np.asarray(image))
    assert (mosaic[16:18] == 255).all()  # the white gap between the rows
