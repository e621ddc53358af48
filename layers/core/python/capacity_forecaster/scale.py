"""Where the fleet-wide stages run, and what a fleet needs there (docs/scaling.md).

Up to ``limits.LAMBDA_MAX_SERVERS`` servers (at the default horizon) the ETL and the risk outputs run in the
Lambdas; above it (or with ``scale.engine: sagemaker``) they run as SageMaker Processing jobs of the same image and
code (:mod:`capacity_forecaster.processing`), on one instance sized here from the measured memory per server
(:mod:`capacity_forecaster.limits`). The per-series work (training) always runs in the SageMaker training job,
sharded over ``training.hosts`` instances;
:func:`training_hosts` sizes it from the measured CPU per series and per host. The figures are
``benchmarks/bench_scale.py``'s.
"""

from __future__ import annotations

import math
from typing import Final

from capacity_forecaster.errors import ConfigError
from capacity_forecaster.limits import (
    DEFAULT_HORIZON_DAYS,
    HEADROOM,
    LAMBDA_MAX_SERVERS,
    PROCESSING_INSTANCES,
    Instance,
    choose_engine,
    job_memory_mb,
    stage_memory_mb,
)
from capacity_forecaster.schema import METRICS
from capacity_forecaster.settings import Settings

__all__ = [
    "HEADROOM",
    "LAMBDA_MAX_SERVERS",
    "PROCESSING_INSTANCES",
    "Instance",
    "engine_for",
    "fleet_series",
    "job_memory_mb",
    "processing_instance",
    "stage_memory_mb",
    "training_hosts",
    "training_seconds",
]

# The measured training figures (benchmarks/bench_scale.py); the fleet-wide stages' memory and the engines'
# limits are capacity_forecaster.limits' (one source with the settings' refusals).
CPU_S_PER_SERIES: Final = 4.7
"""Training CPU seconds a series on one core (prophet, random_forest and the three baselines, six backtest
origins): the slope between a 12-series host (140 CPU s) and two 6-series hosts (116.5 and 107.9 CPU s),
measured 2026-12-02 on a loaded machine."""
HOST_FIXED_CPU_S: Final = 84.0
"""Training CPU seconds a host spends whatever its share of series (the same measurement's intercept)."""
PARALLEL_EFFICIENCY: Final = 0.9
"""Assumed efficiency of one host's worker processes over its vCPUs (``training.n_jobs: 0``), not measured."""
TRAINING_INSTANCE: Final = PROCESSING_INSTANCES[0]


def engine_for(settings: Settings) -> str:
    """``lambda`` or ``sagemaker``: the setting, or (``auto``) whether the Lambdas hold the fleet and horizon."""
    return choose_engine(settings.scale.engine, settings.fleet.servers, settings.horizon_days)


def processing_instance(servers: int, horizon_days: int = DEFAULT_HORIZON_DAYS) -> Instance:
    """The smallest processing instance holding the ETL and the fleet-wide stages of ``servers`` with
    :data:`HEADROOM` (one type for both jobs)."""
    needed_gib = HEADROOM * job_memory_mb(servers, horizon_days) / 1024
    for instance in PROCESSING_INSTANCES:
        if instance.memory_gib >= needed_gib:
            return instance
    largest = PROCESSING_INSTANCES[-1]
    raise ConfigError(
        f"fleet.servers={servers} needs about {needed_gib:,.0f} GiB for the processing jobs, more than the largest "
        f"processing instance ({largest.name}, {largest.memory_gib} GiB): split the fleet into several lakes"
    )


def training_seconds(
    series: int,
    hosts: int,
    *,
    cpu_s_per_series: float = CPU_S_PER_SERIES,
    fixed_cpu_s: float = HOST_FIXED_CPU_S,
    efficiency: float = PARALLEL_EFFICIENCY,
    vcpus: int = TRAINING_INSTANCE.vcpus,
) -> float:
    """The wall time of training ``series`` on ``hosts`` instances of ``vcpus``: each host's fixed CPU and its
    share of the series, over its vCPUs."""
    return (fixed_cpu_s + math.ceil(series / hosts) * cpu_s_per_series) / (vcpus * efficiency)


def training_hosts(
    series: int,
    *,
    budget_s: float = 900.0,
    cpu_s_per_series: float = CPU_S_PER_SERIES,
    fixed_cpu_s: float = HOST_FIXED_CPU_S,
    efficiency: float = PARALLEL_EFFICIENCY,
    vcpus: int = TRAINING_INSTANCE.vcpus,
) -> int:
    """The fewest training instances of ``vcpus`` that forecast ``series`` within ``budget_s`` seconds."""
    if series < 1 or not 0 < efficiency <= 1:
        raise ConfigError("training_hosts needs series >= 1 and 0 < efficiency <= 1")
    per_host_series_cpu = budget_s * vcpus * efficiency - fixed_cpu_s
    if per_host_series_cpu < cpu_s_per_series:
        raise ConfigError(f"a training host cannot finish even one series in {budget_s:.0f} s: raise the budget")
    hosts = max(1, math.ceil(series * cpu_s_per_series / per_host_series_cpu))
    kwargs = {"cpu_s_per_series": cpu_s_per_series, "fixed_cpu_s": fixed_cpu_s, "efficiency": efficiency}
    while training_seconds(series, hosts, vcpus=vcpus, **kwargs) > budget_s:  # the last host's rounding
        hosts += 1
    return hosts


def fleet_series(servers: int) -> int:
    """The series a fleet has: one per server and metric."""
    return servers * len(METRICS)
