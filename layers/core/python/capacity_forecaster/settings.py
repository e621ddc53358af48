"""Settings: built-in defaults, then a YAML config file, then ``CF_*`` environment variables, then CLI flags.

Every value is validated once here, with a one-line :class:`ConfigError` naming the setting and what is allowed.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import yaml

from capacity_forecaster import limits
from capacity_forecaster.errors import ConfigError
from capacity_forecaster.schema import METRICS

DEFAULT_LAKE = "./lake"
DEFAULT_THRESHOLD = 80.0
DEFAULT_HEADROOM = 10.0
MODEL_NAMES: Final = ("seasonal_naive", "linear_trend", "recent_trend", "prophet", "random_forest")
"""The forecasting models the training job registers (``forecasting.baselines.registered_models()``)."""
SCALE_ENGINES: Final = ("auto", "lambda", "sagemaker")
"""Where the fleet-wide stages run (``scale.engine``; ``capacity_forecaster.scale``)."""
SCORES: Final = ("mae", "rmse", "smape", "mase")
"""The backtest scores a champion can be chosen on (``forecasting.metrics.SCORES``)."""


@dataclass(frozen=True)
class FleetSettings:
    """The synthetic fleet the ``generate`` stage writes."""

    servers: int = 100
    days: int = 730
    seed: int = 42
    country: str = "US"
    end_date: date | None = None
    """Last observed day; None means yesterday (UTC), so a daily run generates up to the day before."""

    def resolved_end_date(self, today: date | None = None) -> date:
        return self.end_date or ((today or datetime.now(UTC).date()) - timedelta(days=1))


@dataclass(frozen=True)
class EtlSettings:
    """Validation and gap filling of raw samples."""

    max_gap_days: int = 14
    """Longest run of missing days that is imputed; longer gaps stay missing."""
    future_tolerance_minutes: int = 60
    """Samples more than this far in the future (clock skew allowance) are quarantined."""
    grain: str = "daily"
    """``daily``: metrics_daily only; ``hourly``: metrics_hourly as well."""
    min_coverage: float = 0.8
    """An hourly value backed by fewer than this share of the expected samples is flagged ``low_coverage``."""
    imputation: str = "seasonal"
    """How gaps of up to max_gap_days are filled: ``seasonal`` (within the series) or ``knn`` (similar servers)."""
    knn_neighbors: int = 5
    """Series of the same metric whose mean fills a day with ``imputation: knn``."""
    outlier_window: int = 28
    """Trailing days the outlier rules compare each daily value with."""
    outlier_z: float = 3.0
    """Rolling z-score beyond which a daily value is an outlier."""
    outlier_iqr_k: float = 1.5
    """Tukey fence multiplier: outside Q1 - k x IQR .. Q3 + k x IQR of the trailing window is an outlier."""


@dataclass(frozen=True)
class TrainingSettings:
    """Models and backtest of the training job."""

    models: tuple[str, ...] = ("seasonal_naive", "linear_trend", "recent_trend", "prophet", "random_forest")
    backtest_origins: int = 1
    """Rolling origins each daily series is backtested from, each scored over the whole horizon (windows back to
    back): the champion of each metric is chosen on their mean over the fleet, and the bands are calibrated on
    their residuals. Each costs one fit a series and model. One 90-day window holds 90 residuals a series; on
    bench_forecast.py's four daily sources a second one changed no champion's MAE by more than 0.1% and cost a
    third more CPU (2026-12-02)."""
    backtest_origins_hourly: int = 2
    """Rolling origins of the hourly grain, 96 hours apart (a week-long window each): one window of a week
    chose worse on the hourly scenarios (champion MAE 5.64 to 6.12) and under-covered Bitbrains (0.80 to 0.74)."""
    score: str = "mae"
    min_history_days: int = 56
    hosts: int = 1
    n_jobs: int = 0
    """Worker processes per host; 0 means all cores."""
    rf_max_rows: int = 20_000
    """Training rows of one random_forest fit (one per metric and backtest origin)."""
    seed: int = 0
    """Seed of the random_forest and of prophet's uncertainty samples."""
    grain: str = "daily"
    """``daily``: forecast metrics_daily ``horizon_days`` ahead; ``hourly``: metrics_hourly ``horizon_hours`` ahead."""
    horizon_hours: int = 168
    """Forecast horizon of the hourly grain, in hours (168: a week)."""
    min_history_hours: int = 168
    """Hourly series with fewer hours than this are forecast by the models fitted on what there is, not
    backtested (the metric's champion, with its calibrated band)."""
    prophet_history_days: int = 400
    champion_override: float = 0.0
    runaway_guard: bool = False
    """Give a series the median of the models when its champion's forecast leaves the observed range faster
    than the series ever moved. Off by default: on bench_forecast.py it helped the hourly scenarios (champion
    5.631 to 5.547, coverage 0.739 to 0.780) and cost generator-42 three growing series (champion 0.910 to 1.720)."""
    backtest_sample: int = 200
    """Series of each metric backtested on each host (a stable hash sample): the metric's champion is chosen
    and its band calibrated on them; the others are only fitted (``n_origins`` 0 in model_metrics). 0: all."""
    """A series keeps its own backtest winner over its metric's champion when it scored under this share of
    the champion's score (0: never; 0.6: a winner 40% better)."""
    """Days of recent history each daily prophet fit sees (0: all); 400 halves its cost but drops the yearly wave."""


