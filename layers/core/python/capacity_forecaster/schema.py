"""Every lake table, defined once: columns, Arrow types, partition keys and descriptions.

The Parquet writers, the Glue tables of the CDK stack and the local DuckDB views all read these definitions,
so the catalog cannot drift from the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pyarrow as pa

from capacity_forecaster.errors import SchemaError

METRICS: Final[tuple[str, ...]] = ("cpu", "mem", "disk", "net")
"""The canonical metric names. Values are utilisation percentages, 0 to 100."""

METRIC_RANGE: Final[tuple[float, float]] = (0.0, 100.0)


@dataclass(frozen=True)
class Column:
    """One column: its name, Arrow type, whether it may be null, and what it means."""

    name: str
    type: pa.DataType
    description: str
    nullable: bool = True
    default: object = None
    """What an optional column that may not be null reads as in objects written before it existed."""


@dataclass(frozen=True)
class TableSchema:
    """A lake table: data columns stored in the Parquet objects, and Hive partition keys stored in the key."""

    name: str
    description: str
    columns: tuple[Column, ...]
    partition_keys: tuple[Column, ...] = ()
    zone: str = "curated"
    optional: tuple[str, ...] = ()
    """Columns added after the table was first written: writers may leave them out and older objects lack them;
    either way they read as null, or as the column's ``default`` when it may not be null."""

    @property
    def prefix(self) -> str:
        """The lake prefix under which the table's objects live, e.g. ``curated/metrics_daily``."""
        return f"{self.zone}/{self.name}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def partition_names(self) -> list[str]:
        return [c.name for c in self.partition_keys]

    @property
    def all_columns(self) -> tuple[Column, ...]:
        return self.columns + self.partition_keys

    def arrow_schema(self, *, with_partitions: bool = False) -> pa.Schema:
        """The Arrow schema of the stored objects (or of the whole table with its partition columns)."""
        cols = self.all_columns if with_partitions else self.columns
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in cols])

    def column(self, name: str) -> Column:
        for c in self.all_columns:
            if c.name == name:
                return c
        raise SchemaError(f"table {self.name} has no column {name!r}")


def _c(name: str, typ: pa.DataType, description: str, nullable: bool = True, default: object = None) -> Column:
    return Column(name, typ, description, nullable, default)


STRING = pa.string()
FLOAT = pa.float64()
INT = pa.int32()
BIGINT = pa.int64()
BOOL = pa.bool_()
DATE = pa.date32()
TIMESTAMP = pa.timestamp("us", tz="UTC")

_SERVER = _c("server_id", STRING, "Server identifier, unique in the fleet.", nullable=False)
_METRIC = _c("metric", STRING, "Metric: cpu, mem, disk or net (utilisation in percent).", nullable=False)
_DT = _c("dt", DATE, "UTC day the row describes (Hive partition dt=YYYY-MM-DD).", nullable=False)
_RUN_DATE = _c("run_date", DATE, "Day of the pipeline run that wrote the row (Hive partition).", nullable=False)

RAW_SAMPLES = TableSchema(
    name="raw_samples",
    zone="raw",
    description="Monitoring samples in the long format, as generated or ingested, before validation.",
    columns=(
        _c("timestamp", TIMESTAMP, "Sample time in UTC.", nullable=False),
        _SERVER,
        _METRIC,
        _c("value", FLOAT, "Sampled utilisation in percent (0 to 100).", nullable=False),
    ),
    partition_keys=(_DT,),
)

SERVERS = TableSchema(
    name="servers",
    description="Fleet inventory: one row per server with its attributes and monthly cost.",
    columns=(
        _SERVER,
        _c("application", STRING, "Application the server runs."),
        _c("environment", STRING, "Environment: prod, staging or dev."),
        _c("datacenter", STRING, "Data centre or AWS region the server lives in."),
        _c("instance_type", STRING, "Instance type or hardware size (e.g. m5.2xlarge)."),
        _c("cores", INT, "vCPUs."),
        _c("memory_gib", FLOAT, "Memory in GiB."),
        _c("monthly_cost", FLOAT, "Monthly cost in USD."),
        _c("availability_zone", STRING, "AWS availability zone (e.g. us-east-1a), from EC2 or the inventory file."),
        _c("tags", STRING, "Other columns of the inventory and EC2 tags, as a JSON object of text values."),
        _c(
            "cost_source",
            STRING,
            "Where monthly_cost comes from: inventory, price table <date> (instance type priced from the price table) "
            "or empty (unknown).",
        ),
    ),
    optional=("availability_zone", "tags", "cost_source"),
)

