"""Figures and the shared style: the reference study's colours per model and state, its layouts.

Every function here only draws: it takes numbers that ``geometry``, ``rsa`` and ``stats``
computed and returns a matplotlib ``Figure``. Colours come from each model's card
(``card.colors`` = (baseline, after), the study's ``DEFAULT_COLORS``); labels use the card's
display name and step labels ("LRM3 (pass 1)", "BL (t=8)"). Every figure takes a ``note`` that
goes into its title: the chapters pass the weights in words, so a figure of untrained models
always says so.

Figures (the study's numbering):

- :func:`plot_unrolling`        chapter 1: which area first sees the image at which step.
- :func:`plot_accuracy_over_steps` Table 1 extended to every step.
- :func:`plot_learning_curves`  chapter 1: how the mini zoo learned, epoch by epoch.
- :func:`plot_trajectories`     any measure over every step, on normalised or own-step time.
- :func:`plot_local_global_composite` Fig. 1: per-exemplar change densities + prototype PCA.
- :func:`plot_separation_ridge` Fig. 2: between-prototype distance distributions per model.
- :func:`plot_ridge_over_steps` Fig. 2 followed over every step of one model.
- :func:`plot_rsa_mds`          Fig. 3: RSA heatmaps + MDS.
- :func:`plot_mds_trajectories` Fig. 3 over every step: paths in the MDS space.
- :func:`plot_claim_test`       the claim test of chapter 4: mean between-model RSA over time.
- :func:`plot_perturbation_examples` chapter 6: what the models see at each level.
- :func:`plot_steps_by_level`   chapter 6: a measure at every step, one line per perturbation level.
- :func:`plot_against_level`    chapter 6: a measure (or the recurrence benefit) against level.
- :func:`plot_convrnn_supplement` Fig. 4: the four-panel image-off supplement.

Readable on a laptop screen: a figure shows one concept, puts at most :data:`MAX_COLUMNS`
panels side by side (more panels wrap into rows) and is at most :data:`PAGE_WIDTH` inches wide
at 100 dpi, about the width of the book's text column, so its text is not shrunk to fit.
seaborn sets the theme (:func:`apply_style`), draws the RSA heatmaps and the bands of the
untrained seeds over steps; the ridge plots keep the hand-written binned KDE
(:func:`kde_curve`), about 50x faster than a KDE per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.colors import to_rgb
from matplotlib.ticker import MaxNLocator

from .errors import AnalysisUtilsError

#: the study's neutral colours for the Fig. 1 panels
GREY_FILL = "#cccccc"
GREY_LINE = "#888888"
BASELINE_PROTO = "#555555"
AFTER_PROTO = "#E41A1C"
LINK = "#bbbbbb"

#: the most panels a figure puts side by side; more wrap into rows
MAX_COLUMNS = 3
#: the widest figure, in inches at 100 dpi: about the book's text column on a laptop screen
PAGE_WIDTH = 10.0


def apply_style() -> None:
    """The book's theme: seaborn's "ticks" style at "notebook" font sizes, with inline PNGs at
    100 dpi, tight boxes, TrueType fonts in PDFs and no top/right spines or legend frames."""
    sns.set_theme(context="notebook", style="ticks", rc={
        "figure.dpi": 100,
        "savefig.dpi": 200,
        "savefig.bbox": "tight",
        "pdf.fonttype": 42,
        "ps.fonttype": 42,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
        "figure.constrained_layout.use": False,
    })


# --------------------------------------------------------------------------- colours, labels


def _card(name: str):
    from . import catalogue

    return catalogue.card(name)


def model_color(name: str, state: str = "after") -> str:
    """The study's colour of ``name`` in ``state`` ("baseline" or "after")."""
    baseline, after = _card(name).colors
    return baseline if state == "baseline" else after


def step_color(name: str, step: int, n_steps: int) -> tuple[float, float, float]:
    """A colour for step ``step`` of ``n_steps``: the baseline colour at t=1 blending to after."""
    baseline, after = (np.array(to_rgb(c)) for c in _card(name).colors)
    w = 0.0 if n_steps <= 1 else (step - 1) / (n_steps - 1)
    return tuple((1 - w) * baseline + w * after)


def label(name: str, step: int | None = None) -> str:
    """'LRM3 (pass 1)', or the display name alone when ``step`` is None."""
    card = _card(name)
    if step is None:
        return card.display_name
    return f"{card.display_name} ({card.step_label(step)})"


def titled(title: str, note: str) -> str:
    return f"{title}\n{note}" if note else title


def normalised_time(step, n_steps: int):
    """tau = (t - 1) / (T - 1) in [0, 1]; 0 for a single-step model."""
    step = np.asarray(step, dtype=float)
    return np.zeros_like(step) if n_steps <= 1 else (step - 1) / (n_steps - 1)


# --------------------------------------------------------------------------- layout


def _columns(ncols, n_panels: int) -> int:
    """``ncols`` checked (1 to :data:`MAX_COLUMNS`), and no more than the panels."""
    if isinstance(ncols, bool) or not isinstance(ncols, int) or not 1 <= ncols <= MAX_COLUMNS:
        raise AnalysisUtilsError(
            f"ncols must be an integer from 1 to {MAX_COLUMNS} (at most {MAX_COLUMNS} panels a "
            f"row keep a figure readable on a laptop screen), got {ncols!r}."
        )
    return min(ncols, n_panels)


