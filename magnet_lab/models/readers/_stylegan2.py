"""The StyleGAN2 generator layout every StyleGAN2 reader converts to: configuration and key names.

The target is the state dict of stylegan2-ada-pytorch's ``Generator`` (keys such as
``mapping.fc0.weight``, ``mapping.w_avg``, ``synthesis.b4.const``, ``synthesis.b8.conv0.affine.weight``,
``synthesis.b8.torgb.bias``, resnet ``synthesis.b8.skip.weight``) and its constructor kwargs in
that repository's nested layout ``{z_dim, c_dim, w_dim, img_resolution, img_channels,
mapping_kwargs, synthesis_kwargs}`` with every default written out. These facts (names, shapes,
defaults, the resampling filter's normalisation) were read from the public papers' reference code
and re-stated here in our own words; no NVIDIA code is used.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

# MappingNetwork defaults in stylegan2-ada-pytorch; the stylegan3 repository's w_avg_beta is 0.998.
MAPPING_DEFAULTS: dict[str, Any] = {"num_layers": 8, "embed_features": None, "layer_features": None,
                                    "activation": "lrelu", "lr_multiplier": 0.01, "w_avg_beta": 0.995}
SG3_REPO_MAPPING_DEFAULTS: dict[str, Any] = {**MAPPING_DEFAULTS, "w_avg_beta": 0.998}
# SynthesisNetwork + SynthesisBlock + SynthesisLayer defaults in stylegan2-ada-pytorch.
ADA_SYNTHESIS_DEFAULTS: dict[str, Any] = {
    "channel_base": 32768, "channel_max": 512, "num_fp16_res": 0, "conv_clamp": None,
    "architecture": "skip", "resample_filter": [1, 3, 3, 1], "use_noise": True,
    "activation": "lrelu", "fp16_channels_last": False}
# stylegan3 repository's networks_stylegan2: the same names, two different defaults.
SG3_REPO_SYNTHESIS_DEFAULTS: dict[str, Any] = {**ADA_SYNTHESIS_DEFAULTS, "num_fp16_res": 4,
                                               "conv_clamp": 256}
# stylegan3-repository options that change no stored weight and that the ADA constructor lacks
_RUNTIME_ONLY = {"synthesis": ("fused_modconv_default",), "mapping": ("freeze_layers", "freeze_embed")}
_TOP = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_SG3_KEY = re.compile(r"synthesis\.(L\d+_\d+_\d+|input)\.")


def normalise_config(kwargs: Mapping[str, Any], *, flat: bool, source: str) -> dict[str, Any]:
    """The ADA-layout config from a Generator's stored constructor kwargs: ``flat=False`` for the
    ADA repository (nested ``synthesis_kwargs``), ``flat=True`` for the stylegan3 repository's
    ``networks_stylegan2`` (synthesis kwargs at top level; defaults ``num_fp16_res`` 4,
    ``conv_clamp`` 256, ``w_avg_beta`` 0.998; its training-only options are dropped). Every
    default is filled in; ``embed_features``/``layer_features`` resolve to ints. Raises
    ValueError naming ``source`` for a missing dimension or an unknown kwarg."""
    kwargs = dict(kwargs)
    missing = [k for k in _TOP if k not in kwargs]
    if missing:
        raise ValueError(f"{source}: generator kwargs lack {missing}")
    top = {k: plain(kwargs.pop(k)) for k in _TOP}
    mapping = dict(kwargs.pop("mapping_kwargs", None) or {})
    if flat:
        synthesis, defaults = kwargs, SG3_REPO_SYNTHESIS_DEFAULTS
        mapping_defaults = SG3_REPO_MAPPING_DEFAULTS
        for section, keys in ((synthesis, _RUNTIME_ONLY["synthesis"]), (mapping, _RUNTIME_ONLY["mapping"])):
            for k in keys:
                section.pop(k, None)
    else:
        synthesis, defaults = dict(kwargs.pop("synthesis_kwargs", None) or {}), ADA_SYNTHESIS_DEFAULTS
        mapping_defaults = MAPPING_DEFAULTS
        if kwargs:
            raise ValueError(f"{source}: unknown generator kwargs {sorted(kwargs)}")
    for given, known, what in ((mapping, mapping_defaults, "mapping"),
                               (synthesis, defaults, "synthesis")):
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown {what} kwargs {unknown}; only StyleGAN2 "
                             f"generators with {sorted(known)} are read")
    mapping = {k: plain(mapping.get(k, v)) for k, v in mapping_defaults.items()}
    if mapping["embed_features"] is None:
        mapping["embed_features"] = top["w_dim"]
    if top["c_dim"] == 0:
        mapping["embed_features"] = 0
    if mapping["layer_features"] is None:
        mapping["layer_features"] = top["w_dim"]
    synthesis = {k: plain(synthesis.get(k, v)) for k, v in defaults.items()}
    return {**top, "mapping_kwargs": mapping, "synthesis_kwargs": synthesis}


def plain(value: Any) -> Any:
    """JSON-able Python values from numpy scalars, tuples and EasyDicts."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def channels(config: Mapping[str, Any]) -> dict[int, int]:
    """``{resolution: channels}`` of the synthesis blocks: ``min(channel_base // res, channel_max)``."""
    syn = config["synthesis_kwargs"]
    return {res: min(syn["channel_base"] // res, syn["channel_max"])
            for res in resolutions(config["img_resolution"])}


def resolutions(img_resolution: int) -> list[int]:
    """Block resolutions 4, 8, ..., ``img_resolution`` (a power of two >= 4, else ValueError)."""
    if img_resolution < 4 or img_resolution & (img_resolution - 1):
        raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
    return [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]


def resample_filter(taps: Any) -> torch.Tensor:
    """The stored low-pass filter buffer: a 1-D tap list of fewer than 8 taps becomes its outer
    product (``[n, n]``), longer ones stay 1-D, and the result is normalised to sum 1 (float32)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim == 1 and f.numel() < 8:
        f = torch.outer(f, f)
    return f / f.sum()


def expected_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the ADA ``Generator(**config).state_dict()``, computed from the config."""
    m, syn = config["mapping_kwargs"], config["synthesis_kwargs"]
    z, c, w = config["z_dim"], config["c_dim"], config["w_dim"]
    out: dict[str, tuple[int, ...]] = {}
    features = [z + m["embed_features"]] + [m["layer_features"]] * (m["num_layers"] - 1) + [w]
    if c > 0:
        e = m["embed_features"]
        out["mapping.embed.weight"], out["mapping.embed.bias"] = (e, c), (e,)
    for i, (fin, fout) in enumerate(zip(features[:-1], features[1:])):
        out[f"mapping.fc{i}.weight"], out[f"mapping.fc{i}.bias"] = (fout, fin), (fout,)
    if m["w_avg_beta"] is not None:
        out["mapping.w_avg"] = (w,)
    filt = tuple(resample_filter(syn["resample_filter"]).shape)
    ch = channels(config)
    last = config["img_resolution"]
    for res in resolutions(last):
        b, cout = f"synthesis.b{res}", ch[res]
        out[f"{b}.resample_filter"] = filt
        layers = [("conv1", cout)]
        if res == 4:
            out[f"{b}.const"] = (cout, 4, 4)
        else:
            layers.insert(0, ("conv0", ch[res // 2]))
        for name, cin in layers:
            p = f"{b}.{name}"
            out.update({f"{p}.affine.weight": (cin, w), f"{p}.affine.bias": (cin,),
                        f"{p}.weight": (cout, cin, 3, 3), f"{p}.bias": (cout,),
                        f"{p}.resample_filter": filt})
            if syn["use_noise"]:
                out[f"{p}.noise_const"], out[f"{p}.noise_strength"] = (res, res), ()
        if res == last or syn["architecture"] == "skip":
            out.update({f"{b}.torgb.affine.weight": (cout, w), f"{b}.torgb.affine.bias": (cout,),
                        f"{b}.torgb.weight": (config["img_channels"], cout, 1, 1),
                        f"{b}.torgb.bias": (config["img_channels"],)})
        if res > 4 and syn["architecture"] == "resnet":
            out[f"{b}.skip.weight"] = (cout, ch[res // 2], 1, 1)
            out[f"{b}.skip.resample_filter"] = filt
    return out


def check_state(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], source: str) -> None:
    """Raise ValueError naming ``source`` unless ``state`` has exactly the keys and shapes that
    ``config`` implies (naming the missing, unexpected and mis-shaped keys)."""
    want = expected_shapes(config)
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    bad = sorted(f"{k}: {tuple(state[k].shape)} vs {want[k]}" for k in set(want) & set(state)
                 if tuple(state[k].shape) != want[k])
    if missing or unexpected or bad:
        raise ValueError(f"{source}: weights do not match the StyleGAN2 configuration they were "
                         f"stored with: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"mis-shaped {bad[:5]}")


def refuse_stylegan3(keys: Any, class_name: str, source: str, module_src: str = "") -> None:
    """Raise ValueError naming ``source`` for a StyleGAN3 generator: a class name from
    ``networks_stylegan3``, embedded source text defining ``SynthesisInput`` (read as text, never
    run), or ``synthesis.L<i>_<size>_<channels>`` / ``synthesis.input`` layers."""
    hit = next((k for k in keys if _SG3_KEY.match(k)), None)
    by_name = "networks_stylegan3" in class_name or "class SynthesisInput" in module_src
    if by_name or hit is not None:
        what = f"class {class_name}" if by_name else f"layer {hit}"
        raise ValueError(f"{source}: a StyleGAN3 generator ({what}), not a StyleGAN2 one; read "
                         "it with read_stylegan3 (or magnet_lab.load_generator)")


def infer_channels(seen: Mapping[int, int], source: str) -> tuple[int, int]:
    """``(channel_base, channel_max)`` reproducing the observed ``{resolution: channels}`` with
    ``min(channel_base // res, channel_max)``; ValueError naming ``source`` if none does."""
    cmax = max(seen.values())
    for res in sorted(seen, reverse=True):
        for base in (seen[res] * res, 32768, 16384):
            if all(min(base // r, cmax) == c for r, c in seen.items()):
                return base, cmax
    raise ValueError(f"{source}: channel counts {dict(sorted(seen.items()))} follow no "
                     "min(channel_base // res, channel_max) rule")
