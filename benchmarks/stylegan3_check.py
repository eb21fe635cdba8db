"""Our StyleGAN3 against NVIDIA's own code: the same pickles, the same images (CPU).

    python benchmarks/stylegan3_check.py --official /root/scratch/stylegan3 \\
        --json benchmarks/results/stylegan3_check_cpu.json

``--official`` is a checkout of NVlabs/stylegan3 kept OUTSIDE this repository (its licence is
non-commercial; nothing of it is imported at module level here or copied anywhere). The script
puts that folder on ``sys.path`` and, with NVIDIA's code:

1. builds small random-weight generators — config T, config R, and a conditional T — with every
   parameter and buffer that training would move (biases, the input affine, ``magnitude_ema``,
   ``w_avg``) randomised, pickles each as its training loop writes a snapshot (a dict with ``G``,
   ``D``, ``G_ema``, ``augment_pipe``, ``training_set_kwargs``, networks copied, ``eval()``,
   ``requires_grad_(False)``, on the CPU);
2. renders the same z (and one-hot c) at ψ = 1 and 0.7 with NVIDIA's ``G_ema`` (its custom ops
   fall back to their reference PyTorch implementations off-CUDA, in float32), as a batch and
   one latent at a time;
3. loads each pickle with ``magnet_lab.load_generator`` (our restricted reader: nothing of the
   file is executed) in float32 and float64 and records max |ours − theirs| / max |theirs|;
4. checks our layer schedule and state-dict shapes against NVIDIA's networks built at full size
   (T-512, T-1024, R-1024), and our freshly designed filters against the buffers they hold;
5. times, for information, our loading and float32 forward of a T-512-sized random model, and
   runs a 256² T model in float64.

On a current setuptools the official ``conv2d_gradfix`` imports ``pkg_resources``; when that is
missing a stand-in module with ``parse_version`` (``packaging.version.parse``) is registered.
"""
from __future__ import annotations

import argparse
import copy
import json
import pickle
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

import magnet_lab
from magnet_lab.models.stylegan3 import StyleGAN3Generator, input_transform, state_shapes

SMALL = {  # name -> (official Generator kwargs, c_dim); z_dim = w_dim = 64
    "T": (dict(img_resolution=64, channel_base=2048, channel_max=64), 0),
    "R": (dict(img_resolution=64, channel_base=4096, channel_max=128, conv_kernel=1,
               use_radial_filters=True), 0),
    "T-conditional": (dict(img_resolution=32, channel_base=2048, channel_max=64), 5),
}
FULL = {"T-512": dict(img_resolution=512),
        "T-1024": dict(img_resolution=1024),
        "R-1024": dict(img_resolution=1024, channel_base=65536, channel_max=1024, conv_kernel=1,
                       use_radial_filters=True)}


def _import_official(root: Path) -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """NVIDIA's networks_stylegan3, networks_stylegan2 and augment modules from ``root``."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from packaging.version import parse
        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    sys.path.insert(0, str(root))
    import importlib
    return tuple(importlib.import_module(f"training.{m}")  # type: ignore[return-value]
                 for m in ("networks_stylegan3", "networks_stylegan2", "augment"))


def _randomise(G: torch.nn.Module, seed: int) -> None:
    """Move what training moves away from its initial value, so every term is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("input.affine.weight"):  # initialised to 0: no rotation/translation
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.add_(0.2 * torch.randn(p.shape, generator=g))
        for name, b in G.named_buffers():
            if name.endswith("magnitude_ema"):
                b.copy_(torch.rand([], generator=g) + 0.5)
            elif name.endswith("w_avg"):
                b.copy_(torch.randn(b.shape, generator=g))


