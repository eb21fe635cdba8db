"""The sharded, resumable build of a volume bank; many workers (``worker=(i, n)``, torchrun)
write disjoint shards of one folder.

``build`` cuts z ``[N, d]`` into shards of ``shard_size`` rows, computes each missing shard's
log σ with ``spectra.log_singular_values`` and writes it atomically as
``shard-00000.safetensors``, ...; shards already on disk are verified and skipped, so an
interrupted build resumes. Every shard's meta holds ``identity`` (``bank_identity``),
``generator_id`` (the name or path the generator was loaded from, so ``python -m magnet_lab
sample`` can load it again), ``generator_options``, ``spectra_options`` and ``speed_options``
(every field), ``shard``, ``shard_range`` ([start, stop) in the requested z), ``shard_size``,
``n_total`` and ``provenance``; merged banks carry ``n_shards`` and ``shard_sizes``.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .. import config, provenance, spectra
from ..spectra import SpectraOptions, SpeedOptions
from ..validation import check_int, check_latents
from .formats import read_meta
from .identity import bank_identity, check_labels, default_path, identity_mismatch, normalised
from .volume_bank import VolumeBank

DEFAULT_SHARD_SIZE = 1024  # latents per shard file: the CLI, notebooks and build share it


def shard_name(index: int) -> str:
    """File name of shard ``index`` in a bank directory: ``shard-00000.safetensors``."""
    return f"shard-{index:05d}.safetensors"


def worker_shards(n: int, shard_size: int, worker: tuple[int, int] = (0, 1)) -> list[int]:
    """The shard indices that ``worker=(i, count)`` computes in a build of ``n`` latents cut into
    shards of ``shard_size`` rows: i, i + count, ... below ``ceil(n / shard_size)`` (empty when
    i is past the last shard). The boundaries depend on ``n`` and ``shard_size`` only, never on
    ``count``, so any number of workers writes the same shards. Raises ValueError for ``n`` or
    ``shard_size`` < 1 or a worker that is not (index, count) with 0 <= index < count."""
    check_int("n", n, low=1)
    check_int("shard_size", shard_size, low=1)
    w_index, w_count = worker
    if not (isinstance(w_count, int) and isinstance(w_index, int) and 0 <= w_index < w_count):
        raise ValueError(f"worker must be (index, count) with 0 <= index < count, got {worker}")
    return list(range(w_index, math.ceil(n / shard_size), w_count))


def build(G: Callable[..., torch.Tensor], z: torch.Tensor, path: str | Path | None = None, *,
          generator_id: str, options: SpectraOptions | None = None,
          speed: SpeedOptions | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
          seeds: torch.Tensor | None = None, labels: torch.Tensor | None = None,
          n_classes: int | None = None, worker: tuple[int, int] | None = None,
          latent_law: dict | None = None, fingerprint: str | None = None,
          generator_options: dict | None = None,
          cache_root: str | Path | None = None) -> VolumeBank:
    """Build (or resume) a sharded bank of G at latents ``z [N, d]`` in directory ``path``
    (None: ``default_path(identity, generator_id, cache_root)``).

    Each shard missing on disk gets ``spectra.log_singular_values(G, z_shard, options,
    speed=speed without its bar)`` (``options`` None: exact) and is saved atomically as
    ``path/shard-00000.safetensors``, ...; shards already on disk are verified and skipped.
    Every shard records ``bank_identity(G, z, options, latent_law=..., fingerprint=...,
    n_classes=..., labels=...)``: a build into a folder holding shards of another identity is
    refused, naming the field and both values. A class-conditional G takes ``n_classes`` and the
    int64 ``labels [N]`` (then required): each shard's spectra run with ``c = one_hot(labels,
    n_classes)`` in z's dtype, i.e. ``G(z, c)``. ``generator_id`` is how the generator is loaded
    again (a built-in name or a path) and ``generator_options`` its ``load_generator`` run
    options (e.g. StyleGAN2's ``psi``), both recorded in the meta; ``seeds`` are optional int64
    ``[N]``. ``speed.progress`` True shows a bar over this call's latents, shard by shard.
    Temporary files of this call's shards left by a killed write are removed. Scale-out:
    ``worker=(i, n)`` makes this call own shards i, i+n, ... only (``worker_shards``); it returns
    the merge of its own shards, whose meta lists the recomputed ones under
    ``shards_computed``. Raises TypeError for options of the wrong type, ValueError for bad
    inputs, a worker that owns no shard, a mismatching or foreign shard in ``path``."""
    check_latents(z)
    n = z.shape[0]
    options = SpectraOptions() if options is None else options
    speed = SpeedOptions() if speed is None else speed
    if not isinstance(speed, SpeedOptions):
        raise TypeError(f"speed must be a SpeedOptions, got {type(speed).__name__}")
    if not isinstance(generator_id, str) or not generator_id:
        raise ValueError("generator_id must be a non-empty string naming the generator")
    for name, t in (("seeds", seeds), ("labels", labels)):
        if t is not None and (not isinstance(t, torch.Tensor) or t.dtype != torch.int64
                              or tuple(t.shape) != (n,)):
            raise ValueError(f"{name} must be an int64 tensor of shape [{n}] (one per latent)")
    if n_classes is not None:
        check_labels(labels, n_classes, n)
    mine = worker_shards(n, shard_size, (0, 1) if worker is None else worker)
    if not mine:
        raise ValueError(f"worker {worker[0]}/{worker[1]} owns no shard: {n} latents make "
                         f"{math.ceil(n / shard_size)} shard(s) of {shard_size}; start at most "
                         "that many workers (or skip this one)")
    identity = bank_identity(G, z, options, latent_law=latent_law, fingerprint=fingerprint,
                             n_classes=n_classes, labels=labels)
    out_dir = Path(path) if path is not None else default_path(identity, generator_id, cache_root)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"build writes a directory of shards; {out_dir} is a file")
    out_dir.mkdir(parents=True, exist_ok=True)
    n_shards = math.ceil(n / shard_size)
    names = [shard_name(i) for i in range(n_shards)]
    present = sorted(p for p in out_dir.glob("*.safetensors") if p.is_file())
    foreign = [p.name for p in present if p.name not in names]
    if foreign:
        raise ValueError(f"{out_dir} holds shard files that are not part of this build "
                         f"(N={n}, shard_size={shard_size}): {foreign[:5]}; use a new directory")
    for p in present:  # one identity per folder, whichever worker wrote the shard
        diff = identity_mismatch(read_meta(p).get("identity"), identity)
        if diff:
            raise ValueError(f"{out_dir} already holds {p.name}, made differently from this "
                             f"build: {diff} (existing vs requested); build into a new "
                             "directory or delete the old shards")
    remove_orphans(out_dir, {names[i] for i in mine})

    quiet = speed.replace(progress=False)  # the build's own bar, not one per shard
    recorded = {"spectra_options": normalised(options.as_dict()),
                "speed_options": normalised(quiet.as_dict())}
    z_cpu = z.detach().to("cpu")
    prov = None
    shards: list[VolumeBank] = []
    computed: list[int] = []
    ranges = [(i * shard_size, min(n, (i + 1) * shard_size)) for i in mine]
    bar = tqdm(total=sum(hi - lo for lo, hi in ranges), desc=f"bank {generator_id}",
               unit="latent",  # the env switch silences bars in reports, as in spectra
               disable=not config.progress_enabled(bool(speed.progress)))
    for i, (lo, hi) in zip(mine, ranges):
        want = {"latents": z_cpu[lo:hi].clone(),
                "seeds": None if seeds is None else seeds[lo:hi].cpu().clone(),
                "labels": None if labels is None else labels[lo:hi].cpu().clone()}
        file = out_dir / names[i]
        if file.exists():
            bank = VolumeBank.load(file)
            check_resumed_shard(bank, want, file)
        else:
            c = None
            if n_classes is not None:
                c = torch.nn.functional.one_hot(labels[lo:hi].to(z.device), n_classes)
                c = c.to(z.dtype)  # [b, n_classes]
            log_sv = spectra.log_singular_values(G, z[lo:hi], options, speed=quiet, c=c)
            log_sv = log_sv.detach().to("cpu", torch.float64)  # [b, r]
            if log_sv.ndim != 2 or log_sv.shape[0] != hi - lo:
                raise ValueError(f"spectra returned shape {tuple(log_sv.shape)} for a shard of "
                                 f"{hi - lo} latents")
            prov = prov or provenance.provenance()
            meta = {"identity": identity, "generator_id": generator_id,
                    "generator_options": normalised(generator_options or {}), **recorded,
                    "shard": i, "shard_range": [lo, hi], "shard_size": shard_size,
                    "n_total": n, "provenance": prov}
            bank = VolumeBank(log_sv=log_sv, meta=meta, **want)
            bank.save(file)
            computed.append(i)
        shards.append(bank)
        bar.update(hi - lo)  # a shard found on disk is only verified: the bar jumps
    bar.close()
    merged = VolumeBank.merge(shards)
    merged.meta["shards_computed"] = computed
    merged.meta["path"] = str(out_dir)
    return merged


def remove_orphans(out_dir: Path, owned: set[str]) -> list[str]:
    """Delete the temporary files (``.shard-*.tmp``) left in ``out_dir`` by a killed write of a
    shard in ``owned``; warn about (and leave) other workers' ones, which may be in flight.
    Returns the names removed."""
    removed, foreign = [], []
    for tmp in out_dir.glob(".shard-*.tmp"):
        target = tmp.name[1:].split(".safetensors.")[0] + ".safetensors"
        if target in owned:
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
        else:
            foreign.append(tmp.name)
    if removed or foreign:
        warnings.warn(f"{out_dir}: removed {len(removed)} temporary file(s) of interrupted "
                      f"writes {removed[:3]}; left {len(foreign)} of other workers' shards "
                      f"{foreign[:3]}", stacklevel=3)
    return removed


def check_resumed_shard(bank: VolumeBank, want: dict, file: Path) -> None:
    """Raise ValueError if an existing shard ``bank`` does not hold the rows (``want``: latents,
    seeds, labels) this build would write."""
    hint = "delete it or build into a new directory"
    for name, expected in want.items():
        have = getattr(bank, name)
        if (have is None) != (expected is None):
            raise ValueError(f"existing shard {file} {'lacks' if have is None else 'has'} "
                             f"{name}, unlike this build; {hint}")
        if expected is not None and (have.dtype != expected.dtype or have.shape != expected.shape
                                     or not torch.equal(have, expected)):
            raise ValueError(f"existing shard {file} was built for different {name} than "
                             f"requested now (shape {tuple(have.shape)} {have.dtype} vs "
                             f"{tuple(expected.shape)} {expected.dtype}); {hint}")
