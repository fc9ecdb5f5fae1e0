"""`facegan prepare | train | sample | fid | synth`: the library from a shell."""

from __future__ import annotations

import argparse
import json
import sys

from facegan.config import DEVICE_HELP, ConfigError, TrainConfig


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


MODEL_OPTS = {"resolution": int, "z_dim": int, "ngf": int, "ndf": int, "norm": str}
TRAIN_OPTS = {
    "steps": int, "batch_size": int, "ckpt_every": int, "keep_last": int, "log_every": int,
    "sample_count": int, "seed": int, "lr_g": float, "lr_d": float, "beta1": float, "beta2": float,
    "decay_start": float, "label_smoothing": float, "ema_decay": float, "lr_schedule": str,
    "device": str, "max_seconds": float, "loss": str, "augment": str, "r1_gamma": float,
    "r1_every": int, "fid_every": int, "fid_samples": int, "fid_weights": str, "precision": str,
}
HELP = {
    "resolution": "32, 64 or 128", "norm": "batch or none", "lr_schedule": "constant or linear",
    "device": DEVICE_HELP, "max_seconds": "checkpoint and stop after this many seconds",
    "loss": "bce (non-saturating) or hinge", "augment": "DiffAugment policies, e.g. color,translation,cutout",
    "r1_gamma": "lazy R1 penalty weight (0: off)", "fid_every": "FID every N steps (multiple of ckpt-every)",
    "fid_weights": "URI of pt_inception-2015-12-05-6726825d.pth (https, s3://, path)",
    "precision": "auto (bf16 on GPUs that compute it natively, else fp32), bf16 or fp32",
}


def _add_train_args(p: argparse.ArgumentParser) -> None:
    """Training options; each defaults to its preset's value, else TrainConfig's default."""
    p.add_argument("--dataset", required=True, help="dataset URI (s3://bucket/datasets/x or folder)")
    p.add_argument("--run", required=True, help="run URI; an existing run resumes from latest.json")
    p.add_argument("--preset", default=None, help="udacity32, dcgan64, dcgan64-plus or dcgan128")
    for name, kind in {**MODEL_OPTS, **TRAIN_OPTS}.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=HELP.get(name))
    p.add_argument("--spectral-norm", action="store_true", default=None, help="spectral norm in D")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the networks")
    p.add_argument("--nproc", type=int, default=1, help="data-parallel processes (torchrun), e.g. GPUs")


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The frozen TrainConfig for parsed `facegan train` arguments (preset, then explicit options)."""
    from facegan.presets import resolve

    model = {k: getattr(a, k) for k in (*MODEL_OPTS, "spectral_norm") if getattr(a, k) is not None}
    train = {k: getattr(a, k) for k in (*TRAIN_OPTS, "compile") if getattr(a, k) is not None}
    return TrainConfig.from_dict({"dataset": a.dataset, "run": a.run, **resolve(a.preset, {**train, "model": model})})


def cmd_prepare(a: argparse.Namespace) -> int:
    from facegan.data import prepare

    prepare(a.source, a.out, resolution=a.resolution, workers=a.workers, limit=a.limit)
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from facegan.runtime import GracefulStop
    from facegan.train import Hooks, train

    cfg = config_from_args(a)
    if a.nproc > 1:
        return launch_torchrun(a.nproc, a.argv)
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


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Run this command in `nproc` processes on this machine, as `torchrun --standalone` does
    (torchrun's own launcher API; its CLI would read our --run as an abbreviation of --run-path)."""
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    args = list(argv)
    for i, arg in enumerate(args):  # drop --nproc N / --nproc=N
        if arg == "--nproc":
            del args[i:i + 2]
            break
        if arg.startswith("--nproc="):
            del args[i]
            break
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    print(f"launching {nproc} processes: facegan {' '.join(args)}", flush=True)
    try:
        results = elastic_launch(config, main)(args)
    except ChildFailedError as exc:
        first = next(iter(exc.failures.values()))
        print(f"facegan train: a training process failed (exit {first.exitcode}); see its output above",
              file=sys.stderr)
        return first.exitcode if first.exitcode > 0 else 1
    return max(results.values(), default=0) or 0


def cmd_fid(a: argparse.Namespace) -> int:
    from facegan.metrics import FIDTracker
    from facegan.sample import load_generator

    gen = load_generator(a.checkpoint, ema=not a.no_ema, device=a.device)
    tracker = FIDTracker.create(a.dataset, a.samples, a.weights, a.device, batch=a.batch)
    score = tracker.score(gen.net)
    print(json.dumps({"fid": score, "checkpoint": a.checkpoint, "step": gen.step,
                      "generator": gen.which, "protocol": tracker.protocol}))
    return 0


def cmd_sample(a: argparse.Namespace) -> int:
    from facegan.sample import load_generator, save_samples

    gen = load_generator(a.checkpoint, ema=not a.no_ema, device=a.device)
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
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("fid", help="FID of a checkpoint against a dataset")
    p.add_argument("checkpoint", help="run URI (latest.json) or checkpoint .pt URI")
    p.add_argument("--dataset", required=True, help="dataset URI of the reference images")
    p.add_argument("--samples", type=int, default=10_000, help="generated and real images (default 10k)")
    p.add_argument("--weights", default=None, help="FID Inception weights URI (default $FACEGAN_FID_WEIGHTS)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--no-ema", action="store_true", help="score G instead of the EMA generator")
    p.set_defaults(fn=cmd_fid)

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
    from facegan.metrics import FIDError
    from facegan.storage import StorageError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.fn(args)
    except (ConfigError, DatasetError, StorageError, CheckpointError, FIDError) as exc:
        print(f"facegan {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
