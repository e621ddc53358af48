"""The one model interface (:class:`Model`), the registry every forecasting model plugs into, and the baselines.

Every model is called the same way: ``fit_predict(histories, horizon)`` takes :class:`History` values (a 1-D
float array, oldest first, one value a step, and the stamp of the last value) and returns P10/P50/P90 arrays
for the steps ``h = 1..horizon`` after each last observation. Per-series models subclass :class:`SeriesModel`
and write ``forecast(y, horizon, last)`` for one history; a model fitted across series declares
``scope = "fleet"``. A model's settings come from its registration (:func:`register_model`).

How the bands are made (the same for every baseline, see :func:`band_from_errors`): the model is replayed on
its own history, from every past origin, exactly as it forecasts the future; the errors ``actual - forecast``
at each step ``h`` are pooled and their empirical 10th and 90th percentiles become the offsets of P10 and P90
around the point forecast (P50). So a band is as wide as the model has actually been wrong ``h`` days ahead,
not a textbook assumption. Steps the history is too short to replay get the widest replayed band scaled by
``sqrt(h / h_last)``: the growth of a random walk's spread, the usual model for how level errors accumulate,
and a deliberately mild assumption because it only applies beyond what the history can show. Everything is
clipped to the metric range (0 to 100 percent), which keeps ``P10 <= P50 <= P90``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np

from capacity_forecaster.schema import METRIC_RANGE

FloatArray = np.ndarray[Any, np.dtype[np.floating[Any]]]

LOWER_Q = 0.1
UPPER_Q = 0.9


@dataclass(frozen=True)
class QuantileForecast:
    """P10, P50 and P90 for the steps 1..horizon, as float arrays of the same length."""

    p10: FloatArray
    p50: FloatArray
    p90: FloatArray

    def __post_init__(self) -> None:
        shapes = {np.shape(self.p10), np.shape(self.p50), np.shape(self.p90)}
        if len(shapes) != 1 or np.ndim(self.p50) != 1:
            raise ValueError(f"quantile arrays must be 1-D and of equal length, got shapes {sorted(shapes)}")

    @property
    def horizon(self) -> int:
        return int(self.p50.shape[0])


Scope = Literal["series", "fleet"]
"""How a model is fitted: ``series``, on each history alone (so any worker may run it on any batch);
``fleet``, once across one metric's series at each backtest origin (the engine fits it before the workers)."""


class History(NamedTuple):
    """One series as a model sees it: the values (oldest first, one a step) and the stamp of the last value
    (``numpy.datetime64`` in the grain's unit, ``D`` or ``h``; every other stamp follows from it). ``last`` is
    None when the caller knows no dates: a model then forecasts without a calendar (or on a reference date)."""

    y: FloatArray
    last: np.datetime64 | None = None


Answer = QuantileForecast | str
"""A model's answer for one history: its forecast, or one line saying why there is none."""


@runtime_checkable
class Model(Protocol):
    """Every forecasting model, per-series or fitted across series, calendar-aware or not.

    Implementations must be deterministic and picklable. The backtest and the engine own the origins, the
    scoring and the fallbacks: a model only forecasts the histories it is given."""

    @property
    def name(self) -> str:
        """The registry name, stored in the ``model`` column of the outputs."""
        ...

    @property
    def scope(self) -> Scope:
        """``series`` or ``fleet`` (see :data:`Scope`)."""
        ...

    def fit_predict(self, histories: Sequence[History], horizon: int) -> list[Answer]:
        """P10/P50/P90 for the ``horizon`` steps after the last value of each history, in order (or why not).
        May raise: every history of the call then fails with that reason."""
        ...

    def params(self) -> dict[str, object]:
        """The model's settings, recorded in the training job's model artifact."""
        ...


class SeriesModel(ABC):
    """Base of the per-series models: :meth:`fit_predict` forecasts each history on its own by :meth:`forecast`."""

    scope: ClassVar[Scope] = "series"

    @abstractmethod
    def forecast(self, y: FloatArray, horizon: int, last: np.datetime64 | None = None) -> QuantileForecast:
        """P10/P50/P90 for the ``horizon`` steps after ``y[-1]``, whose stamp is ``last`` (None: unknown)."""

    def fit_predict(self, histories: Sequence[History], horizon: int) -> list[Answer]:
        return [self.forecast(y, horizon, last) for y, last in histories]


ModelFactory = Callable[[], Model]


@dataclass(frozen=True)
class Registration:
    """A model in the registry: how to build it and where its settings come from (the only place they do).

    ``settings``: model field -> the training job's parameter that sets it (an attribute of
    ``job.TrainingParams``, e.g. ``{"history_days": "prophet_history_days"}``). ``grains``: grain name -> the
    model's field values for that grain (``{"hourly": {"season": 24}}``), under the job's own settings."""

    name: str
    factory: ModelFactory
    settings: Mapping[str, str] = field(default_factory=dict)
    grains: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


_REGISTRY: dict[str, Registration] = {}


