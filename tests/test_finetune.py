"""Fine-tuning: a new run from another run's weights (--init-from), FreezeD (--freeze-d)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import assert_states_equal, tiny_config

from facegan import checkpoint as ckpt
from facegan.cli import main
from facegan.config import ConfigError, ModelConfig
from facegan.loop import Hooks, fit

quiet = Hooks(log=lambda *_: None)


@pytest.fixture(scope="module")
def source(dataset32, tmp_path_factory) -> str:
    """A tiny DCGAN run of 8 steps: what the fine-tuned runs start from."""
    run = tmp_path_factory.mktemp("finetune") / "source"
    fit(tiny_config(dataset32, str(run), steps=8, ema_decay=0.5), quiet)
    return str(run)


def params(state: dict, part: str) -> dict[str, torch.Tensor]:
    """A network's parameters (not BatchNorm's running statistics nor spectral norm's power-iteration
    vectors, which every forward moves)."""
    return {k: v for k, v in state[part].items()
            if "running_" not in k and "num_batches" not in k and not k.endswith(("._u", "._v"))}


def test_a_new_run_starts_from_another_runs_weights_with_fresh_optimizers(source, labelled32, tmp_path):
    # another dataset (the labelled faces): adapting a trained model to new faces is the point
    cfg = tiny_config(labelled32, str(tmp_path / "tuned"), steps=1, ema_decay=0.5, lr_g=1e-12, lr_d=1e-12,
                      init_from=source)
    said = []
    fit(cfg, Hooks(log=said.append))
    start, tuned = ckpt.load(source), ckpt.load(cfg.run)
    # one step at a learning rate of 1e-12 moves no weight measurably: the weights are the source's,
    # and the EMA generator (decay 0.5) is half way from the source's EMA to its G
    for part in ("G", "D"):
        for k, v in params(start, part).items():
            assert torch.allclose(tuned[part][k], v, atol=1e-9), f"{part}.{k}"
    for k, v in params(start, "G_ema").items():
        assert torch.allclose(tuned["G_ema"][k], (v + start["G"][k]) / 2, atol=1e-7), f"G_ema.{k}"
    # ... and the optimizers are new: one step, not the source's nine
    assert {int(s["step"]) for s in tuned["opt_g"]["state"].values()} == {1}
    pointer = ckpt.read_pointer(ckpt.open_store(source))
    origin = {"uri": pointer["uri"], "step": 8, "sha256": pointer["sha256"]}
    assert tuned["config"]["init_from"] == source and tuned["config"]["init_origin"] == origin
    assert json.loads((Path(cfg.run) / "config.json").read_text())["init_origin"] == origin
    assert any(f"starts from {pointer['uri']} (step 8" in line for line in said), said
    # a run that was not fine-tuned starts elsewhere: the weights differ
    fresh = tiny_config(labelled32, str(tmp_path / "fresh"), steps=1, ema_decay=0.5, lr_g=1e-12, lr_d=1e-12)
    fit(fresh, quiet)
    assert not torch.allclose(ckpt.load(fresh.run)["G"]["main.0.weight"], start["G"]["main.0.weight"])


def test_a_fine_tuned_run_resumes_exactly_and_keeps_its_origin(source, dataset32, tmp_path):
    full = tiny_config(dataset32, str(tmp_path / "full"), steps=8, ema_decay=0.5, init_from=source)
    fit(full, quiet)
    cut = tiny_config(dataset32, str(tmp_path / "cut"), steps=8, ema_decay=0.5, init_from=source)
    stops = iter([False] * 4 + [True])
    assert fit(cut, Hooks(log=lambda *_: None, should_stop=lambda: next(stops, False))).step == 5
    said = []
    fit(cut, Hooks(log=said.append))  # resumed from step 5: not started from the source again
    assert not any("starts from" in line for line in said) and any("resuming" in line for line in said)
    a, b = ckpt.load(full.run), ckpt.load(cut.run)
    assert_states_equal(a, b)
    assert a["config"]["init_origin"] == b["config"]["init_origin"] and b["config"]["init_origin"]["step"] == 8
    # another init_from on resume is another run: refused, naming the field
    with pytest.raises(ConfigError, match="init_from"):
        fit(tiny_config(dataset32, str(tmp_path / "cut"), steps=8, ema_decay=0.5, init_from=full.run), quiet)


def test_freeze_d_keeps_the_first_blocks_and_trains_the_rest(source, dataset32, tmp_path):
    cfg = tiny_config(dataset32, str(tmp_path / "frozen"), steps=4, ema_decay=0.5, init_from=source, freeze_d=2)
    fit(cfg, quiet)
    start, tuned = params(ckpt.load(source), "D"), params(ckpt.load(cfg.run), "D")
    # the tiny 32 px D: main.0 conv | main.2 conv, main.3 norm | main.5 conv, main.6 norm | main.8 conv
    frozen = [k for k in tuned if k.split(".")[1] in ("0", "2", "3")]
    trained = [k for k in tuned if k.split(".")[1] in ("5", "6", "8")]
    assert frozen and trained
    assert all(torch.equal(tuned[k], start[k]) for k in frozen)
    assert all(not torch.equal(tuned[k], start[k]) for k in trained if k.endswith("weight"))
    with pytest.raises(ConfigError, match="freeze_d=4 must be less than the discriminator's 4 blocks"):
        fit(tiny_config(dataset32, str(tmp_path / "all"), steps=2, freeze_d=4), quiet)


def test_the_resnet_discriminator_freezes_by_its_blocks(dataset32, tmp_path):
    from facegan.config import ResNetConfig, ResNetModelConfig

    cfg = ResNetConfig(dataset=dataset32, run=str(tmp_path / "r"), steps=2, batch_size=4, ckpt_every=2, log_every=1,
                       sample_count=4, device="cpu", n_dis=1, freeze_d=3,
                       model=ResNetModelConfig(resolution=32, ngf=16, ndf=16, z_dim=16))
    # the same seed's D after one step at a learning rate of 1e-12: the weights before training
    fit(cfg.replace(steps=1, run=str(tmp_path / "r0"), freeze_d=0, lr_g=1e-12, lr_d=1e-12), quiet)
    first = params(ckpt.load(str(tmp_path / "r0")), "D")
    fit(cfg, quiet)
    after = params(ckpt.load(cfg.run), "D")
    frozen = [k for k in after if k.startswith(("blocks.0.", "blocks.1.", "blocks.2."))]
    assert frozen and all(torch.allclose(after[k], first[k], atol=1e-9) for k in frozen)
    assert not torch.allclose(after["linear.parametrizations.weight.original"],
                              first["linear.parametrizations.weight.original"], atol=1e-6)


def test_a_new_fine_tuned_run_takes_the_sources_networks_unless_told_otherwise(source, labelled32, tmp_path):
    """`--init-from` with no model options: the new run's networks are the source's (its z_dim, ngf
    and ndf here are not the defaults), whether the source is named as a run, a checkpoint in a run,
    or a checkpoint elsewhere; the resolution stays the dataset's, and an option given still wins."""
    import shutil

    model = json.loads((Path(source) / "config.json").read_text())["model"]
    assert model != ModelConfig(resolution=32).__dict__  # the source is not the default model
    latest = ckpt.read_pointer(ckpt.open_store(source))["uri"]
    elsewhere, loose = tmp_path / "kept.pt", tmp_path / "copies" / "checkpoints" / "step-0000008.pt"
    loose.parent.mkdir(parents=True)  # named as in a run, in a folder that is not one (no config.json)
    for copy in (elsewhere, loose):
        shutil.copy(latest, copy)
    base = ["train", "--dataset", labelled32, "--steps", "1", "--batch-size", "8", "--device", "cpu"]
    for name, start in {"run": source, "in_run": latest, "elsewhere": str(elsewhere), "loose": str(loose)}.items():
        assert main([*base, "--run", str(tmp_path / name), "--init-from", start]) == 0, name
        tuned = json.loads((tmp_path / name / "config.json").read_text())
        assert tuned["model"] == model and tuned["init_origin"]["step"] == 8, name
    assert main([*base, "--run", str(tmp_path / "narrow"), "--init-from", source, "--z-dim", "32"]) == 2
    assert not (tmp_path / "narrow").exists()


