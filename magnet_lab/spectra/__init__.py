"""Jacobian singular values of a generator at latents: exact, projected sketch, matrix-free top-k.

For a generator G mapping latents ``z: [B, d]`` to outputs ``[B, ...]`` (flattened to D), J(z) is
the D x d Jacobian; MaGNET/Polarity weights are built from its singular values, kept here as
``log_sv`` (float64, CPU, descending). ``log_singular_values(G, z, SpectraOptions(...))`` runs
one of three estimators:

* ``exact``     the full J (d JVPs in forward mode when d <= D, else D VJPs), then all min(D, d)
                singular values. Holds chunk·D·d numbers: for small generators and references.
* ``projected`` the MaGNET authors' estimator: one seeded projection P [proj_dim, D] with
                orthonormal rows (Gaussian then QR, like Keras' ``Orthogonal`` initializer the TF1
                code uses), shared by all latents; σ(P·J) from proj_dim VJPs, or from d JVPs
                (P @ J, the same matrix up to rounding) when d < proj_dim. A sketch of the
                spectrum, not σ(J) itself. P itself is proj_dim·D float64 numbers (3 GiB at
                StyleGAN2-1024 with proj_dim=128).
* ``topk``      block Lanczos on JᵀJ in latent space from a seeded Gaussian block of
                ``KRYLOV_BLOCK`` directions, fully reorthogonalised: each step costs 8 JVPs + 8
                VJPs, J is never formed. It took 112-192 products for the top 30 to 1e-6 on
                linear maps with known spectra (tests/test_spectra.py). σ below about
                sqrt(eps)·σ_max are not resolved: use ``exact`` or ``projected`` for
                rank-deficient tails.

The concepts, one module each: ``options`` (``SpectraOptions``: everything that changes the
values and so a bank's identity; ``SpeedOptions``: chunk, block, memory, progress), ``products``
(JVPs/VJPs in vmapped blocks, ``count_products()``, ``precision_flags()``), ``projection``
(P and its cache), ``lanczos`` (top-k), ``memory`` (budget, probe, chunk/block sizing and the
out-of-memory fallback), ``api`` (the entry points). Work runs in two explicit loops so a
device-specific fast path can replace either: latent chunks (with a tqdm bar) and, inside a
chunk, tangent blocks (directions vmapped at once). G must treat batch samples independently
(eval mode) and be deterministic (fixed noise); a class-conditional G is called as ``G(z, c)``.

Precision: float64 is the reference (on CUDA it equals the CPU to ~1e-14). float32 with
``precision="highest"`` (the default) is float32 arithmetic: TF32 is switched off for the call,
because torch lets cuDNN convolutions run in TF32 by default, which moved the embedded DCGAN's
top-10 log σ by up to 0.03. ``"tf32"`` and ``"bf16"`` (autocast) are faster where the device has
the units and are asked for explicitly; ``benchmarks/bench_stylegan2.py`` measures what they cost
in accuracy against float64. Every SVD runs in float64 whatever the products' precision.
Singular values below σ_max·min(m, n)·eps(dtype) of the m x n matrix are numerically zero and
are returned as log 0 = -inf; ``magnet_lab.sampling`` decides what -inf means for the weights.
"""
from __future__ import annotations

from .api import MODES, jacobian, log_singular_values, memory_plan
from .lanczos import KRYLOV_BLOCK
from .memory import MEMORY_ENV, MemoryPlan, memory_budget
from .options import METHODS, SpectraOptions, SpeedOptions
from .products import PRECISIONS, Generator, ProductCount, count_products, precision_flags
from .projection import clear_projection_cache, projection_matrix

__all__ = ["KRYLOV_BLOCK", "MEMORY_ENV", "METHODS", "MODES", "PRECISIONS", "Generator",
           "MemoryPlan", "ProductCount", "SpectraOptions", "SpeedOptions",
           "clear_projection_cache", "count_products", "jacobian", "log_singular_values",
           "memory_budget", "memory_plan", "precision_flags", "projection_matrix"]
