"""Jacobian spectra of our StyleGAN3 (config T or R, random seeded weights): ours vs a baseline.

CPU sizes (the default: 16², a sixteenth of the published channel counts, 4 latents; StyleGAN3
keeps 36² feature maps at any resolution, so small images are not cheap):

    python benchmarks/bench_stylegan3.py --config t --latents 1 --repeats 1 --k 10 \\
        --methods baseline,projected --threads 1 \\
        --json benchmarks/results/bench_stylegan3_t16_cpu.json
    python benchmarks/bench_stylegan3.py --config t --res 512 --width 1 --latents 1 \\
        --repeats 1 --methods forward --threads 1 \\
        --json benchmarks/results/bench_stylegan3_t512_forward_cpu.json   # one full-size forward

On one GPU, at the published channel counts (T: 32768/512; R: 65536/1024) and the authors'
projected estimator (128 directions), 512² and 1024²:

    python benchmarks/bench_stylegan3.py --device cuda --config t --res 512 --width 1 \\
        --latents 8 --methods baseline,projected \\
        --json benchmarks/results/bench_stylegan3_t512_h100.json
    python benchmarks/bench_stylegan3.py --device cuda --config r --res 512 --width 1 \\
        --latents 8 --methods baseline,projected \\
        --json benchmarks/results/bench_stylegan3_r512_h100.json
    python benchmarks/bench_stylegan3.py --device cuda --config t --res 1024 --width 1 \\
        --latents 4 --methods baseline,projected \\
        --json benchmarks/results/bench_stylegan3_t1024_h100.json
    python benchmarks/bench_stylegan3.py --device cuda --config r --res 1024 --width 1 \\
        --latents 4 --methods baseline,projected \\
        --json benchmarks/results/bench_stylegan3_r1024_h100.json

The per-latent seconds of ``projected[highest]`` times the number of candidates is a bank's
build time on that device (docs/stylegan3.md). What is timed and how: ``stylegan_spectra.py``,
the code shared with ``bench_stylegan2.py``.
"""
from __future__ import annotations

from stylegan_spectra import main

if __name__ == "__main__":
    main(__doc__, arch="stylegan3", width=1 / 16, res=16)