METRICS_DAILY = TableSchema(
    name="metrics_daily",
    description="Validated daily P95 utilisation per server and metric, the input of forecasting.",
    columns=(
        _SERVER,
        _METRIC,
        _c("p95", FLOAT, "95th percentile of the day's samples, percent (0 to 100).", nullable=False),
        _c("n_samples", INT, "Number of raw samples behind the value (0 when imputed).", nullable=False),
        _c("imputed", BOOL, "True when the value was filled in for a missing day.", nullable=False),
        _c(
            "expected_samples",
            INT,
            "Samples a day holds at the series' median sampling interval (null: imputed, one sample, or older data).",
        ),
        _c("low_coverage", BOOL, "True when n_samples < etl.min_coverage x expected_samples (null: imputed)."),
    ),
    partition_keys=(_DT,),
    optional=("expected_samples", "low_coverage"),
)

FORECASTS = TableSchema(
    name="forecasts",
    description="Forecasts per server, metric and model for each day of the horizon, with P10/P50/P90.",
    columns=(
        _SERVER,
        _METRIC,
        _c("model", STRING, "Model name (seasonal_naive, linear_trend, prophet, random_forest...).", False),
        _c("ds", DATE, "Forecast day.", nullable=False),
        _c(
            "horizon_step",
            INT,
            "Days ahead of the forecast origin (1 = the day after the last actual).",
            False,
        ),
        _c("p10", FLOAT, "10th percentile forecast, percent.", nullable=False),
        _c("p50", FLOAT, "Median forecast, percent.", nullable=False),
        _c("p90", FLOAT, "90th percentile forecast, percent.", nullable=False),
        _c("is_champion", BOOL, "True for the model chosen for this series by the backtest.", nullable=False),
    ),
    partition_keys=(_RUN_DATE,),
)

MODEL_METRICS = TableSchema(
    name="model_metrics",
    description="Backtest accuracy per server, metric and model; the champion is the best by the chosen score.",
    columns=(
        _SERVER,
        _METRIC,
        _c("model", STRING, "Model name.", nullable=False),
        _c("mae", FLOAT, "Mean absolute error over the backtest windows, percentage points."),
        _c("rmse", FLOAT, "Root mean squared error, percentage points."),
        _c("smape", FLOAT, "Symmetric mean absolute percentage error, percent (0 to 200)."),
        _c("mase", FLOAT, "MAE divided by the in-sample MAE of the seasonal naive forecast."),
        _c("coverage", FLOAT, "Share of actuals inside the P10-P90 band (ideal 0.8)."),
        _c("n_origins", INT, "Number of backtest origins scored.", nullable=False),
        _c("is_champion", BOOL, "True for the model chosen for this series.", nullable=False),
        _c("status", STRING, "ok, failed or insufficient_history.", nullable=False),
        _c("reason", STRING, "Why a model failed or a fallback was used; empty when ok."),
        _c(
            "n_history",
            INT,
            "Steps of history the series had at the forecast origin, given to every model: days (hours in "
            "model_metrics_hourly) from its first value to its last, gaps filled (null: a run written before it).",
        ),
    ),
    partition_keys=(_RUN_DATE,),
    optional=("n_history",),
)

