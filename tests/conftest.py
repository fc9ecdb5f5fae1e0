"""Shared fixtures: a real moto S3 server over HTTP, small synthetic datasets, both store kinds."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import boto3
import pytest
from prefect_server import PrefectServer

from facegan.prepare import prepare
from facegan.synthetic import make_faces

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
PREFECT_SERVER = pytest.StashKey[PrefectServer]()


def launch_prefect_server(config) -> PrefectServer:
    """The session's Prefect server, launched (not yet waited for) in a new PREFECT_HOME."""
    srv = PrefectServer(Path(tempfile.mkdtemp(prefix="facegan-prefect-home-")))
    srv.launch()
    config.stash[PREFECT_SERVER] = srv
    return srv


def pytest_collection_finish(session):
    """Launch the session's Prefect server as soon as the collected tests are known to need it: its
    start-up (10-15 s on 2 cores) then overlaps the tests that run before the first one using it."""
    if not session.config.option.collectonly and any("server" in item.fixturenames for item in session.items):
        launch_prefect_server(session.config)


def pytest_sessionfinish(session):
    srv = session.config.stash.get(PREFECT_SERVER, None)
    if srv is not None:
        srv.stop()
        shutil.rmtree(srv.home, ignore_errors=True)


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """moto's S3 in server mode on loopback; boto3 reaches it through AWS_ENDPOINT_URL_S3."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": endpoint,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture
def bucket(moto_endpoint) -> str:
    """A fresh, empty bucket on the moto server; returns its s3:// URI."""
    name = f"facegan-test-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path) -> str:
    """The root URI of an empty store, once as a local folder and once on moto S3."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("bucket") + "/prefix"


@pytest.fixture(scope="session")
def raw_faces(tmp_path_factory) -> Path:
    """96 synthetic CelebA-shaped (178x218) JPEGs."""
    return make_faces(tmp_path_factory.mktemp("raw") / "img_align_celeba", 96, seed=1)


@pytest.fixture(scope="session")
def dataset32(raw_faces, tmp_path_factory) -> str:
    """A prepared 32 px dataset in a local folder."""
    out = tmp_path_factory.mktemp("ds") / "celeba-32"
    prepare(raw_faces, str(out), resolution=32, workers=2, log=lambda *_: None)
    return str(out)


@pytest.fixture(scope="session")
def makeup_raw(tmp_path_factory) -> Path:
    """48 synthetic faces, half with makeup, and list_attr_celeba.txt beside them."""
    return make_faces(tmp_path_factory.mktemp("mraw") / "img_align_celeba", 48, seed=4, makeup=0.5)


@pytest.fixture(scope="session")
def labelled32(makeup_raw, tmp_path_factory) -> str:
    """makeup_raw prepared at 32 px with its attribute table."""
    from facegan.attributes import TABLE_NAME

    out = str(tmp_path_factory.mktemp("mds") / "faces-32")
    prepare(makeup_raw, out, resolution=32, workers=1, attributes=str(makeup_raw.parent / TABLE_NAME),
            log=lambda *_: None)
    return out


@pytest.fixture
def artifacts() -> Path:
    """Folder for files tests keep for people to look at (screenshots)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def server(request):
    """A real Prefect server (SQLite) on loopback for the whole session (launched at collection,
    see pytest_collection_finish; stopped at the session's end)."""
    srv = request.config.stash.get(PREFECT_SERVER, None) or launch_prefect_server(request.config)
    srv.wait_healthy()
    return srv


@pytest.fixture
def prefect_api(server):
    """Point this process's Prefect client at the test server (flows called in-process).

    Flow-run heartbeats (Prefect's zombie detection, every 180 s by default) are off here: no
    in-process flow test lives that long, and ending a run joins the heartbeat thread, which
    sleeps in 1 s steps, so each flow call took 1 s more. Deployed runs keep them (test_flows_e2e).
    """
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server.url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield server
        APILogWorker.drain_all(timeout=5)  # the flows' last log lines sent while the server is up


@pytest.fixture(scope="session")
def fid_weights(tmp_path_factory) -> str:
    """A randomly initialised FID InceptionV3 saved like the real weights file: its name carries
    the first 8 hex digits of its sha256 (the real weights cannot be downloaded here)."""
    from bench.smoke import save_random_fid_weights

    return save_random_fid_weights(tmp_path_factory.mktemp("fid"))


@pytest.fixture(scope="session")
def prepared(raw_faces, tmp_path_factory):
    """Datasets of 16 faces at each resolution: prepared(res) -> URI."""
    made: dict[int, str] = {}

    def get(res: int) -> str:
        if res not in made:
            out = tmp_path_factory.mktemp(f"ds{res}") / f"faces-{res}"
            prepare(raw_faces, str(out), resolution=res, workers=1, limit=16, log=lambda *_: None)
            made[res] = str(out)
        return made[res]

    return get


@pytest.fixture
def fake_cuda(monkeypatch):
    """A strict CUDA stand-in: install(count) makes torch.cuda claim `count` GPUs, and set_device
    check its argument exactly as torch does (ValueError for an index-less device), then raise
    helpers.ReachedCuda with the index instead of calling the driver (see tests/test_runtime.py)."""
    import torch
    from helpers import ReachedCuda
    from torch.cuda._utils import _get_device_index

    def install(count: int = 1):
        def strict_set_device(device):
            raise ReachedCuda(_get_device_index(device))

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", strict_set_device)

    return install
