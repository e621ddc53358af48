"""Rightsizing and consolidation: utilisation profiles, downsize targets, a packing plan and its savings.

Pure functions over DataFrames: curated daily P95, the risk register and the server inventory in; profiles and
the consolidation plan out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from capacity_forecaster.schema import CONSOLIDATION, SERVERS

PROFILE_METRICS: Final[tuple[str, ...]] = ("cpu", "mem")
FEATURE_KINDS: Final[tuple[str, ...]] = ("mean", "p95", "weekly", "trend", "volatility")
FEATURES: Final[list[str]] = [f"{m}_{k}" for m in PROFILE_METRICS for k in FEATURE_KINDS]

# Words for a cluster centroid (percentage points of utilisation).
IDLE_P95: Final[float] = 15.0
GROWING_PER_30_DAYS: Final[float] = 3.0
SPIKY_VOLATILITY: Final[float] = 6.0
WEEKLY_CYCLE: Final[float] = 10.0
BUSY_MEAN: Final[float] = 50.0


@dataclass(frozen=True)
class Size:
    """An instance size of the cost table: vCPUs, memory and the monthly price."""

    cores: int
    memory_gib: float
    monthly_cost: float


# ---------------------------------------------------------------------------------------------- profiles


def server_features(daily: pd.DataFrame, *, days: int) -> pd.DataFrame:
    """Per server, over its last ``days`` observed days of cpu and mem: mean and P95 level, weekly amplitude
    (range of the day-of-week means), trend (points per 30 days) and volatility (day-to-day change, standard
    deviation / sqrt 2). Imputed days are left out. Index server_id, columns :data:`FEATURES`.
    """
    obs = daily[~daily["imputed"]] if "imputed" in daily.columns else daily
    obs = obs[obs["metric"].isin(PROFILE_METRICS)].sort_values(["server_id", "metric", "dt"])
    obs = obs.groupby(["server_id", "metric"], sort=False).tail(days)
    keys = ["server_id", "metric"]
    t = (obs["dt"] - obs["dt"].min()).dt.days.astype("float64")
    y = obs["p95"].astype("float64")
    frame = obs[keys].assign(t=t, y=y, dow=obs["dt"].dt.day_of_week)
    grouped = frame.groupby(keys)
    tc = frame["t"] - grouped["t"].transform("mean")
    yc = frame["y"] - grouped["y"].transform("mean")
    sums = frame[keys].assign(ty=tc * yc, tt=tc * tc).groupby(keys)[["ty", "tt"]].sum()
    slope = (sums["ty"] / sums["tt"].replace(0.0, np.nan)).fillna(0.0) * 30.0
    dow = frame.groupby([*keys, "dow"])["y"].mean().groupby(level=[0, 1])
    diffs = frame.assign(d=grouped["y"].diff()).groupby(keys)["d"].std().fillna(0.0) / np.sqrt(2.0)
    long = pd.DataFrame(
        {
            "mean": grouped["y"].mean(),
            "p95": grouped["y"].quantile(0.95),
            "weekly": dow.max() - dow.min(),
            "trend": slope,
            "volatility": diffs,
        }
    )
    wide = pd.DataFrame(long.unstack("metric"))
    wide.columns = pd.Index([f"{pair[1]}_{pair[0]}" for pair in wide.columns.to_list()])
    return pd.DataFrame(wide.reindex(columns=FEATURES)).fillna(0.0).sort_index()


def cluster_profiles(features: pd.DataFrame, *, k_min: int, k_max: int, seed: int = 0) -> tuple[pd.Series, int, float]:
    """K-Means on standardised features, k chosen by the best silhouette in ``k_min..k_max``.

    Returns the cluster per server, k and its silhouette (NaN when fewer than 3 distinct servers: one cluster).
    One thread: KMeans' OpenMP threads spin on shared cores (1,000 servers' fits took 240 s on 2 busy cores,
    against 1.5 s on one thread for 10,000 points).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _cluster_profiles(features, k_min=k_min, k_max=k_max, seed=seed)