@dataclass(frozen=True)
class RiskSettings:
    """Thresholds and severity tiers."""

    thresholds: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(METRICS, DEFAULT_THRESHOLD))
    critical_days: int = 30
    saturation_days: int = 7
    """An observed P95 at or over the threshold on each of the last N days counts as breaching now."""
    overprovisioned_ratio: float = 0.5
    """Peak P90 forecast below threshold x ratio on every metric: over-provisioned."""
    top: int = 15
    headroom: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(METRICS, DEFAULT_HEADROOM))
    """Percent added on top of the P90 forecast before it is compared with a sizing limit (findings, rightsizing)."""
    high_days: int = 0
    """P50 breach within this many days is high; 0 means anywhere in the horizon."""
    medium_days: int = 0
    """P90 breach within this many days is medium; 0 means anywhere in the horizon."""
    breach_days: int = 1
    """Consecutive forecast days at or over the threshold that make a breach; 1 means the first day over."""
    likely_breach_probability: float = 1 / 3
    """A breach at least this likely inside the horizon is high severity even when the P50 stays under the
    threshold: 1/3 flags whenever a miss is expected to cost more than a false alarm, a miss counted as twice
    as costly (the flag pays when p x 2 >= 1 - p)."""


@dataclass(frozen=True)
class RightsizingSettings:
    """Utilisation profiles, idle detection and the size and cost table of rightsizing."""

    k_min: int = 2
    k_max: int = 8
    """K-Means tries k from k_min to k_max and keeps the best silhouette."""
    profile_days: int = 90
    """Observed days of history the profile features are computed on."""
    idle_days: int = 30
    idle_cpu_p95: float = 15.0
    idle_mem_p95: float = 35.0
    """Idle: daily cpu P95 under idle_cpu_p95 and mem P95 under idle_mem_p95 on each of the last idle_days."""
    seed: int = 0
    price_file: str = ""
    """A price table of one's own (CSV: instance_type, vcpus, memory_gib, hourly_usd or monthly_cost) instead of
    the EC2 on-demand table shipped with the package (``capacity_forecaster/data/ec2_prices.csv``)."""
    instance_types: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Instance types added to the price table or replacing its entry: type -> cores, memory_gib, monthly_cost."""

    def price_table(self) -> Any:
        """The price table (:class:`~capacity_forecaster.prices.PriceTable`) with ``instance_types`` applied."""
        from capacity_forecaster.prices import PriceTable, load_price_table

        base = load_price_table(self.price_file)
        if not self.instance_types:
            return base
        sizes = {**base.sizes, **{k: dict(v) for k, v in self.instance_types.items()}}
        return PriceTable(sizes, base.source, base.price_date)

    def sizes(self) -> dict[str, dict[str, float]]:
        """Size and cost table: instance type -> cores, memory_gib, monthly_cost (USD)."""
        return dict(self.price_table().sizes)


@dataclass(frozen=True)
class IngestSettings:
    """How users' monitoring exports are read (by ``ingest`` and the ETL)."""

    metric_aliases: Mapping[str, str] = field(default_factory=dict)
    """Extra metric names mapped to cpu, mem, disk or net, on top of ``raw_formats.DEFAULT_METRIC_ALIASES``."""
    max_file_mb: int = 1024
    """Largest export (MB, once decompressed) ``ingest`` accepts and the ETL reads; larger raw objects are moved to
    quarantine/files/. The ETL streams CSV and Parquet (docs/etl.md); at most ``limits.MAX_FILE_MB``, the largest
    file the ETL Lambda processes from the measured memory, ``/tmp`` and CPU a MB of input."""

    def aliases(self) -> dict[str, str]:
        """The full alias table: canonical names, built-in aliases, then these."""
        from capacity_forecaster.raw_formats import metric_aliases

        return metric_aliases(self.metric_aliases)

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * 1024 * 1024


@dataclass(frozen=True)
class ScaleSettings:
    """Where the fleet-wide stages run (``capacity_forecaster.scale``, docs/scaling.md)."""

    engine: str = "auto"
    """lambda: the ETL and risk Lambdas; sagemaker: SageMaker Processing jobs of the same image and code;
    auto: lambda up to ``scale.LAMBDA_MAX_SERVERS`` servers, sagemaker above."""


