"""What each engine of the fleet-wide stages can process, from the measured figures (docs/scaling.md).

The one source of the scale limits: ``settings`` refuses a fleet, history or horizon beyond them and
``scale`` chooses the engine and sizes the processing instance from them. The figures are
``benchmarks/bench_risk_scale.py``'s and ``benchmarks/bench_scale.py``'s (measured 2026-12-02, 2 shared cores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from capacity_forecaster.schema import METRICS

LAMBDA_CONFIGURED_MB: Final = 3008
"""The data Lambdas' memory as the stack configures it by default (cdk.json ``lambdaMemoryMb``)."""
LAMBDA_MEMORY_MB: Final = 10_240
LAMBDA_TIMEOUT_S: Final = 900
LAMBDA_TMP_MB: Final = 10_240
"""Lambda's hard limits: what no setting can raise (the ETL Lambda's ``/tmp`` is set to its maximum)."""
HEADROOM: Final = 1.25
"""Memory (and time) an engine is given over the measured peak: a limit plans to use 80% of it."""

RISK_MB_PER_SERIES_DAY: Final = (1_349 - 440) / ((10_000 - 2_000) * len(METRICS) * 90)
"""The risk stage's peak memory per series and forecast day (its champion rows): 440 MB at 2,000 servers,
1,349 MB at 10,000 (4 metrics, a 90-day horizon, three models' forecasts in the lake)."""
RISK_BASE_MB: Final = 440 - 2_000 * len(METRICS) * 90 * RISK_MB_PER_SERIES_DAY
CONSOLIDATION_MB_PER_SERVER: Final = 1_461 / 10_000
"""The consolidation stage's whole peak counted per server (an upper bound): 1,461 MB at 10,000 servers in
``bench_scale.py``'s run of the whole design (1,346 MB in ``bench_risk_scale.py``; the report stage: 1,177 MB and
1,059 MB), the higher of the two."""
STAGE_CPU_S_PER_SERVER: Final = 61.0 / 10_000
"""CPU seconds per server of the slowest fleet-wide stage at 10,000 servers: consolidation 61.0 s (risk 21.2 s,
report 39.8 s; the ETL's increment, :data:`ETL_CPU_S_PER_SERVER`, is checked too)."""
GENERATE_MB_PER_SERVER_DAY: Final = (1_526 - 854) / (1_000 * 1_095)
"""The demo generator's peak memory per server-day of history: 854 MB at 1,000 servers and 1,526 MB at 2,000,
three years of daily history each."""
GENERATE_BASE_MB: Final = 854 - 1_000 * 1_095 * GENERATE_MB_PER_SERVER_DAY
ETL_MB_PER_SERVER: Final = 816 / 10_000
"""The ETL's peak memory per server for a day's increment (``benchmarks/bench_etl_increment.py``): 816 MB at
10,000 servers x 4 metrics, 11.5 million 5-minute samples in 10 CSV files (473 MB), 108.8 CPU-s; the whole peak
counted per server (an upper bound: 148 MB of it is the process's fixed cost). ``bench_scale.py`` at 10,000
servers, the same day as one Parquet file (11.4 million rows): 782 MB, 165.1 CPU-s (DuckDB's threads; 150.8 s
wall)."""
ETL_CPU_S_PER_SERVER: Final = 165.1 / 10_000
"""The higher of the two increments' CPU seconds, per server."""
ETL_FILE_BASE_MB: Final = 197
ETL_FILE_MB_PER_MB: Final = 1_052 / 1_025
ETL_FILE_CPU_S_PER_MB: Final = 28.2 / 100
"""The ETL of one long CSV (``bench_etl_increment.py --file-sizes 100,1000``): peak RSS above the base of an idle
process (the imports and DuckDB, 197 MB) per MB of the file, 1,052 MB for a 1,025 MB CSV (a 100 MB one: 170 MB,
DuckDB's 128 MB floor); CPU seconds per MB, the higher of the two (28.2 s for 100 MB, 228.9 s for 1,025 MB).
DuckDB spills beyond 35 % of the Lambda's memory, so a larger file's memory grows less than this line says."""
ETL_FILE_TMP_PER_MB: Final = 3.85
"""The ETL's work folder (``/tmp``: the download, the staged rows, DuckDB's spill, the day-store parts) at its
fullest per MB of the file: 386 MB for a 100 MB CSV."""
DEFAULT_HORIZON_DAYS: Final = 90


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
PROCESSING_MAX_MB: Final = PROCESSING_INSTANCES[-1].memory_gib * 1024


