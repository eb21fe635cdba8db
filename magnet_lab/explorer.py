"""What the ρ/ψ explorer computes, without a front end: draws, their health, their attributes.

One state of the explorer (ρ, ψ, top_k, "% MaGNET", with or without replacement, seed, and on
a conditional generator's bank the classes and their balance) is an ``experiment.Sampler``; ``draw`` turns it into bank indices (``Sampler.indices``, the one draw
path) with the weights' health (ESS / N of the law actually drawn from, distinct latents, a
flag), ``attribute_histogram`` says what a larger draw of the same state is (predicted class,
or face attributes) against plain sampling, and ``pr_frontier`` / ``pr_point`` place it on
notebook 03's precision–recall plane. ``health_table`` and ``histogram_table`` are notebook 00's
records of them. The widget in ``magnet_lab.widgets`` only wires these to sliders; tests call
them directly.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import attributes, bank, experiment, metrics, sampling
from .models import generate

HEALTH = ("ok", "thin", "low")  # ok; ESS below the draw size; ESS/N below LOW_ESS_FRACTION
# images behind the attribute histogram per redraw: classes cost ~2 ms an image on a CPU core,
# face attributes ~0.1 s (so 64 faces keep a redraw to seconds)
HIST_SIZE = {"class": 512, "face": 64}


def hist_size(kind: str) -> int:
    """The default number of images behind the explorer's attribute histogram for attribute
    ``kind`` ("class" or "face"; ``HIST_SIZE``). Raises ValueError for another kind."""
    if kind not in HIST_SIZE:
        raise ValueError(f"unknown attribute kind {kind!r}; expected one of {sorted(HIST_SIZE)}")
    return HIST_SIZE[kind]


def stem(sampler: experiment.Sampler) -> str:
    """A file stem naming an explorer state, seed last (``rho-1_psi1_k10_f100_norep_seed0000``;
    with class options also ``_c3-7`` for the classes and ``_equal``/``_mass``, before the
    seed)."""
    k = "all" if sampler.top_k is None else str(sampler.top_k)
    rep = "rep" if sampler.replace else "norep"
    classes = "" if sampler.classes is None else "_c" + "-".join(map(str, sampler.classes))
    balance = "" if sampler.class_balance is None else f"_{sampler.class_balance}"
    return _safe(f"rho{sampler.rho:g}_psi{sampler.psi:g}_k{k}_f{100 * sampler.magnet_fraction:g}"
                 f"_{rep}{classes}{balance}_seed{sampler.seed:04d}")


def figure_name(generator_id: str, sampler: experiment.Sampler) -> str:
    """The file stem the explorer's save button writes for the state ``sampler`` on generator
    ``generator_id`` (a registry name or a checkpoint path: its file stem is used):
    ``00_explore_<generator>_<stem(sampler)>``, with characters unsafe in file names as ``_``."""
    return f"00_explore_{_safe(Path(str(generator_id)).stem)}_{stem(sampler)}"


def _safe(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_.+-]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)


@dataclass(frozen=True)
class Draw:
    """``indices`` ``[n]`` into the bank drawn for one explorer state, with the health of its law:
    ``ess`` and ``ess_fraction`` (ESS / M, M the candidates of the draw's classes: all N on an
    unconditional bank), ``n_distinct`` latents and ``health`` (``HEALTH``); ``labels`` ``[n]``
    are the drawn candidates' classes on a conditional generator's bank (None otherwise), what
    its images must be generated with."""

    indices: torch.Tensor
    ess: float
    ess_fraction: float
    n_distinct: int
    health: str
    labels: torch.Tensor | None = None

    def readout(self) -> str:
        """One line for a reader: ESS/N, ESS, distinct latents, and the flag when not ok."""
        n = self.indices.numel()
        text = (f"ESS/N = {self.ess_fraction:.2e} (ESS {self.ess:.1f}) · "
                f"{self.n_distinct} distinct of {n} drawn")
        if self.health == "low":
            text += (f" · LOW ESS: ESS/N < {sampling.LOW_ESS_FRACTION:g}, the draw is a handful "
                     "of candidates")
        elif self.health == "thin":
            text += f" · THIN: ESS < {n} drawn, the draw is close to the top candidates by weight"
        return text


def health(ess: float, n_candidates: int, n_drawn: int) -> str:
    """"low" when ``ess / n_candidates`` is below ``sampling.LOW_ESS_FRACTION`` (where
    ``check_ess`` warns), "thin" when ``ess`` is below ``n_drawn`` (without replacement the draw
    is then near the top candidates by weight, with it mostly repeats), else "ok"."""
    if ess / n_candidates < sampling.LOW_ESS_FRACTION:
        return "low"
    return "thin" if ess < n_drawn else "ok"


def draw(vb: bank.VolumeBank, sampler: experiment.Sampler, n: int) -> Draw:
    """Draw ``n`` bank indices for ``sampler`` (``Sampler.indices``, seeded: the same state gives
    the same indices) and measure the law's health (ESS of ``Sampler.drawn_log_weights``,
    distinct indices, ``health``; the drawn candidates' ``labels`` on a conditional bank). The
    ``LowESSWarning`` is not raised: the flag carries it. Without replacement ``n`` is capped at
    the number of candidates the sampler draws from (``Sampler.candidates``). Raises ValueError
    as ``Sampler.indices`` does (e.g. ``n`` above the positive-weight candidates without
    replacement, class options on a bank without labels)."""
    m = sampler.candidates(vb).numel() if sampler.per_class else len(vb)
    if not sampler.replace:
        n = min(n, m)
    ess = sampling.ess(sampler.drawn_log_weights(vb))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sampling.LowESSWarning)
        idx = sampler.indices(vb, n)  # [n]
    return Draw(indices=idx, ess=ess, ess_fraction=ess / m,
                n_distinct=int(idx.unique().numel()), health=health(ess, m, n),
                labels=None if vb.labels is None else vb.labels[idx])


def draws_by_rho(vb: bank.VolumeBank, rhos: list[float], n: int, *, top_k: int | None = None,
                 seed: int = 0, classes: tuple[int, ...] | None = None,
                 class_balance: str | None = None) -> dict[float, Draw]:
    """``draw(vb, Sampler("explorer", rho=ρ, top_k=top_k, seed=seed, classes=classes,
    class_balance=class_balance), n)`` for each ρ in ``rhos``: the explorer's readout at each
    polarity (per class on a conditional bank when asked). Raises ValueError as ``draw``
    does."""
    return {float(r): draw(vb, experiment.Sampler(
        "explorer", rho=float(r), top_k=top_k, seed=seed, classes=classes,
        class_balance=class_balance), n) for r in rhos}


def health_table(draws: dict[float, Draw]) -> dict[str, dict[str, Any]]:
    """``draws_by_rho``'s draws as a results entry: ``{"ρ": {"ess_fraction", "ess",
    "n_distinct", "health", "indices"}}`` keyed by ``f"{ρ:g}"``, plus ``"labels"`` (the drawn
    classes) for a conditional bank's draws."""
    table = {}
    for r, d in draws.items():
        row = {"ess_fraction": d.ess_fraction, "ess": d.ess, "n_distinct": d.n_distinct,
               "health": d.health, "indices": d.indices.tolist()}
        if d.labels is not None:
            row["labels"] = d.labels.tolist()
        table[f"{r:g}"] = row
    return table


