"""Forecasting the future of a video past its end: the mean future and sampled futures.

* :mod:`framecast.forecasting.api`: :func:`forecast` (``framecast.forecast(module, frames, horizon, samples=K)``
  on a ``(T, C, H, W)`` tensor), :class:`Forecast`, :func:`forecast_metrics`;
* :mod:`framecast.forecasting.source`: a video decoded like a checkpoint's training clips and the context window
  that ends at a given second;
* :mod:`framecast.forecasting.render`: the forecast and samples videos, the strip and the spread figure;
* :mod:`framecast.forecasting.command`: ``framecast forecast``.

``framecast.forecast`` is :func:`framecast.forecasting.api.forecast`.
"""

from framecast.forecasting.api import Forecast, forecast, forecast_metrics

__all__ = ["Forecast", "forecast", "forecast_metrics"]
