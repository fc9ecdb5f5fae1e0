"""The run folder: every key in it, and its metric streams. The one place that names them.

    config.json                     the run's resolved TrainConfig (resume takes it as defaults)
    checkpoints/step-0000500.pt     complete checkpoints (see facegan.checkpoint)
    latest.json, best.json          pointers to the newest and the best-by-metric checkpoint, with its sha256
    checkpoints.json                every kept checkpoint's step, key and sha256 (resume falls back on it)
    metrics.jsonl                   one training row per log interval: losses, D outputs, img/s, lr
    metric-<name>.jsonl             one row per evaluation of each metric (facegan.metrics), with its protocol
    samples/step-0000500.png        the fixed-latent sample grid at each checkpoint
    lease.json                      who trains the run now (see facegan.lease), while it trains
    loss.png                        the loss curve
    watchdog.json                   the collapse watchdog's verdict, when it fired (facegan.watchdog)
    tb/                             TensorBoard event files (facegan.tensorboard)
    export/                         the generator(s) the train flows export (facegan.export)

A folder holding files but neither config.json nor a checkpoint is not a run: training refuses
to write into it (`check_run_folder`), so no user's file is written over.

Each metric has its own stream (as stylegan2-ada keeps one `metric-*.jsonl` per metric), so a
reader of one never meets the other's rows. Nothing here imports torch.
"""

from __future__ import annotations

import json
import re

from facegan import families, metrics
from facegan.errors import INPUT_ERRORS, ConfigError, foreign_files
from facegan.lease import KEY
from facegan.storage import StorageError, Store, desktop_file, open_store

CONFIG = "config.json"
LATEST = "latest.json"
BEST = "best.json"
CHECKPOINTS = "checkpoints.json"
CKPT_DIR = "checkpoints"
METRICS = "metrics.jsonl"
LOSS_PLOT = "loss.png"
SAMPLES = "samples"
WATCHDOG = "watchdog.json"  # the collapse watchdog's verdict, when it fired (facegan.watchdog)
EXPORT = "export"  # the folder the train flows export the generator(s) into (facegan.export)
LEASE = KEY  # who trains the run now (facegan.lease)
CHECKPOINT_KEY = re.compile(rf"{CKPT_DIR}/step-(\d{{7,}})\.pt")  # a checkpoint's key (fullmatch), its step


def metric_key(name: str) -> str:
    """Key of a metric's stream ("fid" -> "metric-fid.jsonl")."""
    return f"metric-{name}.jsonl"


def checkpoint_key(step: int) -> str:
    """Key of the checkpoint for `step`."""
    return f"{CKPT_DIR}/step-{step:07d}.pt"


def sample_key(step: int) -> str:
    """Key of the sample grid written with the checkpoint of `step`."""
    return f"{SAMPLES}/step-{step:07d}.png"


def check_run_folder(run: Store) -> None:
    """Refuse to train into a folder that is not a run: one that holds anything but the lease of a
    run stopped before its first step (or a file browser's .DS_Store), and neither config.json nor
    a checkpoint (latest.json, checkpoints.json, checkpoints/step-*.pt): a folder of photos, a
    dataset, a user's own loss.png. A ConfigError names the first such file. Nothing but the run's
    own keys is written into a run, so a user's file beside them is safe."""
    keys = run.list()
    if any(key in (CONFIG, LATEST, CHECKPOINTS) or CHECKPOINT_KEY.fullmatch(key) for key in keys):
        return
    # '': the folder is a file (its first write says so)
    foreign = [key for key in keys if key and key != LEASE and not desktop_file(key)]
    if foreign:
        raise ConfigError(foreign_files(run.uri(), foreign, "that are not a run's", CONFIG,
                                        "not a run; train into a new or empty folder"))


def name(uri: str) -> str:
    """The last part of a run URI, for titles and artifact keys ("s3://b/runs/exp1/" -> "exp1")."""
    return uri.rstrip("/").rsplit("/", 1)[-1] or uri


