"""Figures for papers: seaborn styling, image grids, and saving with a provenance sidecar.

Every figure is written as PNG (for notebooks and the README) and PDF (for papers) next to a JSON
sidecar holding the parameters that made it plus ``provenance.provenance()``; all three are
written atomically so an interrupted run never leaves a half-written figure.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import paths, provenance


def set_style(context: str = "notebook") -> None:
    """Apply the project's seaborn style: white grid, colour-blind palette, readable fonts."""
    import seaborn as sns

    sns.set_theme(context=context, style="whitegrid", palette="colorblind")


def save_figure(fig, name: str, parameters: dict[str, Any] | None = None, *,
                directory: str | Path | None = None, dpi: int = 150) -> dict[str, Path]:
    """Save ``fig`` as ``name.png``, ``name.pdf`` and a ``name.json`` sidecar; return the paths.

    ``name`` is a file stem without extension (``"01_curve_density"``); ``directory`` defaults to
    ``paths.figures_dir()``. The sidecar records ``parameters`` and provenance (versions, commit).
    Raises ValueError for an empty name or one containing a path separator.
    """
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    directory = Path(directory) if directory is not None else paths.figures_dir()
    out: dict[str, Path] = {}
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=dpi, bbox_inches="tight")
        out[ext] = provenance.write_bytes_atomic(directory / f"{name}.{ext}", buf.getvalue())
    sidecar = {"figure": name, "files": [p.name for p in out.values()],
               "parameters": parameters or {}, "provenance": provenance.provenance()}
    out["json"] = provenance.write_json_atomic(directory / f"{name}.json", sidecar)
    return out


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1, pad_value: float = 1.0
               ) -> np.ndarray:
    """Tile images ``[N, C, H, W]`` in [-1, 1] into one array ``[rows·(H+pad), nrow·(W+pad), C]``.

    Values are mapped to [0, 1] for ``imshow``; C is 1 (grey) or 3 (RGB). Raises ValueError for
    a wrong rank, an empty batch or an unsupported channel count.
    """
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, 1|3, H, W] with N ≥ 1, got {tuple(images.shape)}")
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()  # [N, C, H, W] in [0, 1]
    n, c, h, w = x.shape
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    grid = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value)
    for i in range(n):
        r, q = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[top:top + h, left:left + w] = x[i].transpose(1, 2, 0)
    return grid


def show_images(ax, images: torch.Tensor, nrow: int = 8, title: str | None = None) -> None:
    """Draw an image grid of ``images [N, C, H, W]`` in [-1, 1] on ``ax`` without axes ticks."""
    grid = image_grid(images, nrow=nrow)
    if grid.shape[2] == 1:
        ax.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def panel_grid(n: int, *, ncol: int = 5, panel_size: tuple[float, float] = (3.3, 3.1)):
    """A matplotlib figure of ``n`` panels on a grid of at most ``ncol`` columns (as many rows as
    needed), each ``panel_size`` inches, spaced for titles and axis labels; the grid's unused
    cells are hidden. Returns ``(fig, axes)``, ``axes`` the list of the ``n`` panels in row
    order. Raises ValueError for ``n`` or ``ncol`` below 1."""
    import matplotlib.pyplot as plt

    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or isinstance(ncol, bool) \
            or not isinstance(ncol, int) or ncol < 1:
        raise ValueError(f"n and ncol must be positive ints, got n={n!r}, ncol={ncol!r}")
    ncol = min(ncol, n)
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(panel_size[0] * ncol, panel_size[1] * nrow),
                             squeeze=False, gridspec_kw=dict(hspace=0.55, wspace=0.4))
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_axis_off()
    return fig, flat[:n]


def ci_err(value, lo, hi) -> np.ndarray:
    """Error-bar lengths ``[2, n]`` for matplotlib from values and CI bounds (arrays ``[n]``).

    Lengths are clipped at 0: a percentile bootstrap interval need not contain the estimate
    (FID's small-sample bias can put the whole interval above it), which matplotlib rejects.
    """
    value, lo, hi = (np.asarray(a, dtype=float) for a in (value, lo, hi))
    return np.stack([np.clip(value - lo, 0, None), np.clip(hi - value, 0, None)])


def intervals(cis: Sequence[dict[str, Any] | None]) -> np.ndarray:
    """``[n, 3]`` array of ``(value, lo, hi)`` of bootstrap results (dicts with those keys, as
    ``bootstrap``/``experiment`` return them; None gives a row of NaN), so ``ci_err(*a.T)`` and
    ``a[:, 0]`` draw them."""
    rows = [(math.nan,) * 3 if ci is None else tuple(float(ci[k]) for k in ("value", "lo", "hi"))
            for ci in cis]
    return np.array(rows, dtype=float).reshape(len(rows), 3)


def step_histograms(ax, samples: dict[str, np.ndarray], *, colours: Sequence[Any] | None = None,
                    bins: int = 30, value_range: tuple[float, float] = (0.0, 1.0),
                    lw: float = 1.5) -> None:
    """One step-outline density histogram per labelled sample on ``ax`` (``samples``: ``{label:
    values [n]}``), coloured ``C0, C1, ...`` unless ``colours`` are given."""
    for i, (label, values) in enumerate(samples.items()):
        colour = f"C{i}" if colours is None else colours[i]
        ax.hist(values, bins=bins, range=value_range, density=True, histtype="step", lw=lw,
                color=colour, label=label)


def ci_errorbar(ax, x, y, *, annotate: Sequence[float] | None = None, **style: Any) -> None:
    """Points with bootstrap error bars on ``ax``: ``x`` and ``y`` are values ``[n]`` or
    ``intervals`` arrays ``[n, 3]`` (value, lo, hi), whose CIs become the bars; ``annotate``
    writes a label (``f"{v:g}"``) beside each point; ``style`` goes to ``ax.errorbar`` (caps of
    2 points unless it says otherwise)."""
    style.setdefault("capsize", 2)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    xv, yv = (a[:, 0] if a.ndim == 2 else a for a in (x, y))
    ax.errorbar(xv, yv, xerr=ci_err(*x.T) if x.ndim == 2 else None,
                yerr=ci_err(*y.T) if y.ndim == 2 else None, **style)
    for v, a, b in zip(annotate if annotate is not None else [], xv, yv):
        ax.annotate(f"{v:g}", (a, b), textcoords="offset points", xytext=(4, 4), fontsize=8,
                    color=style.get("color"))
