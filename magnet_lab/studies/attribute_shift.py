"""What sampling does to semantic attributes: the candidates' attributes, each sampler's
attribute distribution and bias (notebooks 02 and 04), and which classes MaGNET up- or
down-weights and why (their volume, notebook 04)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import attributes as attrs
from .. import bank, bootstrap, experiment, sampling

PLAIN, MAGNET = "plain (ρ=0)", "MaGNET (ρ=1)"


def attribute_shift(G: torch.nn.Module, vb: bank.VolumeBank, picked: dict[str, torch.Tensor],
                    kind: str, classifier: torch.nn.Module | None, *, n_boot: int,
                    seed: int) -> dict[str, dict[str, dict[str, Any]]]:
    """``{attribute: {sampler: attributes.attribute_bias}}`` of the images of each sampler's
    draw (``picked``: ``{name: bank indices [n]}``) at ψ = 1, attributes of ``kind``
    (``attributes.latent_attributes``), bootstrap CIs with ``n_boot`` replicates from ``seed``."""
    shift: dict[str, dict[str, dict[str, Any]]] = {}
    for name, idx in picked.items():
        labels = None if vb.labels is None else vb.labels[idx]
        for attr, a in attrs.latent_attributes(G, vb.latents[idx], kind, classifier,
                                               labels=labels).items():
            shift.setdefault(attr, {})[name] = attrs.attribute_bias(a["labels"], a["classes"],
                                                                    n_boot=n_boot, seed=seed)
    return shift


def bias_table(shift: dict[str, dict[str, dict[str, Any]]]):
    """``attribute_shift``'s result as a pandas DataFrame (one row per attribute and sampler:
    known samples, missing ones, KL to uniform with its CI), for display."""
    import pandas as pd

    rows = [{"attribute": attr, "sampler": name, "n": b["n"], "n_missing": b["n_missing"],
             **{f"kl_to_uniform_{k}": (b["kl_to_uniform"] or {}).get(k)
                for k in ("value", "lo", "hi")}}
            for attr, by in shift.items() for name, b in by.items()]
    return pd.DataFrame(rows).set_index(["attribute", "sampler"])


@dataclass(frozen=True)
class CandidateAttributes:
    """Every candidate's attributes (``attributes``: ``{name: {"labels": int64 [N] (MISSING
    where unknown), "classes": [names]}}``) of attribute ``kind``; the first is the ``main``
    one ("class", or "gender" for faces)."""

    attributes: dict[str, dict[str, Any]]
    kind: str

    @property
    def main(self) -> str:
        """The main attribute's name."""
        return next(iter(self.attributes))

    @property
    def names(self) -> list[str]:
        """The main attribute's class names."""
        return list(self.attributes[self.main]["classes"])

    @property
    def labels(self) -> torch.Tensor:
        """The main attribute's labels ``[N]``."""
        return self.attributes[self.main]["labels"]

    def record(self) -> dict[str, Any]:
        """The results entry: kind, main attribute, names, classes and missing candidates."""
        return {"kind": self.kind, "main": self.main, "names": list(self.attributes),
                "classes": {a: v["classes"] for a, v in self.attributes.items()},
                "n_missing_candidates": int((self.labels == attrs.MISSING).sum())}


def candidate_attributes(G: torch.nn.Module, vb: bank.VolumeBank, kind: str,
                         classifier: torch.nn.Module | None) -> CandidateAttributes:
    """The attributes of every candidate of ``vb`` (``attributes.latent_attributes`` in chunks):
    each sample is one of them, so samplers index these instead of re-classifying."""
    return CandidateAttributes(attrs.latent_attributes(G, vb.latents, kind, classifier,
                                                       labels=vb.labels), kind)


def training_split_bias(G: torch.nn.Module, kind: str) -> dict[str, Any] | None:
    """The class frequencies of the split ``G`` was trained on, as its sidecar records them
    (``data.class_frequencies``), with their KL to uniform and max/min ratio; None for face
    attributes or a generator that records none."""
    freq = getattr(G, "sidecar", {}).get("data", {}).get("class_frequencies")
    if kind != "class" or freq is None:
        return None
    train_freq = torch.tensor(freq, dtype=torch.float64)
    return {"class_freq": train_freq.tolist(), "kl_to_uniform": attrs.kl_to_uniform(train_freq),
            "max_min_ratio": attrs.max_min_ratio(train_freq)}


