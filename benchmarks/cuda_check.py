"""On a CUDA machine: do spectra's results, memory plan and out-of-memory retry hold on the GPU?

    python benchmarks/cuda_check.py --json reports/cuda_check.json

Needs only torch, safetensors and tqdm (no notebooks, no metrics). On the embedded DCGAN:
(1) exact and projected log σ on CUDA in float64 and float32 (TF32 left at torch's default, and
off) against the CPU float64 reference — max |Δ log σ| over the top-10 and all σ; (2) the memory
plan chosen from the free GPU memory for a default 1024-latent projected float32 shard, and the
measured ``torch.cuda.max_memory_allocated`` of that call against the plan's estimate, with its
wall time; (3) the out-of-memory retry: the process is limited to a small share of the GPU and
given a budget far above it, so the first chunk must fail and be retried smaller; the result
must equal an unconstrained run. Absolute times are information only.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

import magnet_lab
from magnet_lab import sampling, spectra


def _max_diff(a: torch.Tensor, b: torch.Tensor, k: int | None = None) -> float:
    a, b = (a[:, :k], b[:, :k]) if k else (a, b)
    finite = torch.isfinite(a) & torch.isfinite(b)
    return float((a[finite] - b[finite]).abs().max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="latents for the accuracy comparison")
    p.add_argument("--shard", type=int, default=1024, help="latents of the timed shard")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("cuda_check needs a CUDA device")
    out: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}

    G64 = magnet_lab.load_generator("fmnist-dcgan", dtype=torch.float64)
    z = sampling.gaussian_latents(args.n, G64.z_dim, seed=0, dtype=torch.float64)
    quiet = spectra.SpeedOptions(progress=False)
    methods = {m: spectra.SpectraOptions(m) for m in ("exact", "projected")}
    ref = {m: spectra.log_singular_values(G64, z, o, speed=quiet) for m, o in methods.items()}
    acc = {}
    for tf32 in (True, False):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for dtype in (torch.float64, torch.float32):
            G = magnet_lab.load_generator("fmnist-dcgan", device="cuda", dtype=dtype)
            for m, options in methods.items():
                got = spectra.log_singular_values(G, z.to("cuda", dtype), options, speed=quiet)
                key = f"{m}/{str(dtype)[6:]}/tf32={'on' if tf32 else 'off'}"
                acc[key] = {"top10": _max_diff(got, ref[m], 10), "all": _max_diff(got, ref[m])}
                print(f"{key:32s} max|Δ log σ| top-10 {acc[key]['top10']:.2e}, "
                      f"all {acc[key]['all']:.2e}")
    out["accuracy_vs_cpu_float64"] = acc
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    G = magnet_lab.load_generator("fmnist-dcgan", device="cuda", dtype=torch.float32)
    zs = sampling.gaussian_latents(args.shard, G.z_dim, seed=1).to("cuda")
    plan = spectra.memory_plan(G, zs, methods["projected"])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    spectra.log_singular_values(G, zs, methods["projected"], speed=quiet)
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() - base
    out["shard"] = {"n": args.shard, "chunk": plan.chunk, "block": plan.block,
                    "budget_bytes": plan.budget, "estimate_bytes": plan.estimate,
                    "peak_allocated_bytes": peak, "seconds": wall,
                    "seconds_per_latent": wall / args.shard}
    print(f"projected float32 shard of {args.shard}: chunk {plan.chunk} x block {plan.block}, "
          f"estimate {plan.estimate / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB, "
          f"{wall:.1f} s ({wall / args.shard * 1e3:.2f} ms/latent)")

    z_small = zs[:256]
    reference = spectra.log_singular_values(G, z_small, methods["projected"],
                                            speed=quiet.replace(chunk=8, block=16))
    free, total = torch.cuda.mem_get_info()
    fraction = 1.5 * 2**30 / total  # this process may use about 1.5 GiB of the card
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(fraction)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = spectra.log_singular_values(G, z_small, methods["projected"],
                                          speed=quiet.replace(memory=64 * 2**30))
    torch.cuda.set_per_process_memory_fraction(1.0)
    retried = [str(w.message) for w in caught if "out of memory" in str(w.message).lower()
               or "retr" in str(w.message).lower()]
    out["oom_retry"] = {"fraction": fraction, "warnings": retried,
                        "max_abs_diff_vs_unconstrained": _max_diff(got, reference)}
    print(f"OOM retry: {len(retried)} warning(s) {retried[:1]}; max|Δ| vs unconstrained "
          f"{out['oom_retry']['max_abs_diff_vs_unconstrained']:.2e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