def _snapshot(path: Path, G: torch.nn.Module, D: torch.nn.Module, aug: torch.nn.Module | None,
              resolution: int) -> None:
    """Pickle as the official training loop does (a deep copy of each network, eval, frozen)."""
    data = dict(G=G, D=D, G_ema=copy.deepcopy(G), augment_pipe=aug,
                training_set_kwargs=dict(path="dataset.zip", resolution=resolution, max_size=None))
    for key, value in data.items():
        if isinstance(value, torch.nn.Module):
            data[key] = copy.deepcopy(value).eval().requires_grad_(False).cpu()
    with open(path, "wb") as fh:
        pickle.dump(data, fh)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| relative to the image scale max |b| (b: NVIDIA's image)."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def compare_small(n3, n2, aug_mod, tmp: Path) -> dict:
    out = {}
    for i, (name, (kw, c_dim)) in enumerate(SMALL.items()):
        torch.manual_seed(i)
        G = n3.Generator(z_dim=64, c_dim=c_dim, w_dim=64, img_channels=3,
                         magnitude_ema_beta=0.5 ** (32 / 2e4), **kw).eval().requires_grad_(False)
        _randomise(G, 100 + i)
        D = n2.Discriminator(c_dim=c_dim, img_resolution=kw["img_resolution"], img_channels=3,
                             channel_base=1024, channel_max=32)
        aug = aug_mod.AugmentPipe(xflip=1, rotate90=1, xint=1)
        pkl = tmp / f"stylegan3-{name}.pkl"
        _snapshot(pkl, G, D, aug, kw["img_resolution"])
        with open(pkl, "rb") as fh:  # NVIDIA's own loader, for their side
            theirs = pickle.load(fh)["G_ema"]
        t0 = time.perf_counter()
        ours32 = magnet_lab.load_generator(pkl)
        load_s = time.perf_counter() - t0
        ours64 = magnet_lab.load_generator(pkl, dtype=torch.float64)
        z = torch.randn(4, 64, generator=torch.Generator().manual_seed(7))
        c = torch.nn.functional.one_hot(torch.arange(4) % c_dim, c_dim).float() if c_dim else None
        rec: dict = {"official_kwargs": kw, "c_dim": c_dim, "layers": theirs.synthesis.layer_names,
                     "our_load_s": load_s}
        for psi in (1.0, 0.7):
            with torch.no_grad():
                a = theirs(z, c, truncation_psi=psi, noise_mode="const")  # [4, 3, R, R]
                a1 = torch.cat([theirs(z[j:j + 1], None if c is None else c[j:j + 1],
                                       truncation_psi=psi, noise_mode="const") for j in range(4)])
                b32 = ours32(z, c, psi=psi)
                b64 = ours64(z.double(), None if c is None else c.double(), psi=psi)
            rec[f"psi={psi}"] = {
                "image_scale": float(a.abs().max()),
                "float32_vs_official_batch": _rel(b32, a),
                "float32_vs_official_one_at_a_time": _rel(b32, a1),
                "float64_vs_official_batch": _rel(b64, a),
                "float64_vs_official_one_at_a_time": _rel(b64, a1),
                "official_batch_vs_one_at_a_time": _rel(a, a1),
            }
        if name == "T":  # a user transform in the official buffer (as gen_images.py sets it)
            m = np.array(input_transform(translate=(0.1, -0.05), rotate_deg=10.0))
            theirs.synthesis.input.transform.copy_(torch.from_numpy(m))
            with torch.no_grad():
                a = theirs(z, c, truncation_psi=1.0, noise_mode="const")
                b = ours64(z.double(), transform=m)
            rec["transform_float64_vs_official"] = _rel(b, a)
        fresh = StyleGAN3Generator(**ours32.config())  # our own filter design
        diffs = [float((fresh.state_dict()[k] - v).abs().max())
                 for k, v in theirs.state_dict().items() if k.endswith("_filter")]
        rec["designed_filters_max_abs_diff"] = max(diffs)
        out[name] = rec
        print(name, {k: v for k, v in rec.items() if k.startswith(("psi", "transform", "designed"))})
    return out


def compare_full(n3) -> dict:
    out = {}
    for name, kw in FULL.items():
        torch.manual_seed(0)
        G = n3.Generator(z_dim=512, c_dim=0, w_dim=512, img_channels=3, **kw)
        theirs = {k: tuple(v.shape) for k, v in G.state_dict().items()}
        syn = {k: v for k, v in kw.items() if k != "img_resolution"}
        cfg = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=kw["img_resolution"],
                   img_channels=3, synthesis_kwargs=syn)
        ours = state_shapes(cfg)
        fresh = StyleGAN3Generator(**cfg)
        filt = max(float((fresh.state_dict()[k] - v).abs().max())
                   for k, v in G.state_dict().items() if k.endswith("_filter"))
        out[name] = {"layers": G.synthesis.layer_names, "state_shapes_equal": ours == theirs,
                     "designed_filters_max_abs_diff": filt,
                     "parameters": sum(p.numel() for p in G.parameters())}
        print(name, out[name]["state_shapes_equal"], filt, G.synthesis.layer_names)
        if name == "T-512":
            out[name]["timing"] = time_t512(G)
        del G, fresh
    return out


