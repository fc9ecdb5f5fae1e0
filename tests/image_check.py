"""`make image-check`: build the facegan image and prove it works the way the product runs it.

    python tests/image_check.py [--keep] [--skip-build]

1. Engine: Docker when a Docker engine answers, else podman (Debian's; `make image-check`
   installs it). Base image: the Dockerfile's pinned one when it can be pulled, else a stand-in
   built here: `debootstrap --variant=minbase bookworm` + python3, imported as an image (cached
   in .cache/image-check/). The host's CA bundle is mounted into the build for pip, and nothing of
   it stays in the image. The deps stage is tagged (its 6 GB venv is the cache); before and after
   the build, what earlier checks left is removed (`remove_stale`): a few checks' old images once
   filled CI's disk.
2. Checks, each a PASS/FAIL line, as the image's user (uid 1000) on a mounted store folder:
   help and routing; synth -> prepare -> train -> sample -> fid in the container; a SIGTERM
   through `docker stop` mid-training (checkpoint at the stop step, exit 143, clean resume); the
   same through a real Prefect server and `prefect worker start --type docker` running the
   train-dcgan deployment (the run ends Failed with TrainingInterrupted and its checkpoint, a new
   run of the deployment resumes from it); then the one-box host's daily container prune (from
   infra/facegan.yaml) on the containers those runs left.
Exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from prefect_server import PrefectServer  # noqa: E402

from bench.smoke import Check, run_checks, save_random_fid_weights  # noqa: E402

IMAGE = "facegan:check"
DEPS_IMAGE = "facegan:check-deps"  # the Dockerfile's deps stage, tagged so its 6 GB venv stays cached
CHECK_POOL = "check-docker"  # the Prefect work pool of the worker check
STANDIN = "localhost/facegan-standin-python:3.11-bookworm"
CACHE = ROOT / ".cache" / "image-check"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# what the stand-in base adds to minbase, as the official python:3.11-slim-bookworm has it
STANDIN_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates", "passwd")
STANDIN_FILES = ("usr/bin/python3", "usr/sbin/useradd")
STANDIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the official image's PATH
TRAIN = ["--resolution", "32", "--ngf", "8", "--ndf", "8", "--z-dim", "16", "--batch-size", "8",
         "--device", "cpu"]


def sh(*cmd: str, check: bool = True, timeout: float = 3600, env: dict | None = None, quiet: bool = False,
       **kw) -> subprocess.CompletedProcess:
    if not quiet:
        print("+", " ".join(cmd), flush=True)
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})}, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[:4])} ... exited {out.returncode}:\n{(out.stdout + out.stderr)[-3000:]}")
    return out


def engine() -> str:
    """`docker` when an engine answers, else `podman`."""
    if shutil.which("docker") and sh("docker", "info", check=False, quiet=True).returncode == 0:
        return "docker"
    if not shutil.which("podman"):
        raise SystemExit("image-check: neither a Docker engine nor podman is here (make image-check installs podman)")
    return "podman"


def base_image(eng: str) -> str | None:
    """None when the Dockerfile's pinned base can be pulled; else the stand-in's name (built once)."""
    pinned = re.search(r"^ARG PYTHON_IMAGE=(\S+)", (ROOT / "Dockerfile").read_text(), re.M).group(1)
    if sh(eng, "image", "exists" if eng == "podman" else "inspect", pinned, check=False, quiet=True).returncode == 0:
        return None
    if sh(eng, "pull", pinned, check=False, timeout=600).returncode == 0:
        return None
    if sh(eng, "image", "exists" if eng == "podman" else "inspect", STANDIN, check=False, quiet=True).returncode == 0:
        return STANDIN
    print(f"image-check: {pinned} cannot be pulled here; building a stand-in base with debootstrap", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    rootfs = CACHE / "rootfs"
    if not all((rootfs / p).exists() for p in STANDIN_FILES):
        shutil.rmtree(rootfs, ignore_errors=True)
        sh("debootstrap", "--variant=minbase", f"--include={','.join(STANDIN_PACKAGES)}", "bookworm", str(rootfs),
           "http://deb.debian.org/debian", timeout=1800)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    sh(eng, "import", "--change", f"ENV PATH={STANDIN_PATH}", "-", STANDIN, stdin=tar.stdout)
    tar.wait()
    return STANDIN


def remove_stale(eng: str) -> None:
    """Remove what earlier checks left: the worker check's exited containers, and the images built
    from this Dockerfile that no tag holds any more (each old runtime image holds its own 6 GB copy
    of the venv; left there, a few checks fill the disk and the next build fails)."""
    remove_worker_containers(eng)
    removed = 1
    while removed:  # removing a leaf can leave its parent dangling
        removed = 0
        for iid in sh(eng, "images", "-q", "--no-trunc", "--filter", "dangling=true", quiet=True).stdout.split():
            steps = sh(eng, "history", "--no-trunc", "--format", "{{.CreatedBy}}", iid, check=False, quiet=True).stdout
            if ("facegan" in steps or "constraints.txt" in steps) and sh(eng, "rmi", iid, check=False,
                                                                        quiet=True).returncode == 0:
                removed += 1
    free = shutil.disk_usage(storage_root(eng)).free / 2**30
    print(f"image-check: {free:.0f} GiB free for images", flush=True)


def remove_worker_containers(eng: str) -> None:
    """The containers the worker check's flow runs left (its job keeps them for their logs)."""
    for cid in sh(eng, "ps", "-a", "-q", "--filter", f"label=io.prefect.work-pool-name={CHECK_POOL}",
                  quiet=True).stdout.split():
        sh(eng, "rm", "-f", cid, check=False, quiet=True)


