"""Curves drawn in this process and in a separate one (the CUDA loop's choice) are the same PNG."""

import subprocess
import sys

import pytest

from facegan import plots

ROWS = [{"step": s, "loss_d": 1.0 / s, "loss_g": 2.0 - 1.0 / s, "d_real": 0.6, "d_fake": 0.4} for s in range(1, 30)]


def test_separate_process_draws_the_same_png():
    here = plots.render("loss_curve_png", ROWS, "run-a")
    apart = plots.render("loss_curve_png", ROWS, "run-a", separate_process=True)
    assert here.startswith(b"\x89PNG\r\n\x1a\n") and apart == here
    assert plots.render("loss_curve_png", ROWS, "run-b") != here  # the title is drawn


def test_separate_process_failure_is_one_line():
    with pytest.raises(RuntimeError, match=r"^drawing metric_curve_png in a separate process failed \(exit 1\): "
                                           r"ValueError: min\(\) .*empty[^\n]*$"):
        plots.render("metric_curve_png", [{"step": 1}], separate_process=True)


def test_plots_import_no_torch():
    code = "import sys, facegan.plots; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
