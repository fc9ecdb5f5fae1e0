"""Refactors must not change results: every preset, trained at toy size from the same seed, ends
with the same weights and optimizer state as it did on dd87acf (the last commit before the
lifecycle was shared by the families). The digests below were recorded by running dd87acf's code
(`python tests/record_digests.py` on a CPU of a capability not yet listed: it trains each case with
dd87acf's CLI on a dataset dd87acf prepared, and today's code beside it).

The digest covers every tensor of every network, the optimizers' moments and steps, the image
pool and the torch RNG state at the end: a changed draw, rounding or update order shows. It
leaves out the optimizers' param_groups (hyper-parameters, not state) and the config document,
whose layout may grow. CPU float kernels differ between instruction sets, so the digests are
bound to the CPU capability they were recorded on (torch.backends.cpu.get_cpu_capability()).
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from facegan import attributes
from facegan import checkpoint as ckpt
from facegan.cli import main
from facegan.prepare import prepare
from facegan.synthetic import make_faces

# (command, preset, resolution, extra options) -> the run's final state digest on dd87acf
TOY = ["--steps", "6", "--ckpt-every", "3", "--log-every", "2", "--sample-count", "4", "--device", "cpu",
       "--seed", "11", "--ngf", "8", "--ndf", "8"]
CASES = {
    "udacity32": (["train"], 32, ["--batch-size", "8", "--z-dim", "16"]),
    "dcgan64": (["train"], 64, ["--batch-size", "4", "--z-dim", "16"]),
    "dcgan64-bf16-hinge": (["train"], 64, ["--batch-size", "4", "--z-dim", "16", "--precision", "bf16",
                                           "--loss", "hinge", "--label-smoothing", "0.9", "--ema-decay", "0.9"]),
    "dcgan64-plus": (["train"], 64, ["--batch-size", "4", "--z-dim", "16", "--metric-every", "0", "--r1-every", "2"]),
    "dcgan128": (["train"], 128, ["--batch-size", "2", "--z-dim", "16"]),
    "cyclegan64": (["translate", "train"], 32, ["--resolution", "32", "--batch-size", "2", "--pool-size", "4",
                                                "--blocks", "1", "--sample-count", "2"]),
}
PRESET = {"dcgan64-bf16-hinge": "dcgan64"}
CAPABILITY = torch.backends.cpu.get_cpu_capability()  # the key of DIGESTS this CPU's runs match
# (dd87acf spelled dcgan64-plus's "--metric-every 0" as "--fid-every 0": the same setting, renamed)
DIGESTS = {  # by CPU capability: CPU float kernels differ between them
    "AVX2": {
        "udacity32": "8bd918718c682662247b66904c9d136946344e67d1e91a8298f80de16692906c",
        "dcgan64": "c7db48670c12afc3aeafbf3a0b118084e56d6734824cef55acf23419f4ab7064",
        "dcgan64-bf16-hinge": "add49483c5b0c35266a76fedfcf6157b0c3778472da838da054d29e30952d7ea",
        "dcgan64-plus": "2c640168df38cfc492589b3ef7f5f2d3320fe3887a394ca52dc7dbd167c9cd80",
        "dcgan128": "2e34bb8f7699633c20e3a774d72f41540b390de2780bc48031a062838fbcb716",
        "cyclegan64": "392ffedb035fc608a05959fe319cec81567f8255de7ad6d2690d67e7ddb2a7d9",
    },
    "AVX512": {  # recorded on 2026-12-02 (tests/record_digests.py, a Xeon with AVX-512)
        "udacity32": "9197ff9435f3ecade05b7084e6064edf03110947cfbc0105d4238c492a2e7b6d",
        "dcgan64": "eb364a3a479d257daa4388fdf209d4772b68238ff5e22deafddcb2ed7b09d7a9",
        "dcgan64-bf16-hinge": "6302cf2152e5cf5b8bc60627e69027e245350c97d3057070fbc4829bd0d90df4",
        "dcgan64-plus": "723599ff07f5243be02b22537c87b6a26f1e05b4a916647ac87b0ea1d1ff5bb4",
        "dcgan128": "252784be468ea014cb3e6169d2c2b9b7abe816e83267a43ac66b8beda047dd9f",
        "cyclegan64": "9e42903f902d3a663d9b516e2ec82b2e5a2c121d5c472e0fcf03b3c00885d77b",
    },
}


def state_digest(state: dict) -> str:
    """sha256 of a checkpoint's tensors (networks, optimizer state, pool) and its torch RNG."""
    h = hashlib.sha256()

    def walk(prefix: str, value) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"{prefix}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, dict):
            for k in sorted(value, key=str):
                walk(f"{prefix}.{k}", value[k])
        elif isinstance(value, (int, float, bool)):
            h.update(f"{prefix}={value!r}".encode())

    # not trained state: tags, the config, when it was saved, how long it trained (`training`) and
    # the collapse watchdog's running signals (`watchdog`, kept since the digests were recorded)
    skip = {"format", "version", "family", "config", "dataset_id", "saved_at", "rng", "training", "watchdog"}
    for key in sorted(k for k in state if k not in skip):
        part = state[key]
        if isinstance(part, dict) and "param_groups" in part:  # an optimizer: its state, not its settings
            part = part["state"]
        walk(key, part)
    walk("rng.torch", state["rng"]["torch"])
    return h.hexdigest()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict:
    """16 labelled synthetic faces prepared at 32, 64 and 128 px."""
    raw = faces(tmp_path_factory.mktemp("eqraw"))
    table = str(raw.parent / attributes.TABLE_NAME)
    out = {}
    for res in (32, 64, 128):
        out[res] = str(tmp_path_factory.mktemp(f"eq{res}") / f"faces-{res}")
        prepare(raw, out[res], resolution=res, workers=1, attributes=table, log=lambda *_: None)
    return out


