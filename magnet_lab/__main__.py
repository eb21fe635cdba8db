"""Command line: ``python -m magnet_lab COMMAND``.

  report   execute every numbered notebook with papermill (executed copies + results JSON into
           reports/, figures into figures/); ``--smoke`` for the cheap test mode (its figures go
           under the output folder, reports/figures/); ``-p NAME=VALUE``
           sets any notebook parameter (values typed as papermill's ``-p`` does, lists too).
  bank     build a volume bank (log σ per latent) for a generator, sharded and resumable; the bank
           records its identity (weights fingerprint, latents, every option), so `sample` needs
           only the bank. Under ``torchrun --nproc_per_node N -m magnet_lab bank ...`` rank r of
           W builds shards r, r+W, ... (``cuda:LOCAL_RANK`` or the CPU), then rank 0 loads the
           whole folder; the shards are the same for any W.
  sample   draw MaGNET / polarity samples from a bank and save them as an image grid + indices.

A class-conditional generator (BigGAN-deep, a StyleGAN2/3 with classes) banks each candidate's
class (``bank --classes 0,3,7``: classes drawn uniformly among those; default all), and ``sample``
generates every image with its candidate's class (``--class 3`` or ``--class 3,7`` keeps those
classes; ``--class-balance equal`` is the MaGNET authors' per-class sampler, ``mass`` keeps the
bank's class shares).

A user error (a missing file, a bad value, a refused checkpoint) prints one line and exits with
status 2; ``--debug`` shows the full traceback instead.
"""
from __future__ import annotations

import argparse
import ast
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2
# Ranks that finish their shards early wait at the barrier for the slowest one (a resumed build can
# leave one rank hours of work); a rank that dies makes torchrun stop the others, so a long wait
# never outlives a failed job.
DIST_TIMEOUT = datetime.timedelta(hours=48)


class UserError(Exception):
    """A problem with what the user asked for, reported in one line without a traceback."""


def parse_value(text: str) -> Any:
    """A ``-p NAME=VALUE`` value typed as papermill's ``-p`` does: ``True``/``False``/``None``
    (also lower-case ``true``/``false``/``none``), integers, floats, and Python literals such as
    lists, tuples and dicts (``[-1, 0, 1.5]``); anything else stays a string."""
    named = {"true": True, "false": False, "none": None}
    if text.lower() in named:
        return named[text.lower()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text[:1] in "[({'\"":
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError) as err:
            raise UserError(f"cannot read the value {text!r}: {err}") from None
    return text


def transform_matrix(text: str) -> list[list[float]]:
    """``--transform``'s value: a 3×3 matrix written as a list of rows (JSON or a Python literal,
    ``[[1, 0, 0.1], [0, 1, 0], [0, 0, 1]]``) as nested lists of floats. Raises
    argparse.ArgumentTypeError (a one-line usage error) for anything else."""
    try:
        rows = ast.literal_eval(text.strip())
        matrix = [[float(v) for v in row] for row in rows]
        assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    except (ValueError, SyntaxError, TypeError, AssertionError):
        raise argparse.ArgumentTypeError(f"--transform takes a 3x3 matrix as a list of rows, "
                                         f"e.g. '[[1,0,0.1],[0,1,0],[0,0,1]]', got {text!r}") from None
    return matrix


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["seed=1", "rhos=[-1, 1]"]`` → ``{"seed": 1, "rhos": [-1, 1]}`` (``parse_value``)."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise UserError(f"-p takes NAME=VALUE with NAME a parameter name, got {pair!r}")
        out[name] = parse_value(value)
    return out


def _notebook_parameters(path: Path) -> set[str]:
    import papermill as pm

    return set(pm.inspect_notebook(str(path)))