def run_of(uri: str) -> tuple[str, str] | None:
    """(run folder URI, key) of a checkpoint URI inside a run folder (`<run>/checkpoints/step-N.pt`),
    else None."""
    in_run = re.fullmatch(rf"(.+)/({CHECKPOINT_KEY.pattern})", str(uri))
    return (in_run.group(1), in_run.group(2)) if in_run else None


def config_of(uri: str) -> dict | None:
    """The saved config of the run `uri` names: a run folder, or a checkpoint .pt in one (that
    run's); None when there is none (a new run, a .pt elsewhere). See `read_config`."""
    in_run = run_of(uri)
    return read_config(open_store(in_run[0] if in_run else str(uri)))


def source_config(source: str) -> dict | None:
    """The saved config of what `init_from` names: a run's (`config_of`: a .pt in a run is that
    run's), or the one a checkpoint .pt elsewhere holds (the file is read and validated); None when
    there is none (a run without a config)."""
    config = config_of(source)
    if config is None and str(source).endswith(".pt"):
        from facegan import checkpoint  # a checkpoint needs torch; runfolder is read without it

        config = checkpoint.load(source)["config"]
    return config if isinstance(config, dict) else None


def family_for(run: str | None, init_from: str | None = None) -> str:
    """The family of a run that names none: the run's own when it has a saved config (resuming:
    its saved settings are the defaults, its family too), else that of the run or checkpoint
    `init_from` names (fine-tuning it; `source_config`), else the default. A source that cannot be
    read counts as none here (what trains the run says why)."""
    for uri, read in ((run, config_of), (init_from, source_config)):
        try:
            saved = read(uri) if uri and uri.strip() else None
        except (*INPUT_ERRORS, OSError):
            saved = None
        if saved is not None and families.name_of_saved(saved) in families.REGISTRY:
            return families.name_of_saved(saved)
    return families.DEFAULT


def read_config(run: Store) -> dict | None:
    """The run's saved config (a dict), or None for a new run; one that is not a JSON object is a
    StorageError naming it."""
    if not run.exists(CONFIG):
        return None
    saved = run.get_json(CONFIG)
    if not isinstance(saved, dict):
        raise StorageError(f"{run.uri(CONFIG)}: not a run config (a JSON object); repair or remove it")
    return saved


def _read_jsonl(run: Store, key: str) -> list[dict]:
    """The rows of a JSON-lines stream (none when it is absent); a damaged line is a StorageError
    naming the line."""
    if not run.exists(key):
        return []
    rows = []
    for number, line in enumerate(run.get_bytes(key).decode(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            row = None
        if not isinstance(row, dict) or isinstance(row.get("step"), bool) or not isinstance(row.get("step"), int):
            raise StorageError(f"{run.uri(key)}: line {number} is not a metrics row (JSON with an integer step); "
                               "repair or delete that line")
        rows.append(row)
    return rows


def read_metrics(run: Store, upto: int | None = None, names: tuple[str, ...] | None = None) -> tuple[list[dict], dict]:
    """(training rows, {metric name: its rows}) with step <= upto (all when None), for the metrics
    `names` (by default every registered one, facegan.metrics) that have rows. Runs from before the FID stream
    kept FID rows in metrics.jsonl: they are split out here."""
    names = tuple(metrics.REGISTRY) if names is None else names
    rows = _read_jsonl(run, METRICS)
    train = [r for r in rows if not any(name in r for name in names)]
    scored = {}
    for name in names:
        found = [r for r in rows if name in r] + _read_jsonl(run, metric_key(name))
        if found:
            scored[name] = found
    if upto is not None:
        train = [r for r in train if r["step"] <= upto]
        scored = {k: [r for r in v if r["step"] <= upto] for k, v in scored.items()}
        scored = {k: v for k, v in scored.items() if v}
    return train, scored


def jsonl(rows: list[dict]) -> bytes:
    """Rows as JSON lines, the metric streams' format."""
    return "".join(json.dumps(r) + "\n" for r in rows).encode()
