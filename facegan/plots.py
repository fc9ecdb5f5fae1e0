"""Curves drawn with matplotlib (loss, FID) as PNG bytes, in this process or a separate one.

Drawing a figure is ~0.25 s of pure Python that holds the GIL. A CUDA training loop is bound by
the CPU dispatching its kernels, so a figure drawn on the checkpoint writer's thread stalls the
step for as long (measured on an H100: a checkpoint every 100 steps cost 35% of DCGAN-64's
throughput, about half of it the loss curve). `render(..., separate_process=True)` draws in a
short-lived `python -m facegan.plots` instead. This module imports no torch, so that process
starts in a fraction of a second.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys


def _figure(height: float):
    """An 8-inch-wide matplotlib Figure on the Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


DEFAULT_SERIES = [["loss_d", "D loss", "losses"], ["loss_g", "G loss", "losses"]]


def loss_curve_png(rows: list[dict], title: str = "losses", series: list[list[str]] | None = None) -> bytes:
    """A PNG plot against step of the metrics rows' `series` ([key, label, panel] each: a family's
    scalars, facegan.families.Family.plot_series), one panel side by side per panel name; the
    first panel is titled `title`."""
    series = series or DEFAULT_SERIES
    panels = list(dict.fromkeys(panel for _, _, panel in series))
    fig = _figure(4.5)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    steps = [r["step"] for r in rows]
    for ax, panel in zip(axes, panels, strict=True):
        for key, label, where in series:
            if where == panel:
                ax.plot(steps, [r.get(key, float("nan")) for r in rows], label=label)
        ax.set_xlabel("step")
        ax.set_title(title if panel == panels[0] else panel)
        ax.legend()
    return _png(fig)


def metric_curve_png(rows: list[dict], name: str = "fid", lower_is_better: bool = True) -> bytes:
    """A PNG plot of metric `name` against step from its rows (facegan.runfolder's metric stream)."""
    fig = _figure(3.5)
    ax = fig.subplots()
    points = [(r["step"], r[name]) for r in rows if name in r]
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    best = (min if lower_is_better else max)(points, key=lambda p: p[1])
    ax.annotate(f"best {best[1]:.4g}", best, textcoords="offset points", xytext=(6, 6))
    ax.set_xlabel("step")
    ax.set_ylabel(f"{name} ({'lower' if lower_is_better else 'higher'} is better)")
    ax.set_title(name)
    return _png(fig)


CURVES = {"loss_curve_png": loss_curve_png, "metric_curve_png": metric_curve_png}


def render(name: str, *args, separate_process: bool = False) -> bytes:
    """PNG bytes of the curve `name` (a key of CURVES) drawn from JSON-able `args`; with
    `separate_process`, drawn by `python -m facegan.plots` so this process's GIL stays free."""
    if not separate_process:
        return CURVES[name](*args)
    request = json.dumps({"name": name, "args": args}).encode()
    # its own session: a Ctrl-C or a signal to the trainer's process group must reach the trainer
    # (which then checkpoints), not kill the drawing under the checkpoint writer
    proc = subprocess.run([sys.executable, "-m", "facegan.plots"], input=request, capture_output=True, check=False,
                          start_new_session=True)
    if proc.returncode != 0:
        last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"drawing {name} in a separate process failed (exit {proc.returncode}): {last}")
    return proc.stdout


def main() -> None:
    """`python -m facegan.plots`: {"name", "args"} as JSON on stdin -> the PNG on stdout."""
    request = json.load(sys.stdin)
    sys.stdout.buffer.write(CURVES[request["name"]](*request["args"]))


if __name__ == "__main__":
    main()
