"""Where the fleet-wide stages run, and what a fleet needs there (docs/scaling.md).

Up to :data:`LAMBDA_MAX_SERVERS` servers the ETL and the risk outputs run in the Lambdas; above it (or with
``scale.engine: sagemaker``) they run as SageMaker Processing jobs of the same image and code
(:mod:`capacity_forecaster.processing`), on one instance sized here from the measured memory per server. The
per-series work (training) always runs in the SageMaker training job, sharded over ``training.hosts`` instances;
:func:`training_hosts` sizes it from the measured CPU per series and per host. The figures are
``benchmarks/bench_scale.py``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from capacity_forecaster.errors import ConfigError
from capacity_forecaster.schema import METRICS
from capacity_forecaster.settings import Settings

LAMBDA_CONFIGURED_MB: Final = 3008
"""The data Lambdas' memory as the stack configures it by default (cdk.json ``lambdaMemoryMb``)."""
LAMBDA_MEMORY_MB: Final = 10_240
LAMBDA_TIMEOUT_S: Final = 900
"""Lambda's hard limits: what no setting can raise."""

# Measured by benchmarks/bench_scale.py (docs/scaling.md): the fleet-wide stages' peak memory is a base plus a
# slope per server; the training job's CPU per series with the default models and its sharding efficiency.
BASE_MB: Final = 109.0
"""Resident memory of a process that has imported the stages, before any data (measured 2026-12-02)."""
MB_PER_SERVER: Final = 1.25
"""Peak memory per server of the hungriest fleet-wide stage above the base: the risk register on main's risk
stage, 2,601 MB at 2,000 servers with 3 models' forecasts (measured 2026-12-02; the ETL increment: 0.36)."""
CPU_S_PER_SERIES: Final = 4.7
"""Training CPU seconds a series on one core (prophet, random_forest and the three baselines, six backtest
origins): the slope between a 12-series host (140 CPU s) and two 6-series hosts (116.5 and 107.9 CPU s),
measured 2026-12-02 on a loaded machine."""
HOST_FIXED_CPU_S: Final = 84.0
"""Training CPU seconds a host spends whatever its share of series (the same measurement's intercept)."""
PARALLEL_EFFICIENCY: Final = 0.9
"""Assumed efficiency of one host's worker processes over its vCPUs (``training.n_jobs: 0``), not measured."""
HEADROOM: Final = 1.5
"""Memory an engine is given over the measured peak."""


def lambda_max_servers(memory_mb: int = LAMBDA_CONFIGURED_MB) -> int:
    """The largest fleet whose hungriest fleet-wide stage fits ``memory_mb`` with :data:`HEADROOM`."""
    return max(1, math.floor((memory_mb / HEADROOM - BASE_MB) / MB_PER_SERVER))


LAMBDA_MAX_SERVERS: Final = lambda_max_servers()
"""Where ``scale.engine: auto`` switches to SageMaker: what the measured figures say the Lambdas hold (1,517
servers on main's risk stage; the issue's target is 10,000 once the risk stage reads less: rerun
``benchmarks/bench_scale.py`` and update the figures above)."""


@dataclass(frozen=True)
class Instance:
    """A SageMaker instance type: vCPUs, memory and its on-demand list price (docs/scaling.md, with its date)."""

    name: str
    vcpus: int
    memory_gib: int
    usd_per_hour: float


PROCESSING_INSTANCES: Final = (
    Instance("ml.m5.xlarge", 4, 16, 0.23),
    Instance("ml.m5.2xlarge", 8, 32, 0.461),
    Instance("ml.m5.4xlarge", 16, 64, 0.922),
    Instance("ml.r5.4xlarge", 16, 128, 1.21),
    Instance("ml.r5.8xlarge", 32, 256, 2.419),
)
"""The instances a processing job is sized from, smallest first (us-east-1 list prices)."""
TRAINING_INSTANCE: Final = PROCESSING_INSTANCES[0]


def engine_for(settings: Settings) -> str:
    """``lambda`` or ``sagemaker``: the setting, or (``auto``) by fleet size against :data:`LAMBDA_MAX_SERVERS`."""
    engine = settings.scale.engine
    if engine == "auto":
        return "lambda" if settings.fleet.servers <= LAMBDA_MAX_SERVERS else "sagemaker"
    return engine


def stage_memory_mb(servers: int) -> float:
    """The measured peak memory of the hungriest fleet-wide stage for a fleet of ``servers``."""
    return BASE_MB + MB_PER_SERVER * servers


def processing_instance(servers: int) -> Instance:
    """The smallest processing instance holding the fleet-wide stages of ``servers`` with :data:`HEADROOM`."""
    needed_gib = HEADROOM * stage_memory_mb(servers) / 1024
    for instance in PROCESSING_INSTANCES:
        if instance.memory_gib >= needed_gib:
            return instance
    largest = PROCESSING_INSTANCES[-1]
    raise ConfigError(
        f"fleet.servers={servers} needs about {needed_gib:,.0f} GiB for the risk outputs, more than the largest "
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
