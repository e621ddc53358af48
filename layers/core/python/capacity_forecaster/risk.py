"""Risk rules: when each series' champion forecast crosses its threshold, how urgent that is, and the finding.

Pure functions over DataFrames: champion forecasts and recent actuals in, the risk register out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Final

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from capacity_forecaster.forecasting.baselines import UPPER_Q
from capacity_forecaster.schema import RISK_REGISTER

SEVERITY_ORDER: Final[dict[str, int]] = {"critical": 0, "high": 1, "medium": 2, "low": 3}
UPPER_Z: Final = float(ndtri(UPPER_Q))
"""Standard normal quantile of the band's upper edge (1.2816 for the P90): (P90 - P50) / UPPER_Z is the spread."""
SHIFT_DRAWS: Final = 64
"""Equally likely values of the forecast's carried-over error that ``breach_probability`` averages over."""
NEGLIGIBLE_SPREADS: Final = 8.0
"""A series whose P50 stays more than this many spreads under the threshold every day has no chance to breach."""


def last_actuals(daily: pd.DataFrame, *, saturation_days: int, thresholds: Mapping[str, float]) -> pd.DataFrame:
    """Per series: last observed day and P95, and whether each of the last N observed days is at the threshold.

    Imputed days do not count as observations. Output columns: server_id, metric, last_actual_date, last_p95,
    already_breaching.
    """
    observed = daily[~daily["imputed"]] if "imputed" in daily.columns else daily
    observed = observed.sort_values(["server_id", "metric", "dt"])
    tail = observed.groupby(["server_id", "metric"], sort=False).tail(saturation_days)
    threshold = tail["metric"].map(thresholds).astype("float64")
    tail = tail.assign(at_threshold=tail["p95"] >= threshold)
    grouped = tail.groupby(["server_id", "metric"], sort=True)
    out = pd.DataFrame(
        {
            "last_actual_date": grouped["dt"].max(),
            "last_p95": grouped["p95"].last(),
            "already_breaching": grouped["at_threshold"].all() & (grouped.size() >= saturation_days),
        }
    ).reset_index()
    return out


def sustained(over: pd.Series, keys: pd.DataFrame, days: int) -> pd.Series:
    """Days that belong to a run of at least ``days`` consecutive True values within each series.

    ``over`` is a bool per forecast day, ordered by series and day; ``keys`` holds the series columns (same
    index). A series shorter than ``days`` needs all of its days over. ``days`` 1 returns ``over`` itself.
    """
    if days <= 1:
        return over
    series = keys.ne(keys.shift()).any(axis=1).cumsum()
    run = (over.ne(over.shift()) | series.ne(series.shift())).cumsum()
    run_length = over.groupby(run).transform("size")
    needed = np.minimum(days, series.groupby(series).transform("size"))
    return over & (run_length >= needed)


def breach_dates(forecasts: pd.DataFrame, thresholds: Mapping[str, float], *, breach_days: int = 1) -> pd.DataFrame:
    """First day P50 and P90 reach the threshold, and the P50 peak, per series of champion forecasts.

    With ``breach_days`` N above 1, a breach is the first day of N consecutive forecast days at or over the
    threshold (a shorter excursion does not count; the run must end inside the horizon).
    Input columns: server_id, metric, model, ds, p50, p90. Output: server_id, metric, model, threshold,
    breach_date_p50, breach_date_p90, peak_p50, peak_date, peak_p90.
    """
    fc = forecasts.sort_values(["server_id", "metric", "ds"]).reset_index(drop=True)
    fc["threshold"] = fc["metric"].map(thresholds).astype("float64")
    keys = fc[["server_id", "metric"]]
    fc["ds50"] = fc["ds"].where(sustained(fc["p50"] >= fc["threshold"], keys, breach_days))
    fc["ds90"] = fc["ds"].where(sustained(fc["p90"] >= fc["threshold"], keys, breach_days))
    grouped = fc.groupby(["server_id", "metric"], sort=True)
    peak_idx = grouped["p50"].idxmax()
    out = pd.DataFrame(
        {
            "model": grouped["model"].first(),
            "threshold": grouped["threshold"].first(),
            "breach_date_p50": grouped["ds50"].min(),
            "breach_date_p90": grouped["ds90"].min(),
            "peak_p50": fc.loc[peak_idx.to_numpy(), "p50"].to_numpy(),
            "peak_date": fc.loc[peak_idx.to_numpy(), "ds"].to_numpy(),
            "peak_p90": grouped["p90"].max(),
        }
    ).reset_index()
    return out