def _panel_grid(n_panels: int, ncols: int = MAX_COLUMNS, height: float = 3.3,
                max_width: float = 4.6, sharey: bool = False):
    """A figure of ``n_panels`` panels in rows of at most ``ncols``, each at most ``max_width``
    inches wide and the figure at most :data:`PAGE_WIDTH` (``sharey``: one y axis for all);
    returns (figure, the panels' axes)."""
    if n_panels < 1:
        raise AnalysisUtilsError("There is nothing to draw: the figure got no panels.")
    ncols = _columns(ncols, n_panels)
    nrows = int(np.ceil(n_panels / ncols))
    width = min(PAGE_WIDTH, max_width * ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height * nrows), sharey=sharey,
                             squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.axis("off")
    return fig, list(axes.flat[:n_panels])


def _legend_below(fig, ax, ncol: int = 4) -> None:
    """The legend of ``ax``'s lines, centred under the figure (after its layout is done)."""
    _figure_legend(fig, *ax.get_legend_handles_labels(), ncol=ncol)


def _figure_legend(fig, handles, labels, ncol: int = 4) -> None:
    """A legend of ``handles`` named ``labels``, centred under the figure."""
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(len(labels), ncol), fontsize=10)


def _fixed_margins(fig, top: float, bottom: float, **spacing) -> None:
    """Margins in inches at the top (the suptitle) and bottom (the legend below), and the
    ``hspace``/``wspace`` between panels: a layout that costs no extra draw, unlike
    ``tight_layout``."""
    height = fig.get_size_inches()[1]
    fig.subplots_adjust(top=1 - top / height, bottom=bottom / height, **spacing)


def _check_columns(table, columns, what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise AnalysisUtilsError(
            f"{what} lacks the column(s) {', '.join(map(repr, missing))}; its columns are: "
            f"{', '.join(map(str, table.columns))}."
        )


#: bins per bandwidth of the binned KDE, and the kernel's cut-off in bandwidths
KDE_BINS_PER_BANDWIDTH = 64
KDE_CUTOFF = 7.0


def kde_curve(values, grid) -> np.ndarray:
    """A Gaussian KDE (Scott's bandwidth) on ``grid``; a spike-free zero curve for constant data.

    The curve of ``scipy.stats.gaussian_kde(values)(grid)`` (bandwidth: the sample SD, ddof 1,
    times n^(-1/5)), computed by linear binning: the values are spread onto bins of 1/64
    bandwidth, convolved with the Gaussian (cut at 7 bandwidths, where it is below 3e-11 of
    its peak) and read off at ``grid`` by linear interpolation. Measured against scipy, the
    curve differs by less than 1e-4 of its peak (tests/test_plotting.py), about 50x faster on
    the 4950 distances of a ridge plot. The bins stay few: the range of n values is at most
    ~sqrt(n) SDs, so there are at most ~64 n^0.7 bins (25,000 for n = 5000).
    """
    values = np.asarray(values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    grid = np.asarray(grid, dtype=float)
    if values.size < 2 or np.ptp(values) == 0:
        return np.zeros_like(grid, dtype=float)
    bandwidth = values.std(ddof=1) * values.size ** (-1 / 5)
    step = bandwidth / KDE_BINS_PER_BANDWIDTH
    low = values.min()
    position = (values - low) / step
    left = np.floor(position).astype(np.int64)
    right_share = position - left
    n_bins = int(left.max()) + 2
    counts = (np.bincount(left, 1.0 - right_share, minlength=n_bins)
              + np.bincount(left + 1, right_share, minlength=n_bins))
    half = int(np.ceil(KDE_CUTOFF * KDE_BINS_PER_BANDWIDTH))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / KDE_BINS_PER_BANDWIDTH) ** 2)
    density = np.convolve(counts, kernel) / (values.size * bandwidth * np.sqrt(2 * np.pi))
    centres = low + (np.arange(density.size) - half) * step
    return np.interp(grid, centres, density, left=0.0, right=0.0)


# --------------------------------------------------------------------------- chapter 1


def plot_unrolling(name: str, first_step: Mapping[str, int | None], n_steps: int,
                   feedback: str = "", image_steps: Sequence[int] | None = None,
                   note: str = "", ax=None):
    """The unrolling of one model: a grid of areas x steps, filled where the area carries image
    information (from ``first_step[area]``, measured by the chapter), with feedback in words.

    ``image_steps`` marks the steps at which the image is on the input (all when None).
    """
    card = _card(name)
    areas = list(first_step)
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(min(PAGE_WIDTH, max(3.5, 0.5 * n_steps + 2.0)),
                                        0.5 * len(areas) + 1.6))
    else:
        fig = ax.figure
    color = model_color(name, "after")
    shown = set(range(1, n_steps + 1) if image_steps is None else image_steps)
    for row, area in enumerate(areas):
        start = first_step[area]
        for step in range(1, n_steps + 1):
            sees = start is not None and step >= start
            ax.add_patch(plt.Rectangle((step - 0.45, row - 0.4), 0.9, 0.8,
                                       facecolor=color if sees else "white",
                                       edgecolor=color, alpha=0.85 if sees else 1.0, lw=1))
        if start is not None:
            ax.text(start, row, "•", ha="center", va="center", color="white", fontsize=12)
    for step in range(1, n_steps + 1):
        ax.text(step, -0.85, "img" if step in shown else "blank", ha="center", va="center",
                fontsize=8, color="black" if step in shown else GREY_LINE)
    ax.set_xlim(0.4, n_steps + 0.6)
    ax.set_ylim(len(areas) - 0.4, -1.2)
    ax.set_yticks(range(len(areas)), areas)
    ax.set_xticks(range(1, n_steps + 1), [str(t) for t in range(1, n_steps + 1)])
    ax.set_xlabel("pass" if card.step_unit == "pass" else "time step t")
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)
    title = f"{card.display_name}: {card.recurrence}, {card.mechanism}"
    if feedback:
        title += f"\n{feedback}"
    ax.set_title(titled(title, note), fontsize=10, loc="left")
    return fig


