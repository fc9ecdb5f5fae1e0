"""`facegan prepare | train | sample | fid | synth | translate train|apply`: the library from a shell."""

from __future__ import annotations

import argparse
import json
import re
import sys

from facegan import families
from facegan import metrics as metric_registry
from facegan.config import (
    DEVICE_HELP,
    RENAMED,
    SAMPLE_MAX_FACES,
    SEED_LIMIT,
    TRUNCATION_MIN,
    RunConfig,
    all_options,
    nest_options,
    option_type,
    shown_default,
)
from facegan.errors import INPUT_ERRORS, ConfigError

DEFAULT_FAMILY = families.DEFAULT  # what `facegan train` trains without --family
SWAP_FAMILY = families.SWAP  # what `facegan translate train` trains


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _add_train_args(p: argparse.ArgumentParser, family: str, choose: bool) -> None:
    """`facegan train` (or `translate train`) options: one per option field of the family's run
    config class and its model config; `choose`: offer --family (it was read before parsing)."""
    fam = families.get(family)
    cls = fam.config
    if choose:
        p.add_argument("--family", default=DEFAULT_FAMILY, choices=list(families.REGISTRY),
                       help=f"model family: {'; '.join(f'{f.name}: {f.what}' for f in families.REGISTRY.values())} "
                            f"(--help after --family F lists F's options) [default: the family of the --run "
                            f"when resuming it, else of the --init-from run or checkpoint, else {DEFAULT_FAMILY}]")
    p.set_defaults(family=family)
    p.add_argument("--dataset", required=True, help="dataset URI (s3://bucket/datasets/x or a folder)")
    p.add_argument("--run", required=True,
                   help="run URI; a run with a checkpoint resumes from it, its saved settings (its family too) as "
                        "the defaults")
    p.add_argument("--preset", default=None, choices=list(fam.presets), metavar="PRESET",
                   help=f"starting settings: {', '.join(fam.presets)}")
    for f in all_options(cls):
        flag = f"--{f.name.replace('_', '-')}"
        text = f"{f.metadata['help']} [default: {shown_default(f)}]".replace("%", "%%")
        if option_type(f) is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            p.add_argument(flag, type=PARSERS.get(option_type(f), option_type(f)), default=None,
                           metavar=f.name.upper(), help=text)
    p.add_argument("--nproc", type=count(1), default=1,
                   help="data-parallel processes (torchrun), one per GPU [default: 1]")
    for old, new in RENAMED.items():  # the flags of options renamed since dd87acf answer with the new name
        p.add_argument(f"--{old.replace('_', '-')}", action=Renamed, new=new, help=argparse.SUPPRESS)


