#!/usr/bin/env python
"""Train the embedded Fashion-MNIST models and write them (safetensors + JSON sidecar) to --out.

    python scripts/train_fmnist.py --what all --seed 0 --out data/

--what classifier : FmnistClassifier on the full balanced training set  -> fmnist-classifier.*
--what generator  : FmnistDCGAN on the imbalanced split                  -> fmnist-dcgan.*
                    (its samples' class distribution is judged by
                    <out>/fmnist-classifier.safetensors when that exists at the end)
--what all        : both, classifier first. A sample grid PNG is written to --grid.
--what judge      : re-judge the generator in --out with the classifier in --out (e.g. after
                    retraining the classifier) and update fmnist-dcgan.json only.
--what stylegan2  : the embedded StyleGAN2 (FmnistStyleGAN2, 32×32 cropped to 28×28) on the
                    imbalanced split padded to 32×32 -> fmnist-stylegan2.*; --state keeps a
                    resumable training state (rerun the same command after an interruption).
--what biggan     : the embedded class-conditional BigGAN-deep (FmnistBigGAN, 32×32 cropped to
                    28×28) on the imbalanced split padded to 32×32, the class as condition
                    -> fmnist-biggan.* (+ per-class agreement/precision/recall/FID with CIs
                    against each class's real test images, judged by
                    <out>/fmnist-classifier.safetensors); --minutes bounds the training time
                    (summed over resumed runs), --state keeps a resumable training state.
--what quality    : record --generator's plain-sampling precision/recall/FID (+ CIs) against the
                    held-out imbalanced test set (experiment.generator_quality) in its sidecar.
    python scripts/train_fmnist.py --what stylegan2 --steps 24000 --eval-every 2000 \
        --state /tmp/sg2.state --snapshot-dir /tmp/sg2-snapshots --out data/
    python scripts/train_fmnist.py --what quality --generator fmnist-stylegan2 --out data/
    python scripts/train_fmnist.py --what biggan --minutes 80 --threads 1 --eval-every 250 \
        --state /root/.cache/magnet_lab/biggan-run/state.pt --out data/
Cost: the shipped run took 10 min (classifier, 5 epochs) and 12 min (generator, 2000 steps), run
in parallel at one thread each on a 2-core machine shared with other jobs; less on idle cores.
On a busy machine use --threads 1 (oversubscribed OpenMP threads are several times slower) and
run `--what classifier` and `--what generator` as two processes at once, then `--what judge`.
The shipped data/fmnist-* were made that way (seed 0, --threads 1; each sidecar records its
threads, time and versions). Same seed, thread count and torch build give identical
weights; a different thread count changes the last bits and hence the trajectory.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from magnet_lab import class_quality, data, experiment, provenance, training
from magnet_lab.models.readers import save_checkpoint, sidecar_path
from magnet_lab.registry import load_classifier, load_generator


def judge(generator, classifier, cls_path: Path, split_freq, log) -> dict:
    """The generator's class distribution as the classifier sees it (for the sidecar)."""
    judged = training.judge_generator(generator, classifier, split_freq, log=log)
    judged["classifier"] = cls_path.name
    judged["classifier_test_accuracy"] = classifier.sidecar["final_metrics"]["test_accuracy"]
    return judged


