"""Settings: defaults, YAML file, environment and flags, in that order, with one-line errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from capacity_forecaster.errors import ConfigError
from capacity_forecaster.settings import (
    CLOUD_SETTINGS,
    MODEL_NAMES,
    SCORES,
    SETTINGS,
    Settings,
    default_settings,
    env_var,
    load_settings,
    setting_value,
)


def test_defaults() -> None:
    s = load_settings(environ={})
    assert s == Settings()
    assert s.lake == "./lake"
    assert s.horizon_days == 90
    assert dict(s.risk.thresholds) == {"cpu": 80.0, "mem": 80.0, "disk": 80.0, "net": 80.0}
    assert s.fleet.resolved_end_date(date(2026, 3, 1)) == date(2026, 2, 28)


def test_file_then_env_then_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "cf.yaml"
    cfg.write_text(
        "lake: /data/lake\nhorizon_days: 120\nfleet:\n  servers: 10\n  end_date: 2026-01-31\n"
        "risk:\n  thresholds: {cpu: 70}\ntraining:\n  models: [seasonal_naive]\n"
    )
    s = load_settings(cfg, environ={"CF_FLEET_SERVERS": "20"}, overrides={"horizon_days": 30, "lake": None})
    assert s.lake == "/data/lake"
    assert s.horizon_days == 30
    assert s.fleet.servers == 20
    assert s.fleet.end_date == date(2026, 1, 31)
    assert s.risk.thresholds["cpu"] == 70.0 and s.risk.thresholds["mem"] == 80.0
    assert s.training.models == ("seasonal_naive",)


def test_config_path_from_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "cf.yaml"
    cfg.write_text("horizon_days: 45\n")
    assert load_settings(environ={"CF_CONFIG": str(cfg)}).horizon_days == 45


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("horizon_days: 0\n", "horizon_days=0 must be between 1 and 730"),
        ("horizon_days: many\n", "horizon_days='many' is not a valid int"),
        ("colour: blue\n", "unknown setting 'colour'"),
        ("fleet:\n  servrs: 3\n", "unknown setting 'fleet.servrs'"),
        ("risk:\n  thresholds: {gpu: 50}\n", "unknown metric 'gpu'"),
        ("risk:\n  thresholds: {cpu: 150}\n", "must be a percentage"),
        ("training:\n  score: accuracy\n", "training.score must be"),
        ("risk:\n  headroom: {cpu: 100}\n", "risk.headroom.cpu=100.0 must be a percentage"),
        ("risk:\n  headroom: {gpu: 5}\n", "risk.headroom has unknown metric 'gpu'"),
        ("risk:\n  high_days: 10\n", "risk.high_days must be 0 or at least risk.critical_days"),
        ("risk:\n  breach_days: 0\n", "risk.breach_days must be between 1 and 30"),
        ("rightsizing:\n  k_min: 1\n", "rightsizing.k_min must be at least 2"),
        ("rightsizing:\n  instance_types: {x1: {cores: 2}}\n", "must set exactly cores, memory_gib and monthly_cost"),
        ("rightsizing:\n  instance_types: {x1: {cores: 0, memory_gib: 1, monthly_cost: 1}}\n", "needs cores"),
        ("- a\n- b\n", "must hold a mapping"),
        ("fleet: [1, 2\n", "not valid YAML"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "cf.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_settings(cfg, environ={})
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_bad_environment_value() -> None:
    with pytest.raises(ConfigError, match=r"fleet\.servers='lots'"):
        load_settings(environ={"CF_FLEET_SERVERS": "lots"})


def test_forecasting_model_settings_reach_the_training_hyperparameters(tmp_path: Path) -> None:
    from capacity_forecaster.forecasting.job import parse_hyperparameters
    from capacity_forecaster.stages import training_hyperparameters

    path = tmp_path / "config.yaml"
    path.write_text(
        "fleet: {country: GB}\ntraining:\n  models: [seasonal_naive, prophet, random_forest]\n"
        "  rf_max_rows: 5000\n  seed: 9\n  prophet_history_days: 800\n"
    )
    s = load_settings(path, environ={})
    values = training_hyperparameters(s, run_date=date(2026, 1, 10), run_id="r1", lake_uri="lake")
    assert (values["fleet.country"], values["training.rf_max_rows"], values["training.seed"]) == ("GB", "5000", "9")
    assert (values["run_date"], values["run_id"], values["lake_uri"]) == ("2026-01-10", "r1", "lake")
    params = parse_hyperparameters(values)
    assert params.models == ("seasonal_naive", "prophet", "random_forest")
    assert params.model_settings()["random_forest"]["max_rows"] == 5000
    assert params.model_settings()["prophet"]["history_days"] == 800
    for text, message in (
        ("training: {rf_max_rows: 10}\n", "training.rf_max_rows must be between"),
        ("training: {seed: -1}\n", "training.seed must be between"),
        ("training: {prophet_history_days: 30}\n", "training.prophet_history_days must be 0"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_settings(path, environ={})


def test_headroom_and_tier_windows_from_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "cf.yaml"
    cfg.write_text("risk:\n  headroom: {mem: 20}\n  high_days: 60\n  medium_days: 90\n")
    s = load_settings(cfg, environ={})
    assert dict(s.risk.headroom) == {"cpu": 10.0, "mem": 20.0, "disk": 10.0, "net": 10.0}
    assert (s.risk.high_days, s.risk.medium_days) == (60, 90)
    assert s.risk.breach_days == 1
    cfg.write_text("risk:\n  breach_days: 3\n")
    assert load_settings(cfg, environ={}).risk.breach_days == 3


def test_rightsizing_size_table_defaults_and_override(tmp_path: Path) -> None:
    s = load_settings(environ={})
    table = s.rightsizing.price_table()
    assert table.sizes["m5.large"] == {"cores": 2, "memory_gib": 8.0, "monthly_cost": 70.08}  # 0.096 USD x 730 h
    assert table.price_date == "2025-01-01" and table.label == "price table 2025-01-01"
    cfg = tmp_path / "cf.yaml"
    cfg.write_text(
        "rightsizing:\n  k_max: 5\n  instance_types: {t3.small: {cores: 2, memory_gib: 2, monthly_cost: 15}}\n"
    )
    s = load_settings(cfg, environ={})
    assert s.rightsizing.k_max == 5
    assert dict(s.rightsizing.instance_types) == {"t3.small": {"cores": 2.0, "memory_gib": 2.0, "monthly_cost": 15.0}}
    sizes = s.rightsizing.sizes()  # the override replaces its type's entry and keeps the rest of the table
    assert sizes["t3.small"]["monthly_cost"] == 15.0 and sizes["m5.large"]["monthly_cost"] == 70.08


def test_a_price_file_replaces_the_shipped_table(tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text("# price_date: 2026-11-01\ninstance_type,vcpus,memory_gib,monthly_cost\nbig,64,512,4000\n")
    cfg = tmp_path / "cf.yaml"
    cfg.write_text(f"rightsizing:\n  price_file: {prices}\n")
    table = load_settings(cfg, environ={}).rightsizing.price_table()
    assert table.sizes == {"big": {"cores": 64.0, "memory_gib": 512.0, "monthly_cost": 4000.0}}
    assert table.label == "price table 2026-11-01"
    prices.write_text("instance_type,price\nbig,1\n")
    cfg.write_text(f"rightsizing:\n  price_file: {tmp_path / 'other.csv'}\n")
    with pytest.raises(ConfigError, match=r"^rightsizing.price_file .*other.csv: cannot be read"):
        load_settings(cfg, environ={})
    cfg.write_text(f"rightsizing:\n  price_file: {prices}\n")
    with pytest.raises(ConfigError, match="needs the columns instance_type, vcpus, memory_gib and hourly_usd"):
        load_settings(cfg, environ={})


def test_risk_thresholds_and_critical_days_from_the_environment() -> None:
    """The cloud stack hands its thresholds to the Lambdas as CF_RISK_THRESHOLDS (metric=percentage pairs)."""
    s = load_settings(environ={"CF_RISK_THRESHOLDS": " cpu=70, disk=90.5 ", "CF_RISK_CRITICAL_DAYS": "14"})
    assert dict(s.risk.thresholds) == {"cpu": 70.0, "mem": 80.0, "disk": 90.5, "net": 80.0}
    assert s.risk.critical_days == 14


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("cpu80", "must be written metric=percentage"),
        ("cpu=", "must be written metric=percentage"),
        ("gpu=80", "unknown metric 'gpu'"),
        ("cpu=lots", r"risk\.thresholds\.cpu='lots' is not a valid float"),
        ("cpu=120", r"risk\.thresholds\.cpu=120\.0 must be a percentage"),
    ],
)
def test_bad_thresholds_in_the_environment(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={"CF_RISK_THRESHOLDS": value})


# ---- one text form: environment variables and hyperparameters ---------------------------------------------


def test_every_setting_has_its_variable_named_after_its_field() -> None:
    from capacity_forecaster.settings import ENV_VARS, SETTING_FIELDS, env_var

    assert len(ENV_VARS) == len(SETTING_FIELDS)  # no two settings share a variable
    # today's names are kept
    for var in ("CF_LAKE", "CF_HORIZON_DAYS", "CF_FLEET_SERVERS", "CF_RISK_THRESHOLDS", "CF_TRAINING_HOSTS"):
        assert var in ENV_VARS
    assert env_var("training.n_jobs") == "CF_TRAINING_N_JOBS" and env_var("lake") == "CF_LAKE"
    assert "CF_CONFIG" not in ENV_VARS


def test_text_form_round_trips_through_the_environment_and_from_strings() -> None:
    from capacity_forecaster.settings import settings_from_strings, settings_strings

    s = load_settings(
        environ={},
        overrides={
            "fleet.end_date": date(2026, 1, 31),
            "fleet.country": "gb",
            "risk.thresholds": {"cpu": 70.5},
            "risk.likely_breach_probability": 0.3,
            "training.models": ["prophet", "seasonal_naive"],
            "ingest.metric_aliases": {"CPU Busy": "cpu"},
            "s3": {"region": "eu-west-1"},
        },
    )
    text = settings_strings(s)
    assert text["fleet.end_date"] == "2026-01-31" and text["fleet.country"] == "GB"
    assert text["training.models"] == "prophet,seasonal_naive"
    assert json.loads(text["risk.thresholds"]) == {"cpu": 70.5, "mem": 80.0, "disk": 80.0, "net": 80.0}
    assert settings_from_strings(text) == s
    assert load_settings(environ={env_var(d): v for d, v in text.items()}) == s
    assert settings_strings(Settings()) == {}  # only what differs from the defaults
    assert len(settings_strings(Settings(), changed_only=False)) == len(SETTINGS)


def test_thresholds_keep_their_metric_equals_percentage_text() -> None:
    assert load_settings(environ={"CF_RISK_THRESHOLDS": "cpu=70"}).risk.thresholds["cpu"] == 70.0
    assert load_settings(environ={"CF_RISK_THRESHOLDS": '{"cpu": 70}'}).risk.thresholds["cpu"] == 70.0


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CF_RISK_HEADROOM": '{"cpu": 5'}, r"setting risk\.headroom is not a valid JSON object"),
        ({"CF_INGEST_METRIC_ALIASES": '{"x": "gpu"}'}, "targets are cpu, mem, disk, net"),
        ({"CF_TRAINING_MODELS": "prophet,arima"}, "training.models=prophet,arima must name distinct models"),
        ({"CF_FLEET_COUNTRY": "atlantis"}, "fleet.country='ATLANTIS' must be an ISO country code"),
    ],
)
def test_bad_text_forms_are_one_line_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_settings(environ=environ)
    assert "\n" not in str(err.value)


def test_the_job_limits_are_the_settings_limits() -> None:
    from capacity_forecaster.forecasting import baselines, job, metrics

    assert sorted(MODEL_NAMES) == sorted(baselines.registered_models())
    assert SCORES == metrics.SCORES
    # the help text is derived from the settings, not a second copy of their limits
    assert job.HYPERPARAMETERS["training.models"].startswith("the training.models setting (CF_TRAINING_MODELS)")
    assert set(job.HYPERPARAMETERS) - set(job.JOB_HYPERPARAMETERS) == set(CLOUD_SETTINGS)


def test_unknown_dotted_setting_is_refused() -> None:
    from capacity_forecaster.settings import settings_from_strings

    with pytest.raises(ConfigError, match=r"unknown setting 'training\.modles'"):
        settings_from_strings({"training.modles": "prophet"})


def test_cloud_refusals_and_sizes() -> None:
    from capacity_forecaster.settings import CLOUD_REFUSED, cloud_problems, settings_environment

    assert set(CLOUD_REFUSED) == {"lake", "s3", "fleet.end_date", "rightsizing.price_file"}
    s = load_settings(environ={}, overrides={"lake": "s3://b", "fleet.end_date": "2026-01-31"})
    problems = cloud_problems(s)
    assert problems == [
        f"setting lake cannot be set for the cloud: {CLOUD_REFUSED['lake']}",
        f"setting fleet.end_date cannot be set for the cloud: {CLOUD_REFUSED['fleet.end_date']}",
    ]
    assert "CF_LAKE" not in settings_environment(s)  # the stack sets it


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("horizon_days: true\n", "horizon_days=True is not a valid int"),
        ("horizon_days: 2.5\n", "horizon_days=2.5 is not a valid int"),
        ("horizon_days: 30.0\n", "horizon_days=30.0 is not a valid int"),
        ("etl: {outlier_z: false}\n", "etl.outlier_z=False is not a valid float"),
        ("etl: {outlier_z: .nan}\n", "etl.outlier_z=nan is not a valid float"),
        ("risk: {headroom: {cpu: true}}\n", "risk.headroom.cpu=True is not a valid float"),
        ("rightsizing:\n  instance_types: {x1: {cores: true, memory_gib: 1, monthly_cost: 1}}\n", "cores=True"),
        ("fleet: {end_date: 2026-02-30}\n", "fleet.end_date='2026-02-30' is not a valid date"),
        ("fleet: {end_date: 20260101}\n", "fleet.end_date=20260101 is not a valid date"),
        ("fleet: {country: no}\n", "fleet.country=False is not a valid text value (quote it"),
        ("lake: [a, b]\n", "lake=['a', 'b'] is not a valid text value"),
        ("training: {models: 5}\n", "training.models=5 must be model names"),
        ("ingest: {metric_aliases: {cpu: mem}}\n", "'cpu' is itself a metric: an alias cannot move one metric"),
        ("ingest: {metric_aliases: {memory: cpu}}\n", "'memory' is already a name of mem"),
        ("ingest: {metric_aliases: {5: cpu}}\n", "both must be text"),
        ("s3: {1: x}\n", "setting 's3' must name its settings as text"),
        ("fleet: {1: 2, a: 3}\n", "unknown setting 'fleet.1'"),
    ],
)
def test_values_of_another_type_are_refused_not_converted(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "cf.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_aliases_that_agree_with_the_built_in_table_are_accepted() -> None:
    s = load_settings(environ={}, overrides={"ingest.metric_aliases": {"Memory": "mem", "cpu": "cpu", "gpu_x": "CPU"}})
    assert dict(s.ingest.metric_aliases) == {"memory": "mem", "cpu": "cpu", "gpu_x": "cpu"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is a folder, not a YAML file"),
        (b"\x7fELF\x02\x01\x01\x00\xff\xfe", "is not UTF-8 text (byte 8)"),
        (("a: " + "[" * 3000 + "]" * 3000 + "\n").encode(), "nests its values too deeply"),
    ],
)
def test_unreadable_config_files_are_one_line_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    cfg = tmp_path / "cf.yaml"
    cfg.mkdir() if content is None else cfg.write_bytes(content)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(cfg, environ={})


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**25), max_value=10**25),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.dates(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(
        st.sampled_from(["cpu", "mem", "x", "memory"]),
        st.one_of(st.booleans(), st.integers(), st.text(max_size=4)),
        max_size=2,
    ),
)


def _kind_ok(dotted: str, value: Any) -> bool:
    default = setting_value(default_settings(), dotted)
    if dotted == "fleet.end_date":
        return value is None or type(value) is date
    if isinstance(default, Mapping):
        return isinstance(value, Mapping)
    return type(value) is type(default)


@settings(max_examples=300, deadline=None)
@given(dotted=st.sampled_from(SETTINGS), value=_SCALARS)
def test_any_value_of_any_setting_is_taken_with_its_type_or_refused_in_one_line(dotted: str, value: Any) -> None:
    try:
        s = load_settings(environ={}, overrides={dotted: value})
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    taken = setting_value(s, dotted)
    assert _kind_ok(dotted, taken), (dotted, value, taken)
    default = setting_value(default_settings(), dotted)
    if isinstance(default, int | float) and not isinstance(default, bool):
        assert not isinstance(value, bool), f"{dotted} took {value!r} as a number"
    if isinstance(default, int) and isinstance(value, float):
        raise AssertionError(f"{dotted} took the float {value!r} as a whole number")


@settings(max_examples=200, deadline=None)
@given(dotted=st.sampled_from(SETTINGS), text=st.text(max_size=20))
def test_any_text_in_a_variable_or_a_config_file_is_taken_or_refused_in_one_line(
    dotted: str, text: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    try:
        load_settings(environ={env_var(dotted): text})
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    section, _, key = dotted.rpartition(".")
    body = {section: {key: text}} if section else {key: text}
    cfg = tmp_path_factory.mktemp("cf") / "cf.yaml"
    cfg.write_text(yaml.safe_dump(body, allow_unicode=True) + f"# {text!r}\n", encoding="utf-8")
    try:
        load_settings(cfg, environ={})
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)


def _refused(**overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, overrides={k.replace("__", "."): v for k, v in overrides.items()})
    message = str(caught.value)
    assert "\n" not in message and "docs/scaling.md" in message
    return message


def _accepted(**overrides: object) -> Settings:
    return load_settings(environ={}, overrides={k.replace("__", "."): v for k, v in overrides.items()})


def test_a_fleet_history_or_horizon_the_lambda_stages_cannot_process_is_refused_in_one_line() -> None:
    from capacity_forecaster import limits

    # issue 14's fleet runs on the Lambdas: 10,000 servers, 3 years of history, a 90-day horizon
    fleet = _accepted(fleet__servers=10_000, fleet__days=1_095, horizon_days=90, scale__engine="lambda")
    assert fleet.fleet.servers == 10_000 and limits.fits_lambda(10_000, 90)
    biggest = limits.LAMBDA_MAX_SERVERS
    assert biggest >= 10_000
    assert _accepted(fleet__servers=biggest, fleet__days=28, scale__engine="lambda").fleet.servers == biggest
    message = _refused(fleet__servers=biggest + 1, fleet__days=28, scale__engine="lambda")
    assert f"fleet.servers={biggest + 1} exceeds what the Lambda stages process (<= {biggest} servers" in message
    assert "set scale.engine=sagemaker (or auto)" in message
    furthest = limits.max_horizon_days(10_000, limits.LAMBDA_CONFIGURED_MB)
    assert furthest >= 90
    assert _accepted(fleet__servers=10_000, horizon_days=furthest, scale__engine="lambda").horizon_days == furthest
    message = _refused(fleet__servers=10_000, horizon_days=furthest + 1, scale__engine="lambda")
    assert f"forecast fewer days (<= {furthest}) or set scale.engine=sagemaker (or auto)" in message
    longest = limits.MAX_SERVER_DAYS // 10_000
    assert _accepted(fleet__servers=10_000, fleet__days=longest).fleet.days == longest
    assert f"generate fewer days (<= {longest})" in _refused(fleet__servers=10_000, fleet__days=longest + 1)


def test_auto_takes_what_the_lambdas_refuse_and_sagemaker_refuses_beyond_the_largest_instance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from capacity_forecaster import limits

    biggest = limits.LAMBDA_MAX_SERVERS
    assert _accepted(fleet__servers=biggest + 1, fleet__days=28).fleet.servers == biggest + 1
    assert _accepted(fleet__servers=100_000, fleet__days=1_095, scale__engine="sagemaker").fleet.servers == 100_000
    # the largest instance's limit, shown by shrinking it: the same check names the limit
    most = limits.max_job_servers(limits.PROCESSING_MAX_MB, 730)
    assert most >= 100_000  # every accepted fleet and horizon fits the largest processing instance
    assert limits.HEADROOM * limits.job_memory_mb(most, 730) <= limits.PROCESSING_MAX_MB
    assert limits.HEADROOM * limits.job_memory_mb(most + 1, 730) > limits.PROCESSING_MAX_MB
    # the check names the limit: shown on an instance of a sixteenth of the largest one's memory
    monkeypatch.setattr(limits, "PROCESSING_MAX_MB", limits.PROCESSING_MAX_MB / 16)
    small = limits.max_job_servers(limits.PROCESSING_MAX_MB, 90)
    assert _accepted(fleet__servers=small, fleet__days=28, scale__engine="sagemaker").fleet.servers == small
    message = _refused(fleet__servers=small + 1, fleet__days=28, scale__engine="sagemaker")
    largest = limits.PROCESSING_INSTANCES[-1]
    assert f"the largest processing instance ({largest.name}, {largest.memory_gib} GiB) holds (<= {small} servers)" in (
        message
    )