def test_a_start_that_does_not_fit_is_one_line_exit_2(source, labelled32, dataset32, tmp_path, capsys):
    base = ["train", "--dataset", dataset32, "--steps", "2", "--batch-size", "8", "--device", "cpu",
            "--init-from", source]
    cases = {
        "wider": (["--run", str(tmp_path / "w"), "--z-dim", "16", "--ngf", "16", "--ndf", "8"],
                  "does not fit this run: G.main.0.weight"),
        "another family": (["--run", str(tmp_path / "f"), "--family", "resnet", "--preset", "resnet32-small"],
                           "is a dcgan run; this run is resnet (fine-tune it as a dcgan run)"),
        "untrained": (["--run", str(tmp_path / "u"), "--init-from", str(tmp_path / "never")], "no checkpoint"),
        "itself": (["--run", source], "is this run"),
    }
    for name, (extra, message) in cases.items():
        assert main([*base, *extra]) == 2, name
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (name, err)
        if name != "itself":
            assert not Path(extra[1]).exists(), name  # nothing written
    # a swap cannot start from a run that draws from noise
    swap = ["translate", "train", "--dataset", labelled32, "--run", str(tmp_path / "s"), "--steps", "2",
            "--batch-size", "4", "--device", "cpu", "--init-from", source]
    assert main(swap) == 2
    assert "is a dcgan run; this run is cyclegan" in capsys.readouterr().err


