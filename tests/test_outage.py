"""A training run survives S3 outages of 6, 15 and 60 s: boto3 reaches moto's server through a
fault-injecting proxy (tests/fault_proxy.py) that cuts and refuses every connection meanwhile.
Training goes on, the checkpoint writer retries with backoff, latest.json only ever names a
complete checkpoint, and SIGTERM at the end still checkpoints and exits 143. The TensorBoard events
hold every training row once, those of the checkpoints dropped during the outage too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

from fault_proxy import FaultProxy
from helpers import ROOT, tiny_config, train_argv, wait_for

from facegan import checkpoint as ckpt
from facegan import runfolder, tensorboard
from facegan.storage import open_store

OUTAGES_S = (6, 15, 60)


def test_training_survives_s3_outages(dataset32, bucket, moto_endpoint, tmp_path):
    target = urlparse(moto_endpoint)
    proxy = FaultProxy((target.hostname, target.port))
    # a progress line every 5 steps: "stalled" means not 5 steps in 6 s, which a busy machine still
    # does (with a line every 20 steps the suite once failed here while other tests ran beside it)
    cfg = tiny_config(dataset32, f"{bucket}/runs/outage", steps=10**7, ckpt_every=20, log_every=5)
    cmd = [sys.executable, "-m", "facegan.cli", *train_argv(cfg)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AWS_ENDPOINT_URL_S3": proxy.endpoint}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    run = open_store(cfg.run)  # the test reads moto directly, not through the proxy

    def latest() -> int:
        pointer = ckpt.read_pointer(run)
        return pointer["step"] if pointer else 0

    def progress_steps() -> int:
        return sum(1 for line in list(lines) if line.startswith("step "))

    try:
        wait_for(lambda: latest() >= 20, proc=proc, timeout=180)
        for seconds in OUTAGES_S:
            before_ckpt, refused = latest(), proxy.refused
            # down until training feels it (its next checkpoint write: on a busy machine that can
            # come later than the shortest outage), then for `seconds` more
            proxy.outage(float("inf"))
            wait_for(lambda r=refused: proxy.refused > r, proc=proc, timeout=120)
            before_progress = progress_steps()
            proxy.outage(seconds)
            time.sleep(seconds)
            assert proc.poll() is None, f"training died in a {seconds} s outage:\n{''.join(lines)[-2000:]}"
            assert progress_steps() > before_progress, f"training stalled during the {seconds} s outage"
            assert ckpt.load_run(run)["step"] == latest()  # the pointer names a complete checkpoint
            wait_for(lambda b=before_ckpt: latest() > b, proc=proc, timeout=120)  # writes resume after it
        assert any("store unreachable, retrying" in line for line in lines)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        proxy.close()
    reader.join(timeout=10)
    out = "".join(lines)
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    state = ckpt.load_run(run)
    assert state["step"] == latest() and f"stopping at step {state['step']}" in out
    # checkpoints were dropped in the 60 s outage; their rows are in the next event file: each row once
    assert "replaced by step" in out
    from test_tensorboard import accumulate

    tensorboard.fetch(run, tmp_path / "tb")
    rows, _ = runfolder.read_metrics(run)
    assert [e.step for e in accumulate(tmp_path / "tb").Scalars("train/loss_d")] == [r["step"] for r in rows]
