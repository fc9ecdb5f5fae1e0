import datetime as dt
import threading
from pathlib import Path

import pytest
from helpers import tiny_config

from facegan import gallery
from facegan.errors import DatasetError, LeaseError
from facegan.lease import Lease
from facegan.loop import Hooks, fit
from facegan.prepare import prepare
from facegan.storage import open_store


@pytest.fixture(scope="module")
def trained_store(dataset32, tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    for name, steps in (("older", 4), ("newer<script>", 2)):
        fit(tiny_config(dataset32, str(root / "runs" / name), steps=steps, ckpt_every=2),
              Hooks(log=lambda *_: None))
    return str(root)


def test_publish_picks_newest_run_and_writes_the_night(trained_store):
    m = gallery.publish(trained_store, dt.date(2026, 1, 2), fixed=4, fresh=3)
    assert m["run"].endswith("newer<script>") and m["step"] == 2
    store = open_store(trained_store)
    keys = set(store.list("galleries/2026-01-02"))
    assert len([k for k in keys if "/faces/" in k]) == 7
    page = store.get_bytes("galleries/2026-01-02/index.html").decode()
    assert "<script>" not in page and "newer&lt;script&gt;" in page  # escaped
    assert 'src="grid.png"' in page and "://" not in page.split("<main>")[1].split("checkpoint")[0]
    named = gallery.publish(trained_store, dt.date(2026, 1, 3), run_name="older", fixed=2, fresh=2)
    assert named["step"] == 4


def test_rerun_replaces_that_night_only_and_index_is_newest_first(trained_store):
    store = open_store(trained_store)
    gallery.publish(trained_store, dt.date(2026, 2, 1), fixed=4, fresh=4)
    gallery.publish(trained_store, dt.date(2026, 2, 2), fixed=4, fresh=4)
    other_before = {k: store.get_bytes(k) for k in store.list("galleries/2026-02-01")}
    mine = {f"galleries/{night}/{name}": name.encode() for night in ("2026-02-02", "latest")
            for name in ("notes.md", "faces/picked.jpg", "photo.png")}  # a user's files beside the pages
    for key, data in mine.items():
        store.put_bytes(key, data)
    gallery.publish(trained_store, dt.date(2026, 2, 2), fixed=2, fresh=1)  # fewer faces
    assert len([k for k in store.list("galleries/2026-02-02") if k.endswith(".png") and "/faces/" in k]) == 3
    assert {k: store.get_bytes(k) for k in mine} == mine  # the gallery's stale faces went, the user's files stay
    assert {k: store.get_bytes(k) for k in store.list("galleries/2026-02-01")} == other_before
    index = store.get_bytes("galleries/index.html").decode()
    assert index.index('href="2026-02-02/index.html"') < index.index('href="2026-02-01/index.html"')
    assert store.get_json("galleries/latest/manifest.json")["date"] == "2026-02-02"
    assert len([k for k in store.list("galleries/latest") if k.endswith(".png") and "/faces/" in k]) == 3
    # publishing an older night does not move latest/
    gallery.publish(trained_store, dt.date(2026, 1, 30), fixed=2, fresh=1)
    assert store.get_json("galleries/latest/manifest.json")["date"] == "2026-02-02"


def test_one_publish_at_a_time_writes_the_galleries(trained_store):
    store = open_store(trained_store)
    other = Lease(store.child("galleries"), what="gallery").acquire()  # another publish, writing
    try:
        with pytest.raises(LeaseError, match=r"galleries/lease\.json: this gallery is being published by "
                                             r"another process .*; .*\(waited 1 s\)$"):
            gallery.publish(trained_store, dt.date(2026, 4, 1), fixed=2, fresh=1, wait=1)
        assert store.list("galleries/2026-04-01") == []  # refused before writing a file
        seen = []

        def finish() -> None:  # the other publish ends: what the waiting one wrote until then, then release
            seen.append(store.list("galleries/2026-04-02"))
            other.release()

        timer = threading.Timer(2.0, finish)
        timer.start()
        m = gallery.publish(trained_store, dt.date(2026, 4, 2), fixed=2, fresh=1, wait=60)
        timer.join()
        assert seen == [[]]  # it waited for the lease ...
        assert m["date"] == store.get_json("galleries/2026-04-02/manifest.json")["date"]  # ... then wrote
        assert not store.exists("galleries/lease.json")  # and let go
    finally:
        other.release()


def test_a_damaged_night_is_named_in_the_index_and_stops_no_other_night(trained_store):
    store = open_store(trained_store)
    gallery.publish(trained_store, dt.date(2026, 6, 1), fixed=2, fresh=1)
    for night, text, why in [("2026-06-02", '{"date": ', "its manifest.json is not valid JSON"),
                             ("2026-06-03", '{"date": "2026-06-03"}', "manifest.json does not describe this night"),
                             ("2026-06-04", '{"date": "2026-06-01", "step": 2, "run": "r"}',  # another night's
                              "does not describe this night")]:
        gallery.publish(trained_store, dt.date.fromisoformat(night), fixed=2, fresh=1)
        store.put_bytes(f"galleries/{night}/manifest.json", text.encode())  # damaged, or edited by hand
        m = gallery.publish(trained_store, dt.date(2026, 6, 10), fixed=2, fresh=1)  # the next night still publishes
        index = store.get_bytes("galleries/index.html").decode()
        card = index.split(f'href="{night}/index.html">')[1].split("</a>")[0]
        assert why in card and "not shown: " in card and "<img" not in card, card
        assert 'href="2026-06-01/index.html"><img src="2026-06-01/grid.png"' in index  # the others as ever
        assert store.get_json("galleries/latest/manifest.json")["date"] == m["date"] == "2026-06-10"


@pytest.mark.parametrize("damage", ["latest.json", "config.json", "best.json", "watchdog.json"])
def test_a_run_whose_files_cannot_be_read_is_passed_over_not_the_night(damage, trained_store, tmp_path):
    """One damaged run among runs/*: the night is made from the newest readable run and names the
    one it passed over (manifest and page); named, that run is still refused in one line. A
    watchdog verdict that is JSON but not a verdict's shape is ignored (the run is shown)."""
    import shutil

    root = tmp_path / "store"
    shutil.copytree(trained_store, root, ignore=shutil.ignore_patterns("galleries"))
    (root / "runs" / "newer<script>" / "watchdog.json").write_text('["not", "a verdict"]')
    assert gallery.publish(str(root), dt.date(2026, 2, 28), fixed=2, fresh=1)["run"].endswith("newer<script>")
    (root / "runs" / "newer<script>" / damage).write_text("[]" if damage != "watchdog.json" else "{")
    m = gallery.publish(str(root), dt.date(2026, 3, 1), fixed=2, fresh=1)
    assert m["run"].endswith("runs/older") and len(m["passed_over"]) == 1, m["passed_over"]
    assert m["passed_over"][0].startswith(str(root / "runs" / "newer<script>") + ": ")
    page = (root / "galleries" / "2026-03-01" / "index.html").read_text()
    assert "passed over (their files cannot be read): " in page and "newer&lt;script&gt;" in page
    with pytest.raises(gallery.INPUT_ERRORS) as named:
        gallery.publish(str(root), dt.date(2026, 3, 2), run_name="newer<script>", fixed=2, fresh=1)
    assert damage in str(named.value) and "\n" not in str(named.value)
    shutil.rmtree(root / "runs" / "older")
    with pytest.raises(gallery.GalleryError, match=r"no checkpoint found under .*; train a run first \(passed over: "):
        gallery.publish(str(root), dt.date(2026, 3, 3), fixed=2, fresh=1)


def test_a_night_is_no_source_of_faces_for_prepare(trained_store, tmp_path):
    gallery.publish(trained_store, dt.date(2026, 5, 1), fixed=2, fresh=1)
    night = Path(trained_store) / "galleries" / "2026-05-01"
    with pytest.raises(DatasetError, match=r"2026-05-01: a night of the facegan gallery \(manifest\.json\): its grids "
                                           r"and plots are not faces \(its faces/ folder holds"):
        prepare(night, str(tmp_path / "ds"), resolution=32, log=lambda *_: None)
    assert not (tmp_path / "ds").exists()
    prepare(night / "faces", str(tmp_path / "ds"), resolution=32, log=lambda *_: None)  # its faces are faces


def test_same_night_is_reproducible(trained_store):
    a = gallery.publish(trained_store, dt.date(2026, 3, 1), fixed=2, fresh=2)
    store = open_store(trained_store)
    first = store.get_bytes("galleries/2026-03-01/fresh.png")
    b = gallery.publish(trained_store, dt.date(2026, 3, 1), fixed=2, fresh=2)
    assert a["fresh_seeds"] == b["fresh_seeds"] and store.get_bytes("galleries/2026-03-01/fresh.png") == first
    assert gallery.night_seeds(dt.date(2026, 3, 2), 2) != a["fresh_seeds"]


def test_no_checkpoint(tmp_path):
    with pytest.raises(gallery.GalleryError, match="no checkpoint found"):
        gallery.publish(str(tmp_path))
    with pytest.raises(gallery.GalleryError, match="runs/missing; train a run first"):
        gallery.find_checkpoint(open_store(str(tmp_path)), "missing")


def test_gallery_prefers_best_checkpoint_and_shows_every_metric(dataset32, fid_weights, tmp_path):
    root = tmp_path / "store"
    cfg = tiny_config(dataset32, str(root / "runs" / "fidrun"), steps=6, ckpt_every=2, keep_last=1,
                      metric_every=2, metric_samples=6, metric_weights=fid_weights, metric_resize=75,
                      metrics="fid,kid,precision,recall")
    fit(cfg, Hooks(log=lambda *_: None))
    from facegan import checkpoint as ckpt

    best = ckpt.read_pointer(open_store(cfg.run), ckpt.BEST)
    m = gallery.publish(str(root), dt.date(2026, 4, 1), fixed=2, fresh=2)
    assert m["pointer"] == "best.json" and m["step"] == best["step"]
    assert m["metrics"]["fid"]["best"] == best["metric"]["value"]
    store = open_store(str(root))
    assert store.exists("galleries/2026-04-01/metric-fid.png")
    page = store.get_bytes("galleries/2026-04-01/index.html").decode()
    assert 'src="metric-fid.png"' in page and "best" in page and "weights sha256" in page
    sha = m["metrics"]["fid"]["protocol"]["weights"]["sha256"][:12]
    for name in ("fid", "kid", "precision", "recall"):  # each with its protocol beside it
        section = page.split(f"<h2>{name.upper()}</h2>", 1)[1].split("<h2>", 1)[0]
        assert "6 samples" in section and f"weights sha256 {sha}" in section and "75" in section, name
        assert store.exists(f"galleries/2026-04-01/metric-{name}.png")
    assert " ± " in page.split("<h2>KID</h2>", 1)[1].split("<h2>", 1)[0]  # KID's std beside its mean


def test_a_night_links_the_runs_export_and_says_which_truncation_it_used(trained_store):
    from pathlib import Path

    from facegan.export import export

    root = Path(trained_store)
    export(str(root / "runs" / "older"), str(root / "runs" / "older" / "export"), log=lambda *_: None)
    plain = gallery.publish(trained_store, dt.date(2026, 4, 1), run_name="older", fixed=2, fresh=2)
    cut = gallery.publish(trained_store, dt.date(2026, 4, 2), run_name="older", fixed=2, fresh=2, truncation=0.7)
    assert plain["truncation"] == 1.0 and cut["truncation"] == 0.7
    night = root / "galleries" / "2026-04-02"
    page = (night / "index.html").read_text()
    assert "truncation psi 0.7" in page
    assert "untruncated" in (root / "galleries" / "2026-04-01" / "index.html").read_text()
    assert (night / "grid.png").read_bytes() != (root / "galleries" / "2026-04-01" / "grid.png").read_bytes()
    links = [cut["export"]["card"], *cut["export"]["files"]]
    assert cut["export"]["step"] == 4 and len(links) == 4  # the card, safetensors, pt2, onnx
    for link in links:  # relative to the night's folder, as the page has them, and each resolves
        assert f'href="{link}"' in page and (night / link).resolve().is_file(), link
    # a run without an export shows no links
    newer = gallery.publish(trained_store, dt.date(2026, 4, 3), fixed=2, fresh=2)
    assert newer["export"] is None
    assert 'class="meta export"' not in (root / "galleries" / "2026-04-03" / "index.html").read_text()
