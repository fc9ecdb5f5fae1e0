"""The product as users meet it: deployments from prefect.yaml on a real Prefect server, run by a
real worker, against moto's S3 server over HTTP; the gallery opened in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import boto3
import pytest
import yaml
from prefect_server import PrefectServer
from s3_gateway import S3Gateway

from facegan import checkpoint as ckpt
from facegan.storage import open_store
from facegan.synthetic import make_faces

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
POOL = "e2e-process"
SWAP_PARAMS = {
    "run_name": "e2e-makeup", "resolution": 32, "steps": 4, "batch_size": 4, "ngf": 8, "ndf": 8, "blocks": 1,
    "ckpt_every": 2, "log_every": 1, "sample_count": 4, "pool_size": 8, "device": "cpu",
}
TRAIN_PARAMS = {
    "run_name": "e2e", "resolution": 32, "steps": 12, "batch_size": 8, "ngf": 8, "ndf": 8,
    "z_dim": 16, "ckpt_every": 4, "log_every": 2, "device": "cpu", "ema_decay": 0.5,
}


def process_pool_copy(tmp: Path, pool: str) -> Path:
    """prefect.yaml with only the work pool swapped for a process pool and the pull step pointed
    at this checkout (the image's /opt/facegan does not exist here). Flows, parameters,
    schedules and concurrency limits are the real file's."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    spec["pull"] = [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    for d in spec["deployments"]:
        d["work_pool"] = {"name": pool, "job_variables": {}}
    spec.pop("definitions", None)
    out = tmp / "prefect.yaml"
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def start_run(server: PrefectServer, name: str, params: dict, *options: str) -> str:
    """`prefect deployment run FLOW/DEPLOYMENT` as users type it; returns the flow run's id."""
    out = server.cli("deployment", "run", name, "--params", json.dumps(params), *options)
    return re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)


def completed(server: PrefectServer, name: str, flow_run_id: str) -> dict:
    run = server.wait_final(flow_run_id)
    assert run["state"]["type"] == "COMPLETED", f"{name}: {run['state']}\n{server.logs(flow_run_id)}"
    server.wait_logs_complete(flow_run_id)
    return run


@pytest.fixture
def worker_env(server, bucket, tmp_path):
    """The process pool POOL with one worker on it for the whole test, started now so that
    it is up by the time runs come; returns the environment it runs flows with: the store, and the
    moto server's endpoint and keys, which the Prefect server's environment may predate."""
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    env = {**aws, "FACEGAN_STORE": bucket, "FACEGAN_TZ": "UTC", "FACEGAN_POOL": POOL,
           "FACEGAN_IMAGE": "facegan:test", "FACEGAN_CACHE": str(tmp_path / "cache")}
    server.cli("work-pool", "create", POOL, "--type", "process", "--overwrite")
    with server.worker(POOL, "process", env, tmp_path / "worker.log"):
        yield env


@pytest.fixture
def gateway(bucket):
    """The bucket's published pages over HTTP as the template's CloudFront distribution serves them."""
    with S3Gateway(bucket.removeprefix("s3://")) as gateway:
        yield gateway


