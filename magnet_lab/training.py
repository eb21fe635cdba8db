"""Training of the embedded Fashion-MNIST models, seeded and CPU-friendly (2 threads, minutes).

``train_classifier`` fits ``FmnistClassifier`` on the full, balanced training set;
``train_dcgan`` fits ``FmnistDCGAN`` on the imbalanced split (``data.DEFAULT_IMBALANCE``) with the
standard non-saturating DCGAN loss and Adam(2e-4, β=(0.5, 0.999)); ``train_stylegan2`` and
``train_biggan`` fit the embedded StyleGAN2 and the class-conditional BigGAN-deep on the same split
(resumable, with periodic quality records). Each returns ``(model, record)``
where ``record`` is the JSON-able training record that ``save_checkpoint`` writes as the sidecar.
Runs are reproducible for a given seed, thread count and torch build: parameters are initialised
from ``torch.manual_seed(seed)``, data order and latents come from dedicated ``torch.Generator``s,
and ``torch.use_deterministic_algorithms(True)`` is on while training.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import attributes
from . import data as fdata
from .models import generate
from .models.fmnist import FmnistClassifier, FmnistDCGAN, FmnistDiscriminator

TEST_SUBSET = 2000  # the classifier's recorded accuracy on the first TEST_SUBSET test images


@contextlib.contextmanager
def reproducible(seed: int, threads: int | None = 2, deterministic: bool = True) -> Iterator[None]:
    """Seed torch's global RNG, set the thread count and deterministic algorithms for the block,
    restoring the previous thread count and determinism flag afterwards."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if threads:
            torch.set_num_threads(int(threads))
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
        torch.manual_seed(int(seed))
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted classes (int64 ``[N]``) of images ``x`` ``[N, 1, 28, 28]`` in [-1, 1], in batches,
    with the model temporarily in eval mode."""
    return attributes.predict_classes(model, x, batch_size)


def classifier_accuracy(model: nn.Module, split: str = "test", n: int | None = None,
                        root: str | Path | None = None, batch_size: int = 500) -> float:
    """Accuracy of ``model`` on the first ``n`` images (all when None) of a Fashion-MNIST split."""
    images, labels = fdata.fashion_mnist(split, root)
    if n is not None:
        images, labels = images[:n], labels[:n]
    pred = predict(model, fdata.to_model_range(images), batch_size)
    return float((pred == labels).double().mean())


def train_classifier(seed: int = 0, epochs: int = 5, *, batch_size: int = 128, lr: float = 2e-3,
                     weight_decay: float = 1e-4, threads: int | None = 2,
                     root: str | Path | None = None, log: Callable[[str], None] = print
                     ) -> tuple[FmnistClassifier, dict]:
    """Fit ``FmnistClassifier`` on all 60k training images (random horizontal flips) with AdamW and
    a cosine learning-rate schedule; returns ``(model in eval mode, record)``. The record holds the
    test accuracy and the accuracy on the first ``TEST_SUBSET`` test images (for exact re-checks)."""
    t0 = time.time()
    images, labels = fdata.fashion_mnist("train", root)
    x_all = fdata.to_model_range(images)  # [60000, 1, 28, 28]
    with reproducible(seed, threads):
        model = FmnistClassifier()
        gen = torch.Generator().manual_seed(int(seed) + 1)
        steps_per_epoch = math.ceil(len(x_all) / batch_size)
        total = epochs * steps_per_epoch
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        model.train()
        history, step = [], 0
        for epoch in range(epochs):
            perm = torch.randperm(len(x_all), generator=gen)
            run_loss, run_correct, seen = 0.0, 0, 0
            for i in range(0, len(perm), batch_size):
                idx = perm[i:i + batch_size]
                x, y = x_all[idx], labels[idx]
                flip = torch.rand(len(idx), generator=gen) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                run_loss += float(loss.detach()) * len(idx)
                run_correct += int((logits.argmax(1) == y).sum())
                seen += len(idx)
                if step % 100 == 0:
                    log(f"classifier epoch {epoch + 1}/{epochs} step {step}/{total} "
                        f"loss {run_loss / seen:.4f} acc {run_correct / seen:.4f} "
                        f"({time.time() - t0:.0f}s)")
            history.append({"epoch": epoch + 1, "train_loss": run_loss / seen,
                            "train_accuracy": run_correct / seen})
        model.eval()
    train_time = time.time() - t0
    test_acc = classifier_accuracy(model, "test", root=root)
    subset_acc = classifier_accuracy(model, "test", n=TEST_SUBSET, root=root)
    log(f"classifier: test accuracy {test_acc:.4f} (first {TEST_SUBSET}: {subset_acc:.4f}), "
        f"{train_time:.0f}s")
    record = {
        "architecture": "FmnistClassifier", "kwargs": model.config(), "kind": "classifier",
        "class_names": list(fdata.CLASS_NAMES), "input": "[B, 1, 28, 28] float in [-1, 1]",
        "seed": int(seed), "epochs": int(epochs), "steps": step, "batch_size": batch_size,
        "optimizer": {"name": "AdamW", "lr": lr, "weight_decay": weight_decay,
                      "schedule": "cosine to 0"},
        "augmentation": "random horizontal flip",
        "data": {"dataset": "fashion-mnist", "split": "train (all 60000, balanced)",
                 "class_frequencies": fdata.class_frequencies(labels)},
        "threads": int(threads) if threads else torch.get_num_threads(),
        "training_time_s": round(train_time, 1),
        "history": history,
        "final_metrics": {"test_accuracy": test_acc,
                          "test_subset": {"first_n": TEST_SUBSET, "accuracy": subset_acc},
                          "train_loss": history[-1]["train_loss"]},
    }
    return model, record


@torch.no_grad()
def recalibrate_batchnorm(generator: FmnistDCGAN, *, n_batches: int = 40, batch_size: int = 250,
                          seed: int = 0) -> None:
    """Replace BatchNorm running statistics by exact averages over ``n_batches`` fresh latent
    batches (train-mode statistics), so the eval-mode generator matches what was trained."""
    gen = torch.Generator().manual_seed(int(seed))
    bns = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = exact mean over the batches
    generator.train()
    for _ in range(n_batches):
        generator.net(torch.randn(batch_size, generator.z_dim, generator=gen))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    generator.eval()


@torch.no_grad()
def sample_images(generator: nn.Module, n: int, *, seed: int = 0, batch_size: int = 500
                  ) -> torch.Tensor:
    """``n`` images ``[n, C, H, W]`` from ``generator`` (eval mode) at latents z ~ N(0, I) drawn
    from a ``torch.Generator`` seeded with ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n, generator.z_dim, generator=gen)  # [n, z_dim]
    return generate(generator, z, batch_size=batch_size)