def _cluster_profiles(features: pd.DataFrame, *, k_min: int, k_max: int, seed: int) -> tuple[pd.Series, int, float]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler

    distinct = len(features.drop_duplicates())
    if distinct < 3:
        return pd.Series(0, index=features.index, dtype="int64"), 1, float("nan")
    x = StandardScaler().fit_transform(features.to_numpy(dtype=float))
    best: tuple[float, int, np.ndarray] | None = None
    for k in range(max(2, k_min), min(k_max, distinct - 1) + 1):
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
        score = float(silhouette_score(x, labels))
        if best is None or score > best[0] + 1e-9:
            best = (score, k, labels)
    if best is None:
        return pd.Series(0, index=features.index, dtype="int64"), 1, float("nan")
    score, k, labels = best
    return pd.Series(labels, index=features.index, dtype="int64"), k, score


def describe(centroid: Mapping[str, float]) -> str:
    """Words for a profile centroid: idle, growing, spiky, weekly cycle, steady busy or steady."""
    level = max(centroid["cpu_mean"], centroid["mem_mean"])
    if centroid["cpu_p95"] < IDLE_P95 and centroid["mem_p95"] < 2 * IDLE_P95:
        return "idle"
    if max(centroid["cpu_trend"], centroid["mem_trend"]) >= GROWING_PER_30_DAYS:
        return "growing"
    if max(centroid["cpu_volatility"], centroid["mem_volatility"]) >= SPIKY_VOLATILITY:
        return "spiky"
    if max(centroid["cpu_weekly"], centroid["mem_weekly"]) >= WEEKLY_CYCLE:
        return "weekly cycle"
    return "steady busy" if level >= BUSY_MEAN else "steady"


def name_profiles(features: pd.DataFrame, labels: pd.Series) -> pd.Series:
    """Per server, the words describing its cluster's centroid; clusters with the same words get a number."""
    centroids = features.groupby(labels).mean()
    words = {int(str(c)): describe({str(k): float(v) for k, v in row.items()}) for c, row in centroids.iterrows()}
    seen: dict[str, int] = {}
    names = {}
    for cluster in sorted(words, key=lambda c: (words[c], -int((labels == c).sum()), c)):
        seen[words[cluster]] = seen.get(words[cluster], 0) + 1
        names[cluster] = words[cluster] if seen[words[cluster]] == 1 else f"{words[cluster]} {seen[words[cluster]]}"
    return labels.map(names).astype(str)


def idle_servers(daily: pd.DataFrame, *, days: int, cpu_p95: float, mem_p95: float) -> pd.Series:
    """Servers whose observed daily cpu P95 stayed under ``cpu_p95`` and mem P95 under ``mem_p95`` on each of
    their last ``days`` observed days (bool per server_id)."""
    obs = daily[~daily["imputed"]] if "imputed" in daily.columns else daily
    obs = obs[obs["metric"].isin(PROFILE_METRICS)].sort_values(["server_id", "metric", "dt"])
    peak = obs.groupby(["server_id", "metric"]).tail(days).groupby(["server_id", "metric"])["p95"].max()
    wide = peak.unstack("metric").reindex(columns=list(PROFILE_METRICS))
    return ((wide["cpu"] < cpu_p95) & (wide["mem"] < mem_p95)).rename("idle")


# ------------------------------------------------------------------------------------------ recommendations


def _limits(thresholds: Mapping[str, float], headroom: Mapping[str, float]) -> dict[str, float]:
    """The utilisation (share of capacity) a server may reach at its P90 peak: threshold less the headroom."""
    return {m: thresholds[m] / 100.0 / (1.0 + headroom.get(m, 0.0) / 100.0) for m in PROFILE_METRICS}


_EC2_TYPE = re.compile(r"^([a-z]+?)(\d+)([a-z-]*)\.([a-z0-9]+)$")


def size_family(instance_type: str) -> tuple[str, ...] | None:
    """What a type can be resized to without changing its processor or billing model: EC2's generation and
    attributes (``m6i.xlarge`` -> ("6", "i"), so m6i, c6i and r6i sizes), burstable types (``t3a``) kept apart;
    None for a name that is not an EC2 type (any size of the table then)."""
    match = _EC2_TYPE.match(instance_type.strip().lower())
    if match is None:
        return None
    kind, generation, attributes = match.group(1), match.group(2), match.group(3)
    return ("t", generation, attributes) if kind == "t" else (generation, attributes)


