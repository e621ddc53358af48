"""The SageMaker Processing engine of the fleet-wide stages (``scale.engine: sagemaker``, docs/scaling.md).

When the settings file's fleet outgrows the Lambdas (``capacity_forecaster.scale.engine_for``), the ETL schedule,
the raw-object rule and the training-completed rule target a zip launcher (``lambdas/launch_processing``) that
starts a Processing job of the data Lambdas' image (``capacity_forecaster.processing``): ``etl``, or ``outputs``
for a completed training run. Each job stage has its own role with the grants of its stages in
``capacity_forecaster.access`` (through ``DataLake.grant_access``); the launcher may pass only those roles.
The ETL and risk Lambdas stay deployed (to invoke by hand), no rule targets them.
"""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from constructs import Construct

from capacity_forecaster.access import function_access
from capacity_forecaster.scale import processing_instance
from infra.names import (
    ALARM_PERIOD_MINUTES,
    LAMBDA_DOCKERFILE,
    LAMBDA_MAX_EVENT_AGE_HOURS,
    LAMBDA_RETRY_ATTEMPTS,
    POWERTOOLS_NAMESPACE,
    PROCESSING_LAUNCHER_CODE,
    PROJECT,
)
from infra.pipeline import LAMBDA_NAG_REASONS, RETENTION, ROOT, Pipeline
from infra.settings import StackSettings
from infra.storage import DataLake
from infra.training import LAUNCHER_MEMORY_MB, LAUNCHER_TIMEOUT_SECONDS, Training

JOB_STAGES: dict[str, tuple[str, ...]] = {
    "etl": ("etl", "processing_summary"),
    "outputs": ("publish", "risk", "consolidation", "report", "notify", "processing_summary"),
}
"""The stages each processing job runs (the ETL Lambda's, the risk Lambda's with its run summary) and its summary
upload."""
LAUNCHED_RULES: dict[str, str] = {"etl-schedule": "etl", "raw-object-created": "etl", "training-completed": "outputs"}
"""The pipeline's rules that start a processing job instead of a Lambda, and the job each starts."""
PROCESSING_LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
PROCESSING_JOB_PREFIX = f"{PROJECT}-"


