"""Interactive exploration in JupyterLab: the ρ/ψ explorer over a volume bank.

The explorer wires ``magnet_lab.explorer``'s computations to ``ipywidgets``: sliders for ρ, ψ,
top-k and "% MaGNET", a replacement toggle, a seed, a save button (and, on a conditional
generator's bank, a class selector and the class balance); beside the grid, the weights'
health (ESS/N, distinct latents, flagged when low), the attribute histogram of a larger draw
against plain sampling, and the draw on notebook 03's precision–recall plane when its numbers
are at hand. Images are PNG ``ipywidgets.Image`` values, so a browser test can watch them.

Headless runs (papermill, tests) skip widgets: ``headless()`` is true when the environment sets
``MAGNET_LAB_HEADLESS=1``, which ``magnet_lab.reports.run_notebook`` does.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from . import attributes as attrs
from . import bank, config, experiment, explorer, plots, sampling
from .models import generate

# readout colours: ok, thin (ESS below the grid size), low (ESS/N below LOW_ESS_FRACTION)
_HEALTH_STYLE = {"ok": "#1b7837", "thin": "#b35806", "low": "#b2182b"}


def headless() -> bool:
    """True when running without a front end (``MAGNET_LAB_HEADLESS=1``)."""
    return config.headless()


def element(widget, name: str):
    """The element of an explorer (or any ``ipywidgets`` box) tagged with the CSS class
    ``magnet-<name>`` (``"rho"``, ``"grid"``, ``"ess"``, ``"save"``, ...), searched depth-first
    through ``children``; None when there is none. For scripting the explorer and for tests."""
    if f"magnet-{name}" in getattr(widget, "_dom_classes", ()):
        return widget
    for child in getattr(widget, "children", ()):
        found = element(child, name)
        if found is not None:
            return found
    return None


def _png(fig) -> bytes:
    """A matplotlib ``Figure`` as PNG bytes (no pyplot, so nothing is shown twice)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return buf.getvalue()