def readout_table(draws: dict[float, Draw]) -> dict[float, str]:
    """Each draw's one-line ``Draw.readout``, keyed by ρ (for display)."""
    return {r: d.readout() for r, d in draws.items()}


def histogram_table(hist: dict[str, Any], rho: float) -> dict[str, Any]:
    """``attribute_histogram``'s result at polarity ``rho`` as a results entry: ``{"rho", "n",
    "attributes": {name: {"classes", "sample": [C] frequencies, "plain": [C]}}}``."""
    return {"rho": rho, "n": hist["draw"].indices.numel(), "attributes": {
        name: {"classes": a["classes"], "sample": a["freq"].tolist(),
               "plain": hist["plain"]["attributes"][name]["freq"].tolist()}
        for name, a in hist["sample"]["attributes"].items()}}


def attribute_frequencies(G: torch.nn.Module, z: torch.Tensor, psi: float, *,
                          kind: str = "auto", classifier: torch.nn.Module | None = None,
                          labels: torch.Tensor | None = None) -> dict[str, Any]:
    """The images of latents ``z`` ``[n, d]`` (with their classes ``labels`` ``[n]`` for a
    conditional generator, ``models.generate``) at truncation ``psi`` and their attribute
    frequencies: ``{"kind", "images": [n, C, H, W], "attributes": {name: {"classes": [C names],
    "freq": float64 [C], "n_missing": int}}}``, labelled by ``attributes.semantic_attributes``
    (``kind`` "auto": class for one-channel images, face attributes for RGB); frequencies are
    over the images where the attribute is known (zeros when none is). Raises ValueError as
    ``semantic_attributes`` does (e.g. kind "class" without a classifier)."""
    images = generate(G, z, psi=psi, labels=labels)  # [n, C, H, W]
    kind = attributes.attribute_kind(kind, images)
    out = {}
    for name, a in attributes.semantic_attributes(images, kind, classifier).items():
        out[name] = {"classes": list(a["classes"]),
                     "freq": _frequencies(a["labels"], len(a["classes"])),
                     "n_missing": int((a["labels"] == attributes.MISSING).sum())}
    return {"kind": kind, "images": images, "attributes": out}


