"""Report figures, each returned as a PNG data URI so the HTML page needs no other file.

Figures are drawn on the Agg canvas directly (no pyplot), so nothing here touches global
matplotlib state or needs a display.
"""

from __future__ import annotations

import base64
import io
import math
import warnings

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..jit import cache_jit_kernels

MAX_POINTS = 4000  # per scatter panel: enough to see the shape, small enough to keep pages light
REAL_COLOUR, GENERATED_COLOUR = "#7f7f7f", "#1f77b4"


def loss_curves(histories: dict[str, pd.DataFrame]) -> str:
    """Train and validation loss per epoch, one panel per model."""
    fig, axes = _panels(len(histories))
    for ax, (name, history) in zip(axes, histories.items()):
        for column, style in (("train_loss", "-"), ("val_loss", "--")):
            if column in history:
                curve = history[["epoch", column]].dropna()
                ax.plot(curve["epoch"], curve[column], style, label=column.replace("_", " "))
        ax.set(title=name, xlabel="epoch", ylabel="loss")
        ax.legend(fontsize="small")
    return _data_uri(fig)


def pca_real_vs_generated(real_test: np.ndarray, generated: dict[str, np.ndarray], axis: str = "PC") -> str:
    """Real test rows and each model's samples in two dimensions: the first two PCs of the real
    train split, or (axis="UMAP") a UMAP embedding of real and generated rows together."""
    fig, axes = _panels(len(generated))
    for ax, (name, points) in zip(axes, generated.items()):
        for label, xy, colour in (("real test", real_test, REAL_COLOUR), (name, points, GENERATED_COLOUR)):
            xy = _thin(xy)
            if xy.shape[1] < 2:  # a projection with one component (tiny or near-constant train split): on a line
                xy = np.column_stack([xy, np.zeros(len(xy))])
            ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.5, color=colour, label=label)
        ax.set(title=name, xlabel=f"{axis}1", ylabel=f"{axis}2")
        ax.legend(fontsize="small", markerscale=2)
    return _data_uri(fig)