def train_digest(name: str, dataset: str, run: str) -> str:
    """Train case `name` through the CLI from scratch; the digest of its last checkpoint."""
    command, _, extra = CASES[name]
    argv = [*command, "--preset", PRESET.get(name, name), "--dataset", dataset, "--run", run, *TOY, *extra]
    assert main(argv) == 0
    return state_digest(ckpt.load(run))


@pytest.mark.skipif(CAPABILITY not in DIGESTS,
                    reason=f"the digests were recorded on {' and '.join(DIGESTS)} CPUs")
@pytest.mark.parametrize("name", list(CASES))
def test_toy_runs_end_with_dd87acfs_weights(name, datasets, tmp_path, capsys):
    digest = train_digest(name, datasets[CASES[name][1]], str(tmp_path / name))
    capsys.readouterr()
    assert digest == DIGESTS[CAPABILITY][name], f"{name}: the trained state changed ({digest})"


OLD = "dd87acf"  # the last commit whose run folders had no family written in config.json


@pytest.fixture(scope="module")
def old_datasets(tmp_path_factory) -> dict:
    """The same 16 labelled faces prepared by dd87acf's own code at 32 and 64 px: an old run is
    made on an old dataset (dd87acf refuses today's labelled ids, which cover the attribute names)."""
    tree = old_code(tmp_path_factory.mktemp("old-tree"))
    raw = faces(tmp_path_factory.mktemp("oldraw"))
    out = {}
    for res in (32, 64):
        out[res] = str(tmp_path_factory.mktemp(f"old{res}") / f"faces-{res}")
        done = old_cli(tree, "prepare", str(raw), out[res], "--resolution", str(res), "--workers", "1",
                       "--attributes", str(raw.parent / attributes.TABLE_NAME))
        assert done.returncode == 0, done.stderr[-2000:]
    return out


def faces(folder):
    """The 16 labelled synthetic faces every case trains on (img_align_celeba/ and its table)."""
    return make_faces(folder / "img_align_celeba", 16, seed=5, makeup=0.5)


def old_cli(tree: str, *argv: str):
    """dd87acf's `facegan` command (its package at `tree`, see `old_code`), run to its end."""
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "facegan.cli", *argv], cwd=tree,
                          env={**os.environ, "PYTHONPATH": tree}, capture_output=True, text=True)


def old_code(tmp_path) -> str:
    """dd87acf's facegan package, exported from git into tmp_path (skips in a clone without it)."""
    import subprocess

    from helpers import ROOT

    found = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{OLD}^{{commit}}"], capture_output=True)
    if found.returncode:
        pytest.skip(f"this clone does not hold {OLD}")
    tree = tmp_path / "old-code"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD, "facegan"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return str(tree)


