"""Settings from context reach the template: schedules, fleet size, horizon, thresholds, the training job's
instance type, count, spot and models, and the alert e-mail; and the defaults are what the README says."""

from __future__ import annotations

from typing import Any

import pytest

from capacity_forecaster.forecasting import baselines, prophet_model, random_forest  # noqa: F401  (registers)
from capacity_forecaster.settings import load_settings
from infra import names
from infra.settings import SettingsError, StackSettings
from infra.stack import CapacityForecasterStack
from tests.infra.options import OPTIONS, OptionsSynth
from tests.infra.template_tools import logical_id

DEFAULTS = StackSettings()


def resource(synth: OptionsSynth, construct: Any) -> dict[str, Any]:
    return dict(synth.template_json["Resources"][logical_id(synth.stack, construct)])


def env_of(synth: OptionsSynth, construct: Any) -> dict[str, Any]:
    return dict(resource(synth, construct)["Properties"]["Environment"]["Variables"])


def test_defaults_are_documented_choices() -> None:
    assert (DEFAULTS.generate_schedule, DEFAULTS.etl_schedule) == ("cron(0 1 * * ? *)", "cron(0 3 * * ? *)")
    assert DEFAULTS.training_schedule == "cron(0 5 ? * MON *)"  # weekly
    assert (DEFAULTS.fleet_servers, DEFAULTS.horizon_days) == (100, 90)
    assert (DEFAULTS.training_instance_type, DEFAULTS.training_instance_count) == ("ml.m5.xlarge", 1)
    assert (DEFAULTS.training_spot, DEFAULTS.alert_email, DEFAULTS.quicksight_principal_arn) == ("true", "", "")
    # the stack's default thresholds and models are the local pipeline's defaults
    local = load_settings(environ={})
    assert load_settings(environ={"CF_RISK_THRESHOLDS": DEFAULTS.risk_thresholds}).risk == local.risk
    assert DEFAULTS.risk_critical_days == local.risk.critical_days
    assert tuple(DEFAULTS.training_models.split(",")) == local.training.models


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
def test_fleet_horizon_and_thresholds_reach_the_data_functions(options_synth: OptionsSynth, name: str) -> None:
    env = env_of(options_synth, options_synth.stack.pipeline.functions[name])
    assert (env["CF_FLEET_SERVERS"], env["CF_FLEET_DAYS"], env["CF_HORIZON_DAYS"]) == ("500", "1095", "180")
    assert (env["CF_RISK_THRESHOLDS"], env["CF_RISK_CRITICAL_DAYS"]) == ("cpu=75,disk=90", "14")
    # and the function's settings, read with the domain package's rules, are the ones asked for
    settings = load_settings(environ={k: v for k, v in env.items() if isinstance(v, str)})
    assert dict(settings.risk.thresholds) == {"cpu": 75.0, "mem": 80.0, "disk": 90.0, "net": 80.0}
    assert (settings.risk.critical_days, settings.fleet.servers, settings.horizon_days) == (14, 500, 180)


def test_default_thresholds_reach_the_data_functions(template_json: dict[str, Any], stack: Any) -> None:
    for fn in stack.pipeline.functions.values():
        env = template_json["Resources"][logical_id(stack, fn)]["Properties"]["Environment"]["Variables"]
        assert env["CF_RISK_THRESHOLDS"] == "cpu=80,mem=80,disk=80,net=80"
        assert env["CF_RISK_CRITICAL_DAYS"] == "30"


def test_training_settings_reach_the_launcher(options_synth: OptionsSynth) -> None:
    from launch_training.handler import LaunchConfig

    env = env_of(options_synth, options_synth.stack.training.launcher)
    assert env["CF_TRAINING_INSTANCE_TYPE"] == "ml.c5.2xlarge"
    assert env["CF_TRAINING_INSTANCE_COUNT"] == "4"
    assert env["CF_TRAINING_SPOT"] == "false"
    assert env["CF_TRAINING_MODELS"] == "seasonal_naive,linear_trend,random_forest"
    # the launcher accepts them as they are (tokens replaced by plausible values)
    plain = {k: v for k, v in env.items() if isinstance(v, str)}
    plain |= {
        "CF_LAKE": "s3://lake-bucket",
        "CF_S3_KMS_KEY_ID": "arn:aws:kms:eu-west-1:123456789012:key/k",
        "CF_TRAINING_IMAGE_URI": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/img:tag",
        "CF_TRAINING_ROLE_ARN": "arn:aws:iam::123456789012:role/job",
    }
    config = LaunchConfig.from_env(plain)
    assert (config.instance_count, config.spot, config.models) == (4, False, env["CF_TRAINING_MODELS"])


def test_default_launcher_models(template_json: dict[str, Any], stack: CapacityForecasterStack) -> None:
    env = template_json["Resources"][logical_id(stack, stack.training.launcher)]["Properties"]["Environment"]
    assert env["Variables"]["CF_TRAINING_MODELS"] == "seasonal_naive,linear_trend,recent_trend"


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
        ({"riskThresholds": "cpu:80"}, "must be written metric=percentage"),
        ({"riskThresholds": "gpu=80"}, "unknown metric"),
        ({"riskThresholds": "cpu=0"}, "must be a percentage"),
        ({"riskCriticalDays": "-1"}, "critical_days"),
        ({"trainingModels": "prophet,arima"}, "training_models"),
        ({"trainingModels": "prophet, random_forest"}, "training_models"),
        ({"trainingModels": "prophet,prophet"}, "training_models"),
        ({"trainingModels": ""}, "training_models"),
        ({"trainingSchedule": "weekly"}, "training_schedule"),
        ({"trainingInstanceType": "m5.xlarge"}, "training_instance_type"),
        ({"trainingInstanceCount": "0"}, "training_instance_count"),
        ({"trainingSpot": "yes"}, "training_spot"),
        ({"fleetServers": "0"}, "fleet_servers"),
        ({"horizonDays": "731"}, "horizon_days"),
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
