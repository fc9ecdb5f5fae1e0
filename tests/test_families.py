"""The lifecycle's seam, proven by use: a toy third family (tests/toy_family.py, registered here
only) trains, resumes exactly, checkpoints, is scored by a metric, is sampled, is published by the
nightly gallery, and trains through the CLI and the train flow, with no change to facegan."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import toy_family
from helpers import ROOT, assert_states_equal

from facegan import checkpoint as ckpt
from facegan import families, gallery
from facegan.cli import main
from facegan.loop import Hooks, fit
from facegan.sample import generate, load_generator
from facegan.storage import open_store

quiet = Hooks(log=lambda *_: None)


@pytest.fixture
def toy():
    families.register(toy_family.FAMILY)
    yield toy_family.FAMILY
    families.REGISTRY.pop(toy_family.FAMILY.name)


def toy_config(dataset: str, run: str, **overrides) -> toy_family.ToyConfig:
    base = dict(dataset=dataset, run=run, steps=6, batch_size=8, ckpt_every=2, keep_last=2, log_every=2,
                sample_count=4, device="cpu", seed=5)
    return toy_family.ToyConfig(**{**base, **overrides})


def test_a_third_family_trains_resumes_is_scored_sampled_and_published(toy, dataset32, fid_weights, tmp_path):
    runs = tmp_path / "store" / "runs"
    scored = dict(metric_every=2, metric_samples=8, metric_weights=fid_weights, metric_resize=75)
    straight = fit(toy_config(dataset32, str(runs / "straight")), quiet)  # unscored: scoring leaves training be
    assert straight.finished and [r["step"] for r in straight.metrics] == [2, 4, 6]
    assert set(straight.metrics[0]) >= {"loss_d", "loss_g", "img_per_s", "lr_g"}

    cut = toy_config(dataset32, str(runs / "cut"), **scored)
    polls = iter(range(100))
    assert fit(cut, Hooks(should_stop=lambda: next(polls) == 2, log=lambda *_: None)).step == 3
    assert fit(cut, quiet).finished
    a, b = ckpt.load(straight.run), ckpt.load(cut.run)
    assert a["family"] == "toy" and open_store(cut.run).get_json("config.json")["family"] == "toy"
    assert_states_equal(a, b, nets=("G", "D"))

    run = open_store(cut.run)  # the metric's stream and best.json, the lifecycle's
    fid = [json.loads(line) for line in run.get_bytes("metric-fid.jsonl").decode().splitlines()]
    assert [r["step"] for r in fid] == [2, 4, 6] and all(r["fid"] > 0 for r in fid)
    assert ckpt.read_pointer(run, ckpt.BEST)["metric"]["name"] == "fid"
    assert run.get_bytes("loss.png")[:8] == b"\x89PNG\r\n\x1a\n"

    assert tuple(generate(load_generator(cut.run), [0, 1]).shape) == (2, 3, 32, 32)
    night = gallery.publish(str(tmp_path / "store"), date=dt.date(2026, 12, 1), run_name="cut")
    assert night["run"] == run.root and night["metrics"]["fid"]["protocol"]["samples"] == 8
    assert night["family"] == "toy" and "(toy)" in Path(night["index_uri"]).read_text()  # labelled by family


def test_a_third_family_trains_through_the_cli_and_the_train_flow(toy, prefect_api, dataset32, tmp_path, capsys):
    args = ["--dataset", dataset32, "--steps", "2", "--ckpt-every", "2", "--log-every", "1", "--device", "cpu"]
    assert main(["train", "--family", "toy", "--run", str(tmp_path / "cli"), *args]) == 0
    assert re.search(r"^step 2/2 \(100.0%\) loss_d \d\.\d{3} G \d\.\d{3} ", capsys.readouterr().out, re.M)

    from flows.train_dcgan import train_dcgan

    out = train_dcgan(dataset_uri=dataset32, run_name="toy-flow", store=str(tmp_path), family="toy", steps=2,
                      batch_size=8, ckpt_every=2, log_every=1, device="cpu")
    assert out["step"] == 2 and ckpt.load(out["run"])["family"] == "toy"
    state = train_dcgan(dataset_uri=dataset32, run_name="toy-bad", store=str(tmp_path), family="toy", lr_g=0.1,
                        return_state=True)
    assert state.is_failed() and "lr_g: not an option of the toy family" in state.message


def test_no_family_name_appears_outside_its_module_the_registry_and_the_tests():
    """Which families exist is known in one place: a family's name is written only in its module
    (facegan/families/NAME.py), the registry (facegan/families/__init__.py) and facegan/config.py,
    which holds each family's config class (the half of a family the CLI's help reads without
    importing torch)."""
    names = "|".join(families.REGISTRY)
    quoted = re.compile(rf"""["']({names})["']""")
    allowed = {ROOT / "facegan" / "config.py"}
    files = [p for folder in ("facegan", "flows", "bench") for p in (ROOT / folder).rglob("*.py")]
    found = [f"{p.relative_to(ROOT)}:{n}" for p in files if p.parent.name != "families" and p not in allowed
             for n, line in enumerate(p.read_text().splitlines(), 1) if quoted.search(line)]
    assert found == []
