"""`python -m bench.smoke --device cpu`: the device smoke check runs green on the CPU at tiny
sizes (on a GPU machine the same command with `--device cuda` accepts the machine)."""

import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from helpers import ROOT

from bench.smoke import PRESET_NAMES, SWAP_PRESETS, Check, Skip, run_checks


def test_smoke_check_passes_on_cpu():
    out = subprocess.run([sys.executable, "-m", "bench.smoke", "--device", "cpu"], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    work = Path(re.search(r"^facegan smoke: .*, work (\S+)$", out.stdout, re.M).group(1))
    assert work.name.startswith("facegan-smoke-") and not work.exists()  # all passed: its temp folder is gone
    status = {name: st for st, name in re.findall(r"^(PASS|FAIL|SKIP)\s+(.+?)\s+\d+\.\d+s", out.stdout, re.M)}
    expected = ["data", "device", "snapshot",
                *[f"{p} {c}" for p in PRESET_NAMES for c in ("train", "resume", "fid", "sample")],
                "compile", "bf16", "fp32", "sigterm", "swap data",
                *[f"{p} {c}" for p in SWAP_PRESETS for c in ("train", "resume", "apply")], "swap score", "swap bf16",
                "swap compile",
                "gallery",
                "bench"]
    assert {n: status.get(n) for n in expected} == dict.fromkeys(expected, "PASS"), out.stdout
    assert status["ddp"] == "SKIP" and "needs 2 GPUs" in out.stdout  # one GPU-count-only check, said why
    assert status["resnet compile"] == "SKIP" and "CUDA only" in out.stdout  # and one CUDA-only one
    assert "0 failed" in out.stdout


def test_smoke_runner_reports_fail_and_skips_what_depends_on_it():
    def boom():
        raise RuntimeError("kaput\nsecond line")

    def not_here():
        raise Skip("needs 2 GPUs")

    buf = io.StringIO()
    outcomes = run_checks([Check("a", lambda: None), Check("b", boom), Check("c", lambda: None, ("b",)),
                           Check("d", not_here)], out=buf)
    assert [(o.name, o.status) for o in outcomes] == [("a", "PASS"), ("b", "FAIL"), ("c", "SKIP"), ("d", "SKIP")]
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4 and lines[1].startswith("FAIL  b") and lines[1].endswith("RuntimeError: kaput")
    assert lines[2].endswith("needs b") and lines[3].endswith("needs 2 GPUs")


def test_smoke_fails_when_the_device_is_missing(tmp_path, capsys, monkeypatch):
    """On a machine without a GPU, `--device cuda` must fail (exit 1), never pass by running on the CPU;
    its temp work folder is kept for a look."""
    import torch

    from bench.smoke import main

    if torch.cuda.is_available():
        return  # a GPU machine runs the real thing instead
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["--device", "cuda", "--only", "dcgan64 train"]) == 1
    out = capsys.readouterr().out
    kept = re.search(r"^smoke: work folder kept for a look: (\S+)$", out, re.M)
    assert kept and Path(kept.group(1)).parent == tmp_path and Path(kept.group(1)).is_dir(), out
    assert re.search(r"^FAIL  device .*CUDA is not available", out, re.M), out
    assert re.search(r"^SKIP  dcgan64 train .*needs device", out, re.M), out


def test_a_benchmarks_work_folder_is_removed_when_it_ends_unless_kept():
    """bench.common.work_folder: repeated benchmarks (`make bench`, the smoke's `bench`) leave no faces,
    datasets or runs behind in the temp folder."""
    code = ("from bench.common import work_folder\n"
            "for keep in (False, True):\n"
            "    folder = work_folder('facegan-test-bench-', keep=keep)\n"
            "    (folder / 'runs').mkdir()\n"
            "    (folder / 'runs' / 'x.pt').write_bytes(b'x')\n"
            "    print(folder)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    removed, kept = (Path(line) for line in out.stdout.split())
    assert not removed.exists() and (kept / "runs" / "x.pt").is_file()
    shutil.rmtree(kept)