def one_box_prune_script(pool: str) -> str:
    """The prune script of the one-box worker host's user data (infra/facegan.yaml), for `pool`,
    as CloudFormation's Fn::Sub writes it."""
    import yaml

    template = yaml.safe_load((ROOT / "infra" / "facegan.yaml").read_text())
    user_data = template["Resources"]["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]
    script = re.search(r"<<'PRUNE'\n(.*?)\nPRUNE\n", user_data["Fn::Base64"]["Fn::Sub"], re.S).group(1)
    return script.replace("${WorkPoolName}", pool).replace("${!", "${")


def storage_root(eng: str) -> str:
    """Where the engine keeps its images."""
    fmt = "{{.Store.GraphRoot}}" if eng == "podman" else "{{.DockerRootDir}}"
    root = sh(eng, "info", "--format", fmt, check=False, quiet=True).stdout.strip()
    return root if root and Path(root).exists() else "/"


def build(eng: str) -> None:
    base = base_image(eng)
    args = [eng, "build"]
    if base:
        args += ["--build-arg", f"PYTHON_IMAGE={base}"]
    if Path(CA_BUNDLE).is_file() and eng == "podman":  # pip behind a TLS-inspecting proxy: the host's CAs
        args += ["--volume", f"{CA_BUNDLE}:/etc/ssl/certs/host-ca.crt:ro", "--build-arg",
                 "PIP_CERT=/etc/ssl/certs/host-ca.crt"]
    started = time.monotonic()
    sh(*args, "--target", "deps", "-t", DEPS_IMAGE, str(ROOT), timeout=3600)
    remove_stale(eng)
    sh(*args, "-t", IMAGE, str(ROOT), timeout=3600)
    remove_stale(eng)  # the image this build replaced
    print(f"image-check: built {IMAGE} in {time.monotonic() - started:.0f} s", flush=True)


class ImageChecks:
    def __init__(self, eng: str, work: Path) -> None:
        self.eng = eng
        self.work = work
        self.store = work / "store"
        self.store.mkdir(parents=True, exist_ok=True)
        self.store.chmod(0o777)  # a host folder the image's user (uid 1000) may write

    def run(self, *args: str, name: str | None = None, detach: bool = False, check: bool = True,
            timeout: float = 900) -> subprocess.CompletedProcess:
        opts = ["--name", name] if name else []
        opts += ["-d"] if detach else ["--rm"]
        return sh(self.eng, "run", *opts, "-v", f"{self.store}:/store", IMAGE, *args, check=check, timeout=timeout)

    def latest(self, run: str) -> int:
        p = self.store / "runs" / run / "latest.json"
        return json.loads(p.read_text())["step"] if p.is_file() else 0

    # ---------------------------------------------------------------- the checks

    def help_and_routing(self) -> None:
        assert "usage: facegan" in self.run("--help").stdout  # a leading option goes to the CLI
        assert "usage: facegan score" in self.run("score", "--help").stdout  # every subcommand routes
        assert self.run("id", "-u").stdout.strip() == "1000"  # anything else runs as given, as uid 1000
        missing = self.run("no-such-command", check=False)
        assert missing.returncode == 127 and "facegan-init: cannot run 'no-such-command'" in missing.stderr, missing

    def cli_pipeline(self) -> None:
        weights = save_random_fid_weights(self.store / "fid")
        self.run("synth", "/store/raw", "--count", "48")
        self.run("prepare", "/store/raw", "/store/datasets/faces-32", "--resolution", "32")
        self.run("train", "--dataset", "/store/datasets/faces-32", "--run", "/store/runs/cli", "--steps", "4",
                 "--ckpt-every", "2", "--log-every", "2", *TRAIN)
        assert self.latest("cli") == 4
        self.run("train", "--family", "resnet", "--preset", "resnet32-small", "--dataset", "/store/datasets/faces-32",
                 "--run", "/store/runs/resnet", "--steps", "2", "--ckpt-every", "2", "--log-every", "1",
                 "--ngf", "16", "--ndf", "16", "--batch-size", "8", "--device", "cpu")  # the third family too
        assert self.latest("resnet") == 2
        self.run("sample", "/store/runs/cli", "/store/samples", "--count", "4", "--device", "cpu")
        assert len(list((self.store / "samples" / "faces").glob("*.png"))) == 4
        out = self.run("fid", "/store/runs/cli", "--dataset", "/store/datasets/faces-32", "--samples", "8",
                       "--weights", f"/store/fid/{Path(weights).name}", "--device", "cpu", "--resize", "75").stdout
        assert json.loads(out.strip().splitlines()[-1])["fid"] >= 0
        ckpt = next((self.store / "runs" / "cli" / "checkpoints").iterdir())
        st = ckpt.stat()
        assert st.st_uid == 1000 and st.st_mode & 0o044 == 0o044, (st.st_uid, oct(st.st_mode))  # readable by others

    def docker_stop(self) -> None:
        name = f"facegan-check-stop-{os.getpid()}"
        self.run("train", "--dataset", "/store/datasets/faces-32", "--run", "/store/runs/stop", "--steps", "1000000",
                 "--ckpt-every", "1000000", "--log-every", "1", *TRAIN, name=name, detach=True)
        try:
            deadline = time.monotonic() + 300
            while "step 3/" not in sh(self.eng, "logs", name, quiet=True).stdout:
                assert time.monotonic() < deadline, "training did not start in the container"
                time.sleep(1)
            started = time.monotonic()
            sh(self.eng, "stop", "-t", "60", name)
            stop_s = time.monotonic() - started
            code = int(sh(self.eng, "inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip())
            logs = sh(self.eng, "logs", name, quiet=True)
            out = logs.stdout + logs.stderr
        finally:
            sh(self.eng, "rm", "-f", name, check=False, quiet=True)
        assert code == 143, f"exit {code}:\n{out[-1500:]}"
        stopped = int(re.search(r"stopping at step (\d+)", out).group(1))
        assert self.latest("stop") == stopped, (self.latest("stop"), stopped)
        print(f"image-check: docker stop -> checkpoint at step {stopped}, exit 143 after {stop_s:.1f} s", flush=True)
        resumed = self.run("train", "--dataset", "/store/datasets/faces-32", "--run", "/store/runs/stop",
                           "--steps", str(stopped + 2), "--ckpt-every", "1000000", "--log-every", "1", *TRAIN).stdout
        assert f"from step {stopped}" in resumed and self.latest("stop") == stopped + 2

    def prefect_worker_stop(self) -> None:
        """A spot stop through the Prefect Docker worker: `docker stop` on the flow run's container."""
        import yaml

        server = PrefectServer(self.work / "prefect")
        server.start()
        socket_env = {}
        service = None
        if self.eng == "podman":  # the worker talks to podman's Docker-compatible API
            sock = self.work / "podman.sock"
            service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"])
            socket_env = {"DOCKER_HOST": f"unix://{sock}"}
            deadline = time.monotonic() + 60
            while not sock.exists():
                assert time.monotonic() < deadline, "podman system service did not start"
                time.sleep(0.2)
        env = {**server.env, **socket_env, "FACEGAN_STORE": "/store", "FACEGAN_IMAGE": IMAGE,
               "FACEGAN_POOL": CHECK_POOL, "FACEGAN_TZ": "UTC"}
        try:
            server.cli("work-pool", "create", CHECK_POOL, "--type", "docker", "--overwrite", env=env)
            spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
            spec.pop("definitions", None)
            job = {"image": IMAGE, "image_pull_policy": "Never", "network_mode": "host", "auto_remove": False,
                   "volumes": [f"{self.store}:/store"],
                   "env": {"FACEGAN_STORE": "/store", "PREFECT_API_URL": server.url, "PYTHONUNBUFFERED": "1"}}
            spec["deployments"] = [d for d in spec["deployments"] if d["name"] == "train-dcgan"]
            spec["deployments"][0]["work_pool"] = {"name": CHECK_POOL, "job_variables": job}
            path = self.work / "prefect.yaml"
            path.write_text(yaml.safe_dump(spec, sort_keys=False))
            server.cli("--no-prompt", "deploy", "--all", "--prefect-file", str(path), env=env, cwd=ROOT)
            params = {"dataset_uri": "/store/datasets/faces-32", "run_name": "worker", "resolution": 32,
                      "steps": 1000000, "batch_size": 8, "ngf": 8, "ndf": 8, "z_dim": 16, "ckpt_every": 1000000,
                      "log_every": 1, "device": "cpu"}
            out = server.cli("deployment", "run", "train-dcgan/train-dcgan", "--params", json.dumps(params), env=env)
            run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
            worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", CHECK_POOL,
                                       "--type", "docker", "--run-once"], env={**os.environ, **env},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                container = self._wait_training_container(run_id)
                sh(self.eng, "stop", "-t", "60", container)
                worker.wait(timeout=300)
            finally:
                if worker.poll() is None:
                    worker.kill()
            run = server.wait_final(run_id)
            logs = server.logs(run_id)
            state = run["state"]
            assert state["type"] == "FAILED", f"{state['type']}: {state.get('message')}\n{logs[-2000:]}"
            assert "TrainingInterrupted" in run["state"]["message"], run["state"]["message"]
            stopped = int(re.search(r"stopping at step (\d+)", logs).group(1))
            assert self.latest("worker") == stopped
            print(f"image-check: Prefect Docker worker + docker stop -> Failed ({run['state']['message']})", flush=True)
            # the next run of the deployment (what the README tells users to do) resumes there
            params["steps"] = stopped + 2
            out = server.cli("deployment", "run", "train-dcgan/train-dcgan", "--params", json.dumps(params), env=env)
            run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
            server.cli("worker", "start", "--pool", CHECK_POOL, "--type", "docker", "--run-once", env=env,
                       timeout=900)
            run = server.wait_final(run_id)
            logs = server.logs(run_id)
            assert run["state"]["type"] == "COMPLETED", f"{run['state']}\n{logs[-2000:]}"
            assert f"from step {stopped}" in logs and self.latest("worker") == stopped + 2
            self.one_box_prune({**env, **socket_env})
        finally:
            remove_worker_containers(self.eng)
            server.stop()
            if service:
                service.terminate()
                service.wait()

    def one_box_prune(self, env: dict) -> None:
        """The one-box host's daily prune (infra/facegan.yaml) on the exited containers the two
        flow runs left: those younger than its age limit stay, older ones go (age 0 here)."""
        left = lambda: sh(self.eng, "ps", "-a", "-q", "--filter",  # noqa: E731
                          f"label=io.prefect.work-pool-name={CHECK_POOL}", quiet=True).stdout.split()
        assert len(left()) == 2, f"the two flow runs left {len(left())} containers"
        script = self.work / "facegan-prune"
        script.write_text(one_box_prune_script(CHECK_POOL))
        shim = self.work / "engine-shim"  # the script calls `docker`: on podman, podman's own CLI
        shim.mkdir(exist_ok=True)
        if self.eng != "docker":
            (shim / "docker").write_text(f'#!/bin/sh\nexec {shutil.which(self.eng)} "$@"\n')
            (shim / "docker").chmod(0o755)
        path = {"PATH": f"{shim}:{os.environ['PATH']}"}
        subprocess.run(["bash", str(script)], env={**os.environ, **env, **path}, check=True, timeout=120)
        assert len(left()) == 2, "the prune removed containers younger than its age limit"
        subprocess.run(["bash", str(script)], env={**os.environ, **env, **path, "FACEGAN_PRUNE_AFTER": "0s"},
                       check=True, timeout=120)
        assert left() == [], f"the prune left {left()}"
        print("image-check: the one-box prune keeps recent flow-run containers and removes older ones", flush=True)

    def _wait_training_container(self, run_id: str) -> str:
        """The flow run's container, once its training has written progress lines."""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            names = sh(self.eng, "ps", "--format", "{{.Names}}", quiet=True).stdout.split()
            for name in names:
                logs = sh(self.eng, "logs", name, check=False, quiet=True)
                if "step 3/" in logs.stdout + logs.stderr:  # Prefect's log lines go to stderr
                    return name
            time.sleep(2)
        raise AssertionError(f"no training container for flow run {run_id}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-build", action="store_true", help=f"use the {IMAGE} image already built")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    a = p.parse_args()
    eng = engine()
    print(f"image-check: engine {eng}", flush=True)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="facegan-image-check-"))
    work.chmod(0o755)
    checks = ImageChecks(eng, work)
    steps = [] if a.skip_build else [Check("build", lambda: build(eng))]
    steps += [
        Check("help and routing", checks.help_and_routing, ("build",) if not a.skip_build else ()),
        Check("cli pipeline", checks.cli_pipeline, ("build",) if not a.skip_build else ()),
        Check("docker stop", checks.docker_stop, ("cli pipeline",)),
        Check("prefect worker stop", checks.prefect_worker_stop, ("cli pipeline",)),
    ]
    outcomes = run_checks(steps)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    failed = [o.name for o in outcomes if o.status != "PASS"]
    print(f"image-check: {len(outcomes) - len(failed)}/{len(outcomes)} passed in {time.monotonic() - started:.0f} s"
          + (f"; not passed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
