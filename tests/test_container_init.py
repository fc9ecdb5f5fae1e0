"""docker/init.py, the image's PID 1, run here as a plain process: command routing, and SIGTERM
reaching a process in another session (as Prefect's flow-run engine is) while a Prefect
supervisor-like parent ignores it. tests/image_check.py runs it for real in the image."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time

from helpers import ROOT, wait_for

spec = importlib.util.spec_from_file_location("facegan_init", ROOT / "docker" / "init.py")
init = importlib.util.module_from_spec(spec)
spec.loader.exec_module(init)


def test_routing():
    assert init.command([]) == ["facegan", "--help"]
    assert init.command(["--help"]) == ["facegan", "--help"]
    import argparse

    from facegan.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert init.FACEGAN_COMMANDS == set(commands.choices)  # every CLI command, e.g. `IMAGE translate apply`
    for sub in init.FACEGAN_COMMANDS:
        assert init.command([sub, "x"]) == ["facegan", sub, "x"]
    assert init.command(["prefect", "flow-run", "execute"]) == ["prefect", "flow-run", "execute"]
    worker = ["prefect", "worker", "start", "--pool", "facegan-ecs", "--type", "ecs"]  # the ECS worker service
    assert init.command(worker) == worker and not init.is_prefect_supervisor(worker)
    assert init.is_prefect_supervisor(["prefect", "flow-run", "execute"])
    assert init.is_prefect_supervisor(["/opt/venv/bin/prefect", "flow-run", "execute", "--id", "x"])
    assert not init.is_prefect_supervisor(["facegan", "train"])


# A stand-in for `prefect flow-run execute`: it starts a worker in a new session (as Prefect starts
# the flow-run engine) that writes a file when SIGTERM reaches it, then waits for the worker.
SUPERVISOR = r"""
import subprocess, sys
worker = subprocess.Popen([sys.executable, "-c", '''
import signal, sys, time
def stop(*_):
    open(sys.argv[1], "w").write("checkpointed")
    sys.exit(15)
signal.signal(signal.SIGTERM, stop)
open(sys.argv[1] + ".ready", "w").close()
time.sleep(120)
''', sys.argv[-1]], start_new_session=True)
sys.exit(worker.wait())
"""


def test_sigterm_reaches_a_process_in_another_session_and_the_supervisor_outlives_it(tmp_path):
    marker = tmp_path / "stopped"
    # argv looks like Prefect's supervisor, so init starts it with SIGTERM ignored
    script = tmp_path / "prefect"
    script.write_text(f"#!{sys.executable}\n{SUPERVISOR}")
    script.chmod(0o755)
    proc = subprocess.Popen([sys.executable, str(ROOT / "docker" / "init.py"), str(script), "flow-run", "execute",
                             str(marker)], stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (tmp_path / "stopped.ready").exists(), proc=proc, timeout=60)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # what `docker stop` does to PID 1
    assert proc.wait(timeout=60) == 15  # the worker's exit status, passed on by the supervisor and init
    assert marker.read_text() == "checkpointed"


def test_exit_status_and_a_missing_command(tmp_path):
    ok = subprocess.run([sys.executable, str(ROOT / "docker" / "init.py"), "sh", "-c", "exit 3"])
    assert ok.returncode == 3
    missing = subprocess.run([sys.executable, str(ROOT / "docker" / "init.py"), "no-such-command"],
                             capture_output=True, text=True)
    assert missing.returncode == 127 and "facegan-init: cannot run 'no-such-command'" in missing.stderr