def plot_accuracy_over_steps(table, note: str = ""):
    """Top-1 at every step: logits (left) and nearest-centroid on penult (right).

    ``table`` columns: ``model`` (catalogue name), ``step``, ``n_steps``, ``measure``
    ("logits top-1", "NC penult top-1"), ``value`` (percent), optional ``lo``/``hi``.
    """
    _check_columns(table, ["model", "step", "n_steps", "measure", "value"], "table")
    measures = list(dict.fromkeys(table["measure"]))
    fig, axes = _panel_grid(len(measures), height=3.8)
    for ax, measure in zip(axes, measures):
        part = table[table["measure"] == measure]
        for name, rows in part.groupby("model", sort=False):
            rows = rows.sort_values("step")
            n_steps = int(rows["n_steps"].iloc[0])
            _draw_time_series(ax, name, rows["step"].to_numpy(), rows["value"].to_numpy(),
                              n_steps, "normalised",
                              rows["lo"].to_numpy() if "lo" in rows else None,
                              rows["hi"].to_numpy() if "hi" in rows else None)
        ax.set_title(measure)
        ax.set_xlabel("normalised time (t - 1) / (T - 1)")
        ax.set_ylabel("accuracy (%)")
    fig.suptitle(titled("Accuracy at every step", note))
    fig.tight_layout()
    _legend_below(fig, axes[0])
    return fig


def plot_learning_curves(curves, note: str = ""):
    """Validation top-1 (left) and training loss (right) per epoch, one line per model.

    ``curves`` columns: ``model``, ``epoch``, ``loss``, ``val top-1 (%)`` (as
    :func:`analysis_utils.train.learning_curves` gives them).
    """
    _check_columns(curves, ["model", "epoch", "loss", "val top-1 (%)"], "curves")
    named = curves.assign(model=[label(name) for name in curves["model"]])
    palette = {label(name): model_color(name) for name in dict.fromkeys(curves["model"])}
    fig, axes = _panel_grid(2, height=4.0)
    for ax, column, ylabel in ((axes[0], "val top-1 (%)", "validation top-1 (%), final step"),
                               (axes[1], "loss", "training loss (label-smoothed CE)")):
        sns.lineplot(named, x="epoch", y=column, hue="model", palette=palette, marker="o",
                     ms=4, ax=ax, legend=ax is axes[0])
        ax.set_ylabel(ylabel)
    axes[0].legend(title=None, fontsize=9)
    fig.suptitle(titled("Learning curves of the mini zoo", note))
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- trajectories


def _draw_time_series(ax, name, steps, values, n_steps, time, lo=None, hi=None):
    color = model_color(name, "after")
    if n_steps <= 1:
        value = float(values[0])
        ax.axhline(value, color=color, ls="--", lw=1.3, label=label(name))
        if lo is not None and hi is not None:
            ax.axhspan(float(lo[0]), float(hi[0]), color=color, alpha=0.08)
        return
    x = normalised_time(steps, n_steps) if time == "normalised" else np.asarray(steps)
    ax.plot(x, values, color=color, lw=2, marker="o", ms=3.5, label=label(name))
    ax.plot(x[:1], values[:1], marker="o", ms=6, mfc="white", mec=model_color(name, "baseline"),
            ls="none")
    if lo is not None and hi is not None:
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)


def plot_trajectories(table, measures: Sequence[str], time: str = "normalised", note: str = "",
                      title: str = "Geometry at every step", reference=None, ncols: int = 3):
    """One panel per measure, one line per model, over every step.

    ``table``: tidy rows with ``model``, ``step``, ``n_steps`` and one column per measure
    (optionally ``<measure> lo`` / ``<measure> hi`` for intervals). ``time`` is "normalised"
    (tau = (t-1)/(T-1)) or "steps" (each model's own steps). ``reference``: an optional table
    of the same shape (untrained seeds) drawn as a grey band of min..max per (model, step).
    """
    if time not in ("normalised", "steps"):
        raise AnalysisUtilsError(f"time must be 'normalised' or 'steps', got {time!r}.")
    measures = list(measures)
    if not measures:
        raise AnalysisUtilsError("measures is empty; name at least one column of table to draw.")
    _check_columns(table, ["model", "step", "n_steps", *measures], "table")
    if reference is not None:
        _check_columns(reference, ["model", "step", "n_steps", *measures], "reference")
    fig, axes = _panel_grid(len(measures), ncols)
    for ax, measure in zip(axes, measures):
        for name, rows in table.groupby("model", sort=False):
            rows = rows.sort_values("step")
            n_steps = int(rows["n_steps"].iloc[0])
            lo = rows.get(f"{measure} lo")
            hi = rows.get(f"{measure} hi")
            _draw_time_series(ax, name, rows["step"].to_numpy(), rows[measure].to_numpy(),
                              n_steps, time, None if lo is None else lo.to_numpy(),
                              None if hi is None else hi.to_numpy())
        if reference is not None:
            _draw_reference_band(ax, reference, measure, time)
        ax.set_title(measure)
        ax.set_xlabel("normalised time (t - 1) / (T - 1)" if time == "normalised" else "step")
        ax.set_ylabel("")
    fig.suptitle(titled(title, note))
    fig.tight_layout()
    _legend_below(fig, axes[0])
    return fig