def attribute_histogram(G: torch.nn.Module, vb: bank.VolumeBank, sampler: experiment.Sampler,
                        n: int, *, kind: str = "auto", classifier: torch.nn.Module | None = None,
                        plain: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a draw of ``n`` latents for ``sampler`` is, against plain sampling (ρ = 0, the same ψ,
    seed and class options, ``n`` from the same bank): ``{"draw": Draw, "sample":
    attribute_frequencies(...) of the draw, "plain": the same for plain sampling}``; a
    conditional generator's images are made with the drawn candidates' classes. ``plain``
    reuses an earlier result's "plain" (valid while ψ, seed, class options, n and the bank are
    unchanged) instead of recomputing it. Raises ValueError as ``draw`` and
    ``attribute_frequencies`` do."""
    d = draw(vb, sampler, n)
    sample = attribute_frequencies(G, vb.latents[d.indices], sampler.psi, kind=kind,
                                   classifier=classifier, labels=d.labels)
    if plain is None:
        p = draw(vb, experiment.Sampler("plain", psi=sampler.psi, seed=sampler.seed,
                                        classes=sampler.classes,
                                        class_balance=sampler.class_balance,
                                        class_mass=sampler.class_mass), d.indices.numel())
        plain = attribute_frequencies(G, vb.latents[p.indices], sampler.psi, kind=kind,
                                      classifier=classifier, labels=p.labels)
    return {"draw": d, "sample": sample, "plain": plain}


def _frequencies(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class frequencies ``[C]`` (float64) over known labels; zeros when none is known."""
    known = labels[labels != attributes.MISSING].long()
    if known.numel() == 0:
        return torch.zeros(n_classes, dtype=torch.float64)
    return attributes.class_distribution(known, n_classes)


def pr_frontier(results_path: str | Path | None) -> dict[str, Any] | None:
    """Notebook 03's precision–recall points from its results JSON: ``{"rho": [(ρ, recall,
    precision), ...], "psi": [(ψ, recall, precision), ...], "n_samples": int, "path": str}``
    sorted by knob, and its ``seed`` (its real reference's split seed); None when
    ``results_path`` is None, no such file exists, or its metrics were skipped (an RGB generator
    run without real_images): the explorer then says so. Raises ValueError for a file that is
    not a notebook-03 results JSON."""
    if results_path is None or not Path(results_path).is_file():
        return None
    res = json.loads(Path(results_path).read_text())
    samplers = res.get("samplers")
    if not isinstance(samplers, dict):
        raise ValueError(f"{results_path} has no 'samplers': not notebook 03's results")
    if any("skipped" in ev.get("metrics", {}) for ev in samplers.values()):
        return None  # no precision or recall to draw
    out: dict[str, Any] = {"rho": [], "psi": [], "path": str(results_path), "seed": res.get("seed"),
                           "n_samples": res.get("parameters", {}).get("n_samples")}
    for name, ev in samplers.items():
        spec = ev.get("sampler", {})
        point = (ev["metrics"]["recall"]["value"], ev["metrics"]["precision"]["value"])
        if spec.get("fresh_latents"):
            out["psi"].append((float(spec["psi"]), *point))
        elif not spec.get("exact_uniform"):
            out["rho"].append((float(spec["rho"]), *point))
    out["rho"].sort()
    out["psi"].sort()
    return out


def pr_point(classifier: torch.nn.Module, images: torch.Tensor,
             real_feats: torch.Tensor) -> dict[str, float]:
    """Precision and recall (k = 3, notebook 03's) of ``images`` ``[M, C, H, W]`` against real
    features ``[N, F]``, in ``classifier``'s feature space: ``{"precision", "recall"}``. Recall
    grows with M, so compare with 03's points at its own ``n_samples``. Raises as
    ``metrics.metrics_from_features`` does."""
    from . import features

    fake = features.extract_features(classifier, images)  # [M, F]
    return metrics.metrics_from_features(real_feats, fake, metrics=("precision", "recall"))
