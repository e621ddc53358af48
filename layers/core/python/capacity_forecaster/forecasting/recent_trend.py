"""Recent trend: a line through the days since the series last changed course, with its weekly profile,
month- and quarter-end factors and, for a disk that is cleaned up on a cycle, the clean-ups to come.

Why: a model chosen on a backtest over the last weeks cannot follow a ramp that began after the backtest's
origins, and a line over a fixed window (``linear_trend``) blends the flat months before a ramp into its
slope. Here the slope comes only from the last *segment* of the history:

0. With at least ``yearly_min_days`` of history, a yearly sine wave (fitted on the weekly means of the
   last two years with the trend that fits best: a quadratic or a line that bends once, with or without a
   new level and slope from the latest change of course, found first by steps 1-2 on the series as it is;
   of a fixed size or a fixed share of the trend; kept when it clearly stands out) is taken off, and put
   back on the forecast, so that the upswing of a yearly cycle is not read as a steeper trend, nor a ramp
   of the last months as the upswing of a wave.
1. The last ``window`` days are deseasonalised. Weekly and calendar effects are shares of the level, added
   together (a quarter-end Monday is above the level by the Monday share plus the quarter-end share), as
   office load behaves: the weekly profile is the median ratio per day of the week to the 29-day centred
   median (with ``season`` 24 for hourly values, per hour of the day over a 97-hour median), scaled to a
   mean of 1; with daily values and dates, the bank holidays of ``country`` that fall on busy days of the
   week (offices closed: a dip like a weekend's) and month-end and quarter-end days get their share over
   the day of the week's (holidays: the median over the past ones; month and quarter ends: per day before
   the end, the median over past episodes, at least two), and where any is found the medians are taken
   again without those days, which would otherwise lift them; each day is divided by its total share, and
   one-day spikes (a day over ``spike_k`` robust deviations above or below both neighbours, or the last
   day that far above the two before it) are smoothed out.
2. Change points: the best single break (a new level and slope from that day on) is searched over the
   window; it is kept when it lowers the BIC by more than ``penalty`` (a break costs 3 parameters), and the
   search repeats inside the segment after it, so the last segment starts at the latest real change. Segments
   are at least ``min_segment`` days long.
3. The point forecast extends the last segment's least-squares line and multiplies it by each future
   day's share (day of the week, and holiday, month or quarter end when the dates are known); the yearly
   wave goes back on.
4. Clean-up cycles: when the window holds at least two sharp drops (more than ``cleanup_drop`` points and
   ``spike_k`` robust deviations of the day-to-day change) at regular intervals (the spacings within 25% of
   their median) and every segment between them fills (a positive slope), the forecast drops back one
   median interval after the last clean-up and fills again at the same rate, from a level that creeps up
   as the levels each past fill started from did (with at least three of them).
5. The band: the 10th and 90th percentiles of the last segment's residuals around the line, widened by the
   slope's standard error times the steps from the segment's centre (the line's own uncertainty), times
   each day's share, clipped to 0..100 like every model here.

Everything is closed-form least squares (on prefix sums, or batched over the yearly wave's candidate
trends) and sliding medians: about 8 ms a series.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import pairwise

import numpy as np

from capacity_forecaster.forecasting.baselines import (
    LOWER_Q,
    UPPER_Q,
    FloatArray,
    QuantileForecast,
    SeriesModel,
    as_series,
    check_horizon,
    make_forecast,
    register_model,
    running_sums,
)
from capacity_forecaster.forecasting.calendar_features import (
    check_country,
    day_range,
    days_to_month_end,
    holiday_flag,
    month_end_flag,
    quarter_end_flag,
)

SEASON = 7
_Z90 = 1.2815515655446004  # standard normal 90th percentile: scales the slope's standard error
_MAD_SCALE = 1.4826  # MAD to standard deviation for normal noise
_BEND_STEP = 14  # days between the candidate bends of the yearly wave's trend


@dataclass(frozen=True)
class RecentTrend(SeriesModel):
    """Line since the last change point, with weekly profile, calendar factors and clean-up cycles."""

    window: int = 364
    min_segment: int = 14
    penalty: float = 10.0
    spike_k: float = 5.0
    cleanup_drop: float = 8.0
    yearly_min_days: int = 548
    season: int = SEASON
    """Steps in the main cycle: 7 for daily values (the week), 24 for hourly ones (the day)."""
    country: str | None = "US"
    """ISO code of the country whose bank holidays get their own share (daily values with dates); None: none."""
    name: str = "recent_trend"

    def __post_init__(self) -> None:
        if self.country is not None:
            check_country(self.country)

    def params(self) -> dict[str, object]:
        return asdict(self)

    def forecast(self, y: FloatArray, horizon: int, last: np.datetime64 | None = None) -> QuantileForecast:
        """With the day of ``y[-1]`` (``last``): bank-holiday, month- and quarter-end factors. They need one
        value a day, so no stamp, or one in any other unit (an hour: hourly values), forecasts without them."""
        if last is None:
            return self._forecast(as_series(y), horizon, None)
        stamp = np.datetime64(last)
        daily = np.datetime_data(stamp.dtype)[0] == "D"
        return self._forecast(as_series(y), horizon, stamp if daily else None)

    def _forecast(self, y: FloatArray, horizon: int, last_day: np.datetime64 | None) -> QuantileForecast:
        check_horizon(horizon)
        # Built once: both passes over the window (before and after the yearly wave) use the same days.
        calendar = _Calendar.of(last_day, min(y.size, self.window), horizon, self.country)
        if self._has_yearly_wave(y):
            yearly_hist, yearly_future = _yearly_wave(y, horizon, self._latest_change(y, horizon, calendar))
        else:
            yearly_hist, yearly_future = np.zeros(y.size), np.zeros(horizon)
        w = (y - yearly_hist)[-self.window :]
        m = w.size
        steps = np.arange(1, horizon + 1)
        if m < 2 * self.season:
            # Under two weeks cannot show a trend or a band: the median, and the whole range around it.
            unbounded = np.full(horizon, np.inf)
            return make_forecast(np.full(horizon, float(np.median(w))), -unbounded, unbounded)

        z, scale = self._deseasonalise(w, horizon, calendar)
        future_x = (m - 1 + steps).astype(np.float64)
        cycle = _cleanup_cycle(z, self.cleanup_drop, self.spike_k, self.min_segment, self.season)
        if cycle is not None:
            last_drop, period, slope, creep = cycle
            x = np.arange(last_drop, m, dtype=np.float64)
            seg = z[last_drop:]
            intercept = float(seg.mean() - slope * x.mean())
            into = np.mod(future_x - last_drop, period)
            point = intercept + slope * (last_drop + into) + creep * (future_x - into - last_drop)
        else:
            breaks = self._change_points(z)
            start = breaks[-1] if breaks else 0
            x = np.arange(start, m, dtype=np.float64)
            seg = z[start:]
            slope, intercept = _line(x, seg)
            point = intercept + slope * future_x
        resid = seg - (intercept + slope * x)
        point = point * scale + yearly_future

        low_r, high_r = np.quantile(resid, [LOWER_Q, UPPER_Q])
        sxx = float(np.sum((x - x.mean()) ** 2))
        dof = max(seg.size - 2, 1)
        sigma = float(np.sqrt(np.sum(resid**2) / dof))
        slope_se = sigma / np.sqrt(sxx) if sxx > 0 else 0.0
        line_sd = slope_se * (future_x - x.mean())
        widen = _Z90 * np.abs(line_sd) if cycle is None else 0.0
        below = np.minimum(low_r, 0.0) - widen
        above = np.maximum(high_r, 0.0) + widen
        return make_forecast(point, below * scale, above * scale)

    def _deseasonalise(
        self, w: FloatArray, horizon: int, calendar: _Calendar | None, *, refine: bool = True
    ) -> tuple[FloatArray, FloatArray]:
        """``(w without its weekly and calendar shares and one-day spikes, each horizon day's share)``.

        Weekly and calendar effects are shares of the level, added together (a quarter-end Monday is busier
        than the level by the Monday share plus the quarter-end share): a series that doubles has weekend
        dips and quarter-end peaks twice as deep, and a quarter-end day that fell on a weekend still tells
        the size of the quarter-end peak. ``refine=False`` skips measuring the shares again without the
        special days (enough to find where the series changed course). ``calendar``: of ``w``'s days and the
        horizon's (None without dates)."""
        past, future, calendar_hist = self._shares(w, horizon, calendar, None)
        if refine and calendar is not None and calendar_hist.any():
            # Peaks or holidays found: those days are left out of the medians their shares are taken against
            # (a quarter end's week of peak days in a 29-day window lifts its median and shrinks the peak's
            # share), and the shares are measured again.
            past, future, _ = self._shares(w, horizon, calendar, calendar.special_past)
        total = np.maximum(past, 0.05)  # a share never quite 0, so the level stays finite
        return _clip_spikes(w / total, self.spike_k), future

    def _shares(
        self, w: FloatArray, horizon: int, calendar: _Calendar | None, skip: np.ndarray | None
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """``(each history day's share of the level, each horizon day's, the calendar part of the history
        days')``: weekly shares from medians over 29 days (for daily values) that leave out the days where
        ``skip`` is True, plus the calendar's."""
        width = 4 * self.season + 1
        weekly = _weekly_profile(w, _centred_median(w, width, skip), self.season)
        week_past = weekly[np.arange(w.size) % self.season]
        week_future = weekly[(w.size + np.arange(horizon)) % self.season]
        level = _centred_median(w / week_past, width, skip)
        share = np.divide(w, level, out=week_past.copy(), where=level > 1.0)
        calendar_past, calendar_future = _calendar_excess(share - week_past, week_past, week_future, calendar)
        return week_past + calendar_past, week_future + calendar_future, calendar_past

    def _has_yearly_wave(self, y: FloatArray) -> bool:
        """Whether a yearly wave is looked for: daily values (with hourly ones, ``season`` 24, a "year" of
        365 steps would be 15 days) and at least ``yearly_min_days`` of them."""
        return self.season == SEASON and y.size >= self.yearly_min_days

    def _latest_change(self, y: FloatArray, horizon: int, calendar: _Calendar | None) -> int | None:
        """Index in ``y`` of the latest change of course, found before the yearly wave is fitted (so that
        the wave's fit can give the ramp its own slope); None without one."""
        w = y[-self.window :]
        z, _ = self._deseasonalise(w, horizon, calendar, refine=False)
        breaks = self._change_points(z)
        return y.size - w.size + breaks[-1] if breaks else None

    def _change_points(self, z: FloatArray) -> list[int]:
        """Starts of the segments after each accepted break, oldest first (empty: one segment)."""
        breaks: list[int] = []
        lo = 0
        while z.size - lo >= 2 * self.min_segment:
            found = _best_break(z[lo:], self.min_segment, self.penalty)
            if found is None:
                break
            lo += found
            breaks.append(lo)
        return breaks


def _yearly_wave(y: FloatArray, horizon: int, change: int | None = None) -> tuple[FloatArray, FloatArray]:
    """A yearly sine wave on the daily history ``y`` and the horizon (zeros when there is none to see).

    Fitted by least squares on the weekly means of the last two years (a week's mean has no weekly pattern
    left in it and a seventh of the day-to-day noise's variance) together with a trend, the best by BIC of:

    - a quadratic, or a line that bends once (steeper or flatter from one of the days every ``_BEND_STEP``
      days: a workload that began to grow, or stopped growing);
    - each without and with a new level and slope from ``change`` on (an index in ``y``: where the series
      last changed course), so that a ramp of the last months is not read as the upswing of a wave, to be
      taken back as its downswing;
    - each with a wave of a fixed size or one that is a fixed share of the trend (a growing series' wave
      grows with it; on the generated fleet this halved the error on growing series, but only with the
      bent line: over a quadratic alone the share forecast worse than the fixed size).

    The wave is kept when its amplitude is at least 4 standard errors: a wave under a point still matters on
    a quiet series (a disk whose fill rate it speeds up and slows down), since its curve would otherwise
    read as a change of course."""
    n = y.size
    v = y[-730:]
    k = v.size
    t = np.arange(k + horizon, dtype=np.float64)
    angle = 2.0 * np.pi * t / 365.25
    wave = np.stack([np.sin(angle), np.cos(angle)])
    weeks = k // 7
    first = k - 7 * weeks

    def weekly(columns: FloatArray) -> FloatArray:
        """Weekly means of each column's history days: (..., columns, weeks)."""
        return columns[..., first:k].reshape(*columns.shape[:-1], weeks, 7).mean(axis=-1)

    trends = _trend_candidates(t / k, k)
    options = [trends]
    if change is not None and 0 < change - (n - k) < k:
        at = change - (n - k)
        after = (t >= at).astype(np.float64)
        extra = np.stack([after, after * (t - at) / k])
        options.append(np.concatenate([trends, np.broadcast_to(extra, (trends.shape[0], *extra.shape))], axis=1))
    target = weekly(v)
    best: tuple[float, FloatArray, FloatArray, float] | None = None
    for trend_columns in options:
        fixed = np.broadcast_to(wave, (trend_columns.shape[0], *wave.shape))
        coef, sse = _fit_all(np.concatenate([weekly(fixed), weekly(trend_columns)], axis=1), target)
        fitted = np.einsum("bct,bc->bt", trend_columns, coef[:, 2:])
        candidates = [(fixed, coef, sse)]
        positive = fitted[:, :k].min(axis=1) > 1.0
        if positive.any():
            share = fixed * (fitted / fitted[:, :k].mean(axis=1, keepdims=True))[:, None, :]
            coef_s, sse_s = _fit_all(np.concatenate([weekly(share), weekly(trend_columns)], axis=1), target)
            candidates.append((share, coef_s, np.where(positive, sse_s, np.inf)))
        params = 2 + trend_columns.shape[1]
        for columns, c, s in candidates:
            bic = weeks * np.log(np.maximum(s, 1e-12) / weeks) + params * np.log(weeks)
            i = int(np.argmin(bic))
            if best is None or bic[i] < best[0]:
                best = (float(bic[i]), columns[i], c[i], float(s[i]) / max(weeks - params, 1))
    assert best is not None
    _, columns, coef, variance = best
    if np.hypot(coef[0], coef[1]) < 4.0 * np.sqrt(variance * 2.0 / weeks):
        return np.zeros(n), np.zeros(horizon)
    fitted_wave = coef[:2] @ columns
    return np.concatenate([np.zeros(n - k), fitted_wave[:k]]), fitted_wave[k:]


def _trend_candidates(scaled: FloatArray, k: int) -> FloatArray:
    """(candidates, 3, days): a quadratic ``[1, s, s^2]``, then ``[1, s, max(s - s_b, 0)]`` for a bend at
    every ``_BEND_STEP``-th day ``b`` at least 8 weeks from either end of the ``k`` history days."""
    ones = np.ones_like(scaled)
    bends = np.arange(56, k - 56, _BEND_STEP)
    quadratic = np.stack([ones, scaled, scaled**2])[None]
    bent = np.stack(
        [
            np.broadcast_to(ones, (bends.size, scaled.size)),
            np.broadcast_to(scaled, (bends.size, scaled.size)),
            np.maximum(scaled[None, :] - scaled[bends][:, None], 0.0),
        ],
        axis=1,
    )
    return np.concatenate([quadratic, bent])


def _fit_all(design: FloatArray, target: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Least squares of ``target`` (weeks) on each of a stack of designs (candidates, columns, weeks):
    ``(coefficients (candidates, columns), sums of squared residuals (candidates))``. By the normal
    equations with a whisker of ridge, so that a bend on the day of the change (the same column twice)
    still solves."""
    gram = np.einsum("bcw,bdw->bcd", design, design)
    ridge = 1e-10 * np.trace(gram, axis1=1, axis2=2)[:, None, None] * np.eye(design.shape[1])
    coef = np.linalg.solve(gram + ridge, np.einsum("bcw,w->bc", design, target)[..., None])[..., 0]
    resid = target[None, :] - np.einsum("bcw,bc->bw", design, coef)
    return coef, np.sum(resid**2, axis=1)


@dataclass(frozen=True)
class _Calendar:
    """Which history and horizon days are month ends, quarter ends and bank holidays."""

    quarter_past: np.ndarray
    quarter_future: np.ndarray
    month_past: np.ndarray
    """Month-end days outside quarter ends."""
    month_future: np.ndarray
    left_past: np.ndarray
    """Days to the end of the month."""
    left_future: np.ndarray
    month_of: np.ndarray
    holiday_past: np.ndarray
    holiday_future: np.ndarray

    @classmethod
    def of(cls, last_day: np.datetime64 | None, n: int, horizon: int, country: str | None) -> _Calendar | None:
        """The calendar of ``n`` history days up to ``last_day`` and ``horizon`` days after (None without
        dates)."""
        if last_day is None:
            return None
        past, future = day_range(last_day, n), day_range(last_day, 0, ahead=horizon)
        quarter_past, quarter_future = quarter_end_flag(past) > 0, quarter_end_flag(future) > 0
        no_holiday = np.zeros(past.size, dtype=bool), np.zeros(future.size, dtype=bool)
        holiday = (
            (holiday_flag(past, country) > 0, holiday_flag(future, country) > 0) if country is not None else no_holiday
        )
        return cls(
            quarter_past=quarter_past,
            quarter_future=quarter_future,
            month_past=(month_end_flag(past) > 0) & ~quarter_past,
            month_future=(month_end_flag(future) > 0) & ~quarter_future,
            left_past=days_to_month_end(past),
            left_future=days_to_month_end(future),
            month_of=past.astype("datetime64[M]"),
            holiday_past=holiday[0],
            holiday_future=holiday[1],
        )

    @property
    def special_past(self) -> np.ndarray:
        """History days that are not ordinary days."""
        return np.asarray(self.quarter_past | self.month_past | self.holiday_past)


def _calendar_excess(
    dev: FloatArray, week_past: FloatArray, week_future: FloatArray, calendar: _Calendar | None
) -> tuple[FloatArray, FloatArray]:
    """Bank-holiday, month-end and quarter-end shares of the level on the history days of ``dev`` and on the
    horizon (zeros without a calendar).

    ``dev`` is each day's share of the level over its day-of-the-week share (about 0 on ordinary days);
    ``week_past`` and ``week_future`` are the day-of-the-week shares of the history and horizon days.

    - Bank holidays that fall on busy days of the week (a share of at least 1: offices closed make them
      quiet like a weekend, which a holiday on a weekend already is): the median ``dev`` of the past ones,
      used when at least 3 of them, three quarters on the same side, put it more than 3 times the ordinary
      days' robust spread of ``dev`` over the square root of their number away from 0.
    - Month and quarter ends: one excess per day before the end (the last 7 days of a quarter, the last 3
      of other months), so a peak that builds up to the last day is followed: the median ``dev`` of those
      days (at least 0), holidays left out (they carry their own share, added to it). The excesses of a kind
      are used only when every past episode (at least two) peaked on average and their mean is more than 3
      times that spread over the square root of the number of days: without that, noise alone would put a
      small peak before every month end of every series."""
    hist, fut = np.zeros(dev.size), np.zeros(week_future.size)
    if calendar is None:
        return hist, fut
    cal = calendar
    ordinary = ~cal.special_past
    spread = _MAD_SCALE * float(np.median(np.abs(dev[ordinary] - np.median(dev[ordinary]))))
    holidays_past = cal.holiday_past
    busy_past = holidays_past & (week_past >= 1.0)
    if busy_past.sum() >= 3:
        value = float(np.median(dev[busy_past]))
        same_side = float(np.mean(np.sign(dev[busy_past]) == np.sign(value)))
        if abs(value) > 3.0 * spread / np.sqrt(busy_past.sum()) and same_side >= 0.75:
            hist[busy_past] += value
            fut[cal.holiday_future & (week_future >= 1.0)] += value
    for flag_past, flag_future in ((cal.quarter_past, cal.quarter_future), (cal.month_past, cal.month_future)):
        working = flag_past & ~holidays_past
        episodes = [dev[working & (cal.month_of == month)] for month in np.unique(cal.month_of[working])]
        if len(episodes) < 2:
            continue
        # A peak every past episode showed, and larger than the day-to-day noise could make by chance.
        excess = float(np.mean(dev[working]))
        if min(float(e.mean()) for e in episodes) <= 0.0 or excess <= 3.0 * spread / np.sqrt(working.sum()):
            continue
        for left in np.unique(cal.left_past[working]):
            value = max(float(np.median(dev[working & (cal.left_past == left)])), 0.0)
            hist[flag_past & (cal.left_past == left)] += value
            fut[flag_future & (cal.left_future == left)] += value
    return hist, fut


def _centred_median(v: FloatArray, width: int, skip: np.ndarray | None = None) -> FloatArray:
    """Median over a centred window of ``width`` days (shorter at the edges), leaving out the days where
    ``skip`` is True (where a window holds nothing else, the day's own value)."""
    half = width // 2
    if skip is None or not skip.any():
        padded = np.pad(v, half, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
        return np.asarray(np.median(windows, axis=1), dtype=np.float64)
    padded = np.pad(np.where(skip, np.nan, v), half, mode="constant", constant_values=np.nan)
    ordered = np.sort(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)  # NaNs last
    count = (~np.isnan(ordered)).sum(axis=1)
    lower = np.take_along_axis(ordered, np.maximum(count - 1, 0)[:, None] // 2, axis=1)[:, 0]
    upper = np.take_along_axis(ordered, (count // 2)[:, None], axis=1)[:, 0]
    return np.asarray(np.where(count > 0, (lower + upper) / 2.0, v), dtype=np.float64)


def _weekly_profile(v: FloatArray, base: FloatArray, season: int) -> FloatArray:
    """Relative level per position in the cycle (position = index mod ``season``): the median ratio of ``v``
    to its centred median ``base``, scaled to a mean of 1. Days whose median is under 1 point (an idle series
    near zero) count as ratio 1."""
    ratio = np.divide(v, base, out=np.ones_like(v), where=base > 1.0)
    profile = np.array([np.median(ratio[k::season]) if ratio[k::season].size else 1.0 for k in range(season)])
    profile = np.maximum(profile, 1e-3)
    return np.asarray(profile / profile.mean(), dtype=np.float64)


def _clip_spikes(z: FloatArray, k: float) -> FloatArray:
    """One-day spikes and dips are replaced by the mean of the two neighbouring days.

    A day is a spike when it is more than ``k`` robust deviations above both neighbours (a dip: below both),
    counting from the series' typical day-to-day change (its median), so the top of a steep fill and the
    first day after its clean-up are not taken for a spike and a dip; a step such as a clean-up sits level
    with one neighbour, so it is left alone. The last day has one neighbour: it is a spike when it is that
    far above both days before it, and then it takes the day before's value (the forecast would otherwise
    bend its whole line up to one incident on the last day; if it was the first day of a higher level, the
    next run sees a step). A fall on the last day is kept: it may be a clean-up."""
    if z.size < 3:
        return z
    diffs = np.diff(z)
    typical = float(np.median(diffs))
    scale = _MAD_SCALE * float(np.median(np.abs(diffs - typical))) / np.sqrt(2.0)
    if scale <= 0:
        return z
    left, right = np.concatenate([z[:1], z[:-1]]), np.concatenate([z[1:], z[-1:]])
    rise, fall = z - left - typical, right - z - typical  # each 0 on a steady course
    limit = k * scale
    odd = ((rise > limit) & (fall < -limit)) | ((rise < -limit) & (fall > limit))
    odd[[0, -1]] = False  # an end day has one neighbour: cannot tell a spike from a step
    out = np.where(odd, (left + right) / 2.0, z)
    if z[-1] - z[-2] - typical > limit and z[-1] - z[-3] - 2.0 * typical > limit:
        out[-1] = out[-2]
    return out


def _centred_mean(v: FloatArray, width: int, *, shift: int) -> FloatArray:
    """At each index ``i``: the mean of ``v[i + shift : i + shift + width]`` (cut at the ends)."""
    sums = np.concatenate([[0.0], np.cumsum(v)])
    lo = np.clip(np.arange(v.size) + shift, 0, v.size)
    hi = np.clip(lo + width, 0, v.size)
    lo = np.minimum(lo, hi - 1)
    return np.asarray((sums[hi] - sums[lo]) / np.maximum(hi - lo, 1), dtype=np.float64)


def _line(x: FloatArray, y: FloatArray) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    slope = float(np.sum((x - xm) * (y - ym)) / sxx) if sxx > 0 else 0.0
    return slope, float(ym - slope * xm)


def _segment_sse(sums: dict[str, FloatArray], a: np.ndarray, b: np.ndarray) -> FloatArray:
    """Residual sum of squares of the least-squares line over ``z[a:b]``, for arrays of bounds."""
    n = (b - a).astype(np.float64)

    def total(name: str) -> FloatArray:
        return sums[name][b] - sums[name][a]

    sx, sy, sxx, sxy, syy = total("x"), total("y"), total("xx"), total("xy"), total("yy")
    cxx = sxx - sx * sx / n
    cxy = sxy - sx * sy / n
    cyy = syy - sy * sy / n
    with np.errstate(divide="ignore", invalid="ignore"):
        explained = np.where(cxx > 1e-9, cxy * cxy / np.where(cxx > 1e-9, cxx, 1.0), 0.0)
    return np.maximum(cyy - explained, 0.0)


def _best_break(z: FloatArray, min_segment: int, penalty: float) -> int | None:
    """The start of a new segment in ``z`` if splitting there beats one line by more than ``penalty`` in BIC."""
    n = z.size
    sums = running_sums(z)
    cand = np.arange(min_segment, n - min_segment + 1)
    if cand.size == 0:
        return None
    zeros, ends = np.zeros_like(cand), np.full_like(cand, n)
    split = _segment_sse(sums, zeros, cand) + _segment_sse(sums, cand, ends)
    whole = float(_segment_sse(sums, np.array([0]), np.array([n]))[0])
    i = int(np.argmin(split))
    floor = 1e-9 * max(float(np.sum(z * z)), 1.0)
    bic_whole = n * np.log(max(whole / n, floor))
    bic_split = n * np.log(max(float(split[i]) / n, floor)) + 3 * np.log(n)
    return int(cand[i]) if bic_whole - bic_split > penalty else None


def _cleanup_cycle(
    z: FloatArray, drop: float, k: float, min_segment: int, season: int = SEASON
) -> tuple[int, float, float, float] | None:
    """``(index of the last clean-up, median days between clean-ups, median fill rate per day, daily creep of
    the level each fill starts from)`` for a regular fill-and-clean-up series, else None."""
    diffs = np.diff(z)
    scale = _MAD_SCALE * float(np.median(np.abs(diffs - np.median(diffs))))
    # A clean-up is a fall of the 3-day mean: after a one-day dip the level comes back, and a clean-up
    # spread over two days (or next to a bad sample) is still one fall.
    step = _centred_mean(z, 3, shift=0) - _centred_mean(z, 3, shift=-3)
    step[:1] = 0.0
    candidates = np.flatnonzero((step < -drop) & (step < -k * max(scale, 1e-9)))
    if candidates.size < 2:
        return None
    candidates = candidates[step[candidates] <= 0.5 * step[candidates].min()]  # clean-ups are alike
    kept: list[int] = []
    for i in candidates[np.argsort(step[candidates], kind="stable")]:  # deepest first, one per cycle
        if all(abs(int(i) - j) > season for j in kept):
            kept.append(int(i))
    drops = np.array(sorted(kept))
    if drops.size < 2:
        return None
    spacing = np.diff(drops).astype(np.float64)
    period = float(np.median(spacing))
    if period < min_segment or np.any(np.abs(spacing - period) > 0.25 * period):
        return None
    rates = [_line(np.arange(a, b, dtype=np.float64), z[a:b])[0] for a, b in pairwise(drops)]
    if min(rates) <= 0:
        return None
    rate = float(np.median(rates))
    # Where each fill starts from (its line at the clean-up day): a floor that creeps up, as files that
    # are never cleaned up pile up, is carried on to the clean-ups to come.
    starts = np.array([z[a:b].mean() - rate * ((a + b - 1) / 2.0 - a) for a, b in pairwise(drops)])
    creep = _line(drops[:-1].astype(np.float64), starts)[0] if starts.size >= 3 else 0.0
    return int(drops[-1]), period, rate, float(creep)


register_model(
    "recent_trend",
    RecentTrend,
    settings={"country": "country"},
    # Hourly: four weeks of hours, the day is its season, change points at least two days apart.
    grains={"hourly": {"season": 24, "window": 672, "min_segment": 48}},
)
