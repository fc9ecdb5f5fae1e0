"""Data-parallel training: `facegan train --nproc 2` runs two gloo processes under torchrun.

The command is called in this process (`facegan.cli.main`, what the console script calls): the two
training processes it launches are real processes either way, and a third interpreter would only
add its start-up and a torch import."""

import signal

import pytest
from helpers import tiny_config, train_argv

from facegan import checkpoint as ckpt
from facegan.cli import main
from facegan.config import ModelConfig
from facegan.loop import Hooks, fit


@pytest.fixture
def ddp_train(capfd):
    """ddp_train(cfg) -> the output of `facegan train --nproc 2 ...` with cfg's options (its
    processes' output included: captured at the file descriptors)."""
    def run(cfg):
        argv = [*train_argv(cfg), "--nproc", "2"]
        # torchrun's launcher sets its own handlers for these signals and leaves them set
        handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)}
        try:
            rc = main(argv)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        out = capfd.readouterr()
        assert rc == 0, out.out[-3000:] + out.err[-3000:]
        return out.out + out.err

    return run


def test_two_processes_match_one_with_the_same_global_batch(ddp_train, dataset32, tmp_path):
    # Without batch statistics (norm="none") a DDP step is mathematically the single-process step on
    # the global batch; the stated tolerance covers float summation order (all-reduce vs one batch).
    model = ModelConfig(resolution=32, z_dim=16, ngf=8, ndf=8, norm="none")
    single = tiny_config(dataset32, str(tmp_path / "single"), model=model, steps=8, ckpt_every=4, batch_size=8)
    fit(single, Hooks(log=lambda *_: None))
    ddp = single.replace(run=str(tmp_path / "ddp"))
    out = ddp_train(ddp)
    assert "launching 2 processes: facegan train" in out
    a, b = ckpt.load(single.run), ckpt.load(ddp.run)
    assert b["step"] == 8
    for part in ("G", "D", "G_ema"):
        for k in a[part]:
            diff = (a[part][k] - b[part][k]).abs().max().item()
            assert diff < 1e-4, f"{part}.{k} differs by {diff}"
    # the run folder is written once (rank 0): one metrics row per log step
    rows = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 8 // ddp.log_every


def test_ddp_with_batchnorm_checkpoints_and_resumes(ddp_train, dataset32, tmp_path):
    cfg = tiny_config(dataset32, str(tmp_path / "run"), steps=4, ckpt_every=2, batch_size=8)
    ddp_train(cfg)
    state = ckpt.load(cfg.run)
    assert state["step"] == 4 and {"G", "D", "G_ema", "opt_g", "opt_d"} <= set(state)
    out = ddp_train(cfg.replace(steps=6))
    assert "resuming" in out
    assert ckpt.load(cfg.run)["step"] == 6
    from facegan.sample import generate, load_generator

    assert generate(load_generator(cfg.run), [0, 1]).shape == (2, 3, 32, 32)


def test_an_attribute_swap_trains_data_parallel_and_resumes_exactly(ddp_train, labelled32, tmp_path):
    """CycleGAN has no batch statistics (instance norm), so two processes match one on the same
    global batch up to float summation order; the image pools see the global batch on every rank,
    so rank 0's checkpoint resumes the whole group bit-identically."""
    import torch
    from test_translate import assert_swap_states_equal, tiny

    from facegan.cyclegan import PatchDiscriminator, ResnetGenerator

    single = tiny(labelled32, str(tmp_path / "single"), steps=3, ckpt_every=3, batch_size=4, pool_size=6,
                  lr_schedule="constant")
    fit(single, Hooks(log=lambda *_: None))
    straight = single.replace(run=str(tmp_path / "ddp"), steps=6)
    assert "launching 2 processes: facegan translate train" in ddp_train(straight)
    a, b = ckpt.load(single.run), ckpt.load(f"{straight.run}/checkpoints/step-0000003.pt")
    assert b["pool"]["A"]["count"] == 6
    # compared by what the networks compute: a convolution's bias before an instance norm has a
    # gradient of float noise only, which Adam scales up to +-lr a step, differently in each run (and
    # a GAN amplifies any difference: measured 1e-6 after 3 steps, 5e-4 after 6)
    faces = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for part, net in (("G_AB", ResnetGenerator), ("G_BA", ResnetGenerator), ("D_A", PatchDiscriminator),
                      ("D_B", PatchDiscriminator)):
        outs = []
        for state in (a, b):
            outs.append(net(single.model).eval())
            outs[-1].load_state_dict(state[part])
        with torch.no_grad():
            diff = (outs[0](faces) - outs[1](faces)).abs().max().item()
        assert diff < 1e-5, f"{part}'s output differs by {diff}"

    cut = straight.replace(run=str(tmp_path / "cut"))
    ddp_train(cut.replace(steps=3))  # a constant rate: 3 steps, then 3 more, are the 6-step run
    assert "resuming" in ddp_train(cut)
    assert_swap_states_equal(ckpt.load(straight.run), ckpt.load(cut.run))


def test_the_resnet_family_trains_data_parallel(ddp_train, dataset32, tmp_path):
    """Through the lifecycle, as every family: two gloo processes, n_dis D updates each step."""
    from facegan.config import ResNetConfig, ResNetModelConfig

    cfg = ResNetConfig(dataset=dataset32, run=str(tmp_path / "resnet"), steps=2, batch_size=8, n_dis=2,
                       model=ResNetModelConfig(resolution=32, z_dim=16, ngf=16, ndf=16), ckpt_every=2,
                       log_every=1, sample_count=4, device="cpu")
    assert "launching 2 processes: facegan train --family resnet" in ddp_train(cfg)
    state = ckpt.load(cfg.run)
    assert state["step"] == 2 and int(state["opt_d"]["state"][0]["step"]) == 4


def test_batch_must_split_evenly(dataset32, tmp_path, capsys, monkeypatch):
    """Checked before any process starts (the CLI), and by train() itself under an outside torchrun."""
    from facegan.config import ConfigError

    argv = ["train", "--nproc", "2", "--dataset", dataset32, "--run", str(tmp_path / "run"), "--ngf", "8",
            "--ndf", "8", "--batch-size", "7", "--steps", "2", "--device", "cpu"]
    assert main(argv) == 2
    assert "batch_size=7 must divide evenly over 2 processes" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; train() refuses before joining a group
    with pytest.raises(ConfigError, match="batch_size=7 must divide evenly over 2 processes"):
        fit(tiny_config(dataset32, str(tmp_path / "run"), batch_size=7), Hooks(log=lambda *_: None))
