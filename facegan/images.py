"""PNG outputs: sample grids, single faces and the loss curve, as bytes ready for a store."""

from __future__ import annotations

import io
import math

import torch
from torchvision.utils import make_grid, save_image


def to_png(images: torch.Tensor, nrow: int | None = None) -> bytes:
    """A grid PNG of images (N, 3, H, W) in [-1, 1]; a single image when N == 1."""
    images = images.detach().float().cpu()
    nrow = nrow or max(1, int(math.ceil(math.sqrt(len(images)))))
    grid = make_grid(images, nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    buf = io.BytesIO()
    save_image(grid, buf, format="png")
    return buf.getvalue()


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


def loss_curve_png(rows: list[dict], title: str = "losses") -> bytes:
    """A PNG plot of loss_d and loss_g (and D(x), D(G(z))) against step from metrics rows."""
    fig = _figure(4.5)
    ax, ax2 = fig.subplots(1, 2)
    steps = [r["step"] for r in rows]
    for name, label in (("loss_d", "D loss"), ("loss_g", "G loss")):
        ax.plot(steps, [r.get(name) for r in rows], label=label)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend()
    for name, label in (("d_real", "D(x)"), ("d_fake", "D(G(z))")):
        ax2.plot(steps, [r.get(name) for r in rows], label=label)
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("step")
    ax2.set_title("discriminator outputs")
    ax2.legend()
    return _png(fig)


def fid_curve_png(rows: list[dict]) -> bytes:
    """A PNG plot of FID against step from metrics rows that carry "fid"."""
    fig = _figure(3.5)
    ax = fig.subplots()
    points = [(r["step"], r["fid"]) for r in rows if "fid" in r]
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    best = min(points, key=lambda p: p[1])
    ax.annotate(f"best {best[1]:.2f}", best, textcoords="offset points", xytext=(6, 6))
    ax.set_xlabel("step")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title("FID")
    return _png(fig)
