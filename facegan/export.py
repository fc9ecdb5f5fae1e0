"""Exporting a run's generator(s) for use outside facegan, and loading an export back.

`export(source, out)` takes a run folder (its best checkpoint when a metric chose one, else its
latest) or a checkpoint `.pt`, and writes, for each generator of the family (one for a family that
draws faces from noise, both directions for an attribute swap):

    generator.safetensors   the EMA weights (tensors only: no pickle), the family's config in its metadata
    generator.pt2           the network through `torch.export`, batch dimension dynamic: `torch.export.load`
    generator.onnx          the same program through the ONNX exporter, checked with ONNX Runtime
    model_card.json / .md   what it is, how it was trained and scored, how to load each file, its terms

(a family with several generators names them `generator-<name>.*`). Each program is checked
against the PyTorch network on fixed inputs of another batch size than the one it was traced with
(max |difference| <= TOLERANCE), and the card records the differences and every file's sha256.
A format that cannot be written (an op without an ONNX translation, say) is named in one line
(an `ExportError`, raised after every other file and the card are written).

An export written over an earlier one first copies that one, card last, under `previous/`: the
top-level card stays the earlier export's until the new card is written (the commit point), and
`load_state` reads a file the card names from `previous/` when the top-level file is already the
new one, so an interrupted export (a spot instance taken back mid-write) leaves the earlier export
loadable. A finished export removes `previous/` and the earlier export's files it did not write
again; other files beside an export (the user's notes) are never touched. One export writes into
a folder at a time: it holds the folder's lease (`facegan.lease`) while it writes, and a second
one is refused naming it. An export stopped before it wrote its first card leaves only names an
export writes: the next export writes over them (any other file in a folder without a card is
refused).

`load_state(uri)` reads an export back as a checkpoint-like dict (family, step, config, weights;
every file verified against the card's sha256); `load_any(uri)` reads a run, a checkpoint or an
export, so `facegan.sample.load_generator`, `translate apply` and the Python API (`facegan.api`)
take an export wherever they take a run.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from facegan import checkpoint as ckpt
from facegan import data, families, lease, runfolder
from facegan.errors import CheckpointError, ExportError, StorageError, foreign_files
from facegan.storage import Store, desktop_file, open_store

CARD_JSON, CARD_MD = "model_card.json", "model_card.md"
PREVIOUS = "previous/"  # the earlier export, whole, while a new one is written over it
FORMATS = ("safetensors", "pt2", "onnx")  # a generator's files, in the order they are written
FORMAT, VERSION = "facegan-export", 1
TOLERANCE = 1e-4  # max |exported - PyTorch| on images in [-1, 1]
CHECK_BATCH = 4  # the check's batch: not the traced one, so the dynamic batch is exercised
MAX_BATCH = 65536  # the dynamic batch dimension's upper bound
TERMS = ("CelebA is available for non-commercial research purposes only (its agreement: "
         "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html); a model trained on it inherits those terms.")
BIASES = ("CelebA holds photographs of celebrities: most faces are white and young, they are tightly "
          "cropped (few show the chin or the whole hair), posed and retouched, and its attribute labels "
          "are known to be noisy. A generator trained on it reproduces that skew: its faces are not a "
          "representative sample of people.")
INTENDED = ("Research and demonstration: studying generative models, making synthetic faces for "
            "prototypes. Not for identifying, impersonating or making claims about real people, and not "
            "for commercial use (CelebA's terms).")


@dataclass
class Exported:
    """What `export` wrote: the folder, its files' keys, the card, and what could not be written."""

    out: str
    files: list[str]
    card: dict
    problems: list[str] = field(default_factory=list)


def stem(names: list[str], name: str) -> str:
    """A generator's file stem: `generator` for a family's only one, else `generator-<name>`."""
    return "generator" if len(names) == 1 else f"generator-{name}"


