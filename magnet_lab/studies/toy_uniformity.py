"""Notebook 01's study: spline-theory facts checked on toy generators with known manifolds.

``toy_setup`` trains the two toys (curve, surface); ``affine_agreement`` compares the region's
affine map from the activation pattern with autograd's Jacobian; ``pushforward_density`` the
analytic density on the learned curve with a Monte Carlo histogram; ``uniformity`` draws four
samplers (plain, MaGNET released, MaGNET exact on a box, MaGNET exact with the prior divided
out) and tests them for uniformity on G(box); ``polarity_mass_sweep`` weighs the candidates
exactly for each ρ. Every random draw comes from the ``torch.Generator`` passed in, in the order
the notebook has always drawn, so its numbers are reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import sampling, spectra, spline
from ..models import toy

TARGETS = ("curve", "surface")
EXACT = spectra.SpectraOptions(method="exact")
QUIET = spectra.SpeedOptions(progress=False)
SAMPLERS = ("plain", "magnet_released", "magnet_exact_box", "magnet_exact_prior")


@dataclass(frozen=True)
class ToySetup:
    """The trained toys (``generators``: ``{"curve", "surface"}``), their ``train_loss`` and the
    affine pieces of the curve on the latent box (``curve_regions``)."""

    generators: dict[str, nn.Module]
    train_loss: dict[str, float]
    curve_regions: spline.SegmentRegions


def toy_setup(*, train_steps: int, seed: int, box: float) -> ToySetup:
    """Train both toys for ``train_steps`` steps from ``seed`` (``toy.train_toy_generator``) and
    find the curve's affine pieces on ``[-box, box]`` (``spline.regions_along_segment``)."""
    gens = {t: toy.train_toy_generator(t, steps=train_steps, seed=seed) for t in TARGETS}
    seg = spline.regions_along_segment(gens["curve"], torch.tensor([-box], dtype=torch.float64),
                                       torch.tensor([box], dtype=torch.float64))
    return ToySetup(gens, {t: g.train_loss for t, g in gens.items()}, seg)


def affine_agreement(nets: dict[str, nn.Module], *, rng: torch.Generator,
                     n: int = 256) -> dict[str, dict[str, float]]:
    """For each float64 net (with ``z_dim``) at ``n`` standard-normal latents drawn from ``rng``:
    the largest |A − J| of the pattern's affine map ``spline.region_affine`` against the
    autograd Jacobian ``spectra.jacobian``, of ``b − (G(z) − A z)``, and of ½ log det AᵀA against
    Σ log σ from ``spectra.log_singular_values`` (all ≈ 0 for a CPA net)."""
    out = {}
    for name, net in nets.items():
        z = torch.randn(n, net.z_dim, generator=rng, dtype=torch.float64)  # [B, d]
        A, b = spline.region_affine(net, z)  # [B, D, d], [B, D]
        J = spectra.jacobian(net, z)  # [B, D, d]
        with torch.no_grad():
            x = net(z).reshape(len(z), -1)  # [B, D]
        log_sv = spectra.log_singular_values(net, z, EXACT, speed=QUIET)  # [B, r]
        out[name] = {
            "max_abs_A_minus_J": float((A - J).abs().max()),
            "max_abs_b_error": float((b - (x - torch.einsum("bDd,bd->bD", A, z))).abs().max()),
            "max_abs_halflogdet_minus_sum_log_sv": float(
                (spline.half_logdet(A) - log_sv.sum(1)).abs().max()),
        }
    return out


def pushforward_density(curve: nn.Module, n_mc: int, box: float, *, rng: torch.Generator,
                        bins: int = 40) -> toy.DensityCheck:
    """``toy.arclength_density_check`` of ``n_mc`` standard-normal latents ``[n_mc, 1]`` drawn
    from ``rng`` (float64), those outside ``[-box, box]`` dropped; ``summary["n_mc"]`` is the
    number kept."""
    z = torch.randn(n_mc, 1, generator=rng, dtype=torch.float64)  # [n_mc, 1]
    z = z[z[:, 0].abs() <= box]
    return toy.arclength_density_check(curve, z, -box, box, bins=bins)


