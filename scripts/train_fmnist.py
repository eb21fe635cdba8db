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
--what quality    : record --generator's plain-sampling precision/recall/FID (+ CIs) against the
                    held-out imbalanced test set (experiment.generator_quality) in its sidecar.
    python scripts/train_fmnist.py --what stylegan2 --state /tmp/sg2.state --out data/
    python scripts/train_fmnist.py --what quality --generator fmnist-stylegan2 --out data/
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

from magnet_lab import experiment, provenance, training
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", choices=("classifier", "generator", "all", "judge", "stylegan2",
                                      "quality"), default="all")
    p.add_argument("--generator", default="fmnist-dcgan",
                   help="--what quality: which generator in --out to judge")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("data"))
    p.add_argument("--epochs", type=int, default=5, help="classifier epochs")
    p.add_argument("--steps", type=int, default=None,
                   help="GAN steps (default: 2000 at batch 64 for the DCGAN, 8000 at batch 32 "
                        "for the StyleGAN2)")
    p.add_argument("--state", type=Path, default=None,
                   help="StyleGAN2: resumable training state (rerun the same command to resume)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="StyleGAN2: record generator_quality every N steps and stop early by the "
                        "rule of training.QualityStop (recall bar: the shipped DCGAN's recall)")
    p.add_argument("--min-precision", type=float, default=0.85,
                   help="StyleGAN2 stop rule: the precision the bar also asks for")
    p.add_argument("--patience", type=int, default=3,
                   help="StyleGAN2 stop rule: evaluations in a row without a recall gain")
    p.add_argument("--snapshot-dir", type=Path, default=None,
                   help="StyleGAN2: also write each evaluated EMA generator here")
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
