"""Test-only failure injection for the end-to-end test, kept out of the product.

With this folder on PYTHONPATH and FACEGAN_TEST_FAIL_AT_STEP=N, the first `facegan.loop.fit`
call in the process tree (marked by the file FACEGAN_TEST_FAIL_MARKER) raises from its progress
hook at step N, after its checkpoints up to then are written: a worker crash in the middle of a
run, which the train-dcgan flow must retry and resume.
"""

import os

if os.environ.get("FACEGAN_TEST_FAIL_AT_STEP"):
    import dataclasses
    from pathlib import Path

    import facegan.loop as _loop

    _real_fit = _loop.fit
    _fail_at = int(os.environ["FACEGAN_TEST_FAIL_AT_STEP"])
    _marker = Path(os.environ["FACEGAN_TEST_FAIL_MARKER"])

    def _failing_train(cfg, hooks=None):
        if _marker.exists():  # only the first attempt fails
            return _real_fit(cfg, hooks)
        hooks = hooks or _loop.Hooks()
        report = hooks.progress

        def progress(step, total, metrics):
            if report:
                report(step, total, metrics)
            if step >= _fail_at:
                _marker.touch()
                raise RuntimeError(f"injected failure at step {step} (FACEGAN_TEST_FAIL_AT_STEP)")

        return _real_fit(cfg, dataclasses.replace(hooks, progress=progress))

    _loop.fit = _failing_train