@dataclass(frozen=True)
class Uniformity:
    """``uniformity``'s result: per target and sampler the test (``results``, JSON-ready: KS of
    the arc length for the curve, χ² of cell counts for the surface, with ESS/N and the
    candidates kept in the box), the latents ``drawn`` ``[n_samples, d]``, and the surface's
    latent-cell image areas ``cell_area`` ``[bins, bins]``."""

    results: dict[str, dict[str, dict[str, Any]]]
    drawn: dict[str, dict[str, torch.Tensor]]
    cell_area: torch.Tensor
    cell_bins: int

    def arclength(self, curve: nn.Module, names: tuple[str, ...], box: float
                  ) -> dict[str, np.ndarray]:
        """The normalised arc-length coordinate of each named sampler's curve samples."""
        return {name: toy.arclength_coordinate(curve, self.drawn["curve"][name], -box,
                                               box).numpy() for name in names}

    def cell_ratio_panel(self, names: tuple[str, ...], box: float) -> np.ndarray:
        """Each named sampler's surface cell counts over their expectation if uniform on G(box)
        (image-area share × samples), side by side for ``imshow``: ``[bins, k·(bins + 1) − 1]``
        with z1 along x and z2 along y, the samplers left to right, NaN columns between."""
        n = next(iter(self.drawn["surface"].values())).shape[0]
        expected = (self.cell_area / self.cell_area.sum()).numpy() * n  # [bins, bins]
        gap = np.full((1, self.cell_bins), np.nan)
        parts = []
        for name in names:
            counts = toy.cell_counts(self.drawn["surface"][name], -box, box, self.cell_bins)
            parts += [counts.numpy() / expected, gap]  # [z1 bin, z2 bin]
        return np.concatenate(parts[:-1], 0).T

    def table(self):
        """The test p-value (KS for the curve, χ² for the surface), ESS/N and candidates kept
        per toy and sampler, as a pandas DataFrame (for display)."""
        import pandas as pd

        return pd.DataFrame([{"toy": t, "sampler": n, "p": e.get("ks_p", e.get("chi2_p")),
                              "ess_fraction": e["ess_fraction"], "n_candidates": e["n_candidates"]}
                             for t, by in self.results.items() for n, e in by.items()]
                            ).set_index(["toy", "sampler"])


def uniformity(gens: dict[str, nn.Module], *, n_candidates: int, n_samples: int, box: float,
               rng: torch.Generator, cell_bins: int = 6, area_sub: int = 16) -> Uniformity:
    """The four samplers on each toy: Gaussian candidates (kept in the box) weighted by 1 (plain),
    vol (MaGNET as released) and vol / p_z (exact, prior divided out), and uniform-box
    candidates weighted by vol (exact); ``n_samples`` drawn from ``n_candidates`` without
    replacement, all draws from ``rng``. Uniformity on G(box): KS of the arc-length coordinate
    (curve), χ² of ``cell_bins``² latent-cell counts against image-area shares (surface, areas
    from ``toy.cell_area`` with ``area_sub`` sub-cells)."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    drawn: dict[str, dict[str, torch.Tensor]] = {}
    area = None
    for target, gen in gens.items():
        d = gen.z_dim
        z_gauss = sampling.gaussian_latents(n_candidates, d, rng=rng, dtype=torch.float64)
        z_gauss = z_gauss[(z_gauss.abs() <= box).all(1)]
        z_box = sampling.uniform_box_latents(n_candidates, d, box, rng=rng, dtype=torch.float64)
        lsv_gauss = spectra.log_singular_values(gen, z_gauss, EXACT, speed=QUIET)  # [N, d]
        lsv_box = spectra.log_singular_values(gen, z_box, EXACT, speed=QUIET)  # [N, d]
        weighted = {
            "plain": (z_gauss, sampling.log_weights(lsv_gauss, 0.0)),
            "magnet_released": (z_gauss, sampling.log_weights(lsv_gauss, 1.0)),
            "magnet_exact_box": (z_box, sampling.log_weights(lsv_box, 1.0)),
            "magnet_exact_prior": (z_gauss, sampling.log_weights(
                lsv_gauss, 1.0, log_prior=sampling.gaussian_log_prior(z_gauss))),
        }
        if target == "surface":
            area = toy.cell_area(gen, -box, box, cell_bins, sub=area_sub)  # [bins, bins]
        results[target], drawn[target] = {}, {}
        for name, (cand, log_w) in weighted.items():
            idx = sampling.resample(log_w, n_samples, replace=False, rng=rng)
            z_s = cand[idx]
            drawn[target][name] = z_s
            entry = {"ess_fraction": sampling.ess_fraction(log_w), "n_candidates": len(cand),
                     "dropped_outside_box": n_candidates - len(cand)}
            if target == "curve":  # KS of the arc-length coordinate against U(0, 1)
                entry.update(toy.arclength_ks(gen, z_s, -box, box))
            else:  # χ² of cell counts against image-area shares (cells with >= 5 expected)
                entry.update(toy.cell_chi2(z_s, area, -box, box))
            results[target][name] = entry
    return Uniformity(results, drawn, area, cell_bins)


@dataclass(frozen=True)
class MassSweep:
    """``polarity_mass_sweep``'s result: ``sweep`` (JSON-ready: per weighting, one row per ρ of
    E_ρ[log vol], the mass in the ρ = 0 high-density half, E_ρ[log density], ESS/N) and the
    exact weighting's box candidates ``z_box`` ``[N, 1]`` with their ``log_sv_box``."""

    sweep: dict[str, list[dict[str, float]]]
    z_box: torch.Tensor
    log_sv_box: torch.Tensor


