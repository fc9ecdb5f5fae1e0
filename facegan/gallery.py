"""Dated HTML face galleries published to a store.

Layout under the store root::

    galleries/YYYY-MM-DD/index.html        the night's page (relative links only)
    galleries/YYYY-MM-DD/grid.png          fixed seeds (comparable night to night)
    galleries/YYYY-MM-DD/fresh.png         the night's own seeds
    galleries/YYYY-MM-DD/faces/NNN.png     single faces (fixed, then fresh)
    galleries/YYYY-MM-DD/interpolation.png latent walk between two fixed seeds
    galleries/YYYY-MM-DD/loss.png          the run's loss curve (when it has one)
    galleries/YYYY-MM-DD/metric-NAME.png   each metric's curve (when the run was scored)
    galleries/YYYY-MM-DD/translations/RUN/*.png  per finished attribute-swap run: real faces of
                                           each domain, their translations, the cycle back
    galleries/YYYY-MM-DD/manifest.json     what made it: run, checkpoint, step, seeds, truncation, images
    galleries/index.html                   every night, newest first
    galleries/latest/...                   copy of the newest night
    galleries/lease.json                   while a publish writes (facegan.lease): one at a time

A run's section links its model card and exported files (`runs/<run>/export/`, facegan.export)
when it has been exported.

Publishing the same night again replaces that night's objects and nothing else: a file the
gallery does not write (a user's note beside the pages) stays.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import re
import time
from dataclasses import dataclass

from facegan import checkpoint as ckpt
from facegan import families, runfolder, watchdog
from facegan import metrics as metric_registry
from facegan.errors import INPUT_ERRORS, GalleryError  # noqa: F401 - exported here too
from facegan.export import CARD_JSON, CARD_MD, card_files
from facegan.images import to_png
from facegan.lease import TTL_S, Lease
from facegan.plots import metric_curve_png
from facegan.sample import face_pngs, generate, interpolation_png, load_generator
from facegan.storage import Store, open_store

GALLERIES = "galleries"
PUBLISH_WAIT_S = TTL_S + 60.0  # a publish writes for seconds; a crashed one's lease expires within TTL_S
_NIGHT_RE = re.compile(r"^galleries/(\d{4}-\d{2}-\d{2})/manifest\.json$")
_NIGHT_FILE = re.compile(r"index\.html|manifest\.json|(grid|fresh|interpolation|loss|metric-[^/]+)\.png"
                         r"|faces/[^/]+\.png|translations/[^/]+/[^/]+\.png")  # a night's own files (the layout above)




@dataclass(frozen=True)
class Source:
    """The checkpoint a gallery is made from."""

    run_uri: str
    key: str
    step: int
    pointer: str  # "best.json", "latest.json" or "watchdog.json" (the best before a collapse)
    stopped: dict | None = None  # the watchdog's verdict when it stopped the run (facegan.watchdog)
    passed_over: tuple[str, ...] = ()  # "URI: why" of each run that could not be read (none when one is named)

    @property
    def uri(self) -> str:
        return f"{self.run_uri.rstrip('/')}/{self.key}"


def run_names(store: Store) -> list[str]:
    """The runs under `runs/` that have a latest.json (a checkpoint), by name."""
    return sorted({k.split("/", 1)[0] for k in store.child("runs").list() if k.endswith("/" + ckpt.LATEST)})


def unreadable(error: Exception) -> bool:
    """Whether `error` says a run's files cannot be read (damaged, or written by hand), as opposed
    to a store that is away for now: the night goes on without such a run, while a store that is
    away fails the publish (a retry may publish)."""
    return isinstance(error, INPUT_ERRORS) and not getattr(error, "transient", False)


def find_checkpoint(store: Store, run_name: str | None = None) -> Source:
    """The newest checkpoint across `runs/*` (or in `runs/<run_name>`), preferring best.json; of
    a run the collapse watchdog stopped, the best checkpoint before the collapse (its verdict's).
    Across `runs/*`, a run whose config or pointers cannot be read is passed over (named in the
    Source, and in the error when no run is left): one damaged run does not stop every night."""
    runs = store.child("runs")
    candidates, passed = [], []
    for name in [run_name] if run_name else run_names(store):
        run = runs.child(name)
        try:
            latest = ckpt.read_pointer(run, ckpt.LATEST)
            family = families.of_saved(runfolder.read_config(run) or {})
            if latest is not None and not family.noise and run_name:
                raise GalleryError(f"{run.uri()}: a {family.name} run draws no faces from noise (the gallery "
                                   "shows finished attribute swaps in their own section); name a run that does")
            if latest is None or not family.noise:
                continue  # families that do not draw from noise (attribute swaps) have their own sections
            best = ckpt.read_pointer(run, ckpt.BEST)
            verdict = watchdog.read_verdict(run)
        except Exception as exc:
            if run_name or not unreadable(exc):
                raise
            passed.append(f"{run.uri()}: {str(exc).splitlines()[0]}")
            continue
        chosen, which = (best, ckpt.BEST) if best else (latest, ckpt.LATEST)
        verdict = verdict if isinstance(verdict, dict) and verdict.get("stopped") else None
        before = verdict and verdict.get("best")  # the best checkpoint before a collapse, when one is kept
        if isinstance(before, str) and runfolder.CHECKPOINT_KEY.fullmatch(before) \
                and type(verdict.get("best_step")) is int and run.exists(before):  # (the latest is the dead one)
            chosen, which = {"key": before, "step": verdict["best_step"]}, runfolder.WATCHDOG
        candidates.append((latest.get("written_at", 0), Source(run.root, chosen["key"], chosen["step"], which,
                                                               verdict)))
    if not candidates:
        where = runs.uri(run_name) if run_name else runs.uri()
        raise GalleryError(f"no checkpoint found under {where}; train a run first"
                           + (f" (passed over: {'; '.join(passed)})" if passed else ""))
    return dataclasses.replace(max(candidates, key=lambda c: c[0])[1], passed_over=tuple(passed))


def night_seeds(date: dt.date, count: int) -> list[int]:
    """The night's fresh seeds: derived from the date, so re-running a night repeats it."""
    base = int(date.strftime("%Y%m%d")) * 1000
    return list(range(base, base + count))


def exported(run: Store, name: str) -> dict | None:
    """The run's export as a night page links it ({"step", "card", "files"}: links relative to the
    night's folder, galleries/DATE/), or None when it has none (or its card cannot be read)."""
    folder = run.child(runfolder.EXPORT)
    try:
        card = folder.get_json(CARD_JSON) if folder.exists(CARD_JSON) else None
    except INPUT_ERRORS:
        return None
    if not isinstance(card, dict) or not isinstance(card.get("step"), int):
        return None
    base = f"../../runs/{name}/{runfolder.EXPORT}/"
    return {"step": card["step"], "card": base + CARD_MD, "files": [base + k for k in sorted(card_files(card))]}


def translation_sections(store: Store, device: str = "cpu") -> tuple[list[dict], dict[str, bytes]]:
    """A section per finished run of a family that does not draw from noise (an attribute swap:
    the run's fixed real faces of each domain beside their translations and cycle
    reconstructions), a PNG strip per row (`translations/<run>/<row>.png`), as the family's
    `gallery_section` makes it. A run whose checkpoint or dataset cannot be read gets a section
    that says why, instead of failing the night. Computed on `device`. Returns (sections, files)."""
    runs = store.child("runs")
    sections, files = [], {}
    for name in run_names(store):
        run = runs.child(name)
        try:
            config = runfolder.read_config(run) or {}
            latest = ckpt.read_pointer(run, ckpt.LATEST)
        except Exception as exc:
            if not unreadable(exc):
                raise
            continue  # its family cannot be told: `find_checkpoint` names it among the runs passed over
        family = families.of_saved(config)
        if family.noise or latest is None or latest["step"] < config.get("steps", 0):
            continue  # runs that draw from noise have the page's main sections; unfinished runs wait
        section = {"run": run.root, "name": name, "family": family.name, "preset": config.get("preset", ""),
                   "title": family.what,
                   "step": latest["step"], "checkpoint": run.uri(latest["key"]), "export": exported(run, name)}
        try:
            made = family.recipes().gallery_section(ckpt.load_run(run), device)
        except INPUT_ERRORS as exc:
            sections.append({**section, "error": str(exc).splitlines()[0]})
            continue
        section.update(title=made["title"], rows=[])
        for stem, label, images in made["strips"]:
            path = f"translations/{name}/{stem}.png"
            files[path] = to_png(images, nrow=len(images))
            section["rows"].append({"file": path, "label": label, "count": len(images)})
        sections.append(section)
    return sections, files


def publish(store_uri: str, date: dt.date | None = None, run_name: str | None = None,
            fixed: int = 16, fresh: int = 16, interpolation_steps: int = 10, device: str = "cpu",
            truncation: float | None = None, wait: float = PUBLISH_WAIT_S) -> dict:
    """Sample the newest (or named run's) generator on `device` and publish the night's gallery,
    with a section per finished attribute-swap run; latents truncated at psi `truncation`
    (facegan.sample.latents; None or 1: untruncated), which the page states. The writing holds
    the gallery's lease (`galleries/lease.json`), waiting up to `wait` seconds for another publish.

    Returns the night's manifest (with `index_uri`, the page's URI).
    """
    date = date or dt.date.today()
    store = open_store(store_uri)
    source = find_checkpoint(store, run_name)
    state = ckpt.load(source.uri)
    gen = load_generator(state, ema=True, device=device)
    fixed_seeds = list(range(fixed))
    fresh_seeds = night_seeds(date, fresh)
    night = f"{GALLERIES}/{date.isoformat()}"
    files: dict[str, bytes] = {}
    fixed_imgs = generate(gen, fixed_seeds, truncation)
    fresh_imgs = generate(gen, fresh_seeds, truncation)
    files["grid.png"] = to_png(fixed_imgs)
    files["fresh.png"] = to_png(fresh_imgs)
    singles = {**face_pngs(fixed_imgs, count=fixed + fresh), **face_pngs(fresh_imgs, first=fixed, count=fixed + fresh)}
    files.update(singles)
    faces = [{"file": name, "seed": seed, "kind": "fixed" if i < fixed else "fresh"}
             for i, (name, seed) in enumerate(zip(singles, fixed_seeds + fresh_seeds, strict=True))]
    files["interpolation.png"] = interpolation_png(gen, 0, 1, interpolation_steps, truncation)
    run = open_store(source.run_uri)
    if run.exists(runfolder.LOSS_PLOT):
        files["loss.png"] = run.get_bytes(runfolder.LOSS_PLOT)
    _, scored = runfolder.read_metrics(run)
    summary = {}
    for name, rows in scored.items():
        lower = metric_registry.get(name).lower_is_better if name in metric_registry.REGISTRY else True
        files[f"metric-{name}.png"] = metric_curve_png(rows, name, lower)
        summary[name] = {"latest": rows[-1][name], "best": (min if lower else max)(r[name] for r in rows),
                         "latest_std": rows[-1].get(f"{name}_std"), "protocol": rows[-1].get(f"{name}_protocol")}
    manifest = {
        "date": date.isoformat(),
        "run": source.run_uri,
        "checkpoint": source.uri,
        "pointer": source.pointer,
        "step": source.step,
        "generator": gen.which,
        "family": gen.config.family,
        "preset": gen.config.preset,
        "resolution": gen.config.model.resolution,
        "fixed_seeds": fixed_seeds,
        "fresh_seeds": fresh_seeds,
        "truncation": 1.0 if truncation is None else float(truncation),
        "export": exported(run, runfolder.name(source.run_uri)),
        "faces": faces,
        "metrics": summary,
        "stopped": source.stopped and {k: source.stopped[k] for k in ("signal", "step", "line")},
        "passed_over": list(source.passed_over),
        "published_at": time.time(),
    }
    translations, translation_files = translation_sections(store, device)
    manifest["translations"] = translations
    files.update(translation_files)
    manifest["files"] = sorted([*files, "index.html", "manifest.json"])
    files["index.html"] = night_page(manifest).encode()
    files["manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    # one publisher at a time writes galleries/ (a night, latest/, the index): two publishes of
    # one night, or a backfill beside tonight's, would otherwise interleave their files
    with Lease(store.child(GALLERIES), what="gallery", doing="published", instead="publish again later",
               wait=wait):
        _replace_prefix(store, night, files)
        nights = list_nights(store)
        if nights and nights[0]["date"] == date.isoformat():
            _replace_prefix(store, f"{GALLERIES}/latest", files)
        store.put_bytes(f"{GALLERIES}/index.html", index_page(nights).encode())
    return {**manifest, "index_uri": store.uri(f"{night}/index.html")}


def _replace_prefix(store: Store, prefix: str, files: dict[str, bytes]) -> None:
    """Write every file under prefix (manifest.json last), then drop the night's own files (an
    earlier publication's) that the new set lacks; other files there are not the gallery's and stay."""
    old = set(store.list(prefix))
    order = sorted(files, key=lambda k: k == "manifest.json")
    for name in order:
        store.put_bytes(f"{prefix}/{name}", files[name])
    for key in old - {f"{prefix}/{n}" for n in files}:
        if _NIGHT_FILE.fullmatch(key.removeprefix(f"{prefix}/")):
            store.delete(key)


def list_nights(store: Store) -> list[dict]:
    """Manifests of every published night, newest first (by its folder's date). A night whose
    manifest is not one (damaged, or edited by hand) is `{"date": ..., "damaged": why}`: the index
    says so and the other nights are published as ever; one bad file does not stop every night."""
    nights = []
    for key in store.list(GALLERIES):
        found = _NIGHT_RE.match(key)
        if found:
            nights.append(_night(store, key, found[1]))
    return sorted(nights, key=lambda m: m["date"], reverse=True)


def _night(store: Store, key: str, date: str) -> dict:
    """The manifest at `key` of the night `date`, or {"date", "damaged"} when it is not a night's
    manifest. An unreachable store is raised (a retry may publish), not taken for damage."""
    data = store.get_bytes(key)
    try:
        m = json.loads(data)
    except (ValueError, RecursionError):
        return {"date": date, "damaged": "its manifest.json is not valid JSON"}
    fields = {"date": str, "step": int, "run": str}
    if not (isinstance(m, dict) and all(isinstance(m.get(k), t) for k, t in fields.items()) and m["date"] == date):
        return {"date": date, "damaged": "its manifest.json does not describe this night (date, step, run)"}
    return m


_STYLE = """
:root { color-scheme: light dark; --bg: #fafafa; --fg: #1d1d1f; --muted: #6e6e73; --card: #fff; }
@media (prefers-color-scheme: dark) { :root { --bg: #111; --fg: #eee; --muted: #999; --card: #1c1c1e; } }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
       background: var(--bg); color: var(--fg); }
main { max-width: 1100px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.6rem; margin: 0.4em 0; } h2 { font-size: 1.2rem; margin-top: 1.6em; }
.meta { color: var(--muted); font-size: 0.9rem; word-break: break-all; }
.note { border-left: 4px solid #c0392b; padding: 0.4rem 0.8rem; background: #fdecea; color: #1d1d1f;
        overflow-wrap: anywhere; }
img { max-width: 100%; height: auto; image-rendering: pixelated; border-radius: 6px; display: block; }
.wide { width: 100%; max-width: 640px; }
.faces img { width: 100%; }
.faces { display: grid; grid-template-columns: repeat(auto-fill, minmax(96px, 1fr)); gap: 8px; }
.faces figure, .nights a { margin: 0; background: var(--card); border-radius: 8px; padding: 4px; }
figcaption { font-size: 0.75rem; color: var(--muted); text-align: center; }
.nights { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; }
.nights a { color: inherit; text-decoration: none; display: block; }
nav a { color: inherit; }
.strip { margin: 0 0 8px; } .strip img { width: 100%; max-width: 640px; }
.strip figcaption { text-align: left; font-size: 0.85rem; }
"""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def label(m: dict) -> str:
    """A run's family and preset as the gallery shows them ("resnet, preset resnet64")."""
    family = m.get("family") or families.LEGACY  # nights published before the family was recorded
    return f"{family}, preset {m['preset']}" if m.get("preset") else family


def night_page(m: dict) -> str:
    """The HTML page of one night (every value escaped, every link relative)."""
    e = html.escape
    res = m["resolution"]
    faces = "".join(
        f'<figure><img src="{e(f["file"])}" width="{res}" height="{res}" alt="face, seed {f["seed"]}">'
        f'<figcaption>{e(f["kind"])} · seed {f["seed"]}</figcaption></figure>'
        for f in m["faces"]
    )
    loss = (
        '<h2>Loss curve</h2><img class="wide" src="loss.png" alt="training loss curve">'
        if "loss.png" in m["files"] else ""
    )
    for name, score in (m.get("metrics") or {}).items():
        p = score.get("protocol") or {}
        how = ", ".join(x for x in (f"{p['samples']} samples" if "samples" in p else "", p.get("resize", ""),
                                    f"weights sha256 {p['weights']['sha256'][:12]}" if "weights" in p else "") if x)
        std = f" ± {score['latest_std']:.2g}" if score.get("latest_std") is not None else ""
        loss += (f'<h2>{e(name.upper())}</h2><p class="meta">latest {score["latest"]:.4g}{std}, '
                 f'best {score["best"]:.4g} '
                 f'({e(how or "protocol not recorded")})</p>'
                 f'<img class="wide" src="metric-{e(name)}.png" alt="{e(name)} during training">')
    body = (
        f'<nav><a href="../index.html">All nights</a></nav>'
        f"<h1>Faces of {e(m['date'])}</h1>"
        f'<p class="meta">Generator {e(m["generator"])} at step {m["step"]} of run '
        f"<code>{e(m['run'])}</code> ({e(label(m))})<br>checkpoint <code>{e(m['checkpoint'])}</code> "
        f"(from {e(m['pointer'])})<br>{e(truncation_note(m))}</p>{stopped_note(m)}{passed_note(m)}"
        f"{export_links(m.get('export'))}"
        '<h2>Fixed seeds</h2><p class="meta">The same latents every night, to compare nights.</p>'
        '<img class="wide" src="grid.png" alt="grid of faces from fixed seeds">'
        "<h2>Tonight's seeds</h2>"
        '<img class="wide" src="fresh.png" alt="grid of faces from tonight\'s seeds">'
        f'<h2>Single faces</h2><div class="faces">{faces}</div>'
        "<h2>Latent interpolation</h2>"
        '<img class="wide" src="interpolation.png" alt="interpolation between two faces">'
        f"{loss}{translation_html(m.get('translations') or [])}"
    )
    return _page(f"facegan gallery {m['date']}", body)


def stopped_note(m: dict) -> str:
    """The note on a night from a run the collapse watchdog stopped (facegan.watchdog)."""
    s = m.get("stopped")
    if not s:
        return ""
    which = ("its best checkpoint before that" if m.get("pointer") == runfolder.WATCHDOG
             else "its last checkpoint (none from before the collapse is kept)")
    return (f'<p class="note">stopped: collapsed at step {s["step"]} ({html.escape(s["signal"])}); these faces '
            f'are from {which}, step {m["step"]}.<br>{html.escape(s["line"])}</p>')


def passed_note(m: dict) -> str:
    """The note naming the runs the night passed over because their files could not be read."""
    passed = m.get("passed_over") or []
    if not passed:
        return ""
    return ('<p class="note">passed over (their files cannot be read): '
            + "<br>".join(html.escape(p) for p in passed) + "</p>")


def truncation_note(m: dict) -> str:
    """What the page says of the night's latents."""
    psi = m.get("truncation", 1.0)  # nights published before the setting: untruncated
    if psi == 1:
        return "latents: N(0, I), untruncated (truncation psi 1)"
    return (f"latents: truncated normal, truncation psi {psi:g} "
            f"(values beyond the central {psi:g} of the mass drawn again)")


def export_links(export: dict | None) -> str:
    """A run's links to its model card and exported files, or nothing when it has no export."""
    if not export:
        return ""
    e = html.escape
    links = "".join(f' · <a href="{e(f)}">{e(f.rsplit("/", 1)[-1])}</a>' for f in export["files"])
    return (f'<p class="meta export">exported at step {export["step"]}: '
            f'<a href="{e(export["card"])}">model card</a>{links}</p>')


def translation_html(sections: list[dict]) -> str:
    """The attribute-swap sections of a night page: per run, a labelled row of faces per strip."""
    e = html.escape
    out = ""
    for t in sections:
        out += (f'<section class="translation" id="swap-{e(t["name"])}"><h2>{e(t["title"])}</h2>'
                f'<p class="meta">run <code>{e(t["run"])}</code> ({e(label(t))}) at step {t["step"]}, checkpoint '
                f'<code>{e(t["checkpoint"])}</code></p>{export_links(t.get("export"))}')
        if "error" in t:
            out += f'<p class="meta">not shown: {e(t["error"])}</p></section>'
            continue
        for row in t["rows"]:
            out += (f'<figure class="strip"><figcaption>{e(row["label"])}</figcaption>'
                    f'<img src="{e(row["file"])}" alt="{e(row["label"])}"></figure>')
        out += "</section>"
    return out


def index_page(nights: list[dict]) -> str:
    """The page listing every night, newest first."""
    e = html.escape
    cards = "".join(
        f'<a href="{e(n["date"])}/index.html"><strong>{e(n["date"])}</strong>'
        f'<div class="meta">not shown: {e(n["damaged"])}</div></a>' if "damaged" in n else
        f'<a href="{e(n["date"])}/index.html"><img src="{e(n["date"])}/grid.png" '
        f'alt="faces of {e(n["date"])}"><strong>{e(n["date"])}</strong>'
        f'<div class="meta">step {n["step"]} · {e(n["run"].rstrip("/").rsplit("/", 1)[-1])} · {e(label(n))}</div></a>'
        for n in nights
    )
    latest = '<p><a href="latest/index.html">Latest night</a></p>' if nights else "<p>No nights yet.</p>"
    body = f'<h1>facegan galleries</h1>{latest}<div class="nights">{cards}</div>'
    return _page("facegan galleries", body)
