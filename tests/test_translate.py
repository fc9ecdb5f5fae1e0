"""Attribute swap (CycleGAN): CelebA's attribute table, labelled datasets, training, resume, apply."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_device_rates, assert_states_equal, cli_train, latest_step, wait_for
from PIL import Image
from torch import nn

from facegan import attributes, data
from facegan import checkpoint as ckpt
from facegan.cli import main
from facegan.config import ConfigError, CycleModelConfig, TranslateConfig
from facegan.cyclegan import PatchDiscriminator, ResnetGenerator, receptive_field
from facegan.errors import DatasetError
from facegan.families.cyclegan import ImagePool
from facegan.loop import Hooks, fit
from facegan.prepare import prepare, process_image
from facegan.storage import open_store
from facegan.synthetic import draw_face, make_faces
from facegan.translate import load_translator

quiet = Hooks(log=lambda *_: None)
# CelebA's real first row (000001.jpg): a smiling young woman wearing makeup and lipstick
CELEBA_ROW_1 = ("000001.jpg -1  1  1 -1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1  1  1 -1  1 -1 -1  1 "
                "-1 -1  1 -1 -1 -1  1  1 -1  1 -1  1 -1 -1  1")
NAMES_LINE = " ".join(attributes.CELEBA_ATTRIBUTES) + " "


def tiny(dataset: str, run: str, **overrides) -> TranslateConfig:
    """A swap small enough for a CPU test: 32 px, narrow nets, one residual block."""
    base = dict(dataset=dataset, run=run, model=CycleModelConfig(resolution=32, ngf=8, ndf=8, blocks=1),
                steps=12, batch_size=4, ckpt_every=4, keep_last=2, log_every=2, sample_count=4, device="cpu",
                seed=3, pool_size=6)
    base.update(overrides)
    return TranslateConfig(**base)


# ------------------------------------------------------------------ the attribute table


def test_parses_celebas_format():
    table = attributes.parse(f"1\n{NAMES_LINE}\n{CELEBA_ROW_1}\n", "list_attr_celeba.txt")
    assert table.names == tuple(attributes.CELEBA_ATTRIBUTES) and len(table.names) == 40
    row = table.rows["000001.jpg"]
    on = {n for n, v in zip(table.names, row, strict=True) if v}
    assert {"Heavy_Makeup", "Wearing_Lipstick", "Smiling", "Young", "Attractive"} <= on
    assert "Male" not in on and "Eyeglasses" not in on and len(on) == 13
    # what synthetic data writes is the same layout, byte for byte in the fixed parts
    text = attributes.format_table(table.names, table.rows)
    assert text == f"1\n{NAMES_LINE}\n{CELEBA_ROW_1}\n"


@pytest.mark.parametrize("text, message", [
    ("", "line 1: missing"),
    ("x\nA B\n", "line 1: 'x' is not the row count"),
    ("1\n\n", "line 2: the attribute names are missing"),
    ("2\nA B\na.jpg 1 -1\nb.jpg 1\n", "line 4: 1 values for 2 attributes"),
    ("1\nA B\na.jpg 1 0\n", "line 3: value '0' is not -1 or 1"),
    ("2\nA B\na.jpg 1 -1\na.jpg -1 -1\n", "line 4: a.jpg appears twice"),
    ("1\nA B\na.jpg 1 -1\nb.jpg 1 1\n", "line 1 says 1 rows but the table has 2"),
    ("²\nA B\na.jpg 1 -1\n", "line 1: '²' is not the row count"),
])
def test_a_malformed_table_names_the_line(text, message):
    with pytest.raises(DatasetError, match="^t.txt: " + message.replace("(", r"\(")):
        attributes.parse(text, "t.txt")


def test_a_partial_table_is_taken_and_marked_partial():
    table = attributes.parse("202599\nA B\na.jpg 1 -1\n", "t.txt")  # the real file's first rows
    assert table.partial and table.declared == 202599 and list(table.rows) == ["a.jpg"]
    assert not attributes.parse("1\nA B\na.jpg 1 -1\n", "t.txt").partial


def test_prepare_stores_labels_in_row_order_and_reports_mismatches(makeup_raw, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    names = sorted(p.name for p in makeup_raw.iterdir())[:12]
    for n in names:
        (src / n).write_bytes((makeup_raw / n).read_bytes())
    (src / names[3]).write_bytes(b"not a jpeg")  # skipped as an image: its row goes unused
    (src / "999999.jpg").write_bytes((makeup_raw / names[0]).read_bytes())  # no row in the table
    table = attributes.parse((makeup_raw.parent / attributes.TABLE_NAME).read_text(), "t")
    rows = {n: table.rows[n] for n in names}
    rows["888888.jpg"] = table.rows[names[0]]  # a row without an image
    (tmp_path / "attrs.txt").write_text(attributes.format_table(table.names, rows))

    assert main(["prepare", str(src), str(tmp_path / "ds"), "--resolution", "32", "--workers", "1",
                 "--attributes", str(tmp_path / "attrs.txt")]) == 0
    m = data.read_manifest(open_store(tmp_path / "ds"))
    kept = [n for n in names if n != names[3]]
    assert m["count"] == len(kept) and m["attributes"]["names"] == list(attributes.CELEBA_ATTRIBUTES)
    skipped = {s["file"]: s["reason"] for s in m["skipped"]}
    assert skipped["999999.jpg"].startswith("no row in the attribute table")
    # a row without an image is counted and named in the labels' record, not listed as a skipped file
    # (the whole table beside a few hundred images made a 2 MB manifest of such records)
    assert "888888.jpg" not in skipped and m["attributes"]["rows_without_image"] == {"count": 1,
                                                                                    "first": ["888888.jpg"]}
    assert ("; skipped 2; 1 row(s) of the attribute table have no image in the source (888888.jpg)\n"
            in capsys.readouterr().out)
    assert skipped[names[3]].startswith("not an image")
    got_names, labels = data.load_attributes(str(tmp_path / "ds"), m)
    assert got_names == list(table.names)
    assert np.array_equal(labels, np.stack([table.rows[n] for n in kept]))  # row i labels image i
    unlabelled = prepare(src, str(tmp_path / "plain"), resolution=32, workers=1, log=lambda *_: None).manifest
    assert unlabelled["id"] != m["id"] and "attributes" not in unlabelled
    # the same images prepared over the labelled dataset at 64 px: the CLI's line says what went
    capsys.readouterr()
    assert main(["prepare", str(src), str(tmp_path / "ds"), "--resolution", "64", "--workers", "1"]) == 0
    said = capsys.readouterr().out.strip().splitlines()[-1]
    assert said.endswith(f"; it replaced the dataset there ({m['count']} images at 32px, "
                         f"{len(attributes.CELEBA_ATTRIBUTES)} attributes per image)"), said

    # a malformed table: one line naming the file and line, and nothing written
    (tmp_path / "bad.txt").write_text(f"2\n{NAMES_LINE}\n{CELEBA_ROW_1}\n000002.jpg 1 1\n")
    capsys.readouterr()
    assert main(["prepare", str(src), str(tmp_path / "ds2"), "--attributes", str(tmp_path / "bad.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.txt: line 4: 2 values for 40 attributes" in err
    assert not (tmp_path / "ds2").exists()


def test_a_domain_is_a_query_over_one_dataset(labelled32):
    m = data.read_manifest(open_store(labelled32))
    names, labels = data.load_attributes(labelled32, m)
    images, _ = data.load(labelled32, manifest=m)
    on = np.flatnonzero(labels[:, names.index("Heavy_Makeup")])
    sampler = data.BatchSampler(images, 64, rows=torch.as_tensor(on))
    batch = ((sampler.sample() + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    allowed = {images[i].numpy().tobytes() for i in on} | {images[i].flip(1).numpy().tobytes() for i in on}
    assert all(b.numpy().tobytes() in allowed for b in batch)  # only rows of domain A, possibly flipped
    assert len(sampler) == len(on) and 0 < len(on) < m["count"]


# ------------------------------------------------------------------ networks and pool


@pytest.mark.parametrize("resolution, layers, patch", [(32, 1, 16), (64, 2, 34), (128, 3, 70)])
def test_networks_keep_size_and_patchgan_fields(resolution, layers, patch):
    cfg = CycleModelConfig(resolution=resolution, ngf=4, ndf=4, blocks=2)
    x = torch.randn(2, 3, resolution, resolution)
    assert ResnetGenerator(cfg)(x).shape == x.shape
    assert cfg.patch_layers == layers and receptive_field(layers) == patch
    assert PatchDiscriminator(cfg)(x).shape == (2, 1, 14, 14)
    gen = ResnetGenerator(cfg)
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in gen.modules()) == 2 + 2 * 2
    assert all(not m.affine for m in gen.modules() if isinstance(m, nn.InstanceNorm2d))


def test_image_pool_keeps_fakes_and_resumes_exactly():
    torch.manual_seed(0)
    pool = ImagePool(4, torch.device("cpu"))
    first = torch.randn(3, 3, 2, 2)
    assert torch.equal(pool.query(first), first) and pool.count == 3
    pool.query(torch.randn(3, 3, 2, 2))  # fills the last slot
    assert pool.count == 4
    stored = pool.images.clone()
    rng = torch.get_rng_state()
    new = torch.randn(4, 3, 2, 2)
    out = pool.query(new)
    swapped = [not torch.equal(out[i], new[i]) for i in range(4)]
    assert 0 < sum(swapped) < 4  # with this seed some fakes are swapped for stored ones, some pass
    assert {o.numpy().tobytes() for o in out} <= {t.numpy().tobytes() for t in (*new, *stored)}
    assert sorted(t.numpy().tobytes() for t in (*out, *pool.images)) == \
        sorted(t.numpy().tobytes() for t in (*new, *stored))  # every image is seen by D or kept, none lost
    again = ImagePool(4, torch.device("cpu"))
    again.load_state_dict({"count": 4, "images": stored})
    torch.set_rng_state(rng)
    new2 = torch.randn(4, 3, 2, 2)
    assert torch.equal(again.query(new2), out) and torch.equal(again.images, pool.images)


# ------------------------------------------------------------------ training and resume


def assert_swap_states_equal(a: dict, b: dict) -> None:
    assert_states_equal(a, b, nets=("G_AB", "G_BA", "D_A", "D_B"))
    for side in ("A", "B"):
        assert torch.equal(a["pool"][side]["images"], b["pool"][side]["images"]), f"pool {side} differs"


def test_a_run_writes_the_run_folder_and_resumes_bit_exactly_after_stop_and_kill9(labelled32, tmp_path):
    full = tiny(labelled32, str(tmp_path / "full"), steps=24, ckpt_every=3)
    result = fit(full, quiet)
    assert result.finished and result.step == 24
    run = open_store(full.run)
    for key in ("config.json", "latest.json", "metrics.jsonl", "loss.png", "samples/step-0000024.png"):
        assert run.exists(key), key
    grid = Image.open(io.BytesIO(run.get_bytes("samples/step-0000024.png")))
    assert grid.size == (2 + 4 * 34, 2 + 6 * 34)  # 6 rows (A, A->B, A->B->A, B, B->A, B->A->B) of 4 faces
    state = ckpt.load(full.run)
    assert state["family"] == "cyclegan" and state["pool"]["A"]["count"] == 6
    rows = [r for r in run.get_bytes("metrics.jsonl").decode().splitlines()]
    assert len(rows) == 12 and all('"cycle"' in r and '"identity"' in r for r in rows)

    # stopped by a hook at step 7 (checkpoint at 7), resumed in-process ...
    cut = tiny(labelled32, str(tmp_path / "cut"), steps=24, ckpt_every=3)
    stops = iter([False] * 6 + [True])
    stopped = fit(cut, Hooks(log=lambda *_: None, should_stop=lambda: next(stops, False)))
    assert stopped.stopped == "stop requested" and stopped.step == 7
    # ... then killed with SIGKILL through the CLI, and resumed again
    proc = cli_train(cut)
    wait_for(lambda: latest_step(Path(cut.run)) >= 13, proc=proc)
    proc.kill()
    proc.wait()
    assert 13 <= latest_step(Path(cut.run)) < 24
    assert fit(cut, quiet).finished
    assert_swap_states_equal(state, ckpt.load(cut.run))


def test_resume_refuses_other_settings_and_family(labelled32, tmp_path, capsys):
    cfg = tiny(labelled32, str(tmp_path / "r"), steps=2, ckpt_every=2)
    fit(cfg, quiet)
    with pytest.raises(ConfigError, match=r"lambda_cycle 10.0 -> 5.0"):
        fit(cfg.replace(lambda_cycle=5.0, steps=4), quiet)
    with pytest.raises(ConfigError, match="attribute 'Heavy_Makeup' -> 'Smiling'"):
        fit(cfg.replace(attribute="Smiling", steps=4), quiet)
    capsys.readouterr()
    assert main(["train", "--family", "dcgan", "--dataset", labelled32, "--run", cfg.run, "--steps", "4"]) == 2
    assert "holds a cyclegan run, not a dcgan one; use a new run name" in capsys.readouterr().err  # a DCGAN on it
    # without --family the run is resumed as what it is (a swap), and keeps its linear decay's steps
    assert main(["train", "--dataset", labelled32, "--run", cfg.run, "--steps", "4"]) == 2
    assert "(steps 2 -> 4, the length of its linear lr decay)" in capsys.readouterr().err


def test_cli_one_line_errors_for_bad_swaps(labelled32, dataset32, tmp_path, capsys):
    cases = [
        (["--dataset", dataset32, "--attribute", "Heavy_Makeup"], "has no attributes; prepare it with --attributes"),
        (["--dataset", labelled32, "--attribute", "Purple_Hair"], "attribute 'Purple_Hair' is not in the dataset's"),
        (["--dataset", labelled32, "--attribute", "Heavy_Makeup", "--batch-size", "64"],
         "batch_size=64 must be at most pool_size=50"),
        (["--dataset", labelled32, "--attribute", "Heavy_Makeup", "--lambda-cycle", "nan"],
         "lambda_cycle=nan must be a finite number"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(["translate", "train", "--run", str(tmp_path / "r"), *args]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("facegan translate train: error: ") and message in err, err
    assert not (tmp_path / "r").exists()
    # a split with an empty side is refused when training starts, before anything is written
    only_a = str(tmp_path / "only-a")
    m = data.read_manifest(open_store(labelled32))
    names, _ = data.load_attributes(labelled32, m)
    raw = tmp_path / "raw"
    make_faces(raw / "img", 4, seed=9, makeup=1.0)
    prepare(raw / "img", only_a, resolution=32, workers=1, attributes=str(raw / "list_attr_celeba.txt"),
            log=lambda *_: None)
    with pytest.raises(DatasetError, match="into 4 with and 0 without; each side needs at least 2"):
        fit(tiny(only_a, str(tmp_path / "r2")), quiet)
    assert not (tmp_path / "r2" / "config.json").exists()


def test_apply_translates_a_folder_or_one_image(labelled32, makeup_raw, tmp_path, capsys):
    cfg = tiny(labelled32, str(tmp_path / "r"), steps=2, ckpt_every=2)
    fit(cfg, quiet)
    faces = tmp_path / "in"
    faces.mkdir()
    for p in sorted(makeup_raw.iterdir())[:3]:
        (faces / p.name).write_bytes(p.read_bytes())
    (faces / "broken.jpg").write_bytes(b"nope")
    assert main(["translate", "apply", cfg.run, str(faces), str(tmp_path / "out"), "--direction", "remove"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1: broken.jpg" in out and "translated 3 face(s) (remove Heavy_Makeup)" in out
    written = sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".png")
    assert written == [p.stem + ".png" for p in sorted(makeup_raw.iterdir())[:3]]
    record = json.loads((tmp_path / "out" / "translations.json").read_text())
    assert sorted(record["files"]) == written and record["files"][written[0]] == {
        "run": cfg.run, "step": 2, "direction": "remove", "attribute": "Heavy_Makeup",
        "input": str(faces / sorted(makeup_raw.iterdir())[0].name)}
    assert Image.open(tmp_path / "out" / written[0]).size == (32, 32)
    one = sorted(makeup_raw.iterdir())[0]
    assert main(["translate", "apply", cfg.run, str(one), str(tmp_path / "one"), "--direction", "add"]) == 0
    g_ba, _ = load_translator(cfg.run, "add", "cpu")
    x = data.to_unit(torch.tensor(process_image(one.read_bytes(), 32, True))[None])
    with torch.no_grad():
        expected = ((g_ba(x)[0] + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    got = np.asarray(Image.open(tmp_path / "one" / f"{one.stem}.png"))
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # the "add" generator's output
    assert main(["translate", "apply", cfg.run, str(faces), str(tmp_path / "x"), "--direction", "sideways"]) == 2
    assert main(["translate", "apply", str(tmp_path / "nowhere"), str(faces), str(tmp_path / "x"),
                 "--direction", "add"]) == 2
    # an output that would replace an input image (the same folder, or an image and its folder), or
    # two inputs of one name: refused before anything is written
    pngs = tmp_path / "out"
    before = {p: p.read_bytes() for p in pngs.iterdir()}
    capsys.readouterr()
    # ... and inputs that hold no image as given: CelebA's .zip (prepare takes it, apply does not), the
    # folder above the faces (as CelebA unzips: celeba/img_align_celeba/), an empty folder
    (tmp_path / "celeba.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    (tmp_path / "empty").mkdir()
    for source, target, expected in [
            (pngs, pngs, f"would write over the input image {written[0]}"),
            (pngs / written[0], pngs, f"would write over the input image {written[0]}"),
            (tmp_path / "celeba.zip", tmp_path / "z", "celeba.zip: not an image file (.zip); give an image or a "
                                                      "folder of images (unzip it first)"),
            (tmp_path, tmp_path / "z", f"{tmp_path}: no image file in the folder (its subfolders are not read; "
                                       f"{tmp_path / 'in'} holds images)"),
            (tmp_path / "empty", tmp_path / "z", "empty: no image file in the folder\n"),
            (Path(cfg.run), tmp_path / "z", f"{cfg.run}: a facegan run (config.json, latest.json, "),  # a slip
            # ... and outputs facegan wrote as something else, or inside the run applied
            (faces, Path(cfg.run), f"{cfg.run}: a facegan run (config.json, latest.json, "),
            (faces, Path(labelled32), ": a facegan dataset (manifest.json); translate into a folder of its own"),
            (faces, Path(cfg.run) / "mine", f"mine: overlaps {cfg.run}, what it comes from"),
    ]:
        assert main(["translate", "apply", cfg.run, str(source), str(target), "--direction", "add"]) == 2
        err = capsys.readouterr().err
        assert expected in err and "\n" not in err.strip() and not (tmp_path / "z").exists()
        assert not any((Path(where) / "translations.json").exists() for where in (cfg.run, labelled32))
        assert not (Path(cfg.run) / "mine").exists()
    (pngs / f"{Path(written[0]).stem}.jpg").write_bytes(one.read_bytes())
    assert main(["translate", "apply", cfg.run, str(pngs), str(tmp_path / "y"), "--direction", "add"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"would both be written as {written[0]}" in err and not (tmp_path / "y").exists()
    (pngs / f"{Path(written[0]).stem}.jpg").unlink()
    assert {p: p.read_bytes() for p in pngs.iterdir()} == before
    # an earlier apply's outputs are written over (the record says so); any other file is refused
    assert main(["translate", "apply", cfg.run, str(one), str(pngs), "--direction", "add"]) == 0
    record = json.loads((pngs / "translations.json").read_text())["files"]
    assert record[f"{one.stem}.png"]["direction"] == "add" and record[written[1]]["direction"] == "remove"
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / f"{one.stem}.png").write_bytes(b"another tool's output")
    capsys.readouterr()
    assert main(["translate", "apply", cfg.run, str(faces), str(theirs), "--direction", "add"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{one.stem}.png: already there and not written by an earlier translate apply" in err and "\n" not in err
    assert sorted(p.name for p in theirs.iterdir()) == [f"{one.stem}.png"]
    (theirs / f"{one.stem}.png").unlink()
    (theirs / "translations.json").write_text('{"mine": true}')  # a file of that name that is not a record
    assert main(["translate", "apply", cfg.run, str(faces), str(theirs), "--direction", "add"]) == 2
    assert "translations.json: already there and not a record of translate apply" in capsys.readouterr().err
    assert sorted(p.name for p in theirs.iterdir()) == ["translations.json"]
    # nothing readable: an error, and nothing written (not even the record)
    assert main(["translate", "apply", cfg.run, str(faces / "broken.jpg"), str(tmp_path / "z"),
                 "--direction", "add"]) == 2
    assert not (tmp_path / "z").exists()


# ------------------------------------------------------------------ it learns the swap


def face32(img: Image.Image) -> np.ndarray:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return process_image(buf.getvalue(), 32, True)


def test_cyclegan_learns_to_remove_and_add_makeup(tmp_path):
    """After a short CPU run on synthetic faces, a small classifier trained on the real labels
    judges most translations flipped, while the cycle reconstruction and the face outside the
    makeup (measured on twins: the same face drawn with and without it) stay close to the input."""
    raw = make_faces(tmp_path / "raw" / "img_align_celeba", 200, seed=2, makeup=0.5)
    ds = str(tmp_path / "ds")
    prepare(raw, ds, resolution=32, workers=2, attributes=str(tmp_path / "raw" / attributes.TABLE_NAME),
            log=lambda *_: None)
    # two residual blocks, 400 steps: measured on 2026-12-03 (seeds 0, 1, 2) kept 0.175-0.178 and cycle
    # 0.149-0.157, >= 0.969 judged flipped each way, in 102-108 s of training (the seeds spread 0.003 in kept,
    # the bound is 0.022 away); 600 steps (2026-12-02) kept 0.154-0.161 in 143-163 s; three blocks gave kept
    # 0.160 (seed 0, 600 steps) in 195 s, batch 4 kept up to 0.195
    cfg = TranslateConfig(dataset=ds, run=str(tmp_path / "run"), model=CycleModelConfig(resolution=32, ngf=16,
                          ndf=16, blocks=2), steps=400, batch_size=8, lr=5e-4, ckpt_every=400, log_every=100,
                          device="cpu", seed=0)
    assert fit(cfg, quiet).finished

    # the judge: a small CNN trained on the real 32 px faces and their Heavy_Makeup labels
    m = data.read_manifest(open_store(ds))
    images, _ = data.load(ds, manifest=m)
    names, labels = data.load_attributes(ds, m)
    x, y = data.to_unit(images), torch.from_numpy(labels[:, names.index("Heavy_Makeup")]).float()
    torch.manual_seed(0)
    judge = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1))
    opt = torch.optim.Adam(judge.parameters(), 3e-3)
    for _ in range(400):
        idx = torch.randint(0, len(x), (32,))
        loss = nn.functional.binary_cross_entropy_with_logits(judge(x[idx]).squeeze(1), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    # 64 new twins (seeds the training data never used): with makeup (A) and without (B)
    pairs = [[face32(draw_face(random.Random(s), makeup=on)) for s in range(10_000, 10_064)] for on in (True, False)]
    with_a, without = (data.to_unit(torch.from_numpy(np.stack(p))) for p in pairs)
    g_ab, _ = load_translator(cfg.run, "remove", "cpu")
    g_ba, _ = load_translator(cfg.run, "add", "cpu")
    with torch.no_grad():
        says_makeup = lambda t: judge(t).squeeze(1) > 0  # noqa: E731
        assert says_makeup(with_a).float().mean() >= 0.9 and (~says_makeup(without)).float().mean() >= 0.9
        removed, added = g_ab(with_a), g_ba(without)
        assert (~says_makeup(removed)).float().mean() >= 0.8  # A -> B judged B
        assert says_makeup(added).float().mean() >= 0.8  # B -> A judged A
        cycle = (g_ba(removed) - with_a).abs().mean()
        region = ((with_a - without).abs().sum(1, keepdim=True) > 0.15).float()  # where makeup is drawn
        outside = 1 - nn.functional.max_pool2d(region, 3, 1, 1).expand_as(with_a)  # and 1 px around it
        kept = ((removed - with_a).abs() * outside).sum() / outside.sum()
        other_face = (with_a - with_a.roll(1, 0)).abs().mean()  # how far apart two different faces are
    assert cycle < 0.2 and kept < 0.2, (float(cycle), float(kept))
    assert kept < other_face / 2, (float(kept), float(other_face))


def test_gallery_shows_finished_swaps_and_says_why_one_cannot_be_shown(labelled32, dataset32, tmp_path):
    import datetime as dt
    import shutil

    from helpers import tiny_config

    from facegan import gallery
    from facegan.loop import fit

    runs = tmp_path / "store" / "runs"
    fit(tiny_config(dataset32, str(runs / "faces"), steps=4), quiet)
    fit(tiny(labelled32, str(runs / "swap"), steps=4), quiet)  # finished: a section
    stops = iter([False, True])
    fit(tiny(labelled32, str(runs / "half"), steps=8),  # stopped at step 2: none yet
                      Hooks(log=lambda *_: None, should_stop=lambda: next(stops, False)))
    gone = str(tmp_path / "gone-ds")
    shutil.copytree(labelled32, gone)
    fit(tiny(gone, str(runs / "orphan"), steps=2, ckpt_every=2), quiet)
    shutil.rmtree(gone)  # its dataset was deleted since

    night = gallery.publish(str(tmp_path / "store"), dt.date(2026, 11, 21))
    assert night["run"].endswith("runs/faces")  # the face sections come from the DCGAN, never a swap
    sections = {s["name"]: s for s in night["translations"]}
    assert set(sections) == {"swap", "orphan"}
    assert [r["count"] for r in sections["swap"]["rows"]] == [4] * 6
    assert "manifest.json" in sections["orphan"]["error"] and "rows" not in sections["orphan"]
    page = (tmp_path / "store" / "galleries" / "2026-11-21" / "index.html").read_text()
    assert page.count('class="translation"') == 2 and "not shown: " in page
    strip = tmp_path / "store" / "galleries" / "2026-11-21" / sections["swap"]["rows"][1]["file"]
    assert Image.open(strip).size == (2 + 4 * 34, 36)
    with pytest.raises(gallery.GalleryError, match=r"runs/swap: a cyclegan run draws no faces from noise \(the "
                                                   r"gallery shows finished attribute swaps in their own section\)"):
        gallery.publish(str(tmp_path / "store"), dt.date(2026, 11, 22), run_name="swap")  # named: not "no checkpoint"


def test_flow_cli_and_config_take_the_same_swap_options():
    import argparse
    import dataclasses
    import inspect

    from facegan.cli import build_parser
    from facegan.config import all_options, option_type
    from flows.train_cyclegan import train_cyclegan

    table = [f.name for f in all_options(TranslateConfig)]
    fields = [f.name for f in dataclasses.fields(CycleModelConfig)] + [
        f.name for f in dataclasses.fields(TranslateConfig)
        if f.name not in ("dataset", "run", "preset", "model", "init_origin")]  # not options: where a run is, began
    assert table == fields
    params = inspect.signature(train_cyclegan.fn).parameters
    assert list(params) == ["dataset_uri", "run_name", "store", "preset", "export", *table]
    assert all(params[f.name].annotation == (option_type(f) | None) for f in all_options(TranslateConfig))
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    actions = next(a for a in commands.choices["translate"]._actions if isinstance(a, argparse._SubParsersAction))
    cli = [a.dest for a in actions.choices["train"]._actions
           if a.dest not in ("help", "dataset", "run", "preset") and a.help != argparse.SUPPRESS]
    assert cli == [*table, "nproc"]


def test_swap_step_never_reads_back_from_the_device(labelled32, tmp_path):
    """Sampling both domains, the four networks, the losses, the pool (filling and swapping) and
    the running sums make no host read inside the step; reads happen at log and checkpoint steps."""
    from test_train import HostReads

    cfg = tiny(labelled32, str(tmp_path / "s"), steps=6, log_every=3, ckpt_every=6, pool_size=6, batch_size=4)
    with HostReads() as reads:
        assert fit(cfg, quiet).finished  # the pool fills at step 2 and swaps from step 3
    in_step = [(name, where) for name, where in reads.seen if "cyclegan.py:step" in where
               and not any(w.startswith(("adam.py", "optimizer.py")) for w in where)]  # CPU Adam's step count
    assert in_step == [], f"host reads inside the step: {in_step[:3]}"
    assert any(name == "tolist" for name, _ in reads.seen)  # the log step's one read is seen
    assert_device_rates(cfg.run, cfg, {"opt_g": cfg.lr, "opt_d": cfg.lr})


def test_one_apply_at_a_time_writes_into_a_folder_and_touches_nothing_else_there(labelled32, makeup_raw, tmp_path,
                                                                                 capsys):
    """`translate apply` holds its output folder's lease while it writes: a second apply into it is
    refused (the later record would drop the earlier one's outputs). The folder is the user's:
    hidden `.*.tmp` files of other tools stay, and a `lease.json` of the user's is left as it is."""
    from facegan.lease import Lease

    cfg = tiny(labelled32, str(tmp_path / "r"), steps=2, ckpt_every=2)
    fit(cfg, quiet)
    one = sorted(makeup_raw.iterdir())[0]
    out = tmp_path / "album"
    (out / "old").mkdir(parents=True)
    theirs = {out / ".draft.md.tmp": b"an editor's", out / "old" / ".todo.tmp": b"another tool's"}
    for path, blob in theirs.items():
        path.write_bytes(blob)
    apply = ["translate", "apply", cfg.run, str(one), str(out), "--direction", "remove"]
    with Lease(open_store(str(out)), what="output folder", owns=False):  # another apply writes there now
        capsys.readouterr()
        assert main(apply) == 2
        err = capsys.readouterr().err.strip()
        assert "this output folder is being translated into by another process" in err and "\n" not in err, err
        assert not (out / f"{one.stem}.png").exists() and not (out / "translations.json").exists()
    assert main(apply) == 0
    assert (out / f"{one.stem}.png").exists() and not (out / "lease.json").exists()  # released at the end
    assert {path: path.read_bytes() for path in theirs} == theirs
    (out / "lease.json").write_text('{"mine": true}')  # a file of the user's by that name
    capsys.readouterr()
    assert main(apply) == 2
    err = capsys.readouterr().err.strip()
    assert "lease.json: already there and not a facegan lease; translate into another folder" in err, err
    assert (out / "lease.json").read_text() == '{"mine": true}'
    # refused while holding the lease (no input readable): an empty folder of the user's stays, a new one is not left
    (tmp_path / "broken.jpg").write_bytes(b"not a photo")
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "new"):
        assert main(["translate", "apply", cfg.run, str(tmp_path / "broken.jpg"), str(folder),
                     "--direction", "add"]) == 2
        assert "no readable face image among 1 file(s)" in capsys.readouterr().err
    assert not any((tmp_path / "empty").iterdir()) and not (tmp_path / "new").exists()