def run_probability(p_over: np.ndarray, days: int) -> np.ndarray:
    """Chance that a run of ``days`` consecutive days over the threshold has happened by each step.

    ``p_over`` is (series, steps): each day's chance of being over, days independent. A Markov chain over the
    length of the current run (0 to ``days`` - 1) carries the chance of no completed run yet; the output has
    the same shape, non-decreasing along the steps.
    """
    n, steps = p_over.shape
    current = np.zeros((n, max(days, 1)))
    current[:, 0] = 1.0
    done = np.zeros(n)
    out = np.empty((n, steps))
    for t in range(steps):
        q = p_over[:, t]
        done = done + current[:, -1] * q
        restart = current.sum(axis=1) * (1.0 - q)
        current = np.concatenate([restart[:, None], current[:, :-1] * q[:, None]], axis=1)
        out[:, t] = done
    return out


def breach_probability(
    forecasts: pd.DataFrame, thresholds: Mapping[str, float], *, breach_days: int = 1, likely: float = 1 / 3
) -> pd.DataFrame:
    """Per series: the chance of a breach inside the horizon, and the day a breach becomes that likely.

    A breach is ``breach_days`` consecutive days at or over the threshold (a horizon shorter than that needs
    all of its days; a series with fewer forecast days than the others counts its missing days as under).
    Each day's value is read from the band as a normal around P50 with the spread of its upper half,
    (P90 - P50) / 1.2816, split in two parts: the first day's spread is day-to-day noise, independent from
    day to day; what the band widens beyond it is the forecast's level error, carried from
    one day to the next (one draw for the whole horizon: the chance is averaged over ``SHIFT_DRAWS`` equally
    likely values of it, the midpoints of as many equal slices of the normal). Without a band (P90 = P50) the
    chance is 1 or 0: whether P50 itself has the run.

    Output: server_id, metric, breach_probability (0..1), likely_breach_date: the first day of the run by
    whose end the chance reaches ``likely`` (null when it never does).
    """
    fc = forecasts.sort_values(["server_id", "metric", "ds"])
    grouped = fc.groupby(["server_id", "metric"], sort=True)
    row = grouped.ngroup().to_numpy()
    step = grouped.cumcount().to_numpy()
    keys = grouped.size().index
    shape = (len(keys), int(step.max()) + 1 if len(step) else 0)
    p50 = np.full(shape, -np.inf)
    p50[row, step] = fc["p50"].to_numpy(dtype=float)
    spread = np.zeros(shape)
    spread[row, step] = np.maximum(fc["p90"].to_numpy(dtype=float) - fc["p50"].to_numpy(dtype=float), 0.0) / UPPER_Z
    days = np.full(shape, np.datetime64("NaT", "ns"))
    days[row, step] = fc["ds"].to_numpy(dtype="datetime64[ns]")
    threshold = keys.get_level_values("metric").map(thresholds).to_numpy(dtype=float)[:, None]
    noise = spread[:, :1]
    carried = np.sqrt(np.maximum(spread**2 - noise**2, 0.0))
    run = min(breach_days, shape[1])
    chance = np.zeros(shape)
    near = np.flatnonzero((p50 + NEGLIGIBLE_SPREADS * spread >= threshold).any(axis=1))
    gap_now, noise_near, carried_near = (threshold - p50)[near], noise[near], carried[near]
    for z in ndtri((np.arange(SHIFT_DRAWS) + 0.5) / SHIFT_DRAWS):
        gap = gap_now - z * carried_near
        with np.errstate(divide="ignore", invalid="ignore"):
            p_over = np.where(noise_near > 0, ndtr(-gap / noise_near), (gap <= 0).astype(float))
        chance[near] += run_probability(p_over, run) / SHIFT_DRAWS
    chance = np.clip(chance, 0.0, 1.0)
    reached = chance >= likely
    first = np.where(reached.any(axis=1), reached.argmax(axis=1), -1)
    start = np.maximum(first - (run - 1), 0)
    likely_date = np.where(first >= 0, days[np.arange(len(keys)), start], np.datetime64("NaT", "ns"))
    return pd.DataFrame(
        {
            "server_id": keys.get_level_values("server_id"),
            "metric": keys.get_level_values("metric"),
            "breach_probability": chance[:, -1] if shape[1] else np.zeros(len(keys)),
            "likely_breach_date": pd.to_datetime(likely_date),
        }
    )


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of True as (start, stop) index pairs, stop exclusive."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def peak_kind(days: Sequence[pd.Timestamp]) -> str:
    """quarter-end when every peak falls in the last 7 days of Mar/Jun/Sep/Dec (or the 2 days after),
    month-end when every peak falls in the last 3 days of a month (or the 2 days after), recurring otherwise."""

    def near_end(day: pd.Timestamp, window: int, quarter: bool) -> bool:
        days_left = day.days_in_month - day.day
        if days_left < window:
            month = day.month
        elif day.day <= 2:
            month = (day - pd.Timedelta(days=day.day)).month
        else:
            return False
        return not quarter or month % 3 == 0

    if days and all(near_end(d, 7, True) for d in days):
        return "quarter-end"
    if days and all(near_end(d, 3, False) for d in days):
        return "month-end"
    return "recurring"


