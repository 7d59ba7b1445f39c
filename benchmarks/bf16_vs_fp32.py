"""Does bf16-mixed training reach the same quality as float32? Train the same model twice from the same seed.

    python benchmarks/bf16_vs_fp32.py [--config configs/moving_mnist_convlstm.yaml] [--trainer.max_steps 300]
                                      [--trainer.accelerator auto] [--data.init_args.val_size N] [--out DIR]

(framecast's option names; the old spellings ``--steps``, ``--accelerator`` and ``--val-size`` still work.)

Both runs build the model and data of ``--config`` (default: the literature's Moving MNIST ConvLSTM, 4 x 128
channels, kernel 5, patch 4, 10 -> 10 frames of 64 x 64, batch 16) after ``seed_everything`` with the
config's seed, train ``--trainer.max_steps`` optimizer steps with Lightning (``trainer.precision`` 32, then
``bf16-mixed``; the same clips in the same order), then validate on the fixed validation set at the precision
they were trained in. The script prints, and writes to ``--out/bf16_vs_fp32.json``, both runs' validation
``mse_frame``, their relative difference (the target: within 5 %) and the training time of each.

Cost: 300 steps of the literature model are about 1.7 PFLOP per run: about an hour in float32 and half that
in bf16 on an uncontended 2-core CPU, a few minutes on a GPU. ``--config configs/moving_mnist_convlstm_cpu.yaml``
is a small model for a quick check. The test ``tests/test_speed.py::test_bf16_matches_fp32_after_300_steps``
(``pytest -m slow``) runs the default.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "moving_mnist_convlstm.yaml"


def train_and_validate(config: Path, precision: str, steps: int, accelerator: str, val_size: int | None) -> dict:
    import lightning as L
    import yaml

    from framecast.loading import datamodule_from_config
    from framecast.module import FramePredictionModule

    cfg = yaml.safe_load(config.read_text())
    seed = int(cfg.get("seed_everything", 0) or 0)
    L.seed_everything(seed, workers=True)
    overrides = {"val_size": val_size} if val_size else {}
    dm = datamodule_from_config(config, **overrides)
    model = FramePredictionModule(**{**(cfg.get("model") or {}), "channels": dm.channels})
    trainer = L.Trainer(max_steps=steps, precision=precision, accelerator=accelerator, devices=1, logger=False,
                        enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
                        enable_model_summary=False, deterministic=False)
    start = time.perf_counter()
    trainer.fit(model, dm)
    train_s = time.perf_counter() - start
    trainer = L.Trainer(precision=precision, accelerator=accelerator, devices=1, logger=False,
                        enable_model_summary=False)
    metrics = trainer.validate(model, dm, verbose=False)[0]
    return {"precision": precision, "steps": steps, "train_seconds": train_s,
            "val_mse_frame": float(metrics["val/mse_frame"]), "val_loss": float(metrics["val/loss"]),
            "val_copy_last_mse_frame": float(metrics["val/copy_last/mse_frame"])}


def compare(config: str | Path = DEFAULT_CONFIG, steps: int = 300, accelerator: str = "auto",
            val_size: int | None = None) -> dict:
    config = Path(config)
    runs = {}
    for precision in ("32", "bf16-mixed"):
        runs[precision] = run = train_and_validate(config, precision, steps, accelerator, val_size)
        print(f"{precision:>10}: val mse_frame {run['val_mse_frame']:.2f} after {steps} steps "
              f"({run['train_seconds']:.0f} s of training)", flush=True)
    fp32, bf16 = runs["32"]["val_mse_frame"], runs["bf16-mixed"]["val_mse_frame"]
    return {"config": str(config), "steps": steps, "runs": runs,
            "relative_difference": abs(bf16 - fp32) / fp32, "target": 0.05,
            "bf16_training_speedup": runs["32"]["train_seconds"] / runs["bf16-mixed"]["train_seconds"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="bf16-mixed vs float32 training: validation mse_frame after N steps "
                                            "from the same seed (target: within 5 %)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="a framecast fit config (its model: and data: sections and seed_everything)")
    p.add_argument("--trainer.max_steps", "--steps", dest="steps", type=int, default=300,
                   help="optimizer steps of each run (default 300)")
    p.add_argument("--trainer.accelerator", "--accelerator", dest="accelerator", default="auto",
                   help="Lightning accelerator: auto, cpu, gpu (default auto)")
    p.add_argument("--data.init_args.val_size", "--val-size", dest="val_size", type=int, default=None,
                   help="validation clips (default: the config's)")
    p.add_argument("--out", default="runs/bf16_vs_fp32", help="folder for bf16_vs_fp32.json")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (on a shared, loaded CPU 1 thread avoids OpenMP barrier stalls)")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = compare(args.config, args.steps, args.accelerator, args.val_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bf16_vs_fp32.json").write_text(json.dumps(result, indent=2) + "\n")
    ok = result["relative_difference"] <= result["target"]
    print(f"relative difference {100 * result['relative_difference']:.2f} % "
          f"({'within' if ok else 'NOT within'} 5 %); bf16 trained {result['bf16_training_speedup']:.2f}x faster")
    print(f"wrote {out / 'bf16_vs_fp32.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
