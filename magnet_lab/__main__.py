"""Command line: ``python -m magnet_lab COMMAND``.

  report   execute every numbered notebook with papermill (executed copies + results JSON into
           reports/, figures into figures/); ``--smoke`` for the cheap test mode.
  bank     build a volume bank (log σ per latent) for a generator, sharded and resumable.
  sample   draw MaGNET / polarity samples from a bank and save them as an image grid + indices.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _cmd_report(args: argparse.Namespace) -> int:
    from . import paths, reports

    keys = args.only.split(",") if args.only else [p.stem for p in reports.notebooks()]
    for key in keys:
        t0 = time.perf_counter()
        params = {"smoke": True} if args.smoke else {}
        params.update(dict(kv.split("=", 1) for kv in args.param))
        out = Path(args.out) if args.out else paths.reports_dir()
        params.setdefault("results_path", str(out / f"{reports.find_notebook(key).stem}.json"))
        reports.run_notebook(key, params, out_dir=out, progress=args.progress)
        print(f"[report] {key}: ok in {time.perf_counter() - t0:.0f} s -> "
              f"{params['results_path']}", flush=True)
    return 0


def _cmd_bank(args: argparse.Namespace) -> int:
    import torch

    from . import bank, sampling
    from .registry import load_generator

    worker = tuple(int(x) for x in args.worker.split("/")) if args.worker else None
    G = load_generator(args.generator, device=args.device, dtype=getattr(torch, args.dtype))
    z = sampling.gaussian_latents(args.n, G.z_dim, seed=args.seed).to(args.device)
    vb = bank.build(G, z, args.out, shard_size=args.shard_size, generator_id=args.generator,
                    method=args.method, k=args.top_k, proj_dim=args.proj_dim, seed=args.seed,
                    chunk=args.chunk, dtype=getattr(torch, args.dtype), worker=worker)
    print(f"[bank] {len(vb)} latents, log σ {tuple(vb.log_sv.shape)} -> {args.out}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from . import bank, plots, provenance, sampling
    from .registry import load_generator

    vb = bank.VolumeBank.load(args.bank)
    if vb.latents is None:
        raise SystemExit(f"bank {args.bank} stores no latents; cannot regenerate images")
    log_w = sampling.log_weights(vb.log_sv, args.rho, top_k=args.top_k)
    sampling.check_ess(log_w)
    idx = sampling.resample(log_w, args.n, replace=False,
                            rng=torch.Generator().manual_seed(args.seed))
    G = load_generator(args.generator or vb.meta.get("generator_id"))
    with torch.no_grad():
        images = G(vb.latents[idx].to(next(G.parameters()).dtype))
    out = Path(args.out)
    fig, ax = plt.subplots(figsize=(8, 8))
    plots.show_images(ax, images, nrow=int(args.n ** 0.5) or 1, title=f"ρ = {args.rho}")
    params = {k: v for k, v in vars(args).items() if k != "func"} | {"bank": str(args.bank)}
    plots.save_figure(fig, out.stem, params, directory=out.parent)
    provenance.write_json_atomic(out.with_suffix(".indices.json"),
                                 {"indices": idx, "rho": args.rho, "top_k": args.top_k,
                                  "seed": args.seed, "bank": str(args.bank)})
    print(f"[sample] {args.n} samples at rho={args.rho} -> {out.with_suffix('.png')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit status."""
    p = argparse.ArgumentParser(prog="python -m magnet_lab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("report", help="execute the notebooks with papermill")
    r.add_argument("--smoke", action="store_true", help="cheap test mode")
    r.add_argument("--only", help="comma-separated notebook keys, e.g. 01,03")
    r.add_argument("--out", help="folder for executed notebooks and results (default reports/)")
    r.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="extra notebook parameter (string value), repeatable")
    r.add_argument("--progress", action="store_true", help="show progress bars")
    r.set_defaults(func=_cmd_report)

    b = sub.add_parser("bank", help="build a volume bank for a generator")
    b.add_argument("--generator", default="fmnist-dcgan", help="built-in name or weights path")
    b.add_argument("--n", type=int, default=10_000, help="number of Gaussian candidates")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--method", default="exact", choices=["exact", "projected", "topk"])
    b.add_argument("--top-k", type=int, default=None)
    b.add_argument("--proj-dim", type=int, default=128)
    b.add_argument("--chunk", type=int, default=None, help="latents per Jacobian batch")
    b.add_argument("--shard-size", type=int, default=1000)
    b.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    b.add_argument("--device", default="cpu")
    b.add_argument("--worker", help="I/N: compute only shards I, I+N, ... (scale-out; run N "
                   "processes on the same --out, then load the directory)")
    b.add_argument("--out", required=True, help="bank directory (shards; resumable)")
    b.set_defaults(func=_cmd_bank)

    s = sub.add_parser("sample", help="MaGNET / polarity samples from a bank")
    s.add_argument("--bank", required=True)
    s.add_argument("--generator", default=None, help="default: the bank's generator id")
    s.add_argument("--rho", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output stem, e.g. figures/magnet_samples")
    s.set_defaults(func=_cmd_sample)

    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