@dataclass(frozen=True)
class Settings:
    """Everything a pipeline run needs."""

    lake: str = DEFAULT_LAKE
    horizon_days: int = 90
    fleet: FleetSettings = field(default_factory=FleetSettings)
    etl: EtlSettings = field(default_factory=EtlSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    risk: RiskSettings = field(default_factory=RiskSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    rightsizing: RightsizingSettings = field(default_factory=RightsizingSettings)
    scale: ScaleSettings = field(default_factory=ScaleSettings)
    s3: Mapping[str, Any] = field(default_factory=dict)
    """Overrides for :class:`~capacity_forecaster.storage.s3_client.S3Config` (region, endpoint_url, sse...)."""

    def __post_init__(self) -> None:
        _validate(self)

    def s3_config(self) -> Any:
        """The S3 client configuration: environment first, then the config file's ``s3`` section."""
        from capacity_forecaster.storage.s3_client import S3Config

        return S3Config.from_env(**dict(self.s3))


_SECTIONS = {
    "fleet": FleetSettings,
    "etl": EtlSettings,
    "training": TrainingSettings,
    "risk": RiskSettings,
    "rightsizing": RightsizingSettings,
    "ingest": IngestSettings,
    "scale": ScaleSettings,
}


def _setting_fields() -> dict[str, tuple[str | None, str]]:
    out: dict[str, tuple[str | None, str]] = {}
    for f in fields(Settings):
        if f.name in _SECTIONS:
            out.update({f"{f.name}.{g.name}": (f.name, g.name) for g in fields(_SECTIONS[f.name])})
        else:
            out[f.name] = (None, f.name)
    return out


SETTING_FIELDS: Final[dict[str, tuple[str | None, str]]] = _setting_fields()
"""Every setting by its dotted name (``fleet.servers``, ``horizon_days``) -> (section or None, field)."""
SETTINGS: Final[tuple[str, ...]] = tuple(SETTING_FIELDS)


def env_var(dotted: str) -> str:
    """The environment variable of a setting: ``CF_<SECTION>_<KEY>`` (``CF_FLEET_SERVERS``), ``CF_<KEY>`` on top."""
    return "CF_" + dotted.replace(".", "_").upper()


ENV_VARS: Final[dict[str, tuple[str | None, str]]] = {env_var(d): where for d, where in SETTING_FIELDS.items()}
"""Environment variable -> (section, key), one for every setting (derived from the dataclass fields)."""

CLOUD_REFUSED: Final[dict[str, str]] = {
    "lake": "the stack sets it: every function and the training job use the stack's lake bucket",
    "s3": "the stack sets it: the functions reach S3 in their own region and encrypt with the lake's KMS key",
    "rightsizing.price_file": "a file on this machine, which the functions cannot read: set "
    "rightsizing.instance_types for the types whose price differs",
    "fleet.end_date": "the scheduled generator writes history up to the day before each run; a fixed end date "
    "would regenerate the same days every day",
}
"""The settings a deployed stack cannot take from the settings file, each with why (docs/settings.md)."""
CLOUD_SETTINGS: Final[tuple[str, ...]] = tuple(d for d in SETTINGS if d not in CLOUD_REFUSED)
"""The settings that reach the deployed functions (environment) and the training job (hyperparameters)."""

LAMBDA_ENVIRONMENT_BUDGET: Final = 3072
"""Bytes (names and values) the settings may take of a function's environment: Lambda allows 4 KB in all, and
the stack's own variables (lake, keys, topic, image, role, Powertools) need the rest."""
MAX_HYPERPARAMETER_CHARS: Final = 2500
"""SageMaker's limit on one hyperparameter value."""
MAX_HYPERPARAMETERS: Final = 100
"""SageMaker's limit on the number of hyperparameters of a training job."""


def setting_value(settings: Settings, dotted: str) -> Any:
    section, key = SETTING_FIELDS[dotted]
    return getattr(getattr(settings, section) if section else settings, key)


@lru_cache(maxsize=1)
def default_settings() -> Settings:
    return Settings()


def encode_setting(value: Any) -> str:
    """A setting's value as text: scalars as written, dates ISO, lists comma-separated, mappings as JSON.
    :func:`settings_from_strings` reads it back through the same conversion as the YAML file and ``CF_*``."""
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(_plain(value), separators=(",", ":"))
    return str(value)


def _plain(value: Any) -> Any:
    return {str(k): _plain(v) for k, v in value.items()} if isinstance(value, Mapping) else value


def settings_strings(
    settings: Settings, *, names: tuple[str, ...] = SETTINGS, changed_only: bool = True
) -> dict[str, str]:
    """Dotted name -> text of each setting in ``names`` (only those that differ from the defaults, by default)."""
    defaults = default_settings()
    out: dict[str, str] = {}
    for dotted in names:
        value = setting_value(settings, dotted)
        if not changed_only or value != setting_value(defaults, dotted):
            out[dotted] = encode_setting(value)
    return out


def settings_from_strings(values: Mapping[str, str]) -> Settings:
    """The inverse of :func:`settings_strings`: settings from dotted name -> text, the others at their defaults."""
    raw: dict[str, Any] = {}
    for dotted, text in values.items():
        if dotted not in SETTING_FIELDS:
            raise ConfigError(f"unknown setting {dotted!r}")
        _set(raw, *SETTING_FIELDS[dotted], text)
    return _build(raw)


def describe_setting(dotted: str) -> str:
    """What a setting's text looks like and its default (the limits are :func:`_validate`'s)."""
    default = setting_value(default_settings(), dotted)
    kinds = ((bool, "true or false"), (int, "integer"), (float, "number"), (str, "text"), (tuple, "comma-separated"))
    kind = "JSON object" if isinstance(default, Mapping) else "YYYY-MM-DD or empty"
    kind = next((name for t, name in kinds if isinstance(default, t)), kind)
    text = encode_setting(default)
    shown = repr(text) if len(text) <= 60 else "the built-in table"
    return f"the {dotted} setting ({env_var(dotted)}): {kind}; default {shown}"


def settings_environment(settings: Settings) -> dict[str, str]:
    """The ``CF_*`` variables of the cloud settings that differ from the defaults (:func:`load_settings` reads them)."""
    return {env_var(d): text for d, text in settings_hyperparameters(settings).items()}


def settings_hyperparameters(settings: Settings) -> dict[str, str]:
    """The training job's settings hyperparameters: dotted name -> text, the cloud settings off their defaults."""
    return settings_strings(settings, names=CLOUD_SETTINGS)


def cloud_problems(settings: Settings) -> list[str]:
    """Why ``settings`` cannot be deployed as they are (empty when they can)."""
    out = [
        f"setting {d} cannot be set for the cloud: {reason}"
        for d, reason in CLOUD_REFUSED.items()
        if setting_value(settings, d) != setting_value(default_settings(), d)
    ]
    hyper = settings_hyperparameters(settings)
    size = sum(len(env_var(k)) + len(v) for k, v in hyper.items())
    hyper_size = len(json.dumps(hyper, separators=(",", ":")))  # the launcher's CF_TRAINING_HYPERPARAMETERS
    if max(size, hyper_size) > LAMBDA_ENVIRONMENT_BUDGET:
        largest = max(hyper, key=lambda k: len(hyper[k]))
        out.append(
            f"the settings take {max(size, hyper_size)} bytes of a function's environment, more than the "
            f"{LAMBDA_ENVIRONMENT_BUDGET} the stack leaves them of Lambda's 4 KB (largest: {largest})"
        )
    out += [
        f"setting {d} is {len(text)} characters as a hyperparameter; SageMaker allows {MAX_HYPERPARAMETER_CHARS}"
        for d, text in hyper.items()
        if len(text) > MAX_HYPERPARAMETER_CHARS
    ]
    return out


def load_cloud_settings(config_path: str | Path | None) -> Settings:
    """The settings of a deployed stack: the YAML file over the defaults (no ``CF_*`` variables of this machine),
    refusing what cannot apply in the cloud. ConfigError, one line, when the file is wrong or refused."""
    raw: dict[str, Any] = _read_yaml(Path(config_path)) if config_path else {}
    settings = _build(raw)
    present = [d for d in CLOUD_REFUSED if _present(raw, d)]
    problems = [f"setting {d} cannot be set for the cloud: {CLOUD_REFUSED[d]}" for d in present]
    problems += [p for p in cloud_problems(settings) if p not in problems]
    if problems:
        raise ConfigError("; ".join(problems))
    return settings


def _present(raw: Mapping[str, Any], dotted: str) -> bool:
    section, key = SETTING_FIELDS[dotted]
    target = raw.get(section, {}) if section else raw
    return isinstance(target, Mapping) and key in target


def load_settings(
    config_path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from defaults, the YAML file, ``CF_*`` variables and explicit overrides, in that order.

    Every setting has its variable (:func:`env_var`; values as :func:`encode_setting` writes them, empty ones
    ignored). ``overrides`` uses dotted names (``"fleet.servers"``, ``"lake"``); None values are ignored.
    """
    env = os.environ if environ is None else environ
    path = config_path or env.get("CF_CONFIG")
    raw: dict[str, Any] = _read_yaml(Path(path)) if path else {}
    for var, (section, key) in ENV_VARS.items():
        if env.get(var):
            _set(raw, section, key, env[var])
    for dotted, value in (overrides or {}).items():
        if value is not None:
            section, _, key = dotted.rpartition(".")
            _set(raw, section or None, key, value)
    return _build(raw)


class _Loader(yaml.SafeLoader):
    """Safe YAML with one change: a value that looks like a date but is not one (``2026-02-30``) stays text, so
    the setting it is given to names it in its error instead of the parser failing without saying where."""

    def construct_yaml_timestamp(self, node: yaml.Node) -> Any:
        try:
            return super().construct_yaml_timestamp(node)  # type: ignore[arg-type]
        except ValueError:
            return self.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


MAX_CONFIG_BYTES: Final = 4 * 1024 * 1024
"""The largest settings file read (so that ``--config /dev/zero`` is an error, not a hang)."""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            content = fh.read(MAX_CONFIG_BYTES + 1)
        if len(content) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"config file {path} is larger than {MAX_CONFIG_BYTES // 2**20} MiB: is it a settings file?"
            )
        data = yaml.load(content.decode("utf-8"), Loader=_Loader)  # _Loader is a SafeLoader
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder, not a YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}): is it a YAML file?") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests its values too deeply to be settings") from None
    except (ValueError, TypeError) as exc:  # a value the safe constructors refuse
        raise ConfigError(f"config file {path} holds a value YAML cannot read: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def _set(raw: dict[str, Any], section: str | None, key: str, value: Any) -> None:
    if section is None:
        raw[key] = value
    else:
        target = raw.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"setting {section!r} must be a mapping")
        target[key] = value


def _build(raw: Mapping[str, Any]) -> Settings:
    known = {f.name for f in fields(Settings)}
    unknown = sorted(map(repr, set(raw) - known))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]}; known settings: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _SECTIONS:
            kwargs[name] = _build_section(name, value)
        elif name == "s3":
            value = _json_text(value, "s3")
            if not isinstance(value, Mapping):
                raise ConfigError("setting 's3' must be a mapping (region, endpoint_url, sse, kms_key_id...)")
            if not all(isinstance(k, str) for k in value):
                raise ConfigError("setting 's3' must name its settings as text (region, endpoint_url, sse...)")
            kwargs[name] = dict(value)
        else:
            kwargs[name] = _coerce(name, value, Settings)
    return Settings(**kwargs)


def _build_section(name: str, value: Any) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(value, Mapping):
        raise ConfigError(f"setting {name!r} must be a mapping")
    known = {f.name for f in fields(cls)}
    unknown = sorted(map(str, set(value) - known))
    if unknown:
        raise ConfigError(f"unknown setting '{name}.{unknown[0]}'; known: {', '.join(sorted(known))}")
    base = cls()
    return replace(base, **{k: _coerce(f"{name}.{k}", v, cls) for k, v in value.items()})


def _coerce(dotted: str, value: Any, cls: type) -> Any:
    """Convert a YAML or environment value to the type of the field it sets; a value of another type (a bool
    for a number, 2.5 for a whole number, a list for text) is a one-line ConfigError, never converted."""
    key = dotted.rpartition(".")[2]
    default = getattr(cls(), key)
    if isinstance(default, Mapping):
        value = _json_text(value, dotted)
    if key == "end_date":
        return _date_setting(dotted, value)
    if key == "thresholds":
        return _thresholds(value)
    if key == "metric_aliases":
        return _metric_aliases(value)
    if key == "headroom":
        return _headroom(value)
    if key == "instance_types":
        return _instance_types(value)
    if key == "models":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(m, str) for m in items):
            raise ConfigError(f"setting {dotted}={value!r} must be model names, comma-separated or a list")
        return tuple(m.strip() for m in items if m.strip())
    if isinstance(default, bool):
        return _bool_setting(dotted, value)
    if isinstance(default, int):
        return _int_setting(dotted, value)
    if isinstance(default, float):
        return _number(dotted, value)
    if isinstance(value, os.PathLike) and key == "lake":  # a pathlib.Path given in code
        value = os.fspath(value)
    if not isinstance(value, str):
        hint = " (quote it: YAML reads yes, no, on and off as true or false)" if isinstance(value, bool) else ""
        raise ConfigError(f"setting {dotted}={value!r} is not a valid text value{hint}")
    return value.strip().upper() if key == "country" else value


def _date_setting(dotted: str, value: Any) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    try:
        if isinstance(value, str):
            return date.fromisoformat(value.strip())
    except ValueError:
        pass
    raise ConfigError(f"setting {dotted}={value!r} is not a valid date (YYYY-MM-DD, a day that exists)")


def _bool_setting(dotted: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"setting {dotted}={value!r} is not a valid bool (true or false)")


def _int_setting(dotted: str, value: Any) -> int:
    """A whole number: an int (not a bool) or its digits as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,30}", value.strip()):
        return int(value.strip())
    raise ConfigError(f"setting {dotted}={value!r} is not a valid int")


def _number(dotted: str, value: Any) -> float:
    """A finite number: an int or float (not a bool), or one written as text."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise ConfigError(f"setting {dotted}={value!r} is not a valid float (a finite number)")
    return number


def _json_text(value: Any, dotted: str) -> Any:
    """A mapping written as JSON text (``{"cpu": 75}``, as environment and hyperparameters carry it) decoded."""
    if not (isinstance(value, str) and value.lstrip().startswith("{")):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"setting {dotted} is not a valid JSON object ({exc.msg} at character {exc.pos})") from None


def _thresholds(value: Any) -> dict[str, float]:
    if isinstance(value, str):  # CF_RISK_THRESHOLDS: "cpu=80,mem=85" (metrics not named keep the default)
        value = _key_values(value, "risk.thresholds")
    if not isinstance(value, Mapping):
        raise ConfigError("setting risk.thresholds must map metrics (cpu, mem, disk, net) to percentages")
    merged = dict.fromkeys(METRICS, DEFAULT_THRESHOLD)
    for metric, pct in value.items():
        if metric not in METRICS:
            raise ConfigError(f"risk.thresholds has unknown metric {metric!r}; metrics are {', '.join(METRICS)}")
        merged[metric] = _number(f"risk.thresholds.{metric}", pct)
    return merged


def _key_values(text: str, dotted: str) -> dict[str, str]:
    """``"a=1, b=2"`` as ``{"a": "1", "b": "2"}``; ConfigError for an item without ``=``."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"setting {dotted}: {item!r} must be written metric=percentage (e.g. cpu=80,mem=85)")
        pairs[key.strip()] = value.strip()
    return pairs


def _metric_aliases(value: Any) -> dict[str, str]:
    """Extra names of the metrics. A name the built-in table already gives a metric (``cpu``, ``memory``) cannot
    be moved onto another one: every row of it would then collide with the metric's own rows."""
    from capacity_forecaster.raw_formats import metric_aliases

    if not isinstance(value, Mapping):
        raise ConfigError("setting ingest.metric_aliases must map metric names to cpu, mem, disk or net")
    built_in = metric_aliases()
    out = {}
    for alias, metric in value.items():
        if not isinstance(alias, str) or not isinstance(metric, str):
            raise ConfigError(f"ingest.metric_aliases maps {alias!r} to {metric!r}; both must be text")
        name, target = alias.strip().lower(), metric.strip().lower()
        if not name:
            raise ConfigError("ingest.metric_aliases has an empty name")
        if target not in METRICS:
            raise ConfigError(f"ingest.metric_aliases maps {alias!r} to {metric!r}; targets are {', '.join(METRICS)}")
        known = built_in.get(name)
        if known is not None and known != target:
            what = "is itself a metric" if name in METRICS else f"is already a name of {known}"
            raise ConfigError(
                f"ingest.metric_aliases maps {alias!r} to {metric!r}, but {name!r} {what}: "
                "an alias cannot move one metric onto another"
            )
        out[name] = target
    return out


def _headroom(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ConfigError("setting risk.headroom must map metrics (cpu, mem, disk, net) to percentages")
    merged = dict.fromkeys(METRICS, DEFAULT_HEADROOM)
    for metric, pct in value.items():
        if metric not in METRICS:
            raise ConfigError(f"risk.headroom has unknown metric {metric!r}; metrics are {', '.join(METRICS)}")
        merged[metric] = _number(f"risk.headroom.{metric}", pct)
    return merged


def _instance_types(value: Any) -> dict[str, dict[str, float]]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            "setting rightsizing.instance_types must map instance types to cores, memory_gib, monthly_cost"
        )
    table = {}
    for name, spec in value.items():
        if not isinstance(spec, Mapping) or set(spec) != {"cores", "memory_gib", "monthly_cost"}:
            raise ConfigError(f"rightsizing.instance_types.{name} must set exactly cores, memory_gib and monthly_cost")
        entry = {
            k: _number(f"rightsizing.instance_types.{name}.{k}", spec[k])
            for k in ("cores", "memory_gib", "monthly_cost")
        }
        if entry["cores"] <= 0 or entry["memory_gib"] <= 0 or entry["monthly_cost"] < 0:
            raise ConfigError(f"rightsizing.instance_types.{name} needs cores and memory_gib > 0, monthly_cost >= 0")
        table[str(name)] = entry
    return table


def _validate(s: Settings) -> None:
    checks: list[tuple[bool, str]] = [
        (bool(str(s.lake).strip()), "lake must name a folder or s3://bucket/prefix"),
        (1 <= s.horizon_days <= 730, f"horizon_days={s.horizon_days} must be between 1 and 730"),
        (1 <= s.fleet.servers <= 100_000, f"fleet.servers={s.fleet.servers} must be between 1 and 100000"),
        (s.scale.engine in SCALE_ENGINES, f"scale.engine={s.scale.engine!r} must be one of {', '.join(SCALE_ENGINES)}"),
        (28 <= s.fleet.days <= 3_650, f"fleet.days={s.fleet.days} must be between 28 and 3650"),
        (s.etl.max_gap_days >= 0, "etl.max_gap_days must be 0 or more"),
        (
            1 <= s.ingest.max_file_mb <= limits.MAX_FILE_MB,
            f"ingest.max_file_mb={s.ingest.max_file_mb} must be between 1 and {limits.MAX_FILE_MB}: the largest "
            f"file the ETL Lambda processes in {limits.LAMBDA_CONFIGURED_MB} MB of memory, {limits.LAMBDA_TMP_MB} MB "
            f"of /tmp and {limits.LAMBDA_TIMEOUT_S} s (limits.MAX_FILE_MB); split larger exports, e.g. one file per "
            "day or per group of servers",
        ),
        (s.etl.future_tolerance_minutes >= 0, "etl.future_tolerance_minutes must be 0 or more"),
        (s.etl.grain in {"daily", "hourly"}, f"etl.grain={s.etl.grain!r} must be daily or hourly"),
        (0 < s.etl.min_coverage <= 1, f"etl.min_coverage={s.etl.min_coverage} must be in (0, 1]"),
        (s.etl.imputation in {"seasonal", "knn"}, f"etl.imputation={s.etl.imputation!r} must be seasonal or knn"),
        (1 <= s.etl.knn_neighbors <= 100, "etl.knn_neighbors must be between 1 and 100"),
        (4 <= s.etl.outlier_window <= 366, "etl.outlier_window must be between 4 and 366 days"),
        (s.etl.outlier_z > 0, "etl.outlier_z must be more than 0"),
        (s.etl.outlier_iqr_k > 0, "etl.outlier_iqr_k must be more than 0"),
        (
            _known_country(s.fleet.country),
            f"fleet.country={s.fleet.country!r} must be an ISO country code known to the holidays package",
        ),
        (bool(s.training.models), "training.models must name at least one model"),
        (
            set(s.training.models) <= set(MODEL_NAMES) and len(set(s.training.models)) == len(s.training.models),
            f"training.models={','.join(s.training.models)} must name distinct models of {', '.join(MODEL_NAMES)}",
        ),
        (1 <= s.training.backtest_origins <= 52, "training.backtest_origins must be between 1 and 52"),
        (
            1 <= s.training.backtest_origins_hourly <= 52,
            "training.backtest_origins_hourly must be between 1 and 52",
        ),
        (s.training.score in SCORES, f"training.score must be one of {', '.join(SCORES)}"),
        (14 <= s.training.min_history_days <= 3650, "training.min_history_days must be between 14 and 3650"),
        (1 <= s.training.hosts <= 64, "training.hosts must be between 1 and 64"),
        (s.training.n_jobs >= 0, "training.n_jobs must be 0 (all cores) or more"),
        (100 <= s.training.rf_max_rows <= 10_000_000, "training.rf_max_rows must be between 100 and 10000000"),
        (0 <= s.training.seed < 2**31, "training.seed must be between 0 and 2147483647"),
        (
            s.training.prophet_history_days == 0 or 56 <= s.training.prophet_history_days <= 36_500,
            "training.prophet_history_days must be 0 (all) or between 56 and 36500",
        ),
        (s.risk.critical_days >= 0, "risk.critical_days must be 0 or more"),
        (s.risk.saturation_days >= 1, "risk.saturation_days must be at least 1"),
        (0 < s.risk.overprovisioned_ratio < 1, "risk.overprovisioned_ratio must be between 0 and 1"),
        (s.risk.top >= 1, "risk.top must be at least 1"),
        (s.risk.high_days >= 0, "risk.high_days must be 0 (the whole horizon) or more"),
        (2 <= s.rightsizing.k_min <= s.rightsizing.k_max, "rightsizing.k_min must be at least 2 and <= k_max"),
        (s.rightsizing.k_max <= 20, "rightsizing.k_max must be 20 or less"),
        (s.rightsizing.profile_days >= 14, "rightsizing.profile_days must be at least 14"),
        (s.rightsizing.idle_days >= 1, "rightsizing.idle_days must be at least 1"),
        (
            0 < s.rightsizing.idle_cpu_p95 <= 100 and 0 < s.rightsizing.idle_mem_p95 <= 100,
            "rightsizing.idle_cpu_p95 and idle_mem_p95 must be percentages in (0, 100]",
        ),
        (s.risk.medium_days >= 0, "risk.medium_days must be 0 (the whole horizon) or more"),
        (1 <= s.risk.breach_days <= 30, "risk.breach_days must be between 1 and 30"),
        (
            0 < s.risk.likely_breach_probability <= 1,
            "risk.likely_breach_probability must be a probability in (0, 1]",
        ),
        (
            not s.risk.high_days or s.risk.high_days >= s.risk.critical_days,
            "risk.high_days must be 0 or at least risk.critical_days",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if s.rightsizing.price_file:
        s.rightsizing.price_table()  # a price file that cannot be read or parsed is a ConfigError now
    _validate_hourly_training(s.training)
    _validate_scale(s)
    for metric, pct in s.risk.thresholds.items():
        if not 0 < pct <= 100:
            raise ConfigError(f"risk.thresholds.{metric}={pct} must be a percentage in (0, 100]")
    for metric, pct in s.risk.headroom.items():
        if not 0 <= pct < 100:
            raise ConfigError(f"risk.headroom.{metric}={pct} must be a percentage in [0, 100)")


@lru_cache(maxsize=1)
def _countries() -> frozenset[str]:
    import holidays

    return frozenset(holidays.list_supported_countries())


def _known_country(country: str) -> bool:
    return country == FleetSettings.country or country in _countries()


# ---- what the deployed design processes (issue 14) -----------------------------------------------------------
# The limits follow from the measured figures in capacity_forecaster.limits (one source, also scale's): a setting
# past the chosen engine's limits is refused in one line naming the limit and the engine to switch to.


def _validate_scale(s: Settings) -> None:
    """Refuse a fleet, history or horizon the chosen engine cannot process (one line, naming the limit)."""
    servers, days, horizon = s.fleet.servers, s.fleet.days, s.horizon_days
    engine = limits.choose_engine(s.scale.engine, servers, horizon)
    if engine == "lambda":
        if servers * days > limits.MAX_SERVER_DAYS:  # the demo generator's history (fleet.days is only its)
            raise ConfigError(
                f"fleet.servers={servers} x fleet.days={days} = {servers * days} server-days of history exceeds what "
                f"the generate Lambda holds at {limits.LAMBDA_MEMORY_MB} MB (<= {limits.MAX_SERVER_DAYS}); generate "
                f"fewer days (<= {limits.MAX_SERVER_DAYS // servers}), see docs/scaling.md"
            )
        switch = "set scale.engine=sagemaker (or auto), see docs/scaling.md"
        if servers > limits.LAMBDA_MAX_SERVERS:
            raise ConfigError(
                f"fleet.servers={servers} exceeds what the Lambda stages process (<= {limits.LAMBDA_MAX_SERVERS} "
                f"servers in {limits.LAMBDA_CONFIGURED_MB} MB functions); {switch}"
            )
        longest = limits.max_horizon_days(servers, limits.LAMBDA_CONFIGURED_MB)
        if horizon > longest:
            raise ConfigError(
                f"horizon_days={horizon} for fleet.servers={servers} exceeds what the risk Lambda holds in "
                f"{limits.LAMBDA_CONFIGURED_MB} MB; forecast fewer days (<= {longest}) or {switch}"
            )
        return
    largest = limits.PROCESSING_INSTANCES[-1]
    split = "split the fleet into several lakes, see docs/scaling.md"
    most = limits.max_job_servers(limits.PROCESSING_MAX_MB, horizon)
    if servers > most:
        raise ConfigError(
            f"fleet.servers={servers} with horizon_days={horizon} exceeds what the largest processing instance "
            f"({largest.name}, {largest.memory_gib} GiB) holds (<= {most} servers); {split}"
        )


MAX_HORIZON_HOURS = 2208
"""92 days of hours: the longest hourly horizon (hourly traces are weeks long; plan further ahead daily)."""


def _validate_hourly_training(t: TrainingSettings) -> None:
    if t.grain not in {"daily", "hourly"}:
        raise ConfigError(f"training.grain={t.grain!r} must be daily or hourly")
    if not 1 <= t.horizon_hours <= MAX_HORIZON_HOURS:
        raise ConfigError(f"training.horizon_hours={t.horizon_hours} must be between 1 and {MAX_HORIZON_HOURS}")
    if not 0 <= t.backtest_sample <= 1_000_000:
        raise ConfigError(f"training.backtest_sample={t.backtest_sample} must be between 0 (all) and 1000000")
    if not 0.0 <= t.champion_override < 1.0:
        raise ConfigError(f"training.champion_override={t.champion_override} must be at least 0 and under 1")
    if not 48 <= t.min_history_hours <= 87_600:
        raise ConfigError(f"training.min_history_hours={t.min_history_hours} must be between 48 and 87600")
