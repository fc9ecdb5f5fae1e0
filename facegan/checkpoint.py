"""Complete, exactly-resumable checkpoints in any store.

A run folder holds::

    checkpoints/step-0000500.pt   torch.save of a plain dict of tensors and JSON-able values
    latest.json                   {"step": 500, "key": "checkpoints/step-0000500.pt", "sha256": ...}
    best.json                     same shape, for the best checkpoint by a metric (optional)
    checkpoints.json              {"checkpoints": [{"step", "key", "sha256", "bytes"}, ...]}: every kept one

A checkpoint holds its model family's state dicts (a DCGAN's G, D, G_ema and both optimizers;
a CycleGAN's two generators, two PatchGANs, both optimizers and the fake-image pool), the
step, every RNG state (torch, CUDA, numpy, python), the config, the dataset manifest id, the
family and a format version. It is loaded with
`torch.load(weights_only=True)`, so a pickle payload is refused. `latest.json` is written only
after its checkpoint is complete, so a reader never sees half a checkpoint; old checkpoints
are pruned to the newest `keep_last` plus the best.

Every load verifies the file: its sha256 must equal the one the pointer (or, for a `.pt` named
directly, the run's checkpoint list) recorded, so a flipped byte is refused naming the file, and
the step must be a plain non-negative integer. Resume (`load_for_resume`) falls back to the newest
intact checkpoint of the list when latest.json is missing, unreadable or names a damaged file, says
which it skipped, and the trainer points latest.json at it (`point_latest_at`); a run folder that
holds checkpoints is never taken for a new run.

`CheckpointWriter` serialises and uploads on a background thread so training never waits for
storage; `save()` only queues copies of the live tensors (`to_host`) and returns. On CUDA the
copies go to pinned host memory behind the step's kernels, and the writer thread waits for them;
the sample grid and loss curve are rendered on that thread too (`Render`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import pickle
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from facegan import families
from facegan.errors import CheckpointError  # noqa: F401 - exported here too
from facegan.runfolder import BEST, CHECKPOINT_KEY, CHECKPOINTS, CKPT_DIR, LATEST, checkpoint_key, run_of
from facegan.storage import StorageError, Store, open_store, split_uri

OUTAGE_LIMIT_S = 900.0  # how long the writer retries an unreachable store before the run fails
FORMAT = "facegan-checkpoint"
VERSION = 1
# what every checkpoint holds, by type (make_state adds step, config, dataset id and RNG); the state
# dicts of its model family are that family's `parts` (facegan.families)
PARTS = {"step": int, "config": dict, "dataset_id": str, "rng": dict}
MAX_STEP = 10**9  # far beyond any run; a stored step outside [0, MAX_STEP] is damage, not a step


# ------------------------------------------------------------------ RNG state


def rng_state() -> dict[str, Any]:
    """Every RNG state a run draws from, as tensors and plain values (weights_only-safe)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured; a damaged state is a CheckpointError."""
    try:
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state(
            ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
        )
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(f"damaged RNG state in the checkpoint ({type(exc).__name__}: {exc})") from None


# ------------------------------------------------------------------ (de)serialising


def to_host(obj: Any) -> tuple[Any, Callable[[], None]]:
    """A copy of nested dicts/lists/tuples with every tensor copied to host memory, and a `ready()`
    to call before reading the copies.

    The copies reflect the tensors as they are now, whatever later steps do to them. A CUDA tensor
    is copied into pinned memory without blocking (the copy is queued on the current stream, in
    order with the step's kernels): `ready()` waits for that copy, so the training thread never
    waits for the GPU and the GPU never waits for a pageable copy. CPU tensors are cloned at once.
    """
    queued: list[torch.Event] = []
    renders: dict[int, Render] = {}  # a Render met twice (the grid, also inside the events) is copied once

    def copy(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            x = x.detach()
            if x.device.type != "cuda":
                return x.to("cpu", copy=True)
            out = torch.empty_like(x, device="cpu", pin_memory=True).copy_(x, non_blocking=True)
            if not queued:
                queued.append(torch.cuda.Event())
            return out
        if isinstance(x, dict):
            return {k: copy(v) for k, v in x.items()}
        if isinstance(x, Host):
            return x.value
        if isinstance(x, Render):
            if id(x) not in renders:
                renders[id(x)] = Render(x.fn, *copy(x.args), **copy(x.kwargs))
            return renders[id(x)]
        if isinstance(x, (list, tuple)):
            return type(x)(copy(v) for v in x)
        return x

    host = copy(obj)
    for event in queued:
        event.record()  # after every copy above: they are all on the current stream
    return host, (queued[0].synchronize if queued else lambda: None)


class Host:
    """Data already in host memory that nothing changes later (e.g. a snapshot of the training rows,
    whose dicts are never edited once appended): `to_host` hands `value` over as it is instead of
    walking it for tensors, so queueing a checkpoint costs the training thread no time per row."""

    def __init__(self, value: Any) -> None:
        self.value = value


class Render:
    """A file rendered on the writer's thread as `fn(*args, **kwargs)`, after its tensor arguments
    were copied off the device with the state (`to_host`): e.g. the sample grid's PNG encoding.
    It is rendered once: a second call (the grid inside the TensorBoard events, a retried upload)
    returns the same bytes."""

    def __init__(self, fn: Callable[..., bytes], *args: Any, **kwargs: Any) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.rendered: bytes | None = None

    def __call__(self) -> bytes:
        if self.rendered is None:
            self.rendered = self.fn(*self.args, **self.kwargs)
        return self.rendered


def to_bytes(state: dict[str, Any]) -> bytes:
    """Serialise a checkpoint dict (tensors must already be on CPU)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def from_bytes(data: bytes, where: str) -> dict[str, Any]:
    """Load and validate a checkpoint; refuses pickled code and foreign or newer formats."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc), re.IGNORECASE)
        if "Weights only load failed" in str(exc) and found:  # the weights-only unpickler met an import
            raise CheckpointError(f"{where}: refused: the file holds code, not only tensors (it imports "
                                  f"{found.group(1)}); facegan never runs code from a checkpoint") from None
        raise CheckpointError(f"{where}: not a loadable facegan checkpoint ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for bad input
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{where}: not a loadable facegan checkpoint ({first[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a facegan checkpoint (format tag missing)")
    version = state.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{where}: checkpoint format version {version!r} is newer than this facegan ({VERSION})"
        )
    family = families.name_of_state(state)
    if not isinstance(family, str) or family not in families.REGISTRY:
        raise CheckpointError(f"{where}: model family {family!r} is not one of {', '.join(families.REGISTRY)}")
    parts = {**PARTS, **dict.fromkeys(families.get(family).parts, dict)}
    missing = [k for k, kind in parts.items() if not isinstance(state.get(k), kind)]
    if missing:
        raise CheckpointError(f"{where}: damaged checkpoint, {', '.join(missing)} missing or of the wrong type")
    if not valid_step(state["step"]):
        raise CheckpointError(f"{where}: damaged checkpoint, step {state['step']!r} is not an integer "
                              f"from 0 to {MAX_STEP}")
    return state


def valid_step(step: Any) -> bool:
    """Whether a stored step is one a run can be at (an int, not a bool, in [0, MAX_STEP])."""
    return isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= MAX_STEP


def sha256(data: bytes) -> str:
    """The hex sha256 a checkpoint is recorded and verified by."""
    return hashlib.sha256(data).hexdigest()


def verify(data: bytes, record: dict, where: str, by: str) -> None:
    """Check `data` against the sha256 in `record` (a pointer or a checkpoint list entry, read from
    `by`); a mismatch is a CheckpointError naming the file (and both sizes)."""
    digest = sha256(data)
    if digest != record["sha256"]:
        raise CheckpointError(f"{where}: damaged: its sha256 is {digest[:12]}..., {by} recorded "
                              f"{str(record['sha256'])[:12]}... ({len(data)} bytes, recorded {record.get('bytes')})")


def restore(obj, state: dict[str, Any], key: str, where: str) -> None:
    """`obj.load_state_dict(state[key])`; a part that does not fit is a CheckpointError naming it."""
    try:
        obj.load_state_dict(state[key])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{where}: {key} does not fit this model ({first})") from None


def make_state(step: int, config: dict, dataset_id: str, family: str, training: dict | None = None,
               watchdog: dict | None = None, **parts: Any) -> dict[str, Any]:
    """Assemble a checkpoint dict: the given parts (state dicts: the family's `parts`) plus
    step, config, RNG, tags, `training` (how it was trained: see `training_record`) and `watchdog`
    (the collapse watchdog's running signals, `facegan.watchdog.Watchdog.state`)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "family": family,
        "step": step,
        "config": config,
        "dataset_id": dataset_id,
        "rng": rng_state(),
        "saved_at": time.time(),
        **({"training": training} if training is not None else {}),
        **({"watchdog": watchdog} if watchdog is not None else {}),
        **parts,
    }


def training_record(state: dict[str, Any]) -> dict[str, Any]:
    """How a checkpoint was trained, as `facegan.loop.fit` records it: {"seconds": wall-clock
    seconds of training up to its step, over every session, "device": what trained it,
    "processes": data-parallel processes, "dataset_images": images in the dataset}; {} for a
    checkpoint written before facegan kept the record, or one whose record is damaged."""
    record = state.get("training")
    if not isinstance(record, dict):
        return {}
    kinds = {"seconds": (int, float), "device": str, "processes": int, "dataset_images": int}
    if any(not isinstance(record.get(k), t) or isinstance(record.get(k), bool) for k, t in kinds.items()):
        return {}
    return {k: record[k] for k in kinds}


# ------------------------------------------------------------------ run folder


def _record_problem(record: Any) -> str | None:
    """What is wrong with a pointer or checkpoint list entry (None: usable). An entry without a
    sha256 is a run from before checksums: loadable, not verifiable."""
    if not isinstance(record, dict) or not isinstance(record.get("key"), str) \
            or not CHECKPOINT_KEY.fullmatch(record["key"]):
        return "has no checkpoint key"
    if not valid_step(record.get("step")) or record["key"] != checkpoint_key(record["step"]):
        return f"has a step ({record.get('step')!r}) that does not match its key"
    sha = record.get("sha256", "")
    if not isinstance(sha, str) or (sha and not re.fullmatch(r"[0-9a-f]{64}", sha)):
        return "has a malformed sha256"
    return None


def read_pointer(run: Store, name: str = LATEST) -> dict | None:
    """The parsed, checked pointer (`latest.json` / `best.json`), or None when the run has none. A
    damaged one is a CheckpointError; an unreachable store a transient StorageError."""
    if not run.exists(name):
        return None
    try:
        pointer = run.get_json(name)
    except StorageError as exc:
        if exc.transient:  # the store is away, the file may be fine: raised as it is (a retry may read it)
            raise
        raise CheckpointError(str(exc)) from None
    problem = _record_problem(pointer)
    if problem:
        raise CheckpointError(f"{run.uri(name)}: damaged pointer, it {problem}")
    return pointer


def _load_record(run: Store, record: dict, by: str) -> dict[str, Any]:
    """Load, verify and validate the checkpoint a pointer or list entry names."""
    where = run.uri(record["key"])
    try:
        data = run.get_bytes(record["key"])
    except StorageError as exc:
        if exc.transient:  # not missing: the store is away (resume must not fall back to an older one)
            raise
        raise CheckpointError(f"{run.uri(by)} points at a missing checkpoint: {exc}") from None
    if record.get("sha256"):
        verify(data, record, where, by)
    state = from_bytes(data, where)
    if state["step"] != record["step"]:
        raise CheckpointError(f"{where}: damaged: it holds step {state['step']}, {by} says {record['step']}")
    return state


def load_run(run: Store, which: str = LATEST) -> dict[str, Any] | None:
    """Load (and verify) the checkpoint a run's pointer names; None when the run has no pointer yet."""
    pointer = read_pointer(run, which)
    if pointer is None:
        return None
    return _load_record(run, pointer, which)


def read_index(run: Store) -> list[dict]:
    """The run's checkpoint list (`checkpoints.json`), oldest first; [] when it has none. Damaged
    entries are left out (their checkpoints cannot be verified); a damaged list is [] likewise."""
    if not run.exists(CHECKPOINTS):
        return []
    try:
        doc = run.get_json(CHECKPOINTS)
    except StorageError:
        return []
    entries = doc.get("checkpoints") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return []
    good = [e for e in entries if _record_problem(e) is None and e.get("sha256")]
    return sorted(good, key=lambda e: e["step"])


def load_for_resume(run: Store, log: Callable[[str], None]) -> tuple[dict[str, Any] | None, dict | None]:
    """(the checkpoint a run resumes from, the list entry it fell back to or None). The checkpoint
    is latest.json's, verified; when that is missing, unreadable or damaged, the newest intact one
    of the checkpoint list (each one skipped is logged), whose entry `point_latest_at` then writes
    into latest.json. (None, None) for a new run: a folder without checkpoints. A folder that holds
    checkpoints of which none is intact is a CheckpointError naming them: it is never started
    afresh over them."""
    skipped = []
    try:
        pointer = read_pointer(run)
        if pointer is not None:
            state = _load_record(run, pointer, LATEST)
            if not pointer.get("sha256"):
                log(f"{run.uri(LATEST)}: written before facegan recorded checksums; not verified")
            return state, None
        if not list_checkpoints(run):
            return None, None  # a new run
        reason = f"{LATEST} is missing"
    except CheckpointError as exc:
        reason = str(exc)
    log(f"cannot resume from {LATEST}: {reason}")
    for entry in reversed(read_index(run)):
        try:
            state = _load_record(run, entry, CHECKPOINTS)
        except CheckpointError as exc:
            skipped.append(entry["key"])
            log(f"skipped {entry['key']}: {exc}")
            continue
        log(f"resuming from {entry['key']}, the newest intact checkpoint (sha256 verified)"
            + (f"; skipped {', '.join(skipped)}" if skipped else ""))
        return state, entry
    present = [key for _, key in list_checkpoints(run)]
    if not present:
        return None, None
    raise CheckpointError(
        f"{run.root} holds {len(present)} checkpoint(s) ({present[0]} .. {present[-1]}) but none that can be "
        f"verified intact ({reason}; {CHECKPOINTS} lists {'only damaged ones' if skipped else 'none of them'}); "
        "refusing to start a new run over them: move them away or train into another run")


def _pointer_to(run: Store, entry: dict, **more) -> dict:
    """A pointer (latest.json / best.json) naming a checkpoint list entry."""
    record = {k: entry[k] for k in ("step", "key", "sha256", "bytes") if k in entry}
    return {**record, "uri": run.uri(entry["key"]), "written_at": time.time(), **more}


def point_latest_at(run: Store, entry: dict) -> None:
    """Write latest.json naming `entry`, an intact checkpoint of the run's list that resume fell
    back to: the run's other readers (sample, the gallery, export, a finished run's next session)
    find it too, and a latest.json that cannot be written is refused before any step trains."""
    run.put_json(LATEST, _pointer_to(run, entry))


def repair_best(run: Store, name: str, rows: list[dict], lower_is_better: bool, log: Callable[[str], None]) -> None:
    """A damaged best.json names the best checkpoint again: the best finite `name` score of `rows`
    (the metric's rows, `runfolder.read_metrics`) whose checkpoint the list still holds. A missing
    best.json is left missing (no score chose one yet), and so is a damaged one when no listed
    checkpoint has a score (`write_checkpoint` then prunes none until one does)."""
    try:
        read_pointer(run, BEST)
        return
    except CheckpointError as exc:
        reason = str(exc)
    listed = {e["step"]: e for e in read_index(run)}
    scores = [(r[name], r["step"]) for r in rows if r.get("step") in listed
              and isinstance(r.get(name), int | float) and math.isfinite(r[name])]
    if not scores:
        log(f"{reason}; no listed checkpoint has a {name} score to name instead: none is pruned until one has")
        return
    value, step = (min if lower_is_better else max)(scores)
    run.put_json(BEST, _pointer_to(run, listed[step], metric={"name": name, "value": value}))
    log(f"{reason}; rebuilt from the run's {name} scores: step {step} ({name} {value:.4g})")


def load(uri: str) -> dict[str, Any]:
    """Load a checkpoint from a run folder URI (its latest) or a `.pt` URI, verified against the
    sha256 recorded for it (a `.pt` outside a run folder, or from before checksums, is validated only)."""
    uri = str(uri)
    if uri.endswith(".pt"):
        return _load_pt(uri)[0]
    run = open_store(uri)
    state = load_run(run)
    if state is None:
        raise CheckpointError(f"{uri}: no checkpoint ({LATEST} missing); {_what_instead(run)}")
    return state


def _load_pt(uri: str, digest: bool = False) -> tuple[dict[str, Any], Store | None, str | None]:
    """A `.pt` checkpoint: (its state, its run folder or None, its sha256). One in its run's list is
    verified against the sha256 recorded there; one outside it is validated only, its sha256
    computed (when `digest`) from the bytes it was loaded from: the file is read once."""
    in_run = run_of(uri)  # a run folder's checkpoint
    run = open_store(in_run[0]) if in_run else None
    entry = next((e for e in read_index(run) if e["key"] == in_run[1]), None) if run else None
    if entry is not None:
        return _load_record(run, entry, CHECKPOINTS), run, entry["sha256"]
    store, key = split_uri(uri)
    try:
        data = store.get_bytes(key)
    except StorageError as exc:
        raise CheckpointError(f"checkpoint {exc}") from None
    return from_bytes(data, uri), run, sha256(data) if digest else None


def load_chosen(source: str) -> tuple[dict[str, Any], Store | None, dict]:
    """The checkpoint a run's user means by `source`, verified: a run folder's best (best.json,
    when a metric chose one), else its latest; or a `.pt` named directly. Returns (checkpoint,
    its run folder or None, {"which": "best" / "latest" / "named", "uri", "sha256"}): what
    `facegan export` exports and a fine-tuned run starts from (`init_from`)."""
    source = str(source)
    if source.endswith(".pt"):
        state, run, digest = _load_pt(source, digest=True)
        return state, run, {"which": "named", "uri": source, "sha256": digest}
    run = open_store(source)
    for which, name in ((BEST, "best"), (LATEST, "latest")):
        state = load_run(run, which)  # verified against the pointer's sha256
        if state is not None:
            pointer = read_pointer(run, which)
            return state, run, {"which": name, "uri": run.uri(pointer["key"]), "sha256": pointer.get("sha256")}
    raise CheckpointError(f"{source}: no checkpoint ({LATEST} missing); {_what_instead(run)}")


def _what_instead(folder: Store) -> str:
    """What a folder without a checkpoint is, and what to name instead: an export (its card names
    the run it came from), another kind of facegan folder (`folders.kind_of`: a dataset, a sample,
    ...), or a run that has not trained."""
    from facegan import folders
    from facegan.export import CARD_JSON

    if folder.exists(CARD_JSON):
        try:
            run = folder.get_json(CARD_JSON)["source"]["run"]
        except (StorageError, KeyError, TypeError):
            run = None
        return ("it is an export (a generator alone, for use without facegan): name the run it was exported "
                "from" + (f" ({run})" if isinstance(run, str) else ""))
    found = folders.kind_of(folder)
    if found is not None and found.name != "run":
        return f"it is {found.what}, not a run"
    return "has this run trained?"


def list_checkpoints(run: Store) -> list[tuple[int, str]]:
    """(step, key) of every checkpoint in a run folder, oldest first."""
    found = []
    for key in run.list(CKPT_DIR):
        m = CHECKPOINT_KEY.fullmatch(key)
        if m:
            found.append((int(m.group(1)), key))
    return sorted(found)


def write_checkpoint(
    run: Store, state: dict[str, Any], keep_last: int, metric: tuple[str, float] | None = None,
    lower_is_better: bool = True, protect: tuple[int, ...] = (),
) -> str:
    """Write a CPU checkpoint dict, then the checkpoint list, `latest.json` (and `best.json`), then
    prune old ones: the newest `keep_last`, the best by the metric and the steps in `protect` (the
    collapse watchdog's best before a collapse) stay. Returns the checkpoint's URI.

    The order makes every visible pointer valid at every moment, and every pointer and list entry
    carries the file's sha256: a file is listed before anything points at it, and deleted only
    after nothing does. While best.json is damaged (which checkpoint it named is unknown) nothing
    is pruned, until a checkpoint with a score replaces it.
    """
    step = state["step"]
    key = checkpoint_key(step)
    data = to_bytes(state)
    record = {"step": step, "key": key, "sha256": sha256(data), "bytes": len(data)}
    run.put_bytes(key, data)
    pointer = _pointer_to(run, record)
    if metric is not None:
        pointer["metric"] = {"name": metric[0], "value": metric[1]}
    try:
        best, best_unknown = read_pointer(run, BEST), False
    except CheckpointError:  # a damaged best.json is replaced by this checkpoint's when it has a metric
        best, best_unknown = None, True
    if metric is not None and math.isfinite(metric[1]):  # a NaN or infinite score is never the best
        old = best.get("metric", {}).get("value") if best else None
        if not isinstance(old, int | float) or not math.isfinite(old) \
                or (metric[1] < old if lower_is_better else metric[1] > old):
            best = pointer
    existing = list_checkpoints(run)  # one listing serves both the keep set and the pruning
    keep = {k for _, k in existing[-keep_last:]} | {key} | {k for s, k in existing if s in protect}
    if best:
        keep.add(best["key"])
    if best_unknown and best is not pointer:  # which one it named is unknown: nothing is pruned until a score names one
        keep |= {k for _, k in existing}
    listed = {e["key"]: e for e in read_index(run) if e["key"] in keep and e["key"] != key}
    run.put_json(CHECKPOINTS, {"checkpoints": sorted([*listed.values(), record], key=lambda e: e["step"])})
    run.put_json(LATEST, pointer)
    if best is pointer:
        run.put_json(BEST, pointer)
    for _, old_key in existing:
        if old_key not in keep:
            run.delete(old_key)
    return run.uri(key)


class CheckpointWriter:
    """Writes checkpoints on one background thread, so the training step never waits for S3.

    `save` queues the copy of the state (and of the `Render` files' tensors) to host memory on the
    caller's thread, so later steps cannot change it, and hands it over; at most one write waits,
    so a slow store applies back-pressure instead of piling up memory. When the store is
    unreachable (a transient StorageError) the writer retries with backoff (1 s doubling to 30 s)
    for up to `outage_limit` seconds while training goes on: a newer checkpoint then replaces the
    waiting one instead of blocking the trainer, and `latest.json` only ever names objects that
    were written completely. A replaced checkpoint's files given as bytes (the watchdog's verdict)
    are written with the one that replaced it, unless it writes the same key; its `Render`s (the
    sample picture) are dropped with its state, so host memory stays bounded however long the
    outage. A store that stays away longer, or a permanent error, is raised by the next `save` or
    by `close`.
    """

    def __init__(self, run: Store, keep_last: int, on_written=None, log=None,
                 outage_limit: float = OUTAGE_LIMIT_S) -> None:
        self.run = run
        self.keep_last = keep_last
        self.on_written = on_written
        self.log = log or (lambda msg: None)
        self.outage_limit = outage_limit
        self._cv = threading.Condition(threading.RLock())  # re-entrant: `save` inside `replacing`
        self._waiting: tuple | None = None  # the next checkpoint to write
        self._busy = False  # a write (with its retries) is under way
        self._retrying = False  # ... and the store is unreachable
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="facegan-ckpt", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._waiting is None and not self._closed:
                    self._cv.wait()
                if self._waiting is None:
                    return
                item, self._waiting, self._busy = self._waiting, None, True
                self._cv.notify_all()
            try:
                self._write(*item)
            except BaseException as exc:  # noqa: BLE001 - surfaced in save()/close()
                with self._cv:
                    self._error = self._error or exc
            finally:
                # free the host copies now: the next save then reuses their pinned memory (a new
                # pinned allocation would wait for the GPU)
                del item
                with self._cv:
                    self._busy = self._retrying = False
                    self._cv.notify_all()

    def _write(self, state: dict[str, Any], extra_files: dict, options: dict, ready: Callable[[], None]) -> None:
        ready()  # the host copies are complete
        down_since, delay = None, 1.0
        while True:
            try:
                for key, data in extra_files.items():
                    if callable(data):  # rendered once, also when the store has to be retried
                        data = extra_files[key] = self._render(key, data, state["step"])
                    if data is not None:
                        self.run.put_bytes(key, data)
                uri = write_checkpoint(self.run, state, self.keep_last, **options)
                break
            except StorageError as exc:
                now = time.monotonic()
                down_since = down_since or now
                if not exc.transient:
                    raise
                if now - down_since > self.outage_limit:
                    raise StorageError(f"{self.run.root}: the store was unreachable for over "
                                       f"{self.outage_limit:.0f} s, giving up ({exc})") from None
                with self._cv:
                    self._retrying = True
                    self._cv.notify_all()
                self.log(f"checkpoint step {state['step']}: store unreachable, retrying in {delay:.0f} s; "
                         f"training goes on ({exc})")
                time.sleep(delay)
                delay = min(2 * delay, 30.0)
        if down_since is not None:
            self.log(f"checkpoint step {state['step']}: written after {time.monotonic() - down_since:.0f} s "
                     "of store outage")
        if self.on_written:
            self.on_written(state["step"], uri)

    def _render(self, key: str, render: Callable[[], bytes], step: int) -> bytes | None:
        """A rendered file's bytes; None (the file is left out, the checkpoint still written) when
        rendering fails: a picture is not worth a checkpoint."""
        try:
            return render()
        except Exception as exc:  # noqa: BLE001 - logged; the state matters more than its picture
            why = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.log(f"checkpoint step {step}: could not render {key}, left out ({why})")
            return None

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    @contextlib.contextmanager
    def replacing(self) -> Iterator[int | None]:
        """Hold the hand-over for one `save` (the caller's thread): once a slow store's back-pressure
        has passed, yields the step of the waiting checkpoint that a `save` inside will replace (the
        store is unreachable), or None when it will replace none. Until the block ends the writer's
        thread cannot take or drop anything, so what is composed inside (the watchdog's verdict, its
        pruning protection) can leave that step out knowing it will never be written."""
        with self._cv:
            self._raise()
            while self._waiting is not None and not self._retrying and self._error is None:
                self._cv.wait()
            yield None if self._waiting is None or self._error is not None else self._waiting[0]["step"]

    def save(self, state: dict[str, Any], extra_files: dict | None = None,
             metric: tuple[str, float] | None = None, lower_is_better: bool = True,
             protect: tuple[int, ...] = ()) -> None:
        """Hand over a checkpoint (live tensors are copied now) plus extra objects written first:
        bytes, or callables (such as `Render`) called on the writer's thread. `metric`: the
        (name, value) best.json is decided by, and which way is better; `protect`: steps of older
        checkpoints pruning keeps (`write_checkpoint`)."""
        (state, extra_files), ready = to_host((state, dict(extra_files or {})))
        options = {"metric": metric, "lower_is_better": lower_is_better, "protect": tuple(protect)}
        item = (state, extra_files, options, ready)
        with self._cv:
            self._raise()
            while self._waiting is not None and not self._retrying and self._error is None:
                self._cv.wait()  # back-pressure while the store is merely slow
            self._raise()
            if self._waiting is not None:  # replaced: its state is dropped, its written-out files are not
                dropped, files = self._waiting[0]["step"], self._waiting[1]
                carried = {k: v for k, v in files.items() if isinstance(v, bytes) and k not in extra_files}
                item = (state, {**carried, **extra_files}, *item[2:])
                kept = f"; its {', '.join(carried)} written with it" if carried else ""
                self.log(f"checkpoint step {dropped} replaced by step {state['step']} "
                         f"(the store is still unreachable){kept}")
            self._waiting = item
            self._cv.notify_all()

    def close(self) -> None:
        """Finish the waiting writes (retrying as above), stop the thread, raise a write error."""
        with self._cv:
            while (self._waiting is not None or self._busy) and self._error is None:
                self._cv.wait()
            self._closed = True
            self._cv.notify_all()
        self._thread.join()
        self._raise()


def describe(state: dict[str, Any]) -> str:
    """One line about a checkpoint, for logs."""
    cfg = state.get("config", {})
    res = cfg.get("model", {}).get("resolution")
    return f"step {state['step']} ({res}px, dataset {state.get('dataset_id')})"
