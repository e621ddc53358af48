"""One settings file reaches the cloud: every setting off its default, from the YAML file through a synthesized
stack to each function's environment and, through the launcher and moto's SageMaker, to the training job.

The file is built from the settings dataclasses, so a new setting is covered (or fails here) without an edit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import build_app, load_cdk_context
from capacity_forecaster.forecasting import job
from capacity_forecaster.settings import (
    CLOUD_REFUSED,
    CLOUD_SETTINGS,
    MAX_HYPERPARAMETER_CHARS,
    MAX_HYPERPARAMETERS,
    SETTING_FIELDS,
    Settings,
    default_settings,
    load_settings,
    setting_value,
)
from infra.names import CONTEXT_NAMESPACE
from infra.settings import SettingsError, StackSettings
from tests.infra.template_tools import logical_id
from tests.lambda_modules import LambdaContext, load_handler

ROOT = Path(__file__).resolve().parents[2]
EVENT = json.loads((ROOT / "tests" / "events" / "scheduled_event.json").read_text())
LAKE = "s3://capacity-forecaster-lake-123456789012-us-east-1"
LAMBDA_ENVIRONMENT_LIMIT = 4096
"""Lambda's limit on a function's environment (names and values together)."""
TOKENS = {
    "CF_LAKE": LAKE,
    "CF_S3_KMS_KEY_ID": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "CF_TRAINING_IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/cdk-hnb659fds-container-assets-"
    "123456789012-us-east-1:" + "0" * 64,
    "CF_TRAINING_ROLE_ARN": "arn:aws:iam::123456789012:role/CapacityForecaster-TrainingJobRoleAB12CD34-ABCDEFGHIJKL",
}
"""Deploy-time values (CloudFormation intrinsics in the template) replaced by values as long as real ones."""
TOKEN_LENGTH = 140
"""The length given to any other deploy-time value (an ARN of a topic, a queue...)."""

SPECIAL: dict[str, Any] = {
    "fleet.country": "GB",
    "etl.grain": "hourly",
    "etl.imputation": "knn",
    "training.models": ["seasonal_naive", "prophet"],
    "training.score": "rmse",
    "training.grain": "hourly",
    "risk.thresholds": {"cpu": 75, "disk": 90.5},
    "risk.headroom": {"mem": 20},
    "risk.high_days": 60,  # at least risk.critical_days
    "rightsizing.instance_types": {"t3.small": {"cores": 2, "memory_gib": 2, "monthly_cost": 15.5}},
    "ingest.metric_aliases": {"processor_time": "cpu"},
    "scale.engine": "lambda",
    "training.champion_override": 0.6,
    "training.runaway_guard": True,
}
"""Settings whose value off the default is not the default plus one (or times 0.9): choices, lists, tables."""


def off_default(dotted: str) -> Any:
    """A valid value of the setting that differs from its default."""
    if dotted in SPECIAL:
        return SPECIAL[dotted]
    default = setting_value(default_settings(), dotted)
    if isinstance(default, bool) or not isinstance(default, int | float):
        raise AssertionError(f"add an off-default value of {dotted} (default {default!r}) to SPECIAL")
    return default + 1 if isinstance(default, int) else round(default * 0.9, 6)


def settings_document() -> dict[str, Any]:
    document: dict[str, Any] = {}
    for dotted in CLOUD_SETTINGS:
        section, key = SETTING_FIELDS[dotted]
        (document.setdefault(section, {}) if section else document)[key] = off_default(dotted)
    return document


@pytest.fixture(scope="module")
def settings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("settings") / "capacity-forecaster.yaml"
    path.write_text(yaml.safe_dump(settings_document(), sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def file_settings(settings_file: Path) -> Settings:
    return load_settings(settings_file, environ={})


@pytest.fixture(scope="module")
def round_trip_synth(settings_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    context = {
        **load_cdk_context(),
        "@aws-cdk/core:failSynthOnValidationErrors": False,
        f"{CONTEXT_NAMESPACE}:settingsFile": str(settings_file),
    }
    app, stack = build_app(context=context, outdir=str(tmp_path_factory.mktemp("cdk.out.settings")))
    assembly = app.synth()
    template = json.loads((Path(assembly.directory) / stack.template_file).read_text())
    return stack, template


def plain_environment(variables: dict[str, Any]) -> dict[str, str]:
    """The function's environment with each deploy-time value replaced by one of realistic length."""
    return {
        name: value if isinstance(value, str) else TOKENS.get(name, "arn:".ljust(TOKEN_LENGTH, "x"))
        for name, value in variables.items()
    }


