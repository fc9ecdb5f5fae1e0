"""A real Prefect server (SQLite, loopback) for tests, and small helpers to drive it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrefectServer:
    """`prefect server start` under nohup in its own PREFECT_HOME; stopped by `stop()`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.home / "server.log", "wb")
        self.proc = subprocess.Popen(
            ["nohup", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited: {(self.home / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("prefect server did not become healthy")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)

    # --- REST helpers ------------------------------------------------------------------------
    def api(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def cli(self, *args: str, env: dict | None = None, timeout: float = 300, cwd=None) -> str:
        out = subprocess.run([str(BIN / "prefect"), *args], env={**self.env, **(env or {})},
                             capture_output=True, text=True, timeout=timeout, cwd=cwd)
        if out.returncode != 0:
            raise AssertionError(f"prefect {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout + out.stderr

    def wait_final(self, flow_run_id: str, timeout: float = 300) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            run = self.api("GET", f"/flow_runs/{flow_run_id}")
            if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
            time.sleep(1)
        raise AssertionError(f"flow run {flow_run_id} did not finish")

    def logs(self, flow_run_id: str) -> str:
        """Every log line of a flow run, oldest first (fetched 200 at a time: a training run with
        a progress line per step has more than one page)."""
        rows: list[dict] = []
        while True:
            page = self.api("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                                     "limit": 200, "offset": len(rows), "sort": "TIMESTAMP_ASC"})
            rows += page
            if len(page) < 200:
                return "\n".join(r["message"] for r in rows)

    def artifacts(self, flow_run_id: str) -> list[dict]:
        """Artifacts of a flow run, newest first."""
        return self.api("POST", "/artifacts/filter",
                        {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 50,
                         "sort": "CREATED_DESC"})
