"""prepare-celeba: raw CelebA (local path or S3 URI) -> dataset shards + manifest in a store."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from facegan import data
from facegan.config import RESOLUTIONS, ConfigError
from facegan.prepare import prepare, unused_rows
from facegan.storage import StorageError, is_remote, open_store, split_uri
from flows.common import INPUT_ERRORS, artifact_key, fail, retry_transient


@task(retries=3, retry_delay_seconds=10, retry_condition_fn=retry_transient)
def download_source(source: str, workdir: str) -> str:
    """Bring an S3 source (a .zip object or a prefix of images) to a local path."""
    if source.endswith(".zip"):
        store, key = split_uri(source)
        local = Path(workdir) / key
        store.get_file(key, local)
        return str(local)
    store = open_store(source)
    keys = store.list()
    if not keys:
        raise StorageError(f"{source}: no objects under this prefix")
    for key in keys:
        store.get_file(key, Path(workdir) / "images" / key)
    return str(Path(workdir) / "images")


@task
def existing_manifest(dataset_uri: str) -> dict | None:
    """The valid manifest already at dataset_uri, or None."""
    store = open_store(dataset_uri)
    if not store.exists(data.MANIFEST):
        return None
    try:
        return data.read_manifest(store)
    except data.DatasetError:
        return None


@task
def build(source: str, dataset_uri: str, resolution: int, limit: int | None, workers: int | None,
          label: str, attributes: str | None = None) -> dict:
    return prepare(source, dataset_uri, resolution=resolution, limit=limit, workers=workers,
                   source_label=label, attributes=attributes).manifest


@flow(name="prepare-celeba", log_prints=True)
def prepare_celeba(source: str, dataset_uri: str, resolution: int = 64, limit: int | None = None,
                   workers: int | None = None, force: bool = False, attributes: str | None = None):
    """Crop, resize, validate and shard raw CelebA into `dataset_uri`; skip if already built.
    `attributes`: CelebA's list_attr_celeba.txt (a path or s3:// URI), stored with the images."""
    try:
        if not source:
            raise ConfigError("source is empty; give img_align_celeba/ (folder, .zip or s3:// URI)")
        if not dataset_uri:
            raise ConfigError("dataset_uri is empty; give s3://bucket/datasets/NAME or a folder")
        if resolution not in RESOLUTIONS:
            raise ConfigError(f"resolution={resolution} is not supported; choose one of {RESOLUTIONS}")
        if limit is not None and limit < 1:
            raise ConfigError(f"limit={limit} must be a positive integer")
        found = existing_manifest(dataset_uri)
        same = found and (found.get("source"), found.get("resolution"), found.get("limit"),
                          (found.get("attributes") or {}).get("table")) == (source, resolution, limit, attributes)
        if same and not force:
            print(f"dataset {dataset_uri} already built from {source} ({found['count']} images); not rebuilt")
            return found
        with tempfile.TemporaryDirectory(prefix="facegan-raw-") as tmp:
            local = download_source(source, tmp) if is_remote(source) else source
            manifest = build(local, dataset_uri, resolution, limit, workers, source, attributes)
    except INPUT_ERRORS as exc:
        return fail(exc)
    skipped = "\n".join(f"| {s['file']} | {s['reason']} |" for s in manifest["skipped"][:50])
    rows = unused_rows(manifest)  # the table's rows without an image: counted apart from skipped files
    create_markdown_artifact(
        key=artifact_key("dataset", dataset_uri.rsplit("/", 1)[-1]),
        markdown=(
            f"# Dataset `{dataset_uri}`\n\n{manifest['count']} images at {resolution}px in "
            f"{len(manifest['shards'])} shard(s), id `{manifest['id']}`, from `{source}`"
            + (f", labelled by `{attributes}`" if attributes else "") + ".\n\n"
            f"Skipped {len(manifest['skipped'])} file(s)"
            + (f":\n\n| file | reason |\n|---|---|\n{skipped}\n" if skipped else ".\n")
            + (f"\n{rows}.\n" if rows else "")
        ),
        description="prepared dataset",
    )
    return manifest