class Renamed(argparse.Action):
    """A flag that was renamed: a one-line usage error that names the new flag."""

    def __init__(self, *args, new: str, **kwargs) -> None:
        super().__init__(*args, nargs=1, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ARG002 - argparse's signature
        hint = " (with --metrics fid, the default)" if self.new == "metric_every" else ""
        parser.error(f"{option_string} is now --{self.new.replace('_', '-')}{hint}")


def given_options(a: argparse.Namespace) -> dict:
    """The options of the parsed command's family given on the command line (nested, None left out)."""
    cls = families.get(a.family).config
    return nest_options({f.name: getattr(a, f.name) for f in all_options(cls)}, cls)


def cmd_prepare(a: argparse.Namespace) -> int:
    from facegan.prepare import prepare

    prepare(a.source, a.out, resolution=a.resolution, workers=a.workers, limit=a.limit, attributes=a.attributes)
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    """`facegan train [--family F]` and `facegan translate train`: train or resume a run."""
    from facegan.loop import config_for_run

    cfg = config_for_run(a.dataset, a.run, a.preset, given_options(a), a.family)  # resuming: the run's first
    if a.nproc > 1:
        if cfg.batch_size % a.nproc:  # before starting any process
            raise ConfigError(f"batch_size={cfg.batch_size} must divide evenly over {a.nproc} processes")
        return launch_torchrun(a.nproc, a.argv)
    return run_training(cfg)


def run_training(cfg: RunConfig) -> int:
    """`facegan.loop.fit(cfg, hooks)` with progress lines and SIGTERM/SIGINT handling: a signal
    checkpoints and exits 128 + signal."""
    from facegan.loop import Hooks, fit
    from facegan.runtime import GracefulStop

    with GracefulStop() as stop:
        hooks = Hooks(progress=progress_printer(families.of_config(cfg)), should_stop=stop.requested,
                      checkpoint=lambda step, uri: print(f"checkpoint step {step}: {uri}", flush=True))
        result = fit(cfg, hooks)
    if stop.signal is not None:
        print(f"interrupted by signal {stop.signal} at step {result.step}; checkpoint {result.checkpoint}",
              file=sys.stderr)
        return 128 + stop.signal
    print(f"done: step {result.step}/{result.total}, checkpoint {result.checkpoint}")
    return 0 if result.finished or result.stopped else 1


def progress_printer(family: families.Family):
    """The `progress` hook for a family's runs: one line per log window with the step, the
    family's shown scalars (losses, D outputs, ...), img/s and ETA."""
    def show(step: int, total: int, m: dict) -> None:
        middle = " ".join(f"{s.label} {m[s.key]:{s.fmt}}" for s in family.scalars if s.shown)
        print(f"step {step}/{total} ({100 * step / total:.1f}%) {middle} {m['img_per_s']:.0f} img/s "
              f"ETA {_fmt_eta(m['eta_s'])}", flush=True)

    return show


def cmd_translate_apply(a: argparse.Namespace) -> int:
    from facegan.translate import apply

    apply(a.run, a.input, a.out, a.direction, device=a.device)
    return 0


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


def cmd_score(a: argparse.Namespace) -> int:
    from facegan.api import score

    print(json.dumps(score(a.checkpoint, a.dataset, a.metrics, a.samples, a.weights, a.device, not a.no_ema,
                           a.resize, a.batch)))
    return 0


def cmd_sample(a: argparse.Namespace) -> int:
    from facegan.sample import face_key, load_generator, save_samples

    gen = load_generator(a.checkpoint, ema=not a.no_ema, device=a.device)
    save_samples(gen, a.out, a.count, seed=a.seed, interpolation_steps=a.interpolation_steps,
                 truncation=a.truncation, source=a.checkpoint)
    print(f"wrote {a.count} faces ({face_key(0, a.count)} ...), grid.png, interpolation.png and sample.json "
          f"({a.interpolation_steps} steps) from {gen.which} at step {gen.step} to {a.out}"
          + (f" (truncation {a.truncation:g})" if a.truncation != 1 else ""))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from facegan.export import export

    export(a.source, a.out, log=print)
    return 0


def cmd_tensorboard(a: argparse.Namespace) -> int:
    import importlib.util
    import shutil
    import signal
    import subprocess
    import tempfile

    from facegan import tensorboard
    from facegan.errors import StorageError
    from facegan.storage import open_store

    run = open_store(a.run)
    out = a.out or tempfile.mkdtemp(prefix="facegan-tb-")
    done = False  # a temporary folder outlives the command only when it is what --fetch-only printed
    try:
        files = tensorboard.fetch(run, out)
        if not files:
            raise StorageError(f"{run.uri(tensorboard.DIR)}: no event files; is {a.run} a run trained with "
                               "--tensorboard (the default) that has reached a checkpoint?")
        print(f"{len(files)} event files of {a.run} in {out}", flush=True)
        if a.fetch_only:
            done = True
            return 0
        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("tensorboard is not installed here (pip install tensorboard; `make install` has it)")
        server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(out), "--port",
                                   str(a.port), "--bind_all" if a.bind_all else "--host=127.0.0.1"])
        signal.signal(signal.SIGTERM, lambda *_: server.terminate())  # (Ctrl-C reaches both processes)
        try:
            code = server.wait()
        except KeyboardInterrupt:
            code = server.wait()
        return 128 - code if code < 0 else code  # ended by a signal: the shell's 128 + N
    finally:
        if not a.out and not done:
            shutil.rmtree(out, ignore_errors=True)


def cmd_synth(a: argparse.Namespace) -> int:
    from facegan.attributes import TABLE_NAME
    from facegan.synthetic import make_faces

    folder = make_faces(a.out, a.count, a.seed, makeup=a.makeup)
    table = f" and their attributes to {folder.parent / TABLE_NAME}" if a.makeup is not None else ""
    print(f"wrote {a.count} synthetic faces to {folder}{table}")
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): `facegan train: error: ... (see --help)`."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_INT = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() also takes "2_0", " 7 " and "٣"
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)


