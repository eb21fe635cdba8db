"""Jacobian spectra of our StyleGAN2 (config-f channels, random seeded weights): ours vs a baseline.

    python benchmarks/bench_stylegan2.py                                # CPU, 32², ~10 min on 2 cores
    python benchmarks/bench_stylegan2.py --res 64 --json benchmarks/results/bench_stylegan2_cpu.json
    python benchmarks/bench_stylegan2.py --device cuda --res 1024 --latents 24 \\
        --json benchmarks/results/bench_stylegan2_h100.json            # one GPU

What is timed and how (baseline, projected, topk, exact; accuracy against float64): the
docstring of ``stylegan_spectra.py``, which holds the code shared with ``bench_stylegan3.py``
(``--arch stylegan3`` here runs the StyleGAN3 one).
"""
from __future__ import annotations

from stylegan_spectra import main

if __name__ == "__main__":
    main(__doc__, arch="stylegan2", width=1.0)