RISK_REGISTER = TableSchema(
    name="risk_register",
    description="Per server and metric: when the forecast crosses the threshold, how sure, and how urgent.",
    columns=(
        _SERVER,
        _METRIC,
        _c("model", STRING, "Champion model whose forecast was used."),
        _c("threshold", FLOAT, "Utilisation threshold in percent.", nullable=False),
        _c("last_actual_date", DATE, "Last day with an observed value."),
        _c("last_p95", FLOAT, "Most recent observed daily P95."),
        _c(
            "already_breaching",
            BOOL,
            "True when recent actuals are at or over the threshold.",
            nullable=False,
        ),
        _c("breach_date_p50", DATE, "First forecast day with P50 at or over the threshold (null: none)."),
        _c("breach_date_p90", DATE, "First forecast day with P90 at or over the threshold (null: none)."),
        _c("days_to_breach_p50", INT, "Days from the run date to breach_date_p50 (0 if breaching now)."),
        _c("days_to_breach_p90", INT, "Days from the run date to breach_date_p90 (0 if breaching now)."),
        _c("peak_p50", FLOAT, "Highest P50 forecast in the horizon."),
        _c("peak_date", DATE, "Day of peak_p50."),
        _c("severity", STRING, "critical, high, medium or low.", nullable=False),
        _c("finding", STRING, "under-provisioned, over-provisioned or optimized.", nullable=False),
        _c("peak_p90", FLOAT, "Highest P90 forecast in the horizon."),
        _c(
            "seasonal_peak",
            BOOL,
            "True when the breach comes from recurring peaks (month or quarter end) rather than trend.",
            nullable=False,
        ),
        _c("seasonal_peak_kind", STRING, "quarter-end, month-end or recurring; empty when not seasonal."),
        _c("seasonal_peak_dates", STRING, "Comma-separated days of the forecast peaks over the threshold."),
        _c(
            "breach_probability",
            FLOAT,
            "Chance (0 to 1) of a breach inside the horizon, from the forecast band; 1 if breaching now.",
        ),
        _c(
            "likely_breach_date",
            DATE,
            "First day of the breach by whose end its chance reaches risk.likely_breach_probability (null: never).",
        ),
        _c(
            "short_history",
            BOOL,
            "True when the series had too little history to backtest: its forecast was fitted on what there was and "
            "is less certain; severity is at most medium unless breaching now.",
            nullable=False,
            default=False,
        ),
        _c(
            "history_days",
            INT,
            "Days of history the series had when forecast, from model_metrics' n_history (hourly forecasts: its "
            "hours / 24, rounded up); null for a run whose model_metrics predate n_history.",
        ),
    ),
    partition_keys=(_RUN_DATE,),
    optional=("short_history", "history_days"),
)

CONSOLIDATION = TableSchema(
    name="consolidation",
    description="Rightsizing and consolidation recommendations per server with the monthly savings.",
    columns=(
        _SERVER,
        _c("profile", STRING, "Utilisation profile (idle, steady busy, spiky, growing...).", nullable=False),
        _c("action", STRING, "consolidate, downsize or keep.", nullable=False),
        _c("current_instance_type", STRING, "Instance type today."),
        _c("target_instance_type", STRING, "Recommended instance type (null when consolidated away)."),
        _c("target_server_id", STRING, "Server that absorbs the workload when consolidated."),
        _c("forecast_p90_cpu", FLOAT, "Highest P90 cpu forecast in the horizon, percent."),
        _c("forecast_p90_mem", FLOAT, "Highest P90 mem forecast in the horizon, percent."),
        _c("monthly_savings", FLOAT, "USD saved per month by the action.", nullable=False),
        _c("reason", STRING, "Why this action was recommended."),
    ),
    partition_keys=(_RUN_DATE,),
)

ETL_RUNS = TableSchema(
    name="etl_runs",
    description="One row per ETL run: what was read, written and quarantined, so the counts reconcile.",
    columns=(
        _c("run_id", STRING, "Unique id of the ETL run.", nullable=False),
        _c("started_at", TIMESTAMP, "Start time (UTC).", nullable=False),
        _c("finished_at", TIMESTAMP, "End time (UTC).", nullable=False),
        _c("files_read", INT, "Raw objects read.", nullable=False),
        _c("files_rejected", INT, "Raw objects that could not be read at all.", nullable=False),
        _c("rows_in", BIGINT, "Rows read from the raw objects.", nullable=False),
        _c("rows_written", BIGINT, "Valid rows kept (before daily aggregation).", nullable=False),
        _c("rows_quarantined", BIGINT, "Rows sent to quarantine.", nullable=False),
        _c("quarantine_reasons", STRING, "JSON object: reason -> row count.", nullable=False),
        _c("partitions_written", INT, "metrics_daily partitions written.", nullable=False),
        _c(
            "status",
            STRING,
            "started (running, or killed: the next run settles it), succeeded, failed (an error) or interrupted "
            "(killed before its files were recorded: a later run counted them). Counts are what the run recorded: "
            "0 for failed and interrupted runs.",
            nullable=False,
        ),
        _c("reason", STRING, "Why the run failed or was interrupted, in one line (empty when it succeeded)."),
    ),
    partition_keys=(_c("dt", DATE, "UTC day the run started (Hive partition).", nullable=False),),
    optional=("reason",),
)

QUARANTINE = TableSchema(
    name="quarantine",
    description="Rejected input rows with the reason, kept as they were read (values as text).",
    columns=(
        _c("etl_run_id", STRING, "ETL run that rejected the row.", nullable=False),
        _c("source", STRING, "Raw object the row came from.", nullable=False),
        _c("row_number", BIGINT, "Row position in the source (0-based).", nullable=False),
        _c("timestamp", STRING, "Timestamp as read."),
        _c("server_id", STRING, "Server id as read."),
        _c("metric", STRING, "Metric as read."),
        _c("value", STRING, "Value as read."),
        _c("reason", STRING, "Why the row was rejected.", nullable=False),
    ),
    partition_keys=(_c("dt", DATE, "UTC day of the ETL run (Hive partition).", nullable=False),),
)

