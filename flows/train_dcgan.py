"""train-dcgan: pull a dataset from the store, train (or resume) a run, report as it goes."""

from __future__ import annotations

import time

from prefect import flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from facegan import checkpoint as ckpt
from facegan import data, families, runfolder
from facegan.config import ConfigError, RunConfig, all_options, nest_options
from facegan.errors import ExportError, LeaseError
from facegan.export import CARD_MD, export
from facegan.loop import Hooks, config_for_run, fit
from facegan.runtime import GracefulStop
from facegan.storage import open_store
from flows.common import (
    INPUT_ERRORS,
    artifact_key,
    check_run_name,
    fail,
    inline_picture,
    retry_transient,
    store_root,
    with_option_parameters,
)


class TrainingInterrupted(RuntimeError):
    """Training stopped early (signal, time limit); the checkpoint is written, a retry resumes."""


@task(retries=3, retry_delay_seconds=10, retry_condition_fn=retry_transient)
def pull_dataset(dataset_uri: str) -> dict:
    """Fetch the dataset's shards into the local cache (hash-verified, reused across runs)."""
    manifest = data.fetch(dataset_uri)
    print(f"dataset {dataset_uri}: {manifest['count']} images at {manifest['resolution']}px, "
          f"id {manifest['id']}")
    return manifest


def retry_unless_interrupted(task, task_run, state) -> bool:  # noqa: ARG001 - Prefect's signature
    """Retry a failed training attempt (it resumes from latest.json), but not an interruption:
    a SIGTERM means the container is going away (spot notice), so the run ends with its
    checkpoint written and the next run resumes."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, TrainingInterrupted) and retry_transient(task, task_run, state)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_interrupted)
def train_model(config: dict) -> dict:
    """Train until done; a retry resumes from the run's latest.json (at most one interval lost).
    `config`: a run config's `to_dict()`, which names its family."""
    cfg = families.of_saved(config).config.from_dict(config)
    progress_id = create_progress_artifact(
        progress=0.0, key=artifact_key("train", cfg.run.rsplit("/", 1)[-1], "progress"),
        description=f"training {cfg.run}",
    )
    last_update = [0.0]

    def progress(step: int, total: int, m: dict) -> None:
        line = (f"step {step}/{total} loss_d {m['loss_d']:.3f} loss_g {m['loss_g']:.3f} "
                f"{m['img_per_s']:.0f} img/s ETA {m['eta_s'] / 60:.1f} min")
        print(line)
        if time.monotonic() - last_update[0] > 2 or step == total:
            update_progress_artifact(progress_id, 100.0 * step / total, description=line)
            last_update[0] = time.monotonic()

    with GracefulStop() as stop:
        hooks = Hooks(progress=progress, should_stop=stop.requested,
                      checkpoint=lambda step, uri: print(f"checkpoint step {step}: {uri}"))
        result = fit(cfg, hooks)
    if result.stopped:
        raise TrainingInterrupted(f"stopped at step {result.step}: {result.stopped}; "
                                  f"checkpoint {result.checkpoint}")
    return {"step": result.step, "checkpoint": result.checkpoint, "run": result.run,
            "metrics": result.metrics[-20:]}


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_transient)
def export_model(run_uri: str) -> dict:
    """Export the run's generator(s) into `<run>/export/` (facegan.export: from its best checkpoint
    when a metric chose one, else its latest). A format that cannot be written, or another export
    writing into the folder (its lease), is reported, not a failure: the run trained."""
    out = f"{run_uri.rstrip('/')}/{runfolder.EXPORT}"
    try:
        done = export(run_uri, out, log=print)
        return {"out": out, "files": done.files, "step": done.card["step"], "problems": []}
    except (ExportError, LeaseError) as exc:
        print(f"export incomplete: {exc}")
        return {"out": out, "files": [], "step": None, "problems": [str(exc)]}