def _draw_reference_band(ax, reference, measure: str, time: str) -> None:
    """The range (min..max) of ``measure`` over the untrained seeds at each step of each model:
    a hatched band in the model's colour (seaborn's 100 % percentile interval, with no line),
    a grey span for a one-step model."""
    one_step = reference["n_steps"] <= 1
    for _, rows in reference[one_step].groupby("model", sort=False):
        ax.axhspan(rows[measure].min(), rows[measure].max(), color="#999999", alpha=0.12, lw=0)
    steps = reference[~one_step]
    if steps.empty:
        return
    x = ((steps["step"] - 1) / (steps["n_steps"] - 1) if time == "normalised"
         else steps["step"])
    palette = {name: model_color(name) for name in dict.fromkeys(steps["model"])}
    sns.lineplot(steps.assign(x=x.astype(float)), x="x", y=measure, hue="model",
                 palette=palette, errorbar=("pi", 100), lw=0, legend=False, ax=ax,
                 err_kws={"alpha": 0.12, "hatch": "//", "lw": 0})


# --------------------------------------------------------------------------- Fig. 1


def plot_local_global_composite(panels: Sequence[Mapping], note: str = ""):
    """The study's Fig. 1: one column per model (rows of at most :data:`MAX_COLUMNS` models);
    density of per-exemplar change in cluster size (top) and baseline/after prototypes in a
    shared PCA (bottom). Every density shares one x range.

    Each panel: ``model``, ``readout``, ``baseline_step``, ``after_step``, ``delta`` (per
    exemplar d_after - d_before), ``pca_baseline`` and ``pca_after`` ([C, 2] prototype
    coordinates), optional ``annotation``.
    """
    if not panels:
        raise AnalysisUtilsError("panels is empty; give at least one model's panel.")
    ncols = min(len(panels), MAX_COLUMNS)
    nrows = int(np.ceil(len(panels) / ncols))
    height = 6.8 * nrows + 1.2
    fig = plt.figure(figsize=(PAGE_WIDTH / MAX_COLUMNS * ncols, height))
    grid = fig.add_gridspec(3 * nrows, ncols, height_ratios=[0.55, 2, 4] * nrows, hspace=0.45,
                            wspace=0.15, top=1 - 0.8 / height, bottom=0.6 / height)
    every = np.concatenate([np.asarray(p["delta"], float) for p in panels])
    lo, hi = np.nanmin(every), np.nanmax(every)
    pad = 0.08 * (hi - lo if hi > lo else 1.0)
    xs = np.linspace(lo - pad, hi + pad, 400)
    for index, panel in enumerate(panels):
        row, column = divmod(index, ncols)
        name = panel["model"]
        head = fig.add_subplot(grid[3 * row, column])
        head.axis("off")
        head.text(0.5, 0.75, label(name), ha="center", va="center", fontsize=14,
                  fontweight="bold")
        sub = panel.get("annotation") or _card(name).mechanism
        head.text(0.5, 0.1, f"{sub}\n{panel['readout']} · "
                  f"{_card(name).step_label(panel['baseline_step'])} → "
                  f"{_card(name).step_label(panel['after_step'])}",
                  ha="center", va="center", fontsize=9, style="italic", color="#666666")

        density = fig.add_subplot(grid[3 * row + 1, column])
        delta = np.asarray(panel["delta"], float)
        ys = kde_curve(delta, xs)
        density.fill_between(xs, ys, color=GREY_FILL, alpha=0.6)
        density.plot(xs, ys, color=GREY_LINE, lw=1.2)
        density.axvline(0, color="black", lw=1)
        mean = float(np.mean(delta))
        density.axvline(mean, color="red", ls="--", lw=1.3)
        density.text(mean, ys.max() * 1.02 if ys.max() > 0 else 1, "Compact" if mean < 0
                     else "Expand", ha="right" if mean < 0 else "left", style="italic",
                     fontsize=9)
        density.set_yticks([])
        density.set_xlim(xs[0], xs[-1])
        density.set_xlabel("Δ cluster size (cosine)", fontsize=10)
        density.spines["left"].set_visible(False)

        scatter = fig.add_subplot(grid[3 * row + 2, column])
        base = np.asarray(panel["pca_baseline"], float)
        after = np.asarray(panel["pca_after"], float)
        for b, a in zip(base, after):
            scatter.plot([b[0], a[0]], [b[1], a[1]], color=LINK, lw=0.7, zorder=1)
        scatter.scatter(base[:, 0], base[:, 1], s=30, color=BASELINE_PROTO, alpha=0.8, zorder=2,
                        label="Baseline")
        scatter.scatter(after[:, 0], after[:, 1], s=30, color=model_color(name, "after"),
                        alpha=0.8, zorder=3, label="After recurrence")
        scatter.set_aspect("equal", adjustable="datalim")
        scatter.set_xticks([])
        scatter.set_yticks([])
        for spine in scatter.spines.values():
            spine.set_visible(False)
        scatter.set_xlabel("PC1 →", fontsize=10)
        scatter.set_ylabel("PC2 →", fontsize=10)
        if column == 0:
            density.set_ylabel("Local", fontsize=12, fontweight="bold")
            scatter.set_ylabel("Global\nPC2 →", fontsize=12, fontweight="bold")
    handles = [plt.Line2D([], [], marker="o", ls="none", color=BASELINE_PROTO, label="Baseline"),
               plt.Line2D([], [], marker="o", ls="none", color=AFTER_PROTO,
                          label="After recurrence")]
    fig.legend(handles=handles, loc="lower center", ncol=2, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(titled("Local and global change from baseline to after", note), fontsize=12,
                 y=1.0)
    return fig


# --------------------------------------------------------------------------- Fig. 2


def plot_separation_ridge(rows: Sequence[Mapping], note: str = "", title: str = "",
                          x_max: float = 2.0):
    """The study's Fig. 2: one row per model, KDE of its between-prototype cosine distances on
    [0, 2]; baseline solid, after dashed; mean and SD (ddof 0) printed on each row.

    Each row: ``model``, ``baseline`` (the 4950 distances), optional ``after``, and optional
    ``baseline_step`` / ``after_step`` for the labels.
    """
    n = len(rows)
    xs = np.linspace(0, x_max, 500)
    fig, axes = plt.subplots(n, 1, figsize=(8.0, 1.2 * n + 1.2), sharex=True, squeeze=False)
    for ax, row in zip(axes[:, 0], rows):
        name = row["model"]
        texts = []
        for state, ls, lw, alpha in (("baseline", "-", 1.6, 0.35), ("after", "--", 1.8, 0.25)):
            values = row.get(state)
            if values is None:
                continue
            values = np.asarray(values, float)
            ys = kde_curve(values, xs)
            color = model_color(name, state)
            ax.fill_between(xs, ys, color=color, alpha=alpha, lw=0)
            ax.plot(xs, ys, color=color, ls=ls, lw=lw)
            step = row.get(f"{state}_step")
            tag = state if step is None else _card(name).step_label(step)
            texts.append(f"{tag:>8}: μ={values.mean():.3f}, σ={values.std():.3f}")
        ax.text(0.01, 0.85, label(name), transform=ax.transAxes, fontsize=11, style="italic",
                fontweight="bold", va="top")
        ax.text(0.99, 0.85, "\n".join(texts), transform=ax.transAxes, fontsize=9,
                family="monospace", ha="right", va="top")
        ax.set_yticks([])
        ax.spines["left"].set_visible(False)
        for x in (0.0, 1.0):
            ax.axvline(x, color="#999999", lw=0.8, ls=":")
    axes[0, 0].text(0.0, 1.05, "Same", transform=axes[0, 0].get_xaxis_transform(),
                    ha="center", fontsize=9)
    axes[0, 0].text(1.0, 1.05, "Orthogonal", transform=axes[0, 0].get_xaxis_transform(),
                    ha="center", fontsize=9)
    axes[-1, 0].set_xlabel("between-prototype cosine distance")
    axes[-1, 0].set_xlim(0, x_max)
    fig.suptitle(titled(title or "Between-prototype distances", note))
    fig.tight_layout()
    return fig


def plot_ridge_over_steps(name: str, distances, note: str = "", readout: str = "logits",
                          reference=None, x_max: float = 2.0):
    """Fig. 2 followed over time for one model: one row per step (distances [T, pairs]).

    ``reference``: optional [S, T, pairs] distances of untrained seeds, drawn as a grey band
    (min..max over seeds of the density) behind each step.
    """
    distances = np.asarray(distances, float)
    n_steps = distances.shape[0]
    xs = np.linspace(0, x_max, 400)
    fig, axes = plt.subplots(n_steps, 1, figsize=(7.0, 0.6 * n_steps + 1.5), sharex=True,
                             squeeze=False)
    card = _card(name)
    for index, ax in enumerate(axes[:, 0]):
        step = index + 1
        if reference is not None:
            curves = np.stack([kde_curve(seed[index], xs) for seed in np.asarray(reference)])
            ax.fill_between(xs, curves.min(0), curves.max(0), color="#999999", alpha=0.3, lw=0)
        ys = kde_curve(distances[index], xs)
        color = step_color(name, step, n_steps)
        ax.fill_between(xs, ys, color=color, alpha=0.4, lw=0)
        ax.plot(xs, ys, color=color, lw=1.4)
        ax.text(-0.01, 0.3, card.step_label(step), transform=ax.transAxes, ha="right",
                fontsize=10)
        ax.text(0.99, 0.5, f"μ={distances[index].mean():.3f} σ={distances[index].std():.3f}",
                transform=ax.transAxes, ha="right", fontsize=9, family="monospace")
        ax.set_yticks([])
        ax.spines["left"].set_visible(False)
        ax.axvline(1.0, color="#999999", lw=0.8, ls=":")
    axes[-1, 0].set_xlabel(f"between-prototype cosine distance ({readout})")
    title = f"{card.display_name}: {readout} over every step"
    if reference is not None:
        title += " (grey: untrained seeds)"
    fig.suptitle(titled(title, note), fontsize=11)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Fig. 3


def _tag_label(tag) -> str:
    name, step = tag[0], tag[-1]
    return label(name, step) if _card(name).recurrent else label(name)


def _tag_color(tag) -> str:
    name, step = tag[0], tag[-1]
    card = _card(name)
    return model_color(name, "baseline" if card.recurrent and step == card.baseline else "after")


def plot_rsa_mds(panels: Sequence[Mapping], note: str = ""):
    """The study's Fig. 3, one row per panel (readout): the cross-model RSA heatmap (left,
    seaborn) and the MDS of the model states (right).

    Each panel: ``title`` (e.g. "Penultimate"), ``tags`` (list of (model, step) pairs),
    ``rho`` ([K, K] Spearman matrix), ``coords`` ([K, 2] MDS), ``stress``.
    """
    if not panels:
        raise AnalysisUtilsError("panels is empty; give one panel per readout.")
    size = max(len(p["tags"]) for p in panels)
    fig, axes = plt.subplots(len(panels), 2, figsize=(PAGE_WIDTH, 5.2 * len(panels)),
                             squeeze=False, gridspec_kw={"width_ratios": [1.3, 1]})
    for row, panel in enumerate(panels):
        tags = list(panel["tags"])
        names = [_tag_label(t) for t in tags]
        ax = axes[row, 0]
        sns.heatmap(np.asarray(panel["rho"], float), ax=ax, cmap="viridis_r", vmin=0, vmax=1,
                    square=True, annot=len(tags) <= 20, fmt=".2f",
                    annot_kws={"fontsize": 7 if size > 10 else 9},
                    xticklabels=names, yticklabels=names,
                    cbar_kws={"label": "Spearman ρ", "shrink": 0.8})
        ax.tick_params(labelsize=9, length=0)
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
        ax.set_title(f"Cross-model RSA — {panel['title']}")

        ax = axes[row, 1]
        coords = np.asarray(panel["coords"], float)
        for index, tag in enumerate(tags):
            name = tag[0]
            card = _card(name)
            hollow = card.recurrent and tag[-1] == card.baseline
            color = _tag_color(tag)
            ax.scatter(coords[index, 0], coords[index, 1], s=220,
                       facecolors="none" if hollow else color, edgecolors=color, lw=2, zorder=3)
            ax.annotate(names[index], coords[index], fontsize=9, xytext=(6, 6),
                        textcoords="offset points")
        for index, tag in enumerate(tags):
            card = _card(tag[0])
            if card.recurrent and tag[-1] == card.baseline:
                for other, target in enumerate(tags):
                    if target[0] == tag[0] and target[-1] == card.after and other != index:
                        ax.annotate("", coords[other], coords[index],
                                    arrowprops={"arrowstyle": "->", "lw": 1.5,
                                                "color": model_color(tag[0], "after")})
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
        sns.despine(ax=ax, left=True, bottom=True)
        ax.set_title(f"Model MDS — {panel['title']}\n(stress = {panel['stress']:.3f})")
    if note:
        fig.suptitle(note)
    fig.tight_layout()
    return fig


def plot_mds_trajectories(panels: Sequence[Mapping], note: str = ""):
    """Every step of every model in one MDS space per readout: one path per model from t=1
    (hollow) to its last step (filled).

    Each panel: ``title``, ``tags`` ((model, step) pairs), ``coords`` [K, 2], ``stress``.
    """
    fig, axes = _panel_grid(len(panels), height=5.2, max_width=5.0)
    for ax, panel in zip(axes, panels):
        tags = list(panel["tags"])
        coords = np.asarray(panel["coords"], float)
        by_model: dict[str, list[tuple[int, int]]] = {}
        for index, tag in enumerate(tags):
            by_model.setdefault(tag[0], []).append((tag[-1], index))
        for name, items in by_model.items():
            items.sort()
            path = coords[[index for _, index in items]]
            color = model_color(name, "after")
            if len(items) > 1:
                ax.plot(path[:, 0], path[:, 1], color=color, lw=1.5, alpha=0.8)
                ax.scatter(path[0, 0], path[0, 1], s=90, facecolors="none",
                           edgecolors=model_color(name, "baseline"), lw=2, zorder=3)
                ax.scatter(path[1:, 0], path[1:, 1], s=18, color=color, zorder=3)
                ax.scatter(path[-1, 0], path[-1, 1], s=110, color=color, zorder=4,
                           label=label(name))
            else:
                ax.scatter(path[0, 0], path[0, 1], s=110, color=color, marker="s", zorder=4,
                           label=label(name))
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
        sns.despine(ax=ax, left=True, bottom=True)
        ax.set_title(f"{panel['title']}: every step\n(stress = {panel['stress']:.3f})")
    fig.suptitle(titled("Trajectories in the cross-model MDS space", note))
    fig.tight_layout()
    _legend_below(fig, axes[0])
    return fig


def plot_claim_test(table, note: str = ""):
    """The study's claim "converge at the feature stage, diverge at the decision stage":
    mean between-model RSA per readout, with bootstrap intervals over categories, per step.

    ``table``: rows with ``readout``, ``tau`` (normalised time), ``mean``, ``lo``, ``hi``.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = {"penult": "#1f77b4", "logits": "#d62728"}
    for readout, rows in table.groupby("readout", sort=False):
        rows = rows.sort_values("tau")
        color = colors.get(readout, None)
        ax.plot(rows["tau"], rows["mean"], marker="o", color=color, label=readout)
        ax.fill_between(rows["tau"], rows["lo"], rows["hi"], color=color, alpha=0.2, lw=0)
    ax.set_xlabel("normalised time (t - 1) / (T - 1)")
    ax.set_ylabel("mean between-model Spearman ρ")
    ax.legend()
    ax.set_title(titled("Do models converge at the feature stage?", note), fontsize=11)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- perturbations


def _level_colors(levels) -> dict:
    """One colour per level, darker = stronger (level 0, clean, the lightest)."""
    return dict(zip(levels, sns.color_palette("rocket_r", len(levels) + 1)[1:]))


def _level_text(perturbation: str, level) -> str:
    return "clean" if level == 0 else f"{perturbation} {level:g}"


def plot_steps_by_level(table, measure: str, perturbation: str, note: str = "",
                        ylabel: str = "top-1 (%)", counterparts: Mapping[str, str] | None = None):
    """Chapter 6: ``measure`` over every step, one line per level of ``perturbation`` (darker
    = stronger), one panel per multi-step model (shared y axis).

    ``counterparts`` (``{recurrent model: its feedforward counterpart}``, as the cards give
    them) draws each counterpart's levels as dashed horizontal lines in its recurrent model's
    panel; a one-step model that is no one's counterpart here gets a panel of its own, its
    levels dashed. ``table``: rows of :func:`analysis_utils.robustness.step_table` (``model``,
    ``perturbation``, ``level``, ``step``, ``n_steps``, ``measure``).
    """
    _check_columns(table, ["model", "perturbation", "level", "step", "n_steps", measure],
                   "table")
    part = table[table["perturbation"] == perturbation]
    if part.empty:
        raise AnalysisUtilsError(
            f"table has no rows for the perturbation {perturbation!r}; it has: "
            f"{', '.join(map(str, dict.fromkeys(table['perturbation'])))}."
        )
    levels = sorted(dict.fromkeys(part["level"]))
    colors = _level_colors(levels)
    models = list(dict.fromkeys(part["model"]))
    pairs = {model: ff for model, ff in (counterparts or {}).items()
             if model in models and ff in models}
    shown_inside = set(pairs.values())
    panels = [model for model in models if model not in shown_inside or model in pairs]
    fig, axes = _panel_grid(len(panels), height=2.9, max_width=3.4, sharey=True)

    def draw(ax, name):
        rows = part[part["model"] == name]
        for level in levels:
            at = rows[rows["level"] == level].sort_values("step")
            text = _level_text(perturbation, level)
            if int(at["n_steps"].iloc[0]) <= 1:
                ax.axhline(float(at[measure].iloc[0]), color=colors[level], ls="--", lw=1.4,
                           label=text)
            else:
                ax.plot(at["step"], at[measure], color=colors[level], lw=2, marker="o", ms=3,
                        label=text)
        return int(rows["n_steps"].iloc[0])

    for ax, name in zip(axes, panels):
        n_steps = draw(ax, name)
        title = label(name)
        if name in pairs:
            draw(ax, pairs[name])
            title += f" (dashed: {label(pairs[name])})"
        ax.set_title(title, fontsize=10)
        if n_steps > 1:
            ax.set_xlabel("step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.set_xticks([])
            ax.set_xlabel("one step")
    for ax in axes[::_columns(MAX_COLUMNS, len(panels))]:  # the first panel of each row
        ax.set_ylabel(ylabel)
    fig.suptitle(titled(f"{ylabel} at every step under {perturbation}", note))
    _fixed_margins(fig, top=1.0, bottom=0.55, hspace=0.55, wspace=0.12)
    _figure_legend(fig, [plt.Line2D([], [], color=colors[level], lw=2) for level in levels],
                   [_level_text(perturbation, level) for level in levels])
    return fig


def plot_perturbation_examples(probe, examples: Mapping, picks: Sequence[int], note: str = ""):
    """Chapter 6: the clean image and every perturbed version of a few probe images, as one
    mosaic: one row per perturbation level (clean first), one column per picked image (at
    most :data:`MAX_COLUMNS`), each tile the image's own pixels (no resampling when the
    images share a size; else each is resized to the first one's size).

    ``examples``: ``{PerturbationSpec: the perturbed PIL images at picks}`` (as
    ``perturb.perturb_probe(spec, probe, positions=picks)`` returns them); ``picks``: probe
    positions.
    """
    picks = list(picks)
    if not 1 <= len(picks) <= MAX_COLUMNS or any(not 0 <= i < len(probe) for i in picks):
        raise AnalysisUtilsError(
            f"picks must be 1 to {MAX_COLUMNS} positions from 0 to {len(probe) - 1}, got "
            f"{picks}."
        )
    rows = [("clean", [probe.images[i] for i in picks])]
    for spec, images in examples.items():
        if len(images) != len(picks):
            raise AnalysisUtilsError(
                f"examples[{spec.describe()!r}] holds {len(images)} images; give one per pick "
                f"({len(picks)}): perturb.perturb_probe(spec, probe, positions=picks)."
            )
        rows.append((spec.describe(), list(images)))
    mosaic, (height, width), gap = perturbation_mosaic([images for _, images in rows])
    side = 1.5
    fig, ax = plt.subplots(figsize=(side * len(picks) + 1.6, side * len(rows) + 0.6))
    _fixed_margins(fig, top=0.9, bottom=0.2)
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_yticks([r * (height + gap) + height / 2 for r in range(len(rows))],
                  [text for text, _ in rows], fontsize=9)
    ax.set_xticks([c * (width + gap) + width / 2 for c in range(len(picks))],
                  [probe.category_names[int(probe.labels[i])].split(",")[0] for i in picks],
                  fontsize=9)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.suptitle(titled("The perturbed images", note), fontsize=11)
    return fig


def perturbation_mosaic(rows: Sequence[Sequence], gap: int = 4
                        ) -> tuple[np.ndarray, tuple[int, int], int]:
    """``(uint8 [H, W, 3] mosaic, (tile height, tile width), gap)``: the PIL images of each
    row side by side, rows stacked, ``gap`` white pixels between tiles; every tile has the
    first image's size (others are resized to it, bilinear)."""
    first = rows[0][0]
    width, height = first.size
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    mosaic = np.full((n_rows * (height + gap) - gap, n_cols * (width + gap) - gap, 3), 255,
                     dtype=np.uint8)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            tile = image.convert("RGB")
            if tile.size != (width, height):
                tile = tile.resize((width, height))
            y, x = r * (height + gap), c * (width + gap)
            mosaic[y:y + height, x:x + width] = np.asarray(tile)
    return mosaic, (height, width), gap


def plot_against_level(table, columns: Sequence[tuple[str, str]], title: str, note: str = "",
                       zero_line: Sequence[str] = ()):
    """Chapter 6: measures against the perturbation level, one row per perturbation and one
    column per measure (at most :data:`MAX_COLUMNS`), one line per model in its colour;
    feedforward models dashed. ``columns``: ``(measure, its axis label)`` pairs; a measure
    with ``<measure> lo`` / ``<measure> hi`` columns gets that band (the bootstrap interval of
    the benefit, :func:`analysis_utils.robustness.with_benefit`); ``zero_line`` names the
    measures drawn with a line at 0.

    ``table``: rows with ``model``, ``perturbation``, ``level`` and every measure.
    """
    columns = list(columns)
    _check_columns(table, ["model", "perturbation", "level", *(m for m, _ in columns)],
                   "table")
    ncols = _columns(len(columns), len(columns))
    perturbations = list(dict.fromkeys(table["perturbation"]))
    nrows = len(perturbations)
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(PAGE_WIDTH, 3.6 * ncols), 2.5 * nrows),
                             sharey="col", squeeze=False)
    for row, name in zip(axes, perturbations):
        part = table[table["perturbation"] == name]
        for ax, (measure, ylabel) in zip(row, columns):
            band = (f"{measure} lo", f"{measure} hi") if f"{measure} lo" in part else None
            for model, rows in part.groupby("model", sort=False):
                rows = rows.sort_values("level")
                if rows[measure].isna().all():
                    continue
                color = model_color(model)
                dashed = not _card(model).recurrent
                ax.plot(rows["level"], rows[measure], color=color, lw=1.5 if dashed else 2.0,
                        ls="--" if dashed else "-", marker="o", ms=3.5, label=label(model))
                if band is not None:
                    ax.fill_between(rows["level"], rows[band[0]], rows[band[1]], color=color,
                                    alpha=0.15, lw=0)
            if measure in zero_line:
                ax.axhline(0, color="black", lw=0.8)
            ax.set_xlabel(f"{name} level", fontsize=9)
            if name == perturbations[0]:
                ax.set_title(ylabel, fontsize=10)
    fig.suptitle(titled(title, note))
    _fixed_margins(fig, top=1.0, bottom=0.5, hspace=0.6, wspace=0.28)
    handles = {}  # every model once, from whichever panel drew it
    for ax in axes.flat:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    _figure_legend(fig, list(handles.values()), list(handles))
    return fig