def test_deployments_train_and_publish_gallery(server, worker_env, bucket, gateway, fid_weights, tmp_path, artifacts):
    # --- raw CelebA as users upload it: img_align_celeba.zip and list_attr_celeba.txt -----
    raw_faces = make_faces(tmp_path / "raw" / "img_align_celeba", 48, seed=1, makeup=0.5)
    zpath = tmp_path / "img_align_celeba.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(raw_faces.iterdir()):
            zf.write(p, f"img_align_celeba/{p.name}")
    open_store(bucket).put_file("raw/img_align_celeba.zip", zpath)
    open_store(bucket).put_file("raw/list_attr_celeba.txt", tmp_path / "raw" / "list_attr_celeba.txt")

    spec = process_pool_copy(tmp_path, POOL)
    deployed = server.cli("--no-prompt", "deploy", "--all", "--prefect-file", str(spec), env=worker_env, cwd=ROOT)
    assert "train-dcgan/train-dcgan" in deployed

    # the deployments carry what prefect.yaml says
    gallery_dep = server.api("GET", "/deployments/name/nightly-gallery/nightly-gallery")
    assert [s["schedule"]["cron"] for s in gallery_dep["schedules"]] == ["0 3 * * *"]
    assert gallery_dep["schedules"][0]["schedule"]["timezone"] == "UTC"
    train_dep = server.api("GET", "/deployments/name/train-dcgan/train-dcgan")
    assert train_dep["global_concurrency_limit"]["limit"] == 1
    assert train_dep["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    assert train_dep["parameters"]["dataset_uri"] == f"{bucket}/datasets/celeba-64"

    # --- prepare-celeba with the deployment's own source/dataset defaults ------------------
    prepare = "prepare-celeba/prepare-celeba"
    completed(server, prepare, start_run(server, prepare, {"resolution": 32}))
    manifest = open_store(f"{bucket}/datasets/celeba-64").get_json("manifest.json")
    assert manifest["count"] == 48 and manifest["resolution"] == 32
    assert manifest["attributes"]["table"] == f"{bucket}/raw/list_attr_celeba.txt"

    # --- train-dcgan and train-cyclegan side by side on the one worker ----------------------
    # train-dcgan's first attempt fails at step 6 (injected through the run's job variables), its
    # retry resumes from step 4; train-cyclegan learns makeup on/off from the same dataset
    inject = {"FACEGAN_TEST_FAIL_AT_STEP": "6", "FACEGAN_TEST_FAIL_MARKER": str(tmp_path / "failed"),
              "PYTHONPATH": str(ROOT / "tests" / "inject")}
    train, cyclegan = "train-dcgan/train-dcgan", "train-cyclegan/train-cyclegan"
    train_id = start_run(server, train, TRAIN_PARAMS, "--job-variable", f"env={json.dumps(inject)}")
    swap_id = start_run(server, cyclegan, SWAP_PARAMS)
    run, swap = completed(server, train, train_id), completed(server, cyclegan, swap_id)
    logs = server.logs(run["id"])
    assert "injected failure at step 6" in logs
    assert re.search(r"resuming s3://\S+/runs/e2e from step 4 ", logs), logs
    run_store = open_store(f"{bucket}/runs/e2e")
    assert [s for s, _ in ckpt.list_checkpoints(run_store)] == [4, 8, 12][-3:]
    assert ckpt.load(run_store.root)["step"] == 12
    rows = [json.loads(x) for x in run_store.get_bytes("metrics.jsonl").decode().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]  # no duplicates from the failed attempt
    for key in ("samples/step-0000012.png", "loss.png", "config.json", "latest.json"):
        assert run_store.exists(key), key
    # TensorBoard events on S3, one file per checkpoint; the retry's resume kept each row once
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from facegan import tensorboard

    assert [tensorboard.step_of(k) for k in run_store.list("tb/")] == [4, 8, 12]
    events = EventAccumulator(str(tensorboard.fetch(run_store, tmp_path / "tb")[0].parent))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss_d")] == [r["step"] for r in rows]
    kinds: dict[str, dict] = {}
    for a in server.artifacts(run["id"]):  # newest first: the retried attempt's artifacts
        kinds.setdefault(a["key"], a)
    assert kinds["train-e2e-progress"]["type"] == "progress"
    assert kinds["train-e2e-progress"]["data"] == 100.0
    assert kinds["train-e2e-report"]["type"] == "markdown"
    assert "checkpoints/step-0000012.pt" in kinds["train-e2e-report"]["data"]
    assert kinds["train-e2e-metrics"]["type"] == "table"
    # the flow's last step exported the generator to S3, through the worker
    card = run_store.get_json("export/model_card.json")
    assert card["step"] == 12 and card["family"] == "dcgan" and card["dataset"]["images"] == 48
    assert {f["key"] for f in card["generators"]["G_ema"]["files"].values()} == {
        "generator.safetensors", "generator.pt2", "generator.onnx"}
    assert "**Exported** (step 12)" in kinds["train-e2e-report"]["data"]

    # train-cyclegan ran with its deployment's defaults for the attribute and preset
    swap_dep = server.api("GET", "/deployments/name/train-cyclegan/train-cyclegan")
    assert swap_dep["global_concurrency_limit"]["limit"] == 1
    assert swap_dep["parameters"]["attribute"] == "Heavy_Makeup" and swap_dep["parameters"]["preset"] == "cyclegan64"
    swap_store = open_store(f"{bucket}/runs/e2e-makeup")
    assert ckpt.load(swap_store.root)["family"] == "cyclegan" and ckpt.load(swap_store.root)["step"] == 4
    swap_artifacts = {a["key"]: a for a in server.artifacts(swap["id"])}
    assert swap_artifacts["train-e2e-makeup-progress"]["data"] == 100.0
    assert set(swap_store.get_json("export/model_card.json")["generators"]) == {"G_AB", "G_BA"}
    assert "| cycle |" in swap_artifacts["train-e2e-makeup-report"]["data"]

    # --- nightly-gallery for a given night, its report linking the pages where they are served; ---
    # --- beside it, the evaluate deployment scores the swap against its dataset default        ---
    gallery, evaluate = "nightly-gallery/nightly-gallery", "evaluate/evaluate"
    night_id = start_run(server, gallery, {"date": "2026-11-21", "gallery_url": gateway.gallery})
    scored_id = start_run(server, evaluate, {"checkpoint_uri": f"{bucket}/runs/e2e-makeup", "samples": 6,
                                             "resize": 75, "weights_uri": fid_weights, "device": "cpu",
                                             "metrics": "fid,kid"})
    night_run, scored = completed(server, gallery, night_id), completed(server, evaluate, scored_id)
    [said] = [a["data"] for a in server.artifacts(scored["id"]) if a["key"] == "evaluate-e2e-makeup"]
    assert said.startswith("# FID ") and ", KID " in said.splitlines()[0] and "(step 4, G_BA)" in said, said
    assert f"`{bucket}/datasets/celeba-64` (" in said  # scored against the deployment's dataset
    assert any(k.startswith("inception-") for k in open_store(f"{bucket}/datasets/celeba-64").list(""))
    [report] = [a["data"] for a in server.artifacts(night_run["id"]) if a["key"] == "nightly-gallery"]
    assert f"[Open the gallery]({gateway.url}/2026-11-21/index.html)" in report, report
    assert f"![grid]({gateway.url}/2026-11-21/grid.png)" in report, report
    store = open_store(bucket)
    night = set(store.list("galleries/2026-11-21"))
    expected = {"index.html", "grid.png", "fresh.png", "interpolation.png", "loss.png", "manifest.json"}
    assert {f"galleries/2026-11-21/{n}" for n in expected} <= night
    assert len([k for k in night if "/faces/" in k]) == 32
    assert store.exists("galleries/index.html") and store.exists("galleries/latest/index.html")
    gm = store.get_json("galleries/2026-11-21/manifest.json")
    assert gm["step"] == 12 and gm["checkpoint"].endswith("runs/e2e/checkpoints/step-0000012.pt")
    [section] = gm["translations"]
    assert section["name"] == "e2e-makeup" and section["step"] == 4
    assert section["family"] == "cyclegan" and section["title"] == "Attribute swap: Heavy_Makeup"
    assert [r["label"] for r in section["rows"]][:2] == ["with Heavy_Makeup (A, real)", "Heavy_Makeup removed (A → B)"]
    assert all(store.exists(f"galleries/2026-11-21/{r['file']}") for r in section["rows"])
    assert gm["export"]["card"] == "../../runs/e2e/export/model_card.md" and gm["truncation"] == 1.0
    assert section["export"]["card"] == "../../runs/e2e-makeup/export/model_card.md"

    # --- the published pages in headless Chromium ---------------------------------------------
    # the bucket is private: an unsigned GET is refused, so pages go through a signing gateway
    # routed as the template's CloudFront distribution and bucket policy route (tests/s3_gateway.py);
    # the pages need nothing but the objects
    endpoint = boto3.client("s3").meta.endpoint_url
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(f"{endpoint}/{bucket.removeprefix('s3://')}/galleries/index.html")
    check_pages_in_chromium(gateway.gallery, "2026-11-21", artifacts)  # on to the night the report links
    # the reports as users read them, in the Prefect UI: every picture shows (inline or served by the CDN)
    report_ids = {"train": kinds["train-e2e-report"]["id"], "swap": swap_artifacts["train-e2e-makeup-report"]["id"],
                  "night": next(a["id"] for a in server.artifacts(night_run["id"]) if a["key"] == "nightly-gallery")}
    shown = check_reports_in_prefect_ui(server, report_ids, artifacts)
    assert shown == {"train": ["samples at step 12", "loss curve"], "swap": ["samples at step 4", "loss curve"],
                     "night": ["grid"]}, shown
    with pytest.raises(urllib.error.HTTPError, match="40[34]"):
        urllib.request.urlopen(f"{gateway.url}/runs/e2e/latest.json")  # of a run, only its export is served


def check_reports_in_prefect_ui(server: PrefectServer, reports: dict[str, str], artifacts: Path) -> dict:
    """{name: [alt of each picture]} of markdown artifacts {name: id} opened in the Prefect UI in
    headless Chromium; a picture the browser did not load fails the check."""
    from playwright.sync_api import sync_playwright

    shown = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for name, artifact_id in reports.items():
            page.goto(f"{server.ui}/artifacts/artifact/{artifact_id}")
            page.wait_for_selector(".artifact-data-markdown h1, .artifact-data-markdown img", timeout=60_000)
            page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=30_000)
            pictures = page.eval_on_selector_all(".artifact-data-markdown img",
                                                 "imgs => imgs.map(i => [i.alt, i.naturalWidth])")
            assert pictures and all(w > 0 for _, w in pictures), f"{name}: {pictures}"
            shown[name] = [alt for alt, _ in pictures]
            page.screenshot(path=str(artifacts / f"report-{name}.png"), full_page=True)
        browser.close()
    return shown


