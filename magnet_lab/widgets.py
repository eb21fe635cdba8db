"""Interactive exploration in JupyterLab: a ρ / ψ slider over a volume bank.

Headless runs (papermill, tests) skip widgets: ``headless()`` is true when the environment sets
``MAGNET_LAB_HEADLESS=1``, which ``magnet_lab.reports.run_notebook`` does.
"""
from __future__ import annotations

import os

import torch

from . import bank, experiment, plots
from .models import generate


def headless() -> bool:
    """True when running without a front end (``MAGNET_LAB_HEADLESS=1``)."""
    return os.environ.get("MAGNET_LAB_HEADLESS") == "1"


def polarity_explorer(G: torch.nn.Module, vb: bank.VolumeBank, *, n: int = 32, seed: int = 0,
                      top_k: int | None = None, rho_range: tuple[float, float] = (-3.0, 3.0),
                      psi_range: tuple[float, float] = (0.3, 1.0)):
    """An ``ipywidgets`` box with sliders for ρ and ψ showing ``n`` polarity samples from ``vb``.

    Each move resamples ``n`` latents from the bank (weights ∏σ^ρ, seeded) and regenerates them
    at truncation ψ. Returns the widget (display it as a cell's last expression).
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt

    rho = w.FloatSlider(value=0.0, min=rho_range[0], max=rho_range[1], step=0.25,
                        description="ρ", continuous_update=False)
    psi = w.FloatSlider(value=1.0, min=psi_range[0], max=psi_range[1], step=0.05,
                        description="ψ", continuous_update=False)
    out = w.Output()

    def draw(*_):
        z = experiment.polarity_latents(vb, rho.value, n, seed=seed, top_k=top_k)
        images = generate(G, z, psi=psi.value)
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(8, 8 * (n // 8) / 8))
            plots.show_images(ax, images, nrow=8, title=f"ρ = {rho.value:g}, ψ = {psi.value:g}")
            plt.show()

    rho.observe(draw, names="value")
    psi.observe(draw, names="value")
    draw()
    return w.VBox([w.HBox([rho, psi]), out])
