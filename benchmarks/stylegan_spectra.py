"""Jacobian spectra of our StyleGAN2 or StyleGAN3 (published channel layouts, random seeded
weights): ours vs a baseline. The code behind ``bench_stylegan2.py`` and ``bench_stylegan3.py``
(their docstrings give the commands); ``--arch`` picks the generator either way.

One process, the same latents ``z`` and the same projection P [proj_dim, D] for every method:

* ``baseline``  what a user would port from the authors' TF1 code: ``torch.autograd.functional
                .jacobian`` of z ↦ Σ_batch P·vec(G(z)) (proj_dim backward passes for the whole
                batch, batch samples being independent), then the SVD of each P·J.
* ``projected`` ``spectra.log_singular_values(method="projected")`` at each precision asked.
* ``topk``      ``method="topk"`` with k = ``--k`` (σ(J) itself, not σ(P·J)), at each ``--tol``.
* ``exact``     the full J, where J fits in ``--exact-mib``.

Cost does not depend on the weights, so random ones time the real thing. The generator is
``--arch stylegan2`` (config-f: channel_base 32768, channel_max 512) or ``stylegan3`` with
``--config t`` (channel_base 32768, channel_max 512, 3×3 convolutions) or ``r`` (65536, 1024,
1×1 convolutions, radial filters), at ``--width`` times those channel counts (``--channel-base``
/ ``--channel-max`` set them outright), z and w 512, 3 channels, ``--res``². Each method gets one
warm-up call (which also pays the cached P and counts the method's JVP/VJP products per latent),
then the best of ``--repeats``; reported per method: seconds per latent, products per latent,
forward-pass equivalents (÷ the forward time per latent), the ratio to the
baseline (the result; absolute seconds are information), peak memory (CUDA: allocator peak;
CPU: ``memory_plan``'s estimate), and accuracy against a float64 reference of the same quantity
computed on the same device: the error of the top-``--k`` log-volume Σ_{i≤k} log σ_i (max
absolute, and relative to the reference's magnitude), the Spearman rank correlation of the
log-volume across latents, and the share of a MaGNET selection (weights ∝ volume, Gumbel-top-N/4
with the same noise) kept. The float64 reference of ``baseline``/``projected`` is ``projected``
in float64; of ``topk``, ``exact`` in float64 where it fits, else ``topk`` in float64 at tol 1e-9.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from pathlib import Path

import torch
from scipy import stats

from magnet_lab import sampling, spectra
from magnet_lab.models.stylegan2 import StyleGAN2Generator
from magnet_lab.models.stylegan3 import CONFIGS, SYNTHESIS_DEFAULTS, StyleGAN3Generator
from magnet_lab.provenance import write_results


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int) -> tuple[float, torch.Tensor, float | None]:
    """(best seconds over ``repeats``, last output, CUDA peak MiB or None); the caller warms up."""
    best, out = float("inf"), None
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else None
    return best, out, peak


def baseline_log_sv(G: torch.nn.Module, z: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """log σ(P·J) [B, proj_dim] by ``torch.autograd.functional.jacobian`` (one backward pass per
    row of P, over the whole batch) and a float64 SVD: the port of the authors' TF1 loop."""
    def projected(zb: torch.Tensor) -> torch.Tensor:
        return (G(zb).reshape(len(zb), -1) @ P.T).sum(0)  # [proj_dim]: rows are independent

    J = torch.autograd.functional.jacobian(projected, z)  # [proj_dim, B, d]
    return torch.linalg.svdvals(J.permute(1, 0, 2).double()).log().cpu()  # [B, proj_dim]