def attribute_samplers(rhos: list[float], *, top_k: int | None, all_k: int | None,
                       replace: bool, seed: int) -> list[experiment.Sampler]:
    """Notebook 04's samplers, all drawn from seed + 1: plain, MaGNET (top_k σ), MaGNET
    exact-uniform, MaGNET over all σ (``all_k``, ``sampling.all_top_k``) and polarity ``ρ=<ρ>``
    for each ρ in ``rhos``."""
    fixed = (("plain (ρ=0)", 0.0, top_k, False), ("MaGNET (ρ=1)", 1.0, top_k, False),
             ("MaGNET exact-uniform", 1.0, top_k, True), ("MaGNET, all σ", 1.0, all_k, False))
    samplers = [experiment.Sampler(name, rho=rho, top_k=k, exact_uniform=exact, replace=replace,
                                   seed=seed + 1) for name, rho, k, exact in fixed]
    return samplers + [experiment.Sampler(f"ρ={r:g}", rho=r, top_k=top_k, replace=replace,
                                          seed=seed + 1) for r in rhos]


@dataclass(frozen=True)
class SamplerBias:
    """``sampler_bias``' result: per sampler its drawn indices (``picked``) and its evaluation
    (``evaluations``: the main attribute's ``attribute_bias`` with ``predicted_labels``,
    ``ess_fraction``, ``sampler`` and ``other_attributes``)."""

    picked: dict[str, torch.Tensor]
    evaluations: dict[str, dict[str, Any]]

    def record(self) -> dict[str, dict[str, Any]]:
        """The results entry: the evaluations without their label tensors."""
        return {n: {k: v for k, v in e.items() if k != "predicted_labels"}
                for n, e in self.evaluations.items()}

    def table(self):
        """KL to uniform and max/min ratio with CIs, known and missing samples, and ESS/N per
        sampler (pandas, display); NaN where the attribute is unknown in every sample."""
        import pandas as pd

        nan = {"value": float("nan"), "lo": float("nan"), "hi": float("nan")}
        return pd.DataFrame({n: {**{f"kl_{k}": (e["kl_to_uniform"] or nan)[k]
                                    for k in ("value", "lo", "hi")},
                                 **{f"max_min_{k}": (e["max_min_ratio"] or nan)[k]
                                    for k in ("value", "lo", "hi")},
                                 "n": e["n"], "n_missing": e["n_missing"],
                                 "ess_fraction": e["ess_fraction"]}
                             for n, e in self.evaluations.items()}).T


def sampler_bias(vb: bank.VolumeBank, samplers: list[experiment.Sampler],
                 cand: CandidateAttributes, n: int, *, n_boot: int, seed: int) -> SamplerBias:
    """For each sampler: ``n`` indices (``Sampler.indices``), the main attribute's
    ``attribute_bias`` of the candidates drawn (CIs with ``n_boot`` replicates from ``seed``),
    its ESS/N and specification, and every other attribute's bias (faces: age group, smile)."""
    picked, evals = {}, {}
    for s in samplers:
        picked[s.name] = s.indices(vb, n)
        labels = cand.labels[picked[s.name]]
        evals[s.name] = attrs.attribute_bias(labels, cand.names, n_boot=n_boot, seed=seed)
        evals[s.name]["predicted_labels"] = labels
        evals[s.name]["ess_fraction"] = s.ess_fraction(vb)
        evals[s.name]["sampler"] = s.as_dict()
        evals[s.name]["other_attributes"] = {
            a: attrs.attribute_bias(v["labels"][picked[s.name]], v["classes"], n_boot=n_boot,
                                    seed=seed)
            for a, v in cand.attributes.items() if a != cand.main}
    return SamplerBias(picked, evals)