def seasonal_peaks(forecasts: pd.DataFrame, thresholds: Mapping[str, float], *, breach_days: int = 1) -> pd.DataFrame:
    """Per series: whether its breach comes from recurring peaks rather than trend, and the peaks' dates.

    A breach is seasonal when the P90 forecast crosses the threshold in episodes that end inside the horizon,
    is over the threshold on less than half the days from the first crossing on, and the median P90 stays
    under the threshold. With ``breach_days`` above 1, only runs of that many days over the threshold count as
    episodes (as in ``breach_dates``). Output: server_id, metric, seasonal_peak, seasonal_peak_kind,
    seasonal_peak_dates (comma-separated ISO days of each episode's highest P90; empty when not seasonal).
    """
    rows = []
    ordered = forecasts.sort_values(["server_id", "metric", "ds"])
    for (server, metric), group in ordered.groupby(["server_id", "metric"], sort=True):
        p90 = group["p90"].to_numpy(dtype=float)
        threshold = float(thresholds[str(metric)])
        over = p90 >= threshold
        if breach_days > 1:
            needed = min(breach_days, len(p90))
            over = np.zeros_like(over)
            for start, stop in _runs(p90 >= threshold):
                over[start:stop] = stop - start >= needed
        seasonal, kind, dates = False, "", ""
        if over.any():
            runs = _runs(over)
            first = runs[0][0]
            episodic = runs[0][1] < len(p90) and over[first:].mean() < 0.5 and float(np.median(p90)) < threshold
            if episodic:
                ds = group["ds"].to_numpy()
                peaks = [pd.Timestamp(ds[start + int(np.argmax(p90[start:stop]))]) for start, stop in runs]
                seasonal, kind = True, peak_kind(peaks)
                dates = ",".join(d.date().isoformat() for d in peaks)
        rows.append((server, metric, seasonal, kind, dates))
    return pd.DataFrame(
        rows, columns=["server_id", "metric", "seasonal_peak", "seasonal_peak_kind", "seasonal_peak_dates"]
    )


def severity(
    already_breaching: pd.Series,
    days_p50: pd.Series,
    days_p90: pd.Series,
    *,
    critical_days: int,
    high_days: int | None = None,
    medium_days: int | None = None,
    days_likely: pd.Series | None = None,
) -> pd.Series:
    """critical: breaching now or P50 within ``critical_days``; high: P50, or a likely breach (``days_likely``:
    days to the day a breach becomes likely), within ``high_days``; medium: P90 within ``medium_days``; low
    otherwise. None (or 0) for ``high_days``/``medium_days`` means the whole horizon."""
    p50 = days_p50.astype("float64").fillna(np.inf).to_numpy()
    p90 = days_p90.astype("float64").fillna(np.inf).to_numpy()
    likely = np.inf if days_likely is None else days_likely.astype("float64").fillna(np.inf).to_numpy()
    soonest_high = np.minimum(p50, likely)
    tier = np.select(
        [
            already_breaching.to_numpy(dtype=bool) | (p50 <= critical_days),
            np.isfinite(soonest_high) & (soonest_high <= (high_days or np.inf)),
            np.isfinite(p90) & (p90 <= (medium_days or np.inf)),
        ],
        ["critical", "high", "medium"],
        default="low",
    )
    return pd.Series(tier, index=already_breaching.index, dtype=str)


