"""The three SSIM conventions (and the other pixel metrics) on one set of Moving MNIST predictions.

    python benchmarks/ssim_conventions.py [--digits ../shared/data/mnist/t10k-images-idx3-ubyte.gz] [--clips 256]

Sequences: the validation split of moving MNIST (2 digits, 64x64, 10 -> 10 frames) drawn from the MNIST test
digits file, seed 0. Predictions: the copy-last and linear baselines, and a blurred copy-last (a Gaussian of sigma 1 pixel
over the last frame, the kind of smooth prediction a trained model makes). Prints a markdown table of each
metric's mean over clips and steps, as ``docs/metrics.md`` shows it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from framecast.data import MovingMNISTDataModule
from framecast.evaluation import limit, score
from framecast.metrics import MetricAccumulator, gaussian_window, pixel_metrics
from framecast.models import CopyLast, Linear

ROOT = Path(__file__).resolve().parent.parent


def blurred_copy_last(context: torch.Tensor, horizon: int, sigma: float = 1.0) -> torch.Tensor:
    g = gaussian_window(7, sigma)
    last = context[:, -1]
    k = (g[:, None] * g[None, :]).view(1, 1, 7, 7).expand(last.shape[1], 1, 7, 7)
    blurred = F.conv2d(F.pad(last, (3, 3, 3, 3), mode="replicate"), k, groups=last.shape[1])
    return blurred[:, None].expand(-1, horizon, -1, -1, -1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--digits", default=str(ROOT.parent / "shared/data/mnist/t10k-images-idx3-ubyte.gz"))
    p.add_argument("--clips", type=int, default=256)
    args = p.parse_args()
    dm = MovingMNISTDataModule(digits=args.digits, val_size=args.clips, batch_size=64)
    dm.setup("validate")
    predictors = {"copy_last": CopyLast(), "linear": Linear(), "blurred copy_last": blurred_copy_last}
    accs = {name: MetricAccumulator() for name in predictors}
    for batch in limit(dm.val_dataloader(), args.clips):
        horizon = batch["target"].shape[1]
        for name, f in predictors.items():
            score(accs[name], f(batch["context"], horizon), batch["target"], pixel_metrics())
    names = pixel_metrics()
    print(f"{accs['copy_last'].clips} validation clips of moving MNIST from the MNIST test digits (seed 0), mean over 10 steps\n")
    print("| prediction | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for name, acc in accs.items():
        print(f"| {name} | " + " | ".join(f"{acc.mean(m):.4f}" if "ssim" in m or m == "mse" else f"{acc.mean(m):.2f}" for m in names) + " |")


if __name__ == "__main__":
    main()
