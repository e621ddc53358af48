"""The stack with ``scale.engine: sagemaker``: the rules start Processing jobs through the launcher (infra.processing).

One synthesis whose settings file chooses the engine; cdk-nag and cfn-lint check it as they check the default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cfnlint.api import ManualArgs, lint_file

from capacity_forecaster.access import function_access
from capacity_forecaster.scale import engine_for, processing_instance
from infra.processing import JOB_STAGES, LAUNCHED_RULES, Processing
from infra.storage import normalize_prefix
from tests.infra.options import OptionsSynth
from tests.infra.template_tools import logical_id, render, s3_object_access, statements
from tests.infra.test_cfn_lint import IGNORED
from tests.infra.test_nag import MIN_REASON, acknowledgments


def _processing(synth: OptionsSynth) -> Processing:
    assert synth.stack.processing is not None, "the sagemaker settings file must deploy the processing launcher"
    return synth.stack.processing


def test_the_settings_choose_the_sagemaker_engine(sagemaker_synth: OptionsSynth) -> None:
    assert engine_for(sagemaker_synth.stack.settings.domain_settings) == "sagemaker"
    assert sagemaker_synth.stack.pipeline.engine == "sagemaker"


def test_the_etl_and_training_completed_rules_target_only_the_launcher(sagemaker_synth: OptionsSynth) -> None:
    stack, template = sagemaker_synth.stack, sagemaker_synth.template_json
    launcher = logical_id(stack, _processing(sagemaker_synth).launcher)
    lambdas = {logical_id(stack, fn) for fn in stack.pipeline.functions.values()}
    for rule_name in LAUNCHED_RULES:
        rule = template["Resources"][logical_id(stack, stack.pipeline.rules[rule_name])]
        arns = [render(t["Arn"]) for t in rule["Properties"]["Targets"]]
        assert arns == [f"<{launcher}.Arn>"], rule_name
        assert all(f"<{fn}.Arn>" not in arns for fn in lambdas)
        assert "DeadLetterConfig" in rule["Properties"]["Targets"][0]


def test_the_launcher_knows_the_image_the_roles_the_instance_and_the_settings(sagemaker_synth: OptionsSynth) -> None:
    stack, template = sagemaker_synth.stack, sagemaker_synth.template_json
    processing = _processing(sagemaker_synth)
    fn = template["Resources"][logical_id(stack, processing.launcher)]
    env = {k: render(v) for k, v in fn["Properties"]["Environment"]["Variables"].items()}
    assert fn["Properties"]["Runtime"] == "python3.13" and fn["Properties"]["Handler"] == "handler.handler"
    for stage, role in processing.roles.items():
        assert env[f"CF_PROCESSING_{stage.upper()}_ROLE_ARN"] == f"<{logical_id(stack, role)}.Arn>"
    domain = stack.settings.domain_settings
    assert env["CF_PROCESSING_INSTANCE_TYPE"] == processing_instance(domain.fleet.servers, domain.horizon_days).name
    assert env["CF_LAKE"] == render(stack.resolve(stack.lake.uri))
    assert env["CF_S3_KMS_KEY_ID"] == f"<{logical_id(stack, stack.lake.key)}.Arn>"
    assert "cdk-assets" in env["CF_PROCESSING_IMAGE_URI"] or "container-assets" in env["CF_PROCESSING_IMAGE_URI"]
    job_env = json.loads(env["CF_PROCESSING_ENVIRONMENT"])
    assert job_env["CF_SCALE_ENGINE"] == "sagemaker" and all(k.startswith("CF_") for k in job_env)


def test_each_job_role_has_exactly_its_stages_grants(sagemaker_synth: OptionsSynth) -> None:
    stack, template = sagemaker_synth.stack, sagemaker_synth.template_json
    bucket = logical_id(stack, stack.lake.bucket)
    for stage, role in _processing(sagemaker_synth).roles.items():
        access = s3_object_access(template, logical_id(stack, role), bucket)
        spec = function_access(*JOB_STAGES[stage])
        assert access.get("s3:GetObject", set()) == {normalize_prefix(p) for p in spec.read}, stage
        assert access["s3:PutObject"] == {normalize_prefix(p) for p in spec.write}, stage
        assert access.get("s3:DeleteObject", set()) == {normalize_prefix(p) for p in spec.delete}, stage


def test_the_launcher_passes_only_the_job_roles_to_sagemaker(sagemaker_synth: OptionsSynth) -> None:
    stack, template = sagemaker_synth.stack, sagemaker_synth.template_json
    processing = _processing(sagemaker_synth)
    assert processing.launcher.role is not None
    found = statements(template, logical_id(stack, processing.launcher.role))
    [passing] = [s for s in found if s["Action"] == "iam:PassRole"]
    assert sorted(render(r) for r in passing["Resource"]) == sorted(
        f"<{logical_id(stack, role)}.Arn>" for role in processing.roles.values()
    )
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    [creating] = [s for s in found if "sagemaker:CreateProcessingJob" in s["Action"]]
    assert render(creating["Resource"]).endswith(":processing-job/capacity-forecaster-*")


def test_cdk_nag_finds_nothing_unacknowledged(sagemaker_synth: OptionsSynth) -> None:
    report = json.loads((sagemaker_synth.assembly_dir / "validation-report.json").read_text(encoding="utf-8"))
    findings = [
        f"{v['ruleName']} at {c['constructPath']}"
        for plugin in report["pluginReports"]
        for v in plugin.get("violations", [])
        for c in v.get("violatingConstructs", [])
    ]
    assert findings == []
    for construct_path, rule, reason in acknowledgments(sagemaker_synth.assembly_dir):
        assert len(reason.strip()) >= MIN_REASON, f"{rule} at {construct_path}"
        assert construct_path.strip("/").count("/") >= 2, f"{rule} at {construct_path}"


def test_cfn_lint_finds_nothing(sagemaker_synth: OptionsSynth) -> None:
    templates = sorted(Path(sagemaker_synth.assembly_dir).glob("*.template.json"))
    assert templates
    args = ManualArgs(ignore_checks=IGNORED, regions=["us-east-1", "eu-west-1"])
    findings: list[Any] = [str(m) for t in templates for m in lint_file(t, args)]
    assert findings == []