def register_model(
    name: str,
    factory: ModelFactory,
    *,
    settings: Mapping[str, str] | None = None,
    grains: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Make a model available by name (to the backtest, the engine and the ``models`` hyperparameter), with
    the job parameters and per-grain values of its fields (see :class:`Registration`); a field the model does
    not have is a ``ValueError``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    model = factory()
    if is_dataclass(model):
        named = {*(settings or {}), *(key for values in (grains or {}).values() for key in values)}
        unknown = sorted(named - {f.name for f in fields(model)})
        if unknown:
            raise ValueError(f"model {name!r} has no field(s) {', '.join(unknown)} to set")
    _REGISTRY[name] = Registration(
        name, factory, MappingProxyType(dict(settings or {})), MappingProxyType(dict(grains or {}))
    )


def registered_models() -> tuple[str, ...]:
    """Names of every registered model, sorted."""
    return tuple(sorted(_REGISTRY))


def registrations() -> tuple[Registration, ...]:
    """Every registration, sorted by name."""
    return tuple(_REGISTRY[name] for name in registered_models())


def get_model(name: str) -> Model:
    """A new instance of the model registered as ``name``, with its default settings."""
    try:
        factory = _REGISTRY[name].factory
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(registered_models())}") from None
    return factory()


def grain_settings(grain: str) -> dict[str, dict[str, Any]]:
    """Field values of every registered model for ``grain`` (models with none for it left out)."""
    return {r.name: dict(r.grains[grain]) for r in registrations() if grain in r.grains}


# --------------------------------------------------------------------------------------------------- helpers


def as_series(y: np.ndarray | list[float]) -> FloatArray:
    """Check a history: 1-D, at least one value, all finite. Returns it as float64."""
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"a series must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"series has {int(np.sum(~np.isfinite(arr)))} missing or infinite values")
    return arr


def check_horizon(horizon: int) -> None:
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1, got {horizon}")


def column_quantiles(errors: FloatArray, q: float) -> tuple[FloatArray, np.ndarray]:
    """Per column of ``errors`` (NaN = no error there): the ``q`` quantile (linear interpolation, as
    ``np.quantile``) of the finite values, and how many there are. Columns with none give NaN."""
    counts = np.sum(np.isfinite(errors), axis=0)
    ordered = np.sort(errors, axis=0)  # NaN sorts last, so the first ``counts`` rows are the values
    pos = q * np.maximum(counts - 1, 0)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, np.maximum(counts - 1, 0))
    frac = pos - lo
    cols = np.arange(errors.shape[1])
    if errors.shape[0] == 0:
        return np.full(errors.shape[1], np.nan), counts
    values = ordered[lo, cols] * (1 - frac) + ordered[hi, cols] * frac
    return np.where(counts > 0, values, np.nan), counts


def band_from_errors(
    low_q: FloatArray, high_q: FloatArray, counts: np.ndarray, *, min_errors: int
) -> tuple[FloatArray, FloatArray]:
    """Turn per-step error quantiles into band offsets ``(below <= 0, above >= 0)`` for every step.

    Steps with at least ``min_errors`` replayed errors use them; the offsets never shrink as the step grows
    (a later step cannot be more certain than an earlier one). Steps past the last well-supported one ``h_e``
    get its offsets times ``sqrt(h / h_e)``. With no well-supported step at all the band is unbounded (the
    metric range after clipping): an honest "we cannot tell" for a history too short to judge the model.
    """
    horizon = low_q.shape[0]
    ok = counts >= min_errors
    if not ok[0]:
        return np.full(horizon, -np.inf), np.full(horizon, np.inf)
    # Supported steps form a prefix (fewer errors exist for longer steps); cut at the first gap.
    last = int(np.argmin(ok)) if not ok.all() else horizon
    below = np.minimum.accumulate(np.minimum(low_q[:last], 0.0))
    above = np.maximum.accumulate(np.maximum(high_q[:last], 0.0))
    if last < horizon:
        scale = np.sqrt(np.arange(last + 1, horizon + 1) / last)
        below = np.concatenate([below, below[-1] * scale])
        above = np.concatenate([above, above[-1] * scale])
    return below, above


def make_forecast(
    point: FloatArray, below: FloatArray, above: FloatArray, bounds: tuple[float, float] = METRIC_RANGE
) -> QuantileForecast:
    """Point forecast plus band offsets, clipped to ``bounds``; guarantees P10 <= P50 <= P90."""
    lo_b, hi_b = bounds
    p50 = np.clip(point, lo_b, hi_b)
    p10 = np.minimum(np.clip(point + below, lo_b, hi_b), p50)
    p90 = np.maximum(np.clip(point + above, lo_b, hi_b), p50)
    return QuantileForecast(p10=p10, p50=p50, p90=p90)


# ---------------------------------------------------------------------------------------------- the models


