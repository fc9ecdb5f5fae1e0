"""PID 1 of the facegan image: runs the command and makes a `docker stop` reach the training.

- `IMAGE train ...`, `IMAGE fid ...`, `IMAGE --help` (any facegan subcommand or a leading option)
  run the facegan CLI; any other command (the Prefect Docker worker's `prefect flow-run execute`)
  runs as given.
- SIGTERM/SIGINT are forwarded to every process below it (in a container: every process), not
  only to the command: the Prefect supervisor starts the flow run's engine in a session of its
  own, where a signal to PID 1's child or its process group would never arrive. The supervisor
  itself is started with SIGTERM ignored, so it outlives the engine: the engine's training
  checkpoints, the run ends Failed with `TrainingInterrupted` (checkpoint written), the
  supervisor reports that and exits.
- Orphaned processes are reaped; the container exits with the command's status (128 + signal
  when a signal ended it).
"""

from __future__ import annotations

import os
import signal
import sys

FACEGAN_COMMANDS = {"prepare", "train", "sample", "score", "fid", "export", "synth", "tensorboard", "translate"}


def command(argv: list[str]) -> list[str]:
    """What to run for the container's arguments."""
    if not argv:
        return ["facegan", "--help"]
    if argv[0] in FACEGAN_COMMANDS or argv[0].startswith("-"):
        return ["facegan", *argv]
    return argv


def is_prefect_supervisor(argv: list[str]) -> bool:
    words = [os.path.basename(a) for a in argv[:5]]
    return "prefect" in words and "flow-run" in words and "execute" in words


def descendants(root: int) -> list[int]:
    """Every process below `root` (as PID 1 of a container: every other process in it, orphans
    included, since they are re-parented to it), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def forward(signum: int, _frame) -> None:
    """Send `signum` to every process below this one, whatever its session or process group."""
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def main() -> int:
    argv = command(sys.argv[1:])
    pid = os.fork()
    if pid == 0:  # the command
        if is_prefect_supervisor(argv):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited through exec; the engine installs its own
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            print(f"facegan-init: cannot run {argv[0]!r}: {exc.strerror}", file=sys.stderr)
            os._exit(127)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    while True:
        try:
            done, status = os.wait()  # reaps orphans too
        except ChildProcessError:
            return 0
        if done == pid:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