class Processing(Construct):
    """The data image as a Processing job: one role per job stage and the launcher the rules target."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        lake: DataLake,
        settings: StackSettings,
        pipeline: Pipeline,
        training: Training,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        domain = settings.domain_settings
        self.image = ecr_assets.DockerImageAsset(
            self, "Image", directory=str(ROOT), file=LAMBDA_DOCKERFILE, platform=ecr_assets.Platform.LINUX_AMD64
        )
        log_group_arn = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=PROCESSING_LOG_GROUP,
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        self.roles: dict[str, iam.Role] = {}
        for stage, stages in JOB_STAGES.items():
            role = iam.Role(
                self,
                f"{stage.capitalize()}JobRole",
                assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
                description=f"SageMaker Processing jobs of the Capacity Forecaster's {stage} stage.",
            )
            lake.grant_access(role, function_access(*stages))
            self.image.repository.grant_pull(role)
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=[
                        "logs:CreateLogGroup",
                        "logs:CreateLogStream",
                        "logs:DescribeLogStreams",
                        "logs:PutLogEvents",
                    ],
                    resources=[log_group_arn, f"{log_group_arn}:log-stream:*"],
                )
            )
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["cloudwatch:PutMetricData"],
                    resources=["*"],
                    conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
                )
            )
            # the job's volume is encrypted with the lake's key: SageMaker creates a grant for the instance
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["kms:CreateGrant"],
                    resources=[lake.key.key_arn],
                    conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
                )
            )
            self.roles[stage] = role

        self.job_environment = {k: v for k, v in pipeline.environment("etl").items() if k.startswith("CF_")}
        """What every job gets in its environment (the launcher adds the lake and its key): the data functions'
        ``CF_*`` settings, and what :meth:`add_job_environment` adds (the alerts topic)."""
        self.launcher = lambda_.Function(
            self,
            "LauncherFunction",
            description="Starts the Capacity Forecaster's ETL and outputs SageMaker Processing jobs.",
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.X86_64,
            handler="handler.handler",
            code=lambda_.Code.from_asset(str(ROOT / PROCESSING_LAUNCHER_CODE), exclude=["__pycache__", "*.pyc"]),
            layers=[training.layer, training.powertools_layer],
            memory_size=LAUNCHER_MEMORY_MB,
            timeout=cdk.Duration.seconds(LAUNCHER_TIMEOUT_SECONDS),
            environment={
                "POWERTOOLS_SERVICE_NAME": f"{PROJECT}-launch-processing",
                "POWERTOOLS_METRICS_NAMESPACE": POWERTOOLS_NAMESPACE,
                "CF_LAKE": lake.uri,
                "CF_S3_KMS_KEY_ID": lake.key.key_arn,
                "CF_PROCESSING_IMAGE_URI": self.image.image_uri,
                "CF_PROCESSING_ETL_ROLE_ARN": self.roles["etl"].role_arn,
                "CF_PROCESSING_OUTPUTS_ROLE_ARN": self.roles["outputs"].role_arn,
                "CF_PROCESSING_INSTANCE_TYPE": processing_instance(domain.fleet.servers, domain.horizon_days).name,
                "CF_PROCESSING_MAX_RUNTIME_SECONDS": str(settings.training_max_runtime_seconds),
                "CF_PROCESSING_ENVIRONMENT": self._job_environment_json(),
            },
            tracing=lambda_.Tracing.ACTIVE,
            on_failure=destinations.SqsDestination(pipeline.dead_letters),
            retry_attempts=LAMBDA_RETRY_ATTEMPTS,
            max_event_age=cdk.Duration.hours(LAMBDA_MAX_EVENT_AGE_HOURS),
            log_group=logs.LogGroup(
                self,
                "LauncherLogs",
                retention=RETENTION[settings.log_retention_days],
                removal_policy=cdk.RemovalPolicy.DESTROY,
            ),
        )
        jobs_arn = stack.format_arn(
            service="sagemaker", resource="processing-job", resource_name=f"{PROCESSING_JOB_PREFIX}*"
        )
        self.launcher.add_to_role_policy(
            iam.PolicyStatement(actions=["sagemaker:CreateProcessingJob", "sagemaker:AddTags"], resources=[jobs_arn])
        )
        self.launcher.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[role.role_arn for role in self.roles.values()],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        self.launcher_alarm = cloudwatch.Alarm(
            self,
            "LauncherErrors",
            alarm_description="The processing launcher failed (see its logs; the event is retried, then "
            "dead-lettered).",
            metric=self.launcher.metric_errors(period=cdk.Duration.minutes(ALARM_PERIOD_MINUTES), statistic="Sum"),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        for rule in LAUNCHED_RULES:
            pipeline.rules[rule].add_target(
                targets.LambdaFunction(
                    self.launcher,
                    retry_attempts=LAMBDA_RETRY_ATTEMPTS,
                    max_event_age=cdk.Duration.hours(LAMBDA_MAX_EVENT_AGE_HOURS),
                    dead_letter_queue=pipeline.dead_letters,
                )
            )
        self._acknowledge(lake)

    def _job_environment_json(self) -> str:
        return json.dumps(self.job_environment, separators=(",", ":"))

    def add_job_environment(self, name: str, value: str) -> None:
        """One more variable in every job's environment (``CF_PROCESSING_ENVIRONMENT`` of the launcher)."""
        self.job_environment[name] = value
        self.launcher.add_environment("CF_PROCESSING_ENVIRONMENT", self._job_environment_json())

    def _acknowledge(self, lake: DataLake) -> None:
        """cdk-nag findings that are by design, each with its reason, on the role they concern."""
        bucket = lake.bucket.node.default_child
        assert isinstance(bucket, cdk.CfnElement)
        bucket_id = cdk.Stack.of(self).resolve(bucket.logical_id)
        for stage, role in self.roles.items():
            access = function_access(*JOB_STAGES[stage])
            reasons = {
                "AwsSolutions-IAM5[Resource::*]": "ecr:GetAuthorizationToken has no resource-level permissions, and "
                "cloudwatch:PutMetricData is limited by a condition to SageMaker's own metric namespaces.",
                "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:"
                f"{PROCESSING_LOG_GROUP}:log-stream:*]": "Processing jobs write one log stream per instance, named "
                "after the job: the streams of SageMaker's processing log group only.",
            }
            for prefix in sorted({*access.read, *access.write, *access.delete}):
                reasons[f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{prefix.rstrip('/')}/*]"] = (
                    f"Objects under the lake prefix {prefix.rstrip('/')}/ that the {stage} job's stages read or write."
                )
            for rule_id, reason in reasons.items():
                cdk.Validations.of(role).acknowledge(cdk.Acknowledgment(id=rule_id, reason=reason))
        launcher_role = self.launcher.role
        assert launcher_role is not None
        launcher_reasons = {
            **LAMBDA_NAG_REASONS,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
            f"processing-job/{PROCESSING_JOB_PREFIX}*]": "Processing job names carry the event's time and id or "
            "the training run; the launcher may create only jobs named with this stack's prefix.",
        }
        for rule_id, reason in launcher_reasons.items():
            cdk.Validations.of(launcher_role).acknowledge(cdk.Acknowledgment(id=rule_id, reason=reason))
        cdk.Validations.of(self.launcher).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-L1",
                reason="Python 3.13 on purpose: the version the project, its layer and its container images are "
                "built and tested with; it moves with them.",
            )
        )
