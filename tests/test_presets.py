import pytest
import torch
from helpers import assert_states_equal

from facegan import checkpoint as ckpt
from facegan.config import ConfigError, ModelConfig, TrainConfig
from facegan.loop import Hooks, fit
from facegan.models import Discriminator, Generator, parameter_count
from facegan.presets import PRESETS, preset, resolve
from facegan.storage import open_store

quiet = Hooks(log=lambda *_: None)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_builds_trains_and_resumes(name, prepared, fid_weights, tmp_path):
    s = preset(name)
    model = ModelConfig(**s["model"])
    G, D = Generator(model), Discriminator(model)  # full-size networks build
    assert G(torch.randn(2, model.z_dim)).shape == (2, 3, model.resolution, model.resolution)
    if name == "dcgan64":  # the classic network, exactly pytorch/examples' size
        assert (parameter_count(G), parameter_count(D)) == (3_576_704, 2_765_568)
    convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    spectral = [m for m in convs if torch.nn.utils.parametrize.is_parametrized(m, "weight")]
    assert len(spectral) == (len(convs) if model.spectral_norm else 0)  # spectral norm only where asked
    # a few steps at the preset's architecture (small batch), interrupted after step 2, resumed
    small = {"batch_size": 4, "steps": 4, "ckpt_every": 2, "log_every": 1, "sample_count": 4, "device": "cpu"}
    if s.get("metric_every"):
        small |= {"metric_every": 2, "metric_samples": 6, "metric_weights": fid_weights, "metric_resize": 75}
    settings = resolve(name, small)
    cfg = TrainConfig(dataset=prepared(model.resolution), run=str(tmp_path / "run"),
                      **{**settings, "model": ModelConfig(**settings["model"])})
    calls = iter(range(100))
    first = fit(cfg, Hooks(should_stop=lambda: next(calls) == 1, log=lambda *_: None))
    assert first.stopped and first.step == 2
    resumed = fit(cfg, quiet)
    assert resumed.finished and ckpt.load(cfg.run)["step"] == 4
    straight = fit(cfg.replace(run=str(tmp_path / "straight")), quiet)
    assert straight.finished
    assert_states_equal(ckpt.load(cfg.run), ckpt.load(straight.run))  # resume is exact with every preset
    if s.get("metric_every"):
        assert ckpt.read_pointer(open_store(cfg.run), ckpt.BEST)["metric"]["name"] == "fid"


def test_preset_contents_and_overrides():
    plus = preset("dcgan64-plus")
    assert plus["model"]["spectral_norm"] and plus["augment"] == "color,translation,cutout"
    assert plus["ema_decay"] > 0 and plus["metric_every"] > 0 and plus["r1_gamma"] > 0
    assert preset("udacity32")["model"]["resolution"] == 32
    assert preset("dcgan128")["model"]["resolution"] == 128
    merged = resolve("dcgan64", {"steps": 5, "model": {"ngf": 8}})
    assert merged["steps"] == 5 and merged["model"] == {"resolution": 64, "z_dim": 100, "ngf": 8, "ndf": 64}
    with pytest.raises(ConfigError, match="preset='dcgan256' is unknown"):
        preset("dcgan256")


def test_cli_preset_with_override(prepared, tmp_path, capsys):
    from facegan.cli import main

    rc = main(["train", "--preset", "udacity32", "--dataset", prepared(32), "--run", str(tmp_path / "r"),
               "--steps", "2", "--batch-size", "4", "--ngf", "8", "--device", "cpu"])
    assert rc == 0
    cfg = ckpt.load(str(tmp_path / "r"))["config"]
    assert cfg["model"] == {"resolution": 32, "z_dim": 100, "ngf": 8, "ndf": 32, "norm": "batch",
                            "spectral_norm": False}
    assert cfg["batch_size"] == 4 and cfg["ema_decay"] == 0.0