def smallest_size(
    cores_needed: float,
    mem_needed: float,
    sizes: Mapping[str, Size],
    limits: Mapping[str, float],
    current_type: str | None = None,
) -> str | None:
    """The cheapest size on which the demand (cores, GiB at the P90 peak) stays within the limits; with
    ``current_type``, only sizes of its :func:`size_family` (an m5 becomes an m5, c5 or r5, never a t4g)."""
    family = size_family(current_type) if isinstance(current_type, str) else None
    fits = [
        (size.monthly_cost, size.cores, name)
        for name, size in sizes.items()
        if cores_needed <= size.cores * limits["cpu"]
        and mem_needed <= size.memory_gib * limits["mem"]
        and (family is None or size_family(name) == family)
    ]
    return min(fits)[2] if fits else None


def plan_consolidation(
    servers: pd.DataFrame,
    register: pd.DataFrame,
    profiles: pd.Series,
    idle: pd.Series,
    *,
    sizes: Mapping[str, Size],
    thresholds: Mapping[str, float],
    headroom: Mapping[str, float],
) -> pd.DataFrame:
    """One row per server: consolidate (its workload moves to ``target_server_id``), downsize (to the cheapest
    ``target_instance_type`` that holds its P90 peak within threshold less headroom) or keep, with the monthly
    savings.

    Idle servers are packed first-fit decreasing onto servers of the same environment and data centre that are
    not under-provisioned, on their forecast P90 peak of cpu cores and mem GiB; a host never goes past its
    threshold less headroom. An idle server that fits nowhere stays and becomes a host itself. Over-provisioned
    (and unplaced idle) servers that host nothing are downsized when a cheaper size holds them.
    """
    limits = _limits(thresholds, headroom)
    peaks = register[register["metric"].isin(PROFILE_METRICS)].pivot_table(
        index="server_id", columns="metric", values="peak_p90", aggfunc="max"
    )
    finding = register.groupby("server_id")["finding"].first()
    inv = inventory_columns(servers).set_index("server_id")
    frame = pd.DataFrame(
        {
            "profile": profiles.reindex(inv.index).fillna("unknown"),
            "current_instance_type": inv["instance_type"],
            "forecast_p90_cpu": peaks.get("cpu", pd.Series(dtype=float)).reindex(inv.index),
            "forecast_p90_mem": peaks.get("mem", pd.Series(dtype=float)).reindex(inv.index),
            "finding": finding.reindex(inv.index).fillna(""),
            "idle": idle.reindex(inv.index).fillna(False).astype(bool),
        }
    )
    frame["cores_used"] = frame["forecast_p90_cpu"] / 100.0 * inv["cores"]
    frame["mem_used"] = frame["forecast_p90_mem"] / 100.0 * inv["memory_gib"]
    frame["spare_cores"] = inv["cores"] * limits["cpu"] - frame["cores_used"]
    frame["spare_mem"] = inv["memory_gib"] * limits["mem"] - frame["mem_used"]
    known = frame["forecast_p90_cpu"].notna() & frame["forecast_p90_mem"].notna()
    sized = inv["cores"].notna() & inv["memory_gib"].notna()
    hot = frame["finding"] == "under-provisioned"
    candidate = known & sized & frame["idle"] & ~hot

    used, free = _pairs(frame, "cores_used", "mem_used"), _pairs(frame, "spare_cores", "spare_mem")
    capacity = _pairs(inv, "cores", "memory_gib")
    target: dict[str, str] = {}
    places = inv[["environment", "datacenter"]].astype(object).where(inv[["environment", "datacenter"]].notna(), "")
    for _, group in places[known & sized & ~hot].groupby(["environment", "datacenter"], sort=True):
        ids = [str(s) for s in group.index]
        hosts = sorted((s for s in ids if not candidate[s]), key=lambda s: (-free[s][0], s))
        total = (sum(capacity[s][0] for s in ids), sum(capacity[s][1] for s in ids))
        items = sorted(
            (s for s in ids if candidate[s]),
            key=lambda s: (-(used[s][0] / total[0] + used[s][1] / total[1]), s),
        )
        target.update(first_fit_decreasing(items, hosts, used=used, free=free))
    hosted = pd.Series(list(target.values()), dtype=object).value_counts().to_dict()

    rows = []
    for server_id, row in frame.iterrows():
        sid = str(server_id)
        cost = float(inv["monthly_cost"].get(sid, np.nan))
        priced = cost == cost
        current_type = row["current_instance_type"] if isinstance(row["current_instance_type"], str) else None
        current = sizes.get(current_type) if current_type else None
        action, target_type, target_server, savings = "keep", row["current_instance_type"], None, 0.0
        if not known[sid]:
            reason = "no cpu or mem forecast"
        elif not sized[sid]:
            reason = "not sized: the inventory gives no cores and memory_gib (nor an instance type of the price table)"
        elif sid in target:
            action, target_type, target_server, savings = "consolidate", None, target[sid], cost if priced else 0.0
            reason = f"idle; its P90 peak fits on {target[sid]} within threshold less headroom"
        elif hosted.get(sid):
            reason = f"absorbs {hosted[sid]} consolidated workload(s)"
        elif hot[sid]:
            reason = "under-provisioned: see the risk register"
        elif row["finding"] == "over-provisioned" or row["idle"]:
            best = smallest_size(row["cores_used"], row["mem_used"], sizes, limits, current_type)
            new_cost = _priced(cost, current, sizes[best]) if best is not None and priced else cost
            cheaper = best is not None and best != current_type
            if cheaper and priced:
                cheaper = new_cost < cost - 0.005
            elif cheaper and current is not None:
                cheaper = sizes[str(best)].monthly_cost < current.monthly_cost
            if cheaper:
                action, target_type, savings = "downsize", best, (cost - new_cost) if priced else 0.0
                reason = "idle" if row["idle"] else "over-provisioned"
                reason += f"; P90 peak fits {best} within threshold less headroom"
            else:
                reason = "no cheaper size holds the P90 peak"
        else:
            reason = "optimized"
        if action != "keep" and not priced:
            reason += "; savings not computed: no monthly cost"
        rows.append(
            {
                "server_id": sid,
                "profile": row["profile"],
                "action": action,
                "current_instance_type": row["current_instance_type"],
                "target_instance_type": target_type,
                "target_server_id": target_server,
                "forecast_p90_cpu": row["forecast_p90_cpu"],
                "forecast_p90_mem": row["forecast_p90_mem"],
                "monthly_savings": round(float(savings), 2),
                "reason": reason,
            }
        )
    plan = pd.DataFrame(rows, columns=CONSOLIDATION.column_names)
    order = plan["action"].map({"consolidate": 0, "downsize": 1, "keep": 2})
    return (
        plan.assign(_o=order)
        .sort_values(["_o", "monthly_savings", "server_id"], ascending=[True, False, True])
        .drop(columns="_o")
        .reset_index(drop=True)
    )