def imputed_vs_true(pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """Held-out truth against the model's fill, with the identity line a perfect model lies on."""
    fig, axes = _panels(len(pairs))
    for ax, (name, (truth, filled)) in zip(axes, pairs.items()):
        points = _thin(np.column_stack([truth, filled]))
        ax.scatter(points[:, 0], points[:, 1], s=5, alpha=0.4, color=GENERATED_COLOUR)
        finite = points[np.isfinite(points).all(axis=1)]
        if finite.size:
            low, high = finite.min(), finite.max()
            ax.plot([low, high], [low, high], color="black", linewidth=0.8)
        ax.set(title=name, xlabel="true (held out)", ylabel="imputed")
    return _data_uri(fig)


def kmer_spectra(real_test: np.ndarray, generated: dict[str, np.ndarray], k: int) -> str:
    """Frequency of each k-mer in the real test records against the generated ones."""
    fig, axes = _panels(len(generated))
    for ax, (name, spectrum) in zip(axes, generated.items()):
        ax.scatter(real_test, spectrum, s=10, alpha=0.6, color=GENERATED_COLOUR)
        high = max(real_test.max(initial=0), spectrum.max(initial=0)) or 1.0
        ax.plot([0, high], [0, high], color="black", linewidth=0.8)
        ax.set(title=f"{name}: {k}-mer frequencies", xlabel="real test", ylabel="generated")
    return _data_uri(fig)


def gc_histograms(real_test: np.ndarray, generated: dict[str, np.ndarray]) -> str:
    """GC fraction per record, real test against generated."""
    fig, axes = _panels(len(generated))
    bins = np.linspace(0, 1, 26)
    for ax, (name, values) in zip(axes, generated.items()):
        ax.hist(real_test, bins=bins, density=True, alpha=0.5, color=REAL_COLOUR, label="real test")
        ax.hist(values, bins=bins, density=True, alpha=0.5, color=GENERATED_COLOUR, label=name)
        ax.set(title=name, xlabel="GC fraction", ylabel="density")
        ax.legend(fontsize="small")
    return _data_uri(fig)


def forecast_example(example: dict, forecasts: dict[str, list]) -> str:
    """One test series per gene: the true trajectory and each method's forecast of the last point."""
    genes = example["genes"]
    fig, axes = _panels(len(genes))
    times = np.asarray(example["times"], dtype=float)
    truth = np.asarray(example["truth"], dtype=float)
    for g, (ax, gene) in enumerate(zip(axes, genes)):
        ax.plot(times, truth[:, g], "o-", color=REAL_COLOUR, label="truth")
        for name, forecast in forecasts.items():
            ax.plot(times[-1], _float(forecast[g]), "x", markersize=9, mew=2, label=name)
        ax.set(title=f"{example['series']}: {gene}", xlabel="time", ylabel="value")
        ax.legend(fontsize="small")
    return _data_uri(fig)


def _float(value) -> float:
    return float("nan") if value is None else float(value)


def _panels(n: int):
    """A grid of up to 3 columns; returns the figure and its n axes (spare ones hidden)."""
    columns = max(1, min(3, n))
    rows = max(1, math.ceil(n / columns))
    fig = Figure(figsize=(4.2 * columns, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(rows, columns, squeeze=False).ravel())
    for spare in axes[n:]:
        spare.set_visible(False)
    return fig, axes[:n]


def _thin(points: np.ndarray) -> np.ndarray:
    """A fixed, evenly spaced subset, so the same page is drawn every time."""
    if len(points) <= MAX_POINTS:
        return points
    return points[np.linspace(0, len(points) - 1, MAX_POINTS).astype(int)]


def _data_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def gene_statistics(real: dict[str, np.ndarray], generated: dict[str, dict[str, np.ndarray]]) -> str:
    """Per-gene mean (top row) and variance (bottom row), real test against each model's samples."""
    columns = max(1, len(generated))
    fig = Figure(figsize=(3.6 * columns, 6.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, columns, squeeze=False)
    for c, (name, stats) in enumerate(generated.items()):
        for r, statistic in enumerate(("mean", "variance")):
            ax = axes[r, c]
            x, y = np.asarray(real[statistic], dtype=float), np.asarray(stats[statistic], dtype=float)
            both = np.isfinite(x) & np.isfinite(y)
            ax.scatter(x[both], y[both], s=8, alpha=0.6, color=GENERATED_COLOUR)
            if both.any():
                low, high = min(x[both].min(), y[both].min()), max(x[both].max(), y[both].max())
                ax.plot([low, high], [low, high], color="black", linewidth=0.8)
            ax.set(title=f"{name}: gene {statistic}", xlabel=f"real test {statistic}", ylabel=f"generated {statistic}")
    return _data_uri(fig)


def forecast_horizons(errors: dict[str, list[float]], horizons: list[int], reference: list[float] | None = None) -> str:
    """Forecast RMSE against horizon (steps ahead), one line per method; the last-value reference dashed."""
    fig, (ax,) = _panels(1)
    for name, values in errors.items():
        ax.plot(horizons, [_float(v) for v in values], "o-", label=name)
    if reference is not None:
        ax.plot(horizons, [_float(v) for v in reference], "k--", label="last value carried forward")
    ax.set(title="forecast error by horizon", xlabel="steps ahead", ylabel="RMSE", xticks=horizons)
    ax.legend(fontsize="small")
    return _data_uri(fig)


def calibration(curves: dict[str, tuple[list, list]]) -> str:
    """Observed against nominal coverage of the imputation draws' central intervals, one line per
    model; the diagonal is a calibrated model (above: too wide, below: overconfident)."""
    fig, (ax,) = _panels(1)
    ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, label="calibrated")
    for name, (nominal, observed) in curves.items():
        ax.plot(nominal, [_float(v) for v in observed], "o-", label=name)
    ax.set(title="interval coverage on held-out entries", xlabel="nominal coverage", ylabel="observed coverage",
           xlim=(0, 1), ylim=(0, 1))  # fmt: skip
    ax.legend(fontsize="small")
    return _data_uri(fig)


# ---------------------------------------------------------------------------- issue 14 / 16 helpers

FIGURE_ROWS = 2000  # rows a figure draws from: a page stays light at any data size


def figure_rows(n_rows: int, seed: int = 0, max_rows: int = FIGURE_ROWS) -> np.ndarray:
    """Sorted indices of the rows a figure draws (all of them, or a seeded subsample of
    `max_rows`): PCA, UMAP and distribution panels stay the same size at a million cells."""
    if n_rows <= max_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng([int(seed), 6]).choice(n_rows, max_rows, replace=False))


MIN_UMAP_POINTS = 10
UMAP_ROWS = 500  # a side: UMAP's cost grows with points, and 500 a side shows the clusters


def umap_embedding(real: np.ndarray, generated: dict[str, np.ndarray], seed: int = 0, rows: int = UMAP_ROWS):
    """One UMAP of (a seeded subsample of at most `rows` of) real rows and each model's generated
    rows together, so all panels share one map; None, with the reason, when there are too few
    points for a neighbour graph. Below 50 points the layout starts at random: UMAP's spectral
    start solves an eigenproblem that needs more points than neighbours."""
    parts = {"real": real, **generated}
    parts = {name: points[figure_rows(len(points), seed, rows)] for name, points in parts.items()}
    stacked = np.vstack(list(parts.values()))
    if len(stacked) < MIN_UMAP_POINTS:
        return None, f"UMAP needs {MIN_UMAP_POINTS} points ({len(stacked)} real and generated rows)"
    import umap  # umap-learn; imported here because it is slow to import
    from sklearn.neighbors import NearestNeighbors

    cache_jit_kernels(umap.umap_, umap.layouts, umap.spectral, umap.utils)
    # UMAP's own path for small data calls a Python distance function once per pair of rows (9
    # million calls, ~5 CPU s for 3,000 rows); the same exact neighbours from scikit-learn take
    # milliseconds. 200 epochs (UMAP's default above 10,000 rows, 500 below) are enough for a figure.
    neighbours = min(15, len(stacked) - 1)
    distances, indices = NearestNeighbors(n_neighbors=neighbours).fit(stacked).kneighbors(stacked)
    reducer = umap.UMAP(n_neighbors=neighbours, random_state=seed, n_jobs=1, n_epochs=200,
                        precomputed_knn=(indices, distances, None), force_approximation_algorithm=True,
                        init="spectral" if len(stacked) >= 50 else "random")  # fmt: skip
    with warnings.catch_warnings():  # no search index: `transform` of new rows, which the report never does
        warnings.filterwarnings("ignore", message="precomputed_knn", category=UserWarning)
        embedded = reducer.fit_transform(stacked)
    bounds = np.cumsum([0] + [len(points) for points in parts.values()])
    pieces = {name: embedded[bounds[i] : bounds[i + 1]] for i, name in enumerate(parts)}
    return (pieces.pop("real"), pieces), None


def c2st_features(evidence: dict[str, list[dict]], top: int = 10) -> str:
    """Issue 16's evidence: for each model, the features (genes, or k-mers) the two-sample
    classifier leans on most (scores.json `generation.c2st_top_features`), as paired bars of
    their real and generated means; the longest bars' gap is where a set differs from real data."""
    evidence = {name: rows[:top] for name, rows in evidence.items() if rows}
    if not evidence:
        return ""
    fig, axes = _panels(len(evidence))
    for ax, (name, rows) in zip(axes, evidence.items()):
        labels = [f"{row['feature']} ({row['importance']:.2f})" for row in rows][::-1]
        y = np.arange(len(rows))
        real = [_float(row["real_mean"]) for row in rows][::-1]
        generated = [_float(row["generated_mean"]) for row in rows][::-1]
        ax.barh(y + 0.2, real, height=0.4, color=REAL_COLOUR, label="real test")
        ax.barh(y - 0.2, generated, height=0.4, color=GENERATED_COLOUR, label="generated")
        ax.set_yticks(y, labels, fontsize="small")
        ax.set(title=f"{name}: what tells it apart", xlabel="mean (importance in brackets)")
        ax.legend(fontsize="small")
    return _data_uri(fig)


def c2st_features_table(evidence: dict[str, list[dict]], top: int = 10) -> str:
    """The same evidence as an HTML table (model, feature, importance, real mean, generated mean),
    escaped, for pages that prefer text to a figure."""
    import html

    rows = [
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(row['feature']))}</td><td>{_float(row['importance']):.3f}</td>"
        f"<td>{_float(row['real_mean']):.4g}</td><td>{_float(row['generated_mean']):.4g}</td></tr>"
        for name, features in evidence.items()
        for row in features[:top]
    ]
    if not rows:
        return ""
    head = "<tr><th>model</th><th>feature</th><th>importance</th><th>real mean</th><th>generated mean</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