def grid_figure(images: torch.Tensor, knobs: experiment.Sampler, d: explorer.Draw,
                nrow: int = 8):
    """A matplotlib ``Figure`` of ``images`` ``[n, C, H, W]`` titled with the explorer state
    ``knobs`` and the draw's ESS/N: the explorer's grid, and the figure its save button
    writes."""
    from matplotlib.figure import Figure

    rows = -(-images.shape[0] // nrow)
    fig = Figure(figsize=(6, 6 * rows / nrow + 0.5))
    k = "all" if knobs.top_k is None else knobs.top_k
    title = (f"ρ = {knobs.rho:g}, ψ = {knobs.psi:g}, top-k = {k}, "
             f"{100 * knobs.magnet_fraction:g}% MaGNET, {'with' if knobs.replace else 'no'} "
             f"replacement, seed {knobs.seed}\nESS/N = {d.ess_fraction:.2e}, "
             f"{d.n_distinct}/{d.indices.numel()} distinct")
    if knobs.per_class:
        classes = "all" if knobs.classes is None else ", ".join(map(str, knobs.classes))
        title += f", classes {classes} ({knobs.class_balance or 'pooled'})"
    plots.show_images(fig.add_subplot(), images, nrow=nrow, title=title)
    fig.axes[0].title.set_fontsize(8)
    return fig


def histogram_figure(hist: dict[str, Any]):
    """A matplotlib ``Figure``: for each attribute of ``explorer.attribute_histogram``'s result,
    bars of the draw's class frequencies next to plain sampling's."""
    import numpy as np
    from matplotlib.figure import Figure

    names = list(hist["sample"]["attributes"])
    fig = Figure(figsize=(5, 2.4 * len(names)))
    for i, name in enumerate(names):
        ax = fig.add_subplot(len(names), 1, i + 1)
        ours, plain = hist["sample"]["attributes"][name], hist["plain"]["attributes"][name]
        x = np.arange(len(ours["classes"]))
        n = hist["draw"].indices.numel()
        ax.bar(x - 0.2, plain["freq"].numpy(), 0.4, label="plain (ρ = 0)", color="#999999")
        ax.bar(x + 0.2, ours["freq"].numpy(), 0.4, label=f"this draw (n = {n})", color="#0072b2")
        ax.set_xticks(x, ours["classes"], rotation=45, ha="right", fontsize=7)
        missing = f", {ours['n_missing']} unknown" if ours["n_missing"] else ""
        ax.set(ylabel="frequency", title=f"{name}{missing}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def pr_figure(frontier: dict[str, Any], point: dict[str, float] | None, n: int):
    """A matplotlib ``Figure`` of notebook 03's ρ and ψ precision–recall points
    (``explorer.pr_frontier``) with the current draw's ``point`` (``explorer.pr_point``) on it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 3.5))
    ax = fig.add_subplot()
    for key, marker, colour, label in (("rho", "o-", "#0072b2", "polarity ρ"),
                                       ("psi", "s-", "#e69f00", "truncation ψ")):
        pts = frontier[key]
        if pts:
            ax.plot([p[1] for p in pts], [p[2] for p in pts], marker, color=colour, label=label)
            for v, r, p in pts:
                ax.annotate(f"{v:g}", (r, p), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if point is not None:
        ax.plot(point["recall"], point["precision"], "*", ms=14, color="#cc3311",
                label=f"this draw (n = {n})")
    ax.set(xlabel="recall (k = 3)", ylabel="precision (k = 3)",
           title=f"notebook 03 (n = {frontier['n_samples']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def polarity_explorer(G: torch.nn.Module, vb: bank.VolumeBank, *, n: int = 32,
                      n_hist: int | None = None,
                      seed: int = 0, top_k: int | None = None,
                      rho_range: tuple[float, float] = (-3.0, 3.0),
                      psi_range: tuple[float, float] = (0.3, 1.0),
                      classifier: torch.nn.Module | None = None, attributes: str = "auto",
                      pr_results: str | Path | None = None,
                      real_feats: torch.Tensor | None = None,
                      generator_id: str | None = None,
                      classes: tuple[int, ...] | None = None, class_balance: str | None = None):
    """The explorer: an ``ipywidgets`` box showing ``n`` samples of ``vb``'s candidates for the
    knobs (ρ, ψ, top-k, % MaGNET, replacement, seed: an ``experiment.Sampler``) with the weights'
    health (ESS/N and distinct latents, coloured and labelled when "thin" or "low"), the
    attribute histogram of ``n_hist`` samples (None: ``explorer.hist_size`` of the attribute
    kind, 512 for classes, 64 for faces) against plain sampling (``classifier`` needed for
    ``attributes`` "class"; none drawn, with a note, without it), and notebook 03's
    precision–recall plane read from ``pr_results`` with this draw on it (its point needs
    ``real_feats`` ``[N, F]`` in ``classifier``'s feature space; a note when either is missing).
    The save button writes the grid by ``plots.save_figure`` (PNG, PDF, JSON sidecar with the
    generator, the bank's path and identity, every knob and the drawn indices) to
    ``paths.figures_dir()``. ``generator_id`` names the generator (default: the bank's). On a
    conditional generator's bank (with labels) a class selector (``magnet-class``: "all" or one
    class, offered among ``classes``, default every class the bank holds) and a balance
    selector (``magnet-balance``: pooled, equal, mass; starting at ``class_balance``) join the
    knobs, and images are generated with the drawn candidates' classes. Every element has a
    CSS class ``magnet-*`` for browser tests. Returns the widget."""
    import ipywidgets as w

    all_k = sampling.all_top_k(vb.log_sv) or vb.rank
    if n_hist is None:
        n_hist = explorer.hist_size(attrs.kind_of(G, attributes))
    generator_id = generator_id or vb.meta.get("generator_id", "generator")
    frontier = explorer.pr_frontier(pr_results)

    def tagged(widget, name):
        widget.add_class(f"magnet-{name}")
        return widget

    style = {"description_width": "initial"}
    rho = tagged(w.FloatSlider(value=0.0, min=rho_range[0], max=rho_range[1], step=0.25,
                               description="ρ", continuous_update=False), "rho")
    psi = tagged(w.FloatSlider(value=1.0, min=psi_range[0], max=psi_range[1], step=0.05,
                               description="ψ", continuous_update=False), "psi")
    k = tagged(w.IntSlider(value=min(top_k or all_k, all_k), min=1, max=all_k,
                           description="top-k σ", continuous_update=False, style=style), "topk")
    frac = tagged(w.FloatSlider(value=100.0, min=0.0, max=100.0, step=5.0,
                                description="% MaGNET", continuous_update=False, style=style),
                  "fraction")
    replace = tagged(w.Checkbox(value=False, description="with replacement", indent=False),
                     "replace")
    seed_box = tagged(w.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed",
                                       layout=w.Layout(width="140px")), "seed")
    save = tagged(w.Button(description="save figure", icon="save"), "save")
    ess = tagged(w.HTML(), "ess")
    status = tagged(w.HTML(), "status")
    grid = tagged(w.Image(format="png"), "grid")
    hist = tagged(w.Image(format="png"), "hist")
    pr = tagged(w.Image(format="png"), "pr")
    notes = tagged(w.HTML(), "notes")
    state: dict[str, Any] = {"plain": {}}
    offered = None if vb.labels is None else (
        list(classes) if classes is not None else torch.unique(vb.labels).tolist())
    if offered is None and (classes is not None or class_balance is not None):
        raise ValueError("classes and class_balance need a conditional generator's bank (with "
                         "labels); this bank has none")
    class_pick = tagged(w.Dropdown(options=[("all", None)] + [(str(c), c) for c in offered or []],
                                   value=None, description="class"), "class")
    balance = tagged(w.Dropdown(options=[("pooled", None), ("equal", "equal"), ("mass", "mass")],
                                value=class_balance, description="balance"), "balance")

    def knobs() -> experiment.Sampler:
        if offered is None:
            per_class = {}
        else:
            chosen = (class_pick.value,) if class_pick.value is not None else (
                None if classes is None else tuple(classes))
            per_class = dict(classes=chosen, class_balance=balance.value)
        return experiment.Sampler("explorer", rho=float(rho.value), psi=float(psi.value),
                                  top_k=k.value, magnet_fraction=frac.value / 100,
                                  replace=bool(replace.value), seed=int(seed_box.value),
                                  **per_class)

    def redraw(*_):
        kn = knobs()
        try:
            d = explorer.draw(vb, kn, n)
        except ValueError as err:  # e.g. too few positive-weight candidates: say so, keep last grid
            ess.value = f'<b style="color:{_HEALTH_STYLE["low"]}">cannot draw: {err}</b>'
            return
        images = generate(G, vb.latents[d.indices], psi=kn.psi, labels=d.labels)  # [n, C, H, W]
        state.update(knobs=kn, draw=d, images=images)
        grid.value = _png(grid_figure(images, kn, d))
        flag = {"ok": "", "thin": "⚠ ", "low": "⛔ "}[d.health]
        ess.value = (f'<span class="magnet-health-{d.health}" '
                     f'style="color:{_HEALTH_STYLE[d.health]};'
                     f'font-weight:{"bold" if d.health != "ok" else "normal"}">{flag}'
                     f'{d.readout()}</span>')
        note = []
        try:
            key = (kn.psi, kn.seed, kn.classes, kn.class_balance)
            h = explorer.attribute_histogram(G, vb, kn, n_hist, kind=attributes,
                                             classifier=classifier, plain=state["plain"].get(key))
            state["plain"][key] = h["plain"]
            hist.value = _png(histogram_figure(h))
        except ValueError as err:
            h = None
            note.append(f"no attribute histogram: {err}")
        pr.layout.display = "none" if frontier is None else None
        if frontier is None:
            note.append("no precision–recall plane: notebook 03's results "
                        f"({pr_results or 'pr_results not given'}) are not at hand or hold "
                        "no metrics")
        else:
            point = None
            if h is not None and real_feats is not None and classifier is not None:
                point = explorer.pr_point(classifier, h["sample"]["images"], real_feats)
            elif real_feats is None:
                note.append("this draw is not on the precision–recall plane: no real features")
            pr.value = _png(pr_figure(frontier, point, n_hist))
        notes.value = "<br>".join(f"<i>{t}</i>" for t in note)

    def on_save(_):
        kn, d = state["knobs"], state["draw"]
        name = explorer.figure_name(generator_id, kn)
        params = {"generator": str(generator_id), "bank_path": vb.meta.get("path"),
                  "bank_identity": vb.meta.get("identity"), "n_candidates": len(vb), "n": n,
                  **kn.as_dict(), "ess_fraction": d.ess_fraction, "n_distinct": d.n_distinct,
                  "health": d.health, "indices": d.indices.tolist()}
        if d.labels is not None:
            params["labels"] = d.labels.tolist()
        written = plots.save_figure(grid_figure(state["images"], kn, d), name, params)
        status.value = "saved " + ", ".join(str(p) for p in written.values())

    for control in (rho, psi, k, frac, replace, seed_box, class_pick, balance):
        control.observe(redraw, names="value")
    save.on_click(on_save)
    redraw()
    rows = [w.HBox([rho, psi, k]), w.HBox([frac, replace, seed_box, save])]
    if offered is not None:
        rows.append(w.HBox([class_pick, balance]))
    controls = w.VBox(rows)
    side = w.VBox([hist, pr, notes])
    return tagged(w.VBox([controls, ess, w.HBox([grid, side]), status]), "explorer")
