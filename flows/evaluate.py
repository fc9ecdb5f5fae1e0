"""evaluate: FID (and KID, precision, recall) of any checkpoint URI against a dataset, with its protocol."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from facegan import metrics as metric_registry
from flows.common import INPUT_ERRORS, artifact_key, fail


@flow(name="evaluate", log_prints=True)
def evaluate(checkpoint_uri: str, dataset_uri: str, samples: int = 10_000, weights_uri: str | None = None,
             device: str = "auto", ema: bool = True, resize: int = 299, metrics: str = "fid"):
    """Score a checkpoint (run URI, .pt URI or export folder) against `dataset_uri` with each of
    `metrics` (a comma list: fid, kid, precision, recall; one Inception pass for all; `resize`:
    the Inception input side, 299 for the FID protocol)."""
    try:
        wanted = metric_registry.names(metrics)
        request = metric_registry.Request(dataset_uri, samples, weights_uri or "", resize)
        fields, p, gen = metric_registry.score_checkpoint(checkpoint_uri, request, wanted, device, ema=ema)
    except INPUT_ERRORS as exc:
        return fail(exc)
    scores = {name: fields[name] for name in wanted}
    said = ", ".join(f"{name.upper()} {value:.4g}" for name, value in scores.items())
    print(f"{said} for {checkpoint_uri} (step {gen.step}, {gen.which}), {p['samples']} samples")
    rows = "\n".join(
        f"| {name.upper()} | {value:.4g}" + (f" ± {fields[name + '_std']:.2g}" if name + "_std" in fields else "")
        + f" | {'lower' if metric_registry.get(name).lower_is_better else 'higher'} |"
        for name, value in scores.items())
    create_markdown_artifact(
        key=artifact_key("evaluate", checkpoint_uri.rstrip("/").rsplit("/", 1)[-1]),
        markdown=(f"# {said}\n\ncheckpoint `{checkpoint_uri}` (step {gen.step}, {gen.which})\n\n"
                  f"| metric | score | better |\n|---|---|---|\n{rows}\n\n"
                  f"| samples | reference | resize | weights |\n|---|---|---|---|\n| {p['samples']} | "
                  f"`{p['reference']['dataset']}` ({p['reference']['id']}) | {p['resize']} | "
                  f"{p['weights']['name']} `{p['weights']['sha256'][:12]}` |\n"),
        description="checkpoint evaluation",
    )
    return {**fields, "step": gen.step, "checkpoint": checkpoint_uri, "protocol": p}