def _cmd_report(args: argparse.Namespace) -> int:
    from . import paths, reports

    try:
        keys = args.only.split(",") if args.only else [p.stem for p in reports.notebooks()]
        sources = {key: reports.find_notebook(key) for key in keys}
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    extra = parse_params(args.param)
    out = Path(args.out) if args.out else paths.reports_dir()
    for key, src in sources.items():
        known = _notebook_parameters(src)
        unknown = sorted(set(extra) - known)
        if unknown:
            raise UserError(f"{src.name} has no parameter(s) {unknown}; its parameters are "
                            f"{sorted(known)}")
    for key, src in sources.items():
        t0 = time.perf_counter()
        params = ({"smoke": True} if args.smoke else {}) | extra
        params.setdefault("results_path", str(out / f"{src.stem}.json"))
        try:
            reports.run_notebook(key, params, out_dir=out, progress=args.progress)
        except Exception as err:
            if type(err).__name__ != "PapermillExecutionError":
                raise
            first = (str(err.evalue).splitlines() or [""])[0]
            raise UserError(f"{src.name} failed in cell {err.exec_count}: {err.ename}: {first} "
                            f"(executed copy with the traceback: {out / src.name})") from err
        print(f"[report] {key}: ok in {time.perf_counter() - t0:.0f} s -> "
              f"{params['results_path']}", flush=True)
    return 0


