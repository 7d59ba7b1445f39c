"""The one colour language of every picture and video of framecast, and how time is labelled.

* frames are grey (or RGB), errors and surprise use the :data:`ERROR_CMAP` (``magma``) colour map
  (dark = good, bright = bad);
* :data:`CONTEXT_COLOR` (blue) marks what the model was given, :data:`PREDICTED_COLOR` (orange) what it
  predicted within its trained horizon, :data:`BEYOND_COLOR` (purple) what it predicted beyond it;
* :data:`MODEL_COLOR` is a model's curve, :data:`BASELINE_COLOR` (grey, dashed) the copy-last baseline's.

No matplotlib here: the video renderer needs the colours without a figure backend.
"""

from __future__ import annotations

CONTEXT_COLOR = "#3b82f6"
PREDICTED_COLOR = "#f97316"
BEYOND_COLOR = "#a855f7"
MODEL_COLOR = "#1f77b4"
BASELINE_COLOR = "#7f7f7f"
ERROR_CMAP = "magma"
CURVE_PALETTE = (MODEL_COLOR, "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
BASELINE_NAME = "copy_last"  # the predictor drawn as the grey dashed baseline


def rgb(color: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` -> ``(r, g, b)`` ints."""
    color = color.lstrip("#")
    return tuple(int(color[i : i + 2], 16) for i in (0, 2, 4))


def time_label(k: int, fps: float | None = None) -> str:
    """Label of the frame ``k`` frames after the last context frame ``t``: ``t-2``, ``t``, ``t+3``, or, given
    ``fps``, seconds (``-0.20s``, ``+0.30s``)."""
    if fps:
        return f"{k / fps:+.2f}s" if k else "0s"
    return f"t{k:+d}" if k else "t"