def integer(text: str) -> int:
    """An argparse type: an integer written in plain ASCII digits (int() would take "2_0" and "٣")."""
    if not _INT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    return int(text)


def number(text: str) -> float:
    """An argparse type: a number written plainly (float() would take "1_0" and non-ASCII digits);
    nan and inf are parsed here and refused by the config with the option's name."""
    if not _FLOAT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    return float(text)


PARSERS = {int: integer, float: number}  # the CLI's parser of each option type (bool and str: argparse's own)


def count(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        value = integer(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range, must be at least {low}"
                                             + (f" and at most {high}" if high is not None else ""))
        return value

    parse.__name__ = "count"
    return parse


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    value = number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range, must be in [0, 1]")
    return value


def truncation(text: str) -> float:
    """An argparse type: a truncation psi, a number from TRUNCATION_MIN to 1 (facegan.sample.latents)."""
    value = number(text)
    if not TRUNCATION_MIN <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range, must be from {TRUNCATION_MIN} to 1 "
                                         "(1: no truncation)")
    return value


def family_in(argv: list[str]) -> str:
    """The family of a `facegan train` command line, read before the parser is built (the train
    options depend on it): `--family`'s value; without one, the family of the run `--run` names
    (resuming it: its saved settings are the defaults, its family too), else of the run
    `--init-from` names (fine-tuning it), else the default."""
    given = _value_of(argv, "--family")
    if given is not None:
        return given if given in families.REGISTRY else DEFAULT_FAMILY  # an unknown one: argparse says so
    from facegan import runfolder

    return runfolder.family_for(_value_of(argv, "--run"), _value_of(argv, "--init-from"))


