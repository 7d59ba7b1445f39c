"""framecast: video next-frame prediction with convolutional-recurrent predictors.

Tensors in the public API are ``(B, T, C, H, W)`` float in [0, 1].
"""

from framecast.forecasting import forecast
from framecast.module import FramePredictionModule

__version__ = "0.1.0"
__all__ = ["FramePredictionModule", "__version__", "forecast"]