def test_swap_train_and_apply_set_an_indexed_cuda_device(fake_cuda, labelled32, makeup_raw, tmp_path):
    """The GPU crash's fix reaches the attribute swap: `cuda` and `auto` become cuda:0 before any
    CUDA call (see tests/test_runtime.py for the stand-in)."""
    from helpers import ReachedCuda

    cfg = tiny(labelled32, str(tmp_path / "r"), steps=2, ckpt_every=2)
    fit(cfg, quiet)  # on the CPU, before the stand-in
    fake_cuda()
    for device in ("cuda", "auto"):
        with pytest.raises(ReachedCuda) as reached:
            fit(tiny(labelled32, str(tmp_path / f"on-{device}"), device=device), quiet)
        assert reached.value.index == 0
    face = str(sorted(makeup_raw.iterdir())[0])
    with pytest.raises(ReachedCuda) as reached:
        main(["translate", "apply", cfg.run, face, str(tmp_path / "out"), "--direction", "add", "--device", "cuda"])
    assert reached.value.index == 0


def test_a_swap_is_scored_by_the_metrics_of_its_sampler(labelled32, fid_weights, prepared, dataset32, tmp_path,
                                                        capsys):
    """Scoring needs only a sampler: a swap's is its B faces with the attribute added (G_BA); the
    first metric decides best.json, as for any family. `facegan score` of its checkpoint gives the
    figures the run wrote (within 1e-6: the run's G_BA is channels_last, the loaded one is not), and
    the evaluate flow runs the same `score_checkpoint`; a dataset the swap cannot read is one line."""
    cfg = tiny(labelled32, str(tmp_path / "scored"), steps=4, ckpt_every=2, metric_every=2, metric_samples=6,
               metric_weights=fid_weights, metric_resize=75, metrics="fid,kid")
    assert fit(cfg, quiet).finished
    run = open_store(cfg.run)
    rows = [json.loads(x) for x in run.get_bytes("metric-fid.jsonl").decode().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(r["fid"] > 0 for r in rows)
    assert rows[0]["fid_protocol"]["samples"] == 6
    assert ckpt.read_pointer(run, ckpt.BEST)["metric"]["name"] == "fid"
    kid = json.loads(run.get_bytes("metric-kid.jsonl").decode().splitlines()[-1])

    args = ["--samples", "6", "--resize", "75", "--weights", fid_weights]
    assert main(["score", cfg.run, "--dataset", labelled32, "--metrics", "fid,kid", *args]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["step"] == 4 and out["generator"] == "G_BA"
    assert out["fid"] == pytest.approx(rows[-1]["fid"], rel=1e-6) and out["kid"] == pytest.approx(kid["kid"], rel=1e-6)
    assert {k: v for k, v in out["protocol"].items() if k in rows[-1]["fid_protocol"]} == rows[-1]["fid_protocol"]
    import facegan  # the Python API gives what the command printed (metrics as a list too)

    assert facegan.score(cfg.run, labelled32, ["fid", "kid"], samples=6, weights=fid_weights, resize=75,
                         log=lambda *_: None) == out
    # sampling faces from noise is not what a swap does: one line saying what does, nothing written
    assert main(["sample", cfg.run, str(tmp_path / "faces")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not draw faces from noise; `facegan translate apply` uses it" in err and "\n" not in err, err
    assert not (tmp_path / "faces").exists()
    for dataset, said in ((prepared(64), "64 px images; the swap was trained on 32 px faces"),
                          (dataset32, "has no attributes")):
        assert main(["score", cfg.run, "--dataset", dataset, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert said in err and "\n" not in err, err
