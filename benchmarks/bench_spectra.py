"""Time exact vs projected vs top-k log singular values on a small LeakyReLU conv generator.

    python benchmarks/bench_spectra.py                 # CPU, < 1 min
    python benchmarks/bench_spectra.py --device cuda --batch 64 --width 128

Ratios are against the ``exact`` baseline measured in this process (best of ``--repeats`` after
one warm-up call each); absolute seconds are printed for information only. Also prints how far
the top-k estimate is from the exact top-k (max |Δ log σ|), each method's ``memory_plan`` (chunk,
block and estimated peak MiB within ``--memory`` MiB, default the library's budget) and, on CUDA,
the measured peak allocated MiB; writes everything as JSON with ``--json PATH``.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from magnet_lab.provenance import write_results
from magnet_lab.spectra import SpectraOptions, SpeedOptions, log_singular_values, memory_plan


class ConvGenerator(nn.Module):
    """z [B, d] -> image [B, 3, 32, 32]: linear to 4x4, three LeakyReLU upsampling convs."""

    def __init__(self, d: int, width: int):
        super().__init__()
        self.width = width
        self.fc = nn.Linear(d, width * 16)
        layers: list[nn.Module] = []
        for _ in range(3):  # 4 -> 8 -> 16 -> 32
            layers += [nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2),
                       nn.Conv2d(width, width, 3, padding=1)]
        self.body = nn.Sequential(*layers, nn.LeakyReLU(0.2), nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(len(z), self.width, 4, 4)  # [B, width, 4, 4]
        return self.body(x)  # [B, 3, 32, 32]


def _best_time(fn, repeats: int, device: str) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up (first forward-AD use loads decompositions)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--batch", type=int, default=4, help="latents per timed call")
    ap.add_argument("--z-dim", type=int, default=64)
    ap.add_argument("--width", type=int, default=32, help="conv channels")
    ap.add_argument("--proj-dim", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--oversample", type=int, default=8)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory", type=int, default=None, help="budget per call in MiB")
    ap.add_argument("--json", default=None, help="write options and results here")
    args = ap.parse_args()

    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    G = ConvGenerator(args.z_dim, args.width).to(args.device, dtype).eval()
    z = torch.randn(args.batch, args.z_dim, generator=torch.Generator().manual_seed(args.seed))
    z = z.to(args.device, dtype)
    speed = SpeedOptions(progress=False,
                         memory=None if args.memory is None else args.memory << 20)
    runs = {
        "exact": SpectraOptions("exact", seed=args.seed),
        "projected": SpectraOptions("projected", proj_dim=args.proj_dim, seed=args.seed),
        "topk": SpectraOptions("topk", k=args.k, oversample=args.oversample, tol=args.tol,
                               seed=args.seed),
    }
    results = {}
    for name, options in runs.items():
        plan = memory_plan(G, z, options, speed=speed)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
        seconds, log_sv = _best_time(lambda: log_singular_values(G, z, options, speed=speed),
                                     args.repeats, args.device)
        results[name] = {"seconds": seconds, "log_sv": log_sv, "chunk": plan.chunk,
                         "block": plan.block, "estimate_mib": plan.estimate / 2**20,
                         "budget_mib": plan.budget / 2**20}
        if args.device == "cuda":
            results[name]["peak_mib"] = (torch.cuda.max_memory_allocated() - start) / 2**20
    base = results["exact"]["seconds"]
    exact_top = results["exact"]["log_sv"][:, :args.k]
    D = 3 * 32 * 32
    print(f"generator: conv, d={args.z_dim}, D={D}, width={args.width}, batch={args.batch}, "
          f"{args.dtype} on {args.device}, torch {torch.__version__}")
    print(f"{'method':<10} {'time/exact':>10} {'seconds':>9} {'max|dlog sv| top-k vs exact':>28} "
          f"{'chunk':>6} {'block':>6} {'est. MiB':>9} {'peak MiB':>9}")
    for name, res in results.items():
        err = (res["log_sv"][:, :args.k] - exact_top).abs().max().item()
        res["ratio_to_exact"] = res["seconds"] / base
        res["max_abs_dlog_sv_topk"] = err
        peak = f"{res['peak_mib']:>9.1f}" if "peak_mib" in res else f"{'-':>9}"
        print(f"{name:<10} {res['ratio_to_exact']:>10.3f} {res['seconds']:>9.3f} {err:>28.2e} "
              f"{res['chunk']:>6} {res['block']:>6} {res['estimate_mib']:>9.1f} {peak}")
    print(f"(budget {results['exact']['budget_mib']:.0f} MiB per call; est. = memory_plan's "
          f"estimate)")
    print("(projected is a sketch of the spectrum: its σ(PJ) are not σ(J), so its gap is expected)")
    if args.json:
        summary = {n: {k: v for k, v in r.items() if k != "log_sv"} for n, r in results.items()}
        write_results(args.json, {"timings": summary}, seed=args.seed, parameters=vars(args))


if __name__ == "__main__":
    main()
