"""The SageMaker training container contract, as functions that take the contract's root folder.

In the container the root is ``/opt/ml``::

    input/config/hyperparameters.json   every value a string (see HYPERPARAMETERS)
    input/config/resourceconfig.json    {"current_host": "algo-1", "hosts": ["algo-1", ...]}
    input/data/curated/                 metrics_daily as SageMaker copies it: dt=YYYY-MM-DD/data.parquet
                                        (grain=hourly: metrics_hourly, day=YYYY-MM-DD/data.parquet)
    model/                              model.json: settings and the champion per series (tarred to S3)
    output/failure                      one line saying why the job failed

Each host forecasts the series whose stable hash falls on its index among the sorted hosts, and stages its
output in the lake under ``staging/training/run_id=<id>/``; :func:`publish_training_run` then checks every
host finished and replaces the run's ``forecasts`` and ``model_metrics`` partitions in one object each.
:func:`run_local_training` plays SageMaker's part locally (local mode): one contract root per simulated host.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from capacity_forecaster.access import STAGING_TRAINING_PREFIX
from capacity_forecaster.errors import CapacityForecasterError, ConfigError, InputError
from capacity_forecaster.forecasting.backtest import one_line
from capacity_forecaster.forecasting.baselines import registrations
from capacity_forecaster.forecasting.engine import forecast_fleet, resolve_models
from capacity_forecaster.forecasting.grain import get_grain, merged_settings
from capacity_forecaster.json_files import read_json_object
from capacity_forecaster.progress import ProgressReporter, RichProgress
from capacity_forecaster.redact import redact
from capacity_forecaster.schema import (
    FORECAST_TABLES,
    METRICS_DAILY,
    TRAINING_CHANNEL_TABLES,
    TableSchema,
)
from capacity_forecaster.settings import (
    CLOUD_REFUSED,
    CLOUD_SETTINGS,
    Settings,
    TrainingSettings,
    describe_setting,
    settings_from_strings,
    settings_hyperparameters,
)
from capacity_forecaster.storage.lake import Lake, open_lake, parse_partition_key, read_partitioned_dir
from capacity_forecaster.storage.lease import Lease

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/opt/ml")
CHANNEL = "curated"
STAGING_PREFIX = STAGING_TRAINING_PREFIX.rstrip("/")
DEFAULT_MODELS: tuple[str, ...] = TrainingSettings.models
CHANNEL_TABLES: dict[str, TableSchema] = TRAINING_CHANNEL_TABLES
"""The table the ``curated`` channel holds at each grain."""
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_PART = re.compile(r"part-(\d{3})-of-(\d{3})\.json")

JOB_HYPERPARAMETERS: dict[str, str] = {
    "run_date": "required; the as-of day, YYYY-MM-DD (later days in the data are ignored)",
    "run_id": "required; [A-Za-z0-9_-], up to 128 characters; names the staging folder",
    "lake_uri": "required; where outputs go: a local folder or s3://bucket/prefix",
    "backtest_horizon": "integer 1..horizon (days, or hours at grain hourly); default the horizon",
    "backtest_step": "integer 1..365 steps between origins; default backtest_horizon",
}
"""The hyperparameters of the job itself; every other one is a setting (``capacity_forecaster.settings``)."""
HYPERPARAMETERS: dict[str, str] = {
    **JOB_HYPERPARAMETERS,
    **{dotted: describe_setting(dotted) for dotted in CLOUD_SETTINGS},
}
"""Every hyperparameter the job accepts: its own, then one per setting by dotted name (``training.models``),
written as :func:`capacity_forecaster.settings.settings_hyperparameters` writes them and checked by the same
rules as the settings file."""


# ---------------------------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class TrainingParams:
    """The validated hyperparameters of one training job: its own keys and the settings."""

    run_date: date
    run_id: str
    lake_uri: str
    settings: Settings = field(default_factory=Settings)
    backtest_horizon: int | None = None
    backtest_step: int | None = None

    @property
    def training(self) -> TrainingSettings:
        return self.settings.training

    @property
    def horizon_days(self) -> int:
        return self.settings.horizon_days

    @property
    def models(self) -> tuple[str, ...]:
        return self.training.models

    @property
    def backtest_origins(self) -> int:
        """Backtest origins of the grain (``training.backtest_origins``, or ``backtest_origins_hourly``)."""
        return self.training.backtest_origins_hourly if self.grain == "hourly" else self.training.backtest_origins

    @property
    def score(self) -> str:
        return self.training.score

    @property
    def min_history_days(self) -> int:
        return self.training.min_history_days

    @property
    def n_jobs(self) -> int:
        """Worker processes (-1: all cores, as ``training.n_jobs: 0`` says)."""
        return self.training.n_jobs or -1

    @property
    def country(self) -> str:
        return self.settings.fleet.country

    @property
    def rf_max_rows(self) -> int:
        return self.training.rf_max_rows

    @property
    def seed(self) -> int:
        return self.training.seed

    @property
    def grain(self) -> str:
        return self.training.grain

    @property
    def horizon_hours(self) -> int:
        return self.training.horizon_hours

    @property
    def min_history_hours(self) -> int:
        return self.training.min_history_hours

    @property
    def prophet_history_days(self) -> int:
        return self.training.prophet_history_days

    @property
    def champion_override(self) -> float:
        return self.training.champion_override

    @property
    def backtest_sample(self) -> int:
        return self.training.backtest_sample

    @property
    def runaway_guard(self) -> bool:
        return self.training.runaway_guard

    @property
    def horizon(self) -> int:
        """The forecast horizon in steps of the grain (days or hours)."""
        return self.horizon_hours if self.grain == "hourly" else self.horizon_days

    @property
    def min_history(self) -> int:
        """The shortest history backtested, in steps of the grain."""
        return self.min_history_hours if self.grain == "hourly" else self.min_history_days

    @property
    def tables(self) -> tuple[TableSchema, TableSchema]:
        """The grain's (forecasts, model_metrics) tables."""
        return FORECAST_TABLES[self.grain]

    def model_settings(self) -> dict[str, dict[str, object]]:
        """Field overrides of the models that take them (see ``engine.resolve_models``): for every registered
        model, the fields its registration feeds from this job's parameters (``register_model(settings=...)``)."""
        return {
            r.name: {name: getattr(self, param) for name, param in r.settings.items()}
            for r in registrations()
            if r.settings
        }

    def as_json(self) -> dict[str, Any]:
        """The run's keys, the values the job used and the settings hyperparameters (for ``model.json``)."""
        used: tuple[str, ...] = (
            "horizon_days",
            "models",
            "backtest_origins",
            "score",
            "min_history_days",
            "n_jobs",
            "country",
        )
        used = (*used, "rf_max_rows", "seed", "grain", "horizon_hours", "min_history_hours", "prophet_history_days")
        used = (*used, "champion_override", "backtest_sample", "runaway_guard")
        out: dict[str, Any] = {
            "run_date": self.run_date.isoformat(),
            "run_id": self.run_id,
            "lake_uri": self.lake_uri,
            "backtest_horizon": self.backtest_horizon,
            "backtest_step": self.backtest_step,
        }
        out.update({name: getattr(self, name) for name in used})
        out["models"] = list(self.models)
        out["settings"] = settings_hyperparameters(self.settings)
        return out