def findings(
    register: pd.DataFrame, *, overprovisioned_ratio: float, headroom: Mapping[str, float] | None = None
) -> pd.Series:
    """Per server, as Compute Optimizer reports it: under-provisioned when any metric is critical or high,
    over-provisioned when every metric's peak P90 plus its headroom stays under ratio x threshold, optimized
    otherwise.

    ``register`` needs server_id, metric, severity, threshold and peak_p90; ``headroom`` maps a metric to the
    percentage added on top of the forecast before comparing (Compute Optimizer's headroom; none by default).
    """
    margin = 1.0 + register["metric"].map(headroom or {}).fillna(0.0).astype("float64") / 100.0
    frame = register.assign(
        hot=register["severity"].isin(["critical", "high"]),
        cool=register["peak_p90"] * margin < register["threshold"] * overprovisioned_ratio,
    )
    per_server = frame.groupby("server_id").agg(hot=("hot", "any"), cool=("cool", "all"))
    label = np.select(
        [per_server["hot"], per_server["cool"]],
        ["under-provisioned", "over-provisioned"],
        default="optimized",
    )
    mapping = pd.Series(label, index=per_server.index)
    return register["server_id"].map(mapping).astype(str)


SHORT_STATUS: Final = "insufficient_history"
"""The model_metrics status of a champion fitted on a series too short to backtest."""
SHORT_CAP: Final = "medium"
"""The highest severity a short-history series gets unless it is breaching now."""


