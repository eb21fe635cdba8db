"""The StyleGAN3 generator layout the NVIDIA reader converts to: recognition, configuration, shapes.

The official stylegan3 ``Generator(z_dim, c_dim, w_dim, img_resolution, img_channels,
mapping_kwargs={}, **synthesis_kwargs)`` takes its synthesis and layer kwargs flat (``channel_base``,
``channel_max``, ``magnitude_ema_beta``; config R adds ``conv_kernel=1``, ``use_radial_filters``);
ours (``models.stylegan3.StyleGAN3Generator``) nests them in ``synthesis_kwargs`` as our StyleGAN2
does. Its state-dict names (``synthesis.input.*``, ``synthesis.L{i}_{size}_{channels}.*``) follow
from the published layer schedule, which ``models.stylegan3.state_shapes`` computes.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ..stylegan3 import MAPPING_DEFAULTS, SYNTHESIS_DEFAULTS, state_shapes
from ._stylegan2 import plain

_TOP = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_KEY = re.compile(r"synthesis\.(L\d+_\d+_\d+|input)\.")


def is_stylegan3(keys: Any, class_name: str, module_src: str = "") -> bool:
    """True for a StyleGAN3 generator: a class name from ``networks_stylegan3``, embedded source
    text defining ``SynthesisInput`` (searched as text, never run), or ``synthesis.input.*`` /
    ``synthesis.L<i>_<size>_<channels>.*`` state keys."""
    return ("networks_stylegan3" in class_name or "class SynthesisInput" in module_src
            or any(_KEY.match(k) for k in keys))


def normalise_config(kwargs: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """Our nested config ``{z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs,
    synthesis_kwargs}`` (every default filled, JSON-able) from the official Generator's stored
    kwargs (synthesis kwargs flat at top level). Raises ValueError naming ``source`` for a
    missing dimension or an unknown kwarg."""
    kwargs = dict(kwargs)
    missing = [k for k in _TOP if k not in kwargs]
    if missing:
        raise ValueError(f"{source}: StyleGAN3 generator kwargs lack {missing}")
    top = {k: plain(kwargs.pop(k)) for k in _TOP}
    mapping = dict(kwargs.pop("mapping_kwargs", None) or {})
    for given, known, what in ((mapping, MAPPING_DEFAULTS, "mapping"),
                               (kwargs, SYNTHESIS_DEFAULTS, "synthesis")):
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown StyleGAN3 {what} kwargs {unknown}; known: "
                             f"{sorted(known)}")
    return {**top,
            "mapping_kwargs": {k: plain(mapping.get(k, v)) for k, v in MAPPING_DEFAULTS.items()},
            "synthesis_kwargs": {k: plain(kwargs.get(k, v)) for k, v in SYNTHESIS_DEFAULTS.items()}}


def check_state(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], source: str) -> None:
    """Raise ValueError naming ``source`` unless ``state`` has exactly the keys and shapes that
    ``config`` implies (naming the missing, unexpected and mis-shaped keys)."""
    try:
        want = state_shapes(dict(config))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: StyleGAN3 configuration cannot be built: {err}") from err
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    bad = sorted(f"{k}: {tuple(state[k].shape)} vs {want[k]}" for k in set(want) & set(state)
                 if tuple(state[k].shape) != want[k])
    if missing or unexpected or bad:
        raise ValueError(f"{source}: weights do not match the StyleGAN3 configuration they were "
                         f"stored with: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"mis-shaped {bad[:5]}")