def generator_class_frequencies(generator: nn.Module, classifier: nn.Module, n: int = 10000,
                                seed: int = 12345) -> torch.Tensor:
    """Class frequencies (float64 ``[10]``) of ``n`` generator samples as judged by ``classifier``."""
    pred = predict(classifier, sample_images(generator, n, seed=seed))
    return fdata.class_frequencies(pred, 10)


def _run_record(split: str, spec: fdata.ImbalanceSpec, split_seed: int,
                split_labels: torch.Tensor, threads: int | None, train_time: float,
                history: list[dict]) -> dict:
    """The data, threads, time, history and final-loss fields of a GAN's training record."""
    return {
        "data": {"dataset": "fashion-mnist", "split": split, "imbalance": spec.to_dict(),
                 "split_seed": int(split_seed), "n_images": len(split_labels),
                 "class_names": list(fdata.CLASS_NAMES),
                 "class_counts": torch.bincount(split_labels, minlength=10),
                 "class_frequencies": fdata.class_frequencies(split_labels)},
        "threads": int(threads) if threads else torch.get_num_threads(),
        "training_time_s": round(train_time, 1),
        "history": history,
        "final_metrics": {"loss_d": history[-1]["loss_d"], "loss_g": history[-1]["loss_g"]},
    }


def train_dcgan(seed: int = 0, steps: int = 2000, *, batch_size: int = 64, z_dim: int = 32,
                channels: int = 96, d_channels: int = 48, lr: float = 2e-4,
                betas: tuple[float, float] = (0.5, 0.999), threads: int | None = 2,
                spec: fdata.ImbalanceSpec = fdata.DEFAULT_IMBALANCE, split_seed: int = 0,
                root: str | Path | None = None, log: Callable[[str], None] = print,
                log_every: int = 100) -> tuple[FmnistDCGAN, dict]:
    """Fit ``FmnistDCGAN`` on the imbalanced training split with the non-saturating DCGAN loss;
    returns ``(generator in eval mode, record)``. After training the BatchNorm statistics are
    recalibrated. ``judge_generator`` adds the class distribution of samples to the record."""
    t0 = time.time()
    images, labels = fdata.fashion_mnist("train", root)
    idx = fdata.imbalanced_split(labels, spec=spec, seed=split_seed)
    x_all = fdata.to_model_range(images[idx])  # [M, 1, 28, 28]
    split_labels = labels[idx]
    split_freq = fdata.class_frequencies(split_labels)
    log(f"dcgan: imbalanced split of {len(idx)} images, class frequencies "
        f"{[round(float(f), 4) for f in split_freq]}")
    with reproducible(seed, threads):
        G, D = FmnistDCGAN(z_dim=z_dim, channels=channels), FmnistDiscriminator(d_channels)
        gen_data = torch.Generator().manual_seed(int(seed) + 1)
        gen_z = torch.Generator().manual_seed(int(seed) + 2)
        opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
        opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
        ones, zeros = torch.ones(batch_size), torch.zeros(batch_size)
        G.train(), D.train()
        perm, pos = torch.randperm(len(x_all), generator=gen_data), 0
        history, acc_d, acc_g, acc_n = [], 0.0, 0.0, 0
        for step in range(1, steps + 1):
            if pos + batch_size > len(perm):
                perm, pos = torch.randperm(len(x_all), generator=gen_data), 0
            real = x_all[perm[pos:pos + batch_size]]  # [B, 1, 28, 28]
            pos += batch_size
            z = torch.randn(batch_size, z_dim, generator=gen_z)  # [B, z_dim]
            fake = G.net(z)
            # discriminator: real -> 1, fake -> 0
            loss_d = (F.binary_cross_entropy_with_logits(D(real), ones)
                      + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            # generator: non-saturating loss -log D(G(z))
            D.requires_grad_(False)  # no discriminator weight gradients in the generator step
            loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            D.requires_grad_(True)
            acc_d, acc_g, acc_n = acc_d + float(loss_d.detach()), acc_g + float(loss_g.detach()), acc_n + 1
            if step % log_every == 0 or step == steps:
                history.append({"step": step, "loss_d": acc_d / acc_n, "loss_g": acc_g / acc_n})
                log(f"dcgan step {step}/{steps} loss_d {acc_d / acc_n:.3f} "
                    f"loss_g {acc_g / acc_n:.3f} ({time.time() - t0:.0f}s)")
                acc_d, acc_g, acc_n = 0.0, 0.0, 0
        recalibrate_batchnorm(G, seed=int(seed) + 3)
    train_time = time.time() - t0
    record = {
        "architecture": "FmnistDCGAN", "kwargs": G.config(), "kind": "generator",
        "output": "[B, 1, 28, 28] in [-1, 1]", "latent": "z ~ N(0, I_z_dim)",
        "seed": int(seed), "steps": int(steps), "batch_size": batch_size,
        "loss": "non-saturating (BCE with logits)",
        "optimizer": {"name": "Adam", "lr": lr, "betas": list(betas)},
        "discriminator": {"architecture": "FmnistDiscriminator", "kwargs": D.config()},
        "batchnorm": "running statistics recalibrated over 40x250 latents after training",
        **_run_record("train, imbalanced_split", spec, split_seed, split_labels, threads,
                      train_time, history),
    }
    log(f"dcgan: {steps} steps in {train_time:.0f}s")
    return G, record


def judge_generator(generator: nn.Module, classifier: nn.Module, split_freq: torch.Tensor, *,
                    n: int = 10000, seed: int = 12345, log: Callable[[str], None] = print) -> dict:
    """Compare the class frequencies of ``n`` samples (seeded), as ``classifier`` judges them, with
    the training split's ``split_freq`` [10]; returns a JSON-able dict with both and their total
    variation distance (what the generator sidecar records)."""
    split_freq = torch.as_tensor(split_freq, dtype=torch.float64)
    gen_freq = generator_class_frequencies(generator, classifier, n, seed)
    log("class frequencies, generator vs split: "
        + ", ".join(f"{name} {g:.3f}/{s:.3f}" for name, g, s in
                    zip(fdata.CLASS_NAMES, gen_freq.tolist(), split_freq.tolist())))
    return {"n_samples": n, "sample_seed": seed, "generator": gen_freq, "split": split_freq,
            "total_variation": 0.5 * float((gen_freq - split_freq).abs().sum())}


def save_sample_grid(generator: nn.Module, path: str | Path, *, n: int = 64, seed: int = 0,
                     nrow: int = 8) -> Path:
    """Save an ``n``-image grid PNG of generator samples (seeded latents) to ``path``."""
    from torchvision.utils import save_image

    x = sample_images(generator, n, seed=seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((x + 1) / 2, str(path), nrow=nrow, padding=2, pad_value=0.5)
    return path


# ---------------------------------------------------------------------------------------------
# The embedded StyleGAN2


def pad_to(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Images ``[N, C, H, W]`` in [-1, 1] padded with background (-1) to ``[N, C, R, R]``,
    centred (Fashion-MNIST 28×28 → 32×32 pads 2 pixels a side)."""
    pad = resolution - images.shape[-1]
    if pad < 0 or pad % 2 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"cannot centre-pad {tuple(images.shape[-2:])} images to {resolution}")
    return F.pad(images, (pad // 2,) * 4, value=-1.0)


def quality_line(quality: dict) -> str:
    """``precision 0.906 [0.893, 0.920], recall …`` for a ``generator_quality`` record."""
    m = quality["metrics"]
    return ", ".join(f"{k} {m[k]['value']:.3f} [{m[k]['lo']:.3f}, {m[k]['hi']:.3f}]"
                     for k in ("precision", "recall", "coverage", "fid") if k in m)


@dataclass(frozen=True)
class QualityStop:
    """When to stop a GAN run that is evaluated every few thousand steps, and which evaluation
    to ship. Stop at the first evaluation with recall ≥ ``recall`` and precision ≥
    ``precision`` (ship it); or after ``patience`` evaluations in a row whose recall does not
    exceed the upper 95 % CI bound of the best recall so far (a gain beyond the CI). Without
    the bar met, ship the evaluation with the highest recall among those with precision ≥
    ``precision`` (the highest recall overall if none has)."""

    recall: float
    precision: float
    patience: int = 3

    def decide(self, evaluations: list[dict]) -> tuple[bool, int, str]:
        """``(stop, index of the evaluation to ship, why)`` after ``evaluations`` (each with
        ``quality["metrics"]["recall"|"precision"] = {"value", "lo", "hi"}``), in step order."""
        if not evaluations:
            raise ValueError("QualityStop.decide needs at least one evaluation")
        rec = [e["quality"]["metrics"]["recall"] for e in evaluations]
        prec = [e["quality"]["metrics"]["precision"]["value"] for e in evaluations]
        for i, (r, p) in enumerate(zip(rec, prec)):
            if r["value"] >= self.recall and p >= self.precision:
                return True, i, (f"bar met at step {evaluations[i]['step']}: recall "
                                 f"{r['value']:.3f} >= {self.recall:.3f}, precision {p:.3f} >= "
                                 f"{self.precision:.3f}")
        ok = [i for i in range(len(rec)) if prec[i] >= self.precision] or list(range(len(rec)))
        best = max(ok, key=lambda i: (rec[i]["value"], -i))
        stale, top = 0, 0
        for i in range(1, len(rec)):
            if rec[i]["value"] > rec[top]["hi"]:
                stale, top = 0, i
            else:
                stale += 1
                if rec[i]["value"] > rec[top]["value"]:
                    top = i
            if stale >= self.patience:
                break
        r = rec[top]
        where = (f"step {evaluations[top]['step']}, recall {r['value']:.3f} "
                 f"[{r['lo']:.3f}, {r['hi']:.3f}]")  # the best so far
        if stale >= self.patience:
            return True, best, (f"{self.patience} evaluations in a row without a recall gain "
                                f"beyond the CI of the best so far ({where})")
        return False, best, (f"bar not met; no plateau yet ({stale} of {self.patience} "
                             f"evaluations without a recall gain beyond the CI of the best so "
                             f"far, {where})")

    def to_dict(self) -> dict:
        """The rule's parameters, for the training record."""
        return {"recall": self.recall, "precision": self.precision, "patience": self.patience}


def _write_snapshot(G: nn.Module, path: Path) -> None:
    from safetensors.torch import save as st_save

    from . import provenance

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in G.state_dict().items()}
    provenance.write_bytes_atomic(path, st_save(tensors))


def _state_bytes(state: dict) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _save_run(path: Path, parts: dict, gen_data: torch.Generator, gen_z: torch.Generator,
              extra: dict) -> None:
    """Write a GAN run's state atomically: the modules and optimisers in ``parts`` (name ->
    object, each stored under its name), the data and latent generators, torch's global RNG and
    ``extra`` (step, history, data permutation and position, elapsed time, evaluations, ...)."""
    from . import provenance

    provenance.write_bytes_atomic(path, _state_bytes({
        **{k: v.state_dict() for k, v in parts.items()},
        "gen_data": gen_data.get_state(), "gen_z": gen_z.get_state(),
        "torch_rng": torch.get_rng_state(), **extra}))


def _load_run(path: Path, parts: dict, gen_data: torch.Generator,
              gen_z: torch.Generator) -> dict:
    """Restore what ``_save_run`` wrote into ``parts`` and the generators (``weights_only``
    load) and return the whole state dict, for the caller's own entries."""
    st = torch.load(path, map_location="cpu", weights_only=True)
    for k, v in parts.items():
        v.load_state_dict(st[k])
    gen_data.set_state(st["gen_data"]), gen_z.set_state(st["gen_z"])
    torch.set_rng_state(st["torch_rng"])
    return st


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def train_stylegan2(seed: int = 0, steps: int = 8000, *, batch_size: int = 32, z_dim: int = 32,
                    w_dim: int = 128, mapping_layers: int = 2, channel_base: int = 1024,
                    channel_max: int = 64, d_channel_base: int = 1024, d_channel_max: int = 64,
                    lr: float = 0.0025, betas: tuple[float, float] = (0.0, 0.99),
                    r1_gamma: float = 0.01, r1_interval: int = 16, ema_kimg: float = 10.0,
                    ema_rampup: float = 0.05, threads: int | None = 2,
                    spec: fdata.ImbalanceSpec = fdata.DEFAULT_IMBALANCE, split_seed: int = 0,
                    root: str | Path | None = None, state_path: str | Path | None = None,
                    save_every: int = 250, log: Callable[[str], None] = print,
                    log_every: int = 50, eval_every: int | None = None,
                    evaluate: Callable[[nn.Module], dict] | None = None,
                    stop: QualityStop | None = None,
                    snapshot_dir: str | Path | None = None) -> tuple[nn.Module, dict]:
    """Fit the embedded StyleGAN2 (``FmnistStyleGAN2``: our ``StyleGAN2Generator`` at 32×32,
    cropped to 28×28) on the imbalanced split padded to 32×32, with StyleGAN2's recipe at a
    small scale: non-saturating logistic loss, lazy R1 penalty on reals (γ = ``r1_gamma``, every
    ``r1_interval`` steps, the optimiser's lr and betas rescaled as in the paper), Adam(lr,
    β=(0, 0.99)), random per-layer noise (seeded per step), ``w_avg`` tracked with β = 0.995,
    and an exponential moving average of G (half-life ``ema_kimg`` thousand images, ramped up
    over the first ``ema_rampup`` of training). Style mixing and the path-length penalty are left
    out (small images, short run). Returns ``(the EMA generator in eval mode, record)``.
    ``state_path`` keeps a resumable training state, written atomically every ``save_every``
    steps and read back with ``torch.load(weights_only=True)``: a rerun with the same arguments
    continues from it (bit-identical at the same thread count; the recorded training time is the
    sum over the resumed runs).
    Every ``eval_every`` steps, ``evaluate(G_ema)`` (e.g. ``experiment.generator_quality``; run
    under a forked RNG, so the trajectory does not depend on it) returns a quality record that
    is kept in the state and in ``record["quality_curve"]``; the evaluated EMA weights are
    kept too (and written to ``snapshot_dir/ema-<step>.safetensors`` when given). ``stop``
    (a ``QualityStop``) ends training early at an evaluation and picks the evaluation whose
    EMA generator is returned; without it the last EMA generator is returned."""
    from .models.discriminator import StyleGAN2Discriminator
    from .models.fmnist import FmnistStyleGAN2

    t0 = time.time()
    images, labels = fdata.fashion_mnist("train", root)
    idx = fdata.imbalanced_split(labels, spec=spec, seed=split_seed)
    x_all = pad_to(fdata.to_model_range(images[idx]), 32)  # [M, 1, 32, 32]
    split_labels = labels[idx]
    mb_ratio = r1_interval / (r1_interval + 1)
    g_kwargs = dict(z_dim=z_dim, w_dim=w_dim, mapping_kwargs=dict(num_layers=mapping_layers),
                    synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max))
    with reproducible(seed, threads):
        G = FmnistStyleGAN2(**g_kwargs)
        D = StyleGAN2Discriminator(32, 1, d_channel_base, d_channel_max)
        G_ema = FmnistStyleGAN2(**g_kwargs)
        G_ema.load_state_dict(G.state_dict())
        G_ema.eval().requires_grad_(False)
        gen_data = torch.Generator().manual_seed(int(seed) + 1)
        gen_z = torch.Generator().manual_seed(int(seed) + 2)
        opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas, eps=1e-8)
        opt_d = torch.optim.Adam(D.parameters(), lr=lr * mb_ratio,
                                 betas=(betas[0] ** mb_ratio, betas[1] ** mb_ratio), eps=1e-8)
        parts = {"G": G, "D": D, "G_ema": G_ema, "opt_g": opt_g, "opt_d": opt_d}
        start, history, perm, pos = 0, [], torch.randperm(len(x_all), generator=gen_data), 0
        evaluations: list[dict] = []  # [{"step", "quality", "elapsed_s"}]
        snapshots: dict[int, dict] = {}  # step -> G_ema state dict at that evaluation
        state_path = Path(state_path) if state_path else None
        if state_path is not None and state_path.is_file():
            st = _load_run(state_path, parts, gen_data, gen_z)
            start, history, perm, pos = int(st["step"]), st["history"], st["perm"], int(st["pos"])
            evaluations = list(st.get("evaluations", []))
            snapshots = {int(k): v for k, v in st.get("snapshots", {}).items()}
            t0 -= float(st.get("elapsed_s", 0.0))  # training time accumulates over resumes
            log(f"stylegan2: resumed from {state_path} at step {start}")
        G.train(), D.train()
        acc = {"loss_d": 0.0, "loss_g": 0.0, "r1": 0.0, "n": 0, "n_r1": 0}
        stopped = stop is not None and evaluations and stop.decide(evaluations)[0]
        for step in range(start + 1, steps + 1):
            if stopped:
                break
            if pos + batch_size > len(perm):
                perm, pos = torch.randperm(len(x_all), generator=gen_data), 0
            real = x_all[perm[pos:pos + batch_size]]  # [B, 1, 32, 32]
            pos += batch_size
            z = torch.randn(2, batch_size, z_dim, generator=gen_z)  # [2, B, z_dim]: G and D steps
            # generator: non-saturating loss softplus(-D(G(z)))
            D.requires_grad_(False)
            ws = G.mapping(z[0])  # [B, num_ws, w_dim]
            with torch.no_grad():  # w_avg tracks the mean w (truncation's centre), beta 0.995
                G.mapping.w_avg.lerp_(ws[:, 0].mean(0), 1 - 0.995)
            fake = G.synthesis(ws, "random", noise_seed=2 * step)  # [B, 1, 32, 32]
            loss_g = F.softplus(-D(fake)).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            D.requires_grad_(True)
            # discriminator: softplus(D(fake)) + softplus(-D(real)), lazy R1 on reals
            with torch.no_grad():
                fake = G.synthesis(G.mapping(z[1]), "random", noise_seed=2 * step + 1)
            loss_d = F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            if step % r1_interval == 0:
                x = real.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)  # [B, 1, 32, 32]
                r1 = grad.square().sum(dim=(1, 2, 3)).mean()
                (r1 * (r1_gamma / 2) * r1_interval).backward()
                acc["r1"], acc["n_r1"] = acc["r1"] + float(r1.detach()), acc["n_r1"] + 1
            opt_d.step()
            # EMA of G with ramp-up (half-life ema_kimg thousand images)
            ema_nimg = min(ema_kimg * 1000, step * batch_size * ema_rampup)
            _ema_update(G_ema, G, 0.5 ** (batch_size / max(ema_nimg, 1e-8)))
            acc["loss_d"] += float(loss_d.detach())
            acc["loss_g"] += float(loss_g.detach())
            acc["n"] += 1
            if step % log_every == 0 or step == steps:
                row = {"step": step, "loss_d": acc["loss_d"] / acc["n"],
                       "loss_g": acc["loss_g"] / acc["n"],
                       "r1": acc["r1"] / acc["n_r1"] if acc["n_r1"] else None}
                history.append(row)
                log(f"stylegan2 step {step}/{steps} loss_d {row['loss_d']:.3f} "
                    f"loss_g {row['loss_g']:.3f} r1 {row['r1'] if row['r1'] is None else round(row['r1'], 4)} "
                    f"({time.time() - t0:.0f}s)")
                acc = {"loss_d": 0.0, "loss_g": 0.0, "r1": 0.0, "n": 0, "n_r1": 0}
            if evaluate is not None and eval_every and step % eval_every == 0:
                with torch.random.fork_rng(devices=[]):
                    quality = evaluate(G_ema)
                evaluations.append({"step": step, "quality": quality,
                                    "elapsed_s": round(time.time() - t0, 1)})
                snapshots[step] = {k: v.clone() for k, v in G_ema.state_dict().items()}
                if snapshot_dir is not None:
                    _write_snapshot(G_ema, Path(snapshot_dir) / f"ema-{step:06d}.safetensors")
                log(f"stylegan2 step {step}: " + quality_line(quality))
                if stop is not None:
                    stopped, _, why = stop.decide(evaluations)
                    if stopped:
                        log(f"stylegan2: stopping at step {step}: {why}")
                    keep = {evaluations[stop.decide(evaluations)[1]]["step"], step}
                    snapshots = {k: v for k, v in snapshots.items() if k in keep}
            if state_path is not None and (step % save_every == 0 or step == steps or stopped):
                _save_run(state_path, parts, gen_data, gen_z, {
                    "step": step, "history": history, "perm": perm, "pos": pos,
                    "elapsed_s": time.time() - t0, "evaluations": evaluations,
                    "snapshots": snapshots})
        last_step = evaluations[-1]["step"] if stopped else steps
        chosen = None
        if stop is not None and evaluations:
            chosen = evaluations[stop.decide(evaluations)[1]]
            G_ema.load_state_dict(snapshots[chosen["step"]])
        G_ema.eval()
    train_time = time.time() - t0
    record = {
        "architecture": "FmnistStyleGAN2", "kwargs": G_ema.config(), "kind": "generator",
        "output": "[B, 1, 28, 28] (32×32 synthesis, 2-pixel crop), about [-1, 1]",
        "latent": "z ~ N(0, I_z_dim)", "run_options": G_ema.options(),
        "seed": int(seed), "steps": int(chosen["step"] if chosen else last_step),
        "batch_size": batch_size,
        "loss": "non-saturating logistic; lazy R1 on reals",
        "r1": {"gamma": r1_gamma, "interval": r1_interval},
        "optimizer": {"name": "Adam", "lr": lr, "betas": list(betas), "eps": 1e-8,
                      "discriminator": "lr and betas rescaled by interval/(interval+1)"},
        "ema": {"kimg": ema_kimg, "rampup": ema_rampup},
        "noise": "random per layer during training (NumPy, seeded per step); const at run time",
        "w_avg": "tracked with beta 0.995 over the generator steps' w",
        "left_out": ["style mixing", "path-length regularisation", "augmentation"],
        "discriminator": {"architecture": "StyleGAN2Discriminator", "kwargs": D.config()},
        **_run_record("train, imbalanced_split, padded to 32x32", spec, split_seed, split_labels,
                      threads, train_time, history),
    }
    if evaluations:
        record["quality_curve"] = evaluations
        record["trained_steps"] = int(last_step)
    if stop is not None and evaluations:
        record["stop_rule"] = {**stop.to_dict(), "why": stop.decide(evaluations)[2],
                               "shipped_step": int(chosen["step"])}
    log(f"stylegan2: {last_step} steps in {train_time:.0f}s")
    return G_ema, record


