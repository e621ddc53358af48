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
from collections.abc import Sequence
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
    "backtested_of",
    "cpu_seconds_of",
    "engine_for",
    "fleet_series",
    "host_cpu_seconds",
    "job_memory_mb",
    "processing_instance",
    "stage_memory_mb",
    "training_hosts",
    "training_seconds",
]

# The measured training figures (benchmarks/bench_scale.py); the fleet-wide stages' memory and the engines'
# limits are capacity_forecaster.limits' (one source with the settings' refusals).
# The three training constants were measured with two daily backtest origins (three fits a series and model, and
# the forest's old 50 trees); the default is one origin (two fits), so they overestimate a host's CPU, on the safe
# side for sizing, until bench_scale.py is rerun.
CPU_S_PER_BACKTESTED: Final = 0.69
"""Training CPU seconds of a backtested series on one core with the default models (two horizon-long origins:
three fits a model; Prophet's are most of it): ``bench_forecast.py``'s champion pipeline on the generator's
48-series fleets (1.81 to 1.97 CPU s a series, every series backtested) less the random forest's fits (the
random-forest-only pipeline, 1.21 to 1.26 CPU s a series there, a cost per metric and origin), 2026-12-02."""
CPU_S_PER_FITTED: Final = 0.18
"""Training CPU seconds of a series outside the backtest sample (its final fits only):
``bench_forecast.py --cost-servers 500`` (1,500 series, 600 of them backtested: 638 CPU s, 0.425 a series) less
the backtested ones at :data:`CPU_S_PER_BACKTESTED` and the forest's fits, over the other 900."""
HOST_FIXED_CPU_S: Final = 84.0
"""Training CPU seconds a host spends whatever its share of series: the random forest's fits (3 a metric, about
19 CPU s a metric at ``training.rf_max_rows`` 20,000) for four metrics, and the imports."""
BACKTEST_SAMPLE: Final = Settings().training.backtest_sample
"""Series of each metric a host backtests (``training.backtest_sample``); the rest are only fitted."""
PARALLEL_EFFICIENCY: Final = 0.85
"""Efficiency of one host's worker processes over its cores (``training.n_jobs: 0``): ``bench_scale.py``, one host
of 480 series with 2 worker processes on 2 cores took 96.6 s against 164.0 s with one (0.85), 2026-12-02."""
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


def host_cpu_seconds(series: int, *, sample: int = BACKTEST_SAMPLE, metrics: int = len(METRICS)) -> float:
    """One host's training CPU seconds for ``series`` series of ``metrics`` metrics: its fixed cost, the
    backtested sample of each metric and the fitted rest."""
    backtested = backtested_of([math.ceil(series / metrics)] * metrics, sample)
    return cpu_seconds_of(series, min(backtested, series))


def backtested_of(per_metric: Sequence[int], sample: int = BACKTEST_SAMPLE) -> int:
    """The series a host backtests when it holds ``per_metric`` series of each metric: ``sample`` of each at
    most (every series with ``sample`` 0)."""
    return sum(min(n, sample) for n in per_metric) if sample > 0 else sum(per_metric)


def cpu_seconds_of(series: int, backtested: int) -> float:
    """One host's training CPU seconds for ``series`` series of which ``backtested`` are backtested."""
    return HOST_FIXED_CPU_S + backtested * CPU_S_PER_BACKTESTED + (series - backtested) * CPU_S_PER_FITTED


def training_seconds(
    series: int,
    hosts: int,
    *,
    efficiency: float = PARALLEL_EFFICIENCY,
    vcpus: int = TRAINING_INSTANCE.vcpus,
    sample: int = BACKTEST_SAMPLE,
) -> float:
    """The wall time of training ``series`` on ``hosts`` instances of ``vcpus``: the busiest host's CPU
    (:func:`host_cpu_seconds` of its share) over its vCPUs."""
    return host_cpu_seconds(math.ceil(series / hosts), sample=sample) / (vcpus * efficiency)


MAX_TRAINING_HOSTS: Final = 1000


def training_hosts(
    series: int,
    *,
    budget_s: float = 900.0,
    efficiency: float = PARALLEL_EFFICIENCY,
    vcpus: int = TRAINING_INSTANCE.vcpus,
    sample: int = BACKTEST_SAMPLE,
) -> int:
    """The fewest training instances of ``vcpus`` that forecast ``series`` within ``budget_s`` seconds."""
    if series < 1 or not 0 < efficiency <= 1:
        raise ConfigError("training_hosts needs series >= 1 and 0 < efficiency <= 1")
    kwargs = {"efficiency": efficiency, "vcpus": vcpus, "sample": sample}
    if training_seconds(1, 1, **kwargs) > budget_s:  # type: ignore[arg-type]
        raise ConfigError(f"a training host cannot finish even one series in {budget_s:.0f} s: raise the budget")
    for hosts in range(1, MAX_TRAINING_HOSTS + 1):
        if training_seconds(series, hosts, **kwargs) <= budget_s:  # type: ignore[arg-type]
            return hosts
    raise ConfigError(f"{series} series need more than {MAX_TRAINING_HOSTS} training hosts in {budget_s:.0f} s")


def fleet_series(servers: int) -> int:
    """The series a fleet has: one per server and metric."""
    return servers * len(METRICS)
