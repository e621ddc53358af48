"""Forecasting: models behind one interface, rolling-origin backtest, champion choice.

``baselines`` holds the model protocol (:class:`Model`: ``fit_predict`` on :class:`History` values) and the
registry; importing this package registers every model, so a model name in a hyperparameter or a config
resolves wherever the package is imported (worker processes too).
``engine.forecast_fleet`` runs a fleet; ``job`` is the SageMaker training-container contract.
"""

from capacity_forecaster.forecasting import prophet_model as _prophet_model  # noqa: F401  (registers "prophet")
from capacity_forecaster.forecasting import random_forest as _random_forest  # noqa: F401  (registers it)
from capacity_forecaster.forecasting import recent_trend as _recent_trend  # noqa: F401  (registers it)
from capacity_forecaster.forecasting.baselines import (
    History,
    Model,
    QuantileForecast,
    SeriesModel,
    get_model,
    register_model,
    registered_models,
)

__all__ = ["History", "Model", "QuantileForecast", "SeriesModel", "get_model", "register_model", "registered_models"]