def _accuracy(lsv: torch.Tensor, ref: torch.Tensor, k: int, seed: int) -> dict:
    """Top-k log-volume error, rank correlation and MaGNET-selection overlap vs ``ref``."""
    vol, vol_ref = lsv[:, :k].sum(1), ref[:, :k].sum(1)  # [N]
    err = (vol - vol_ref).abs()
    n_pick = max(len(vol) // 4, 1)
    picks = [set(sampling.resample(sampling.log_weights(x, 1.0, top_k=k), n_pick,
                                   rng=torch.Generator().manual_seed(seed)).tolist())
             for x in (lsv, ref)]
    rho = stats.spearmanr(vol, vol_ref).statistic if len(vol) > 2 else float("nan")
    return {"max_abs_dlog_volume": float(err.max()),
            "max_rel_dlog_volume": float((err / vol_ref.abs().clamp_min(1e-300)).max()),
            "max_abs_dlog_sv": float((lsv[:, :k] - ref[:, :k]).abs().max()),
            "spearman_log_volume": float(rho),
            "magnet_pick_overlap": len(picks[0] & picks[1]) / n_pick}


ARCHS = ("stylegan2", "stylegan3")


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere) and the
    number of cores this process may use."""
    name = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores"


def forward_gflop(G: torch.nn.Module, z_dim: int = 512) -> float:
    """GFLOP of one forward pass of ``G`` per latent, counted by ``torch.utils.flop_counter``
    (matrix products and convolutions, the FIR filters included) on a copy of G on the meta
    device: shapes only, seconds even at 1024², the same on every device. A VJP costs as much
    again (the transposed products)."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(G).to("meta")
    with FlopCounterMode(display=False) as count:  # vmapped: a traced input needs no .item()
        torch.func.vmap(meta)(torch.zeros(1, z_dim, device="meta"))
    return count.get_total_flops() / 1e9


def published_channels(arch: str, config: str) -> tuple[int, int]:
    """(channel_base, channel_max) of the published layout: StyleGAN2 config-f, StyleGAN3 T or R."""
    if arch == "stylegan2":
        return 32768, 512
    sk = {**SYNTHESIS_DEFAULTS, **CONFIGS[config.upper()]}
    return sk["channel_base"], sk["channel_max"]


def build_generator(arch: str, config: str, res: int, channel_base: int, channel_max: int,
                    seed: int) -> torch.nn.Module:
    """Our ``arch`` generator (z, w 512; 3 × ``res``²; StyleGAN3 ``config`` "t" or "r") with the
    given channel counts and weights drawn from ``torch.manual_seed(seed)``, in eval mode and
    frozen. Raises ValueError for an unknown arch or config."""
    if arch not in ARCHS:
        raise ValueError(f"--arch must be one of {ARCHS}, got {arch!r}")
    torch.manual_seed(seed)
    widths = dict(channel_base=channel_base, channel_max=channel_max)
    if arch == "stylegan2":
        G = StyleGAN2Generator(512, 0, 512, res, 3, synthesis_kwargs=widths)
    else:
        if config.upper() not in CONFIGS:
            raise ValueError(f"--config must be t or r, got {config!r}")
        G = StyleGAN3Generator(512, 0, 512, res, 3,
                               synthesis_kwargs={**CONFIGS[config.upper()], **widths})
    return G.eval().requires_grad_(False)