def report(cfg: RunConfig, outcome: dict, exported: dict | None = None) -> None:
    """Markdown artifact (grid and loss curve inline, metrics, checkpoints, export) and a metrics table."""
    run = open_store(cfg.run)
    step = outcome["step"]
    checkpoints = [run.uri(k) for _, k in ckpt.list_checkpoints(run)]
    rows, scored = runfolder.read_metrics(run)
    best = ckpt.read_pointer(run, ckpt.BEST)
    scores_md = ""
    for name, found in scored.items():  # metrics during training: the last scores, the protocol, the best checkpoint
        p = found[-1].get(f"{name}_protocol") or {}
        def shown(r: dict, name: str = name) -> str:  # KID's std beside its mean
            return f"{r[name]:.4g}" + (f" ± {r[name + '_std']:.2g}" if f"{name}_std" in r else "")

        scores_md += (f"\n\n**{name.upper()}** " + ", ".join(f"{shown(r)} (step {r['step']})" for r in found[-5:])
                + (f" ({p.get('samples')} samples, {p.get('resize')}, weights sha256 "
                   f"`{p.get('weights', {}).get('sha256', '?')[:12]}`)" if p else ""))
    if scored and best:
        scores_md += f"\n\nbest checkpoint by {best['metric']['name']}: `{run.uri(best['key'])}`"
    columns = [(s.key, s.label, s.fmt) for s in families.of_config(cfg).scalars if s.shown]
    columns.append(("img_per_s", "img/s", ".0f"))
    head = "| step | " + " | ".join(h for _, h, _ in columns) + " |\n|" + "---|" * (len(columns) + 1) + "\n"
    table = head + "\n".join(
        f"| {r['step']} | " + " | ".join(format(r[k], f) for k, _, f in columns) + " |" for r in rows[-10:]
    )
    name = runfolder.name(cfg.run)
    create_markdown_artifact(
        key=artifact_key("train", name, "report"),
        markdown=(
            f"# Run `{name}` finished at step {step}\n\n"
            f"{inline_picture(run, runfolder.sample_key(step), f'samples at step {step}')}\n\n"
            f"{inline_picture(run, runfolder.LOSS_PLOT, 'loss curve')}\n\n"
            f"{table}{scores_md}\n\n**Checkpoints**\n\n" + "\n".join(f"- `{u}`" for u in checkpoints)
            + f"\n\nlatest: `{outcome['checkpoint']}`\n" + export_md(run, exported)
        ),
        description=f"training report for {name}",
    )
    create_table_artifact(key=artifact_key("train", name, "metrics"), table=rows[-20:],
                          description=f"last metrics of {name}")


def export_md(run, exported: dict | None) -> str:
    """The report's export section: the model card and files, or why the export is incomplete."""
    if not exported:
        return ""
    if exported["problems"]:
        return f"\n**Export incomplete:** {exported['problems'][0]}\n"
    folder = run.child(runfolder.EXPORT)
    return (f"\n**Exported** (step {exported['step']}): model card `{folder.uri(CARD_MD)}` · "
            + " · ".join(f"`{folder.uri(k)}`" for k in exported["files"] if k != CARD_MD) + "\n")


def family_options(family: families.Family, options: dict) -> dict:
    """The given (not None) `options` as settings of `family`'s config (nested as
    `config.nest_options` makes them); one that is not the family's option is a ConfigError."""
    own = {f.name for f in all_options(family.config)}
    foreign = sorted(k for k, v in options.items() if v is not None and k not in own)
    if foreign:
        raise ConfigError(f"{', '.join(foreign)}: not an option of the {family.name} family ({family.what})")
    return nest_options({k: v for k, v in options.items() if k in own}, family.config)


def train_run(family: str | None, dataset_uri: str, run_name: str, store: str | None, preset: str | None,
              options: dict, export: bool = True):
    """The train flows' body: check every parameter, pull the dataset, train (a retry resumes),
    export the generator (unless `export` is False), report. Returns the flow's result, or its
    Failed state for bad input. `family` None: the run's own, else its init_from's
    (`runfolder.family_for`)."""
    try:
        # --- every parameter checked before any heavy work --------------------------------
        check_run_name(run_name)
        run = f"{store_root(store)}/runs/{run_name}"
        fam = families.get(family or runfolder.family_for(run, options.get("init_from")))
        # the dataset's manifest and the run's saved config are read here: no retries for bad input
        cfg = config_for_run(dataset_uri, run, preset, family_options(fam, options), fam.name)
        pull_dataset(dataset_uri)
    except INPUT_ERRORS as exc:
        return fail(exc)
    outcome = train_model(cfg.to_dict())
    exported = export_model(cfg.run) if export else None
    report(cfg, outcome, exported)
    return {"run": cfg.run, "step": outcome["step"], "checkpoint": outcome["checkpoint"],
            **({"export": exported} if exported else {})}


def train_dcgan_fn(dataset_uri: str, run_name: str, store: str | None = None, preset: str | None = None,
                   family: str | None = None, export: bool = True, **options):
    """Train a run of any registered model family (`family`, facegan.families; left empty: the
    run's own when resuming, else its init_from's, else dcgan) on `dataset_uri` into
    `{store}/runs/{run_name}`; re-running resumes it.

    Every training option of every family is a parameter (see FLOW_SIGNATURE); giving one that is
    not the chosen family's is an error. Left empty, an option keeps the run's saved value when
    resuming, else the preset's (the family's presets: `facegan train --family F --help`), else
    the library's default; the resolution defaults to the dataset's. With `export` (the default)
    the trained generator is exported into `{run}/export/` (`facegan export`: safetensors,
    torch.export, ONNX, a model card).
    """
    return train_run(family, dataset_uri, run_name, store, preset, options, export)


FLOW_SIGNATURE = with_option_parameters(train_dcgan_fn, *(f.config for f in families.REGISTRY.values()))
train_dcgan = flow(name="train-dcgan", log_prints=True)(train_dcgan_fn)
