"""Memory planning of one spectra call: the budget, a probe of G's bytes, chunk/block sizes,
and the chunk loop that falls back to smaller sizes on out-of-memory errors.

One call aims to stay within ``memory`` bytes (``memory_budget``). Before the first chunk a
probe runs one latent's vmapped VJP/JVP with a few directions under a dispatch mode that counts
the bytes of live tensor storages (``LiveBytes``): this gives G's bytes held per latent (saved
forward activations) and per (latent × direction) (the vmapped backward/forward-mode
activations, which dominate for conv nets). With the known dense arrays (P, J or Q, the
outputs) this sizes ``block`` (all directions when they fit) and then ``chunk`` so that the
estimate times ``SLACK`` fits. On a CPU ``chunk`` is then capped so one vmapped call's rows hold
about ``CPU_CALL_BYTES``; reverse mode with big rows (>= ``CPU_PLAIN_VJP_BYTES`` a direction:
conv generators) runs plain VJPs, block 1 without vmap, over ``CPU_VJP_CALL_BYTES`` of rows
(docs/performance.md, "CPU planner measurements", has the timings behind these numbers). A
given ``chunk``/``block`` wins. If a chunk still runs out of memory, block and then chunk are
halved and that chunk is retried, with one warning naming the sizes; on Linux CPU an
overcommitted process may be killed instead of raising, which is why the budget comes first.
"""
from __future__ import annotations

import dataclasses
import gc
import math
import re
import warnings
from typing import Callable

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from tqdm.auto import tqdm

from .. import config
from ..validation import check_int
from .products import FlatGenerator, check_output