GROUND_TRUTH = TableSchema(
    name="ground_truth",
    description="What the generator planted: per server and metric, whether and when it crosses the threshold.",
    columns=(
        _SERVER,
        _METRIC,
        _c("pattern", STRING, "Planted behaviour (steady, growing, saturating, seasonal, idle...).", False),
        _c("threshold", FLOAT, "Threshold the truth was computed for, percent.", nullable=False),
        _c("will_breach", BOOL, "True when the true daily P95 reaches the threshold in the horizon.", False),
        _c("breach_date", DATE, "First day in the horizon the true value reaches the threshold."),
        _c("is_idle", BOOL, "True when the whole server is idle (consolidation candidate).", nullable=False),
    ),
    zone="reference",
)

ETL_FILES = TableSchema(
    name="etl_files",
    zone="state",
    description="Raw objects the ETL has processed, so each is read once and re-runs touch only new files.",
    columns=(
        _c("key", STRING, "Lake key of the raw object.", nullable=False),
        _c(
            "fingerprint",
            STRING,
            "Size and ETag (or modification time) when it was processed.",
            nullable=False,
        ),
        _c("first_day", DATE, "First UTC day of its valid samples (null when none)."),
        _c("last_day", DATE, "Last UTC day of its valid samples (null when none)."),
        _c("rows", BIGINT, "Rows read from it.", nullable=False),
        _c("status", STRING, "processed or rejected (the whole file could not be read).", nullable=False),
        _c("etl_run_id", STRING, "ETL run that processed it.", nullable=False),
    ),
)

TABLES: Final[dict[str, TableSchema]] = {
    t.name: t
    for t in (
        RAW_SAMPLES,
        SERVERS,
        METRICS_DAILY,
        FORECASTS,
        MODEL_METRICS,
        RISK_REGISTER,
        CONSOLIDATION,
        ETL_RUNS,
        QUARANTINE,
        GROUND_TRUTH,
        ETL_FILES,
    )
}

SERVER_ATTRIBUTES = TableSchema(
    name="server_attributes",
    description=(
        "Extra columns of users' exports (region, team, ...), the latest value per server and attribute, "
        "from valid samples."
    ),
    columns=(
        _SERVER,
        _c("attribute", STRING, "Column name as read (lower case).", nullable=False),
        _c("value", STRING, "Latest value, as text.", nullable=False),
        _c("last_seen", TIMESTAMP, "Timestamp of the latest valid sample that carried it.", nullable=False),
        _c("source", STRING, "Raw object of that sample.", nullable=False),
    ),
)
TABLES[SERVER_ATTRIBUTES.name] = SERVER_ATTRIBUTES

METRICS_HOURLY = TableSchema(
    name="metrics_hourly",
    description="Hourly P95 utilisation per server and metric (ETL with --grain hourly), with sample coverage.",
    columns=(
        _SERVER,
        _METRIC,
        _c("dt", TIMESTAMP, "Start of the UTC hour the row describes.", nullable=False),
        _c("p95", FLOAT, "95th percentile of the hour's samples, percent (0 to 100).", nullable=False),
        _c("n_samples", INT, "Number of raw samples behind the value.", nullable=False),
        _c(
            "expected_samples",
            INT,
            "Samples an hour holds at the series' median sampling interval (null when it has one sample).",
        ),
        _c("low_coverage", BOOL, "True when n_samples < etl.min_coverage x expected_samples.", nullable=False),
    ),
    partition_keys=(_c("day", DATE, "UTC day of the hour (Hive partition day=YYYY-MM-DD).", nullable=False),),
)
TABLES[METRICS_HOURLY.name] = METRICS_HOURLY

METRICS_DAILY_FLAGS = TableSchema(
    name="metrics_daily_flags",
    description="Outlier and anomaly flags of each daily P95 value (values are never changed or dropped).",
    columns=(
        _SERVER,
        _METRIC,
        _c("p95", FLOAT, "The daily P95 as in metrics_daily.", nullable=False),
        _c("zscore", FLOAT, "Distance to the trailing window's mean in standard deviations (null: no window)."),
        _c("outlier_z", BOOL, "abs(zscore) > etl.outlier_z.", nullable=False),
        _c("outlier_iqr", BOOL, "Outside the trailing window's Tukey fences (etl.outlier_iqr_k).", nullable=False),
        _c("anomaly", BOOL, "Both rules agree.", nullable=False),
    ),
    partition_keys=(_DT,),
)
TABLES[METRICS_DAILY_FLAGS.name] = METRICS_DAILY_FLAGS

