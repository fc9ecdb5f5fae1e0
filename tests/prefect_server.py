"""A real Prefect server (SQLite, loopback) for tests, and small helpers to drive it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM a process started in its own session and everything it started; SIGKILL after 20 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


class PrefectServer:
    """`prefect server start` under nohup in its own PREFECT_HOME; stopped by `stop()`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.ui = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true",  # costs no start-up time measured here; reports are opened in it
            "PREFECT_UI_API_URL": self.url,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300.0) -> None:
        self.launch()
        self.wait_healthy(timeout)

    def launch(self) -> None:
        """Start the server process and return at once (see `wait_healthy`)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "server.log", "wb") as log:
            self.proc = subprocess.Popen(
                ["nohup", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def wait_healthy(self, timeout: float = 300.0) -> None:
        """Poll /api/health until the launched server answers (generous: a busy 2-core machine is slow)."""
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
        if self.proc:
            stop_group(self.proc)

    @contextmanager
    def worker(self, pool: str, kind: str, env: dict, log: Path) -> Iterator[subprocess.Popen]:
        """`prefect worker start` for the whole block, as users run one (polling every second instead of
        Prefect's default 10 s), its output in `log`; stopped at the end.

        It starts with SIGINT at its default, as a shell or systemd starts it: Prefect's worker turns
        SIGTERM into SIGINT to stop, and a process started in the background without job control
        (`pytest ... &` in a script, as CI may) inherits SIGINT ignored, so the worker kept polling
        until `stop_group`'s SIGKILL 20 s later, in every suite run started that way."""
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", kind],
                env={**self.env, **env, "PREFECT_WORKER_QUERY_SECONDS": "1"}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        try:
            yield proc
        finally:
            stop_group(proc)

    # --- REST helpers ------------------------------------------------------------------------
    def api(self, method: str, path: str, body: dict | None = None, attempts: int = 5):
        """One REST call; a 503 (the server's answer to a retryable error, e.g. SQLite busy) is
        retried after a short wait, as Prefect's own client does."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(1, attempts + 1):
            req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return json.loads(r.read() or b"null")
            except urllib.error.HTTPError as e:
                if e.code != 503 or attempt == attempts:
                    raise
                time.sleep(0.5 * attempt)

    def run_deployment(self, name: str, parameters: dict, job_variables: dict | None = None) -> str:
        """A flow run of deployment `name` ("flow/deployment"), scheduled now; returns its id. The
        request `prefect deployment run` makes (its client's create_flow_run_from_deployment),
        without starting a CLI process (~5 s each on a 2-core machine)."""
        import datetime as dt

        deployment = self.api("GET", f"/deployments/name/{name}")
        now = dt.datetime.now(dt.UTC).isoformat()
        run = self.api("POST", f"/deployments/{deployment['id']}/create_flow_run", {
            "parameters": parameters, "job_variables": job_variables or {},
            "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": now}}})
        return run["id"]

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
            time.sleep(0.5)
        raise AssertionError(f"flow run {flow_run_id} did not finish")

    def wait_logs_complete(self, flow_run_id: str, timeout: float = 120) -> None:
        """Wait for a completed flow run's own last line, "Finished in state ...": the run's process
        sends its logs in batches, the last ones after the run's state is already final."""
        end = time.monotonic() + timeout
        query = {"logs": {"flow_run_id": {"any_": [flow_run_id]}, "task_run_id": {"is_null_": True}},
                 "limit": 200, "sort": "TIMESTAMP_DESC"}
        while time.monotonic() < end:
            if any(r["message"].startswith("Finished in state") for r in self.api("POST", "/logs/filter", query)):
                return
            time.sleep(0.5)
        raise AssertionError(f"flow run {flow_run_id}: its last log lines did not arrive")

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
