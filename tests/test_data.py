import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from facegan.data import BatchSampler, DatasetError, load, read_manifest
from facegan.errors import StorageError
from facegan.prepare import CELEBA_FACE_BOX, crop_box, prepare, process_image
from facegan.storage import open_store
from facegan.synthetic import draw_face, make_faces

quiet = lambda *_: None  # noqa: E731


def _save(img: Image.Image, path, fmt="JPEG"):
    img.save(path, format=fmt)
    return path


@pytest.fixture
def messy_folder(tmp_path):
    """Good CelebA-shaped faces plus one file of every bad kind."""
    import random

    folder = make_faces(tmp_path / "raw", 6, seed=3)
    rng = random.Random(9)
    face = draw_face(rng)
    good = (folder / "000001.jpg").read_bytes()
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "notes.txt").write_text("not an image")
    (folder / "fake.png").write_text("text pretending to be a png")
    _save(face.convert("L"), folder / "gray.jpg")
    _save(face.convert("CMYK"), folder / "cmyk.jpg")
    rgba = face.convert("RGBA")
    rgba.putalpha(200)
    _save(rgba, folder / "rgba.png", "PNG")
    arr16 = (np.asarray(face.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    _save(Image.fromarray(arr16), folder / "sixteen.png", "PNG")
    _save(face.convert("P"), folder / "palette.png", "PNG")
    _save(face.resize((20, 24)), folder / "tiny.jpg")
    return folder


def test_prepare_converts_or_skips_every_bad_kind(messy_folder, tmp_path):
    result = prepare(messy_folder, str(tmp_path / "ds"), resolution=32, workers=2, log=quiet)
    m = result.manifest
    reasons = {s["file"]: s["reason"] for s in m["skipped"]}
    assert set(reasons) == {"corrupt.jpg", "truncated.jpg", "notes.txt", "fake.png", "tiny.jpg"}
    assert "corrupt" in reasons["truncated.jpg"] or "truncated" in reasons["truncated.jpg"]
    assert reasons["notes.txt"].startswith("not an image")
    assert reasons["fake.png"].startswith("not an image")
    assert "too small" in reasons["tiny.jpg"]
    # 6 good + gray, cmyk, rgba, 16-bit, palette converted
    assert m["count"] == 11
    images, m2 = load(str(tmp_path / "ds"))
    assert images.shape == (11, 32, 32, 3) and images.dtype == torch.uint8
    assert m2["id"] == m["id"]
    assert "skipped 5" in result.summary


def test_converted_modes_keep_content(messy_folder):
    rgb = process_image((messy_folder / "gray.jpg").read_bytes(), 32)
    assert rgb.shape == (32, 32, 3)
    assert np.abs(rgb[..., 0].astype(int) - rgb[..., 1]).max() <= 1  # gray stays gray
    sixteen = process_image((messy_folder / "sixteen.png").read_bytes(), 32)
    gray = process_image((messy_folder / "gray.jpg").read_bytes(), 32)
    assert np.abs(sixteen.astype(int) - gray.astype(int)).mean() < 6  # 16-bit scaled to 8-bit


def test_celeba_crop_box_and_other_images_centre_crop():
    assert crop_box((178, 218)) == CELEBA_FACE_BOX
    assert crop_box((100, 60)) == (20, 0, 80, 60)


def test_jpeg_draft_decode_matches_full_decode(raw_faces, messy_folder):
    from facegan.prepare import _fast_jpeg

    data = (raw_faces / "000001.jpg").read_bytes()
    assert _fast_jpeg(data, 32) is not None  # plain JPEGs take libjpeg-turbo's scaled decode
    assert _fast_jpeg((messy_folder / "cmyk.jpg").read_bytes(), 32) is None  # others take PIL's path
    assert _fast_jpeg((messy_folder / "truncated.jpg").read_bytes(), 32) is None
    fast = process_image(data, 32).astype(int)  # decodes at reduced scale
    img = Image.open(io.BytesIO(data)).convert("RGB")
    full = np.asarray(img.crop(CELEBA_FACE_BOX).resize((32, 32), Image.Resampling.LANCZOS), dtype=int)
    assert np.abs(fast - full).mean() < 4


def test_prepare_from_zip_equals_folder(raw_faces, tmp_path):
    zpath = tmp_path / "img_align_celeba.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(raw_faces.iterdir())[:20]:
            zf.write(p, f"img_align_celeba/{p.name}")
        zf.writestr("__MACOSX/._000001.jpg", b"junk")
    a = prepare(zpath, str(tmp_path / "a"), resolution=32, workers=2, log=quiet).manifest
    b = prepare(raw_faces, str(tmp_path / "b"), resolution=32, workers=1, limit=20, log=quiet).manifest
    assert a["count"] == b["count"] == 20
    assert a["id"] == b["id"]  # same pixels, independent of source kind and worker count


def test_prepare_to_s3_and_shards(raw_faces, bucket):
    uri = f"{bucket}/datasets/celeba-32"
    m = prepare(raw_faces, uri, resolution=32, workers=2, shard_size=40, log=quiet).manifest
    assert [s["count"] for s in m["shards"]] == [40, 40, 16]
    images, _ = load(uri, cache=False)
    assert images.shape == (96, 32, 32, 3)


def test_empty_input_is_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty input"):
        prepare(tmp_path / "empty", str(tmp_path / "ds"), log=quiet)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match="no usable image"):
        prepare(tmp_path / "junk", str(tmp_path / "ds"), log=quiet)
    with pytest.raises(DatasetError, match="no such folder"):
        prepare(tmp_path / "missing", str(tmp_path / "ds"), log=quiet)
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_a_facegan_folder_inside_the_source_is_skipped_and_named(raw_faces, tmp_path):
    """A work folder holding the faces and a run beside them: the run's sample grids and plots are
    no faces. Skipped and listed; the progress line counts only the files it reads."""
    work = tmp_path / "work"
    (work / "img").mkdir(parents=True)
    for p in sorted(raw_faces.glob("*.jpg"))[:6]:
        (work / "img" / p.name).write_bytes(p.read_bytes())
    run = work / "runs" / "r1"
    (run / "samples").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    for picture in (run / "loss.png", run / "samples" / "step-0000002.png"):
        picture.write_bytes((work / "img" / sorted(p.name for p in (work / "img").iterdir())[0]).read_bytes())
    lines = []
    result = prepare(work, str(tmp_path / "ds"), resolution=32, workers=1, log=lines.append)
    assert result.manifest["count"] == 6
    assert result.manifest["skipped"] == [{"file": "runs/r1/", "reason": "a facegan run (config.json, samples, "
                                           "loss.png): its pictures are sample grids and plots, not faces"}]
    assert [x for x in lines if x.startswith("prepare: ") and " files, " in x][-1].startswith("prepare: 6/6 files")


def test_bad_resolution(raw_faces, tmp_path):
    with pytest.raises(DatasetError, match="resolution=48"):
        prepare(raw_faces, str(tmp_path / "ds"), resolution=48, log=quiet)


def test_shard_hash_mismatch_names_shard(dataset32, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset32, copy)
    shard = copy / read_manifest(open_store(str(copy)))["shards"][0]["name"]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=rf"{shard.name}: sha256 mismatch"):
        load(str(copy))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: m.update(format="other"), "not a facegan dataset manifest"),
        (lambda m: m.update(version=99), "newer"),
        (lambda m: m.update(count=m["count"] + 1), "do not add up"),
        (lambda m: m.pop("resolution"), "'resolution' missing"),
        (lambda m: m["shards"][0].update(sha256="0" * 64), "id does not match"),
    ],
)
def test_wrong_manifest_is_named(dataset32, tmp_path, change, message):
    store = open_store(str(tmp_path / "bad"))
    m = json.loads(open(f"{dataset32}/manifest.json").read())
    change(m)
    store.put_json("manifest.json", m)
    with pytest.raises(DatasetError, match=message) as err:
        read_manifest(store)
    assert "manifest.json" in str(err.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(DatasetError, match=r"manifest.json: no such object"):
        load(str(tmp_path))


def test_remote_cache_is_reused_and_repaired(raw_faces, bucket, tmp_path):
    uri = f"{bucket}/datasets/c"
    prepare(raw_faces, uri, resolution=32, limit=10, workers=1, log=quiet)
    cache = tmp_path / "cache"
    a, m = load(uri, cache=cache)
    cached = cache / f"{m['shards'][0]['sha256']}.npy"
    assert cached.is_file()
    cached.write_bytes(b"damaged")  # a damaged cache entry is refetched, not used
    b, _ = load(uri, cache=cache)
    assert torch.equal(a, b)
    assert cached.stat().st_size > 1000
    # a cache that cannot be written (here a file where its folder should be) is one error saying how to move it
    (tmp_path / "home-cache").write_text("a file")
    with pytest.raises(StorageError, match=r"home-cache: is a file.*set FACEGAN_CACHE to a folder you can write"):
        load(uri, cache=tmp_path / "home-cache")


def test_batch_sampler_scales_and_flips():
    torch.manual_seed(0)
    img = torch.zeros(1, 4, 4, 3, dtype=torch.uint8)
    img[0, :, 0] = 255  # left column white
    sampler = BatchSampler(img, batch_size=64)
    x = sampler.sample()
    assert x.shape == (64, 3, 4, 4) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    left_white = (x[:, 0, 0, 0] == 1).sum().item()
    right_white = (x[:, 0, 0, 3] == 1).sum().item()
    assert left_white + right_white == 64 and 10 < left_white < 54  # about half flipped


def test_batch_sampler_rejects_wrong_layout():
    with pytest.raises(DatasetError, match="uint8"):
        BatchSampler(torch.zeros(2, 3, 4, 4), 2)


def test_rebuild_removes_stale_shards_and_id_ignores_workers(raw_faces, tmp_path):
    uri = str(tmp_path / "ds")
    first = prepare(raw_faces, uri, resolution=32, workers=2, limit=40, shard_size=10, log=quiet)
    big = first.manifest
    assert len(big["shards"]) == 4 and first.replaced is None and "replaced" not in first.summary
    # a rebuild says what it replaced: the same build, or another dataset (a mistyped output folder)
    same = prepare(raw_faces, uri, resolution=32, workers=1, limit=40, shard_size=10, log=quiet)
    assert same.summary.endswith("; it replaced an identical build there") and same.manifest["id"] == big["id"]
    lines: list[str] = []
    smaller = prepare(raw_faces, uri, resolution=32, workers=1, limit=10, shard_size=10, log=lines.append)
    assert lines[-1].endswith("; it replaced the dataset there (40 images at 32px)"), lines[-1]
    small = smaller.manifest
    assert sorted(p.name for p in (tmp_path / "ds").glob("shard-*.npy")) == [s["name"] for s in small["shards"]]
    assert small["shards"][0]["name"].endswith("-00000.npy") and len(small["shards"]) == 1
    assert load(uri)[0].shape[0] == small["count"] == 10
    one = prepare(raw_faces, str(tmp_path / "w1"), resolution=32, workers=1, log=quiet).manifest
    two = prepare(raw_faces, str(tmp_path / "w2"), resolution=32, workers=2, log=quiet).manifest
    assert one["id"] == two["id"] and len(one["shards"]) > 1  # default sharding: worker count does not matter


def test_failed_rebuild_keeps_the_dataset(raw_faces, tmp_path):
    """A re-prepare that fails (a file that makes the build raise) leaves the old dataset whole."""
    import zipfile

    uri = str(tmp_path / "ds")
    before = prepare(raw_faces, uri, resolution=32, workers=1, limit=20, shard_size=10, log=quiet).manifest
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        for p in sorted(raw_faces.iterdir())[:20]:
            z.write(p, p.name)
    broken = bad.read_bytes()
    bad.write_bytes(broken[: len(broken) // 2])  # truncated archive: the rebuild fails part way
    with pytest.raises(Exception):  # noqa: B017 - whatever it raises, the old dataset must survive
        prepare(bad, uri, resolution=32, workers=1, log=quiet)
    images, after = load(uri)
    assert after == before and images.shape[0] == 20
    assert sorted(p.name for p in (tmp_path / "ds").glob("shard-*.npy")) == [s["name"] for s in before["shards"]]


def test_killed_rebuild_keeps_the_dataset(raw_faces, tmp_path):
    """kill -9 in the middle of a re-prepare: readers still get the old dataset, bit for bit."""
    import signal
    import subprocess
    import sys
    import time

    from helpers import ROOT

    uri = str(tmp_path / "ds")
    before = prepare(raw_faces, uri, resolution=32, workers=1, limit=20, shard_size=10, log=quiet).manifest
    old_images, _ = load(uri)
    big = make_faces(tmp_path / "big", 600, seed=9)
    proc = subprocess.Popen([sys.executable, "-m", "facegan.cli", "prepare", str(big), uri, "--resolution", "32",
                             "--workers", "1"], cwd=ROOT)
    new_shard = lambda: [p for p in (tmp_path / "ds").glob("shard-*.npy")  # noqa: E731
                         if p.name not in {s["name"] for s in before["shards"]}]
    deadline = time.monotonic() + 120
    while not new_shard() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the rebuild must still be running when it is killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert new_shard(), "the kill landed after the rebuild wrote a shard"
    images, after = load(uri)
    assert after == before and torch.equal(images, old_images)
    prepare(big, uri, resolution=32, workers=1, log=quiet)  # a later rebuild succeeds and cleans up
    assert len(list((tmp_path / "ds").glob("shard-*.npy"))) == len(read_manifest(open_store(uri))["shards"])


def test_prepare_writes_only_into_an_empty_folder_a_dataset_or_what_a_stopped_prepare_left(raw_faces, tmp_path):
    left = tmp_path / "left"  # a prepare killed before its manifest: its build's shard and labels
    left.mkdir()
    (left / ".DS_Store").write_bytes(b"Finder's")  # the folder was shown in a file browser: still ours
    (left / "shard-0123abcd-00000.npy").write_bytes(b"half a shard")
    (left / "attributes-0123abcd.npy").write_bytes(b"labels")
    m = prepare(raw_faces, str(left), resolution=32, workers=1, limit=8, log=quiet).manifest
    assert m["count"] == 8
    assert sorted(p.name for p in left.iterdir()) == sorted([".DS_Store", "manifest.json",
                                                            *(s["name"] for s in m["shards"])])
    (left / "NOTES.txt").write_text("mine")  # an earlier dataset (it has a manifest) is rebuilt in place
    prepare(raw_faces, str(left), resolution=32, workers=1, limit=4, log=quiet)
    assert (left / "NOTES.txt").read_text() == "mine" and read_manifest(open_store(str(left)))["count"] == 4
    for name, files in [("run", ["config.json", "checkpoints/step-0000004.pt"]), ("photos", ["a.jpg"])]:
        folder = tmp_path / name  # anything else: refused before a byte is written
        for f in files:
            (folder / f).parent.mkdir(parents=True, exist_ok=True)
            (folder / f).write_bytes(b"theirs")
        more = ", ..." if len(files) > 1 else ""
        with pytest.raises(DatasetError, match=rf"{name}: holds {len(files)} file\(s\) a dataset does not have "
                           rf"\({sorted(files)[0]}{more}\) and no manifest.json: not a dataset"):
            prepare(raw_faces, str(folder), resolution=32, workers=1, limit=4, log=quiet)
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(files)


def test_synth_never_writes_over_a_file_and_the_same_call_again_is_a_no_op(tmp_path):
    """make_faces into a folder that already has its names: the same faces again are left as they
    are (a re-run, or more of the same seed, works); other bytes there are refused before any write."""
    folder = make_faces(tmp_path / "celeba" / "img", 4, seed=3, makeup=0.5)
    before = {p: p.read_bytes() for p in (tmp_path / "celeba").rglob("*") if p.is_file()}
    assert make_faces(folder, 4, seed=3, makeup=0.5) == folder
    assert {p: p.read_bytes() for p in (tmp_path / "celeba").rglob("*") if p.is_file()} == before
    plain = make_faces(tmp_path / "plain", 4, seed=3)
    make_faces(plain, 6, seed=3)  # two more of the same seed: as one call of 6 writes them
    fresh = make_faces(tmp_path / "fresh", 6, seed=3)
    assert {p.name: p.read_bytes() for p in plain.iterdir()} == {p.name: p.read_bytes() for p in fresh.iterdir()}
    with pytest.raises(StorageError, match=r"000001\.jpg: already there and not the synthetic face"):
        make_faces(plain, 8, seed=4)  # other faces (real CelebA, say)
    assert not (plain / "000007.jpg").exists()
    table = tmp_path / "celeba" / "list_attr_celeba.txt"
    table.write_bytes(table.read_bytes() + b"a user's own row\n")
    with pytest.raises(StorageError, match=r"list_attr_celeba\.txt: already there and not the attribute table"):
        make_faces(folder, 8, seed=3, makeup=0.5)
    assert table.read_bytes().endswith(b"a user's own row\n") and not (folder / "000007.jpg").exists()
