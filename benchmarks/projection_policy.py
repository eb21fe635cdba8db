"""Accuracy, not speed: one fixed projection P for all latents (ours) vs a fresh P per batch of
16 latents (the authors' TF1 code), each against the exact log-volume of the embedded DCGAN.

    python benchmarks/projection_policy.py              # 300 candidates, ~2-3 min on 2 CPU cores
    python benchmarks/projection_policy.py --n 1000 --json reports/projection_policy.json

Prints the Spearman rank correlation of each projected log-volume (all min(proj_dim, d) σ and
the top-``top_k``) with the exact one over the same Gaussian candidates, and how many of the
MaGNET picks (Gumbel-top-n with the same noise, n = N/4) each shares with the exact weights.
"""
from __future__ import annotations

import argparse

import torch
from scipy import stats

import magnet_lab
from magnet_lab import sampling, spectra
from magnet_lab.provenance import write_results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", default="fmnist-dcgan")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--proj-dim", type=int, default=128)
    p.add_argument("--batch", type=int, default=16, help="latents per fresh P (authors: 16)")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    G = magnet_lab.load_generator(args.generator, dtype=torch.float64)
    z = sampling.gaussian_latents(args.n, G.z_dim, seed=args.seed, dtype=torch.float64)
    projected = spectra.SpectraOptions("projected", proj_dim=args.proj_dim, seed=args.seed)
    exact = spectra.log_singular_values(G, z)  # [N, d]
    fixed = spectra.log_singular_values(G, z, projected)  # [N, min(proj_dim, d)]
    quiet = spectra.SpeedOptions(progress=False)
    fresh = torch.cat([spectra.log_singular_values(G, zb, projected.replace(seed=args.seed + b),
                                                   speed=quiet)
                       for b, zb in enumerate(z.split(args.batch))])  # a new P per batch
    n_pick = max(args.n // 4, 1)
    pick = {name: set(sampling.resample(sampling.log_weights(lsv, 1.0, top_k=args.top_k), n_pick,
                                        rng=torch.Generator().manual_seed(args.seed + 1)).tolist())
            for name, lsv in (("exact", exact), ("fixed", fixed), ("fresh", fresh))}
    results = {}
    for name, lsv in (("fixed_P", fixed), ("fresh_P_per_batch", fresh)):
        results[name] = {
            "spearman_all": float(stats.spearmanr(lsv.sum(1), exact.sum(1)).statistic),
            "spearman_top_k": float(stats.spearmanr(lsv[:, :args.top_k].sum(1),
                                                    exact[:, :args.top_k].sum(1)).statistic),
            "magnet_pick_overlap": len(pick[name.split("_")[0]] & pick["exact"]) / n_pick,
        }
        print(f"{name:18s} Spearman vs exact: all σ {results[name]['spearman_all']:.5f}, "
              f"top-{args.top_k} {results[name]['spearman_top_k']:.5f}; MaGNET picks shared "
              f"{results[name]['magnet_pick_overlap']:.1%}")
    if args.json:
        write_results(args.json, results, seed=args.seed, parameters=vars(args))


if __name__ == "__main__":
    main()