# --------------------------------------------------------------------------- Fig. 4


def plot_convrnn_supplement(delta, ks, pct_before, pct_after, pca_baseline, pca_after,
                            shifts, before_label: str, after_label: str, note: str = "",
                            name: str = "convrnn"):
    """The study's Fig. 4: (a) density of the per-exemplar change, (b) k-NN category
    preservation before/after, (c) prototype shifts in PCA, (d) histogram of per-category shift.
    """
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 8.4))
    axes = axes.flat
    delta = np.asarray(delta, float)
    lo, hi = delta.min(), delta.max()
    pad = 0.08 * (hi - lo if hi > lo else 1.0)
    xs = np.linspace(lo - pad, hi + pad, 400)
    ys = kde_curve(delta, xs)
    ax = axes[0]
    ax.fill_between(xs, ys, color=GREY_FILL, alpha=0.6)
    ax.plot(xs, ys, color=GREY_LINE)
    ax.axvline(0, color="black", ls=":", label="No change")
    ax.axvline(delta.mean(), color="red", ls="--", label=f"Mean = {delta.mean():+.3f}")
    ax.set_xlabel("Δ exemplar–prototype distance")
    ax.set_yticks([])
    ax.legend(fontsize=9)
    ax.set_title("(a) local change")

    ax = axes[1]
    ax.plot(ks, pct_after, color=model_color(name, "after"), lw=3, label=after_label)
    ax.plot(ks, pct_before, color="#888888", ls="--", lw=2, label=before_label)
    ax.set_xlabel("k")
    ax.set_ylabel("% Same-Category Neighbors")
    ax.legend(fontsize=9)
    ax.set_title("(b) k-NN category preservation")

    ax = axes[2]
    base = np.asarray(pca_baseline, float)
    after = np.asarray(pca_after, float)
    for b, a in zip(base, after):
        ax.plot([b[0], a[0]], [b[1], a[1]], color=LINK, lw=0.7)
    ax.scatter(base[:, 0], base[:, 1], s=25, color=BASELINE_PROTO, alpha=0.8, label=before_label)
    ax.scatter(after[:, 0], after[:, 1], s=25, color=model_color(name, "after"), alpha=0.8,
               label=after_label)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("PC1 →")
    ax.set_ylabel("PC2 →")
    ax.legend(fontsize=9)
    ax.set_title("(c) prototype shifts")

    ax = axes[3]
    shifts = np.asarray(shifts, float)
    ax.hist(shifts, bins=30, color=model_color(name, "after"), alpha=0.7)
    ax.axvline(shifts.mean(), color="black", ls="--", label=f"mean = {shifts.mean():.3f}")
    ax.set_xlabel("per-category shift (1 − cos)")
    ax.set_ylabel("categories")
    ax.legend(fontsize=9)
    ax.set_title("(d) prototype shift per category")
    fig.suptitle(titled(f"{label(name)}: {before_label} → {after_label}", note))
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- helpers


def prototype_pca(baseline_features, baseline_prototypes, after_prototypes):
    """The study's shared PCA: PCA(2) fitted on the baseline exemplars; both prototype sets are
    projected into it. Returns ([C, 2], [C, 2])."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(np.asarray(baseline_features, dtype=np.float32))
    return (pca.transform(np.asarray(baseline_prototypes, dtype=np.float32)),
            pca.transform(np.asarray(after_prototypes, dtype=np.float32)))