def _export_named(key: str) -> bool:
    """Whether `key` is a name an export writes before its card (or its folder's lease): what an
    export interrupted before its first card leaves, and nothing else."""
    return key in (CARD_MD, lease.KEY) or re.fullmatch(rf"generator(-[^/]+)?\.({'|'.join(FORMATS)})", key) is not None


def example_inputs(family: families.Family, net: torch.nn.Module, resolution: int, n: int,
                   seed: int = 0) -> torch.Tensor:
    """Fixed inputs of a generator: latents (n, z_dim) from seeds seed.. for a family drawing from
    noise (as `facegan.sample.latents`), else seeded images (n, 3, R, R) in [-1, 1]."""
    if family.noise:
        from facegan.sample import latents

        return latents(range(seed, seed + n), net.z_dim)
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, resolution, resolution, generator=gen) * 2 - 1


def _first_line(exc: BaseException) -> str:
    """An exporter's error in one line: the op that has no translation when it names one."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    op = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'\)>", text)
    if op:
        return f"the op {op.group(1)}.{op.group(2)} has no ONNX translation"
    summary = re.search(r"## Exception summary\s+(.+)", text)
    line = summary.group(1) if summary else (text.strip().splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {line.strip()[:300]}"


def _max_difference(got, want: torch.Tensor) -> float:
    return float((torch.as_tensor(got).float() - want.float()).abs().max())


def _programs(net: torch.nn.Module, example: torch.Tensor, check: torch.Tensor, input_name: str,
              ) -> tuple[dict[str, bytes], dict[str, float], list[str]]:
    """({"pt2": bytes, "onnx": bytes} of what could be exported, {format: max |difference| to
    PyTorch on `check`}, [one line per format that could not])."""
    with torch.no_grad():
        want = net(check)
    files, checks, problems = {}, {}, []
    try:
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
        with torch.no_grad():
            checks["pt2"] = _max_difference(program.module()(check), want)
        buf = io.BytesIO()
        torch.export.save(program, buf)
        files["pt2"] = buf.getvalue()
    except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds; each is one line here
        problems.append(f"pt2: torch.export failed ({_first_line(exc)}); onnx needs it")
        return files, checks, problems
    try:
        import onnxruntime

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(program, (example,), dynamo=True, external_data=False,
                                             input_names=[input_name], output_names=["images"], verbose=False)
        model = onnx_program.model_proto.SerializeToString()
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        checks["onnx"] = _max_difference(session.run(None, {input_name: check.numpy()})[0], want)
        files["onnx"] = model
    except Exception as exc:  # noqa: BLE001 - the exporter and runtime raise many kinds
        problems.append(f"onnx: {_first_line(exc)}")
    for fmt, diff in list(checks.items()):
        if not diff <= TOLERANCE:  # a NaN is refused too
            problems.append(f"{fmt}: its output differs from PyTorch's by {diff:.3g} (more than {TOLERANCE:g})")
            files.pop(fmt, None)
            checks[fmt] = diff if math.isfinite(diff) else None
    return files, checks, problems


def export(source: str, out: str, log: Callable[[str], None] = print) -> Exported:
    """Export the generator(s) of `source` (a run URI or a checkpoint .pt URI) into the folder
    `out` (local or s3://, empty or an earlier export); see the module docstring. Raises
    ExportError after writing everything else when a format could not be written."""
    target = open_store(out)
    _check_folder(target, out)
    # the folder's lease first: a folder that takes no write, or that another export holds, is
    # refused before the (slow) export, not after it
    with lease.Lease(target, what="export folder", doing="exported into", instead="export into another folder"):
        existing = _check_folder(target, out)  # again: another export may have ended meanwhile
        state, run, origin = ckpt.load_chosen(source)
        files, card, problems = _exported(state, run, origin)
        if target.exists(CARD_JSON):
            keep_earlier(target)
        for key, blob in files.items():
            target.put_bytes(key, blob)
        target.put_bytes(CARD_MD, card_markdown(card).encode())
        target.put_json(CARD_JSON, card)  # last: a folder with a card is a complete export
        for key in existing:  # an earlier (or interrupted) export's files that this one did not write again
            if key not in files and key not in (CARD_JSON, CARD_MD, lease.KEY):
                target.delete(key)
        _remove_copy(target)
    written = [*files, CARD_MD, CARD_JSON]
    names = list(card["generators"])
    log(f"exported {', '.join(names)} of {card['family']} at step {state['step']} ({origin['which']}) to {out}: "
        + ", ".join(written))
    result = Exported(out, written, card, problems)
    if problems:
        raise ExportError(f"{out}: {'; '.join(problems)} (the other files and the model card were written)")
    return result


def _exported(state: dict, run: str, origin: dict) -> tuple[dict[str, bytes], dict, list[str]]:
    """The files of a checkpoint's export ({key: bytes}), its model card, and the formats that
    could not be written (one line each)."""
    from safetensors.torch import save as save_safetensors

    family = families.get(families.name_of_state(state))
    cfg = family.config.from_dict(state["config"])
    nets = family.recipes().generators(state, torch.device("cpu"), True)
    names = list(nets)
    input_name = "z" if family.noise else "faces"
    side = cfg.model.resolution
    generators, files, problems = {}, {}, []
    for name, net in nets.items():
        net = net.float().eval()
        base = stem(names, name)
        example = example_inputs(family, net, side, 2, seed=1)
        check = example_inputs(family, net, side, CHECK_BATCH, seed=0)
        made, checks, trouble = _programs(net, example, check, input_name)
        problems += [f"{base}.{line}" for line in trouble]
        weights = {k: v.contiguous() for k, v in net.state_dict().items()}
        made["safetensors"] = save_safetensors(weights, metadata={
            "format": FORMAT, "family": family.name, "generator": name, "step": str(state["step"]),
            "config": json.dumps(state["config"], sort_keys=True)})
        entry = {"parameters": sum(p.numel() for p in net.parameters()),
                 "input": {"name": input_name, "shape": ["batch", *example.shape[1:]],
                           "what": "latents from N(0, I)" if family.noise else "face images in [-1, 1]"},
                 "output": {"name": "images", "shape": ["batch", 3, side, side], "what": "images in [-1, 1]"},
                 "max_difference_to_pytorch": checks, "files": {}}
        for fmt in FORMATS:
            if fmt in made:
                key = f"{base}.{fmt}"
                files[key] = made[fmt]
                entry["files"][fmt] = {"key": key, "sha256": ckpt.sha256(made[fmt]), "bytes": len(made[fmt])}
        generators[name] = entry
    card = model_card(family, cfg, state, run, origin, generators, problems)
    card["how_to_load"] = {name: how_to_load(card, name) for name in names}
    return files, card, problems


def _check_folder(target: Store, out: str) -> list[str]:
    """The keys of names an export writes in the export folder `target` (outside `previous/`), once
    it is known to be empty, an earlier export (it has a card) or an export interrupted before its
    first card (only such names); anything else raises ExportError before a byte is written. Other
    files beside an earlier export (the user's notes) are not the export's: never written over."""
    existing = [key for key in target.list() if not key.startswith(PREVIOUS)]
    foreign = [key for key in existing if not _export_named(key) and not desktop_file(key)]
    if foreign and not target.exists(CARD_JSON):
        raise ExportError(foreign_files(out, foreign, "an export does not write", CARD_JSON,
                                        "not an earlier export; export into an empty folder"))
    return [key for key in existing if _export_named(key)]


def card_files(card: Any) -> dict[str, str]:
    """{key: sha256} of every file a model card names (not the card's own two files; {} for what
    is not a card)."""
    named = {}
    for entry in (card.get("generators") or {}).values() if isinstance(card, dict) else ():
        for record in (entry.get("files") or {}).values() if isinstance(entry, dict) else ():
            if isinstance(record, dict) and isinstance(record.get("key"), str):
                named[record["key"]] = record.get("sha256")
    return named


def _whole(store: Store, named: dict[str, str]) -> dict[str, bytes] | None:
    """The files `named` ({key: sha256}) as stored, or None when one is missing or differs."""
    blobs = {}
    for key, digest in named.items():
        if not store.exists(key):
            return None
        blobs[key] = store.get_bytes(key)
        if ckpt.sha256(blobs[key]) != digest:
            return None
    return blobs


def _remove_copy(target: Store) -> None:
    """Remove `previous/`, its card first (a copy without its card is never read)."""
    kept = target.list(PREVIOUS)
    for key in sorted(kept, key=lambda k: k != PREVIOUS + CARD_JSON):
        target.delete(key)


def keep_earlier(target: Store) -> None:
    """Copy the earlier export in `target` under `previous/`, its card last, before a new export
    is written over it. When the top level is not whole (an export was interrupted after writing
    some of its files) and `previous/` holds a card, that copy is the earlier export: it is kept."""
    card_bytes = target.get_bytes(CARD_JSON)
    try:
        card = json.loads(card_bytes)
    except ValueError:
        card = None
    named = card_files(card)
    blobs = _whole(target, named) if named else None
    if blobs is None:
        return  # torn: either previous/ already holds the earlier export, or there is none to keep
    _remove_copy(target)
    for key, blob in blobs.items():
        target.put_bytes(PREVIOUS + key, blob)
    if target.exists(CARD_MD):
        target.put_bytes(PREVIOUS + CARD_MD, target.get_bytes(CARD_MD))
    target.put_bytes(PREVIOUS + CARD_JSON, card_bytes)


def model_card(family: families.Family, cfg, state: dict, run: Store | None, origin: dict,
               generators: dict, problems: list[str]) -> dict:
    """The model card's facts (model_card.json; model_card.md is rendered from it)."""
    step = state["step"]
    record = ckpt.training_record(state)
    images = record.get("dataset_images")
    if images is None:  # a checkpoint from before the training record: the manifest, if it can be read
        with contextlib.suppress(Exception):
            manifest = data.read_manifest(open_store(cfg.dataset))
            images = manifest["count"] if manifest["id"] == state["dataset_id"] else None
    scores, losses = {}, {}
    if run is not None:
        with contextlib.suppress(StorageError):
            rows, scored = runfolder.read_metrics(run, upto=step)
            for name, found in scored.items():
                at = [r for r in found if r["step"] == step]
                if at:
                    scores[name] = {"value": at[-1][name], "protocol": at[-1].get(f"{name}_protocol")}
            if rows:
                losses = {k: v for k, v in rows[-1].items() if isinstance(v, float) and k not in ("time", "eta_s")}
                losses["step"] = rows[-1]["step"]
    return {
        "format": FORMAT, "version": VERSION,
        "family": family.name, "what": family.what, "preset": state["config"].get("preset"),
        "resolution": cfg.model.resolution, "step": step,
        "source": {"run": run.root if run is not None else None, "checkpoint": origin["which"],
                   "checkpoint_uri": origin["uri"], "checkpoint_sha256": origin["sha256"]},
        "dataset": {"id": state["dataset_id"], "images": images, "uri": cfg.dataset},
        "metrics": scores, "last_training_row": losses,
        "training": {"seconds": record.get("seconds"), "device": record.get("device"),
                     "processes": record.get("processes")},
        "generators": generators, "problems": problems, "config": state["config"],
        "torch": torch.__version__, "exported_at": time.time(),
        "intended_use": INTENDED, "terms": TERMS, "known_biases": BIASES,
    }


def how_to_load(card: dict, name: str) -> dict[str, str]:
    """Three lines of code per file of generator `name`, none importing facegan."""
    entry = card["generators"][name]
    files = {fmt: f["key"] for fmt, f in entry["files"].items()}
    shape, side = ", ".join(str(s) for s in entry["input"]["shape"][1:]), card["resolution"]
    feed = entry["input"]["name"]
    noise = feed == "z"
    x = f"torch.randn(16, {shape})" if noise else "faces"
    x_np = f"np.random.randn(16, {shape}).astype(np.float32)" if noise else "faces.numpy()"
    given = "" if noise else f"  # faces: float32 (N, {shape}) in [-1, 1]"
    code = {}
    if "pt2" in files:
        code["pt2"] = (f"import torch\nnet = torch.export.load(\"{files['pt2']}\").module()\n"
                       f"images = net({x})  # (N, 3, {side}, {side}) in [-1, 1]{given}")
    if "onnx" in files:
        code["onnx"] = ("import numpy as np, onnxruntime as ort\n"
                        f"session = ort.InferenceSession(\"{files['onnx']}\")\n"
                        f"images = session.run(None, {{\"{feed}\": {x_np}}})[0]{given}")
    if "safetensors" in files:
        code["safetensors"] = ("import torch; from safetensors.torch import load_file\n"
                               f"weights = load_file(\"{files['safetensors']}\")  # name -> tensor, no pickle\n"
                               + (f"net = torch.export.load(\"{files['pt2']}\").module(); net.load_state_dict(weights)"
                                  if "pt2" in files else "# the layout: the family's generator in facegan"))
    return code


def card_markdown(card: dict) -> str:
    """model_card.md: the card's facts for people."""
    def fmt(value, spec=".4g"):
        return "unknown" if value is None else format(value, spec) if isinstance(value, float) else str(value)

    t = card["training"]
    hours = (f"{t['seconds'] / 3600:.2f} h" if t.get("seconds") is not None
             else "unknown (the checkpoint predates the record)")
    lines = [
        f"# Model card: {card['what']}, {card['resolution']} px",
        "",
        f"- **Family:** `{card['family']}`; **preset:** `{card['preset'] or 'none'}`; "
        f"**resolution:** {card['resolution']} x {card['resolution']}",
        f"- **Steps trained:** {card['step']} (from the {card['source']['checkpoint']} checkpoint"
        + (f" of `{card['source']['run']}`)" if card["source"]["run"] else ")"),
        f"- **Dataset:** id `{card['dataset']['id']}`, {fmt(card['dataset']['images'])} images "
        f"(`{card['dataset']['uri']}`)",
        f"- **Training time:** {hours}" + (f" on {t['device']}" if t.get("device") else "")
        + (f" x{t['processes']} processes" if (t.get("processes") or 1) > 1 else ""),
        "",
        "## Metrics at this step",
        "",
    ]
    if card["metrics"]:
        for name, m in card["metrics"].items():
            p = m.get("protocol") or {}
            weights = (p.get("weights") or {}).get("sha256", "?")
            lines.append(f"- **{name.upper()}** {fmt(m['value'])} ({p.get('samples', '?')} generated and real images, "
                         f"Inception input {p.get('resize', '?')} px, weights sha256 `{str(weights)[:12]}`)")
    else:
        lines.append("- none scored at this step (train with `--metric-every` to score checkpoints)")
    lines += ["", "## Files", ""]
    for name, entry in card["generators"].items():
        lines.append(f"### `{name}`: {entry['parameters']:,} parameters; input `{entry['input']['name']}` "
                     f"{entry['input']['shape']} ({entry['input']['what']}), output {entry['output']['shape']} "
                     f"({entry['output']['what']})")
        lines.append("")
        for fmt_name, f in entry["files"].items():
            diff = entry["max_difference_to_pytorch"].get(fmt_name)
            lines.append(f"- `{f['key']}` ({f['bytes']:,} bytes, sha256 `{f['sha256'][:16]}...`)"
                         + (f": max difference to PyTorch {diff:.2g} on {CHECK_BATCH} fixed inputs"
                            if diff is not None else ""))
        for fmt_name, code in card["how_to_load"][name].items():
            lines += ["", f"Load the {fmt_name} file:", "", "```python", code, "```"]
        lines.append("")
    if card["problems"]:
        lines += ["## Not exported", "", *[f"- {p}" for p in card["problems"]], ""]
    lines += ["## Intended use", "", card["intended_use"], "", "## Terms", "", card["terms"], "",
              "## Known biases", "", card["known_biases"], ""]
    return "\n".join(lines)


def is_export(uri: str) -> bool:
    """Whether `uri` is a folder holding an export (its model_card.json)."""
    if str(uri).endswith(".pt"):
        return False
    try:
        return open_store(uri).exists(CARD_JSON)
    except StorageError:
        return False


def card_family(uri: str) -> str | None:
    """The family an export folder's model card names (None when it names none); verified only
    when the export is loaded (`load_state`)."""
    card = open_store(uri).get_json(CARD_JSON)
    return card.get("family") if isinstance(card, dict) else None


def load_any(uri: str) -> dict[str, Any]:
    """The checkpoint-like state of a run (its latest checkpoint), a checkpoint `.pt`, or an export
    folder (`load_state`), each verified as it is read: what the commands that use a trained
    generator take."""
    return load_state(uri) if is_export(uri) else ckpt.load(uri)


def _read_named(store: Store, record: dict) -> bytes:
    """The file a card's `record` names, verified against its sha256: from the top level, or from
    `previous/` while a new export is being written over the one the card describes."""
    key = record["key"]
    blob = store.get_bytes(key) if store.exists(key) else None
    if blob is None or ckpt.sha256(blob) != record["sha256"]:
        kept = store.get_bytes(PREVIOUS + key) if store.exists(PREVIOUS + key) else None
        if kept is not None and ckpt.sha256(kept) == record["sha256"]:
            return kept
        if blob is None:
            raise CheckpointError(f"{store.uri(key)}: missing (named by {CARD_JSON})")
    ckpt.verify(blob, record, store.uri(key), CARD_JSON)
    return blob


def load_state(uri: str) -> dict[str, Any]:
    """An export as a checkpoint-like dict: {"family", "step", "config", "dataset_id", and each
    generator's weights by name}; each safetensors file is verified against the card's sha256."""
    from safetensors.torch import load as load_safetensors

    store = open_store(uri)
    card = store.get_json(CARD_JSON)
    if not isinstance(card, dict) or card.get("format") != FORMAT or not isinstance(card.get("generators"), dict):
        raise CheckpointError(f"{store.uri(CARD_JSON)}: not a facegan export's model card")
    if not isinstance(card.get("version"), int) or card["version"] > VERSION:
        raise CheckpointError(f"{store.uri(CARD_JSON)}: export version {card.get('version')!r} is newer than this "
                              f"facegan ({VERSION})")
    if card.get("family") not in families.REGISTRY or not ckpt.valid_step(card.get("step")) \
            or not isinstance(card.get("config"), dict):
        raise CheckpointError(f"{store.uri(CARD_JSON)}: damaged model card (family, step or config)")
    state = {"family": card["family"], "step": card["step"], "config": card["config"],
             "dataset_id": card.get("dataset", {}).get("id")}
    for name, entry in card["generators"].items():
        record = (entry.get("files") or {}).get("safetensors") if isinstance(entry, dict) else None
        if not isinstance(record, dict) or not isinstance(record.get("key"), str) \
                or not isinstance(record.get("sha256"), str):
            raise CheckpointError(f"{store.uri(CARD_JSON)}: damaged model card ({name} has no safetensors record)")
        blob = _read_named(store, record)
        try:
            state[name] = load_safetensors(blob)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own kinds for bad files
            raise CheckpointError(f"{store.uri(record['key'])}: not a safetensors file ({_first_line(exc)})") from None
    return state
