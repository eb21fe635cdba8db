"""rosinality/stylegan2-pytorch checkpoints (``.pt``: ``{"g_ema": state_dict, "latent_avg": w}``).

Read with ``torch.load(weights_only=True)`` (tensors and plain containers only; a training
checkpoint's ``args`` Namespace is the one extra class allowed, kept as data), then renamed to the
ADA ``Generator.state_dict()`` keys. Key map (``res`` = 2**(i+3) for the i-th upsampling block):
``style.{i+1}.{weight,bias}`` → ``mapping.fc{i}.*`` (same storage convention, weights ``[out, in]``
scaled at run time by ``lr_mul / sqrt(in)``); ``latent_avg`` → ``mapping.w_avg``;
``input.input[0]`` → ``synthesis.b4.const``; ``conv1`` → ``synthesis.b4.conv1``,
``convs.{2i}`` → ``synthesis.b{res}.conv0``, ``convs.{2i+1}`` → ``synthesis.b{res}.conv1``, each
with ``conv.weight[0]`` → ``weight`` (the up-conv kernel is already flipped as ours),
``conv.modulation.{weight,bias}`` → ``affine.*`` (the +1 bias already included),
``noise.weight`` (shape ``[1]``) → ``noise_strength`` (shape ``[]``), ``activate.bias`` → ``bias``;
``to_rgb1`` → ``synthesis.b4.torgb``, ``to_rgbs.{i}`` → ``synthesis.b{res}.torgb`` with
``conv.weight[0]`` → ``weight``, ``conv.modulation.*`` → ``affine.*``, ``bias`` ``[1, C, 1, 1]``
→ ``bias`` ``[C]``; ``noises.noise_{j}[0, 0]`` → ``noise_const`` of the j-th conv layer in the
order b4.conv1, b8.conv0, b8.conv1, ... Blur kernels are dropped; the ``resample_filter``
buffers are built from ``[1, 3, 3, 1]``. Config: dimensions, depth and channels from tensor
shapes (channel_base/channel_max solved from the channel counts); ``lr_multiplier`` 0.01 (the
repository's default, not stored) and ``conv_clamp`` None.
"""
from __future__ import annotations

import argparse
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from . import _stylegan2 as sg2
from .torch_file import refusal_detail

NAME = "rosinality"
DESCRIPTION = "a rosinality stylegan2-pytorch checkpoint"
SUFFIXES = (".pt",)


def is_rosinality(obj: Any) -> bool:
    """True for a loaded checkpoint dict holding a ``g_ema`` state dict."""
    return isinstance(obj, dict) and isinstance(obj.get("g_ema"), dict)


