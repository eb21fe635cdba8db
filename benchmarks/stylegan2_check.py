"""Our StyleGAN2 at a real size: grouped vs shared modulation agree, and what they cost.

    python benchmarks/stylegan2_check.py --device cuda --res 1024 --json reports/sg2.json
    python benchmarks/stylegan2_check.py --res 64          # CPU, a minute or two

Builds ``StyleGAN2Generator`` with config-f channels (channel_base 32768, channel_max 512,
z/w 512, 8 mapping layers) and random seeded weights (cost and agreement do not depend on them),
then on the same latents: the max |grouped − shared| image difference relative to the image's
scale (float32, TF32 off, and float64 at small resolutions), one forward per latent, and one
vmapped ``--dirs``-direction VJP per latent in each modulation form, timed after a warm-up with
the shared form as the baseline (ratios are the result; seconds are information only).
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch.func import vjp, vmap

from magnet_lab.models.stylegan2 import StyleGAN2Generator


def _time(fn, device: str, repeats: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dirs", type=int, default=16, help="VJP directions vmapped at once")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    cfg = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=args.res, img_channels=3)
    G = StyleGAN2Generator(**cfg).to(args.device).eval().requires_grad_(False)
    z = torch.randn(args.batch, 512, generator=torch.Generator().manual_seed(1)).to(args.device)
    out: dict = {"res": args.res, "device": args.device, "batch": args.batch, "dirs": args.dirs,
                 "torch": torch.__version__,
                 "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}
    forms = {m: G.with_options(modulation=m) for m in ("shared", "grouped")}
    with torch.no_grad():
        x = {m: g(z) for m, g in forms.items()}
    scale = float(x["shared"].abs().max())
    out["float32_max_abs_diff_over_scale"] = float((x["shared"] - x["grouped"]).abs().max()) / scale
    if args.res <= 64:
        G64 = StyleGAN2Generator(**cfg).to(args.device, torch.float64).eval().requires_grad_(False)
        G64.load_state_dict(G.state_dict())
        with torch.no_grad():
            a, b = (G64.with_options(modulation=m)(z.double()) for m in ("shared", "grouped"))
        out["float64_max_abs_diff_over_scale"] = float((a - b).abs().max() / a.abs().max())
    print({k: v for k, v in out.items() if "diff" in k})

    timings = {}
    for m, g in forms.items():
        with torch.no_grad():
            t_fwd = _time(lambda: g(z), args.device)
        y, pull = vjp(lambda v: g(v).reshape(len(v), -1), z)
        u = torch.randn(args.dirs, *y.shape, device=args.device)
        t_vjp = _time(lambda: vmap(lambda c: pull(c)[0])(u), args.device, repeats=2)
        timings[m] = {"forward_s_per_latent": t_fwd / args.batch,
                      "vjp_s_per_latent_per_direction": t_vjp / (args.batch * args.dirs)}
    base = timings["shared"]["vjp_s_per_latent_per_direction"]
    for m in timings:
        timings[m]["vjp_ratio_to_shared"] = timings[m]["vjp_s_per_latent_per_direction"] / base
        print(m, {k: round(v, 5) for k, v in timings[m].items()})
    out["timings"] = timings
    if args.device == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
