"""Does facegan's own training step capture as one CUDA graph, and what would that buy? A probe for
the CUDA-graph issue (#28), measured before any product code is written for it.

    python -m bench.cuda_graph_probe --device cuda                    # dcgan64 bf16/fp32, dcgan64-plus, resnet64
    python -m bench.cuda_graph_probe --device cuda --cases dcgan64:bf16 --windows 9

For each case (a preset at its own networks and batch, and a precision) it builds the family's
recipe exactly as `facegan.loop.fit` does and times, side by side in one process:
  eager  the recipe's `step` called in a loop, the device synchronised only at each window's end
  graph  the same `step` captured once with `torch.cuda.graph` after `--capture-after` warm-up
         steps on a side stream, then replayed: Adam made capturable (its step count and the learning rates are
         already device tensors), autocast's weight-cast cache off (a cached cast would outlive the
         capture).
  compiled  the networks under torch.compile(mode="reduce-overhead"), the rest of the step eager
Every timed step, eager or captured, is step 2 (a captured step's number is fixed), so lazy R1 (every
16 steps in the presets) is in no figure: a preset with R1 says so.
Each prints img/s (median of the timed windows), the step's counted FLOPs as TFLOP/s, the means of
the family's scalars (losses, D's outputs) over the timed steps (eager's and the graph's: the same
networks from the same seed, on different batches) and whether the graph's replays changed the
first network's weights. Any family's preset can be a case: the optimizers made capturable are the
recipe's parts that are optimizers. A case whose capture fails prints the error and the probe goes
on. On a machine without CUDA only `eager` runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
import traceback

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import machine, work_folder, write_record
from bench.preset_speed import ALL, built_recipe, preset_config
from facegan import families
from facegan.attributes import TABLE_NAME
from facegan.prepare import prepare
from facegan.runtime import Runtime
from facegan.synthetic import make_faces

CASES = "dcgan64:bf16,dcgan64:fp32,dcgan64-plus:bf16,resnet64:bf16"
MEASURES = ("eager", "graph", "compiled")
STEP = 2  # the step number every timed step passes, eager and graph alike: not a lazy-R1 step of the presets


@dataclasses.dataclass(frozen=True)
class CaptureRuntime(Runtime):
    """The run's runtime with autocast's cache of weight casts off, as a captured graph needs."""

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp or torch.bfloat16, enabled=self.amp is not None,
                              cache_enabled=False)


def build(cfg, capture: bool):
    """(the family's recipe for `cfg`, as `fit` builds it, its runtime): `preset_speed.built_recipe`,
    on the capture runtime when `capture`."""
    rt = Runtime.create(cfg.device, cfg.precision)
    if capture:
        rt = CaptureRuntime(rt.device, rt.amp)
    return built_recipe(cfg, rt), rt


def weights_sum(recipe) -> float:
    """A digest of the first network the step calls (a generator): whether replays changed it."""
    return float(sum(p.detach().double().sum() for p in next(iter(recipe.calls.values())).parameters()))


def scalar_sums(cfg, device) -> torch.Tensor:
    """Running sums of the family's named scalars (what its step returns)."""
    return torch.zeros(len(families.of_config(cfg).scalars), device=device)


def timed(run_window, windows: int, steps: int, images_per_step: int, rt) -> float:
    """Median img/s of `windows` calls of `run_window` (each `steps` steps), synchronised around each."""
    rates = []
    for _ in range(windows):
        rt.synchronize()
        t0 = time.perf_counter()
        run_window()
        rt.synchronize()
        rates.append(steps * images_per_step / (time.perf_counter() - t0))
    return statistics.median(rates)


def eager(cfg, a) -> dict:
    recipe, rt = build(cfg, capture=False)
    with FlopCounterMode(display=False) as counter:
        recipe.step(STEP, recipe.calls)
    flops = counter.get_total_flops()
    sums = scalar_sums(cfg, rt.device)

    def window():
        for _ in range(a.window_steps):
            sums.add_(recipe.step(STEP, recipe.calls))

    for _ in range(a.warmup):
        window()
    sums.zero_()
    rate = timed(window, a.windows, a.window_steps, recipe.images_per_step, rt)
    tflops = rate / recipe.images_per_step * flops / 1e12
    return {"img_per_s": rate, "step_flops": flops, "tflop_per_s": tflops, "note": f"{tflops:.1f} TFLOP/s counted",
            "mean_scalars": (sums / (a.windows * a.window_steps)).tolist()}


def compiled(cfg, a) -> dict:
    """The alternative: the networks under torch.compile(mode="reduce-overhead") (Inductor's
    kernels replayed through its own CUDA graphs), the optimizers and the rest of the step eager."""
    recipe, rt = build(cfg, capture=False)
    calls = {name: torch.compile(net, mode="reduce-overhead") for name, net in recipe.calls.items()}
    sums = scalar_sums(cfg, rt.device)

    def window():
        for _ in range(a.window_steps):
            torch.compiler.cudagraph_mark_step_begin()
            sums.add_(recipe.step(STEP, calls))

    t0 = time.perf_counter()
    window()  # compiles, then records its graphs
    rt.synchronize()
    first_s = time.perf_counter() - t0
    for _ in range(a.warmup):
        window()
    sums.zero_()
    rate = timed(window, a.windows, a.window_steps, recipe.images_per_step, rt)
    return {"img_per_s": rate, "first_window_s": first_s, "note": f"first window {first_s:.1f}s",
            "mean_scalars": (sums / (a.windows * a.window_steps)).tolist()}


def graph(cfg, a) -> dict:
    recipe, rt = build(cfg, capture=True)
    for opt in (part for part in recipe.parts.values() if isinstance(part, torch.optim.Optimizer)):
        for group in opt.param_groups:
            group["capturable"] = True
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(a.capture_after):
            recipe.step(STEP, recipe.calls)
    torch.cuda.current_stream().wait_stream(side)
    sums = scalar_sums(cfg, rt.device)
    g = torch.cuda.CUDAGraph()
    t0 = time.perf_counter()
    with torch.cuda.graph(g):
        sums.add_(recipe.step(STEP, recipe.calls))
    capture_s = time.perf_counter() - t0
    before = weights_sum(recipe)

    def window():
        for _ in range(a.window_steps):
            g.replay()

    for _ in range(a.warmup):
        window()
    sums.zero_()
    rate = timed(window, a.windows, a.window_steps, recipe.images_per_step, rt)
    changed = weights_sum(recipe) != before
    return {"img_per_s": rate, "capture_s": capture_s, "weights_changed": changed,
            "note": f"capture {capture_s:.1f}s, replays changed G: {changed}",
            "mean_scalars": (sums / (a.windows * a.window_steps)).tolist()}


def report(row: dict) -> None:
    """One case's lines: each measure's img/s (and its ratio to eager), its notes and mean scalars."""
    print(f"{row['preset']} {row['precision']}, batch {row['batch_size']}"
          f"{' (lazy R1 in no figure)' if row['r1_left_out'] else ''}:", flush=True)
    base = row["eager"].get("img_per_s")
    for name in MEASURES:
        m = row[name]
        if "img_per_s" not in m:
            print(f"  {name:8} {m.get('error') or m.get('skipped')}", flush=True)
            continue
        ratio = f" ({m['img_per_s'] / base:.2f}x eager)" if base and name != "eager" else ""
        print(f"  {name:8} {m['img_per_s']:9.0f} img/s{ratio}; {m['note']}; mean "
              + ", ".join(f"{k} {v:.3f}" for k, v in zip(row["scalars"], m["mean_scalars"], strict=True)), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--cases", default=CASES, help="comma-separated PRESET:PRECISION")
    p.add_argument("--images", type=int, default=2048, help="synthetic faces to train on")
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--window-steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=1, help="untimed windows first")
    p.add_argument("--capture-after", type=int, default=10,
                   help="eager warm-up steps before the capture: a step's host-side state (CycleGAN's pool fill "
                        "level) is frozen into the graph as it is then, so the presets' pools must be full")
    p.add_argument("--measures", default=",".join(MEASURES), help="comma-separated, of " + ", ".join(MEASURES))
    p.add_argument("--results", default=None, help="folder for the JSON record (default bench/results)")
    a, extra = p.parse_known_args(argv)  # anything else goes to every preset's command (e.g. --ngf 8)
    measures = a.measures.split(",")
    if "eager" not in measures or not set(measures) <= set(MEASURES):
        p.error(f"--measures: {a.measures!r} must list eager and any of {', '.join(MEASURES[1:])}")
    a.steps, a.log_every = 10**6, 10**6  # what preset_config reads; nothing trains through fit here
    cases = [c.split(":") for c in a.cases.split(",")]
    for case in cases:
        if len(case) != 2 or case[0] not in ALL or case[1] not in ("fp32", "bf16"):
            p.error(f"--cases: {':'.join(case)!r} is not PRESET:fp32|bf16 (presets: {', '.join(ALL)})")
    tmp = work_folder("facegan-graph-probe-")
    raw = make_faces(tmp / "raw" / "img_align_celeba", a.images, seed=5, makeup=0.5)
    datasets: dict[int, str] = {}
    print(f"machine: {machine()}")
    rows = []
    for preset, precision in cases:
        res = ALL[preset]["model"]["resolution"]
        if res not in datasets:
            datasets[res] = str(tmp / f"faces-{res}")
            prepare(raw, datasets[res], resolution=res, attributes=str(raw.parent / TABLE_NAME), log=lambda *_: None)
        cfg = preset_config(preset, datasets[res], str(tmp / "runs" / preset), a, ["--precision", precision, *extra])
        row = {"preset": preset, "precision": precision, "batch_size": cfg.batch_size,
               "r1_left_out": bool(getattr(cfg, "r1_gamma", 0)),
               "scalars": [sc.label for sc in families.of_config(cfg).scalars]}
        for name in MEASURES:
            measure = {"eager": eager, "graph": graph, "compiled": compiled}[name]
            if name not in measures:
                row[name] = {"skipped": "not asked for (--measures)"}
                continue
            if name != "eager" and not torch.cuda.is_available():
                row[name] = {"skipped": "needs CUDA"}
                continue
            try:
                row[name] = measure(cfg, a)
            except Exception as exc:  # a capture that fails is a finding, not the end of the probe
                row[name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
                traceback.print_exc(limit=4)
        rows.append(row)
        report(row)
    write_record("cuda_graph_probe", {"config": {**vars(a), "extra": extra}, "cases": rows}, a.results)


if __name__ == "__main__":
    main()
