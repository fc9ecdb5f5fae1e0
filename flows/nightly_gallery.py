"""nightly-gallery: sample the newest generator and publish the night's HTML gallery."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from facegan import gallery
from facegan.config import ConfigError
from facegan.sample import truncation_threshold
from facegan.storage import is_remote, open_store
from flows.common import INPUT_ERRORS, check_run_name, fail, inline_picture, retry_transient, store_root


def night_of(date: str | None, timezone: str) -> dt.date:
    """The gallery's date: the parameter (YYYY-MM-DD), else today in `timezone`."""
    if date:
        try:
            return dt.date.fromisoformat(date)
        except ValueError:
            raise ConfigError(f"date={date!r} is not YYYY-MM-DD") from None
    try:
        return dt.datetime.now(ZoneInfo(timezone)).date()
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"timezone={timezone!r} is not a known IANA time zone") from None


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_transient)
def publish(root: str, night: dt.date, run_name: str | None, fixed: int, fresh: int, truncation: float) -> dict:
    return gallery.publish(root, night, run_name=run_name, fixed=fixed, fresh=fresh, truncation=truncation)


def night_links(root: str, date: str, gallery_url: str | None) -> str:
    """The report's link to the night's page and its grid: under `gallery_url` (where `galleries/`
    is served, e.g. the stack's GalleryUrl) when given. Else the pages are named and the grid is
    shown inline: a browser opens no file:// link from the Prefect UI, and a private bucket's page
    cannot be opened from a link (a presigned URL would not sign the images the page loads)."""
    night = f"{gallery.GALLERIES}/{date}"
    if gallery_url:
        base = gallery_url.removesuffix("index.html").rstrip("/")
        return f"[Open the gallery]({base}/{date}/index.html)\n\n![grid]({base}/{date}/grid.png)"
    s = open_store(root)
    where = (f"`{s.uri(night)}/` (a private bucket: deploy the stack with EnableCloudFront=true and set "
             "gallery_url to its GalleryUrl to link them here)" if is_remote(root)
             else f"`{s.uri(night)}/` (open its index.html in a browser)")
    return f"The pages are in {where}.\n\n{inline_picture(s, night + '/grid.png', 'grid')}"


@flow(name="nightly-gallery", log_prints=True)
def nightly_gallery(store: str | None = None, run_name: str | None = None, date: str | None = None,
                    timezone: str = "UTC", fixed: int = 16, fresh: int = 16, truncation: float = 1.0,
                    gallery_url: str | None = None):
    """Publish `galleries/YYYY-MM-DD/` from the newest (or the named run's) best/latest checkpoint;
    `truncation`: the truncation trick's psi for its faces (1: untruncated; facegan sample --truncation);
    `gallery_url`: where `galleries/` is served over HTTP(S) (the stack's GalleryUrl), for the report's links."""
    try:
        root = store_root(store)
        night = night_of(date, timezone)
        if run_name is not None:
            check_run_name(run_name)
        if gallery_url and not gallery_url.startswith(("https://", "http://")):
            raise ConfigError(f"gallery_url={gallery_url!r} is not an http(s) URL (the stack's GalleryUrl)")
        for name, value in (("fixed", fixed), ("fresh", fresh)):
            if not 1 <= value <= 256:
                raise ConfigError(f"{name}={value} must be between 1 and 256")
        truncation_threshold(truncation)  # a bad psi is refused here, in one line
        result = publish(root, night, run_name, fixed, fresh, truncation)
    except INPUT_ERRORS as exc:
        return fail(exc)
    print(f"gallery for {result['date']} from {result['checkpoint']} (step {result['step']}): "
          f"{result['index_uri']}")
    create_markdown_artifact(
        key="nightly-gallery",
        markdown=(
            f"# Faces of {result['date']}\n\n{night_links(root, result['date'], gallery_url)}\n\n"
            f"step {result['step']} of `{result['run']}`, checkpoint `{result['checkpoint']}`\n"
        ),
        description=f"gallery {result['date']}",
    )
    return result
