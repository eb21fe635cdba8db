"""The persisted volume bank: log singular values of ``∂G/∂z`` at N latents, built once, reused.

A :class:`VolumeBank` holds ``log_sv`` (``[N, r]`` float64, descending natural-log σ per row,
``-inf`` for σ=0) and optionally the latents, per-latent seeds and class labels, plus a ``meta``
dict. :mod:`magnet_lab.sampling` turns ``log_sv`` into weights for any ρ, k or mixture.

One module per concept: ``volume_bank`` (the type, loading, merging), ``formats`` (our
safetensors format ``magnet_lab.bank/1`` and the authors' ``.npz``, read without unpickling),
``identity`` (``bank_identity``: exactly what produced the rows; ``default_path``: the one
cache-path rule, ``paths.cache_dir()/banks/<generator>-<identity digest>``) and ``build`` (the
sharded, resumable build; many workers or torchrun ranks write disjoint shards of one folder).
A directory of ``*.safetensors`` shards is a bank too (merged in sorted name order).
"""
from __future__ import annotations

from .build import DEFAULT_SHARD_SIZE, build, shard_name, worker_shards
from .formats import FORMAT, META_KEY, TENSOR_NAMES
from .identity import (bank_identity, default_path, identity_mismatch, latents_digest)
from .volume_bank import VolumeBank

__all__ = ["DEFAULT_SHARD_SIZE", "FORMAT", "META_KEY", "TENSOR_NAMES", "VolumeBank",
           "bank_identity", "build", "default_path", "identity_mismatch", "latents_digest",
           "shard_name", "worker_shards"]