@dataclass(frozen=True)
class SeasonalNaive(SeriesModel):
    """Repeat the last season: ``yhat(T + h) = y(T + h - season * ceil(h / season))``.

    Replayed errors: the forecast ``h`` steps ahead uses the value ``k = ceil(h / season)`` seasons back, so
    its errors over all past origins are exactly the lag-``k * season`` differences of the series. A history
    shorter than one season repeats what there is (the last value when only one is known).

    ``error_window``: only errors on the last so many days count, so the band follows recent volatility.
    """

    season: int = 7
    error_window: int = 365
    min_errors: int = 20
    name: str = "seasonal_naive"

    def params(self) -> dict[str, object]:
        return asdict(self)

    def forecast(self, y: FloatArray, horizon: int, last: np.datetime64 | None = None) -> QuantileForecast:
        y = as_series(y)
        check_horizon(horizon)
        season = min(self.season, y.size)
        season_values = y[-season:]
        steps = np.arange(horizon)
        point = season_values[steps % season]
        seasons_back = np.arange(1, math.ceil(horizon / season) + 1)
        errors = np.full((self.error_window, seasons_back.size), np.nan)
        for j, k in enumerate(seasons_back):
            lag = int(k) * season
            if lag >= y.size:
                break
            diffs = (y[lag:] - y[:-lag])[-self.error_window :]
            errors[: diffs.size, j] = diffs
        low_k, counts_k = column_quantiles(errors, LOWER_Q)
        high_k, _ = column_quantiles(errors, UPPER_Q)
        k_of_step = steps // season  # index into seasons_back for h = steps + 1
        below, above = band_from_errors(
            low_k[k_of_step], high_k[k_of_step], counts_k[k_of_step], min_errors=self.min_errors
        )
        return make_forecast(point, below, above)


@dataclass(frozen=True)
class LinearTrend(SeriesModel):
    """Least-squares line through the last ``window`` days, extrapolated.

    The default window, 84 days, is a whole number of weeks so the weekly cycle barely tilts the slope, and
    recent enough to follow a change of trend within a quarter. Replayed errors: the same fit is made at every
    past origin (with whatever history, at least ``min_fit`` days, it had then) and scored ``h`` days later;
    all fits come from running sums, so replaying costs one pass over the history.
    """

    window: int = 84
    min_fit: int = 14
    error_window: int = 365
    min_errors: int = 20
    name: str = "linear_trend"

    def params(self) -> dict[str, object]:
        return asdict(self)

    def forecast(self, y: FloatArray, horizon: int, last: np.datetime64 | None = None) -> QuantileForecast:
        y = as_series(y)
        check_horizon(horizon)
        n = y.size
        steps = np.arange(1, horizon + 1)
        sums = running_sums(y)
        level, slope, x_mean = _fits(sums, np.array([n]), self.window)
        point = level[0] + slope[0] * (n - 1 + steps - x_mean[0])

        # Origins t (fit on y[:t]) whose forecasts land on the last ``error_window`` days.
        origins = np.arange(max(self.min_fit, 1, n - self.error_window - horizon + 1), n)
        if origins.size == 0:
            return make_forecast(point, np.full(horizon, -np.inf), np.full(horizon, np.inf))
        o_level, o_slope, o_xmean = _fits(sums, origins, self.window)
        target = origins[:, None] - 1 + steps[None, :]
        valid = (target <= n - 1) & (target >= n - self.error_window)
        safe = np.minimum(target, n - 1)
        predicted = o_level[:, None] + o_slope[:, None] * (target - o_xmean[:, None])
        errors = np.where(valid, y[safe] - predicted, np.nan)
        low, counts = column_quantiles(errors, LOWER_Q)
        high, _ = column_quantiles(errors, UPPER_Q)
        below, above = band_from_errors(low, high, counts, min_errors=self.min_errors)
        return make_forecast(point, below, above)


def running_sums(y: FloatArray) -> dict[str, FloatArray]:
    """Prefix sums (with a leading zero) of x, x^2, y, x*y and y^2 for x = 0..n-1: the least-squares line over
    any ``y[a:b]`` (and its residual sum of squares) from a few subtractions."""
    x = np.arange(y.size, dtype=np.float64)
    return {
        name: np.concatenate([[0.0], np.cumsum(values)])
        for name, values in (("x", x), ("xx", x * x), ("y", y), ("xy", x * y), ("yy", y * y))
    }


def _fits(sums: Mapping[str, FloatArray], ends: np.ndarray, window: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """OLS lines over ``y[max(0, t - window):t]`` for each end ``t``: (mean of y, slope, mean of x)."""
    starts = np.maximum(ends - window, 0)
    cnt = (ends - starts).astype(np.float64)

    def total(name: str) -> FloatArray:
        return sums[name][ends] - sums[name][starts]

    sx, sy = total("x"), total("y")
    x_mean, y_mean = sx / cnt, sy / cnt
    sxx = total("xx") - sx * x_mean
    sxy = total("xy") - sx * y_mean
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(sxx > 1e-9, sxy / np.where(sxx > 1e-9, sxx, 1.0), 0.0)
    return y_mean, slope, x_mean


# Hourly: the day is the season, the last 28 days of replayed errors; a two-week line (whole days and weeks).
register_model("seasonal_naive", SeasonalNaive, grains={"hourly": {"season": 24, "error_window": 672}})
register_model("linear_trend", LinearTrend, grains={"hourly": {"window": 336, "min_fit": 48, "error_window": 672}})
