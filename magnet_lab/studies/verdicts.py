"""Headline verdicts from bootstrap intervals: do two CIs overlap, and what a study concludes."""
from __future__ import annotations

from typing import Any


def cis_disjoint(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether the intervals ``[lo, hi]`` of two bootstrap results do not overlap."""
    return bool(b["lo"] > a["hi"] or b["hi"] < a["lo"])


def magnet_summary(samplers: dict[str, Any], mixture_table: list[dict[str, Any]],
                   attributes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Notebook 02's summary: mean log-volume of the plain and MaGNET draws and MaGNET's ESS/N
    (``samplers``, keyed "plain"/"MaGNET"); for precision, recall and FID the plain (lowest
    MaGNET fraction) and MaGNET (highest) cells of the ψ = 1 row of ``mixture_table`` (the first
    row without one), their change and whether their CIs are disjoint; per attribute the KL to
    uniform of both draws and whether their CIs are disjoint (attributes unknown in every sample
    are left out)."""
    summary: dict[str, Any] = {"mean_log_volume_plain": samplers["plain"]["mean_log_volume"],
                               "mean_log_volume_magnet": samplers["MaGNET"]["mean_log_volume"],
                               "ess_fraction_magnet": samplers["MaGNET"]["ess_fraction"]}
    if mixture_table:
        at1 = next((r for r in mixture_table if r["psi"] == 1.0), mixture_table[0])
        lo_f, hi_f = min(at1["fractions"], key=float), max(at1["fractions"], key=float)
        for metric in ("precision", "recall", "fid"):
            a, b = at1["fractions"][lo_f][metric], at1["fractions"][hi_f][metric]
            summary[metric] = {"plain": a, "magnet": b, "change": b["value"] - a["value"],
                               "cis_disjoint": cis_disjoint(a, b)}
    for attr, by in attributes.items():
        a, b = by["plain"]["kl_to_uniform"], by["MaGNET"]["kl_to_uniform"]
        if a is None or b is None:  # unknown in every sample (no face found)
            continue
        summary[f"kl_to_uniform_{attr}"] = {"plain": a, "magnet": b,
                                            "cis_disjoint": cis_disjoint(a, b)}
    return summary


def bias_verdict(kl_plain: dict[str, float] | None,
                 kl_magnet: dict[str, float] | None) -> dict[str, Any]:
    """Notebook 04's summary from the KL-to-uniform results of plain and MaGNET draws: both
    values, MaGNET's relative change, whether the CIs are disjoint, and the verdict "MaGNET
    reduces/increases the class bias" (qualified when the CIs overlap). A None result (the
    attribute unknown in every sample of that draw, e.g. no face found) gives None values and
    a verdict that says there is nothing to compare."""
    if kl_plain is None or kl_magnet is None:
        return {"kl_plain": None if kl_plain is None else kl_plain["value"],
                "kl_magnet": None if kl_magnet is None else kl_magnet["value"],
                "relative_change_kl": None, "cis_disjoint": None,
                "verdict": "no verdict: the attribute is unknown in every plain or MaGNET "
                           "sample (face attributes of a generator that draws no faces?)"}
    disjoint = cis_disjoint(kl_plain, kl_magnet)
    verdict = (("reduces" if kl_magnet["value"] < kl_plain["value"] else "increases")
               + " the class bias" + ("" if disjoint else " (95 % CIs overlap: not a clear effect)"))
    return {"kl_plain": kl_plain["value"], "kl_magnet": kl_magnet["value"],
            "relative_change_kl": kl_magnet["value"] / kl_plain["value"] - 1,
            "cis_disjoint": disjoint, "verdict": f"MaGNET {verdict}"}