MEMORY_ENV = "MAGNET_LAB_SPECTRA_MEMORY"
CPU_MEMORY = 2 << 30  # default budget on CPU (bytes)
CUDA_FREE_SHARE = 0.5  # default budget on CUDA: this share of the device's free memory
SLACK = 1.5  # peak RSS / probed live-tensor bytes: allocator slack, kernel workspaces
PROBE_DIRECTIONS = 4  # directions vmapped in the probe (per-direction cost settles by 4)
CPU_CALL_BYTES = 128 << 20  # CPU: rows of one vmapped call (bigger calls ran ~2x slower)
CPU_PLAIN_VJP_BYTES = 1 << 20  # CPU: reverse-mode rows this big run as plain VJPs, no vmap
CPU_VJP_CALL_BYTES = 16 << 20  # CPU: rows of one chunk of plain VJPs


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Chunk and block sizes of one call and the memory estimate behind them (bytes).

    Estimated peak = ``SLACK``·(fixed + chunk·per_latent + chunk·block·per_direction):
    ``fixed`` the arrays of the whole call (P, the outputs), ``per_latent`` what a chunk holds per
    latent (G's saved forward activations, J or P·J or Q), ``per_direction`` one vmapped
    (latent × direction) of G's JVP/VJP (probed; 0 when the user gave both sizes).
    """

    chunk: int
    block: int
    budget: int
    fixed: int
    per_latent: int
    per_direction: int

    @property
    def estimate(self) -> int:
        """Estimated peak bytes of the call with these sizes."""
        return math.ceil(SLACK * (self.fixed + self.chunk * self.per_latent
                                  + self.chunk * self.block * self.per_direction))


def memory_budget(device: str | torch.device = "cpu", memory: int | None = None) -> int:
    """Bytes one ``log_singular_values``/``jacobian`` call on ``device`` may use.

    ``memory`` if given; else ``$MAGNET_LAB_SPECTRA_MEMORY`` (bytes, or a number with a binary
    K/M/G/T suffix: ``4GiB``, ``512M``); else half the free memory of a CUDA device
    (``torch.cuda.mem_get_info``); else 2 GiB. Raises TypeError/ValueError for a non-integer or
    non-positive ``memory`` and ValueError for an unreadable environment value.
    """
    if memory is not None:
        return check_int("memory", memory, low=1)
    env = config.get(MEMORY_ENV) or ""
    if env:
        m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([KMGT]?)(?:i?B)?", env, re.IGNORECASE)
        size = float(m[1]) * 1024 ** " KMGT".index(m[2].upper() or " ") if m else 0
        if size < 1:
            raise ValueError(f"{MEMORY_ENV}={env!r} is not a memory size; use bytes or a number "
                             f"with a binary suffix, e.g. 512MiB or 4GiB")
        return int(size)
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_SHARE)
    return CPU_MEMORY


def plan(f: FlatGenerator, z: Tensor, n_dir: int, chunk: int | None, block: int | None,
         memory: int | None, fixed: int, dense: int, products: tuple[str, ...]) -> MemoryPlan:
    """Sizes for ``n_dir`` directions per latent at latents ``z [B, d]``: the user's, else block
    first (all directions if one latent's fit), then chunk, the largest whose estimate
    (``MemoryPlan``) fits the budget; on a CPU then capped to cache-sized calls
    (``CPU_CALL_BYTES``; big reverse-mode rows: plain VJPs over ``CPU_VJP_CALL_BYTES``).
    ``fixed``/``dense``: bytes of the whole call and per latent besides G's; ``products``: the
    kinds (``"jvp"``, ``"vjp"``) the call evaluates."""
    chunk = None if chunk is None else min(check_int("chunk", chunk, low=1), len(z))
    block = None if block is None else min(check_int("block", block, low=1), n_dir)
    if chunk is not None and block is not None:
        return MemoryPlan(chunk, block, 0, fixed, dense, 0)
    budget = memory_budget(z.device, memory)
    held, item = probe(f.take(slice(0, 1)), z[:1], min(n_dir, PROBE_DIRECTIONS), products)
    latent, item = held + dense, max(item, 1)
    avail = budget / SLACK - fixed  # bytes left for the chunk's work
    cpu = z.device.type == "cpu"
    plain = (block is None and cpu and products == ("vjp",)
             and item >= CPU_PLAIN_VJP_BYTES)  # big reverse-mode rows: plain VJPs, no vmap
    if plain:
        block = 1
    elif block is None:
        c = chunk or 1
        block = max(1, min(n_dir, int((avail - c * latent) // (c * item))))
    if chunk is None:
        chunk = max(1, min(len(z), int(avail // (latent + block * item))))
        if cpu:  # big calls are slower on a CPU (CPU_CALL_BYTES, CPU_VJP_CALL_BYTES)
            rows = CPU_VJP_CALL_BYTES if plain else CPU_CALL_BYTES
            chunk = min(chunk, max(1, rows // (block * item)))
    sizes = MemoryPlan(chunk, block, budget, fixed, latent, item)
    if sizes.estimate > budget:
        warnings.warn(f"spectra: estimated peak {sizes.estimate / 2**20:.0f} MiB with "
                      f"chunk={chunk}, block={block} exceeds the memory budget "
                      f"{budget / 2**20:.0f} MiB ({MEMORY_ENV} or memory=)", RuntimeWarning,
                      stacklevel=4)
    return sizes


class LiveBytes(TorchDispatchMode):
    """A dispatch mode counting the bytes of the tensor storages that ops under it created and
    that are still alive (views and in-place results share a storage and count once);
    ``live()`` is the current total, ``peak`` its maximum so far."""

    def __init__(self) -> None:
        super().__init__()
        self._refs: dict[int, tuple[StorageWeakRef, int]] = {}  # data_ptr -> (ref, nbytes)
        self.peak = 0

    def live(self) -> int:
        """Bytes of the storages created under this mode that are still alive."""
        self._refs = {p: r for p, r in self._refs.items() if not r[0].expired()}
        return sum(n for _, n in self._refs.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, Tensor):
                continue
            try:
                storage = t.untyped_storage()
                ptr = storage.data_ptr()
            except (RuntimeError, NotImplementedError):  # a wrapper without its own storage
                continue
            old = self._refs.get(ptr)
            if old is None or old[0].expired():
                self._refs[ptr] = (StorageWeakRef(storage), storage.nbytes())
        self.peak = max(self.peak, self.live())
        return out


def probe(f: Callable[[Tensor], Tensor], z1: Tensor, b: int,
          products: tuple[str, ...]) -> tuple[int, int]:
    """(bytes G's saved forward holds for one latent ``z1 [1, d]``, peak bytes per direction of
    a vmapped JVP/VJP over ``b`` directions at that latent, the larger of those in
    ``products``). Never raises: if the probe fails it warns and sizes from the output only."""
    try:
        with torch.no_grad(), LiveBytes() as live:
            y, vjp_fn = vjp(f, z1)  # y: [1, D]
            held = live.live()
            item = 0.0
            for kind in products:
                base, live.peak = live.live(), 0
                if kind == "vjp":
                    vmap(lambda u: vjp_fn(u)[0])(torch.ones((b, *y.shape), dtype=y.dtype,
                                                            device=y.device))  # [b, 1, d]
                else:
                    vmap(lambda v: jvp(f, (z1,), (v,))[1])(torch.ones((b, *z1.shape),
                                                                       dtype=z1.dtype,
                                                                       device=z1.device))
                item = max(item, (live.peak - base) / b)
    except Exception as err:  # noqa: BLE001 - the probe must never be why a call fails
        warnings.warn(f"spectra: the memory probe failed ({type(err).__name__}: {err}); sizing "
                      f"from the output size only", RuntimeWarning, stacklevel=5)
        with torch.no_grad():
            D = f(z1).shape[1]
        return 0, 16 * z1.element_size() * max(z1.shape[1], D)
    return held, math.ceil(item)


def is_oom(err: BaseException) -> bool:
    """True for an out-of-memory error of any device (CUDA OOM, MemoryError, allocator text)."""
    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "cannot allocate memory"))


def over_chunks(f: FlatGenerator, z: Tensor, sizes: MemoryPlan, progress: bool | None,
                desc: str, per_chunk: Callable[[FlatGenerator, Tensor, int], Tensor]) -> Tensor:
    """Concatenate ``per_chunk(f_c, z_c, block)`` over chunks ``z_c`` of the latents ``z``
    (``f_c``: f for those rows), checking each chunk's G(z) first (``check_output``).

    On an out-of-memory error the same chunk is retried with block halved (at block 1, chunk
    halved); the sizes that finished are named in one warning. Rows are never skipped.
    """
    on = config.progress_enabled(progress)
    chunk, block = sizes.chunk, sizes.block
    out, start = [], 0
    with torch.no_grad(), tqdm(total=len(z), desc=desc, unit="latent", disable=not on) as bar:
        while start < len(z):
            z_c = z[start:start + chunk]  # [c, d]
            f_c = f.take(slice(start, start + len(z_c)))
            try:
                check_output(f_c, z_c, start)
                out.append(per_chunk(f_c, z_c, block))
            except Exception as err:  # noqa: BLE001 - anything but out-of-memory is re-raised
                if not is_oom(err) or block == chunk == 1:
                    raise
                oom = True  # retry below, once err and its frames (big tensors) are released
            else:
                oom = False
            if oom:
                gc.collect()
                if z.device.type == "cuda":
                    torch.cuda.empty_cache()
                block, chunk = (block // 2, chunk) if block > 1 else (block, chunk // 2)
                continue
            bar.update(len(z_c))
            start += len(z_c)
    if (chunk, block) != (sizes.chunk, sizes.block):
        warnings.warn(f"{desc}: out of memory with chunk={sizes.chunk}, block={sizes.block}; "
                      f"retried smaller and finished with chunk={chunk}, block={block} (pass "
                      f"these or a smaller memory= to skip the retries)", RuntimeWarning,
                      stacklevel=3)
    return torch.cat(out)