def _generator_spec(spec: str) -> str:
    """A built-in name as is; an existing path made absolute, so the bank can find it again."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def torchrun_rank() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when this process was started by ``torchrun`` (read
    from its ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` environment variables), None when none
    of them is set. Raises UserError when only some are set or they are not integers with
    0 <= rank < world_size and 0 <= local_rank."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    present = [name for name in names if name in os.environ]
    if not present:
        return None
    if len(present) != len(names):
        raise UserError(f"torchrun sets {', '.join(names)} together; this environment has only "
                        f"{', '.join(present)} (start the job with torchrun, or unset them)")
    try:
        rank, world, local = (int(os.environ[name]) for name in names)
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
                        f"{[os.environ[name] for name in names]}") from None
    if not (0 <= rank < world and local >= 0):
        raise UserError(f"need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, got RANK={rank}, "
                        f"WORLD_SIZE={world}, LOCAL_RANK={local}")
    return rank, world, local


def parse_classes(text: str | None, flag: str) -> tuple[int, ...] | None:
    """``"0,3,7"`` → ``(0, 3, 7)``: distinct non-negative class ids; None for None. Raises
    UserError naming ``flag`` otherwise."""
    if text is None:
        return None
    try:
        ids = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"{flag} takes comma-separated class ids (e.g. 0,3,7), got {text!r}") \
            from None
    if any(c < 0 for c in ids) or len(set(ids)) != len(ids):
        raise UserError(f"{flag} takes distinct class ids >= 0, got {text!r}")
    return ids


def _build_share(args: argparse.Namespace, device: str, worker: tuple[int, int] | None,
                 tag: str) -> Any:
    """Build the shards of ``args`` that ``worker`` owns on ``device`` (the one bank recipe of
    the command line) and print what was done; None when the worker owns no shard."""
    import torch

    from . import bank, latent
    from .registry import load_generator
    from .spectra import SpectraOptions, SpeedOptions

    mine = bank.worker_shards(args.n, args.shard_size, worker or (0, 1))
    if not mine:
        n_shards = -(-args.n // args.shard_size)
        print(f"{tag} no shard to compute: {args.n} latents make {n_shards} shard(s) of "
              f"{args.shard_size}, fewer than the {worker[1]} workers; nothing to do", flush=True)
        return None
    spec = _generator_spec(args.generator)
    dtype = getattr(torch, args.dtype)
    run_options = ("psi", "cutoff", "noise_mode", "noise_seed", "transform", "truncation",
                   "z_scale")
    options = {k: v for k in run_options if (v := getattr(args, k)) is not None}
    G = load_generator(spec, device=device, dtype=dtype, **options)
    # Every worker draws all N candidates from G's latent law (the identity hashes all of them;
    # 250k x 512 float32 is 0.5 GB), so the rows of shard i are the same whatever the number of
    # workers; with --per-row-seeds row i comes from seed --seed + i alone.
    law = latent.spec_of(G)
    classes = parse_classes(args.classes, "--classes")
    if classes is not None and law.n_classes is None:
        raise UserError(f"--classes needs a class-conditional generator; {args.generator} is "
                        "unconditional")
    drawn = law.draw(args.n, seed=args.seed, per_row=args.per_row_seeds, dtype=dtype,
                     classes=classes)
    spectra_options = SpectraOptions(method=args.method, k=args.k, proj_dim=args.proj_dim,
                                     seed=args.spectra_seed, dtype=dtype,
                                     precision=args.precision)
    vb = bank.build(G, drawn.z.to(device), args.out, shard_size=args.shard_size,
                    generator_id=spec, worker=worker, generator_options=law.run_options,
                    **drawn.bank_arguments(), options=spectra_options,
                    speed=SpeedOptions(chunk=args.chunk))
    print(f"{tag} {len(vb)} latents, log σ {tuple(vb.log_sv.shape)}, "
          f"{len(vb.meta['shards_computed'])} shard(s) computed -> {vb.meta['path']}", flush=True)
    return vb


def _cmd_bank(args: argparse.Namespace) -> int:
    worker = None
    if args.worker:
        try:
            worker = tuple(int(x) for x in args.worker.split("/"))
            assert len(worker) == 2
        except (ValueError, AssertionError):
            raise UserError(f"--worker takes I/N (e.g. 0/4), got {args.worker!r}") from None
        if not 0 <= worker[0] < worker[1]:
            raise UserError(f"--worker I/N needs 0 <= I < N, got {args.worker!r}")
    ranks = torchrun_rank()
    if ranks is None:
        _build_share(args, args.device, worker, "[bank]")
        return 0
    if worker is not None:
        raise UserError("--worker and torchrun both split the shards between processes: drop "
                        "--worker under torchrun (rank r of W builds shards r, r+W, ...)")
    return _bank_torchrun(args, *ranks)


def _bank_torchrun(args: argparse.Namespace, rank: int, world: int, local_rank: int) -> int:
    """One rank of ``torchrun ... -m magnet_lab bank``: build shards rank, rank + world, ... on
    ``cuda:LOCAL_RANK`` or the CPU, post its share to torchrun's rendezvous store, then rank 0
    waits for every share and loads the whole folder (coverage and identity checked) while the
    others wait for its report. No collective communicator (NCCL, gloo) is created: a few small
    messages through the store are all the ranks exchange, and none of them can race another
    rank's teardown."""
    import json

    import torch
    import torch.distributed as dist

    from . import bank

    device = torch.device(args.device)
    if device.type == "cuda":
        if device.index is not None and world > 1:
            raise UserError(f"under torchrun pass --device cuda, not {args.device}: rank r uses "
                            "cuda:LOCAL_RANK")
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but this machine shows "
                            f"{torch.cuda.device_count()} GPU(s): lower --nproc_per_node")
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise UserError(f"torchrun bank builds run on cuda or cpu, got --device {args.device}")
    store, _, _ = next(dist.rendezvous("env://", timeout=DIST_TIMEOUT))
    # A torchrun restart reuses the agent's store: keys are per restart.
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.PrefixStore(f"magnet_lab/bank/{attempt}/", store)
    tag = f"[bank rank {rank}/{world}]"
    vb = _build_share(args, str(device), (rank, world), tag)
    if vb is None:
        print(f"{tag} waiting at the barrier for the ranks that have shards", flush=True)
    share = (None, []) if vb is None else (vb.meta["path"], vb.meta["shards_computed"])
    store.set(f"share/{rank}", json.dumps(share))
    if rank != 0:
        store.wait(["merged"], DIST_TIMEOUT)  # the barrier: rank 0 has loaded every shard
        return 0
    store.wait([f"share/{r}" for r in range(world)], DIST_TIMEOUT)  # every shard is on disk
    shares = [json.loads(store.get(f"share/{r}")) for r in range(world)]
    path = shares[0][0]  # rank 0 always owns shard 0
    merged = bank.VolumeBank.load(path)  # coverage, identity of every shard
    computed = sum(len(c) for _, c in shares)
    n_shards = merged.meta.get("n_shards", 1)  # a one-shard bank loads unmerged
    print(f"[bank] {len(merged)} latents, log σ {tuple(merged.log_sv.shape)} from "
          f"{n_shards} shard(s), {computed} computed by {world} rank(s) -> {path}", flush=True)
    store.set("merged", path)
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from . import bank, experiment, plots, provenance, sampling
    from .models import fingerprint, generate
    from .registry import load_generator

    vb = bank.VolumeBank.load(args.bank)
    if vb.latents is None:
        raise UserError(f"bank {args.bank} stores no latents; cannot regenerate images")
    identity = vb.meta.get("identity") or {}
    spec = args.generator or vb.meta.get("generator_id")
    if not spec:
        raise UserError(f"bank {args.bank} does not say which generator made it; pass --generator")
    G = load_generator(_generator_spec(spec), dtype=getattr(torch, identity.get("dtype", "float32")),
                       **(vb.meta.get("generator_options") or {}))
    want, have = identity.get("generator_fingerprint"), fingerprint(G)
    if want is None:
        print(f"[sample] warning: bank {args.bank} records no generator fingerprint; cannot check "
              f"that {spec} is the generator that made it", file=sys.stderr)
    elif want != have:
        raise UserError(f"generator {spec} has fingerprint {have}, but bank {args.bank} was built "
                        f"with {want}: the weights changed since; rebuild the bank or pass the "
                        "generator that made it")
    classes = parse_classes(args.class_ids, "--class")
    if (classes is not None or args.class_balance is not None) and vb.labels is None:
        raise UserError(f"--class and --class-balance need a class-conditional generator's bank; "
                        f"{args.bank} has no class labels")
    # default: every σ the bank has but those zero at every candidate (StyleGAN2/3 normalise z,
    # so J z = 0 and a bank of all σ ends in a column of -inf that would zero every weight)
    top_k = args.top_k if args.top_k is not None else sampling.all_top_k(vb.log_sv)
    sampler = experiment.Sampler("sample", rho=args.rho, top_k=top_k, replace=args.replace,
                                 seed=args.seed, classes=classes,
                                 class_balance=args.class_balance)
    log_w = sampler.log_weights(vb)  # [N]
    n_candidates = int(torch.isfinite(log_w).sum())
    if not args.replace and args.n > n_candidates:
        raise UserError(f"--n {args.n} is more than the {n_candidates} candidates with positive "
                        f"weight in {args.bank}; lower --n, add --replace, or build a bigger bank")
    idx = sampler.indices(vb, args.n)  # [n]
    labels = None if vb.labels is None else vb.labels[idx]  # [n] each candidate's class
    images = generate(G, vb.latents[idx], labels=labels)
    out = Path(args.out)
    fig, ax = plt.subplots(figsize=(8, 8))
    title = f"ρ = {args.rho:g}"
    if labels is not None:
        title += f", classes {sorted(set(labels.tolist()))} ({args.class_balance or 'pooled'})"
    plots.show_images(ax, images, nrow=int(args.n ** 0.5) or 1, title=title)
    params = {k: v for k, v in vars(args).items() if k not in ("func", "debug")}
    params |= {"bank": str(args.bank), "generator_fingerprint": have, "top_k": top_k}
    plots.save_figure(fig, out.stem, params, directory=out.parent)
    plt.close(fig)
    record = {"indices": idx, **params, "ess": sampling.ess(log_w)}
    if labels is not None:
        record |= {"labels": labels, "class_ess": {str(c): v for c, v in
                                                   sampler.class_ess(vb).items()}}
    provenance.write_json_atomic(out.with_suffix(".indices.json"), record)
    print(f"[sample] {args.n} samples at rho={args.rho:g} -> {out.with_suffix('.png')}")
    return 0


