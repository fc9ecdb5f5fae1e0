"""Export (safetensors, torch.export, ONNX, model card), loaded by each file's own runtime in a
process that never imports facegan; truncation; the Python API."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, tiny_config

from facegan import checkpoint as ckpt
from facegan import export as exporting
from facegan.cli import main
from facegan.config import ConfigError, CycleModelConfig, TranslateConfig
from facegan.errors import ExportError
from facegan.loop import Hooks, fit
from facegan.sample import generate, latents, load_generator, truncation_threshold

quiet = Hooks(log=lambda *_: None)

# Runs in a fresh interpreter, cwd = the export folder: loads every file with its own runtime,
# runs the model card's own snippets, compares with what facegan's sampler made (expected.npy),
# and proves facegan was never imported.
FRESH = textwrap.dedent('''
    import json, sys
    import numpy as np
    import onnxruntime as ort
    import torch
    from safetensors.torch import load_file

    card = json.load(open("model_card.json"))
    report = {}
    for name, entry in card["generators"].items():
        files = {fmt: f["key"] for fmt, f in entry["files"].items()}
        x = torch.from_numpy(np.load(f"input-{name}.npy"))
        want = np.load(f"expected-{name}.npy")
        net = torch.export.load(files["pt2"]).module()
        with torch.no_grad():
            pt2 = net(x).numpy()
        session = ort.InferenceSession(files["onnx"], providers=["CPUExecutionProvider"])
        onnx = session.run(None, {entry["input"]["name"]: x.numpy()})[0]
        weights = load_file(files["safetensors"])
        held = net.state_dict()
        same = sorted(weights) == sorted(held) and all(torch.equal(weights[k], held[k]) for k in weights)
        net.load_state_dict(weights)
        with torch.no_grad():
            reloaded = net(x).numpy()
        report[name] = {"pt2": float(np.abs(pt2 - want).max()), "onnx": float(np.abs(onnx - want).max()),
                        "safetensors_equal": same, "reloaded": float(np.abs(reloaded - want).max()),
                        "batch": len(x)}
    snippets = {}
    for name in card["generators"]:
        for fmt, code in card["how_to_load"][name].items():
            side = card["resolution"]
            scope = {"faces": torch.rand(3, 3, side, side) * 2 - 1}  # what an image family's snippet is given
            exec(code, scope)
            out = scope.get("images")
            snippets[f"{name}/{fmt}"] = list(np.asarray(out.detach() if hasattr(out, "detach") else out).shape) \\
                if out is not None else "loaded"
    report["snippets"] = snippets
    report["facegan_imported"] = sorted(m for m in sys.modules if m == "facegan" or m.startswith("facegan."))
    print(json.dumps(report))
''')


def load_in_a_fresh_process(out: Path, inputs: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict:
    for name in inputs:
        np.save(out / f"input-{name}.npy", inputs[name].numpy())
        np.save(out / f"expected-{name}.npy", expected[name].numpy())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", FRESH], cwd=out, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(dataset32, tmp_path_factory) -> str:
    """A tiny DCGAN run of 8 steps (EMA on), its training record included."""
    run = tmp_path_factory.mktemp("export") / "run"
    fit(tiny_config(dataset32, str(run), steps=8, ema_decay=0.5), quiet)
    return str(run)


def test_an_export_loads_in_each_runtime_without_facegan_and_matches_its_sampler(trained, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", trained, str(out)]) == 0
    assert "exported G_ema of dcgan at step 8 (latest)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["generator.onnx", "generator.pt2", "generator.safetensors",
                                                     "model_card.json", "model_card.md"]
    card = json.loads((out / "model_card.json").read_text())
    for f in card["generators"]["G_ema"]["files"].values():  # the card records what is there
        assert ckpt.sha256((out / f["key"]).read_bytes()) == f["sha256"]
    gen = load_generator(trained)
    seeds = range(100, 105)  # 5: not the batch it was traced with (2) nor checked with (4)
    z = latents(seeds, gen.z_dim)
    report = load_in_a_fresh_process(out, {"G_ema": z}, {"G_ema": generate(gen, seeds)})
    assert report["facegan_imported"] == []
    got = report["G_ema"]
    assert got["batch"] == 5 and got["pt2"] <= 1e-6 and got["onnx"] <= 1e-4, got
    assert got["safetensors_equal"] and got["reloaded"] <= 1e-6, got
    # the card's three-line snippets run as written, and make (16, 3, 32, 32) images
    assert report["snippets"] == {"G_ema/pt2": [16, 3, 32, 32], "G_ema/onnx": [16, 3, 32, 32],
                                  "G_ema/safetensors": "loaded"}

    # the card: what a user needs to know of the model
    assert card["family"] == "dcgan" and card["step"] == 8 and card["resolution"] == 32
    assert card["generators"]["G_ema"]["parameters"] == sum(p.numel() for p in gen.net.parameters())
    assert card["dataset"]["images"] == 96 and card["dataset"]["id"] == ckpt.load(trained)["dataset_id"]
    assert card["training"]["device"].startswith("cpu") and card["training"]["seconds"] > 0
    assert card["source"]["checkpoint"] == "latest"
    assert card["source"]["checkpoint_sha256"] == ckpt.read_pointer(ckpt.open_store(trained))["sha256"]
    md = (out / "model_card.md").read_text()
    for needed in ("non-commercial research", "most faces are white", "## Intended use", "**Steps trained:** 8",
                   f"{card['generators']['G_ema']['parameters']:,} parameters", *card["how_to_load"]["G_ema"].values()):
        assert needed in md, needed

    # facegan itself loads the export as it loads the run: the same faces, bit for bit
    assert torch.equal(generate(load_generator(str(out)), seeds), generate(gen, seeds))


def test_the_card_carries_the_metrics_at_the_exported_step_and_the_training_time_over_sessions(
        dataset32, fid_weights, tmp_path):
    cfg = tiny_config(dataset32, str(tmp_path / "run"), steps=8, metric_every=4, metric_samples=8,
                      metric_weights=fid_weights, metric_resize=75)
    assert fit(dataclasses.replace(cfg, steps=4), quiet).step == 4
    before = ckpt.training_record(ckpt.load(cfg.run))["seconds"]
    fit(cfg, quiet)  # resumed: the record adds this session's time
    record = ckpt.training_record(ckpt.load(cfg.run))
    assert record["seconds"] > before and record["dataset_images"] == 96 and record["processes"] == 1
    done = exporting.export(cfg.run, str(tmp_path / "out"), log=lambda *_: None)
    card = done.card
    assert card["source"]["checkpoint"] == "best"  # a metric chose one
    best = ckpt.read_pointer(ckpt.open_store(cfg.run), ckpt.BEST)
    assert card["step"] == best["step"]
    fid_rows = [json.loads(x) for x in (Path(cfg.run) / "metric-fid.jsonl").read_text().splitlines()]
    row = next(r for r in fid_rows if r["step"] == card["step"])
    assert card["metrics"]["fid"]["value"] == row["fid"]
    assert card["metrics"]["fid"]["protocol"]["weights"]["sha256"] == row["fid_protocol"]["weights"]["sha256"]
    assert "**FID**" in (tmp_path / "out" / "model_card.md").read_text()


def test_both_generators_of_an_attribute_swap_are_exported(labelled32, makeup_raw, fid_weights, tmp_path, capsys):
    """Both directions are exported, load without facegan, and `translate apply` and `facegan
    score` take the export, writing the same pictures and giving the same scores as from the run
    (`--no-ema` too: a swap has no EMA generator to leave out)."""
    run = tmp_path / "swap"
    fit(TranslateConfig(dataset=labelled32, run=str(run), steps=2, batch_size=4, ckpt_every=2, log_every=1,
                        sample_count=2, device="cpu", seed=3, pool_size=4,
                        model=CycleModelConfig(resolution=32, ngf=8, ndf=8, blocks=1)), quiet)
    out = tmp_path / "out"
    done = exporting.export(str(run), str(out), log=lambda *_: None)
    names = ["G_AB", "G_BA"]
    assert sorted(done.files) == sorted([*(f"generator-{n}.{x}" for n in names for x in ("safetensors", "pt2", "onnx")),
                                         "model_card.md", "model_card.json"])
    assert [done.card["generators"][n]["input"]["name"] for n in names] == ["faces", "faces"]
    from facegan.families.cyclegan import load_generators

    nets = load_generators(ckpt.load(str(run)))
    faces = {n: torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(i)) * 2 - 1
             for i, n in enumerate(names)}
    with torch.no_grad():
        expected = {n: nets[n](faces[n]) for n in names}
    report = load_in_a_fresh_process(out, faces, expected)
    assert report["facegan_imported"] == []
    for n in names:
        assert report[n]["pt2"] <= 1e-6 and report[n]["onnx"] <= 1e-4 and report[n]["safetensors_equal"], report
        assert report["snippets"][f"{n}/pt2"] == [3, 3, 32, 32] and report["snippets"][f"{n}/onnx"] == [3, 3, 32, 32]
    from facegan.translate import apply

    for direction in ("add", "remove"):
        made = {}
        for name, source in (("run", run), ("export", out)):
            folder = tmp_path / name / direction
            keys = apply(str(source), makeup_raw, str(folder), direction, "cpu", log=lambda *_: None)
            made[name] = {k: (folder / k).read_bytes() for k in keys}
        assert len(made["run"]) == 48 and made["export"] == made["run"], direction
    scores = []
    for source, more in ((run, []), (out, []), (out, ["--no-ema"])):
        assert main(["score", str(source), "--dataset", labelled32, "--samples", "6", "--resize", "75",
                     "--weights", fid_weights, *more]) == 0
        said = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        scores.append((said["fid"], said["step"], said["generator"]))
    assert scores[0][0] > 0 and scores == [scores[0]] * 3 and scores[0][1:] == (2, "G_BA"), scores


def test_a_resnet_generator_exports_with_its_batch_dynamic_and_loads_without_facegan(dataset32, tmp_path):
    """The ResNet family's generator (SNGAN's recipe) exports in every format too: it read its
    batch with len(), which torch.export fixed at the traced batch of 2, so .pt2 and ONNX failed."""
    from facegan.config import ResNetConfig, ResNetModelConfig

    run, out = tmp_path / "resnet", tmp_path / "out"
    fit(ResNetConfig(dataset=dataset32, run=str(run), steps=2, batch_size=4, n_dis=1, ckpt_every=2, log_every=1,
                     sample_count=2, device="cpu", model=ResNetModelConfig(resolution=32, ngf=16, ndf=16)), quiet)
    done = exporting.export(str(run), str(out), log=lambda *_: None)
    assert done.problems == [] and sorted(done.files) == sorted(
        ["generator.safetensors", "generator.pt2", "generator.onnx", "model_card.md", "model_card.json"])
    gen = load_generator(str(run))
    seeds = range(100, 105)  # 5: not the batch it was traced with (2) nor checked with (4)
    report = load_in_a_fresh_process(out, {"G_ema": latents(seeds, gen.z_dim)}, {"G_ema": generate(gen, seeds)})
    got = report["G_ema"]
    assert report["facegan_imported"] == [] and got["batch"] == 5, report
    assert got["pt2"] <= 1e-6 and got["onnx"] <= 1e-4 and got["safetensors_equal"], got
    assert report["snippets"]["G_ema/pt2"] == [16, 3, 32, 32] and report["snippets"]["G_ema/onnx"] == [16, 3, 32, 32]


def test_an_op_without_an_onnx_translation_is_named_and_the_rest_is_written(trained, tmp_path, monkeypatch):
    """A generator with an op the ONNX exporter cannot translate (a custom op, as a user's own
    layer would be): one line names the op; safetensors, pt2 and the card are written."""
    @torch.library.custom_op("facegan_test::odd_tanh", mutates_args=())
    def odd_tanh(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)

    odd_tanh.register_fake(lambda x: torch.empty_like(x))

    class Odd(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.z_dim = net, net.z_dim

        def forward(self, z):
            return odd_tanh(self.net(z))

    from facegan.families import dcgan

    real = dcgan.generators
    monkeypatch.setattr(dcgan, "generators", lambda *a, **k: {n: Odd(g) for n, g in real(*a, **k).items()})
    out = tmp_path / "out"
    with pytest.raises(ExportError) as err:
        exporting.export(trained, str(out), log=lambda *_: None)
    message = str(err.value)
    assert "facegan_test.odd_tanh.default has no ONNX translation" in message and "\n" not in message
    assert sorted(p.name for p in out.iterdir()) == ["generator.pt2", "generator.safetensors",
                                                     "model_card.json", "model_card.md"]
    card = json.loads((out / "model_card.json").read_text())
    assert card["problems"] and "odd_tanh" in card["problems"][0]
    assert "## Not exported" in (out / "model_card.md").read_text()


def test_export_refuses_what_is_not_its_own_and_verifies_what_it_reads(trained, tmp_path, capsys):
    # a folder holding other files (here: the run itself) is never written into
    before = {p: p.read_bytes() for p in Path(trained).rglob("*") if p.is_file()}
    assert main(["export", trained, trained]) == 2
    err = capsys.readouterr().err.strip()
    assert "not an earlier export" in err and "\n" not in err
    assert {p: p.read_bytes() for p in Path(trained).rglob("*") if p.is_file()} == before
    # a run that never trained
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "o")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    # a checkpoint named directly: the card names it and its sha256, the one its run's list records
    pt = sorted(Path(trained).glob("checkpoints/*.pt"))[-1]
    named = exporting.export(str(pt), str(tmp_path / "named"), log=lambda *_: None).card["source"]
    assert named["checkpoint"] == "named" and named["checkpoint_sha256"] == ckpt.sha256(pt.read_bytes())
    # an export, a dataset or a sample where a run is needed (to fine-tune from, to export): said what it is
    dataset = json.loads((Path(trained) / "config.json").read_text())["dataset"]
    assert main(["sample", trained, str(tmp_path / "drawn"), "--count", "2", "--device", "cpu"]) == 0
    for source, said in [(tmp_path / "named", f"it is an export (a generator alone, for use without facegan): "
                                               f"name the run it was exported from ({trained})"),
                         (Path(dataset), "it is a facegan dataset (manifest.json), not a run"),
                         (tmp_path / "drawn", "it is a facegan sample folder (sample.json), not a run")]:
        for argv in (["train", "--dataset", dataset, "--run", str(tmp_path / "tuned"), "--init-from", str(source)],
                     ["export", str(source), str(tmp_path / "again")]):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip()
            assert f"{source}: no checkpoint (latest.json missing); {said}" in err and "\n" not in err, err
    assert not (tmp_path / "tuned").exists() and not (tmp_path / "again").exists()
    # an export again into the same folder replaces it, and only it: the user's notes beside it stay;
    # a damaged weights file is named on load
    out = tmp_path / "out"
    assert main(["export", trained, str(out)]) == 0
    (out / "notes.txt").write_text("the user's")
    (out / "evals").mkdir()
    (out / "evals" / "generator.onnx").write_text("the user's, in a folder of theirs")
    assert main(["export", trained, str(out)]) == 0
    assert (out / "notes.txt").read_text() == "the user's" and (out / "evals" / "generator.onnx").exists()
    blob = bytearray((out / "generator.safetensors").read_bytes())
    blob[-5] ^= 1
    (out / "generator.safetensors").write_bytes(bytes(blob))
    capsys.readouterr()
    assert main(["sample", str(out), str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert "generator.safetensors: damaged" in err and "\n" not in err
    assert main(["sample", str(out), str(tmp_path / "s"), "--no-ema"]) == 2
    assert "holds the EMA generator only" in capsys.readouterr().err


def test_an_export_interrupted_over_an_earlier_one_leaves_the_earlier_one_loadable(trained, tmp_path, monkeypatch,
                                                                                   capsys):
    """An export written over an earlier one that stops part-way (the store refuses its writes,
    as a spot instance taken back would stop it) leaves the earlier export loadable through
    the folder, again after a second interrupted try; the next whole export replaces it."""
    from facegan.errors import StorageError
    from facegan.storage import LocalStore

    pt4, _ = sorted(Path(trained).glob("checkpoints/*.pt"))  # steps 4 and 8: different weights
    out = tmp_path / "out"
    exporting.export(str(pt4), str(out), log=lambda *_: None)
    earlier = exporting.load_state(str(out))
    assert earlier["step"] == 4
    real_put = LocalStore.put_bytes

    def interrupt_after(n: int):
        writes = []

        def put_bytes(self, key, data):
            if not key.startswith(exporting.PREVIOUS):
                writes.append(key)
                if len(writes) > n:
                    raise StorageError(f"{self.uri(key)}: injected interruption")
            real_put(self, key, data)
        monkeypatch.setattr(LocalStore, "put_bytes", put_bytes)

    for n in (1, 2):  # the new safetensors written (then also the pt2), the card not yet
        interrupt_after(n)
        with pytest.raises(StorageError, match="injected interruption"):
            exporting.export(trained, str(out), log=lambda *_: None)
        monkeypatch.setattr(LocalStore, "put_bytes", real_put)
        state = exporting.load_state(str(out))
        assert state["step"] == 4 and all(torch.equal(state["G_ema"][k], w) for k, w in earlier["G_ema"].items())
        # the top-level weights are the new export's: the earlier ones were read from previous/
        assert (out / "generator.safetensors").read_bytes() != (out / "previous" / "generator.safetensors").read_bytes()
        assert main(["sample", str(out), str(tmp_path / f"s{n}"), "--count", "2"]) == 0
    exporting.export(trained, str(out), log=lambda *_: None)
    assert exporting.load_state(str(out))["step"] == 8 and not (out / "previous").exists()
    capsys.readouterr()


def test_an_export_stopped_before_its_first_card_is_written_over_and_one_export_writes_at_a_time(
        trained, tmp_path, monkeypatch, capsys):
    """The flows export into `<run>/export/` at every session's end: a first export stopped
    part-way (no card yet) must not wedge every later one, and two exports into one folder must
    not interleave their files (the second is refused while the first holds the folder's lease)."""
    from facegan import lease
    from facegan.errors import LeaseError, StorageError
    from facegan.storage import LocalStore, open_store

    out = tmp_path / "out"
    out.mkdir()
    (out / "Thumbs.db").write_bytes(b"Explorer's")  # a folder a file browser showed: as good as empty
    real_put = LocalStore.put_bytes

    def put_bytes(self, key, data):
        if key.endswith(".pt2"):
            raise StorageError(f"{self.uri(key)}: injected interruption")
        real_put(self, key, data)
    monkeypatch.setattr(LocalStore, "put_bytes", put_bytes)
    with pytest.raises(StorageError, match="injected interruption"):
        exporting.export(trained, str(out), log=lambda *_: None)
    monkeypatch.setattr(LocalStore, "put_bytes", real_put)
    assert sorted(p.name for p in out.iterdir()) == ["Thumbs.db", "generator.safetensors"]  # no card, no lease
    (out / "generator.onnx").write_bytes(b"a stray file of the stopped export")
    assert main(["export", trained, str(out)]) == 0
    assert exporting.load_state(str(out))["step"] == 8
    assert sorted(p.name for p in out.iterdir()) == ["Thumbs.db", "generator.onnx", "generator.pt2",
                                                     "generator.safetensors", "model_card.json", "model_card.md"]
    assert (out / "generator.onnx").read_bytes() != b"a stray file of the stopped export"
    # a folder without a card holding anything else is still not written into
    other = tmp_path / "other"
    other.mkdir()
    (other / "generator.pt2").write_bytes(b"x")
    (other / "notes.txt").write_bytes(b"mine")
    capsys.readouterr()
    assert main(["export", trained, str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "(notes.txt)" in err and "not an earlier export" in err and "\n" not in err
    assert (other / "generator.pt2").read_bytes() == b"x"
    # another export holding the folder: refused in one line before the slow part (no generator is
    # converted), the export there untouched
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with lease.Lease(open_store(str(out)), what="export folder"), monkeypatch.context() as m:
        m.setattr(exporting, "_programs", lambda *a: pytest.fail("converted a generator for a folder it cannot write"))
        assert main(["export", trained, str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "export folder is being exported into by another process" in err and "\n" not in err
        with pytest.raises(LeaseError):
            exporting.export(trained, str(out), log=lambda *_: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a lease left by a killed export on this host does not block the next one
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / "lease.json").write_text(json.dumps({"holder": "x", "host": socket.gethostname(), "pid": int(dead.stdout),
                                                "renewed": 0, "expires": 9e12}))
    exporting.export(trained, str(out), log=lambda *_: None)
    assert not (out / "lease.json").exists() and exporting.load_state(str(out))["step"] == 8


# ------------------------------------------------------------------ truncation


def test_truncation_keeps_values_within_its_bound_and_psi_1_changes_nothing(trained, tmp_path):
    seeds = range(0, 64)
    plain = latents(seeds, 128)
    assert torch.equal(latents(seeds, 128, 1.0), plain) and torch.equal(latents(seeds, 128, None), plain)
    t = truncation_threshold(0.5)
    assert abs(t - 0.6744897501960817) < 1e-12  # the normal's 75% quantile: half the mass within
    cut = latents(seeds, 128, 0.5)
    assert cut.abs().max() <= t
    kept = plain.abs() <= t  # a value within the bound at the first draw is kept: the same seed, the same face
    assert torch.equal(cut[kept], plain[kept]) and not torch.equal(cut, plain)
    assert 0.45 < kept.float().mean() < 0.55
    for bad in (0.0, 0.01, 1.5, float("nan"), True):
        with pytest.raises(ConfigError, match="truncation="):
            truncation_threshold(bad)
    # through the CLI: psi 1 writes the same PNGs as no option at all
    assert main(["sample", trained, str(tmp_path / "a"), "--count", "4"]) == 0
    assert main(["sample", trained, str(tmp_path / "b"), "--count", "4", "--truncation", "1"]) == 0
    assert main(["sample", trained, str(tmp_path / "c"), "--count", "4", "--truncation", "0.5"]) == 0
    for name in ("grid.png", "interpolation.png", "faces/000.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "grid.png").read_bytes() != (tmp_path / "c" / "grid.png").read_bytes()
    assert main(["sample", trained, str(tmp_path / "d"), "--truncation", "0"]) == 2


# ------------------------------------------------------------------ the Python API, as the README shows it


def test_the_python_api_refuses_a_count_or_seed_facegan_sample_would(trained):
    """`gen.faces(0)`, a float count, a negative or too large seed: a ConfigError naming the
    argument, as `facegan sample` refuses --count 0 and --seed -1 (they were a torch.cat or an
    overflow error from deep inside, or, for a negative seed, faces no command could make)."""
    import facegan

    gen = facegan.load(trained)
    for kwargs, named in (({"n": 0}, "n=0"), ({"n": -3}, "n=-3"), ({"n": 2.5}, "n=2.5"), ({"n": True}, "n=True"),
                          ({"n": 2, "seed": -1}, "seed=-1"), ({"n": 2, "seed": 2**63}, f"seed={2**63}"),
                          ({"n": 2, "seed": 1.0}, "seed=1.0")):
        with pytest.raises(ConfigError, match=re.escape(named) + " must be"):
            gen.faces(**kwargs)
    side = gen.resolution
    assert gen.faces(1, seed=2**63 - 1).shape == (1, side, side, 3)  # the largest seed `facegan sample` takes


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = re.split(r"\n#{2,3} ", text.split("### Python API\n", 1)[1])[0]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


def test_the_readmes_python_api_blocks_run(trained, prepared, fid_weights, tmp_path):
    """Every code block of the README's Python API section runs as written, in a folder holding
    `runs/demo` (a trained run), its export `runs/demo/export` and a dataset `datasets/faces-32`
    (16 faces: the Inception runs at the protocol's 299 px; the FID weights: a random Inception
    saved like the real file)."""
    import shutil

    blocks = readme_python_blocks()
    assert len(blocks) >= 3
    work = tmp_path / "work"
    shutil.copytree(trained, work / "runs" / "demo")
    shutil.copytree(prepared(32), work / "datasets" / "faces-32")
    exporting.export(str(work / "runs" / "demo"), str(work / "runs" / "demo" / "export"), log=lambda *_: None)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACEGAN_FID_WEIGHTS": fid_weights}
    printed = ""
    for block in blocks:
        done = subprocess.run([sys.executable, "-c", block], cwd=work, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{block}\n---\n{done.stderr[-2000:]}"
        printed += done.stdout
    assert (work / "faces.png").exists()  # the README's example saves one
    assert re.search(r"^FID \d+\.\d\d, KID -?\d\.\d{4} at step 8, 16 samples$", printed, re.M), printed
