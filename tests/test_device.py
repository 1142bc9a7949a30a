"""Choosing the device never fails where the CPU would work: "auto" takes the GPU only when the
plugin's CUDA backend, a device, a driver for the backend's CUDA runtime (the operator's own
floor, read from the plugin) and a torch that can use the GPU are all there, and otherwise the
CPU with one log line saying why; "gpu" fails naming the cause, before any torch CUDA call."""
import logging

import pytest

from dst_dali.op import device
from dst_dali.op.device import GpuFacts, resolve_device

READY = GpuFacts(backend=True, devices=1, driver=13000, runtime=13000, torch_cuda="13.0",
                 torch_usable=True)
NODES = {  # what a user's first GPU run may meet
    "cpu_only_torch": (dict(torch_cuda=None, torch_usable=False), "CPU-only build"),
    "old_driver": (dict(driver=12080), "needs an NVIDIA driver for CUDA 13.0 or later (R580+); "
                                       "this node's driver supports CUDA 12.8"),
    "no_driver": (dict(driver=0), "no driver found"),
    "torch_cannot_use_it": (dict(torch_usable=False), "torch (CUDA 13.0) cannot use the GPU"),
    "no_device": (dict(devices=0), "no CUDA device is visible to DALI"),
    "no_backend": (dict(backend=False), "built without its CUDA backend"),
}


def node(name):
    changes, _ = NODES[name]
    return GpuFacts(**{**READY.__dict__, **changes})


def test_a_node_with_everything_runs_on_the_gpu():
    assert resolve_device("auto", READY) == resolve_device("gpu", READY) == "gpu"
    assert resolve_device("cpu", node("cpu_only_torch")) == "cpu"


@pytest.mark.parametrize("name", sorted(NODES))
def test_auto_falls_back_to_the_cpu_saying_why_and_gpu_names_the_cause(name, caplog):
    why = NODES[name][1]
    with caplog.at_level(logging.INFO, logger="dst_dali.device"):
        assert resolve_device("auto", node(name)) == "cpu"
    said = [r for r in caplog.records if r.name == "dst_dali.device"]
    assert len(said) == 1 and why in said[0].getMessage()
    # a GPU that is there but cannot be used is a warning; no GPU at all is the CPU's own case
    gpu_there = name not in ("no_device", "no_backend")
    assert said[0].levelno == (logging.WARNING if gpu_there else logging.INFO)
    with pytest.raises(ValueError, match=f"device='gpu': .*{why.split('(')[0]}"):
        resolve_device("gpu", node(name))


def test_the_floor_is_the_operators_own_rule():
    """Read from the plugin (csrc/collage_kernel.h's DriverFloorError), not a copy of it."""
    from dst_dali.op.plugin import driver_floor_error
    assert driver_floor_error(13000, 13000) == driver_floor_error(13020, 13010) == ""
    assert "R580" in driver_floor_error(12080, 13000)
    assert driver_floor_error(12000, 12040) == "" and "R525" in driver_floor_error(11080, 12040)


def test_a_skipped_driver_check_is_caught(monkeypatch):
    """The planted fault: a choice that forgets the floor takes the GPU on an old driver, which
    the test of that node sees."""
    monkeypatch.setattr(device, "driver_floor_error", lambda driver, runtime: "")
    assert resolve_device("auto", node("old_driver")) == "gpu"
    monkeypatch.undo()
    assert resolve_device("auto", node("old_driver")) == "cpu"


def test_this_machine(caplog):
    """No GPU here: the facts say why, and the loader's "auto" is the CPU."""
    facts = device.gpu_facts()
    if facts.devices:
        pytest.skip("a GPU is visible here")
    assert device.why_not_gpu(facts) is not None and resolve_device("auto") == "cpu"