def test_init_from_works_for_an_attribute_swap(labelled32, tmp_path):
    from facegan.config import CycleModelConfig, TranslateConfig

    def swap(run: str, **more) -> TranslateConfig:
        settings = dict(dataset=labelled32, run=run, steps=2, batch_size=4, ckpt_every=1, log_every=1,
                        sample_count=2, device="cpu", seed=3, pool_size=4,
                        model=CycleModelConfig(resolution=32, ngf=8, ndf=8, blocks=1))
        return TranslateConfig(**{**settings, **more})

    fit(swap(str(tmp_path / "a")), quiet)
    fit(swap(str(tmp_path / "b"), lr=1e-12, init_from=str(tmp_path / "a"), steps=1), quiet)
    a, b = ckpt.load(str(tmp_path / "a")), ckpt.load(str(tmp_path / "b"))
    for part in ("G_AB", "G_BA", "D_A", "D_B"):
        for k, v in a[part].items():
            assert torch.allclose(b[part][k].float(), v.float(), atol=1e-9), f"{part}.{k}"
    assert b["config"]["init_origin"]["step"] == 2 and b["pool"]["A"]["count"] <= 4


def test_model_config_shape_is_named_in_the_mismatch(source, dataset32, tmp_path):
    cfg = tiny_config(dataset32, str(tmp_path / "z"), steps=1, init_from=source,
                      model=ModelConfig(resolution=32, z_dim=32, ngf=8, ndf=8))
    with pytest.raises(ConfigError) as err:
        fit(cfg, quiet)
    assert '"z_dim": 16' in str(err.value) and '"z_dim": 32' in str(err.value)


def test_a_checkpoint_outside_a_run_names_its_family(dataset32, tmp_path):
    """`--init-from` a .pt kept outside any run, with no --family: the new run is of the checkpoint's
    family (read from the file, as a run folder's is read from its config.json), with its networks."""
    import shutil

    from facegan.config import ResNetConfig, ResNetModelConfig

    source = ResNetConfig(dataset=dataset32, run=str(tmp_path / "src"), steps=1, batch_size=4, ckpt_every=1,
                          log_every=1, sample_count=4, device="cpu", n_dis=1,
                          model=ResNetModelConfig(resolution=32, ngf=16, ndf=16, z_dim=16))
    fit(source, quiet)
    kept = tmp_path / "kept.pt"
    shutil.copy(ckpt.read_pointer(ckpt.open_store(source.run))["uri"], kept)
    assert main(["train", "--dataset", dataset32, "--run", str(tmp_path / "tuned"), "--init-from", str(kept),
                 "--steps", "1", "--batch-size", "4", "--n-dis", "1", "--device", "cpu"]) == 0
    tuned = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert tuned["family"] == "resnet" and tuned["model"] == source.to_dict()["model"]
    assert tuned["init_origin"]["uri"] == str(kept)