def _bad(name: str, value: str, expected: str) -> ConfigError:
    return ConfigError(f"hyperparameter {name}={value!r} is not {expected}")


def _optional_int(raw: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    """The integer value of ``name`` within ``low..high``, or None when it is not given."""
    if name not in raw:
        return None
    value = raw[name]
    try:
        number = int(value.strip())
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise _bad(name, value, f"an integer between {low} and {high}")
    return number


def _required(raw: Mapping[str, str], name: str) -> str:
    value = raw.get(name, "").strip()
    if not value:
        raise ConfigError(f"hyperparameter {name} is required ({HYPERPARAMETERS[name].split('; ', 1)[1]})")
    return value


def normalise_hyperparameters(raw: Mapping[str, object]) -> dict[str, str]:
    """Values as SageMaker passes them: strings. Numbers are accepted as text; a JSON-quoted string (as some
    SDKs send) is unquoted; anything else is an error."""
    out: dict[str, str] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"hyperparameter {name} must be a string, got {type(value).__name__}")
        text = str(value)
        if len(text) >= 2 and text[0] == text[-1] == '"':
            try:
                decoded = json.loads(text)
            except json.JSONDecodeError:
                decoded = None
            if isinstance(decoded, str):
                text = decoded
        out[name] = text
    return out