def stage_memory_mb(servers: int, horizon_days: int = DEFAULT_HORIZON_DAYS) -> float:
    """The measured peak memory of the hungriest fleet-wide stage (risk or consolidation) for a fleet."""
    risk = RISK_BASE_MB + RISK_MB_PER_SERIES_DAY * servers * len(METRICS) * horizon_days
    return max(risk, CONSOLIDATION_MB_PER_SERVER * servers)


def job_memory_mb(servers: int, horizon_days: int = DEFAULT_HORIZON_DAYS) -> float:
    """The peak memory of the hungrier processing job (the ETL's increment, or the fleet-wide stages)."""
    return max(ETL_MB_PER_SERVER * servers, stage_memory_mb(servers, horizon_days))


def max_servers(memory_mb: float, horizon_days: int = DEFAULT_HORIZON_DAYS, timeout_s: float | None = None) -> int:
    """The largest fleet whose ETL increment and fleet-wide stages fit ``memory_mb`` (and ``timeout_s``) with
    :data:`HEADROOM`."""
    budget = memory_mb / HEADROOM
    risk = (budget - RISK_BASE_MB) / (RISK_MB_PER_SERIES_DAY * len(METRICS) * horizon_days)
    servers = math.floor(min(risk, budget / CONSOLIDATION_MB_PER_SERVER, budget / ETL_MB_PER_SERVER))
    if timeout_s is not None:
        slowest = max(STAGE_CPU_S_PER_SERVER, ETL_CPU_S_PER_SERVER)
        servers = min(servers, math.floor(timeout_s / HEADROOM / slowest))
    return max(0, servers)


def max_job_servers(memory_mb: float, horizon_days: int = DEFAULT_HORIZON_DAYS) -> int:
    """The largest fleet whose processing jobs (the ETL's and the fleet-wide stages') fit ``memory_mb``."""
    return min(max_servers(memory_mb, horizon_days), math.floor(memory_mb / HEADROOM / ETL_MB_PER_SERVER))


def max_horizon_days(servers: int, memory_mb: float) -> int:
    """The longest horizon whose champion forecasts for ``servers`` fit ``memory_mb`` in the risk stage."""
    return max(0, math.floor((memory_mb / HEADROOM - RISK_BASE_MB) / (RISK_MB_PER_SERIES_DAY * servers * len(METRICS))))


def max_generate_server_days(memory_mb: float = LAMBDA_MEMORY_MB) -> int:
    """The most server-days of history the demo generator writes in ``memory_mb`` with :data:`HEADROOM`."""
    return math.floor((memory_mb / HEADROOM - GENERATE_BASE_MB) / GENERATE_MB_PER_SERVER_DAY)


def max_file_mb(
    memory_mb: float = LAMBDA_CONFIGURED_MB, tmp_mb: float = LAMBDA_TMP_MB, timeout_s: float = LAMBDA_TIMEOUT_S
) -> int:
    """The largest single input file (MB, once decompressed) the ETL processes in ``memory_mb`` of memory,
    ``tmp_mb`` of work folder and ``timeout_s``, with :data:`HEADROOM` on each."""
    by_memory = (memory_mb / HEADROOM - ETL_FILE_BASE_MB) / ETL_FILE_MB_PER_MB
    by_tmp = tmp_mb / HEADROOM / ETL_FILE_TMP_PER_MB
    by_time = timeout_s / HEADROOM / ETL_FILE_CPU_S_PER_MB
    return max(0, math.floor(min(by_memory, by_tmp, by_time)))


def fits_lambda(servers: int, horizon_days: int) -> bool:
    """Whether the Lambdas, as configured, hold the fleet-wide stages of this fleet and horizon."""
    return servers <= LAMBDA_MAX_SERVERS and horizon_days <= max_horizon_days(servers, LAMBDA_CONFIGURED_MB)


LAMBDA_MAX_SERVERS: Final = max_servers(LAMBDA_CONFIGURED_MB, timeout_s=LAMBDA_TIMEOUT_S)
"""The most servers the Lambda stages take at the default horizon (consolidation binds: 16,470)."""
PROCESSING_MAX_SERVERS: Final = max_job_servers(PROCESSING_MAX_MB)
"""The most servers the largest processing instance takes at the default horizon."""
MAX_SERVER_DAYS: Final = max_generate_server_days()
MAX_FILE_MB: Final = max_file_mb()
"""The largest single input file the ETL Lambda, as configured, processes: ``ingest.max_file_mb`` may not exceed it."""
"""The most server-days of history the generate Lambda writes at Lambda's largest memory."""


def choose_engine(engine: str, servers: int, horizon_days: int) -> str:
    """``lambda`` or ``sagemaker``: the setting, or (``auto``) whether the Lambdas hold the fleet and horizon."""
    if engine == "auto":
        return "lambda" if fits_lambda(servers, horizon_days) else "sagemaker"
    return engine
