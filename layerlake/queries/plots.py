"""Metric-vs-layer plots (matplotlib, Agg canvas; no pyplot global state).

One curve per model; a band of mean +- sem over documents for document-granularity
metrics; x = layer index or relative depth (``layer / n_layers``, 0 = embeddings,
1 = last block), so models of different depth line up. Layer-pair metrics are
drawn at their first layer (label ``l -> l2``); metrics without a layer
(perplexity, trajectories) as one bar per model with its sem. Several metrics
make a grid of panels with the same colour per model throughout.

Plotting draws frames it is given (``Lake.plot_metric`` computes them with
``Lake.metric``); :func:`split_params` says which parameters go to which metric.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..errors import SpecError
from ..metrics import get_metric
from .metric_engine import ENGINE_OPTIONS

_ARROW = {"higher": "higher is better", "lower": "lower is better"}


def split_params(names: Sequence[str], params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Give each metric the parameters and engine options it accepts; no names, or unknown everywhere -> error."""
    if not names:
        raise SpecError("plot: give at least one metric name")
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in params.items():
        takers = [n for n in names if key in get_metric(n).params or key in ENGINE_OPTIONS.get(get_metric(n).input, {})
                  or key in ("cache", "block_bytes")]
        if not takers:
            valid = sorted({p for n in names for p in get_metric(n).params}
                           | {o for n in names for o in ENGINE_OPTIONS.get(get_metric(n).input, {})})
            raise SpecError(f"no metric of {list(names)} takes parameter {key!r}; valid: {valid or 'none'}")
        for n in takers:
            out[n][key] = value
    return out


def _short(label: str) -> str:
    """A local path shows as its last folder name; Hub ids (``org/name``) stay as they are."""
    label = str(label).rstrip("/")
    return os.path.basename(label) if os.path.isabs(label) or label.startswith(".") else label


def layer_counts(store: Any, frames: Iterable[pl.DataFrame]) -> dict[str, int]:
    """Blocks of each extraction in ``frames`` (the denominator of relative depth)."""
    out = {}
    for frame in frames:
        for eid in frame["extraction"].unique().to_list():
            if eid not in out:
                out[eid] = int(store.extraction(eid).n_layers or 1)
    return out


def draw_metric(ax: Any, name: str, frame: pl.DataFrame, colors: dict[str, Any], relative_depth: bool,
                depths: Mapping[str, int]) -> None:
    defn = get_metric(name)
    title = name + (f"  ({_ARROW[defn.direction]})" if defn.direction in _ARROW else "")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if frame.height == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    has_pair = "model2" in frame.columns
    if frame["layer"].null_count() == frame.height:  # one value per model
        labels = [_short(m) + (f" vs {_short(m2)}" if has_pair else "")
                  for m, m2 in zip(frame["model"], frame["model2"] if has_pair else frame["model"])]
        vals = frame["value"].to_numpy()
        err = frame["sem"].fill_null(0.0).to_numpy() if "sem" in frame.columns else None
        ax.bar(range(len(vals)), vals, yerr=err, color=[colors[m] for m in frame["model"]], capsize=4)
        ax.set_xticks(range(len(vals)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(name, fontsize=9)
        return
    keys = ["extraction", "extraction2"] if has_pair else ["extraction"]
    for _, g in frame.group_by(keys, maintain_order=True):
        g = g.sort("layer")
        model = g["model"][0]
        label = _short(model) + (f" vs {_short(g['model2'][0])}" if has_pair else "")
        x = g["layer"].to_numpy().astype(float)
        if relative_depth:
            x = x / depths[g["extraction"][0]]
        y = g["value"].to_numpy()
        ax.plot(x, y, marker="o", ms=3.5, lw=1.6, color=colors[model], label=label)
        sem = g["sem"].to_numpy() if "sem" in g.columns else None
        if sem is not None and np.isfinite(sem.astype(float)).any():
            sem = np.nan_to_num(sem.astype(float))
            ax.fill_between(x, y - sem, y + sem, color=colors[model], alpha=0.2, lw=0)
    pair = frame["layer2"].null_count() < frame.height
    if has_pair:
        what = "layer of the first model (vs layer2 of the second)"
    elif pair:
        what = "first layer of each pair (layer -> layer2)"
    else:
        what = "layer (0 = embeddings)"
    if relative_depth:
        ax.set_xlabel("relative depth (layer / blocks)" + (" of the first layer" if pair else ""), fontsize=9)
    else:
        ax.set_xlabel(what, fontsize=9)
        layers_seen = sorted(set(frame["layer"].drop_nulls().to_list()))
        if len(layers_seen) <= 16:
            ax.set_xticks(layers_seen)
    ax.set_ylabel(name, fontsize=9)


def plot_metrics(frames: Mapping[str, pl.DataFrame], out: Any, *, dataset: str, relative_depth: bool = False,
                 depths: Mapping[str, int] | None = None, ncols: int | None = None, title: str | None = None,
                 dpi: int = 130) -> Path:
    """Draw each metric's frame (``{name: Lake.metric(name, ...)}``) to ``out`` (PNG, or any matplotlib format).

    ``depths``: blocks per extraction (:func:`layer_counts`), needed with ``relative_depth``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(frames)
    if not names:
        raise SpecError("plot: give at least one metric name")
    if relative_depth:
        missing = sorted({e for f in frames.values() for e in f["extraction"].unique().to_list()} - set(depths or {}))
        if missing:
            raise SpecError(f"plot: relative_depth needs the number of blocks of extraction(s) {missing}; "
                            "pass depths=layer_counts(store, frames.values())")
    models: list[str] = []
    for f in frames.values():
        for m in f["model"].to_list():
            if m not in models:
                models.append(m)
    cmap = _palette(len(models))
    colors = {m: cmap[i] for i, m in enumerate(models)}
    k = len(names)
    ncols = ncols or (1 if k == 1 else min(3, k))
    nrows = math.ceil(k / ncols)
    size = (6.4, 4.2) if k == 1 else (4.6 * ncols, 3.5 * nrows)
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, n in enumerate(names):
        draw_metric(axes[i // ncols][i % ncols], n, frames[n], colors, relative_depth, depths or {})
    for j in range(k, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    handles, labels = [], []
    for row in axes:
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
    if handles:
        if k == 1:
            axes[0][0].legend(handles, labels, fontsize=8, loc="best")
        else:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=9)
    fig.suptitle(title or f"dataset {dataset!r}" + ("  (band: mean +- sem over documents)"
                                                     if any("sem" in f.columns and f["sem"].null_count() < f.height
                                                            for f in frames.values()) else ""), fontsize=11)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]