def parse_hyperparameters(raw_values: Mapping[str, object]) -> TrainingParams:
    """Validate the hyperparameters; raise :class:`ConfigError` with one clear line for the first bad one.

    The settings hyperparameters are decoded into :class:`Settings` by the settings module's own rules (the
    same as the YAML file's and the ``CF_*`` variables'). Keys starting with ``sagemaker_`` or ``_`` (added by
    SageMaker tooling) are ignored; any other unknown key is an error, so a misspelt setting cannot silently
    fall back to its default.
    """
    raw = normalise_hyperparameters(raw_values)
    unknown = sorted(k for k in raw if k not in HYPERPARAMETERS and not k.startswith(("sagemaker_", "_")))
    if unknown:
        refused = [k for k in unknown if k in CLOUD_REFUSED]
        if refused:
            raise ConfigError(f"hyperparameter {refused[0]} is not a job setting: {CLOUD_REFUSED[refused[0]]}")
        same_key = [h for h in HYPERPARAMETERS if h.rpartition(".")[2] == unknown[0]]
        close = same_key or difflib.get_close_matches(unknown[0], HYPERPARAMETERS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(
            f"unknown hyperparameter(s) {', '.join(unknown)}{hint}; expected: {', '.join(JOB_HYPERPARAMETERS)} "
            "or a setting's dotted name (training.models, fleet.country...: docs/settings.md)"
        )
    run_date_text = _required(raw, "run_date")
    try:
        run_date = date.fromisoformat(run_date_text)
    except ValueError:
        run_date = None
    if run_date is None or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", run_date_text):
        raise _bad("run_date", raw["run_date"], "a date in the form YYYY-MM-DD")
    run_id = _required(raw, "run_id")
    if not _RUN_ID.fullmatch(run_id):
        raise _bad("run_id", raw["run_id"], "1 to 128 characters from A-Z, a-z, 0-9, '-' and '_'")
    lake_uri = _required(raw, "lake_uri")
    if "://" in lake_uri and not lake_uri.startswith("s3://"):
        raise _bad("lake_uri", raw["lake_uri"], "a local folder or an s3://bucket/prefix URI")
    try:
        settings = settings_from_strings({k: v for k, v in raw.items() if k in CLOUD_SETTINGS})
    except ConfigError as exc:
        raise ConfigError(f"hyperparameters: {exc}") from None
    training = settings.training
    horizon = training.horizon_hours if training.grain == "hourly" else settings.horizon_days
    return TrainingParams(
        run_date=run_date,
        run_id=run_id,
        lake_uri=lake_uri,
        settings=settings,
        backtest_horizon=_optional_int(raw, "backtest_horizon", 1, horizon),
        backtest_step=_optional_int(raw, "backtest_step", 1, 365),
    )


# ------------------------------------------------------------------------------------------------ contract


@dataclass(frozen=True)
class ContractPaths:
    """The folders and files of the training container contract under one root."""

    root: Path

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    @property
    def resource_config(self) -> Path:
        return self.root / "input" / "config" / "resourceconfig.json"

    @property
    def channel(self) -> Path:
        return self.root / "input" / "data" / CHANNEL

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"


def read_hosts(paths: ContractPaths) -> tuple[int, int, str]:
    """(index of this host among the sorted hosts, number of hosts, host name); one host by default."""
    if not paths.resource_config.exists():
        return 0, 1, "algo-1"
    config = read_json_object(paths.resource_config, "resource config")
    hosts, current = config.get("hosts"), config.get("current_host")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"resource config at {paths.resource_config}: 'hosts' must be a list of host names")
    if len(set(hosts)) != len(hosts):
        raise ConfigError(f"resource config at {paths.resource_config}: 'hosts' lists a host twice")
    if current not in hosts:
        raise ConfigError(f"resource config at {paths.resource_config}: current_host {current!r} is not in hosts")
    ordered = sorted(hosts)
    return ordered.index(current), len(ordered), str(current)