# dd87acf's own entry points: the CLI's config, trained until a stop hook fires after step 3
STOP_AT_3 = """
import os, sys
from facegan import cli, config, train, translate
a = cli.build_parser().parse_args(sys.argv[1:])
cls, fit = (config.TranslateConfig, translate.train_translation) if a.command == "translate" else \\
    (config.TrainConfig, train.train)
cfg = train.config_for_run(a.dataset, a.run, a.preset, cli.given_options(a, cls), cls)
polls = iter(range(1, 100))
assert "family" not in cfg.to_dict() and train.__file__.startswith(os.getcwd())  # dd87acf's code
fit(cfg, train.Hooks(should_stop=lambda: next(polls) >= 3))
"""


@pytest.mark.parametrize("name", ["dcgan64", "cyclegan64"])
def test_a_run_written_by_dd87acf_resumes_bit_identically(name, old_datasets, tmp_path, capsys):
    """A run stopped half way by dd87acf's code resumes with today's code and ends where an
    uninterrupted run of today's code ends."""
    import os
    import subprocess
    import sys

    command, res, extra = CASES[name]
    old_run, new_run = str(tmp_path / "old"), str(tmp_path / "new")
    argv = [*command, "--preset", name, "--dataset", old_datasets[res], *TOY, *extra]
    tree = old_code(tmp_path)  # `python -c` puts its working folder first on sys.path
    env = {**os.environ, "PYTHONPATH": tree}
    done = subprocess.run([sys.executable, "-c", STOP_AT_3, *argv, "--run", old_run], env=env, cwd=tree,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ckpt.load(old_run)["step"] == 3
    assert main([*argv, "--run", old_run]) == 0  # today's code resumes the old run to step 6
    assert main([*argv, "--run", new_run]) == 0
    capsys.readouterr()
    assert state_digest(ckpt.load(old_run)) == state_digest(ckpt.load(new_run))


FID_OF_A_RANDOM_GENERATOR = """
import sys, torch
from facegan.config import ModelConfig
from facegan.models import Generator
{imports}
torch.manual_seed(0)
class On8Bits(torch.nn.Module):  # faces already on the 8-bit grid: today's rounding leaves them as they are
    def __init__(self, g):
        super().__init__()
        self.g, self.cfg = g, g.cfg  # dd87acf reads G.cfg.z_dim
    def forward(self, z):
        levels = self.g(z).float().clamp(-1, 1).add(1).div(2).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
        return levels.float().div(127.5).sub(1.0)
G = On8Bits(Generator(ModelConfig(resolution=32, z_dim=16, ngf=8, ndf=8))).eval()
tracker = FIDTracker.create(sys.argv[1], 12, sys.argv[2], "cpu", resize=75, log=lambda *_: None)
print(repr({score}))
"""


def test_fid_is_dd87acfs_to_the_last_bit(old_datasets, fid_weights, tmp_path):
    """The same weights and images give the same FID as dd87acf's facegan.metrics, bit for bit
    (each computes its own real statistics, from its own copy of the dataset). Today's facegan
    rounds generated images to 8 bits before scoring (as StyleGAN, torch-fidelity and torchmetrics
    do; dd87acf scored the floats), so the generator here makes faces already on that grid: the
    rounding is then the identity, and everything else must be as it was."""
    import shutil
    import subprocess
    import sys

    scores = []
    for tree, imports, score in (
        (old_code(tmp_path), "from facegan.metrics import FIDTracker", "tracker.score(G)"),
        (None, "from facegan.metrics.fid import FIDTracker\nfrom facegan.sample import noise_sampler",
         "tracker.score(noise_sampler(G, 16, tracker.device))"),
    ):
        ds = shutil.copytree(old_datasets[32], tmp_path / f"ds-{len(scores)}")
        code = FID_OF_A_RANDOM_GENERATOR.format(imports=imports, score=score)
        env = {**__import__("os").environ, **({"PYTHONPATH": tree} if tree else {})}
        done = subprocess.run([sys.executable, "-c", code, str(ds), fid_weights], cwd=tree, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        scores.append(float(done.stdout.strip().splitlines()[-1]))
    assert scores[0] == scores[1] and scores[0] > 0, scores