def time_t512(G_official: torch.nn.Module) -> dict:
    """Our load time and float32 forward time per image for a T-512 random model (information)."""
    with tempfile.TemporaryDirectory() as d:
        pkl = Path(d) / "stylegan3-t-512.pkl"
        with open(pkl, "wb") as fh:
            pickle.dump(dict(G_ema=copy.deepcopy(G_official).eval().requires_grad_(False)), fh)
        t0 = time.perf_counter()
        G = magnet_lab.load_generator(pkl)
        load_s = time.perf_counter() - t0
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        G(z)  # warm-up
        t0 = time.perf_counter()
        for _ in range(2):
            x = G(z)
        fwd = (time.perf_counter() - t0) / 2
    print(f"T-512: load {load_s:.2f} s, forward {fwd:.2f} s per image (float32, CPU)")
    return {"load_s": load_s, "forward_s_per_image_float32": fwd, "image_shape": list(x.shape),
            "threads": torch.get_num_threads()}


def run_t256_float64() -> dict:
    torch.manual_seed(0)
    G = StyleGAN3Generator(512, 0, 512, 256, 3).double().eval().requires_grad_(False)
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t0 = time.perf_counter()
    with torch.no_grad():
        x = G(z)
    rec = {"shape": list(x.shape), "dtype": str(x.dtype), "finite": bool(torch.isfinite(x).all()),
           "forward_s": time.perf_counter() - t0}
    print("T-256 float64:", rec)
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", required=True, type=Path,
                   help="a checkout of NVlabs/stylegan3 outside this repository")
    p.add_argument("--json", default=None)
    p.add_argument("--official-commit", default=None, help="the checkout's commit, recorded")
    p.add_argument("--skip-full", action="store_true", help="skip the full-size T/R checks")
    args = p.parse_args()
    if not (args.official / "training" / "networks_stylegan3.py").is_file():
        raise SystemExit(f"{args.official}: not a NVlabs/stylegan3 checkout")
    n3, n2, aug = _import_official(args.official.resolve())
    out: dict = {"torch": torch.__version__, "device": "cpu", "official_commit": args.official_commit,
                 "target": "max |ours - official| / max |official| <= 1e-5"}
    with tempfile.TemporaryDirectory() as d:
        out["small"] = compare_small(n3, n2, aug, Path(d))
    worst = max(v for rec in out["small"].values() for k, r in rec.items() if k.startswith("psi")
                for name, v in r.items() if name.startswith("float32_vs_official_batch"))
    out["max_float32_vs_official_batch"] = worst
    print(f"max float32 |ours - official| / image scale: {worst:.2e}")
    if not args.skip_full:
        out["full"] = compare_full(n3)
        out["t256_float64"] = run_t256_float64()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