def shard_of(server_id: str, metric: str, n_hosts: int) -> int:
    """The host index a series belongs to: SHA-256 of ``server_id|metric`` modulo the number of hosts.

    Stable across processes, hosts and Python versions (unlike ``hash``), so the hosts' shards are disjoint
    and together cover the fleet.
    """
    digest = hashlib.sha256(f"{server_id}|{metric}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n_hosts


def select_shard(daily: pd.DataFrame, index: int, n_hosts: int) -> pd.DataFrame:
    """The rows of the series that belong to host ``index`` of ``n_hosts``."""
    if n_hosts == 1 or daily.empty:
        return daily
    pairs = daily[["server_id", "metric"]].drop_duplicates()
    mine = [shard_of(str(s), str(m), n_hosts) == index for s, m in pairs.itertuples(index=False)]
    keep = pd.MultiIndex.from_frame(pairs[mine])
    return daily[pd.MultiIndex.from_frame(daily[["server_id", "metric"]]).isin(keep)]


def part_name(index: int, n_hosts: int) -> str:
    return f"part-{index:03d}-of-{n_hosts:03d}"


def is_run_id(text: str) -> bool:
    """Whether ``text`` is a run id the job accepts (and so a safe segment of the staging keys)."""
    return bool(_RUN_ID.fullmatch(text))


def staging_prefix(run_id: str) -> str:
    return f"{STAGING_PREFIX}/run_id={run_id}"


def staging_keys(run_id: str, index: int, n_hosts: int) -> dict[str, str]:
    """The deterministic lake keys one host stages: its two Parquet parts and its manifest."""
    base, part = staging_prefix(run_id), part_name(index, n_hosts)
    return {
        "forecasts": f"{base}/forecasts/{part}.parquet",
        "model_metrics": f"{base}/model_metrics/{part}.parquet",
        "manifest": f"{base}/manifests/{part}.json",
    }


def _shard_rows(index: int, n_hosts: int, read: list[int]) -> Callable[[Any], Any]:
    """A filter of an Arrow table's rows to the series of host ``index`` (:func:`shard_of`, each series hashed
    once across the channel's objects); ``read`` counts the rows before filtering."""
    import pyarrow as pa
    import pyarrow.compute as pc

    seen: set[str] = set()
    mine: list[str] = []

    def keep(piece: pa.Table) -> pa.Table:
        read.append(piece.num_rows)
        keys = pc.binary_join_element_wise(piece["server_id"], piece["metric"], "|")
        for key in pc.unique(keys).to_pylist():
            if key not in seen:
                seen.add(key)
                server_id, _, metric = key.rpartition("|")
                if shard_of(server_id, metric, n_hosts) == index:
                    mine.append(key)
        return piece.filter(pc.is_in(keys, value_set=pa.array(mine, pa.string())))

    return keep


def read_channel(paths: ContractPaths, grain: str = "daily", index: int = 0, n_hosts: int = 1) -> pd.DataFrame:
    """The metrics_daily rows of the ``curated`` data channel (metrics_hourly with ``grain="hourly"``); with
    ``n_hosts`` > 1 only host ``index``'s series, filtered object by object so a host holds only its shard."""
    if not paths.channel.is_dir():
        raise InputError(f"no data channel {CHANNEL!r} at {paths.channel}")
    table = CHANNEL_TABLES[grain]
    read: list[int] = []
    daily = read_partitioned_dir(paths.channel, table, None if n_hosts == 1 else _shard_rows(index, n_hosts, read))
    if daily.empty and not any(read):
        raise InputError(
            f"data channel {CHANNEL!r} at {paths.channel} holds no {table.name} rows "
            f"(expected {table.partition_names[0]}=YYYY-MM-DD/data.parquet objects)"
        )
    return daily


@contextmanager
def _progress_bar(
    progress: bool | ProgressReporter, description: str, total: int
) -> Iterator[Callable[[int], None] | None]:
    """A bar over the series: the caller's reporter, a bar of its own (``True``), or none (``False``)."""
    if progress is False:
        yield None
        return
    if progress is True:
        with RichProgress() as own, own.task(description, total) as advance:
            yield advance
        return
    with progress.task(description, total) as advance:
        yield advance


def run_training_job(
    root: Path = DEFAULT_ROOT,
    *,
    progress: bool | ProgressReporter = False,
    lake: Lake | None = None,
    log_failure: bool = True,
) -> int:
    """Run the training job under the contract at ``root``; return the process exit code.

    Any failure writes a one-line reason to ``output/failure`` (what SageMaker shows as the job's failure
    reason) and returns 1. ``lake`` overrides the ``lake_uri`` hyperparameter's lake (the local runner passes
    its own, already configured, lake). ``log_failure=False`` leaves the reason to the caller (the local runner
    raises it), so the user sees it once.
    """
    paths = ContractPaths(Path(root))
    try:
        summary = _train(paths, progress=progress, lake=lake)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, CapacityForecasterError) else redact(one_line(exc))
        if not isinstance(exc, CapacityForecasterError):
            sys.stderr.write(redact(traceback.format_exc()))
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        paths.failure.write_text(reason + "\n", encoding="utf-8")
        if log_failure:
            log.error("training failed: %s", reason)
        return 1
    log.info("training host finished: %s", json.dumps(summary, sort_keys=True))
    return 0