SERIES_PROFILE = TableSchema(
    name="series_profile",
    description="One row per series: span, counts, mean, std, ADF stationarity test and outlier counts.",
    columns=(
        _SERVER,
        _METRIC,
        _c("first_day", DATE, "First observed day.", nullable=False),
        _c("last_day", DATE, "Last observed day.", nullable=False),
        _c("n_days", INT, "Days with a value (imputed included).", nullable=False),
        _c("n_imputed", INT, "Imputed days.", nullable=False),
        _c("mean", FLOAT, "Mean daily P95."),
        _c("std", FLOAT, "Standard deviation of the daily P95."),
        _c("adf_stat", FLOAT, "Augmented Dickey-Fuller statistic (null: too short or constant)."),
        _c("adf_pvalue", FLOAT, "ADF p-value; small means stationary."),
        _c("stationary", BOOL, "adf_pvalue < 0.05.", nullable=False),
        _c("n_outliers_z", INT, "Days flagged by the rolling z-score.", nullable=False),
        _c("n_outliers_iqr", INT, "Days flagged by the IQR fences.", nullable=False),
        _c("n_anomalies", INT, "Days flagged by both.", nullable=False),
        _c("last_anomaly", DATE, "Latest anomalous day (null: none)."),
    ),
)
TABLES[SERIES_PROFILE.name] = SERIES_PROFILE


def get_table(name: str) -> TableSchema:
    """Look a table up by name, with a clear error for an unknown one."""
    try:
        return TABLES[name]
    except KeyError:
        raise SchemaError(f"unknown table {name!r}; known tables: {', '.join(sorted(TABLES))}") from None


FORECASTS_HOURLY = TableSchema(
    name="forecasts_hourly",
    description="Hourly forecasts (train --grain hourly) per server, metric and model, with P10/P50/P90.",
    columns=(
        _SERVER,
        _METRIC,
        _c("model", STRING, "Model name (seasonal_naive, linear_trend, prophet, random_forest...).", False),
        _c("ds", TIMESTAMP, "Start of the forecast UTC hour.", nullable=False),
        _c("horizon_step", INT, "Hours ahead of the forecast origin (1 = the hour after the last actual).", False),
        _c("p10", FLOAT, "10th percentile forecast, percent.", nullable=False),
        _c("p50", FLOAT, "Median forecast, percent.", nullable=False),
        _c("p90", FLOAT, "90th percentile forecast, percent.", nullable=False),
        _c("is_champion", BOOL, "True for the model chosen for this series by the backtest.", nullable=False),
    ),
    partition_keys=(_RUN_DATE,),
)
TABLES[FORECASTS_HOURLY.name] = FORECASTS_HOURLY

MODEL_METRICS_HOURLY = TableSchema(
    name="model_metrics_hourly",
    description="Backtest accuracy of the hourly forecasts (windows in hours, MASE against season 24).",
    columns=MODEL_METRICS.columns,
    partition_keys=(_RUN_DATE,),
    optional=MODEL_METRICS.optional,
)
TABLES[MODEL_METRICS_HOURLY.name] = MODEL_METRICS_HOURLY

FORECAST_TABLES: Final[dict[str, tuple[TableSchema, TableSchema]]] = {
    "daily": (FORECASTS, MODEL_METRICS),
    "hourly": (FORECASTS_HOURLY, MODEL_METRICS_HOURLY),
}
"""The forecasts and model-metrics tables of each training grain."""
TRAINING_CHANNEL_TABLES: Final[dict[str, TableSchema]] = {"daily": METRICS_DAILY, "hourly": METRICS_HOURLY}
"""The table the training job's ``curated`` channel holds at each training grain (the launcher points it there)."""

LATEST_RUN = TableSchema(
    name="latest_run",
    description=(
        "One row: the newest run with a risk register, and the first day of the window the planners' views read "
        "(their joins on it prune the run_date and dt partitions)."
    ),
    columns=(
        _c("run_date", DATE, "Run date of the newest risk register.", nullable=False),
        _c("window_start", DATE, "First run date and day forecast_accuracy scores (run_date less its window).", False),
    ),
)
TABLES[LATEST_RUN.name] = LATEST_RUN
