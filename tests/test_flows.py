"""Flows called in-process against the test Prefect server: parameter checks, idempotency,
one-line failures."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from facegan.gallery import GalleryError
from flows.nightly_gallery import nightly_gallery
from flows.prepare_celeba import prepare_celeba
from flows.train_dcgan import train_dcgan


def _failed_fast(call, started: float) -> str:
    state = call(return_state=True)
    assert state.is_failed(), state
    assert time.monotonic() - started < 30
    message = state.message
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize(
    "params,reason",
    [
        ({"resolution": 48}, "model.resolution=48 is not supported"),
        ({"steps": -5}, "steps=-5 must be a positive integer"),
        ({"dataset_uri": ""}, "StorageError: the URI is empty"),
        ({"batch_size": 0}, "batch_size=0 must be a positive integer"),
        ({"lr_schedule": "cosine"}, "lr_schedule='cosine' must be one of"),
        ({"precision": "fp16"}, "precision='fp16' must be one of"),
        ({"run_name": "../etc"}, "run_name='../etc' must be"),
        ({"dataset_uri": "/nonexistent/dataset"}, "manifest.json: no such object"),
    ],
)
def test_bad_train_parameters_fail_fast_with_one_line(prefect_api, tmp_path, params, reason, dataset32):
    base = {"dataset_uri": dataset32, "run_name": "r", "store": str(tmp_path / "store")}
    message = _failed_fast(lambda **kw: train_dcgan(**{**base, **params}, **kw), time.monotonic())
    assert reason in message
    assert not (tmp_path / "store" / "runs").exists()  # nothing heavy happened


def test_unreachable_bucket_fails_fast(prefect_api, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # one retry, not the default's five with backoff
    call = lambda **kw: train_dcgan(dataset_uri="s3://facegan-data/datasets/celeba-64",  # noqa: E731
                                    run_name="r", store="s3://facegan-data", **kw)
    message = _failed_fast(call, time.monotonic())
    assert "s3://facegan-data/datasets/celeba-64/manifest.json: S3 endpoint unreachable" in message


def test_gallery_without_checkpoint_is_clear_failure(prefect_api, tmp_path):
    message = _failed_fast(lambda **kw: nightly_gallery(store=str(tmp_path), **kw), time.monotonic())
    assert f"no checkpoint found under {tmp_path}/runs; train a run first" in message
    assert GalleryError.__name__ in message


def test_gallery_bad_date(prefect_api, tmp_path):
    message = _failed_fast(lambda **kw: nightly_gallery(store=str(tmp_path), date="22/11/2026", **kw),
                           time.monotonic())
    assert "date='22/11/2026' is not YYYY-MM-DD" in message


def test_gallery_run_name_that_is_not_a_run_name(prefect_api, tmp_path):
    message = _failed_fast(lambda **kw: nightly_gallery(store=str(tmp_path), run_name="../../datasets", **kw),
                           time.monotonic())
    assert "run_name='../../datasets' must be non-empty letters, digits" in message


def test_gallery_url_that_is_not_a_url(prefect_api, tmp_path):
    message = _failed_fast(lambda **kw: nightly_gallery(store=str(tmp_path), gallery_url="d1.cloudfront.net", **kw),
                           time.monotonic())
    assert "gallery_url='d1.cloudfront.net' is not an http(s) URL" in message


def test_reports_show_their_pictures_inline_and_link_only_pages_a_browser_can_open(tmp_path, bucket):
    """A report's pictures go inside it as data: URIs: a presigned URL dies with the credentials that
    signed it (hours, for an ECS task role) and a browser opens no file:// picture from the Prefect
    UI (test_flows_e2e opens the reports there, in Chromium). The night's pages are
    linked only where gallery_url (the stack's GalleryUrl) serves them: a private bucket's presigned
    page would load its images unsigned, which the bucket refuses."""
    import base64
    import io
    import re
    import urllib.error
    import urllib.request
    from urllib.parse import urljoin

    import boto3
    import numpy as np
    from PIL import Image

    from facegan.storage import open_store
    from flows.common import inline_picture
    from flows.nightly_gallery import night_links

    def picture(size: tuple[int, int], seed: int) -> bytes:
        out = io.BytesIO()
        Image.frombytes("RGB", size, np.random.default_rng(seed).integers(0, 256, size[0] * size[1] * 3,
                                                                            dtype=np.uint8).tobytes()).save(out, "PNG")
        return out.getvalue()

    def inline(said: str, alt: str) -> tuple[str, bytes]:
        kind, data = re.search(rf"!\[{alt}\]\(data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)\)", said).groups()
        return kind, base64.b64decode(data)

    grid = picture((66, 66), 0)
    local, store = open_store(str(tmp_path)), open_store(bucket)
    for s in (local, store):
        s.put_bytes("galleries/2026-11-21/grid.png", grid)
        s.put_bytes("galleries/2026-11-21/index.html", b"the night's index.html")
    said = night_links(str(tmp_path), "2026-11-21", None)
    assert f"`{tmp_path}/galleries/2026-11-21/`" in said and "file://" not in said, said
    assert inline(said, "grid") == ("png", grid)  # a small PNG goes in as it is
    said = night_links(bucket, "2026-11-21", "")
    assert "Open the gallery" not in said and f"`{bucket}/galleries/2026-11-21/`" in said, said
    assert inline(said, "grid") == ("png", grid) and "https://" not in said
    client = boto3.client("s3")  # why the S3 night is not linked: its page opens, what it loads does not
    page = client.generate_presigned_url("get_object", Params={"Bucket": bucket.removeprefix("s3://"),
                                                               "Key": "galleries/2026-11-21/index.html"})
    assert urllib.request.urlopen(page).read() == b"the night's index.html"
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(urljoin(page, "grid.png"))
    assert night_links(bucket, "2026-11-21", "https://d1.cloudfront.net/index.html") == (
        "[Open the gallery](https://d1.cloudfront.net/2026-11-21/index.html)\n\n"
        "![grid](https://d1.cloudfront.net/2026-11-21/grid.png)")

    # a picture over the byte budget goes in as a JPEG, scaled to fit max_side; an unreadable one in words
    local.put_bytes("big.png", picture((1042, 530), 1))
    kind, data = inline(inline_picture(local, "big.png", "big"), "big")
    assert kind == "jpeg" and Image.open(io.BytesIO(data)).size == (768, 391)
    local.put_bytes("heavy.png", picture((530, 530), 2))  # within max_side
    kind, data = inline(inline_picture(local, "heavy.png", "heavy"), "heavy")
    assert kind == "jpeg" and Image.open(io.BytesIO(data)).size == (530, 530)
    local.put_bytes("notes.png", b"not a picture")
    said = inline_picture(local, "missing.png", "samples")
    assert said == f"*samples: not shown ({tmp_path}/missing.png: no such object)*"
    assert inline_picture(local, "notes.png", "loss").startswith("*loss: not shown (cannot identify image file")


def test_prepare_is_idempotent(prefect_api, raw_faces, tmp_path):
    uri = str(tmp_path / "ds")
    first = prepare_celeba(source=str(raw_faces), dataset_uri=uri, resolution=32, limit=10)
    shard = tmp_path / "ds" / first["shards"][0]["name"]
    mtime = shard.stat().st_mtime_ns
    again = prepare_celeba(source=str(raw_faces), dataset_uri=uri, resolution=32, limit=10)
    assert again["id"] == first["id"]
    assert shard.stat().st_mtime_ns == mtime  # not rebuilt
    other = prepare_celeba(source=str(raw_faces), dataset_uri=uri, resolution=32, limit=12)
    assert other["count"] == 12  # different options: rebuilt
    message = _failed_fast(
        lambda **kw: prepare_celeba(source=str(tmp_path / "none"), dataset_uri=uri, **kw), time.monotonic())
    assert "no such folder or .zip file" in message
    assert (tmp_path / "ds" / "manifest.json").exists()  # the existing dataset is untouched


def test_the_prepare_report_counts_the_tables_rows_without_an_image(prefect_api, makeup_raw, tmp_path):
    """CelebA's whole table beside a subset of its images: the rows without an image are counted
    in one line of the flow's report (and the manifest), not listed as skipped files."""
    import asyncio

    from prefect.client.orchestration import get_client

    from facegan import attributes

    table = attributes.parse((makeup_raw.parent / attributes.TABLE_NAME).read_text(), "t")
    extra = {f"{900000 + i}.jpg": row for i, row in enumerate(list(table.rows.values())[:3])}
    (tmp_path / "attrs.txt").write_text(attributes.format_table(table.names, {**table.rows, **extra}))
    m = prepare_celeba(source=str(makeup_raw), dataset_uri=str(tmp_path / "labelled-ds"), resolution=32,
                       attributes=str(tmp_path / "attrs.txt"))
    assert m["skipped"] == [] and m["attributes"]["rows_without_image"] == {"count": 3, "first": list(extra)}

    async def report():
        async with get_client() as client:
            return await client.read_artifacts()

    shown = [a.data for a in asyncio.run(report()) if a.key == "dataset-labelled-ds"][-1]
    assert "Skipped 0 file(s)." in shown
    assert "3 row(s) of the attribute table have no image in the source (900000.jpg, ...)." in shown


def test_evaluate_flow_scores_a_checkpoint(prefect_api, dataset32, fid_weights, tmp_path):
    from helpers import tiny_config

    from facegan.loop import Hooks, fit
    from flows.evaluate import evaluate

    run = str(tmp_path / "run")
    fit(tiny_config(dataset32, run, steps=2), Hooks(log=lambda *_: None))
    out = evaluate(checkpoint_uri=run, dataset_uri=dataset32, samples=6, weights_uri=fid_weights, device="cpu",
                   resize=75, metrics="fid,kid,recall")
    assert out["fid"] > 0 and out["kid_std"] >= 0 and 0 <= out["recall"] <= 1 and out["step"] == 2
    assert out["protocol"]["samples"] == 6 and out["protocol"]["resize"] == "bilinear to 75x75"
    assert out["protocol"]["k"] == 3 and "precision" not in out
    message = _failed_fast(lambda **kw: evaluate(checkpoint_uri=run, dataset_uri=dataset32, metrics="fid,is", **kw),
                           time.monotonic())
    assert "metric 'is' is unknown" in message
    message = _failed_fast(lambda **kw: evaluate(checkpoint_uri=run, dataset_uri=dataset32, samples=3,
                                                 metrics="precision", **kw), time.monotonic())
    assert "samples=3: precision needs at least 4 images" in message
    message = _failed_fast(
        lambda **kw: evaluate(checkpoint_uri=run, dataset_uri=dataset32, weights_uri=str(tmp_path / "x.pth"), **kw),
        time.monotonic())
    assert "FID weights" in message and "pt_inception-2015-12-05-6726825d.pth" in message


def test_training_retries_failures_but_not_interruptions():
    from prefect.states import Failed

    from facegan.config import ConfigError
    from facegan.storage import StorageError
    from flows.train_dcgan import TrainingInterrupted, retry_unless_interrupted

    def retried(exc: Exception) -> bool:
        return retry_unless_interrupted(None, None, Failed(data=exc))

    assert retried(RuntimeError("worker hiccup"))  # resumes from latest.json
    assert retried(StorageError("s3://b/k: S3 endpoint unreachable", transient=True))
    assert not retried(TrainingInterrupted("stopped at step 7: stop requested"))  # SIGTERM: let the run end
    assert not retried(StorageError("s3://b/k: no such object"))
    assert not retried(ConfigError("steps=-1 must be a positive integer"))


def test_train_flow_takes_a_preset(prefect_api, prepared, tmp_path):
    from facegan import checkpoint as ckpt

    out = train_dcgan(dataset_uri=prepared(32), run_name="preset-run", store=str(tmp_path), preset="udacity32",
                      steps=2, batch_size=4, ngf=8, log_every=1, ckpt_every=2, device="cpu")
    cfg = ckpt.load(out["run"])["config"]
    assert cfg["model"]["ngf"] == 8 and cfg["model"]["ndf"] == 32  # preset value kept where not overridden
    assert cfg["ema_decay"] == 0.0 and cfg["batch_size"] == 4 and out["step"] == 2
    # another export writing into the run's export folder: the session trained, its export is reported
    from facegan.lease import Lease
    from facegan.storage import open_store

    with Lease(open_store(f"{out['run']}/export"), what="export folder"):
        again = train_dcgan(dataset_uri=prepared(32), run_name="preset-run", store=str(tmp_path), steps=4,
                            device="cpu")
    assert again["step"] == 4 and again["export"]["files"] == []
    assert "being exported into by another process" in again["export"]["problems"][0]
    message = _failed_fast(lambda **kw: train_dcgan(dataset_uri=prepared(32), run_name="r", store=str(tmp_path),
                                                    preset="dcgan256", **kw), time.monotonic())
    assert "preset='dcgan256' is unknown" in message


def test_train_flow_trains_the_resnet_family(prefect_api, prepared, tmp_path):
    from facegan import checkpoint as ckpt

    out = train_dcgan(dataset_uri=prepared(32), run_name="resnet-run", store=str(tmp_path), family="resnet",
                      preset="resnet32-small", steps=2, batch_size=4, ngf=16, ndf=16, log_every=1, ckpt_every=2,
                      lr_schedule="constant", device="cpu")
    state = ckpt.load(out["run"])
    assert out["step"] == 2 and state["family"] == "resnet" and state["config"]["preset"] == "resnet32-small"
    assert state["config"]["n_dis"] == 2 and state["config"]["model"]["ngf"] == 16
    assert out["export"]["problems"] == [] and "generator.onnx" in out["export"]["files"], out["export"]
    # re-run without `family`: the run resumes in its own family (its saved settings are the defaults)
    again = train_dcgan(dataset_uri=prepared(32), run_name="resnet-run", store=str(tmp_path), steps=4,
                        device="cpu", export=False)
    assert again["step"] == 4 and ckpt.load(again["run"])["family"] == "resnet"


def test_a_run_the_watchdog_stops_ends_the_flow_failed_with_its_line(prefect_api, dataset32, tmp_path):
    """A generator that cannot learn: D saturates and the watchdog (3 windows here) stops the run."""
    params = dict(dataset_uri=dataset32, run_name="dead", store=str(tmp_path), steps=300, batch_size=32,
                  ngf=16, ndf=16, lr_g=1e-7, log_every=5, ckpt_every=25, watchdog_windows=3, device="cpu")
    state = train_dcgan(**params, return_state=True)
    assert state.is_failed() and "\n" not in state.message, state
    assert "the watchdog stopped the run, collapsed at step" in state.message and "saturation" in state.message
    assert (tmp_path / "runs" / "dead" / "watchdog.json").exists()


def test_flow_cli_and_config_take_the_same_options():
    """One option table (facegan.config) makes the CLI's options and the flow's parameters:
    the same names, types, defaults (None: not given) and help."""
    import argparse
    import inspect

    from facegan.cli import PARSERS, build_parser
    from facegan.config import ModelConfig, TrainConfig, all_options, option_type
    from flows.train_dcgan import train_dcgan

    table = [f.name for f in all_options()]
    config_fields = [f.name for f in dataclasses.fields(ModelConfig)] + [
        f.name for f in dataclasses.fields(TrainConfig)
        if f.name not in ("dataset", "run", "preset", "model", "init_origin")]  # not options: where a run is, began
    assert table == config_fields  # every config field is an option

    params = inspect.signature(train_dcgan.fn).parameters
    # the train flow takes any family: the default family's options first, then the others' own
    from facegan import families

    others = [f.name for fam in families.REGISTRY.values() for f in all_options(fam.config) if f.name not in table]
    assert list(params) == ["dataset_uri", "run_name", "store", "preset", "family", "export", *table,
                            *dict.fromkeys(others)]
    assert params["family"].default is None  # the run's own family when resuming, else dcgan
    for f in all_options():
        assert params[f.name].default is None and params[f.name].annotation == (option_type(f) | None), f.name

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    train_parser = commands.choices["train"]
    cli = {a.dest: a for a in train_parser._actions  # (renamed flags are hidden: they only say the new name)
           if a.dest not in ("help", "family", "dataset", "run", "preset", "nproc") and a.help != argparse.SUPPRESS}
    assert list(cli) == table
    for f in all_options():
        assert cli[f.name].default is None and f.metadata["help"] in cli[f.name].help
        if option_type(f) is not bool:  # numbers through the CLI's strict parsers (no "2_0")
            assert cli[f.name].type is PARSERS.get(option_type(f), option_type(f))

    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(train_dcgan).model_dump()["properties"]
    assert all(f.metadata["help"] in schema[f.name]["description"] for f in all_options())


def test_train_flow_with_fid_on_completes_and_reports_fid(prefect_api, prepared, fid_weights, tmp_path):
    """FID rows live in their own stream: the report (losses table) and the gallery read each."""
    from prefect.client.orchestration import get_client

    state = train_dcgan(dataset_uri=prepared(32), run_name="fid-run", store=str(tmp_path), steps=4, batch_size=4,
                        ngf=8, ndf=8, log_every=1, ckpt_every=2, metric_every=2, metric_samples=8,
                        metric_weights=fid_weights, metric_resize=75, metrics="fid,kid,precision,recall", device="cpu",
                        return_state=True)
    assert state.is_completed(), state.message
    run = tmp_path / "runs" / "fid-run"
    fid_rows = [json.loads(x) for x in (run / "metric-fid.jsonl").read_text().splitlines()]
    assert [r["step"] for r in fid_rows] == [2, 4]
    assert all("fid" not in json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines())

    async def report():
        async with get_client() as client:
            return await client.read_artifacts()

    import asyncio

    artifacts = [a for a in asyncio.run(report()) if a.key == "train-fid-run-report"]
    assert artifacts and "**FID** " in artifacts[-1].data and "best checkpoint" in artifacts[-1].data
    for name in ("FID", "KID", "PRECISION", "RECALL"):  # each with its protocol beside it
        line = next(x for x in artifacts[-1].data.splitlines() if x.startswith(f"**{name}** "))
        assert "8 samples" in line and "weights sha256" in line, line
    assert " ± " in next(x for x in artifacts[-1].data.splitlines() if x.startswith("**KID** "))
    # a local run's pictures inline, the very files of the run (a file:// link would not show in the UI)
    import base64
    import re

    shown = dict(re.findall(r"!\[([^\]]+)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", artifacts[-1].data))
    assert {k: base64.b64decode(v) for k, v in shown.items()} == {
        "samples at step 4": (run / "samples" / "step-0000004.png").read_bytes(),
        "loss curve": (run / "loss.png").read_bytes()}
