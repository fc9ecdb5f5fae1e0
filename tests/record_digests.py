"""Record test_equivalence's digests on this CPU's capability with dd87acf's own code.

    python tests/record_digests.py      (from the project's root, in its virtual environment)

Each case is trained by dd87acf's CLI (its package exported from git) on datasets its own
`prepare` made from test_equivalence's 16 faces, and by today's code on today's; both digests are
printed with the capability, for test_equivalence.DIGESTS. A run of today's code that differs
from dd87acf's is a changed result, not a digest to record.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from test_equivalence import CAPABILITY, CASES, OLD, PRESET, TOY, faces, old_cli, old_code, state_digest

from facegan import attributes
from facegan import checkpoint as ckpt
from facegan.cli import main as facegan_main
from facegan.prepare import prepare


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="facegan-digests-"))
    try:
        return record(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def record(root: Path) -> int:
    tree = old_code(root)
    raw = faces(root / "raw")
    table = str(raw.parent / attributes.TABLE_NAME)
    old, new = {}, {}
    for res in sorted({res for _, res, _ in CASES.values()}):
        old[res], new[res] = (str(root / f"{which}{res}" / f"faces-{res}") for which in ("old", "new"))
        done = old_cli(tree, "prepare", str(raw), old[res], "--resolution", str(res), "--workers", "1",
                       "--attributes", table)
        if done.returncode:
            sys.exit(f"{res} px: {OLD}'s prepare failed: {done.stderr[-2000:]}")
        prepare(raw, new[res], resolution=res, workers=1, attributes=table, log=lambda *_: None)
    same = True
    print(f'    "{CAPABILITY}": {{  # {OLD}\'s code; today\'s beside it')
    for name, (command, res, extra) in CASES.items():
        runs = root / "runs-old" / name, root / "runs-new" / name
        old_extra = ["--fid-every" if e == "--metric-every" else e for e in extra]  # dd87acf's spelling
        argv = [*command, "--preset", PRESET.get(name, name), *TOY]
        done = old_cli(tree, *argv, *old_extra, "--dataset", old[res], "--run", str(runs[0]))
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
