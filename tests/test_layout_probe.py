"""The ConvLSTM's float32 layout on the CPU is measured once per machine and shape, cached, and used."""

from __future__ import annotations

import json

import pytest
import torch

from framecast.models import ConvLSTM, probe
from framecast.models import convlstm as convlstm_module


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(probe.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(probe, "_chosen", {})
    return tmp_path / "cache" / probe.CACHE_NAME


def test_the_fastest_option_is_measured_once_and_cached_on_disk(cache, monkeypatch):
    calls = []

    def measure():
        calls.append(1)
        return {"fused": 2.0, "per_gate": 1.0}

    assert probe.choose("work A", measure) == "per_gate"
    assert probe.choose("work A", measure) == "per_gate" and len(calls) == 1  # this process remembers it
    monkeypatch.setattr(probe, "_chosen", {})  # a new process: reads the file
    assert probe.choose("work A", lambda: pytest.fail("measured again")) == "per_gate"
    saved = json.loads(cache.read_text())
    (key,) = saved
    assert key.startswith(probe.machine_key()) and key.endswith("work A")
    assert saved[key] == {"choice": "per_gate", "seconds": {"fused": 2.0, "per_gate": 1.0}}
    assert probe.choose("work B", lambda: {"fused": 1.0, "per_gate": 3.0}) == "fused"  # another shape: its own
    assert len(json.loads(cache.read_text())) == 2


@pytest.mark.parametrize("faster", ["fused", "per_gate"])
def test_convlstm_runs_each_cell_in_the_measured_layout(cache, monkeypatch, faster):
    calls = []

    def fake_timing(cin, hidden, kernel, batch, height, width):
        calls.append((cin, hidden, kernel, batch, height, width))
        return {"fused": 1.0, "per_gate": 2.0} if faster == "fused" else {"fused": 2.0, "per_gate": 1.0}

    monkeypatch.setattr(convlstm_module, "time_layouts", fake_timing)
    monkeypatch.setattr(convlstm_module, "PROBE_MIN_FLOPS", 0)  # (these cells are small: probe them anyway)
    torch.manual_seed(0)
    model = ConvLSTM(channels=1, hidden=[4, 4, 4], kernel_size=3, patch_size=2)
    context = torch.rand(2, 2, 1, 8, 8)
    layers, gates = model.init_state(2, 4, 4, context)
    assert calls == [(4, 4, 3, 2, 4, 4)]  # the three cells have one shape: one measurement
    assert (gates is None) == (faster == "fused") and layers == [None] * 3
    if faster == "per_gate":
        assert len(gates) == 3 and all(len(g[0]) == 4 for g in gates)
    expected = model(context, 2)
    assert len(calls) == 1  # used again from the cache
    model.layout = "fused" if faster == "per_gate" else "per_gate"
    torch.testing.assert_close(model(context, 2), expected, rtol=1e-5, atol=1e-6)  # the same function
    model.layout = "auto"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.cell_layouts(2, 4, 4, context) == ["fused"] * 3  # bf16: fused, nothing measured
    assert len(calls) == 1


def test_small_cells_run_fused_without_a_measurement(cache, monkeypatch):
    monkeypatch.setattr(convlstm_module, "time_layouts", lambda *a: pytest.fail("measured a tiny cell"))
    model = ConvLSTM(channels=1, hidden=[4], kernel_size=3, patch_size=2)
    assert model.cell_layouts(2, 4, 4, torch.zeros(1)) == ["fused"]
    assert not cache.exists()


def test_the_real_timing_leaves_the_random_stream_and_the_modes_alone():
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        times = convlstm_module.time_layouts(2, 3, 3, 1, 4, 4, rounds=1)
    assert set(times) == {"fused", "per_gate"} and all(t > 0 for t in times.values())
    assert counter.get_total_flops() == 0  # the measurement is not the caller's work
    assert torch.equal(torch.rand(3), expected)
