"""Smoke check: every device-dependent path, through the real CLI and the library, one line each.

    python -m bench.smoke --device cuda        # accept a new GPU machine (README, "Running on a new GPU machine")
    python -m bench.smoke --device cpu         # what `make test` runs (tests/test_smoke.py), tiny sizes

Checks, in order (a check whose prerequisite failed is skipped with that reason):
  device        the device is here; "auto" and a bare "cuda" resolve to an indexed device (the H100 crash)
  snapshot      a checkpoint's copy to host memory is queued behind the step without waiting, and is
                the tensors as they were
  data          synthetic faces prepared at 32, 64 and 128 px; a randomly initialised FID Inception
                saved like the real weights file (name carries its sha256 prefix)
  PRESET train  `facegan train --preset PRESET` a few steps (FID during training for dcgan64-plus);
                the checkpoint's sample grid and loss curve are PNGs
  PRESET resume the same command with more steps resumes from latest.json
  PRESET fid    `facegan fid` of the run with the random Inception
  PRESET sample `facegan sample` of the run
  compile       `--compile` trains without falling back to eager
  resnet compile  the same for the ResNet family (CUDA only: ~2 min of compiling on a 2-core CPU)
  bf16, fp32    `--precision bf16|fp32` train in that precision
  sigterm       SIGTERM to a `facegan train` process: checkpoint at the stop step, exit 143, resume
  swap data     synthetic faces with and without makeup and their attribute table, prepared at 64
                and 128 px with the labels
  PRESET train  for cyclegan64 and cyclegan128: `facegan translate train --preset PRESET` stopped
                at a checkpoint step; resume: the same command resumes it; apply: `translate apply`
  swap score    `facegan score` of the cyclegan64 run (G_BA over the faces without makeup)
  swap bf16     an attribute swap trained under `--precision bf16`
  swap compile  an attribute swap trained with `--compile`, without falling back to eager
  gallery       the nightly gallery from the resulting runs, with the attribute swaps' sections
  finetune      a new run from the dcgan64 run's weights (--init-from) with --freeze-d 1
  export        `facegan export` of the dcgan64 run (safetensors, pt2, ONNX checked with ONNX Runtime,
                the card), then `facegan sample` of the export on the device, truncated
  swap export   the same for cyclegan64's two generators
  bench         bench.train_throughput, bench.data_throughput, bench.preset_speed and
                bench.cuda_graph_probe at toy sizes; on CUDA the probe's one-graph capture of the
                step must succeed and its replays must train
  ddp           `--nproc 2` when two GPUs are present (skipped otherwise, with the reason)

Sizes: "preset" trains each preset's real networks and batch (the default on CUDA); "tiny" narrows
them (ngf = ndf = 8, batch 8; the default on CPU). Prints PASS/FAIL/SKIP and seconds per check and
exits 1 when any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRESET_NAMES = ("udacity32", "dcgan64", "dcgan64-plus", "dcgan128", "resnet64", "resnet128")  # from noise
SWAP_PRESETS = ("cyclegan64", "cyclegan128")


class Skip(Exception):
    """A check that does not apply here; the message says why."""


@dataclass
class Check:
    name: str
    fn: Callable[[], None]
    needs: tuple[str, ...] = ()


@dataclass
class Outcome:
    name: str
    status: str  # PASS, FAIL, SKIP
    seconds: float
    detail: str = ""


def run_checks(checks: list[Check], out=None) -> list[Outcome]:
    """Run each check once, in order; print one line per check (to `out`, default stdout) as it ends."""
    out = out or sys.stdout
    done: dict[str, str] = {}
    outcomes = []
    for check in checks:
        t0 = time.perf_counter()
        failed = [n for n in check.needs if done.get(n) != "PASS"]
        if failed:
            status, detail = "SKIP", f"needs {', '.join(failed)}"
        else:
            try:
                check.fn()
                status, detail = "PASS", ""
            except Skip as exc:
                status, detail = "SKIP", str(exc)
            except Exception as exc:  # noqa: BLE001 - a failed check is reported, the rest still run
                status = "FAIL"
                detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                traceback.print_exc(file=sys.stderr)
        seconds = time.perf_counter() - t0
        done[check.name] = status
        outcomes.append(Outcome(check.name, status, seconds, detail))
        print(f"{status:4}  {check.name:22} {seconds:7.1f}s  {detail}".rstrip(), file=out, flush=True)
    return outcomes


def save_random_fid_weights(folder: Path, seed: int = 123) -> str:
    """A randomly initialised FID InceptionV3 saved like the real weights file: its name carries
    the first 8 hex digits of its sha256 (the real weights cannot be downloaded everywhere)."""
    import torch

    from facegan.metrics.fid import FIDInceptionV3

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FIDInceptionV3().net
        for m in net.modules():  # He init keeps the signal's scale through ~90 ReLU layers
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    data = buf.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"pt_inception-random-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    path.write_bytes(data)
    return str(path)


@dataclass
class Smoke:
    """The state the checks share: device, sizes, the work folder and what earlier checks made."""

    device: str
    tiny: bool
    work: Path
    steps: int = 2
    datasets: dict[int, str] = field(default_factory=dict)
    swap_datasets: dict[int, str] = field(default_factory=dict)  # with makeup labels
    weights: str = ""

    @property
    def metric_resize(self) -> int:
        """The FID protocol's 299 px Inception input, or 75 px at tiny sizes (the CPU run)."""
        return 75 if self.tiny else 299

    @property
    def store(self) -> str:
        return str(self.work / "store")

    def run_uri(self, name: str) -> str:
        return f"{self.store}/runs/{name}"

    def training_rows(self, name: str) -> list[dict]:
        """The training metric rows of run `name`."""
        from facegan import runfolder
        from facegan.storage import open_store

        return runfolder.read_metrics(open_store(self.run_uri(name)))[0]

    def cli(self, *args: str) -> str:
        """`facegan ARGS` in this process; returns its stdout, raises with its output on non-zero."""
        from facegan.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(args))
        if rc != 0:
            raise AssertionError(f"facegan {args[0]} exited {rc}: {(err.getvalue() or out.getvalue()).strip()[-300:]}")
        return out.getvalue()

    def size_args(self, preset: str = "udacity32") -> list[str]:
        """Tiny widths (8, or 16 where the family's model needs a multiple of 16) and batch 8."""
        from facegan import families
        from facegan.config import ConfigError

        if not self.tiny:
            return []
        try:
            families.of_preset(preset).config.model_class(ngf=8, ndf=8)
            width = "8"
        except ConfigError:
            width = "16"
        return ["--ngf", width, "--ndf", width, "--batch-size", "8"]

    def train_args(self, preset: str, run: str, steps: int, *extra: str) -> list[str]:
        from facegan import families
        from facegan.presets import preset as settings

        family = families.of_preset(preset)
        s = settings(preset, family.presets)
        args = ["train", "--family", family.name, "--preset", preset, "--dataset",
                self.datasets[s["model"]["resolution"]], "--run", self.run_uri(run), "--steps", str(steps),
                "--ckpt-every", str(self.steps), "--log-every", "1", "--sample-count", "4", "--device", self.device,
                *self.size_args(preset)]
        if s.get("metric_every"):
            args += ["--metric-every", str(self.steps), "--metric-samples", "16", "--metric-weights", self.weights,
                     "--metric-resize", str(self.metric_resize)]
        return [*args, *extra]

    def latest_step(self, run: str) -> int:
        from facegan import checkpoint as ckpt
        from facegan.storage import open_store

        pointer = ckpt.read_pointer(open_store(self.run_uri(run)))
        return pointer["step"] if pointer else 0

    # ------------------------------------------------------------------ the checks

    def data(self) -> None:
        from facegan.prepare import prepare
        from facegan.synthetic import make_faces

        raw = make_faces(self.work / "raw" / "img_align_celeba", 24, seed=3)
        for res in (32, 64, 128):
            uri = f"{self.store}/datasets/faces-{res}"
            prepare(raw, uri, resolution=res, workers=1, log=lambda *_: None)
            self.datasets[res] = uri
        self.weights = save_random_fid_weights(self.work / "fid")

    def device_resolution(self) -> None:
        """The requested device is here; on CUDA "auto" and a bare "cuda" become an indexed,
        current device (a bare one crashed `torch.cuda.set_device` on the H100)."""
        import torch

        from facegan.runtime import use_device

        device = use_device(self.device)  # a ConfigError when the machine lacks it
        if device.type == "cuda":
            for name in ("auto", "cuda"):
                got = use_device(name)
                assert got.type == "cuda" and got.index is not None, f"{name} -> {got}"
            device = use_device(self.device)
            assert torch.cuda.current_device() == device.index
            torch.ones(2, device=device).sum().item()  # a kernel runs there

    def train(self, preset: str) -> None:
        """The CLI's config for `facegan train --preset ...`, trained by the library and stopped
        (as a signal would) half way, at a checkpoint step."""
        self.train_stopped(self.train_args(preset, preset, 2 * self.steps), preset)
        self.check_pictures(preset, self.steps)

    def train_stopped(self, argv: list[str], run: str):
        """The config the CLI builds for `argv` (facegan.loop.config_for_run), trained by the
        library and stopped (as a signal would) half way, at a checkpoint step."""
        from facegan.cli import build_parser, family_in, given_options
        from facegan.loop import Hooks, config_for_run, fit

        a = build_parser(family_in(argv)).parse_args(argv)
        cfg = config_for_run(a.dataset, a.run, a.preset, given_options(a), a.family)
        logs: list[str] = []
        polls = iter(range(10**6))
        result = fit(cfg, Hooks(should_stop=lambda: next(polls) == self.steps - 1, log=logs.append))
        assert logs[0].startswith(f"device {self.expected_device()},"), f"trained on another device: {logs[0]}"
        assert result.stopped and result.step == self.steps == self.latest_step(run), result
        return result

    def check_pictures(self, run: str, step: int) -> None:
        """The checkpoint's sample grid and loss curve (drawn off the training thread) are PNGs."""
        from facegan import runfolder
        from facegan.storage import open_store

        folder = open_store(self.run_uri(run))
        for key in (runfolder.sample_key(step), runfolder.LOSS_PLOT):
            assert folder.get_bytes(key).startswith(b"\x89PNG\r\n\x1a\n"), f"{run}/{key} is not a PNG"

    def snapshot(self) -> None:
        """A checkpoint's host copy (`checkpoint.to_host`) is the tensors as they were at `save`:
        the training thread does not wait for the GPU, and the writer's `ready()` does."""
        import torch

        from facegan.checkpoint import Render, to_host

        device = self.expected_device()
        a = torch.randn(2048, 2048, device=device)

        def save(t: torch.Tensor):  # a state and a file rendered from a tensor, as the loops save them
            return to_host({"state": {"w": t}, "grid": Render(torch.Tensor.sum, t)})

        warm, ready = save(a[:4, :4].clone())  # the first pinned allocations wait for the GPU; later saves reuse them
        ready()
        del warm
        for _ in range(1 if device.type == "cpu" else 200):
            busy = a @ a  # queued work ahead of the copy
        live = busy[:4, :4].clone()
        host, ready = save(live)
        if device.type == "cuda":
            assert not torch.cuda.current_stream(device).query(), "to_host waited for the GPU"
        expected = live.to("cpu", copy=True)  # synchronous: after the copy was queued, before the change below
        live.zero_()  # a later step changes the live tensor
        ready()
        assert torch.equal(host["state"]["w"], expected) and host["state"]["w"].device.type == "cpu"
        assert torch.equal(host["grid"](), expected.sum()), "a Render's tensors were not copied with the state"

    def resume(self, preset: str) -> None:
        """`facegan train` with the same arguments resumes the stopped run and finishes it."""
        out = self.cli(*self.train_args(preset, preset, 2 * self.steps))
        assert f"resuming {self.run_uri(preset)} from step {self.steps}" in out, out[-300:]
        assert self.latest_step(preset) == 2 * self.steps
        if preset == "dcgan64-plus":  # FID during training picked a best checkpoint
            from facegan import checkpoint as ckpt
            from facegan.storage import open_store

            best = ckpt.read_pointer(open_store(self.run_uri(preset)), ckpt.BEST)
            assert best and best["metric"]["name"] == "fid" and math.isfinite(best["metric"]["value"]), best

    def fid(self, preset: str) -> None:
        from facegan import families
        from facegan.presets import preset as settings

        res = settings(preset, families.of_preset(preset).presets)["model"]["resolution"]
        self.score("fid", preset, self.datasets[res])

    def score(self, command: str, run: str, dataset: str) -> dict:
        """`facegan fid|score` of a run on the device: a finite score, the JSON line it printed."""
        out = self.cli(command, self.run_uri(run), "--dataset", dataset, "--samples", "16",
                       "--weights", self.weights, "--device", self.device, "--batch", "8",
                       "--resize", str(self.metric_resize))
        said = json.loads(out.strip().splitlines()[-1])
        assert math.isfinite(said["fid"]) and said["fid"] >= 0, said
        return said

    def sample(self, preset: str) -> None:
        out_dir = self.work / "samples" / preset
        self.cli("sample", self.run_uri(preset), str(out_dir), "--count", "4", "--device", self.device)
        assert sorted(p.name for p in (out_dir / "faces").iterdir()) == [f"{i:03d}.png" for i in range(4)]
        assert (out_dir / "grid.png").stat().st_size > 0 and (out_dir / "interpolation.png").stat().st_size > 0

    def finetune(self) -> None:
        """A new run on the device from the dcgan64 run's weights (--init-from), its D's first
        block frozen (--freeze-d 1); its config records where it started."""
        from facegan import checkpoint as ckpt

        out = self.cli(*self.train_args("dcgan64", "finetuned", self.steps, "--init-from", self.run_uri("dcgan64"),
                                        "--freeze-d", "1"))
        assert f"starts from {self.run_uri('dcgan64')}/checkpoints/" in out, out[-300:]
        assert self.latest_step("finetuned") == self.steps
        state = ckpt.load(self.run_uri("finetuned"))
        assert state["config"]["init_origin"]["step"] == 2 * self.steps, state["config"]["init_origin"]

    def export(self, run: str) -> None:
        """`facegan export` of a run trained on the device (safetensors, pt2, ONNX checked with
        ONNX Runtime, the card), and the export sampled back on the device, truncated."""
        out_dir = self.work / "exports" / run
        said = self.cli("export", self.run_uri(run), str(out_dir))
        assert "generator" in said and (out_dir / "model_card.json").exists(), said[-300:]
        card = json.loads((out_dir / "model_card.json").read_text())
        assert all(len(g["files"]) == 3 for g in card["generators"].values()), card["problems"]
        if next(iter(card["generators"].values()))["input"]["name"] == "z":  # a family drawing from noise
            faces = self.work / "samples" / f"{run}-export"
            self.cli("sample", str(out_dir), str(faces), "--count", "4", "--device", self.device, "--truncation", "0.7")
            assert (faces / "grid.png").stat().st_size > 0

    def compile(self, argv: list[str] | None = None) -> None:
        out = self.cli(*(argv or self.train_args("udacity32", "compiled", self.steps, "--compile")))
        assert "first step (torch.compile) took" in out, out[-300:]
        assert "torch.compile failed" not in out, re.search(r"torch.compile failed.*", out).group(0)

    def resnet_compile(self) -> None:
        """The ResNet family's step compiles (its spectral-norm D once fell back to eager)."""
        if self.expected_device().type != "cuda":
            raise Skip("CUDA only: inductor compiles the ResNet step in ~2 min on this 2-core CPU "
                       "(run by hand there, 2026-12-01: no fallback)")
        self.compile(self.train_args("resnet64", "resnet-compiled", self.steps, "--compile"))

    def precision(self, precision: str) -> None:
        out = self.cli(*self.train_args("udacity32", f"precision-{precision}", self.steps,
                                        "--precision", precision))
        said = "bf16 autocast" if precision == "bf16" else "fp32"
        assert f"device {self.expected_device()}, {said}" in out, out[:300]
        losses = self.training_rows(f"precision-{precision}")
        assert all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in losses), losses

    def sigterm(self) -> None:
        args = self.train_args("udacity32", "sigterm", 10**6)
        args[args.index("--ckpt-every") + 1] = "100000"  # the only checkpoint is the one SIGTERM makes
        proc = subprocess.Popen([sys.executable, "-m", "facegan.cli", *args], cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines = []
        try:
            for line in proc.stdout:  # wait until it trains (a progress line), then stop it
                lines.append(line)
                if re.match(r"step 3/", line):
                    proc.send_signal(signal.SIGTERM)
                    break
            rest, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        out = "".join(lines) + rest
        assert proc.returncode == 128 + signal.SIGTERM, f"exit {proc.returncode}: {out[-300:]}"
        stopped = int(re.search(r"stopping at step (\d+)", out).group(1))
        assert stopped >= 3 and self.latest_step("sigterm") == stopped, (stopped, self.latest_step("sigterm"))
        resumed = self.cli(*self.train_args("udacity32", "sigterm", stopped + 2))
        assert f"from step {stopped}" in resumed and self.latest_step("sigterm") == stopped + 2

    def swap_data(self) -> None:
        from facegan.attributes import TABLE_NAME
        from facegan.prepare import prepare
        from facegan.synthetic import make_faces

        raw = make_faces(self.work / "swap-raw" / "img_align_celeba", 24, seed=5, makeup=0.5)
        for res in (64, 128):
            uri = f"{self.store}/datasets/swap-{res}"
            prepare(raw, uri, resolution=res, workers=1, attributes=str(raw.parent / TABLE_NAME), log=lambda *_: None)
            self.swap_datasets[res] = uri

    def swap_args(self, preset: str, run: str, steps: int, *extra: str) -> list[str]:
        from facegan.presets import TRANSLATE_PRESETS
        from facegan.presets import preset as settings

        res = settings(preset, TRANSLATE_PRESETS)["model"]["resolution"]
        tiny = ["--ngf", "8", "--ndf", "8", "--blocks", "1", "--batch-size", "4"] if self.tiny else []
        return ["translate", "train", "--preset", preset, "--dataset", self.swap_datasets[res], "--run",
                self.run_uri(run), "--attribute", "Heavy_Makeup", "--steps", str(steps), "--ckpt-every",
                str(self.steps), "--log-every", "1", "--sample-count", "4", "--device", self.device, *tiny, *extra]

    def swap_train(self, preset: str) -> None:
        """The CLI's config for `facegan translate train --preset ...`, trained by the library and
        stopped half way at a checkpoint step."""
        self.train_stopped(self.swap_args(preset, preset, 2 * self.steps), preset)
        self.check_pictures(preset, self.steps)

    def swap_resume(self, preset: str) -> None:
        out = self.cli(*self.swap_args(preset, preset, 2 * self.steps))
        assert f"resuming {self.run_uri(preset)} from step {self.steps}" in out, out[-300:]
        assert self.latest_step(preset) == 2 * self.steps

    def swap_apply(self, preset: str) -> None:
        faces = self.work / "swap-raw" / "img_align_celeba"
        out_dir = self.work / "applied" / preset
        for direction in ("add", "remove"):
            self.cli("translate", "apply", self.run_uri(preset), str(faces), str(out_dir / direction),
                     "--direction", direction, "--device", self.device)
            assert len(list((out_dir / direction).glob("*.png"))) == 24, direction

    def swap_score(self) -> None:
        """`facegan score` of the cyclegan64 run: its G_BA over the dataset's faces without makeup."""
        assert self.score("score", SWAP_PRESETS[0], self.swap_datasets[64])["generator"] == "G_BA"

    def swap_bf16(self) -> None:
        out = self.cli(*self.swap_args("cyclegan64", "swap-bf16", self.steps, "--precision", "bf16"))
        assert f"device {self.expected_device()}, bf16 autocast" in out, out[:300]
        rows = self.training_rows("swap-bf16")
        assert rows and all(math.isfinite(r["loss_d"]) and math.isfinite(r["cycle"]) for r in rows), rows

    def gallery(self) -> None:
        from facegan.gallery import publish

        m = publish(self.store, dt.date(2026, 1, 1), run_name="dcgan64", fixed=4, fresh=4, device=self.device)
        assert m["step"] == 2 * self.steps and Path(m["index_uri"]).is_file(), m
        assert m["preset"] == "dcgan64" and f"preset {m['preset']}" in Path(m["index_uri"]).read_text()
        shown = sorted(t["name"] for t in m["translations"] if "rows" in t)
        assert shown == sorted([*SWAP_PRESETS, "swap-bf16", "swap-compiled"]), m["translations"]

    def bench(self) -> None:
        """The benchmarks at toy sizes on the device (their figures mean nothing here)."""
        from bench import cuda_graph_probe, data_throughput, preset_speed, train_throughput

        results = str(self.work / "bench-results")
        with contextlib.redirect_stdout(io.StringIO()):
            train_throughput.main(["--device", self.device, "--resolution", "32", "--batch", "8", "--ngf", "8",
                                   "--ndf", "8", "--images", "32", "--workers", "1", "--windows", "2",
                                   "--window-steps", "2", "--warmup", "2", "--ckpt-every", "2",
                                   "--results", results])
            data_throughput.main(["--device", self.device, "--raw", "16", "--count", "64", "--resolution", "32",
                                  "--results", results])
            preset_speed.main(["--device", self.device, "--presets", "udacity32,cyclegan64", "--steps", "2",
                               "--log-every", "1", "--images", "16", "--ngf", "8", "--ndf", "8", "--batch-size", "4",
                               "--results", results])
            cuda_graph_probe.main(["--device", self.device, "--cases", "dcgan64:fp32", "--measures", "eager,graph",
                                   "--images", "16", "--ngf", "8", "--ndf", "8", "--batch-size", "4", "--windows", "1",
                                   "--window-steps", "2", "--results", results])
        made = sorted(p.name.split("-")[0] for p in Path(results).iterdir())
        assert made == ["cuda_graph_probe", "data_throughput", "preset_speed", "train_throughput"], made
        # the step stays capturable as one CUDA graph (the probe catches a failed capture: it is asserted here)
        probe = json.loads(next(Path(results).glob("cuda_graph_probe-*.json")).read_text())["cases"][0]
        assert probe["eager"]["img_per_s"] > 0, probe
        if self.expected_device().type == "cuda":
            assert probe["graph"]["img_per_s"] > 0 and probe["graph"]["weights_changed"], probe["graph"]
        else:
            assert probe["graph"] == {"skipped": "needs CUDA"}, probe["graph"]

    def ddp(self) -> None:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if self.expected_device().type != "cuda" or gpus < 2:
            raise Skip(f"needs 2 GPUs, this machine has {gpus} (gloo DDP on CPU: tests/test_ddp.py)")
        out = subprocess.run([sys.executable, "-m", "facegan.cli", *self.train_args(
            "dcgan64", "ddp", self.steps, "--nproc", "2")], cwd=ROOT,
            capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, (out.stdout + out.stderr)[-500:]
        assert self.latest_step("ddp") == self.steps

    def expected_device(self):
        from facegan.runtime import resolve_device

        return resolve_device(self.device)

    def checks(self) -> list[Check]:
        """Every check, in the order they run."""
        out = [Check("device", self.device_resolution), Check("snapshot", self.snapshot, ("device",)),
               Check("data", self.data)]
        for p in PRESET_NAMES:
            out += [
                Check(f"{p} train", lambda p=p: self.train(p), ("data", "device")),
                Check(f"{p} resume", lambda p=p: self.resume(p), (f"{p} train",)),
                Check(f"{p} fid", lambda p=p: self.fid(p), (f"{p} train",)),
                Check(f"{p} sample", lambda p=p: self.sample(p), (f"{p} train",)),
            ]
        out += [
            Check("compile", self.compile, ("data", "device")),
            Check("resnet compile", self.resnet_compile, ("data", "device")),
            Check("bf16", lambda: self.precision("bf16"), ("data", "device")),
            Check("fp32", lambda: self.precision("fp32"), ("data", "device")),
            Check("sigterm", self.sigterm, ("data", "device")),
            Check("swap data", self.swap_data),
        ]
        for p in SWAP_PRESETS:
            out += [
                Check(f"{p} train", lambda p=p: self.swap_train(p), ("swap data", "device")),
                Check(f"{p} resume", lambda p=p: self.swap_resume(p), (f"{p} train",)),
                Check(f"{p} apply", lambda p=p: self.swap_apply(p), (f"{p} resume",)),
            ]
        out += [
            Check("swap score", self.swap_score, (f"{SWAP_PRESETS[0]} resume", "data")),
            Check("swap bf16", self.swap_bf16, ("swap data", "device")),
            Check("swap compile", lambda: self.compile(self.swap_args(SWAP_PRESETS[0], "swap-compiled", self.steps,
                                                                      "--compile")), ("swap data", "device")),
            Check("gallery", self.gallery, ("dcgan64 resume", *(f"{p} resume" for p in SWAP_PRESETS), "swap bf16",
                                            "swap compile")),
            Check("finetune", self.finetune, ("dcgan64 resume",)),
            Check("export", lambda: self.export("dcgan64"), ("dcgan64 resume",)),
            Check("swap export", lambda: self.export(SWAP_PRESETS[0]), (f"{SWAP_PRESETS[0]} resume",)),
            Check("bench", self.bench, ("device",)),
            Check("ddp", self.ddp, ("data", "device")),
        ]
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--size", choices=("auto", "tiny", "preset"), default="auto",
                   help="tiny networks, or each preset's own (auto: preset on CUDA, tiny on CPU)")
    p.add_argument("--work", default=None,
                   help="work folder, kept (default: a new temp folder, removed when every check passed)")
    p.add_argument("--only", default=None, help="run only checks whose name contains this text")
    a = p.parse_args(argv)

    from bench.common import machine

    tiny = a.size == "tiny" or (a.size == "auto" and not a.device.startswith("cuda"))
    work = Path(a.work or tempfile.mkdtemp(prefix="facegan-smoke-"))
    smoke = Smoke(a.device, tiny, work)
    print(f"facegan smoke: device {a.device}, {'tiny' if tiny else 'preset'} sizes, work {work}")
    print(f"machine: {json.dumps(machine())}", flush=True)
    checks = smoke.checks()
    if a.only:  # the shared set-up always runs
        checks = [c for c in checks if a.only in c.name or c.name in ("device", "data")]
    outcomes = run_checks(checks)
    failed = [o.name for o in outcomes if o.status == "FAIL"]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("PASS", "FAIL", "SKIP")}
    print(f"smoke: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped"
          f"{' (' + ', '.join(failed) + ')' if failed else ''} in {sum(o.seconds for o in outcomes):.0f}s")
    if a.work is None and not failed:  # each `make smoke` left ~100-200 MB of runs in the temp folder
        shutil.rmtree(work, ignore_errors=True)
    elif failed:
        print(f"smoke: work folder kept for a look: {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
