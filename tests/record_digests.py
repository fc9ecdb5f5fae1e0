"""Record test_equivalence's digests on this CPU's capability with dd87acf's own code.

    python tests/record_digests.py      (from the project's root, in its virtual environment)

Each case is trained by dd87acf's CLI (its package exported from git) on datasets its own
`prepare` made from test_equivalence's 16 faces, and by today's code on today's; both digests are
printed with the capability, for test_equivalence.DIGESTS. A run of today's code that differs
from dd87acf's is a changed result, not a digest to record.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from test_equivalence import CASES, OLD, PRESET, TOY, old_code, state_digest

from facegan import attributes
from facegan import checkpoint as ckpt
from facegan.cli import main as facegan_main
from facegan.prepare import prepare
from facegan.synthetic import make_faces


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="facegan-digests-"))
    try:
        return record(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def record(root: Path) -> int:
    tree = old_code(root)
    raw = make_faces(root / "raw" / "img_align_celeba", 16, seed=5, makeup=0.5)
    table = str(raw.parent / attributes.TABLE_NAME)
    env = {**os.environ, "PYTHONPATH": tree}
    old, new = {}, {}
    for res in sorted({res for _, res, _ in CASES.values()}):
        old[res], new[res] = (str(root / f"{which}{res}" / f"faces-{res}") for which in ("old", "new"))
        subprocess.run([sys.executable, "-m", "facegan.cli", "prepare", str(raw), old[res], "--resolution", str(res),
                        "--workers", "1", "--attributes", table], cwd=tree, env=env, check=True, capture_output=True)
        prepare(raw, new[res], resolution=res, workers=1, attributes=table, log=lambda *_: None)
    capability, same = torch.backends.cpu.get_cpu_capability(), True
    print(f'    "{capability}": {{  # {OLD}\'s code; today\'s beside it')
    for name, (command, res, extra) in CASES.items():
        runs = root / "runs-old" / name, root / "runs-new" / name
        old_extra = ["--fid-every" if e == "--metric-every" else e for e in extra]  # dd87acf's spelling
        argv = [*command, "--preset", PRESET.get(name, name), *TOY]
        done = subprocess.run([sys.executable, "-m", "facegan.cli", *argv, *old_extra, "--dataset", old[res],
                               "--run", str(runs[0])], cwd=tree, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{name}: {OLD}'s run failed: {done.stderr[-2000:]}")
        if facegan_main([*argv, *extra, "--dataset", new[res], "--run", str(runs[1])]) != 0:
            sys.exit(f"{name}: today's run failed")
        digests = [state_digest(ckpt.load(str(run))) for run in runs]
        same &= digests[0] == digests[1]
        print(f'        "{name}": "{digests[0]}",{"" if digests[0] == digests[1] else f"  # today: {digests[1]}"}')
    print("    },")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
