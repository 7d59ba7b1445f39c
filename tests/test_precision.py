"""The default training precision: bf16-mixed where the device computes bfloat16 natively, float32 elsewhere,
chosen by ``framecast fit`` when the config gives no ``trainer.precision`` and printed once at its start."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from framecast import precision
from framecast.cli import main
from framecast.cli.train import FramecastCLI, run
from framecast.models import build_model

ROOT = Path(__file__).resolve().parents[1]
ZEN4 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni\n"


@pytest.mark.parametrize("cpuinfo,features,expected", [
    (ZEN4, ["avx512_bf16"], "bf16-mixed"),
    (SAPPHIRE_RAPIDS, ["amx_bf16", "avx512_bf16"], "bf16-mixed"),
    (SKYLAKE, [], "32"),
    (None, [], "32"),  # no /proc/cpuinfo (not Linux): no native bf16 assumed
])
def test_cpu_bf16_is_read_from_the_cpu_flags(tmp_path, cpuinfo, features, expected):
    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    flags = precision.cpu_flags(path)
    assert precision.cpu_bf16_features(flags) == features
    chosen, reason = precision.default_precision("cpu", flags)
    assert chosen == expected
    assert (", ".join(features) in reason) if features else ("no native bf16" in reason)


def test_cuda_and_other_devices():
    assert precision.default_precision("cuda", cuda_has_bf16=True)[0] == "bf16-mixed"
    assert precision.default_precision("cuda", cuda_has_bf16=False)[0] == "32"
    assert precision.default_precision("other", {"avx512_bf16"})[0] == "32"
    assert precision.training_device("cpu") == precision.training_device("CPU") == "cpu"
    assert precision.training_device("gpu") == precision.training_device("cuda") == "cuda"
    assert precision.training_device("tpu") == "other"
    assert precision.training_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    from lightning.pytorch.accelerators import CPUAccelerator

    assert precision.training_device(CPUAccelerator()) == "cpu"


TINY = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.init_args.canvas", "32",
        "--data.init_args.context_frames", "2", "--data.init_args.horizon_frames", "1",
        "--data.init_args.train_size", "2", "--data.init_args.val_size", "2", "--data.init_args.test_size", "2",
        "--data.init_args.batch_size", "2", "--model.hidden", "[4]", "--model.kernel_size", "3",
        "--model.warmup_steps", "0", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu"]


BEFORE_FIT = FramecastCLI.before_fit


class Started(Exception):
    """Raised where fit starts: what the test checks is decided by then."""


def start_fit(monkeypatch, capsys, root, flags, *extra, train=False) -> tuple[str, str, str]:
    """``framecast fit`` of the tiny config on a CPU with ``flags``, stopped where fit starts (or, ``train``,
    run to its end): (the trainer's precision, the line printed, the config's precision)."""
    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=precision.CPUINFO: set(flags))
    seen = {}

    def record(self):
        BEFORE_FIT(self)
        seen["precision"], seen["config"] = self.trainer.precision, str(self.config["fit"]["trainer"]["precision"])
        if not train:
            raise Started

    monkeypatch.setattr(FramecastCLI, "before_fit", record)
    argv = ["fit", *TINY, "--trainer.default_root_dir", str(root), *extra]
    if train:
        assert main(argv) == 0
    else:
        with pytest.raises(Started):
            run(argv)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("precision:")]
    assert len(lines) == 1, lines  # printed once
    return seen["precision"], lines[0], seen["config"]


def test_fit_trains_in_bf16_on_a_cpu_with_native_bf16(tmp_path, monkeypatch, capsys):
    got, line, config = start_fit(monkeypatch, capsys, tmp_path, ["avx2", "avx512_bf16"], train=True)
    assert (got, config) == ("bf16-mixed", "bf16-mixed")
    assert line == ("precision: bf16-mixed (this CPU has native bf16: avx512_bf16; --trainer.precision 32 for "
                    "float32)")
    (saved,) = tmp_path.rglob("config.yaml")  # the run's saved config says what it trained in
    assert yaml.safe_load(saved.read_text())["trainer"]["precision"] == "bf16-mixed"


def test_fit_trains_in_float32_on_a_cpu_without_and_as_the_user_says(tmp_path, monkeypatch, capsys):
    got, line, config = start_fit(monkeypatch, capsys, tmp_path / "a", ["avx2", "avx512f"])
    assert (got, config) == ("32-true", "32") and line.startswith("precision: 32 (this CPU has no native bf16")
    # the user's choice wins, whatever the CPU
    got, line, config = start_fit(monkeypatch, capsys, tmp_path / "b", ["avx512_bf16"], "--trainer.precision", "32")
    assert (got, config) == ("32-true", "32") and line == "precision: 32 (trainer.precision as given)"


def test_channels_last_and_bf16_give_the_float32_outputs_to_bf16_tolerance():
    torch.manual_seed(0)
    model = build_model("convlstm", channels=1, hidden=[8, 8], kernel_size=3, patch_size=4).eval()
    context = torch.rand(2, 3, 1, 32, 32)
    with torch.inference_mode():
        expected = model(context, 2)
        last = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(last(context.contiguous(), 2), expected, rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = last(context, 2)
    torch.testing.assert_close(bf16.float(), expected, rtol=0, atol=3e-2)
