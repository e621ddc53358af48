"""The engine choice and the capacity plan (capacity_forecaster.scale) the stack and docs/scaling.md rest on."""

from __future__ import annotations

import pytest

from capacity_forecaster.errors import ConfigError
from capacity_forecaster.limits import (
    LAMBDA_CONFIGURED_MB,
    job_memory_mb,
    max_horizon_days,
    max_job_servers,
    max_servers,
)
from capacity_forecaster.scale import (
    HEADROOM,
    LAMBDA_MAX_SERVERS,
    PROCESSING_INSTANCES,
    engine_for,
    fleet_series,
    processing_instance,
    stage_memory_mb,
    training_hosts,
    training_seconds,
)
from capacity_forecaster.settings import load_settings


@pytest.mark.parametrize(
    ("servers", "engine", "expected"),
    [
        (LAMBDA_MAX_SERVERS, "auto", "lambda"),
        (LAMBDA_MAX_SERVERS + 1, "auto", "sagemaker"),
        (10_000, "lambda", "lambda"),
        (100_000, "sagemaker", "sagemaker"),
        (10, "sagemaker", "sagemaker"),
    ],
)
def test_the_engine_follows_the_setting_or_the_fleet_size(servers: int, engine: str, expected: str) -> None:
    settings = load_settings(environ={}, overrides={"fleet.servers": servers, "scale.engine": engine, "fleet.days": 28})
    assert engine_for(settings) == expected


def test_the_lambdas_hold_issue_14s_fleet_with_headroom_in_their_configured_memory() -> None:
    assert LAMBDA_MAX_SERVERS >= 10_000
    assert HEADROOM * stage_memory_mb(10_000, 90) <= LAMBDA_CONFIGURED_MB
    assert HEADROOM * stage_memory_mb(LAMBDA_MAX_SERVERS, 90) <= LAMBDA_CONFIGURED_MB
    assert HEADROOM * stage_memory_mb(LAMBDA_MAX_SERVERS + 1, 90) > LAMBDA_CONFIGURED_MB
    assert max_servers(LAMBDA_CONFIGURED_MB, 90) == LAMBDA_MAX_SERVERS


def test_auto_moves_a_horizon_the_risk_lambda_cannot_hold_to_sagemaker() -> None:
    longest = max_horizon_days(10_000, LAMBDA_CONFIGURED_MB)
    at = {"fleet.servers": 10_000, "fleet.days": 28}
    assert engine_for(load_settings(environ={}, overrides={**at, "horizon_days": longest})) == "lambda"
    assert engine_for(load_settings(environ={}, overrides={**at, "horizon_days": longest + 1})) == "sagemaker"


def test_an_unknown_engine_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"scale.engine='emr' must be one of auto, lambda, sagemaker"):
        load_settings(environ={"CF_SCALE_ENGINE": "emr"})


def test_the_processing_instance_is_the_smallest_that_holds_the_fleet() -> None:
    for servers in (1, LAMBDA_MAX_SERVERS, 50_000, 100_000):
        chosen = processing_instance(servers)
        assert chosen.memory_gib * 1024 >= HEADROOM * job_memory_mb(servers)
        smaller = [i for i in PROCESSING_INSTANCES if i.memory_gib < chosen.memory_gib]
        assert all(i.memory_gib * 1024 < HEADROOM * job_memory_mb(servers) for i in smaller)
    assert processing_instance(100_000).memory_gib > processing_instance(1).memory_gib


def test_a_fleet_no_instance_holds_is_refused_with_what_to_do() -> None:
    largest = PROCESSING_INSTANCES[-1]
    too_many = max_job_servers(largest.memory_gib * 1024) + 1
    assert HEADROOM * job_memory_mb(too_many - 1) <= largest.memory_gib * 1024
    assert HEADROOM * job_memory_mb(too_many) > largest.memory_gib * 1024
    with pytest.raises(ConfigError, match=rf"more than the largest processing instance \({largest.name}"):
        processing_instance(too_many)


@pytest.mark.parametrize("series", [1, 4_000, 40_000, fleet_series(100_000)])
def test_training_hosts_are_the_fewest_that_meet_the_budget(series: int) -> None:
    hosts = training_hosts(series, budget_s=900)
    assert training_seconds(series, hosts) <= 900
    if hosts > 1:
        assert training_seconds(series, hosts - 1) > 900


def test_training_hosts_refuse_impossible_inputs() -> None:
    with pytest.raises(ConfigError):
        training_hosts(0)
    with pytest.raises(ConfigError):
        training_hosts(10, efficiency=0)
    with pytest.raises(ConfigError, match="cannot finish even one series"):
        training_hosts(10, budget_s=10)


def test_a_host_backtests_its_sample_of_each_metric_and_only_fits_the_rest() -> None:
    from capacity_forecaster.scale import BACKTEST_SAMPLE, host_cpu_seconds

    small = host_cpu_seconds(40)  # under the sample: every series is backtested
    assert host_cpu_seconds(41) - small == pytest.approx(host_cpu_seconds(40) - host_cpu_seconds(39))
    big = 4 * BACKTEST_SAMPLE
    marginal_past_sample = host_cpu_seconds(big + 400) - host_cpu_seconds(big)
    marginal_in_sample = host_cpu_seconds(big) - host_cpu_seconds(big - 400)
    assert 0 < marginal_past_sample < marginal_in_sample / 2  # a fitted series costs a fraction of a backtested one
    assert host_cpu_seconds(big + 400, sample=0) - host_cpu_seconds(big, sample=0) == pytest.approx(marginal_in_sample)