# ---------------------------------------------------------------------------------------------- inventory

_NUMERIC: Final[tuple[str, ...]] = ("cores", "memory_gib", "monthly_cost")


def inventory_columns(servers: pd.DataFrame) -> pd.DataFrame:
    """``servers`` with every column of the ``servers`` table: absent text columns as None, numbers as floats."""
    out = servers.copy()
    for column in SERVERS.column_names:
        if column not in out.columns:
            out[column] = np.nan if column in _NUMERIC else None
    for column in _NUMERIC:
        out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")
    out["server_id"] = out["server_id"].astype(str)
    return out


def inventory_for(servers: pd.DataFrame, server_ids: Sequence[str]) -> pd.DataFrame:
    """The inventory with a row (nothing known but the id) for each of ``server_ids`` it lacks."""
    inv = inventory_columns(servers)
    missing = sorted(set(map(str, server_ids)) - set(inv["server_id"]))
    if not missing:
        return inv
    extra = inventory_columns(pd.DataFrame({"server_id": missing}))
    return pd.concat([inv, extra], ignore_index=True) if not inv.empty else extra


def complete_inventory(servers: pd.DataFrame, sizes: Mapping[str, Size], label: str) -> pd.DataFrame:
    """Fill cores, memory_gib and monthly_cost that the inventory lacks from the size table, by instance type;
    ``cost_source`` says where each cost comes from: inventory, ``label`` (the price table) or empty."""
    inv = inventory_columns(servers)
    spec = inv["instance_type"].map(lambda t: sizes.get(t) if isinstance(t, str) else None)
    table = pd.DataFrame(
        {
            "cores": spec.map(lambda z: float(z.cores) if z else np.nan),
            "memory_gib": spec.map(lambda z: float(z.memory_gib) if z else np.nan),
            "monthly_cost": spec.map(lambda z: float(z.monthly_cost) if z else np.nan),
        },
        index=inv.index,
    )
    had_cost = inv["monthly_cost"].notna()
    for column in _NUMERIC:
        inv[column] = inv[column].fillna(table[column])
    prior = inv["cost_source"].where(inv["cost_source"].notna() & (inv["cost_source"] != ""), "inventory")
    inv["cost_source"] = np.select([had_cost, inv["monthly_cost"].notna()], [prior, label], default="")
    return inv


