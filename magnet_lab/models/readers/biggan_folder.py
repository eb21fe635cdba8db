"""BigGAN-deep folders of ``pytorch-pretrained-biggan``: ``pytorch_model.bin`` + ``config.json``.

The format (what that package's ``convert_tf_to_pytorch.py`` writes for DeepMind's TF-Hub
modules biggan-deep-128/256/512): ``config.json`` holds exactly the fields output_dim, z_dim,
class_embed_dim, channel_width, num_classes, layers ``[[upsample, in_mult, out_mult], ...]``,
attention_layer_position, eps and n_stats; ``pytorch_model.bin`` is ``torch.save`` of the
model's ``state_dict()``. Every convolution and linear layer but ``embeddings`` is under
``torch.nn.utils.spectral_norm``, so it is stored as ``<name>.weight_orig`` plus the power-
iteration vectors ``<name>.weight_u`` ``[out]`` and ``<name>.weight_v`` ``[in·kh·kw]``; in eval mode
the reference divides by σ = u · (W v) at every call. Batch norms hold ``running_means`` and
``running_vars`` ``[n_stats, C]``.

We read the bin only through ``torch.load(weights_only=True)`` (``torch_file``), match its keys
and shapes STRICTLY against those the config implies (the reference itself loads with
``strict=False``, so a mismatched file loads silently, leaving random weights), refuse non-finite
tensors and non-positive σ by name, and fold σ into the weight once (in float64, stored as
float32): the returned state dict has ``BigGANDeep``'s keys (the reference's, each spectral-norm
triple becoming one ``weight``). A folder is recognised by content: a ``config.json`` whose JSON
has the BigGAN fields, next to a torch file named ``pytorch_model.bin``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..biggan import BigGANDeep, BigGANDeepConfig
from . import torch_file

NAME = "biggan_folder"
DESCRIPTION = "a pytorch-pretrained-biggan folder (pytorch_model.bin + config.json)"
WEIGHTS_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"
CONFIG_FIELDS = ("output_dim", "z_dim", "class_embed_dim", "channel_width", "num_classes",
                 "layers", "attention_layer_position", "eps", "n_stats")
_SIGNATURE = ("layers", "channel_width", "attention_layer_position", "n_stats")  # recognition
_SHOWN = 5  # how many key names an error lists per kind

__all__ = ["CONFIG_FIELDS", "fold_spectral_norm", "is_biggan_folder", "read_biggan",
           "read_config", "reference_shapes"]


def is_biggan_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory whose ``config.json`` is a JSON object with BigGAN's
    fields (layers, channel_width, attention_layer_position, n_stats) and which holds a
    ``pytorch_model.bin``: what ``load_generator`` reads as a BigGAN-deep folder."""
    path = Path(path)
    cfg = path / CONFIG_NAME
    if not (path.is_dir() and cfg.is_file() and (path / WEIGHTS_NAME).is_file()):
        return False
    try:
        obj = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False
    return isinstance(obj, dict) and all(k in obj for k in _SIGNATURE)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``BigGANDeep`` keyword arguments of the folder's ``config.json``: exactly the nine
    reference fields (img_channels 3). Raises FileNotFoundError for a missing file and
    ValueError naming the file for invalid JSON, missing or unknown fields (the reference would
    silently fill missing ones with biggan-deep-128's values) or an inconsistent config."""
    cfg = Path(path) / CONFIG_NAME
    if not cfg.is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_NAME}; a BigGAN-deep folder holds "
                                f"{WEIGHTS_NAME} and {CONFIG_NAME}")
    try:
        obj = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{cfg}: not valid JSON ({err})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{cfg}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in CONFIG_FIELDS if k not in obj]
    unknown = sorted(set(obj) - set(CONFIG_FIELDS))
    if missing or unknown:
        raise ValueError(f"{cfg}: BigGAN-deep config fields do not match the format: missing "
                         f"{missing}, unknown {unknown}")
    try:
        return BigGANDeepConfig(**obj).to_dict()
    except ValueError as err:
        raise ValueError(f"{cfg}: {err}") from err