def _parser() -> argparse.ArgumentParser:
    from .bank import DEFAULT_SHARD_SIZE

    p = argparse.ArgumentParser(prog="python -m magnet_lab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("report", help="execute the notebooks with papermill")
    r.add_argument("--smoke", action="store_true", help="cheap test mode")
    r.add_argument("--only", help="comma-separated notebook keys, e.g. 01,03")
    r.add_argument("--out", help="folder for executed notebooks and results (default reports/)")
    r.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="notebook parameter, typed like papermill's -p (1, 0.5, True, None, "
                        "[-1, 1], text); repeatable")
    r.add_argument("--progress", action="store_true", help="show progress bars")
    r.set_defaults(func=_cmd_report)

    b = sub.add_parser("bank", help="build a volume bank for a generator")
    b.add_argument("--generator", default="fmnist-dcgan", help="built-in name or weights path")
    # --n-latents: torchrun's own parser reads a bare --n as an ambiguous prefix of its --nnodes
    b.add_argument("--n", "--n-latents", dest="n", type=int, default=10_000,
                   help="number of candidates, drawn from the generator's latent law "
                        "(spell it --n-latents under torchrun)")
    b.add_argument("--seed", type=int, default=0, help="seed of the candidates")
    b.add_argument("--per-row-seeds", action="store_true",
                   help="draw candidate i from its own seed --seed + i (stored in the bank): "
                        "any latent can be regenerated alone and a larger --n extends a smaller "
                        "bank; default: all N from the one --seed")
    b.add_argument("--method", default="exact", choices=["exact", "projected", "topk"])
    b.add_argument("--k", type=int, default=None,
                   help="singular values to compute and keep (default all; required for topk)")
    b.add_argument("--proj-dim", type=int, default=128, help="directions of the projected "
                   "estimator")
    b.add_argument("--spectra-seed", type=int, default=0,
                   help="seed of the projection (projected) or start block (topk)")
    b.add_argument("--chunk", type=int, default=None, help="latents per Jacobian batch")
    b.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE)
    b.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    b.add_argument("--device", default="cpu")
    b.add_argument("--psi", type=float, default=None, help="StyleGAN2/3: truncation psi "
                   "(a run option of the banked generator; the authors bank at psi 1)")
    b.add_argument("--cutoff", type=int, default=None,
                   help="StyleGAN2/3: number of ws truncated (default all)")
    b.add_argument("--transform", type=transform_matrix, default=None, metavar="MATRIX",
                   help="StyleGAN3: the input's inverse transform, a 3x3 matrix written as a "
                        "list of rows, e.g. '[[1,0,0.1],[0,1,0],[0,0,1]]' "
                        "(models.stylegan3.input_transform builds one from a translation and "
                        "a rotation; default: the checkpoint's)")
    b.add_argument("--precision", default="highest", choices=["highest", "tf32", "bf16"],
                   help="arithmetic of the Jacobian products (spectra.PRECISIONS; tf32/bf16 "
                        "need --dtype float32, are faster on GPUs and cost accuracy: "
                        "docs/performance.md)")
    b.add_argument("--noise-mode", default=None, choices=["const", "random", "none"],
                   help="StyleGAN2 only: noise (random needs --noise-seed)")
    b.add_argument("--noise-seed", type=int, default=None)
    b.add_argument("--truncation", type=float, default=None,
                   help="BigGAN-deep: truncation in (0, 1] (batch-norm statistics; candidates "
                        "from truncation · truncnorm(-2, 2))")
    b.add_argument("--z-scale", type=float, default=None,
                   help="BigGAN-deep: G multiplies z by it (the MaGNET authors' recipe: "
                        "--truncation 1 --z-scale 0.9)")
    b.add_argument("--classes", default=None, metavar="C1,C2,...",
                   help="class-conditional generators: candidates' classes drawn uniformly "
                        "among these ids (default: all classes)")
    b.add_argument("--worker", help="I/N: compute only shards I, I+N, ... (scale-out by hand; "
                   "run N processes on the same --out, then load the directory; torchrun does "
                   "this itself)")
    b.add_argument("--out", default=None, help="bank directory (shards; resumable); default: "
                   "a folder in the cache named after the bank's identity")
    b.set_defaults(func=_cmd_bank)

    s = sub.add_parser("sample", help="MaGNET / polarity samples from a bank")
    s.add_argument("--bank", required=True)
    s.add_argument("--generator", default=None, help="default: the generator the bank records "
                   "(refused if its weights changed since)")
    s.add_argument("--rho", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=None,
                   help="singular values in the volume (default all the bank has, but "
                        "those zero at every candidate, e.g. StyleGAN2/3's J z = 0)")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--replace", action="store_true",
                   help="draw with replacement (default: without, as the authors do)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--class", dest="class_ids", default=None, metavar="C[,C2,...]",
                   help="class-conditional banks: draw only candidates of these classes")
    s.add_argument("--class-balance", default=None, choices=["equal", "mass"],
                   help="class-conditional banks: 'equal' = the same count per class, weights "
                        "normalised within each class (the MaGNET authors' sampler); 'mass' = "
                        "weights normalised within classes, each class keeping its share of "
                        "the bank; default: weights pooled over the bank")
    s.add_argument("--out", required=True, help="output stem, e.g. figures/magnet_samples")
    s.set_defaults(func=_cmd_sample)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit status (0, or 2 for a
    user error, reported in one line on stderr unless ``--debug``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:
        if args.debug or not _is_user_error(err):
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR


def _is_user_error(err: Exception) -> bool:
    """Errors that describe bad input (our clear ValueErrors, missing or unreadable files, a
    notebook that failed) rather than a bug in magnet_lab."""
    return isinstance(err, (UserError, ValueError, FileNotFoundError, PermissionError,
                            IsADirectoryError, NotADirectoryError))


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 600 else text[:600] + " …"


if __name__ == "__main__":
    sys.exit(main())