def inventory_gaps(servers: pd.DataFrame, server_ids: Sequence[str]) -> list[str]:
    """One line per thing the consolidation plan lacks for ``server_ids`` (empty when nothing is missing)."""
    ids = sorted(set(map(str, server_ids)))
    if not ids:
        return []
    if servers.empty:
        return [
            "no inventory: every server is kept; write one with `capacity-forecaster inventory FILE` (server_id "
            "and instance_type, or cores and memory_gib; monthly_cost or a priced instance_type for the savings)"
        ]
    listed = inventory_columns(servers).set_index("server_id")
    absent = [s for s in ids if s not in listed.index]
    notes = []
    if absent:
        notes.append(
            f"{len(absent)} of {len(ids)} servers are not in the inventory and are kept (e.g. {absent[0]}): add them "
            "with `capacity-forecaster inventory FILE --merge`"
        )
    inv = listed.reindex([s for s in ids if s in listed.index])
    unsized = inv.index[inv["cores"].isna() | inv["memory_gib"].isna()]
    if len(unsized):
        notes.append(
            f"{len(unsized)} of {len(ids)} servers are kept unsized (e.g. {unsized[0]}): the inventory gives no "
            "cores and memory_gib nor an instance_type of the price table"
        )
    unpriced = inv.index[inv["monthly_cost"].isna()]
    if len(unpriced):
        notes.append(
            f"savings not computed for {len(unpriced)} of {len(ids)} servers (e.g. {unpriced[0]}): no monthly_cost "
            "nor an instance_type of the price table"
        )
    return notes


def tags_text(tags: Mapping[str, object]) -> str | None:
    """Tags as the ``servers.tags`` JSON text (keys sorted, values as text); None when there are none."""
    clean = {str(k): str(v) for k, v in tags.items() if v is not None and str(v) != ""}
    return json.dumps(dict(sorted(clean.items())), ensure_ascii=False) if clean else None


def _pairs(frame: pd.DataFrame, first: str, second: str) -> dict[str, tuple[float, float]]:
    return {str(k): (float(a), float(b)) for k, a, b in zip(frame.index, frame[first], frame[second], strict=True)}


def first_fit_decreasing(
    items: list[str],
    hosts: list[str],
    *,
    used: Mapping[str, tuple[float, float]],
    free: Mapping[str, tuple[float, float]],
) -> dict[str, str]:
    """Place each item (already in decreasing order) on the first host with room for its (cores, GiB); an item
    that fits nowhere stays where it is and becomes the last host. Returns item -> host for the items moved."""
    spare = {h: list(free[h]) for h in [*hosts, *items]}
    bins = list(hosts)
    placed: dict[str, str] = {}
    for item in items:
        need = used[item]
        host = next((b for b in bins if spare[b][0] >= need[0] and spare[b][1] >= need[1]), None)
        if host is None:
            bins.append(item)
            continue
        placed[item] = host
        spare[host][0] -= need[0]
        spare[host][1] -= need[1]
    return placed


def _priced(cost: float, current: Size | None, target: Size) -> float:
    """The target's monthly cost at the server's own price level (data centre factors carry over)."""
    if current is None or current.monthly_cost <= 0:
        return target.monthly_cost
    return round(cost * target.monthly_cost / current.monthly_cost, 2)


def savings_summary(plan: pd.DataFrame) -> dict[str, float | int]:
    """Servers freed, downsized and the monthly savings of the plan."""
    return {
        "servers_freed": int((plan["action"] == "consolidate").sum()),
        "servers_downsized": int((plan["action"] == "downsize").sum()),
        "monthly_savings": round(float(plan["monthly_savings"].sum()), 2),
    }