def history_days(n_history: pd.Series, steps_per_day: int = 1) -> pd.Series:
    """Days of history from model_metrics' ``n_history`` (steps: days, or hours with ``steps_per_day`` 24, rounded
    up to whole days); null where it is null."""
    steps = pd.to_numeric(n_history, errors="coerce").astype("Int64")
    return (-(-steps // steps_per_day)).astype("Int32")


def short_histories(keys: pd.DataFrame, statuses: pd.DataFrame | None) -> pd.DataFrame:
    """Per series of ``keys`` (server_id, metric): ``short_history`` (its champion's status is insufficient_history)
    and ``history_days`` (from ``statuses`` when it has that column, else null).

    ``statuses``: the champion rows' server_id, metric, status [, history_days] (None: no short series)."""
    out = keys[["server_id", "metric"]].copy()
    if statuses is None or statuses.empty:
        return out.assign(short_history=False, history_days=pd.Series(pd.NA, index=out.index, dtype="Int32"))
    cols = [c for c in ("server_id", "metric", "status", "history_days") if c in statuses.columns]
    merged = out.merge(statuses[cols].drop_duplicates(["server_id", "metric"]), on=["server_id", "metric"], how="left")
    days = merged["history_days"] if "history_days" in merged.columns else pd.Series(pd.NA, index=merged.index)
    return merged.assign(
        short_history=merged["status"].eq(SHORT_STATUS).fillna(False).astype(bool),
        history_days=pd.to_numeric(days, errors="coerce").astype("Int32"),
    )[["server_id", "metric", "short_history", "history_days"]]


def capped_severity(tier: pd.Series, short: pd.Series, already_breaching: pd.Series) -> pd.Series:
    """``tier`` with short-history series lowered to :data:`SHORT_CAP` when above it, unless breaching now (a
    saturated series stays critical: its actuals say so, not its forecast)."""
    above = tier.map(SEVERITY_ORDER) < SEVERITY_ORDER[SHORT_CAP]
    lower = short.to_numpy(dtype=bool) & above.to_numpy(dtype=bool) & ~already_breaching.to_numpy(dtype=bool)
    return tier.where(~lower, SHORT_CAP)


def build_risk_register(
    forecasts: pd.DataFrame,
    daily: pd.DataFrame,
    *,
    run_date: date,
    thresholds: Mapping[str, float],
    critical_days: int,
    saturation_days: int,
    overprovisioned_ratio: float,
    high_days: int | None = None,
    medium_days: int | None = None,
    headroom: Mapping[str, float] | None = None,
    breach_days: int = 1,
    likely: float = 1 / 3,
    statuses: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The risk register for one run: champion forecasts plus recent actuals -> one row per series.

    ``forecasts`` holds the run's forecasts (only champion rows are used); ``daily`` the curated daily P95.
    Saturated series (at the threshold on each of the last ``saturation_days`` observed days) are reported as
    breaching now, with days to breach 0, rather than scored on forecasts past the cap. ``high_days`` and
    ``medium_days`` bound the high and medium tiers (None: the whole horizon); ``headroom`` is the per-metric
    margin (percent) the over-provisioned finding adds to the forecast. Breaches that come from recurring
    month-end or quarter-end peaks rather than trend are flagged with the peaks' dates. ``breach_days`` is the
    number of consecutive forecast days at or over the threshold that make a breach (1: any day).
    ``breach_probability`` is the chance of such a breach inside the horizon (1 for a saturated series); a
    breach at least ``likely`` probable counts as high even when P50 stays under the threshold (see
    :func:`breach_probability`). ``statuses`` holds the champion rows of the run's model metrics (server_id,
    metric, status, optionally history_days; None: no series is short): a series whose champion has status
    insufficient_history is flagged ``short_history`` and its severity capped at medium unless breaching now
    (:func:`capped_severity`); its finding follows the capped severity.
    """
    champions = forecasts[forecasts["is_champion"]]
    dates = breach_dates(champions, thresholds, breach_days=breach_days)
    chances = breach_probability(champions, thresholds, breach_days=breach_days, likely=likely)
    actuals = last_actuals(daily, saturation_days=saturation_days, thresholds=thresholds)
    reg = dates.merge(chances, on=["server_id", "metric"], how="left").merge(
        actuals, on=["server_id", "metric"], how="left"
    )
    reg["already_breaching"] = reg["already_breaching"].fillna(False).astype(bool)
    reg["breach_probability"] = reg["breach_probability"].where(~reg["already_breaching"], 1.0)
    origin = pd.Timestamp(run_date)
    days_to: dict[str, pd.Series] = {}
    for col in ("breach_date_p50", "breach_date_p90", "likely_breach_date"):
        reg[col] = reg[col].where(~reg["already_breaching"], reg["last_actual_date"])
        days_to[col] = (reg[col] - origin).dt.days.clip(lower=0).astype("Int32").where(reg[col].notna())
    reg["days_to_breach_p50"] = days_to["breach_date_p50"]
    reg["days_to_breach_p90"] = days_to["breach_date_p90"]
    reg["severity"] = severity(
        reg["already_breaching"],
        reg["days_to_breach_p50"],
        reg["days_to_breach_p90"],
        critical_days=critical_days,
        high_days=high_days,
        medium_days=medium_days,
        days_likely=days_to["likely_breach_date"],
    )
    history = short_histories(reg, statuses)
    reg["short_history"] = history["short_history"].set_axis(reg.index)
    reg["history_days"] = history["history_days"].set_axis(reg.index)
    reg["severity"] = capped_severity(reg["severity"], reg["short_history"], reg["already_breaching"])
    reg["finding"] = findings(reg, overprovisioned_ratio=overprovisioned_ratio, headroom=headroom)
    reg = reg.merge(
        seasonal_peaks(champions, thresholds, breach_days=breach_days), on=["server_id", "metric"], how="left"
    )
    # A saturated series is breaching now: its breach is not a recurring peak.
    saturated = reg["already_breaching"]
    reg["seasonal_peak"] = reg["seasonal_peak"].astype(bool) & ~saturated
    for col in ("seasonal_peak_kind", "seasonal_peak_dates"):
        reg[col] = reg[col].where(~saturated, "")
    reg["run_date"] = origin
    order = reg["severity"].map(SEVERITY_ORDER)
    reg = reg.assign(_order=order).sort_values(
        ["_order", "days_to_breach_p50", "days_to_breach_p90", "server_id", "metric"], na_position="last"
    )
    return reg.drop(columns="_order")[[*RISK_REGISTER.column_names, "run_date"]].reset_index(drop=True)