def _spectral_norm_modules(model: nn.Module) -> list[str]:
    """The modules the reference wraps in spectral_norm: every Conv2d/Linear but embeddings."""
    return [name for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and name != "embeddings"]


def reference_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the reference ``BigGAN(config).state_dict()`` for ``BigGANDeep``
    keyword arguments ``config`` (built on the meta device: no memory, no weights)."""
    with torch.device("meta"):
        model = BigGANDeep(**config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name in _spectral_norm_modules(model):
        w = shapes.pop(f"{name}.weight")
        shapes[f"{name}.weight_orig"] = w
        shapes[f"{name}.weight_u"] = (w[0],)
        shapes[f"{name}.weight_v"] = (int(torch.Size(w[1:]).numel()),)
    return shapes


def fold_spectral_norm(weight_orig: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, float]:
    """``(weight_orig / σ, σ)`` with σ = u · (W v), W = weight_orig as ``[out, -1]``: what
    ``torch.nn.utils.spectral_norm`` uses in eval mode, computed in float64 and returned in
    weight_orig's dtype."""
    w = weight_orig.double()
    sigma = float(torch.dot(u.double(), w.reshape(w.shape[0], -1) @ v.double()))
    return (w / sigma).to(weight_orig.dtype), sigma


def _few(keys: list[str]) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"{keys[:_SHOWN]}{more}"


def read_biggan(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state, config)`` of a BigGAN-deep folder: ``state`` the float32 CPU state dict of
    ``BigGANDeep(**config)`` (spectral norm folded), ``config`` its keyword arguments. Raises
    FileNotFoundError for a missing folder or file, and ValueError naming the path for a bad
    config, a refused or corrupt bin, missing/unexpected/mis-shaped keys (a few of each), a
    non-floating or non-finite tensor, a non-positive σ = u·(W v), or negative variances."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"BigGAN-deep folder not found: {path}")
    config = read_config(path)
    bin_path = path / WEIGHTS_NAME
    if not bin_path.is_file():
        raise FileNotFoundError(f"{path}: no {WEIGHTS_NAME}")
    with open(bin_path, "rb") as fh:
        head = fh.read(64)
    if not torch_file.sniff(head):
        raise ValueError(f"{bin_path}: not a torch.save file (first bytes {head[:12]!r})")
    state = torch_file.load_state_dict(bin_path)  # torch.load(weights_only=True)

    expected = reference_shapes(config)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [f"{k}: file {tuple(state[k].shape)} vs config {expected[k]}"
                  for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or mis_shaped:
        raise ValueError(
            f"{bin_path}: weights do not match {CONFIG_NAME} (every tensor must be used, none "
            f"missing): {len(missing)} missing {_few(missing)}, {len(unexpected)} unexpected "
            f"{_few(unexpected)}, {len(mis_shaped)} mis-shaped {_few(mis_shaped)}")
    not_float = [k for k, v in state.items() if not v.is_floating_point()]
    if not_float:
        raise ValueError(f"{bin_path}: non-floating tensors {_few(not_float)}")
    bad = [k for k, v in state.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{bin_path}: non-finite (NaN/inf) weights in {_few(bad)}")
    eps = config["eps"]
    neg = [k for k, v in state.items() if k.endswith("running_vars") and bool((v + eps <= 0).any())]
    if neg:
        raise ValueError(f"{bin_path}: variances with var + eps <= 0 in {_few(neg)}")

    with torch.device("meta"):
        names = _spectral_norm_modules(BigGANDeep(**config))
    folded = {f"{n}.weight_{s}" for n in names for s in ("orig", "u", "v")}
    out = {k: v.float() for k, v in state.items() if k not in folded}
    for name in names:
        w, sigma = fold_spectral_norm(state[f"{name}.weight_orig"].float(),
                                      state[f"{name}.weight_u"], state[f"{name}.weight_v"])
        if not sigma > 0:
            raise ValueError(f"{bin_path}: {name}: spectral-norm estimate σ = u·(W v) = {sigma:.3g}"
                             " is not positive; its weight_u/weight_v are not power-iteration "
                             "vectors (run the reference model in train() mode before saving)")
        out[f"{name}.weight"] = w
    return out, config