def polarity_mass_sweep(curve: nn.Module, *, n_candidates: int, box: float,
                        rhos: list[float], rng: torch.Generator) -> MassSweep:
    """Where polarity moves the mass on the curve, exactly over the candidates (self-normalised
    weights vol^ρ): "authors'" = Gaussian candidates with the density p_G, "exact" = uniform box
    candidates with p_U (``spline.log_density``). Per ρ: ``mean_log_volume_exact``,
    ``mass_in_high_density_half`` (the half with density ≥ its median at ρ = 0),
    ``mean_log_density`` and ``ess_fraction``. Candidates are drawn from ``rng``."""
    z_gauss = sampling.gaussian_latents(n_candidates, 1, rng=rng, dtype=torch.float64)
    z_box = sampling.uniform_box_latents(n_candidates, 1, box, rng=rng, dtype=torch.float64)
    weighting = {
        "authors": (spectra.log_singular_values(curve, z_gauss, EXACT, speed=QUIET),
                    spline.log_density(curve, z_gauss)),  # log σ [N, 1], log p_G [N]
        "exact": (spectra.log_singular_values(curve, z_box, EXACT, speed=QUIET),
                  spline.log_density(curve, z_box, prior="uniform", box=box)),  # log p_U [N]
    }
    sweep: dict[str, list[dict[str, float]]] = {w: [] for w in weighting}
    for w, (lsv, log_dens) in weighting.items():
        log_vol = lsv.sum(1)  # [N]
        high = log_dens >= log_dens.median()  # the high-density half at ρ = 0
        for rho in rhos:
            wts = sampling.log_weights(lsv, rho).exp()  # [N], sums to 1
            sweep[w].append({"rho": rho, "mean_log_volume_exact": float((wts * log_vol).sum()),
                             "mass_in_high_density_half": float(wts[high].sum()),
                             "mean_log_density": float((wts * log_dens).sum()),
                             "ess_fraction": sampling.ess_fraction(wts.log())})
    return MassSweep(sweep, z_box, weighting["exact"][0])


def polarity_arclength_samples(curve: nn.Module, sweep: MassSweep, rhos: list[float],
                               n_samples: int, box: float, *, rng: torch.Generator
                               ) -> dict[float, np.ndarray]:
    """For each ρ, ``n_samples`` of the sweep's box candidates resampled without replacement
    with weights vol^ρ (from ``rng``), as normalised arc-length coordinates on the curve."""
    out = {}
    for rho in rhos:
        idx = sampling.resample(sampling.log_weights(sweep.log_sv_box, rho), n_samples,
                                replace=False, rng=rng)
        out[rho] = toy.arclength_coordinate(curve, sweep.z_box[idx], -box, box).numpy()
    return out
