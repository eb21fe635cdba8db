"""Where samplers' draws sit in volume: notebook 02's plain-vs-MaGNET comparison on one bank."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import bank, bootstrap, experiment, sampling


@dataclass(frozen=True)
class SamplerVolumes:
    """``sampler_volumes``' result: each sampler's drawn bank indices (``picked``, ``[n]``) and
    its record (``summary``: specification, ESS/N, distinct candidates, mean log-volume with a
    bootstrap CI), keyed by sampler name."""

    picked: dict[str, torch.Tensor]
    summary: dict[str, dict[str, Any]]

    def table(self):
        """The summary as a pandas DataFrame (one row per sampler), for display."""
        import pandas as pd

        return pd.DataFrame({name: {"ess_fraction": r["ess_fraction"],
                                    "n_distinct": r["n_distinct"],
                                    **{f"mean_log_volume_{k}": r["mean_log_volume"][k]
                                       for k in ("value", "lo", "hi")}}
                             for name, r in self.summary.items()}).T


def sampler_volumes(vb: bank.VolumeBank, samplers: list[experiment.Sampler], n: int, *,
                    top_k: int | None, n_boot: int, seed: int) -> SamplerVolumes:
    """Draw ``n`` indices per sampler (``Sampler.indices``) and record, per sampler, its
    ``as_dict``, ``ess_fraction``, ``n_distinct`` and the mean log-volume over the ``top_k``
    largest σ of its draws (``bootstrap.mean_ci`` with ``n_boot`` replicates from ``seed``).
    Raises ValueError as ``Sampler.indices`` does."""
    log_vol = sampling.log_volume(vb.log_sv, top_k)  # [N]
    picked = {s.name: s.indices(vb, n) for s in samplers}
    summary = {s.name: {"sampler": s.as_dict(), "ess_fraction": s.ess_fraction(vb),
                        "n_distinct": int(picked[s.name].unique().numel()),
                        "mean_log_volume": bootstrap.mean_ci(log_vol[picked[s.name]], n_boot,
                                                             seed)}
               for s in samplers}
    return SamplerVolumes(picked, summary)
