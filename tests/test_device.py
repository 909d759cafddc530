"""Device selection, autocast choice and seeding."""

import random

import numpy as np
import pytest
import torch

from minillm import device as dev


def test_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv("MINILLM_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert dev.pick_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.pick_device().type == "mps"
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    assert dev.pick_device().type == "cpu"


def test_preferred_device_and_env_override(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("MINILLM_DEVICE", "cpu")
    assert dev.pick_device().type == "cpu"
    assert dev.pick_device("cpu").type == "cpu"


def test_unavailable_or_unknown_device_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("MINILLM_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        dev.pick_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        dev.pick_device("tpu")


def test_autocast_dtype_rules(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the CUDA rule, on any machine
    monkeypatch.setattr(dev, "cpu_supports_bf16", lambda: True)
    assert dev.autocast_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(dev, "cpu_supports_bf16", lambda: False)
    assert dev.autocast_dtype("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert dev.autocast_dtype("cuda") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert dev.autocast_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert dev.autocast_dtype("mps") is None


def test_autocast_none_is_a_no_op():
    with dev.autocast("cpu", None):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


def test_seed_everything_reproduces_all_generators():
    def draw():
        return random.random(), float(np.random.rand()), torch.rand(3).tolist()

    dev.seed_everything(123)
    first = draw()
    dev.seed_everything(123)
    assert draw() == first
    with pytest.raises(ValueError):
        dev.seed_everything(-1)


def test_describe_device_says_what_and_why(monkeypatch):
    monkeypatch.delenv("MINILLM_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    report = dev.describe_device("cpu")
    text = str(report)
    assert report.device.type == "cpu"
    assert "device      : cpu" in text
    assert "CUDA not available" in report.reasons
    assert not any(r.startswith("CUDA available") for r in report.reasons)
    # the other branch names the GPU it found
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU 9000")
    report = dev.describe_device("cpu")
    assert "CUDA available: Fake GPU 9000" in report.reasons
    assert "CUDA not available" not in report.reasons


def test_describe_device_refuses_a_device_this_machine_lacks(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    for name in ("cuda", "cuda:0", "mps"):
        with pytest.raises(ValueError, match=f"{name!r} was requested.*not available here"):
            dev.describe_device(name)
        with pytest.raises(ValueError, match="not available here"):
            dev.autocast_dtype(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="has 1 CUDA device"):
        dev.pick_device("cuda:1")
    with pytest.raises(TypeError, match="device name"):
        dev.describe_device(0.5)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        dev.describe_device("gpu")
