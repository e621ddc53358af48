"""Settings from context reach the template: schedules, the settings file (fleet size, horizon, thresholds, hosts,
models: see test_settings_round_trip.py for every setting), the training job's instance type and spot, and the
alert e-mail; and the defaults are what the README says."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from capacity_forecaster.forecasting import baselines, prophet_model, random_forest  # noqa: F401  (registers)
from capacity_forecaster.settings import ENV_VARS, load_settings
from infra import names
from infra.settings import SettingsError, StackSettings
from infra.stack import CapacityForecasterStack
from tests.infra.options import OPTIONS, SETTINGS_FILE, OptionsSynth
from tests.infra.template_tools import logical_id

DEFAULTS = StackSettings()
ROOT = Path(__file__).resolve().parents[2]


def resource(synth: OptionsSynth, construct: Any) -> dict[str, Any]:
    return dict(synth.template_json["Resources"][logical_id(synth.stack, construct)])


def env_of(synth: OptionsSynth, construct: Any) -> dict[str, Any]:
    return dict(resource(synth, construct)["Properties"]["Environment"]["Variables"])


def test_defaults_are_documented_choices() -> None:
    assert (DEFAULTS.generate_schedule, DEFAULTS.etl_schedule) == ("cron(0 1 * * ? *)", "cron(0 3 * * ? *)")
    assert DEFAULTS.training_schedule == "cron(0 5 ? * MON *)"  # weekly
    assert DEFAULTS.training_instance_type == "ml.m5.xlarge"
    assert (DEFAULTS.training_spot, DEFAULTS.alert_email, DEFAULTS.quicksight_principal_arn) == ("true", "", "")
    # no settings file: the deployed functions run with the local pipeline's defaults
    assert DEFAULTS.settings_file == "" and DEFAULTS.domain_settings == load_settings(environ={})


def test_known_models_are_the_registered_ones() -> None:
    assert sorted(names.TRAINING_MODEL_NAMES) == sorted(baselines.registered_models())


def test_schedules_reach_the_rules(options_synth: OptionsSynth) -> None:
    stack: CapacityForecasterStack = options_synth.stack
    rules = {
        "generate-schedule": stack.pipeline.rules["generate-schedule"],
        "etl-schedule": stack.pipeline.rules["etl-schedule"],
        "training": stack.training.schedule,
    }
    expressions = {k: resource(options_synth, r)["Properties"]["ScheduleExpression"] for k, r in rules.items()}
    assert expressions == {
        "generate-schedule": OPTIONS["generateSchedule"],
        "etl-schedule": OPTIONS["etlSchedule"],
        "training": OPTIONS["trainingSchedule"],
    }


@pytest.mark.parametrize("name", sorted(names.HANDLER_COMMANDS))
def test_the_settings_file_reaches_the_data_functions(options_synth: OptionsSynth, name: str) -> None:
    env = env_of(options_synth, options_synth.stack.pipeline.functions[name])
    assert (env["CF_FLEET_SERVERS"], env["CF_HORIZON_DAYS"], env["CF_RISK_CRITICAL_DAYS"]) == ("250", "120", "21")
    assert "CF_FLEET_DAYS" not in env  # at its default: not in the environment
    # and the function's settings, read with the domain package's rules, are the file's
    settings = load_settings(environ={k: v for k, v in env.items() if isinstance(v, str)})
    assert replace(settings, lake="./lake") == load_settings(ROOT / SETTINGS_FILE, environ={})
    assert dict(settings.risk.thresholds) == {"cpu": 75.0, "mem": 85.0, "disk": 80.0, "net": 80.0}
    assert (settings.risk.critical_days, settings.fleet.servers, settings.horizon_days) == (21, 250, 120)


def test_default_settings_add_no_variables(template_json: dict[str, Any], stack: Any) -> None:
    for fn in stack.pipeline.functions.values():
        env = template_json["Resources"][logical_id(stack, fn)]["Properties"]["Environment"]["Variables"]
        assert sorted(k for k in env if k in ENV_VARS) == ["CF_LAKE"]
    launcher = stack.training.launcher
    env = template_json["Resources"][logical_id(stack, launcher)]["Properties"]["Environment"]["Variables"]
    assert json.loads(env["CF_TRAINING_HYPERPARAMETERS"]) == {}
    assert (env["CF_TRAINING_INSTANCE_COUNT"], env["CF_TRAINING_CHANNEL_PREFIX"]) == ("1", "curated/metrics_daily/")


def test_training_settings_reach_the_launcher(options_synth: OptionsSynth) -> None:
    from launch_training.handler import LaunchConfig

    env = env_of(options_synth, options_synth.stack.training.launcher)
    assert env["CF_TRAINING_INSTANCE_TYPE"] == "ml.c5.2xlarge"
    assert env["CF_TRAINING_INSTANCE_COUNT"] == "2"  # training.hosts of the settings file
    assert (env["CF_TRAINING_SPOT"], env["CF_TRAINING_VOLUME_GB"]) == ("false", "60")
    hyperparameters = json.loads(env["CF_TRAINING_HYPERPARAMETERS"])
    assert hyperparameters["training.models"] == "seasonal_naive,linear_trend,recent_trend,random_forest"
    assert not set(ENV_VARS) & set(env) - {"CF_LAKE"}, "the launcher's own variables must not be settings'"
    # the launcher accepts them as they are (tokens replaced by plausible values)
    plain = {k: v for k, v in env.items() if isinstance(v, str)}
    plain |= {
        "CF_LAKE": "s3://lake-bucket",
        "CF_S3_KMS_KEY_ID": "arn:aws:kms:eu-west-1:123456789012:key/k",
        "CF_TRAINING_IMAGE_URI": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/img:tag",
        "CF_TRAINING_ROLE_ARN": "arn:aws:iam::123456789012:role/job",
    }
    config = LaunchConfig.from_env(plain)
    assert (config.instance_count, config.spot, config.hyperparameters) == (2, False, hyperparameters)


def test_alert_email_subscribes_to_the_topic(options_synth: OptionsSynth) -> None:
    topic = logical_id(options_synth.stack, options_synth.stack.notifications.topic)
    subscriptions = [
        r["Properties"]
        for r in options_synth.template_json["Resources"].values()
        if r["Type"] == "AWS::SNS::Subscription"
    ]
    assert subscriptions == [{"Protocol": "email", "TopicArn": {"Ref": topic}, "Endpoint": OPTIONS["alertEmail"]}]


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"trainingSchedule": "weekly"}, "training_schedule"),
        ({"trainingInstanceType": "m5.xlarge"}, "training_instance_type"),
        ({"trainingSpot": "yes"}, "training_spot"),
        ({"settingsFile": "no/such/settings.yaml"}, "settings_file no/such/settings.yaml: config file .* not found"),
        # the settings that moved to the settings file are unknown context keys now
        ({"fleetServers": "500"}, "unknown context key"),
        ({"trainingInstanceCount": "2"}, "unknown context key"),
    ],
)
def test_settings_are_refused_in_one_line(context: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        StackSettings.from_mapping({f"{names.CONTEXT_NAMESPACE}:{k}": v for k, v in context.items()})
    assert "\n" not in str(raised.value)


def test_outputs_name_the_functions_to_invoke_by_hand(template_json: dict[str, Any], stack: Any) -> None:
    functions = {**stack.pipeline.functions, "launch_training": stack.training.launcher}
    for name, output_id in names.OUTPUT_FUNCTION_NAMES.items():
        if name == "generate":  # the demo generator: no function, no output without the demo
            assert output_id not in template_json["Outputs"]
            continue
        assert template_json["Outputs"][output_id]["Value"] == {"Ref": logical_id(stack, functions[name])}