# ---------------------------------------------------------------------------------------------
# The embedded class-conditional BigGAN-deep


def conditional_quality(G: nn.Module, classifier: nn.Module, real_feats: torch.Tensor, *,
                        n_per_class: int = 50, seed: int = 1, n_boot: int = 100) -> dict:
    """A cheap quality record of a class-conditional generator during training: ``n_per_class``
    images of each of its classes (``class_quality.class_images``, its latent law), the
    classifier's agreement with the requested class per class (``"agreement"`` [n_classes],
    with ``"agreement_mean"``/``"agreement_min"``), and precision, recall, coverage and FID with
    95 % bootstrap CIs of all of them against ``real_feats [N, F]`` (a class-balanced real
    reference) in the classifier's feature space (``"metrics"``, as ``quality_line`` prints)."""
    from . import bootstrap, class_quality, features, latent

    n_classes = latent.spec_of(G).n_classes
    images, labels = class_quality.class_images(G, list(range(n_classes)), n_per_class,
                                                seed=seed)  # [K·n, 1, 28, 28], [K·n]
    pred = predict(classifier, images)  # [K·n]
    agree = [float((pred[labels == c] == c).double().mean()) for c in range(n_classes)]
    feats = features.extract_features(classifier, images)  # [K·n, F]
    cis = bootstrap.bootstrap_ci(real_feats, feats, n_boot=n_boot, seed=seed,
                                 metrics=("precision", "recall", "coverage", "fid"))
    return {"metrics": {m: {k: float(v[k]) for k in ("value", "lo", "hi")}
                        for m, v in cis.items()},
            "agreement": agree, "agreement_mean": sum(agree) / n_classes,
            "agreement_min": min(agree), "n_per_class": int(n_per_class), "seed": int(seed),
            "n_boot": int(n_boot)}


