"""Data modules: batches ``{"context": (B, T_ctx, C, H, W), "target": (B, T_pred, C, H, W)}`` in [0, 1]."""

from framecast.data.moving_mnist import MovingMNISTDataModule
from framecast.data.video import VideoClipDataModule

__all__ = ["MovingMNISTDataModule", "VideoClipDataModule"]
