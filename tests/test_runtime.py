"""Device set-up: every entry point reaches CUDA's branch with an indexed device.

No GPU here, so `torch.cuda` is given a strict stand-in: `is_available` True, a device count,
and a `set_device` that validates its argument with torch's own `_get_device_index` (which
raises `ValueError: Expected a torch.device with a specified index ...` for a bare "cuda", as
`torch.cuda.set_device` did on the H100) and then, instead of calling the driver, stops the
caller with `ReachedCuda` carrying the index. Before the fix `train()` passed
`torch.device("cuda")` and these tests failed with that ValueError. (The `fake_cuda` fixture
is in conftest.py, `ReachedCuda` in helpers.py: the attribute-swap tests use them too.)
"""

import datetime as dt

import pytest
import torch
from helpers import ReachedCuda, tiny_config

from facegan.config import ConfigError
from facegan.runtime import GracefulStop, Runtime, autocast_dtype, resolve_device, use_device


def test_stand_in_raises_like_torch_for_a_bare_cuda_device(fake_cuda):
    fake_cuda()
    with pytest.raises(ValueError, match="Expected a torch.device with a specified index"):
        torch.cuda.set_device(torch.device("cuda"))  # the line that crashed on the H100


def test_train_sets_an_indexed_cuda_device(fake_cuda, dataset32, tmp_path, monkeypatch):
    from facegan.loop import Hooks, fit

    fake_cuda()
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(ReachedCuda) as reached:
        fit(tiny_config(dataset32, str(tmp_path / "run"), device="cuda"), Hooks(log=lambda *_: None))
    assert reached.value.index == 0
    with pytest.raises(ReachedCuda) as reached:  # "auto" on a GPU machine: the flow's default
        fit(tiny_config(dataset32, str(tmp_path / "run"), device="auto"), Hooks(log=lambda *_: None))
    assert reached.value.index == 0


def test_each_ddp_process_takes_its_local_rank(fake_cuda, dataset32, tmp_path, monkeypatch):
    from facegan.loop import Hooks, fit

    fake_cuda(count=2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ReachedCuda) as reached:
        fit(tiny_config(dataset32, str(tmp_path / "run"), device="cuda"), Hooks(log=lambda *_: None))
    assert reached.value.index == 1


@pytest.mark.parametrize("args", [
    ["train", "--dataset", "DS", "--run", "RUN", "--device", "cuda", "--resolution", "32"],
    ["fid", "RUN", "--dataset", "DS", "--device", "cuda"],
    ["fid", "RUN", "--dataset", "DS"],  # default auto
    ["sample", "RUN", "OUT", "--device", "cuda"],
    ["sample", "RUN", "OUT"],  # default auto
], ids=["train", "fid", "fid-auto", "sample", "sample-auto"])
def test_cli_commands_set_an_indexed_cuda_device(fake_cuda, dataset32, tmp_path, args):
    from facegan.cli import main

    fake_cuda()
    args = [{"DS": dataset32, "RUN": str(tmp_path / "run"), "OUT": str(tmp_path / "out")}.get(a, a) for a in args]
    with pytest.raises(ReachedCuda) as reached:
        main(args)
    assert reached.value.index == 0


def test_gallery_and_bench_set_an_indexed_cuda_device(fake_cuda, dataset32, tmp_path):
    from facegan.gallery import publish
    from facegan.loop import Hooks, fit

    run = tiny_config(dataset32, str(tmp_path / "store" / "runs" / "r"), steps=2)
    fit(run, Hooks(log=lambda *_: None))  # on the CPU, before the stand-in
    fake_cuda()
    with pytest.raises(ReachedCuda):
        publish(str(tmp_path / "store"), dt.date(2026, 1, 1), device="cuda")
    import bench.train_throughput as tt

    with pytest.raises(ReachedCuda):
        tt.main(["--device", "cuda"])


def test_resolve_device_names_and_errors(fake_cuda, monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device='cuda' but CUDA is not available"):
        resolve_device("cuda") if not torch.cuda.is_available() else pytest.skip("a GPU is present")
    fake_cuda(count=2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"device='cuda:2' resolves to cuda:2, but this machine has 2 GPU"):
        resolve_device("cuda:2")
    with pytest.raises(ConfigError, match="device='gpu' is not a device"):
        resolve_device("gpu")
    with pytest.raises(ReachedCuda):
        use_device("cuda:1")
    assert use_device("cpu") == torch.device("cpu")  # no set_device for the CPU


def test_runtime_cuda_choices(fake_cuda):
    cpu = Runtime.create("cpu", "auto")
    assert (cpu.amp, cpu.adam_options, cpu.ddp_device_ids, cpu.process_group_backend) == (None, {}, None, "gloo")
    cuda = Runtime(torch.device("cuda", 1), torch.bfloat16)  # what create() makes on a bf16 GPU
    assert cuda.adam_options == {"fused": True} and cuda.ddp_device_ids == [1]
    assert cuda.process_group_backend == "nccl" and cuda.describe() == "device cuda:1, bf16 autocast"
    before = torch.backends.cudnn.benchmark
    with cuda.fixed_shape_kernels():
        assert torch.backends.cudnn.benchmark is True
    with cpu.fixed_shape_kernels():
        assert torch.backends.cudnn.benchmark is False
    assert torch.backends.cudnn.benchmark == before


def test_precision_auto_is_fp32_on_cpu_and_bf16_autocasts_anywhere():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16


def test_graceful_stop_turns_sigterm_into_a_flag():
    import os
    import signal

    with GracefulStop() as stop:
        assert not stop.requested()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested() and stop.signal == signal.SIGTERM