def _value_of(argv: list[str], flag: str) -> str | None:
    """The value of `flag` in a command line (`--flag V` or `--flag=V`), None without one."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    return None


def build_parser(family: str = DEFAULT_FAMILY) -> argparse.ArgumentParser:
    """The `facegan` parser; `family`: whose options `facegan train` takes (see `family_in`)."""
    parser = Parser(prog="facegan",
                    description="Train GANs on CelebA faces (DCGAN, ResNet SNGAN), and attribute swaps (CycleGAN).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="raw CelebA (folder or .zip) -> dataset shards + manifest")
    p.add_argument("source", help="img_align_celeba/ folder, its .zip, or any folder of faces")
    p.add_argument("out", help="dataset URI (s3://bucket/datasets/celeba-64 or a folder)")
    p.add_argument("--resolution", type=integer, default=64, help="32, 64 or 128")
    p.add_argument("--workers", type=count(1), default=None, help="processes (default: all cores)")
    p.add_argument("--limit", type=count(1), default=None, help="use only the first N files")
    p.add_argument("--attributes", default=None,
                   help="CelebA's list_attr_celeba.txt (a path or s3:// URI): store its labels with the images")
    p.set_defaults(fn=cmd_prepare)

    p = sub.add_parser("train", help="train or resume a run of any model family (--family)")
    _add_train_args(p, family, choose=True)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("sample", help="sample faces from a checkpoint")
    p.add_argument("checkpoint", help="run URI (uses latest.json), checkpoint .pt URI or export folder")
    p.add_argument("out", help="output URI for grid.png, faces/, interpolation.png: a folder of its own (not a "
                               "run, dataset or export), or an earlier sample's")
    p.add_argument("--count", type=count(1, SAMPLE_MAX_FACES), default=16,
                   help="faces to write, a batch at a time (grid.png shows the first 64) [default: 16]")
    p.add_argument("--seed", type=count(0, SEED_LIMIT - 1), default=0, help="first seed (faces use seed, seed+1, ...)")
    p.add_argument("--no-ema", action="store_true", help="use G instead of the EMA generator")
    p.add_argument("--interpolation-steps", type=count(2), default=8, help="frames of the latent walk [default: 8]")
    p.add_argument("--truncation", type=truncation, default=1.0, metavar="PSI",
                   help="the truncation trick: keep latents within the central PSI of the normal's mass "
                        "(values beyond are drawn again); fewer odd faces, less variety. 1 = off [default: 1]")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(fn=cmd_sample)

    for name, what in (("score", "FID, KID, precision and recall (--metrics) of a checkpoint against a dataset, "
                                 "one JSON line"),
                       ("fid", "FID of a checkpoint against a dataset (facegan score: the same command)")):
        p = sub.add_parser(name, help=what)  # a parser each, so that usage and errors name what was typed
        p.add_argument("checkpoint", help="run URI (latest.json), checkpoint .pt URI or export folder")
        p.add_argument("--dataset", required=True,
                       help="dataset URI of the reference images (for an attribute swap, also the faces it translates)")
        p.add_argument("--samples", type=count(2), default=10_000, help="generated and real images (default 10k)")
        p.add_argument("--weights", default=None, help="FID Inception weights URI (default $FACEGAN_FID_WEIGHTS)")
        p.add_argument("--device", default="auto", help=DEVICE_HELP)
        p.add_argument("--batch", type=count(1), default=50, help="Inception batch size [default: 50]")
        p.add_argument("--resize", type=count(75, 299), default=299,
                       help="Inception input side: 299 is the FID protocol; smaller only for smoke checks "
                            "[default: 299]")
        p.add_argument("--metrics", default="fid", help="a comma list of " + ", ".join(metric_registry.REGISTRY)
                       + " (one Inception pass for all) [default: fid]")
        p.add_argument("--no-ema", action="store_true", help="score G instead of the EMA generator")
        p.set_defaults(fn=cmd_score)

    p = sub.add_parser("export", help="export a run's generator(s) for use without facegan: safetensors, "
                                      "torch.export (.pt2), ONNX (checked with ONNX Runtime) and a model card")
    p.add_argument("source", help="run URI (its best checkpoint, else its latest) or checkpoint .pt URI")
    p.add_argument("out", help="output folder URI (a folder or s3://...): empty, or an earlier export")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("tensorboard", help="fetch a run's TensorBoard event files (<run>/tb/, from S3 too) and "
                                           "serve them with TensorBoard")
    p.add_argument("run", help="run URI (a folder or s3://...)")
    p.add_argument("--out", default="", help="folder to fetch into (default: a temporary folder, removed when "
                                             "TensorBoard ends; kept with --fetch-only)")
    p.add_argument("--port", type=count(0, 65535), default=6006, help="TensorBoard's port (6006)")
    p.add_argument("--bind-all", action="store_true", help="serve on every interface, not only 127.0.0.1")
    p.add_argument("--fetch-only", action="store_true", help="only fetch the files, print where, and exit")
    p.set_defaults(fn=cmd_tensorboard)

    p = sub.add_parser("synth", help="write synthetic CelebA-like JPEGs (demo and tests)")
    p.add_argument("out", help="folder to write the JPEGs into (000001.jpg, ... as in img_align_celeba/)")
    p.add_argument("--count", type=count(1), default=256, help="how many faces [default: 256]")
    p.add_argument("--seed", type=count(0, SEED_LIMIT - 1), default=0,
                   help="the same seed draws the same faces [default: 0]")
    p.add_argument("--makeup", type=fraction, default=None,
                   help="share of faces with eye shadow and lipstick; also writes list_attr_celeba.txt beside OUT")
    p.set_defaults(fn=cmd_synth)

    translate = sub.add_parser("translate", help="attribute swap (CycleGAN): train a run, apply it to faces")
    tsub = translate.add_subparsers(dest="action", required=True)
    p = tsub.add_parser("train", help="train or resume an attribute-swap run (A = attribute on, B = off); "
                                      f"the same as `facegan train --family {SWAP_FAMILY}`")
    _add_train_args(p, SWAP_FAMILY, choose=False)
    p.set_defaults(fn=cmd_train)
    p = tsub.add_parser("apply", help="translate a face image or a folder of them with a trained run")
    p.add_argument("run", help="run URI (uses latest.json), checkpoint .pt URI, or a folder `facegan export` wrote")
    p.add_argument("input", help="an image file or a folder of images (cropped and resized as prepare does)")
    p.add_argument("out", help="output URI (a folder or s3://...) for <name>.png")
    p.add_argument("--direction", required=True, choices=("add", "remove"),
                   help="add the attribute (B -> A) or remove it (A -> B)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(fn=cmd_translate_apply)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `facegan` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(family_in(argv)).parse_args(argv)  # --help ends here, before anything imports torch
    except SystemExit as exc:  # --help (0) or a one-line usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = argv
    try:
        return args.fn(args)
    except INPUT_ERRORS as exc:
        command = f"{args.command} {args.action}" if getattr(args, "action", None) else args.command
        print(f"facegan {command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
