"""evaluate: FID of any checkpoint URI against a dataset, with its protocol."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from facegan.config import ConfigError
from facegan.runtime import use_device
from facegan.sample import load_generator
from flows.common import INPUT_ERRORS, artifact_key, fail


@flow(name="evaluate", log_prints=True)
def evaluate(checkpoint_uri: str, dataset_uri: str, samples: int = 10_000, weights_uri: str | None = None,
             device: str = "auto", ema: bool = True, resize: int = 299):
    """Score a checkpoint (run URI or .pt URI) with FID against `dataset_uri` (`resize`: the
    Inception input side, 299 for the FID protocol)."""
    try:
        if samples < 2:
            raise ConfigError(f"samples={samples} must be at least 2")
        from facegan.metrics.fid import FIDTracker  # torchvision's Inception: imported when scoring, not on deploy
        from facegan.sample import noise_sampler

        dev = use_device(device)
        gen = load_generator(checkpoint_uri, ema=ema, device=dev)
        tracker = FIDTracker.create(dataset_uri, samples, weights_uri, dev, resize=resize)
        score = tracker.score(noise_sampler(gen.net, gen.z_dim, dev))
    except INPUT_ERRORS as exc:
        return fail(exc)
    p = tracker.protocol
    print(f"FID {score:.3f} for {checkpoint_uri} (step {gen.step}, {gen.which}), {p['samples']} samples")
    create_markdown_artifact(
        key=artifact_key("fid", checkpoint_uri.rstrip("/").rsplit("/", 1)[-1]),
        markdown=(f"# FID {score:.3f}\n\ncheckpoint `{checkpoint_uri}` (step {gen.step}, {gen.which})\n\n"
                  f"| samples | reference | resize | weights |\n|---|---|---|---|\n| {p['samples']} | "
                  f"`{p['reference']['dataset']}` ({p['reference']['id']}) | {p['resize']} | "
                  f"{p['weights']['name']} `{p['weights']['sha256'][:12]}` |\n"),
        description="FID evaluation",
    )
    return {"fid": score, "step": gen.step, "checkpoint": checkpoint_uri, "protocol": p}