def load(path: str | os.PathLike) -> Any:
    """The object in the ``torch.save`` file at ``path`` via ``torch.load(weights_only=True)``
    (plus ``argparse.Namespace`` as data). Raises ValueError naming the path and the refused
    global, or naming the path for a corrupt or truncated file."""
    path = Path(path)
    refusal = None
    try:
        with open(path, "rb") as fh, torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(fh, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure becomes one clean refusal below
        refusal = refusal_detail(err)
    # raised outside the handler and from None: torch's weights_only advice is in no chain
    raise ValueError(f"{path}: refused to load: {refusal} (nothing in the file was "
                     "executed)") from None


def read_stylegan2(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state, config)`` of the ``g_ema`` generator in a rosinality checkpoint, under the ADA
    ``Generator.state_dict()`` names and ADA-layout config (see the module docstring's map).
    Raises ValueError naming the path for a file that is not such a checkpoint, or whose keys
    or shapes do not form a StyleGAN2 generator."""
    path = Path(path)
    ckpt = load(path)
    if not is_rosinality(ckpt):
        raise ValueError(f"{path}: not a rosinality checkpoint (no 'g_ema' state dict)")
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise ValueError(f"{path}: latent_avg is a {type(latent_avg).__name__}, not a tensor")
    try:
        return convert(ckpt["g_ema"], latent_avg, source=str(path))
    except (TypeError, IndexError, RuntimeError) as err:  # tensors of the wrong rank or size
        raise ValueError(f"{path}: malformed rosinality checkpoint ({type(err).__name__}: "
                         f"{str(err)[:200]})") from err


def convert(g: dict[str, torch.Tensor], latent_avg: torch.Tensor | None, *, source: str
            ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state, config)`` from a rosinality ``Generator.state_dict()`` and its ``latent_avg``
    (``[w_dim]``; zeros, with a warning, when None: training checkpoints lack it, and truncation
    then needs ``w_avg`` estimated from the mapping network). Raises ValueError naming ``source``
    for missing keys or inconsistent shapes."""
    def get(key: str) -> torch.Tensor:
        if key not in g or not isinstance(g[key], torch.Tensor):
            raise ValueError(f"{source}: g_ema lacks {key}")
        return g[key].detach().to(torch.float32)

    n_mlp = sum(1 for k in g if re.fullmatch(r"style\.\d+\.weight", k))
    n_up = sum(1 for k in g if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k))
    if n_mlp == 0 or "conv1.conv.weight" not in g:
        raise ValueError(f"{source}: g_ema is not a rosinality StyleGAN2 generator "
                         "(no style.*.weight or conv1.conv.weight)")
    fc0 = get("style.1.weight")
    w_dim, z_dim = fc0.shape
    res_list = [4 * 2 ** i for i in range(n_up + 1)]
    seen = {4: get("conv1.conv.weight").shape[1]}
    seen.update({r: get(f"convs.{2 * i}.conv.weight").shape[1] for i, r in enumerate(res_list[1:])})
    base, cmax = sg2.infer_channels(seen, source)
    config = sg2.normalise_config({
        "z_dim": int(z_dim), "c_dim": 0, "w_dim": int(w_dim), "img_resolution": res_list[-1],
        "img_channels": int(get("to_rgb1.conv.weight").shape[1]),
        "mapping_kwargs": {"num_layers": n_mlp, "layer_features": int(w_dim)},
        "synthesis_kwargs": {"channel_base": base, "channel_max": cmax}}, flat=False, source=source)
    state: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        state[f"mapping.fc{i}.weight"] = get(f"style.{i + 1}.weight")
        state[f"mapping.fc{i}.bias"] = get(f"style.{i + 1}.bias")
    if latent_avg is None:
        warnings.warn(f"{source}: no latent_avg in the checkpoint; mapping.w_avg is set to zeros, "
                      "so estimate it (mean of mapping(z)) before truncating", stacklevel=2)
        latent_avg = torch.zeros(w_dim)
    state["mapping.w_avg"] = latent_avg.detach().to(torch.float32).reshape(-1)
    state["synthesis.b4.const"] = get("input.input")[0]
    convs = [("synthesis.b4.conv1", "conv1")]
    rgbs = [("synthesis.b4.torgb", "to_rgb1")]
    for i, r in enumerate(res_list[1:]):
        convs += [(f"synthesis.b{r}.conv0", f"convs.{2 * i}"),
                  (f"synthesis.b{r}.conv1", f"convs.{2 * i + 1}")]
        rgbs.append((f"synthesis.b{r}.torgb", f"to_rgbs.{i}"))
    for j, (ours, theirs) in enumerate(convs):
        state[f"{ours}.weight"] = get(f"{theirs}.conv.weight")[0]
        state[f"{ours}.affine.weight"] = get(f"{theirs}.conv.modulation.weight")
        state[f"{ours}.affine.bias"] = get(f"{theirs}.conv.modulation.bias")
        state[f"{ours}.noise_strength"] = get(f"{theirs}.noise.weight").reshape(())
        state[f"{ours}.bias"] = get(f"{theirs}.activate.bias")
        state[f"{ours}.noise_const"] = get(f"noises.noise_{j}")[0, 0]
    for ours, theirs in rgbs:
        state[f"{ours}.weight"] = get(f"{theirs}.conv.weight")[0]
        state[f"{ours}.affine.weight"] = get(f"{theirs}.conv.modulation.weight")
        state[f"{ours}.affine.bias"] = get(f"{theirs}.conv.modulation.bias")
        state[f"{ours}.bias"] = get(f"{theirs}.bias").reshape(-1)
    filt = sg2.resample_filter(config["synthesis_kwargs"]["resample_filter"])
    for key in sg2.expected_shapes(config):
        if key.endswith("resample_filter"):
            state[key] = filt.clone()
    state = {k: v.contiguous() for k, v in state.items()}
    sg2.check_state(state, config, source)
    return state, config