@dataclass(frozen=True)
class ClassChange:
    """``class_change``'s result: the results entry (``record``), and for the figures the
    MaGNET/plain ratio per class (``change``), its CIs (``ratio_ci``), each class's mean
    log-volume CI (``log_volume``, None for fewer than 2 candidates) and the classes from most
    down- to most up-weighted (``order``)."""

    record: dict[str, Any]
    change: list[float]
    ratio_ci: list[dict[str, Any]]
    log_volume: dict[str, dict[str, Any] | None]
    order: np.ndarray

    def headline(self) -> dict[str, Any]:
        """``record`` without the per-class log-volume CIs (for display)."""
        return {k: v for k, v in self.record.items() if k != "mean_log_volume_per_class"}


def class_change(bias: SamplerBias, cand: CandidateAttributes, vb: bank.VolumeBank, *,
                 top_k: int | None, n_boot: int, seed: int, plain: str = PLAIN,
                 magnet: str = MAGNET) -> ClassChange:
    """Which classes MaGNET up- or down-weights and why: per class the ratio of MaGNET's to plain
    sampling's frequency (``sampler`` names ``magnet`` and ``plain``), its bootstrap CI
    (``bootstrap.count_ratio_ci``: both label sets resampled with one index draw; a class
    missing from the plain sample counts as half a sample), the candidates' class frequencies,
    each class's mean log-volume over the ``top_k`` σ with a CI, and the Spearman correlation
    of ratio and mean log-volume over the classes that have both (None below 3 classes). Where
    the attribute is unknown in every plain or every MaGNET sample (face attributes of a
    generator that draws no faces, e.g. an AFHQ StyleGAN3) the ratios are NaN (None, with
    their CIs and the most up/down-weighted class, in ``record``); the candidates' frequencies
    are None when no candidate has the attribute."""
    from scipy import stats

    names, n_classes = cand.names, len(cand.names)
    freq = {name: bias.evaluations[name]["class_freq"] for name in (plain, magnet)}
    unknown = freq[plain] is None or freq[magnet] is None
    p = torch.tensor([math.nan] * n_classes if freq[plain] is None
                     else [c["value"] for c in freq[plain]], dtype=torch.float64)
    if unknown:
        change, ratio_ci = [math.nan] * n_classes, [None] * n_classes
    else:
        m = torch.tensor([c["value"] for c in freq[magnet]], dtype=torch.float64)
        change = (m / p.clamp_min(1e-12)).tolist()
        lab_plain = bias.evaluations[plain]["predicted_labels"]
        lab_magnet = bias.evaluations[magnet]["predicted_labels"]
        ratio_ci = [bootstrap.count_ratio_ci(lab_magnet, lab_plain, c, n_boot, seed)
                    for c in range(n_classes)]
    log_vol = sampling.log_volume(vb.log_sv, top_k)  # [N]
    per_class = {}
    for c in range(n_classes):
        lv = log_vol[cand.labels == c]
        per_class[names[c]] = bootstrap.mean_ci(lv, n_boot, seed) if len(lv) >= 2 else None
    order = np.argsort(change)
    known = cand.labels[cand.labels != attrs.MISSING]
    record = {"ratio_per_class": dict(zip(names, [None] * n_classes if unknown else change)),
              "ratio_per_class_ci": dict(zip(names, ratio_ci)),
              "most_upweighted": None if unknown else names[int(order[-1])],
              "most_downweighted": None if unknown else names[int(order[0])],
              "candidate_class_freq": (attrs.class_distribution(known, n_classes).tolist()
                                       if known.numel() else None),
              "mean_log_volume_per_class": per_class, "spearman_ratio_vs_mean_log_volume": None}
    valid = [c for c in range(n_classes) if per_class[names[c]] is not None and p[c] > 0]
    if len(valid) >= 3 and not unknown:
        record["spearman_ratio_vs_mean_log_volume"] = float(stats.spearmanr(
            [change[c] for c in valid], [per_class[names[c]]["value"] for c in valid]).statistic)
    return ClassChange(record, change, ratio_ci, per_class, order)