def check_pages_in_chromium(index: str, night: str, artifacts: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        for name, viewport in (("desktop", {"width": 1280, "height": 900}),
                               ("phone", {"width": 390, "height": 844})):
            page = browser.new_page(viewport=viewport)
            page.goto(index)
            link = page.locator(f'a[href="{night}/index.html"]')
            assert link.count() == 1, page.content()
            link.click()
            page.wait_for_load_state("load")
            assert page.url.endswith(f"/{night}/index.html")
            assert page.locator("h1").inner_text() == f"Faces of {night}"
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
            assert len(widths) >= 35 + 6 and all(w and w > 0 for w in widths), widths
            # the attribute swap's section: six labelled strips of 4 faces, real and translated
            swap = page.locator("section.translation")
            assert swap.locator("h2").inner_text() == "Attribute swap: Heavy_Makeup"
            captions = swap.locator("figcaption").all_inner_texts()
            assert captions == ["with Heavy_Makeup (A, real)", "Heavy_Makeup removed (A → B)", "and back (A → B → A)",
                                "without Heavy_Makeup (B, real)", "Heavy_Makeup added (B → A)", "and back (B → A → B)"]
            strips = swap.locator("img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
            assert strips == [2 + 4 * 34] * 6, strips
            # each run links its model card and exported files, and the links resolve
            hrefs = page.eval_on_selector_all("p.export a", "links => links.map(a => a.href)")
            assert sum(h.endswith("/export/model_card.md") for h in hrefs) == 2, hrefs
            for href in hrefs:
                assert page.request.get(href).status == 200, href
            # nothing overflows sideways on a phone
            scroll = page.evaluate("document.documentElement.scrollWidth")
            assert scroll <= viewport["width"], f"{name}: page is {scroll}px wide"
            page.screenshot(path=str(artifacts / f"gallery-{name}.png"), full_page=True)
        browser.close()
    assert (artifacts / "gallery-desktop.png").stat().st_size > 10_000