def functions_with_settings(template: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Logical id -> plain environment of every Lambda function of the stack that reads the lake."""
    out = {}
    for logical, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        if "CF_LAKE" in variables:
            out[logical] = plain_environment(variables)
    return out


def test_the_file_sets_every_cloud_setting_off_its_default(file_settings: Settings) -> None:
    unchanged = [d for d in CLOUD_SETTINGS if setting_value(file_settings, d) == setting_value(Settings(), d)]
    assert unchanged == []
    assert set(CLOUD_SETTINGS) | set(CLOUD_REFUSED) == set(SETTING_FIELDS)


def test_every_function_reads_back_the_files_settings(
    round_trip_synth: tuple[Any, dict[str, Any]], file_settings: Settings
) -> None:
    stack, template = round_trip_synth
    functions = functions_with_settings(template)
    expected_ids = {logical_id(stack, fn) for fn in stack.pipeline.functions.values()}
    launcher_id = logical_id(stack, stack.training.launcher)
    assert expected_ids | {launcher_id} <= set(functions)
    for logical, env in functions.items():
        size = sum(len(k) + len(v) for k, v in env.items())
        assert size <= LAMBDA_ENVIRONMENT_LIMIT, f"{logical}: {size} bytes of environment"
        if logical == launcher_id:
            continue  # its settings go to the training job: see the next test
        assert load_settings(environ=env) == replace(file_settings, lake=LAKE), logical


@pytest.fixture
def launcher_environment(
    round_trip_synth: tuple[Any, dict[str, Any]], moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    stack, template = round_trip_synth
    env = functions_with_settings(template)[logical_id(stack, stack.training.launcher)]
    for name, value in {**env, "AWS_ENDPOINT_URL_SAGEMAKER": moto_server, "POWERTOOLS_TRACE_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    yield env


def test_the_launched_training_job_reads_back_the_files_settings(
    launcher_environment: dict[str, str], file_settings: Settings
) -> None:
    import boto3

    launcher = load_handler("launch_training")
    event = {**EVENT, "id": "5e77195a-0000-4000-8000-000000000002"}  # a job of its own on the shared server
    result = launcher.handler(event, LambdaContext("capacity-forecaster-launch-training", 256))
    assert result["status"] == "launched", result
    recorded = boto3.client("sagemaker").describe_training_job(TrainingJobName=result["training_job_name"])

    hyperparameters = recorded["HyperParameters"]
    assert len(hyperparameters) <= MAX_HYPERPARAMETERS
    assert max(len(v) for v in hyperparameters.values()) <= MAX_HYPERPARAMETER_CHARS
    params = job.parse_hyperparameters(hyperparameters)  # the training container's own parser
    assert params.settings == file_settings
    assert (params.run_id, params.lake_uri) == (result["training_job_name"], LAKE)
    # the hosts and the grain's channel are the request's own fields
    assert recorded["ResourceConfig"]["InstanceCount"] == file_settings.training.hosts == 2
    [channel] = recorded["InputDataConfig"]
    prefix = job.CHANNEL_TABLES[file_settings.training.grain].prefix
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"{LAKE}/{prefix}/"
    assert prefix == "curated/metrics_hourly"


def test_the_job_would_accept_every_setting_as_a_hyperparameter() -> None:
    assert len(job.JOB_HYPERPARAMETERS) + len(CLOUD_SETTINGS) <= MAX_HYPERPARAMETERS
    assert set(job.HYPERPARAMETERS) == set(job.JOB_HYPERPARAMETERS) | set(CLOUD_SETTINGS)


# ---- refused for the cloud ---------------------------------------------------------------------------------

REFUSED_VALUES: dict[str, Any] = {
    "lake": "s3://somewhere-else",
    "s3": {"region": "eu-west-1"},
    "fleet.end_date": "2026-01-31",
    "rightsizing.price_file": str(ROOT / "layers/core/python/capacity_forecaster/data/ec2_prices.csv"),
}


def stack_settings_from(path: Path) -> StackSettings:
    return StackSettings.from_mapping({f"{CONTEXT_NAMESPACE}:settingsFile": str(path)})


@pytest.mark.parametrize("dotted", sorted(CLOUD_REFUSED))
def test_settings_that_cannot_apply_in_the_cloud_are_refused_in_one_line(tmp_path: Path, dotted: str) -> None:
    section, key = SETTING_FIELDS[dotted]
    value = REFUSED_VALUES[dotted]
    path = tmp_path / "cf.yaml"
    path.write_text(yaml.safe_dump({section: {key: value}} if section else {key: value}), encoding="utf-8")
    with pytest.raises(SettingsError, match=f"setting {dotted} cannot be set for the cloud: ") as raised:
        stack_settings_from(path)
    assert "\n" not in str(raised.value)
    assert CLOUD_REFUSED[dotted] in str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("horizon_days: 0\n", "horizon_days=0 must be between 1 and 730"),
        ("training: {models: [arima]}\n", "training.models=arima must name distinct models of"),
        ("training: {hosts: 65}\n", "training.hosts must be between 1 and 64"),
        ("colour: blue\n", "unknown setting 'colour'"),
        ("fleet: [1, 2\n", "is not valid YAML"),
    ],
)
def test_a_bad_settings_file_is_the_domains_one_line_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "cf.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")) as raised:
        stack_settings_from(path)
    assert "\n" not in str(raised.value) and "settings_file" in str(raised.value)


def test_a_missing_settings_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        stack_settings_from(tmp_path / "nope.yaml")


def test_settings_too_large_for_a_functions_environment_are_refused(tmp_path: Path) -> None:
    table = {f"x{i}.large": {"cores": 2, "memory_gib": 8, "monthly_cost": 70.08} for i in range(80)}
    path = tmp_path / "cf.yaml"
    path.write_text(yaml.safe_dump({"rightsizing": {"instance_types": table}}), encoding="utf-8")
    with pytest.raises(SettingsError, match="bytes of a function's environment, more than the 3072") as raised:
        stack_settings_from(path)
    assert "largest: rightsizing.instance_types" in str(raised.value)


def test_a_relative_settings_file_is_read_from_the_project_root() -> None:
    path = Path("docs/settings.example.yaml")  # the example docs/settings.md shows
    assert (ROOT / path).is_file()
    settings = StackSettings.from_mapping({f"{CONTEXT_NAMESPACE}:settingsFile": str(path)})
    assert settings.domain_settings == load_settings(ROOT / path, environ={})
    assert settings.domain_settings != Settings()