def balanced_test_reference(classifier: nn.Module, *, n_per_class: int = 200,
                            root: str | Path | None = None) -> torch.Tensor:
    """Classifier features ``[10·n_per_class, F]`` (float64) of the first ``n_per_class`` test
    images of each class: the class-balanced real reference of ``conditional_quality``."""
    images, labels = fdata.fashion_mnist("test", root)
    idx = torch.cat([torch.nonzero(labels == c).flatten()[:n_per_class] for c in range(10)])
    from . import features

    return features.extract_features(classifier, fdata.to_model_range(images[idx]))


def save_class_grid(G: nn.Module, path: str | Path, *, n_per_class: int = 10, seed: int = 0
                    ) -> Path:
    """Save a grid PNG of a class-conditional generator: one row per class, ``n_per_class``
    seeded samples each (``class_quality.class_images``)."""
    from torchvision.utils import save_image

    from . import class_quality, latent

    classes = list(range(latent.spec_of(G).n_classes))
    x, _ = class_quality.class_images(G, classes, n_per_class, seed=seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((x + 1) / 2, str(path), nrow=n_per_class, padding=2, pad_value=0.5)
    return path


def _eval_biggan(G_twin: nn.Module, *, n_samples: int, seed: int, indices: list[int] | None,
                 power_iterations: int = 10) -> nn.Module:
    """The eval-only ``FmnistBigGAN`` of a copy of the training twin: a few power iterations on
    its own weights (an EMA's u, v are the trained G's), then standing statistics for
    ``indices`` (None: all truncations), then σ folded; with its latent spec attached."""
    import copy

    from . import latent
    from .models.biggan_training import power_iterate, standing_statistics
    from .models.fmnist import FmnistBigGAN

    twin = copy.deepcopy(G_twin)
    power_iterate(twin, power_iterations)
    standing_statistics(twin, n_samples=n_samples, seed=seed, indices=indices)
    G = twin.export(FmnistBigGAN)
    G.latent_spec = latent.LatentSpec(latent.TruncatedNormalLaw(2.0, 1.0), G.z_dim,
                                      n_classes=G.c_dim)
    return G


def train_biggan(seed: int = 0, steps: int = 100_000, *, minutes: float | None = None,
                 batch_size: int = 64, config: dict | None = None, d_channel_width: int = 16,
                 g_lr: float = 1e-4, d_lr: float = 4e-4, betas: tuple[float, float] = (0.0, 0.999),
                 d_steps: int = 1, ema_decay: float = 0.999, stats_samples: int = 500,
                 threads: int | None = 2, spec: fdata.ImbalanceSpec = fdata.DEFAULT_IMBALANCE,
                 split_seed: int = 0, root: str | Path | None = None,
                 state_path: str | Path | None = None, save_every: int = 100,
                 log: Callable[[str], None] = print, log_every: int = 50,
                 eval_every: int | None = None,
                 evaluate: Callable[[nn.Module], dict] | None = None,
                 snapshot_dir: str | Path | None = None) -> tuple[nn.Module, dict]:
    """Fit the embedded class-conditional BigGAN-deep (``FmnistBigGAN``: our ``BigGANDeep`` at
    32×32, cropped to 28×28; ``config`` overrides fields of ``models.fmnist.FMNIST_BIGGAN``) on
    the imbalanced split padded to 32×32 with the class as condition, by BigGAN's recipe at a
    small scale: the train-mode twin (``models.biggan_training.TrainableBigGANDeep``: batch
    statistics, live spectral norm), a spectrally normalised projection discriminator
    (``d_channel_width``), the hinge loss, ``d_steps`` discriminator steps per generator step,
    Adam (``g_lr``, ``d_lr``, ``betas``), z ~ N(0, I) in training, and an exponential moving
    average of G's weights (decay ``min(ema_decay, (1 + step) / (10 + step))``). Real images
    are drawn at the split's class frequencies and the fakes carry the real batch's classes;
    the last discriminator step's fakes (made with gradients) also serve the generator step,
    scored by the updated discriminator, which saves one generator pass per step.
    Training stops after ``steps`` steps or once the training time passes ``minutes``; the EMA
    generator is then exported with standing statistics for every truncation
    (``stats_samples`` latents each) and returned in eval mode with the record. Raises
    ValueError for ``steps`` or ``d_steps`` below 1 or a ``minutes`` budget that is not positive.
    ``state_path`` keeps a resumable training state (written atomically every ``save_every``
    steps and at the end; read with ``torch.load(weights_only=True)``): rerunning the same
    call continues from it, bit-identically at the same thread count, and the wall budget
    counts the time of every run. Every ``eval_every`` steps ``evaluate(G)`` (e.g.
    ``conditional_quality``; run under a forked RNG) scores an eval-only copy of the EMA
    generator with standing statistics at truncation 1 (written to
    ``snapshot_dir/ema-<step>.safetensors`` when given) into ``record["quality_curve"]``."""
    from .models.biggan_training import ProjectionDiscriminator, TrainableBigGANDeep, d_hinge_loss
    from .models.fmnist import FMNIST_BIGGAN
    from .validation import check_int, check_real

    check_int("steps", steps, low=1)
    check_int("d_steps", d_steps, low=1)
    check_real("minutes", minutes, positive=True, optional=True)
    t0 = time.time()
    images, labels = fdata.fashion_mnist("train", root)
    idx = fdata.imbalanced_split(labels, spec=spec, seed=split_seed)
    x_all = pad_to(fdata.to_model_range(images[idx]), 32)  # [M, 1, 32, 32]
    split_labels = labels[idx]  # [M]
    g_config = {**FMNIST_BIGGAN, **(config or {})}
    with reproducible(seed, threads):
        G = TrainableBigGANDeep(**g_config)
        D = ProjectionDiscriminator(G.img_channels, G.cfg.output_dim, d_channel_width, G.c_dim)
        G_ema = TrainableBigGANDeep(**g_config)
        G_ema.load_state_dict(G.state_dict())
        G_ema.requires_grad_(False)
        gen_data = torch.Generator().manual_seed(int(seed) + 1)
        gen_z = torch.Generator().manual_seed(int(seed) + 2)
        opt_g = torch.optim.Adam(G.parameters(), lr=g_lr, betas=betas, eps=1e-8)
        opt_d = torch.optim.Adam(D.parameters(), lr=d_lr, betas=betas, eps=1e-8)
        parts = {"G": G, "D": D, "G_ema": G_ema, "opt_g": opt_g, "opt_d": opt_d}
        start, history, perm, pos = 0, [], torch.randperm(len(x_all), generator=gen_data), 0
        evaluations: list[dict] = []
        state_path = Path(state_path) if state_path else None
        if state_path is not None and state_path.is_file():
            st = _load_run(state_path, parts, gen_data, gen_z)
            start, history, perm, pos = int(st["step"]), st["history"], st["perm"], int(st["pos"])
            evaluations = list(st.get("evaluations", []))
            t0 -= float(st.get("elapsed_s", 0.0))  # training time accumulates over resumes
            log(f"biggan: resumed from {state_path} at step {start}")
        G.train(), D.train(), G_ema.train()
        eye = torch.eye(G.c_dim)  # one-hot rows
        acc = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0, "n": 0}
        step = start
        out_of_time = minutes is not None and time.time() - t0 >= 60 * minutes
        while step < steps and not out_of_time:
            step += 1
            for i in range(d_steps):
                if pos + batch_size > len(perm):
                    perm, pos = torch.randperm(len(x_all), generator=gen_data), 0
                batch = perm[pos:pos + batch_size]
                pos += batch_size
                real, c = x_all[batch], eye[split_labels[batch]]  # [B, 1, 32, 32], [B, K]
                z = torch.randn(batch_size, G.z_dim, generator=gen_z)  # [B, z_dim]
                with torch.set_grad_enabled(i == d_steps - 1):  # the last fakes serve G too
                    fake = G(z, c)  # [B, 1, 32, 32]
                d_real, d_fake = D(real, c), D(fake.detach(), c)  # [B], [B]
                loss_d = d_hinge_loss(d_real, d_fake)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
            # generator: -mean D(G(z), c) on the last fakes, against the updated D
            D.requires_grad_(False)
            loss_g = -D(fake, c).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            D.requires_grad_(True)
            _ema_update(G_ema, G, min(ema_decay, (1 + step) / (10 + step)))
            acc["loss_d"] += float(loss_d.detach())
            acc["loss_g"] += float(loss_g.detach())
            acc["d_real"] += float(d_real.detach().mean())
            acc["d_fake"] += float(d_fake.detach().mean())
            acc["n"] += 1
            out_of_time = minutes is not None and time.time() - t0 >= 60 * minutes
            if step % log_every == 0 or step == steps or out_of_time:
                row = {"step": step, **{k: acc[k] / acc["n"] for k in
                                        ("loss_d", "loss_g", "d_real", "d_fake")},
                       "elapsed_s": round(time.time() - t0, 1)}
                history.append(row)
                log(f"biggan step {step}/{steps} loss_d {row['loss_d']:.3f} "
                    f"loss_g {row['loss_g']:.3f} D(real) {row['d_real']:.2f} "
                    f"D(fake) {row['d_fake']:.2f} ({time.time() - t0:.0f}s)")
                acc = {k: 0.0 for k in acc}
            if evaluate is not None and eval_every and step % eval_every == 0:
                with torch.random.fork_rng(devices=[]):
                    G_eval = _eval_biggan(G_ema, n_samples=500, seed=int(seed) + 3,
                                          indices=[G.cfg.n_stats - 1])
                    quality = evaluate(G_eval)
                evaluations.append({"step": step, "quality": quality,
                                    "elapsed_s": round(time.time() - t0, 1)})
                if snapshot_dir is not None:
                    _write_snapshot(G_eval, Path(snapshot_dir) / f"ema-{step:06d}.safetensors")
                log(f"biggan step {step}: " + quality_line(quality)
                    + (f", agreement mean {quality['agreement_mean']:.3f} min "
                       f"{quality['agreement_min']:.3f}" if "agreement_mean" in quality else ""))
            if state_path is not None and (step % save_every == 0 or step == steps or out_of_time):
                _save_run(state_path, parts, gen_data, gen_z, {
                    "step": step, "history": history, "perm": perm, "pos": pos,
                    "elapsed_s": time.time() - t0, "evaluations": evaluations})
        train_time = time.time() - t0
        t_stats = time.time()
        G_out = _eval_biggan(G_ema, n_samples=stats_samples, seed=int(seed) + 4, indices=None)
        stats_time = time.time() - t_stats
    log(f"biggan: {step} steps in {train_time:.0f}s; standing statistics for "
        f"{G.cfg.n_stats} truncations in {stats_time:.0f}s")
    record = {
        "architecture": "FmnistBigGAN", "kwargs": G_out.config(), "kind": "generator",
        "output": "[B, 1, 28, 28] (32×32 synthesis, 2-pixel crop) in [-1, 1]; G(z, c) with "
                  "one-hot c [B, 10]",
        "latent": "z ~ truncation · truncnorm(-2, 2)^z_dim at run time (the batch-norm "
                  "statistics of that truncation: G.with_options(truncation=t)); "
                  "z ~ N(0, I) in training",
        "conditioning": "class (10 Fashion-MNIST classes), one-hot",
        "run_options": G_out.options(),
        "seed": int(seed), "steps": int(step), "batch_size": batch_size, "d_steps": d_steps,
        "minutes_budget": minutes,
        "loss": "hinge (BigGAN)",
        "optimizer": {"name": "Adam", "g_lr": g_lr, "d_lr": d_lr, "betas": list(betas),
                      "eps": 1e-8},
        "ema": {"decay": ema_decay, "warmup": "min(decay, (1 + step) / (10 + step))"},
        "spectral_norm": "every G layer but the class embedding, every D layer; one power "
                         "iteration per forward in training; 10 more on the EMA weights before "
                         "folding",
        "standing_statistics": {"truncations": G.cfg.n_stats, "samples_each": stats_samples,
                                "law": "t · truncnorm(-2, 2), classes balanced",
                                "time_s": round(stats_time, 1)},
        "class_sampling": "reals at the split's frequencies; fakes carry the real batch's "
                          "classes; the last D step's fakes serve the G step",
        "discriminator": {"architecture": "ProjectionDiscriminator", "kwargs": D.config()},
        **_run_record("train, imbalanced_split, padded to 32x32", spec, split_seed, split_labels,
                      threads, train_time, history),
    }
    if evaluations:
        record["quality_curve"] = evaluations
    return G_out, record