def save_generator(gen, record: dict, path: Path, grid: Path, log) -> None:
    """Write a trained generator (safetensors + sidecar) and a 10×10 sample grid PNG."""
    save_checkpoint(gen, path, record)
    log(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    training.save_sample_grid(gen, grid, n=100, nrow=10)
    log(f"sample grid: {grid}")


def train_biggan(args: argparse.Namespace, cls_path: Path, log) -> None:
    """``--what biggan``: train (or resume), record per-class quality, write the checkpoint."""
    classifier = load_classifier(cls_path)
    evaluate = None
    if args.eval_every:
        reference = training.balanced_test_reference(classifier, root=args.fmnist_dir)
        evaluate = lambda G: training.conditional_quality(G, classifier, reference)  # noqa: E731
    config = {"z_dim": args.z_dim, "class_embed_dim": args.z_dim}
    if args.channel_width:
        config["channel_width"] = args.channel_width
    if args.n_stats:
        config["n_stats"] = args.n_stats
    gen, record = training.train_biggan(
        args.seed, args.steps or 100_000, minutes=args.minutes, batch_size=args.batch_size,
        config=config, d_channel_width=args.d_channel_width, stats_samples=args.stats_samples,
        threads=args.threads, root=args.fmnist_dir, state_path=args.state, log=log,
        eval_every=args.eval_every, evaluate=evaluate, snapshot_dir=args.snapshot_dir)
    t0 = time.time()
    real = class_quality.real_features_by_class(classifier, root=args.fmnist_dir)
    classes = list(range(gen.c_dim))
    images, labels = class_quality.class_images(gen, classes, args.per_class_n,
                                                seed=args.seed + 100)
    per_class = class_quality.per_class_quality(images, labels, real, classifier,
                                                seed=args.seed, n_boot=args.n_boot)
    record.setdefault("final_metrics", {})["per_class_quality"] = {
        "classes": {data.CLASS_NAMES[c]: {"class": c, **q} for c, q in per_class.items()},
        "n_per_class": args.per_class_n, "truncation": 1.0, "sample_seed": args.seed + 100,
        "reference": "each class's real Fashion-MNIST test images (1000), classifier features",
        "classifier": cls_path.name, "n_boot": args.n_boot, "time_s": round(time.time() - t0, 1),
        "judged": provenance.provenance()}
    for c, q in per_class.items():
        a, m = q["agreement"], q["metrics"]
        log(f"{data.CLASS_NAMES[c]:>12}: agreement {a['value']:.3f} [{a['lo']:.3f}, "
            f"{a['hi']:.3f}], precision {m['precision']['value']:.3f}, recall "
            f"{m['recall']['value']:.3f}, FID {m['fid']['value']:.2f}")
    path = args.out / "fmnist-biggan.safetensors"
    save_checkpoint(gen, path, record)
    log(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    grid = args.grid.with_name("fmnist-biggan-samples.png")
    training.save_class_grid(gen, grid)
    log(f"class grid (one row per class): {grid}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", choices=("classifier", "generator", "all", "judge", "stylegan2",
                                      "biggan", "quality"), default="all")
    p.add_argument("--generator", default="fmnist-dcgan",
                   help="--what quality: which generator in --out to judge")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("data"))
    p.add_argument("--epochs", type=int, default=5, help="classifier epochs")
    p.add_argument("--steps", type=int, default=None,
                   help="GAN steps (default: 2000 at batch 64 for the DCGAN, 8000 at batch 32 "
                        "for the StyleGAN2, 100000 for the BigGAN, which --minutes bounds)")
    p.add_argument("--state", type=Path, default=None,
                   help="StyleGAN2/BigGAN: resumable training state (rerun the same command to "
                        "resume)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="StyleGAN2: record generator_quality every N steps and stop early by the "
                        "rule of training.QualityStop (recall bar: the shipped DCGAN's recall); "
                        "BigGAN: record training.conditional_quality every N steps")
    p.add_argument("--min-precision", type=float, default=0.85,
                   help="StyleGAN2 stop rule: the precision the bar also asks for")
    p.add_argument("--patience", type=int, default=3,
                   help="StyleGAN2 stop rule: evaluations in a row without a recall gain")
    p.add_argument("--snapshot-dir", type=Path, default=None,
                   help="StyleGAN2/BigGAN: also write each evaluated EMA generator here")
    p.add_argument("--minutes", type=float, default=None,
                   help="BigGAN: stop training once this much training time has passed")
    p.add_argument("--batch-size", type=int, default=64, help="BigGAN: batch size")
    p.add_argument("--channel-width", type=int, default=None,
                   help="BigGAN: generator channel width (default: models.fmnist.FMNIST_BIGGAN)")
    p.add_argument("--d-channel-width", type=int, default=16,
                   help="BigGAN: discriminator channel width")
    p.add_argument("--n-stats", type=int, default=None,
                   help="BigGAN: truncations with stored batch-norm statistics (default 51)")
    p.add_argument("--stats-samples", type=int, default=500,
                   help="BigGAN: latents per truncation for the standing statistics")
    p.add_argument("--per-class-n", type=int, default=500,
                   help="BigGAN: images per class for the recorded per-class quality")
    p.add_argument("--n-boot", type=int, default=200,
                   help="BigGAN: bootstrap replicates of the recorded per-class CIs")
    p.add_argument("--z-dim", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fmnist-dir", type=Path, default=None, help="overrides MAGNET_LAB_FMNIST_DIR")
    p.add_argument("--grid", type=Path, default=Path("/tmp/fmnist-dcgan-samples.png"))
    args = p.parse_args(argv)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    t0 = time.time()

    cls_path = args.out / "fmnist-classifier.safetensors"
    classifier = None
    if args.what in ("classifier", "all"):
        classifier, record = training.train_classifier(args.seed, args.epochs, threads=args.threads,
                                                       root=args.fmnist_dir, log=log)
        save_checkpoint(classifier, cls_path, record)
        log(f"wrote {cls_path} ({cls_path.stat().st_size / 1e6:.2f} MB)")
    if args.what in ("generator", "all"):
        gen, record = training.train_dcgan(args.seed, args.steps or 2000, z_dim=args.z_dim,
                                           threads=args.threads, root=args.fmnist_dir, log=log)
        # The classifier is looked up only now, so a classifier run may go on in parallel.
        if classifier is None and cls_path.is_file():
            classifier = load_classifier(cls_path)
        if classifier is not None:
            record["final_metrics"]["class_frequencies_by_classifier"] = judge(
                gen, classifier, cls_path, record["data"]["class_frequencies"], log)
        else:
            log(f"note: {cls_path} missing; the generator's class distribution is not recorded")
        save_generator(gen, record, args.out / "fmnist-dcgan.safetensors", args.grid, log)
    if args.what == "stylegan2":
        evaluate, stop = None, None
        if args.eval_every:
            judge_cls = load_classifier(cls_path)
            bar = load_generator(args.out / "fmnist-dcgan.safetensors").sidecar
            bar = bar["final_metrics"]["quality"]["metrics"]["recall"]["value"]
            stop = training.QualityStop(recall=bar, precision=args.min_precision,
                                        patience=args.patience)
            evaluate = lambda G: experiment.generator_quality(  # noqa: E731
                G, judge_cls, root=args.fmnist_dir)
        gen, record = training.train_stylegan2(args.seed, args.steps or 8000, z_dim=args.z_dim,
                                               threads=args.threads, root=args.fmnist_dir,
                                               state_path=args.state, log=log,
                                               eval_every=args.eval_every, evaluate=evaluate,
                                               stop=stop, snapshot_dir=args.snapshot_dir)
        save_generator(gen, record, args.out / "fmnist-stylegan2.safetensors", args.grid, log)
    if args.what == "biggan":
        train_biggan(args, cls_path, log)
    if args.what == "quality":
        gen_path = args.out / f"{args.generator}.safetensors"
        gen, classifier = load_generator(gen_path), load_classifier(cls_path)
        record = dict(gen.sidecar)
        quality = experiment.generator_quality(gen, classifier, root=args.fmnist_dir)
        quality["judged"] = provenance.provenance()
        record.setdefault("final_metrics", {})["quality"] = quality
        provenance.write_json_atomic(sidecar_path(gen_path), record)
        os.chmod(sidecar_path(gen_path), 0o644)
        log(f"{gen_path.name}: " + ", ".join(
            f"{m} {v['value']:.3f} [{v['lo']:.3f}, {v['hi']:.3f}]"
            for m, v in quality["metrics"].items() if m in ("precision", "recall", "fid")))
        log(f"updated {sidecar_path(gen_path)}")
    if args.what == "judge":
        gen_path = args.out / "fmnist-dcgan.safetensors"
        gen, classifier = load_generator(gen_path), load_classifier(cls_path)
        record = dict(gen.sidecar)
        judged = judge(gen, classifier, cls_path, record["data"]["class_frequencies"], log)
        judged["judged"] = provenance.provenance()
        record["final_metrics"]["class_frequencies_by_classifier"] = judged
        provenance.write_json_atomic(sidecar_path(gen_path), record)
        os.chmod(sidecar_path(gen_path), 0o644)
        log(f"updated {sidecar_path(gen_path)}")
    log(f"done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
