"""`facegan prepare | train | sample | synth`: the library from a shell."""

from __future__ import annotations

import argparse
import sys

from facegan.config import ConfigError, ModelConfig, TrainConfig


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig(dataset="-", run="-")
    p.add_argument("--dataset", required=True, help="dataset URI (s3://bucket/datasets/x or folder)")
    p.add_argument("--run", required=True, help="run URI; an existing run resumes from latest.json")
    p.add_argument("--resolution", type=int, default=d.model.resolution, help="32, 64 or 128")
    p.add_argument("--z-dim", type=int, default=d.model.z_dim)
    p.add_argument("--ngf", type=int, default=d.model.ngf)
    p.add_argument("--ndf", type=int, default=d.model.ndf)
    p.add_argument("--norm", default=d.model.norm, choices=["batch", "none"])
    for name in ("steps", "batch_size", "ckpt_every", "keep_last", "log_every", "sample_count", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("lr_g", "lr_d", "beta1", "beta2", "decay_start", "label_smoothing", "ema_decay"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    p.add_argument("--lr-schedule", default=d.lr_schedule, choices=["constant", "linear"])
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda[:N]")
    p.add_argument("--max-seconds", type=float, default=None, help="checkpoint and stop after this")


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The frozen TrainConfig for parsed `facegan train` arguments."""
    model = ModelConfig(resolution=a.resolution, z_dim=a.z_dim, ngf=a.ngf, ndf=a.ndf, norm=a.norm)
    names = ("steps", "batch_size", "ckpt_every", "keep_last", "log_every", "sample_count", "seed",
             "lr_g", "lr_d", "beta1", "beta2", "decay_start", "label_smoothing", "ema_decay",
             "lr_schedule", "device", "max_seconds")
    return TrainConfig(dataset=a.dataset, run=a.run, model=model, **{n: getattr(a, n) for n in names})


def cmd_prepare(a: argparse.Namespace) -> int:
    from facegan.data import prepare

    prepare(a.source, a.out, resolution=a.resolution, workers=a.workers, limit=a.limit)
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from facegan.train import GracefulStop, Hooks, train

    cfg = config_from_args(a)
    print("config:", cfg.to_dict(), flush=True)
    with GracefulStop() as stop:
        hooks = Hooks(progress=print_progress, should_stop=stop.requested,
                      checkpoint=lambda step, uri: print(f"checkpoint step {step}: {uri}", flush=True))
        result = train(cfg, hooks)
    if stop.signal is not None:
        print(f"interrupted by signal {stop.signal} at step {result.step}; checkpoint {result.checkpoint}",
              file=sys.stderr)
        return 128 + stop.signal
    print(f"done: step {result.step}/{result.total}, checkpoint {result.checkpoint}")
    return 0 if result.finished or result.stopped else 1


def print_progress(step: int, total: int, m: dict) -> None:
    """One progress line: step, losses, D outputs, img/s and ETA."""
    print(
        f"step {step}/{total} ({100 * step / total:.1f}%) loss_d {m['loss_d']:.3f} "
        f"loss_g {m['loss_g']:.3f} D(x) {m['d_real']:.2f} D(G(z)) {m['d_fake']:.2f} "
        f"{m['img_per_s']:.0f} img/s ETA {_fmt_eta(m['eta_s'])}",
        flush=True,
    )


def cmd_sample(a: argparse.Namespace) -> int:
    from facegan.sample import load_generator, save_samples

    gen = load_generator(a.checkpoint, ema=not a.no_ema)
    keys = save_samples(gen, a.out, a.count, seed=a.seed, interpolation_steps=a.interpolation_steps)
    print(f"wrote {len(keys)} images from {gen.which} at step {gen.step} to {a.out}")
    return 0


def cmd_synth(a: argparse.Namespace) -> int:
    from facegan.synthetic import make_faces

    print(f"wrote {a.count} synthetic faces to {make_faces(a.out, a.count, a.seed)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facegan", description="Train DCGANs on CelebA faces.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="raw CelebA (folder or .zip) -> dataset shards + manifest")
    p.add_argument("source", help="img_align_celeba/ folder, its .zip, or any folder of faces")
    p.add_argument("out", help="dataset URI (s3://bucket/datasets/celeba-64 or a folder)")
    p.add_argument("--resolution", type=int, default=64, help="32, 64 or 128")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N files")
    p.set_defaults(fn=cmd_prepare)

    p = sub.add_parser("train", help="train or resume a run")
    _add_train_args(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("sample", help="sample faces from a checkpoint")
    p.add_argument("checkpoint", help="run URI (uses latest.json) or checkpoint .pt URI")
    p.add_argument("out", help="output URI for grid.png, faces/, interpolation.png")
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use G instead of the EMA generator")
    p.add_argument("--interpolation-steps", type=int, default=8)
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("synth", help="write synthetic CelebA-like JPEGs (demo and tests)")
    p.add_argument("out")
    p.add_argument("--count", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `facegan` console script."""
    from facegan.checkpoint import CheckpointError
    from facegan.data import DatasetError
    from facegan.storage import StorageError

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, DatasetError, StorageError, CheckpointError) as exc:
        print(f"facegan {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