def _train(paths: ContractPaths, *, progress: bool | ProgressReporter, lake: Lake | None) -> dict[str, Any]:
    started = time.perf_counter()
    params = parse_hyperparameters(read_json_object(paths.hyperparameters, "hyperparameters file"))
    index, n_hosts, host = read_hosts(paths)
    target = lake if lake is not None else open_lake(params.lake_uri)
    shard = select_shard(read_channel(paths, params.grain, index, n_hosts), index, n_hosts)
    n_series = len(shard[["server_id", "metric"]].drop_duplicates())
    log.info("host %s (%d of %d): %d series", host, index + 1, n_hosts, n_series)

    with _progress_bar(progress, f"forecasting on {host}", n_series) as advance:
        forecasts, metrics = forecast_fleet(
            shard,
            run_date=params.run_date,
            horizon_days=params.horizon,
            models=params.models,
            n_origins=params.backtest_origins,
            score=params.score,
            min_history_days=params.min_history,
            n_jobs=params.n_jobs,
            progress=advance,
            backtest_horizon=params.backtest_horizon,
            backtest_step=params.backtest_step,
            model_settings=params.model_settings(),
            grain=params.grain,
            champion_override=params.champion_override,
            backtest_sample=params.backtest_sample,
            runaway_guard=params.runaway_guard,
        )

    write_model_artifact(paths.model_dir, params, host, metrics)
    keys = staging_keys(params.run_id, index, n_hosts)
    forecasts_table, metrics_table = params.tables
    target.write_object_table(keys["forecasts"], forecasts_table, forecasts)
    target.write_object_table(keys["model_metrics"], metrics_table, metrics)
    manifest = {
        "run_id": params.run_id,
        "run_date": params.run_date.isoformat(),
        "grain": params.grain,
        "host": host,
        "host_index": index,
        "hosts": n_hosts,
        "series": int(metrics[["server_id", "metric"]].drop_duplicates().shape[0]),
        "forecast_rows": len(forecasts),
        "model_metric_rows": len(metrics),
        "models": list(params.models),
        "champions": {str(k): int(v) for k, v in metrics[metrics["is_champion"]]["model"].value_counts().items()},
        "statuses": {str(k): int(v) for k, v in metrics["status"].value_counts().items()},
        "seconds": round(time.perf_counter() - started, 3),
        "forecasts_key": keys["forecasts"],
        "model_metrics_key": keys["model_metrics"],
    }
    # The manifest goes last: its presence means this host's parts are complete.
    target.store.put_bytes(keys["manifest"], json.dumps(manifest, indent=2).encode(), content_type="application/json")
    return manifest


