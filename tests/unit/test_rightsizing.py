"""Rightsizing and consolidation: planted profiles are recovered, packing never overloads, savings add up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from capacity_forecaster.rightsizing import (
    FEATURES,
    Size,
    cluster_profiles,
    first_fit_decreasing,
    idle_servers,
    name_profiles,
    plan_consolidation,
    savings_summary,
    server_features,
    smallest_size,
)
from capacity_forecaster.schema import CONSOLIDATION

THRESHOLDS = {"cpu": 80.0, "mem": 80.0, "disk": 80.0, "net": 80.0}
NO_HEADROOM = dict.fromkeys(THRESHOLDS, 0.0)
SIZES = {
    "m5.large": Size(2, 8.0, 70.08),
    "m5.xlarge": Size(4, 16.0, 140.16),
    "m5.2xlarge": Size(8, 32.0, 280.32),
    "c5.large": Size(2, 4.0, 62.05),
}
PLANTED = ("idle", "steady busy", "spiky", "growing")


def planted_fleet(per_profile: int = 10, days: int = 120, seed: int = 7) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    dt = pd.date_range("2026-01-01", periods=days, freq="D")
    t = np.arange(days, dtype=float)
    frames, truth = [], {}
    for p, profile in enumerate(PLANTED):
        for i in range(per_profile):
            server = f"{profile[:4]}-{i:02d}"
            truth[server] = p
            for metric, base in (("cpu", 1.0), ("mem", 1.1)):
                if profile == "idle":
                    y = 5.0 * base + rng.normal(0, 0.5, days)
                elif profile == "steady busy":
                    y = 65.0 * base + rng.normal(0, 1.0, days)
                elif profile == "spiky":
                    y = 35.0 * base + rng.normal(0, 2.0, days) + (rng.random(days) < 0.2) * rng.uniform(20, 40, days)
                else:
                    y = 25.0 * base + 0.35 * t + rng.normal(0, 1.0, days)
                frames.append(
                    pd.DataFrame(
                        {"server_id": server, "metric": metric, "dt": dt, "p95": np.clip(y, 0, 100), "imputed": False}
                    )
                )
    return pd.concat(frames, ignore_index=True), pd.Series(truth)


def test_planted_profiles_are_recovered_and_named() -> None:
    daily, truth = planted_fleet()
    features = server_features(daily, days=90)
    assert list(features.columns) == FEATURES
    labels, k, silhouette = cluster_profiles(features, k_min=2, k_max=8, seed=0)
    ari = adjusted_rand_score(truth.reindex(labels.index), labels)
    print(f"planted profiles: k={k} silhouette={silhouette:.3f} adjusted Rand index={ari:.3f}")
    assert k == 4 and ari >= 0.95
    names = name_profiles(features, labels)
    majority = names.groupby(truth.reindex(names.index)).agg(lambda s: s.mode().iloc[0])
    assert [majority[p] for p in range(len(PLANTED))] == list(PLANTED)


def test_features_measure_trend_weekly_amplitude_and_volatility() -> None:
    dt = pd.date_range("2026-01-05", periods=28, freq="D")  # starts on a Monday
    weekly = np.where(dt.day_of_week >= 5, 20.0, 50.0)
    rows = [
        pd.DataFrame({"server_id": "w", "metric": "cpu", "dt": dt, "p95": weekly, "imputed": False}),
        pd.DataFrame({"server_id": "w", "metric": "mem", "dt": dt, "p95": 10.0 + np.arange(28), "imputed": False}),
    ]
    f = server_features(pd.concat(rows, ignore_index=True), days=90).loc["w"]
    assert f["cpu_weekly"] == pytest.approx(30.0)
    assert f["mem_trend"] == pytest.approx(30.0)  # one point a day
    assert f["mem_volatility"] == pytest.approx(0.0)
    assert f["cpu_mean"] == pytest.approx((5 * 50 + 2 * 20) / 7)


def test_idle_needs_every_recent_day_under_the_limits() -> None:
    dt = pd.date_range("2026-01-01", periods=40, freq="D")
    cpu_a = np.full(40, 5.0)
    cpu_b = cpu_a.copy()
    cpu_b[-3] = 20.0  # one busy day in the last 30
    cpu_c = cpu_a.copy()
    cpu_c[0] = 90.0  # busy long ago
    frames = [
        pd.DataFrame({"server_id": s, "metric": m, "dt": dt, "p95": v, "imputed": False})
        for s, cpu in (("a", cpu_a), ("b", cpu_b), ("c", cpu_c))
        for m, v in (("cpu", cpu), ("mem", np.full(40, 20.0)))
    ]
    idle = idle_servers(pd.concat(frames, ignore_index=True), days=30, cpu_p95=15.0, mem_p95=35.0)
    assert idle.to_dict() == {"a": True, "b": False, "c": True}


def test_smallest_size_keeps_p90_under_threshold_less_headroom() -> None:
    limits = {"cpu": 0.8 / 1.1, "mem": 0.8 / 1.1}
    # 2 cores at 0.727 = 1.4545 cores; 4 GiB at 0.727 = 2.909 GiB.
    assert smallest_size(1.45, 2.9, SIZES, limits) == "c5.large"
    assert smallest_size(1.45, 2.95, SIZES, limits) == "m5.large"
    assert smallest_size(1.46, 2.9, SIZES, limits) == "m5.xlarge"
    assert smallest_size(100.0, 1.0, SIZES, limits) is None


def test_first_fit_decreasing_places_on_the_first_host_with_room() -> None:
    used = {"x": (3.0, 3.0), "y": (2.0, 2.0), "z": (2.0, 9.0), "h1": (0.0, 0.0), "h2": (0.0, 0.0)}
    free = {"x": (1.0, 1.0), "y": (1.0, 1.0), "z": (4.0, 4.0), "h1": (4.0, 4.0), "h2": (3.0, 20.0)}
    placed = first_fit_decreasing(["z", "x", "y"], ["h1", "h2"], used=used, free=free)
    # z needs 9 GiB: only h2; x then fits h1 (4 >= 3); y fits nowhere left (h1 has 1, h2 has 1 core): stays.
    assert placed == {"z": "h2", "x": "h1"}


def random_fleet(seed: int, n: int = 40) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    types = rng.choice(list(SIZES), n)
    idle = rng.random(n) < 0.4
    servers = pd.DataFrame(
        {
            "server_id": [f"s{i:03d}" for i in range(n)],
            "environment": rng.choice(["prod", "dev"], n),
            "datacenter": rng.choice(["dc1", "dc2"], n),
            "instance_type": types,
            "cores": [SIZES[t].cores for t in types],
            "memory_gib": [SIZES[t].memory_gib for t in types],
            "monthly_cost": [round(SIZES[t].monthly_cost * rng.choice([1.0, 1.115]), 2) for t in types],
        }
    )
    peak = {m: np.where(idle, rng.uniform(1, 12, n), rng.uniform(10, 95, n)) for m in ("cpu", "mem")}
    register = pd.concat(
        [
            pd.DataFrame(
                {
                    "server_id": servers["server_id"],
                    "metric": m,
                    "peak_p90": peak[m],
                    "finding": np.where(
                        np.maximum(peak["cpu"], peak["mem"]) >= 80,
                        "under-provisioned",
                        np.where(np.maximum(peak["cpu"], peak["mem"]) < 40, "over-provisioned", "optimized"),
                    ),
                }
            )
            for m in ("cpu", "mem")
        ],
        ignore_index=True,
    )
    return servers, register, pd.Series(idle, index=servers["server_id"])


@pytest.mark.parametrize("seed", range(6))
def test_plan_never_overloads_a_host_respects_constraints_and_savings_add_up(seed: int) -> None:
    servers, register, idle = random_fleet(seed)
    headroom = dict.fromkeys(THRESHOLDS, 10.0)
    plan = plan_consolidation(
        servers, register, pd.Series(dtype=str), idle, sizes=SIZES, thresholds=THRESHOLDS, headroom=headroom
    )
    assert list(plan.columns) == CONSOLIDATION.column_names
    assert sorted(plan["server_id"]) == sorted(servers["server_id"])
    inv = servers.set_index("server_id")
    peaks = register.pivot_table(index="server_id", columns="metric", values="peak_p90")
    finding = register.groupby("server_id")["finding"].first()
    moved = plan[plan["action"] == "consolidate"].set_index("server_id")
    assert moved.index.map(idle).all()
    hosts = set(moved["target_server_id"])
    assert hosts.isdisjoint(moved.index)
    assert not any(finding[h] == "under-provisioned" for h in hosts)
    for item, host in moved["target_server_id"].items():
        assert inv.at[item, "environment"] == inv.at[host, "environment"]
        assert inv.at[item, "datacenter"] == inv.at[host, "datacenter"]
    limit = 0.8 / 1.1
    for host in hosts:
        guests = [*moved.index[moved["target_server_id"] == host], host]
        cores = sum(peaks.at[s, "cpu"] / 100 * inv.at[s, "cores"] for s in guests)
        mem = sum(peaks.at[s, "mem"] / 100 * inv.at[s, "memory_gib"] for s in guests)
        assert cores <= inv.at[host, "cores"] * limit + 1e-9
        assert mem <= inv.at[host, "memory_gib"] * limit + 1e-9
    # Savings: a consolidated server saves its whole cost, a downsized one the price difference, keep nothing.
    assert (moved["monthly_savings"] == inv.loc[moved.index, "monthly_cost"]).all()
    down = plan[plan["action"] == "downsize"].set_index("server_id")
    for server, row in down.iterrows():
        current, target = SIZES[inv.at[server, "instance_type"]], SIZES[row["target_instance_type"]]
        expected = inv.at[server, "monthly_cost"] * (1 - target.monthly_cost / current.monthly_cost)
        assert row["monthly_savings"] == pytest.approx(expected, abs=0.01)
        assert peaks.at[server, "cpu"] / 100 * inv.at[server, "cores"] <= target.cores * limit
    assert (plan.loc[plan["action"] == "keep", "monthly_savings"] == 0).all()
    summary = savings_summary(plan)
    assert summary["monthly_savings"] == pytest.approx(plan["monthly_savings"].sum())
    assert summary["servers_freed"] == len(moved)


def test_idle_servers_pack_onto_fewer_servers_in_their_own_group() -> None:
    servers = pd.DataFrame(
        {
            "server_id": ["a", "b", "c", "d"],
            "environment": ["prod", "prod", "prod", "dev"],
            "datacenter": "dc1",
            "instance_type": "m5.xlarge",
            "cores": 4,
            "memory_gib": 16.0,
            "monthly_cost": 140.16,
        }
    )
    register = pd.DataFrame(
        {
            "server_id": [s for s in "abcd" for _ in range(2)],
            "metric": ["cpu", "mem"] * 4,
            "peak_p90": [10.0, 10.0, 8.0, 8.0, 5.0, 5.0, 5.0, 5.0],
            "finding": "over-provisioned",
        }
    )
    idle = pd.Series(True, index=list("abcd"))
    plan = plan_consolidation(
        servers,
        register,
        pd.Series("idle", index=list("abcd")),
        idle,
        sizes=SIZES,
        thresholds=THRESHOLDS,
        headroom=NO_HEADROOM,
    ).set_index("server_id")
    # a (largest) opens the bin; b and c move onto it; d is alone in dev and is downsized instead.
    assert plan.loc[["b", "c"], "target_server_id"].tolist() == ["a", "a"]
    assert plan.loc[["b", "c"], "action"].tolist() == ["consolidate", "consolidate"]
    assert plan.at["a", "action"] == "keep" and "absorbs 2" in plan.at["a", "reason"]
    assert plan.at["d", "action"] == "downsize" and plan.at["d", "target_instance_type"] == "c5.large"
    assert plan.at["b", "profile"] == "idle"
