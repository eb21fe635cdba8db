"""magnet_lab: MaGNET and Polarity sampling for pre-trained piecewise-affine generators.

Data flows one way: generator → ``spectra`` (log σ of the Jacobian per latent) → ``bank``
(persisted log σ) → ``sampling`` (weights, indices) → generator again for images → ``features``
→ ``metrics`` / attributes → ``plots``. ``load_generator`` is the one door for every model family.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load_generator", "load_classifier", "__version__"]


def __getattr__(name: str):
    # Lazy: `import magnet_lab` stays cheap; models load only when asked for.
    if name in ("load_generator", "load_classifier"):
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'magnet_lab' has no attribute {name!r}")