def main(doc: str = __doc__, arch: str = "stylegan2", width: float = 1.0, res: int = 32,
         argv: list[str] | None = None) -> None:
    """Parse ``argv`` (``doc``'s first line as the description; ``arch``, ``width`` and ``res``
    the defaults of ``--arch``, ``--width`` and ``--res``), run the benchmark, print it and
    write ``--json``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--arch", default=arch, choices=ARCHS)
    ap.add_argument("--config", default="t", choices=["t", "r"], help="StyleGAN3 config")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--res", type=int, default=res, help="image resolution (power of 2)")
    ap.add_argument("--latents", type=int, default=4, help="latents per timed call")
    ap.add_argument("--proj-dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=30, help="top-k singular values (log-volume)")
    ap.add_argument("--tol", default="0.1,1e-3",
                    help="comma list of topk tolerances, one topk run each")
    ap.add_argument("--precisions", default=None,
                    help="comma list of spectra.PRECISIONS for projected (default: highest on "
                         "CPU, where bf16 autocast is slower; highest,tf32,bf16 on CUDA)")
    ap.add_argument("--methods", default="baseline,projected,topk,exact",
                    help="comma list of baseline, projected, topk, exact; forward alone times "
                         "the forward pass only (no float64 references: full sizes on a CPU)")
    ap.add_argument("--width", type=float, default=width,
                    help="fraction of the published channel counts (StyleGAN2 config-f 32768/512,"
                         " StyleGAN3 T 32768/512, R 65536/1024)")
    ap.add_argument("--channel-base", type=int, default=None, help="overrides --width")
    ap.add_argument("--channel-max", type=int, default=None, help="overrides --width")
    ap.add_argument("--exact-mib", type=int, default=1024, help="run exact if J fits in this")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    base, top = published_channels(args.arch, args.config)
    args.channel_base = args.channel_base or round(base * args.width)
    args.channel_max = args.channel_max or round(top * args.width)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev, f32, f64 = args.device, torch.float32, torch.float64
    precisions = (args.precisions.split(",") if args.precisions
                  else ["highest"] if dev == "cpu" else ["highest", "tf32", "bf16"])
    methods = args.methods.split(",")

    G = build_generator(args.arch, args.config, args.res, args.channel_base, args.channel_max,
                        args.seed).to(dev)
    z = sampling.gaussian_latents(args.latents, 512, seed=args.seed + 1).to(dev)  # [N, 512]
    D, d = 3 * args.res ** 2, 512
    hw = torch.cuda.get_device_name() if dev == "cuda" else cpu_name()
    name = "StyleGAN2" if args.arch == "stylegan2" else f"StyleGAN3-{args.config.upper()}"
    n_params = sum(p.numel() for p in G.parameters())
    gflop = forward_gflop(G)
    print(f"{name} {args.res}², channel_base={args.channel_base} max={args.channel_max} "
          f"({n_params / 1e6:.2f} M parameters, {gflop:.3g} GFLOP a forward): D={D}, d={d}, "
          f"{args.latents} latents, {dev} ({hw}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    record = {"hardware": hw, "architecture": name, "n_parameters": n_params,
              "forward_gflop_per_latent": gflop, "D": D, "d": d}
    if methods == ["forward"]:  # no references, no P: a full-size forward fits a CPU run
        with torch.no_grad(), spectra.precision_flags("highest"):
            if dev == "cuda":
                G(z)  # warm-up (on a CPU one forward at 512² is a minute: none)
            cpu0 = time.process_time()
            fwd_s, _, peak = _timed(lambda: G(z), dev, args.repeats)
            cpu_s = (time.process_time() - cpu0) / args.repeats  # CPU time: less noisy when shared
        print(f"forward: {fwd_s / len(z):.4g} s per latent (batch {len(z)}; process CPU time "
              f"{cpu_s / len(z):.4g} s)")
        if args.json:
            write_results(args.json, {**record, "forward_s_per_latent": fwd_s / len(z),
                                      "forward_cpu_s_per_latent": cpu_s / len(z),
                                      "forward_peak_mib": peak, "results": {}},
                          seed=args.seed, parameters=vars(args))
        return

    G64 = type(G)(**G.config()).to(dev, f64).eval().requires_grad_(False)
    G64.load_state_dict(G.state_dict())
    quiet = spectra.SpeedOptions(progress=False)
    options = {  # what each estimator computes (SpectraOptions); speed options apart
        "projected": spectra.SpectraOptions("projected", proj_dim=args.proj_dim, seed=args.seed),
        "exact": spectra.SpectraOptions("exact", k=args.k, seed=args.seed),
        "topk": spectra.SpectraOptions("topk", k=args.k, seed=args.seed)}
    P = spectra.projection_matrix(D, args.proj_dim, args.seed, f32, dev)  # [proj_dim, D]

    t0 = time.perf_counter()  # float64 references of the methods asked for only
    ref_proj = (spectra.log_singular_values(G64, z.double(), options["projected"], speed=quiet)
                if {"baseline", "projected"} & set(methods) else None)  # [N, proj_dim]
    exact_fits = D * d * 8 * 3 <= args.exact_mib << 20
    ref_top = None
    if {"topk", "exact"} & set(methods):
        ref_top = (spectra.log_singular_values(G64, z.double(), options["exact"], speed=quiet)
                   if exact_fits else
                   spectra.log_singular_values(G64, z.double(),
                                               options["topk"].replace(tol=1e-9, max_iter=200),
                                               speed=quiet))
    print(f"float64 references: {time.perf_counter() - t0:.1f} s "
          f"(topk reference: {'exact' if exact_fits else 'topk tol 1e-9'})")

    with torch.no_grad(), spectra.precision_flags("highest"):
        G(z)  # warm-up
        fwd_s, _, _ = _timed(lambda: G(z), dev, args.repeats)
    fwd = fwd_s / len(z)
    runs: dict[str, tuple] = {}
    if "baseline" in methods:
        runs["baseline"] = (lambda: baseline_log_sv(G, z, P), ref_proj, "highest")
    for prec in precisions if "projected" in methods else []:
        runs[f"projected[{prec}]"] = (lambda p=prec: spectra.log_singular_values(
            G, z, options["projected"].replace(precision=p), speed=quiet), ref_proj, prec)
    tols = [float(t) for t in args.tol.split(",")]
    for tol in tols if "topk" in methods else []:
        runs["topk" if len(tols) == 1 else f"topk[tol={tol:g}]"] = (
            lambda t=tol: spectra.log_singular_values(G, z, options["topk"].replace(tol=t),
                                                      speed=quiet), ref_top, "highest")
    if "exact" in methods and exact_fits:
        every = options["exact"].replace(k=None)  # all singular values, as timed before
        runs["exact"] = (lambda: spectra.log_singular_values(G, z, every, speed=quiet), ref_top,
                         "highest")

    results: dict[str, dict] = {}
    for name, (fn, ref, prec) in runs.items():
        flags = "highest" if name == "baseline" else prec  # the baseline runs without TF32 too
        with spectra.precision_flags(flags):
            with spectra.count_products() as count:
                fn()  # warm-up: pays the cached P, counts the products
            seconds, lsv, peak = _timed(fn, dev, args.repeats)
        per = seconds / len(z)
        products = args.proj_dim if name == "baseline" else count.total / len(z)
        res = {"s_per_latent": per, "products_per_latent": products,
               "forward_equivalents": per / fwd, "peak_mib": peak,
               **_accuracy(lsv, ref, args.k, args.seed)}
        if name.startswith(("projected", "topk", "exact")):
            run = spectra.SpectraOptions(name.split("[")[0], proj_dim=args.proj_dim,
                                         k=args.k if name.startswith("topk") else None,
                                         precision=prec, seed=args.seed)
            plan = spectra.memory_plan(G, z, run)
            res.update(chunk=plan.chunk, block=plan.block, estimate_mib=plan.estimate / 2**20)
        results[name] = res
    base = results.get("baseline", {}).get("s_per_latent")
    print(f"forward: {fwd:.4g} s per latent")
    print(f"{'method':<20} {'s/latent':>9} {'products':>8} {'fwd-eq':>7} {'÷ baseline':>10} "
          f"{'|Δ logvol|':>10} {'rel':>8} {'spearman':>8} {'picks':>6} {'peak MiB':>9}")
    for name, r in results.items():
        r["speedup_vs_baseline"] = base / r["s_per_latent"] if base else None
        peak = r["peak_mib"] if r["peak_mib"] is not None else r.get("estimate_mib", float("nan"))
        sp = f"{r['speedup_vs_baseline']:>9.2f}×" if base else f"{'-':>10}"
        print(f"{name:<20} {r['s_per_latent']:>9.4g} {r['products_per_latent']:>8.0f} "
              f"{r['forward_equivalents']:>7.1f} {sp} "
              f"{r['max_abs_dlog_volume']:>10.2e} {r['max_rel_dlog_volume']:>8.1e} "
              f"{r['spearman_log_volume']:>8.3f} {r['magnet_pick_overlap']:>6.2f} {peak:>9.1f}")
    print("(÷ baseline: how many times faster than the baseline in this process; peak MiB on CPU "
          "is memory_plan's estimate)")
    if args.json:
        write_results(args.json, {**record, "forward_s_per_latent": fwd, "results": results},
                      seed=args.seed, parameters=vars(args))