def write_model_artifact(model_dir: Path, params: TrainingParams, host: str, metrics: pd.DataFrame) -> Path:
    """``model.json``: the job's settings, each model's parameters and the champion of every series."""
    model_dir.mkdir(parents=True, exist_ok=True)
    champions = metrics[metrics["is_champion"]].set_index(["server_id", "metric"])["model"]
    series = metrics[["server_id", "metric"]].drop_duplicates()
    artifact = {
        "run_id": params.run_id,
        "run_date": params.run_date.isoformat(),
        "host": host,
        "settings": params.as_json(),
        "models": {
            m.name: m.params()
            for m in resolve_models(params.models, merged_settings(get_grain(params.grain), params.model_settings()))
        },
        "champions": [
            {"server_id": s, "metric": m, "model": champions.get((s, m))} for s, m in series.itertuples(index=False)
        ],
    }
    path = model_dir / "model.json"
    path.write_text(json.dumps(artifact, indent=2, default=str), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------- publish


@dataclass(frozen=True)
class PublishResult:
    """What publishing a training run wrote."""

    run_id: str
    run_date: date
    hosts: int
    series: int
    forecast_rows: int
    model_metric_rows: int
    written: tuple[str, ...] = field(default=())
    already_published: bool = False
    grain: str = "daily"
    """The grain the run trained at: its forecasts are in ``forecasts`` (daily) or ``forecasts_hourly``."""

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_date"] = self.run_date.isoformat()
        out["written"] = list(self.written)
        return out


def publish_training_run(lake: Lake, *, run_id: str, run_date: date) -> PublishResult:
    """Check every host's manifest is staged, merge the parts, replace the run's two partitions, clean up.

    Re-publishing is idempotent: once a run is published its staging objects are gone and a small
    ``published.json`` record stays under the run's staging prefix; publishing again returns that record.
    """
    prefix = staging_prefix(run_id)
    record_key = f"{prefix}/published.json"
    manifests = _read_manifests(lake, prefix)
    published = _read_record(lake, record_key, run_date)
    if published is not None and not _complete(manifests):
        _clean_staging(lake, prefix)  # leftovers of an interrupted clean-up
        return published
    if not manifests:
        raise CapacityForecasterError(
            f"training run {run_id} has nothing staged under {lake.store.uri_for(prefix)}: "
            "no host manifest (did the training job finish?)"
        )
    n_hosts = _check_complete(run_id, manifests)
    for (index, _), manifest in sorted(manifests.items()):
        if manifest.get("run_date") != run_date.isoformat():
            raise CapacityForecasterError(
                f"training run {run_id}: {part_name(index, n_hosts)} was trained for run date "
                f"{manifest.get('run_date')}, not {run_date}"
            )

    grain = _run_grain(run_id, manifests)
    forecasts_table, metrics_table = FORECAST_TABLES[grain]
    forecasts = _read_parts(lake, run_id, n_hosts, "forecasts", forecasts_table, manifests)
    metrics = _read_parts(lake, run_id, n_hosts, "model_metrics", metrics_table, manifests)
    _check_disjoint(run_id, metrics)
    forecasts = forecasts.drop(columns="_part").sort_values(["server_id", "metric", "model", "ds"], ignore_index=True)
    metrics = metrics.drop(columns="_part").sort_values(["server_id", "metric", "model"], ignore_index=True)

    partition = {"run_date": run_date}
    written = (
        lake.write_partition(forecasts_table, forecasts, partition),
        lake.write_partition(metrics_table, metrics, partition),
    )
    result = PublishResult(
        run_id=run_id,
        run_date=run_date,
        hosts=n_hosts,
        series=int(metrics[["server_id", "metric"]].drop_duplicates().shape[0]),
        forecast_rows=len(forecasts),
        model_metric_rows=len(metrics),
        written=written,
        grain=grain,
    )
    lake.store.put_bytes(record_key, json.dumps(result.as_json(), indent=2).encode(), content_type="application/json")
    _clean_staging(lake, prefix)
    return result


def _run_grain(run_id: str, manifests: Mapping[tuple[int, int], Mapping[str, Any]]) -> str:
    """The grain every host trained at (manifests without one are daily, as before grains existed)."""
    grains = sorted({str(m.get("grain", "daily")) for m in manifests.values()})
    if len(grains) != 1 or grains[0] not in FORECAST_TABLES:
        raise CapacityForecasterError(f"training run {run_id}: hosts trained at different grains ({', '.join(grains)})")
    return grains[0]


def _read_manifests(lake: Lake, prefix: str) -> dict[tuple[int, int], dict[str, Any]]:
    found: dict[tuple[int, int], dict[str, Any]] = {}
    for info in lake.store.list(f"{prefix}/manifests/"):
        match = _PART.fullmatch(info.key.rsplit("/", 1)[-1])
        if match:
            found[(int(match[1]), int(match[2]))] = json.loads(lake.store.get_bytes(info.key))
    return found


def _complete(manifests: Mapping[tuple[int, int], object]) -> bool:
    counts = {n for _, n in manifests}
    return len(counts) == 1 and {i for i, _ in manifests} == set(range(next(iter(counts))))


def _check_complete(run_id: str, manifests: Mapping[tuple[int, int], object]) -> int:
    counts = sorted({n for _, n in manifests})
    if len(counts) > 1:
        raise CapacityForecasterError(
            f"training run {run_id} has manifests for different host counts ({', '.join(map(str, counts))}); "
            "delete its stale staging objects and run it again"
        )
    n_hosts = counts[0]
    missing = [i for i in range(n_hosts) if (i, n_hosts) not in manifests]
    if missing:
        names = ", ".join(part_name(i, n_hosts) for i in missing)
        raise CapacityForecasterError(
            f"training run {run_id} is incomplete: {n_hosts - len(missing)} of {n_hosts} host manifests "
            f"present, missing {names}"
        )
    return n_hosts


def _read_parts(
    lake: Lake,
    run_id: str,
    n_hosts: int,
    name: str,
    table: TableSchema,
    manifests: Mapping[tuple[int, int], Mapping[str, Any]],
) -> pd.DataFrame:
    frames = []
    rows_field = "forecast_rows" if name == "forecasts" else "model_metric_rows"
    for i in range(n_hosts):
        key = staging_keys(run_id, i, n_hosts)[name]
        if not lake.store.exists(key):
            raise CapacityForecasterError(f"training run {run_id}: {name} part {part_name(i, n_hosts)} is missing")
        frame = lake.read_object_table(key, table)
        if len(frame) != manifests[(i, n_hosts)].get(rows_field):
            raise CapacityForecasterError(
                f"training run {run_id}: {name} part {part_name(i, n_hosts)} has {len(frame)} rows, "
                f"its manifest says {manifests[(i, n_hosts)].get(rows_field)}"
            )
        frames.append(frame.assign(_part=i))
    return pd.concat(frames, ignore_index=True)


def _check_disjoint(run_id: str, metrics: pd.DataFrame) -> None:
    """Every series must come from exactly one host."""
    owners = metrics[["server_id", "metric", "_part"]].drop_duplicates()
    twice = owners[owners.duplicated(["server_id", "metric"], keep=False)]
    if twice.empty:
        return
    server, metric = twice.iloc[0]["server_id"], twice.iloc[0]["metric"]
    parts = sorted(int(p) for p in twice[(twice["server_id"] == server) & (twice["metric"] == metric)]["_part"])
    count = len(twice[["server_id", "metric"]].drop_duplicates())
    raise CapacityForecasterError(
        f"training run {run_id}: {count} series appear in more than one host's output, "
        f"e.g. {server}|{metric} in parts {', '.join(f'{p:03d}' for p in parts)}"
    )


def _read_record(lake: Lake, key: str, run_date: date) -> PublishResult | None:
    if not lake.store.exists(key):
        return None
    data = json.loads(lake.store.get_bytes(key))
    if data.get("run_date") != run_date.isoformat():
        raise CapacityForecasterError(
            f"training run {data.get('run_id')} was published for run date {data.get('run_date')}, not {run_date}"
        )
    return PublishResult(
        run_id=str(data["run_id"]),
        run_date=run_date,
        hosts=int(data["hosts"]),
        series=int(data["series"]),
        forecast_rows=int(data["forecast_rows"]),
        model_metric_rows=int(data["model_metric_rows"]),
        written=tuple(data.get("written", ())),
        grain=str(data.get("grain", "daily")),
        already_published=True,
    )


def _clean_staging(lake: Lake, prefix: str) -> None:
    # Manifests first: a half-cleaned run reads as incomplete, never as complete with missing parts.
    for folder in ("manifests", "forecasts", "model_metrics"):
        lake.delete_prefix(f"{prefix}/{folder}")


# -------------------------------------------------------------------------------------------- local runner


TRAIN_LEASE = "train"
"""The lease a local training run holds on its lake (``state/locks/train.json``)."""


def run_local_training(
    lake: Lake,
    *,
    run_date: date,
    hyperparameters: Mapping[str, object],
    hosts: int = 1,
    progress: bool | ProgressReporter = False,
    workdir: Path | None = None,
) -> PublishResult:
    """Run the training job as SageMaker local mode would, one simulated host after the other, then publish.

    Each host gets its own contract root (``<workdir>/algo-<k>``) with the hyperparameters as strings, a
    resource config naming it among ``hosts`` hosts, and the lake's ``curated/metrics_daily`` objects in its
    ``curated`` channel. Missing ``run_id`` and ``lake_uri`` hyperparameters are filled in; ``run_date`` is
    this call's. Staged leftovers of an earlier attempt with the same ``run_id`` are removed first.
    """
    if hosts < 1:
        raise ConfigError(f"hosts must be at least 1, got {hosts}")
    params = _stringify(hyperparameters)
    if params.get("run_date", run_date.isoformat()) != run_date.isoformat():
        raise ConfigError(f"hyperparameter run_date={params['run_date']!r} disagrees with run date {run_date}")
    params["run_date"] = run_date.isoformat()
    params.setdefault("lake_uri", lake.uri)
    params.setdefault("run_id", f"local-{run_date:%Y%m%d}-{uuid.uuid4().hex[:8]}")
    from capacity_forecaster.stages import RISK_LEASE

    # One local training run at a time on a lake (a second one would clean this one's staging), and its
    # publication under the risk lease that the risk Lambda and `capacity-forecaster risk` hold.
    with Lease(lake.store, TRAIN_LEASE):
        run_id = params["run_id"]
        names = [f"algo-{k}" for k in range(1, hosts + 1)]
        # This call runs every host of the run: leftovers of an earlier, interrupted run with the same id (perhaps
        # with another host count) are stale.
        _clean_staging(lake, staging_prefix(run_id))

        grain = params.get("training.grain", TrainingSettings.grain)
        if grain not in CHANNEL_TABLES:
            raise ConfigError(f"hyperparameter training.grain={grain!r} is not daily or hourly")
        with _workspace(workdir) as base:
            channel = base / "_channel"
            _download_channel(lake, channel, CHANNEL_TABLES[grain])
            for name in names:
                root = base / name
                _build_contract(root, params, name, names, channel)
                if run_training_job(root, progress=progress, lake=lake, log_failure=False) != 0:
                    reason = ContractPaths(root).failure.read_text(encoding="utf-8").strip()
                    raise CapacityForecasterError(f"training host {name} failed: {reason}")
        with Lease(lake.store, RISK_LEASE):
            return publish_training_run(lake, run_id=run_id, run_date=run_date)


def _stringify(values: Mapping[str, object]) -> dict[str, str]:
    out = {}
    for name, value in values.items():
        if isinstance(value, date):
            out[name] = value.isoformat()
        elif isinstance(value, list | tuple):
            out[name] = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            out[name] = str(value).lower()
        else:
            out[name] = str(value)
    return out


WORKSPACE_PREFIX = "cf-training-"
"""The name of a local training run's temporary folder (a copy of the channel and each host's contract)."""
STALE_WORKSPACE_AGE = timedelta(days=1)
"""A workspace folder older than this is a killed run's leftover: the next local training run deletes it."""


@contextmanager
def _workspace(workdir: Path | None) -> Iterator[Path]:
    """``workdir``, or a temporary folder deleted at the end, on errors, Ctrl-C and SIGTERM too; a kill -9
    leaves it behind, and the next run deletes the leftovers older than :data:`STALE_WORKSPACE_AGE`."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    remove_stale_workspaces()
    with _terminate_as_exit(), tempfile.TemporaryDirectory(prefix=WORKSPACE_PREFIX) as tmp:
        yield Path(tmp)


def remove_stale_workspaces(folder: Path | None = None, max_age: timedelta = STALE_WORKSPACE_AGE) -> list[Path]:
    """Delete the ``cf-training-*`` folders in ``folder`` (the temporary folder) older than ``max_age``."""
    root = Path(folder or tempfile.gettempdir())
    before = time.time() - max_age.total_seconds()
    removed = []
    for path in root.glob(WORKSPACE_PREFIX + "*"):
        try:
            if path.is_dir() and not path.is_symlink() and path.stat().st_mtime < before:
                shutil.rmtree(path)
                removed.append(path)
        except OSError as exc:  # another user's folder, or removed meanwhile
            log.debug("could not remove stale training workspace %s: %s", path, exc)
    return removed


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """While in the block, SIGTERM raises ``SystemExit`` (so ``finally`` clauses run) where it would have ended
    the process at once (the default handler, in the main thread); elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _download_channel(lake: Lake, channel: Path, table: TableSchema = METRICS_DAILY) -> int:
    """Copy the lake's metrics_daily (or ``table``'s) objects to ``channel``, keeping their ``dt=...`` folders
    (as SageMaker does for an S3 channel pointing at the table's prefix)."""
    if channel.exists():
        shutil.rmtree(channel)
    channel.mkdir(parents=True)
    count = 0
    for info in lake.store.list(table.prefix + "/"):
        if parse_partition_key(table, info.key) is None:
            continue
        lake.store.download_file(info.key, channel / info.key[len(table.prefix) + 1 :])
        count += 1
    return count


def _build_contract(root: Path, params: Mapping[str, str], host: str, hosts: list[str], channel: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    paths = ContractPaths(root)
    paths.hyperparameters.parent.mkdir(parents=True)
    paths.hyperparameters.write_text(json.dumps(dict(params), indent=2), encoding="utf-8")
    paths.resource_config.write_text(
        json.dumps({"current_host": host, "hosts": hosts, "network_interface_name": "eth0"}), encoding="utf-8"
    )
    paths.channel.parent.mkdir(parents=True)
    shutil.copytree(channel, paths.channel, copy_function=_link_or_copy)
    paths.model_dir.mkdir()
    paths.failure.parent.mkdir()


def _link_or_copy(src: str, dst: str) -> object:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
