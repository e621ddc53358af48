"""Training: the SageMaker training image and execution role, and the zip Lambda that launches the jobs.

Weekly, the launcher (``lambdas/launch_training``, on a layer holding only the domain package's light modules)
calls ``create_training_job`` with the image built from ``sagemaker_jobs/Dockerfile``. The job reads every
partition of ``training.grain``'s metrics table on each host, stages its forecasts under ``staging/training/``
and ends; the pipeline's risk Lambda publishes them when SageMaker reports the job Completed. The settings file's
settings reach the job as hyperparameters, computed here at synth (docs/settings.md).
"""

from __future__ import annotations

import json
import re

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from capacity_forecaster.access import STAGE_ACCESS, table_prefix
from capacity_forecaster.schema import TRAINING_CHANNEL_TABLES
from capacity_forecaster.settings import settings_hyperparameters
from infra.names import (
    ALARM_PERIOD_MINUTES,
    LAMBDA_MAX_EVENT_AGE_HOURS,
    LAMBDA_RETRY_ATTEMPTS,
    LAUNCHER_CODE,
    LAYER_MODULES,
    LAYER_ROOT,
    POWERTOOLS_LAYER_PARAMETER,
    POWERTOOLS_NAMESPACE,
    PROJECT,
    SAGEMAKER_LOG_GROUP,
    TRAINING_CHECKPOINT_PREFIX,
    TRAINING_DOCKERFILE,
    TRAINING_JOB_PREFIX,
)
from infra.pipeline import LAMBDA_NAG_REASONS, RETENTION, ROOT
from infra.settings import StackSettings
from infra.storage import DataLake

LAUNCHER_MEMORY_MB = 256
LAUNCHER_TIMEOUT_SECONDS = 60
LAMBDA_REQUIREMENTS = ROOT / "lambdas" / "requirements.txt"


def powertools_version(requirements: str | None = None) -> str:
    """The Powertools version pinned for the Lambdas (``aws-lambda-powertools[tracer]==X.Y.Z``)."""
    text = LAMBDA_REQUIREMENTS.read_text(encoding="utf-8") if requirements is None else requirements
    found = re.findall(r"^aws-lambda-powertools(?:\[[a-z,]+\])?==([0-9]+\.[0-9]+\.[0-9]+)\s*$", text, re.M)
    if len(found) != 1:
        raise ValueError("lambdas/requirements.txt must pin aws-lambda-powertools exactly once (==X.Y.Z)")
    return str(found[0])


def layer_excludes() -> list[str]:
    """Asset exclusions that keep only LAYER_MODULES of the domain package (and the folders holding them)."""
    package = "python/capacity_forecaster"
    folders = sorted({f"{package}/{m.rsplit('/', 1)[0]}" for m in LAYER_MODULES if "/" in m})
    return ["**", "!python", f"!{package}", *(f"!{f}" for f in folders), *(f"!{package}/{m}" for m in LAYER_MODULES)]


class Training(Construct):
    """The training image, the job's role (lake prefixes, the image, its logs) and the weekly launcher."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        lake: DataLake,
        settings: StackSettings,
        dead_letters: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)

        self.image = ecr_assets.DockerImageAsset(
            self,
            "Image",
            directory=str(ROOT),
            file=TRAINING_DOCKERFILE,
            platform=ecr_assets.Platform.LINUX_AMD64,
        )

        self.role = iam.Role(
            self,
            "JobRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="SageMaker training jobs of the Capacity Forecaster: read metrics, stage forecasts.",
        )
        lake.grant_access(self.role, STAGE_ACCESS["train"])
        self.image.repository.grant_pull(self.role)
        log_group_arn = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=SAGEMAKER_LOG_GROUP,
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
                resources=[log_group_arn, f"{log_group_arn}:log-stream:*"],
            )
        )
        # SageMaker writes every training job's logs to one account-wide group, which may already exist (any
        # earlier SageMaker job creates it): CDK's LogRetention custom resource creates it only if missing and
        # sets its retention either way; the group is left in place when the stack is deleted.
        self.log_retention = logs.LogRetention(
            self,
            "JobLogRetention",
            log_group_name=SAGEMAKER_LOG_GROUP,
            retention=RETENTION[settings.log_retention_days],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            )
        )

        self.layer = lambda_.LayerVersion(
            self,
            "DomainLayer",
            code=lambda_.Code.from_asset(str(ROOT / LAYER_ROOT), exclude=layer_excludes()),
            compatible_runtimes=[lambda_.Runtime.PYTHON_3_13],
            compatible_architectures=[lambda_.Architecture.X86_64],
            description="capacity_forecaster's light modules (errors, S3 keys): standard library and boto3 only.",
        )
        # AWS's own Powertools layer, the version the images pin, its ARN resolved from AWS's public parameter
        self.powertools_layer = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "PowertoolsLayer",
            cdk.CfnDynamicReference(
                cdk.CfnDynamicReferenceService.SSM,
                POWERTOOLS_LAYER_PARAMETER.format(version=powertools_version()),
            ).to_string(),
        )
        self.launcher = lambda_.Function(
            self,
            "LauncherFunction",
            description="Starts the weekly SageMaker training job of the Capacity Forecaster.",
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.X86_64,
            handler="handler.handler",
            code=lambda_.Code.from_asset(str(ROOT / LAUNCHER_CODE), exclude=["__pycache__", "*.pyc"]),
            layers=[self.layer, self.powertools_layer],
            memory_size=LAUNCHER_MEMORY_MB,
            timeout=cdk.Duration.seconds(LAUNCHER_TIMEOUT_SECONDS),
            environment=self._environment(lake, settings),
            tracing=lambda_.Tracing.ACTIVE,
            on_failure=destinations.SqsDestination(dead_letters),
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
            service="sagemaker", resource="training-job", resource_name=f"{TRAINING_JOB_PREFIX}*"
        )
        self.launcher.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:AddTags"],
                resources=[jobs_arn],
            )
        )
        self.launcher.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        self.launcher_alarm = cloudwatch.Alarm(
            self,
            "LauncherErrors",
            alarm_description="The training launcher failed (see its logs; the event is retried, then dead-lettered).",
            metric=self.launcher.metric_errors(period=cdk.Duration.minutes(ALARM_PERIOD_MINUTES), statistic="Sum"),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.schedule = events.Rule(
            self,
            "TrainingSchedule",
            description="Starts the weekly training job.",
            schedule=events.Schedule.expression(settings.training_schedule),
            targets=[
                targets.LambdaFunction(
                    self.launcher,
                    retry_attempts=LAMBDA_RETRY_ATTEMPTS,
                    max_event_age=cdk.Duration.hours(LAMBDA_MAX_EVENT_AGE_HOURS),
                    dead_letter_queue=dead_letters,
                )
            ],
        )
        self._acknowledge(lake)
        self._acknowledge_log_retention()

    def _acknowledge_log_retention(self) -> None:
        """cdk-nag findings on CDK's LogRetention provider (a singleton function of the stack), with why."""
        stack = cdk.Stack.of(self)
        [provider] = [c for c in stack.node.children if c.node.id.startswith("LogRetention")]
        role = provider.node.find_child("ServiceRole")
        reasons = {
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSLambdaBasicExecutionRole]": "CDK's LogRetention provider needs its own logs and logs:CreateLogGroup, "
            "which this managed policy holds, to create SageMaker's training log group when it is missing.",
            "AwsSolutions-IAM5[Resource::*]": "CDK's LogRetention provider sets (and on request removes) the "
            "retention of the log group named in each custom resource; CDK grants it on any group.",
        }
        for rule_id, reason in reasons.items():
            cdk.Validations.of(role).acknowledge(cdk.Acknowledgment(id=rule_id, reason=reason))

    def _environment(self, lake: DataLake, settings: StackSettings) -> dict[str, str]:
        """The launcher's: the job's image, role and resources, and the settings file's settings as the job's
        hyperparameters (the hosts and the channel of ``training.grain`` as the request's own fields)."""
        domain = settings.domain_settings
        return {
            "POWERTOOLS_SERVICE_NAME": f"{PROJECT}-launch-training",
            "POWERTOOLS_METRICS_NAMESPACE": POWERTOOLS_NAMESPACE,
            "CF_LAKE": lake.uri,
            "CF_S3_KMS_KEY_ID": lake.key.key_arn,
            "CF_TRAINING_IMAGE_URI": self.image.image_uri,
            "CF_TRAINING_ROLE_ARN": self.role.role_arn,
            "CF_TRAINING_INSTANCE_TYPE": settings.training_instance_type,
            "CF_TRAINING_INSTANCE_COUNT": str(domain.training.hosts),
            "CF_TRAINING_VOLUME_GB": str(settings.training_volume_gb),
            "CF_TRAINING_SPOT": settings.training_spot,
            "CF_TRAINING_MAX_RUNTIME_SECONDS": str(settings.training_max_runtime_seconds),
            "CF_TRAINING_MAX_WAIT_SECONDS": str(settings.training_max_wait_seconds),
            "CF_TRAINING_CHANNEL_PREFIX": table_prefix(TRAINING_CHANNEL_TABLES[domain.training.grain]),
            "CF_TRAINING_HYPERPARAMETERS": json.dumps(settings_hyperparameters(domain), separators=(",", ":")),
        }

    def _acknowledge(self, lake: DataLake) -> None:
        """cdk-nag findings that are by design, each with its reason, on the role they concern."""
        bucket = lake.bucket.node.default_child
        assert isinstance(bucket, cdk.CfnElement)
        bucket_id = cdk.Stack.of(self).resolve(bucket.logical_id)
        role_reasons = {
            "AwsSolutions-IAM5[Resource::*]": "ecr:GetAuthorizationToken has no resource-level permissions, and "
            "cloudwatch:PutMetricData is limited by a condition to SageMaker's own metric namespaces.",
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:"
            "/aws/sagemaker/TrainingJobs:log-stream:*]": "Training jobs write one log stream per host, named "
            "after the job: the streams of SageMaker's training log group only.",
        }
        train = STAGE_ACCESS["train"]
        for prefix in sorted({*train.read, *train.write, *train.delete} - {TRAINING_CHECKPOINT_PREFIX}):
            role_reasons[f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{prefix}*]"] = (
                f"The training job reads or writes objects under the lake prefix {prefix} only."
            )
        role_reasons[f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{TRAINING_CHECKPOINT_PREFIX}*]"] = (
            "SageMaker syncs spot-training checkpoints under this prefix (and removes stale ones)."
        )
        for rule_id, reason in role_reasons.items():
            cdk.Validations.of(self.role).acknowledge(cdk.Acknowledgment(id=rule_id, reason=reason))

        launcher_role = self.launcher.role
        assert launcher_role is not None
        launcher_reasons = {
            **LAMBDA_NAG_REASONS,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
            f"training-job/{TRAINING_JOB_PREFIX}*]": "Training job names carry the run date and event id; the "
            "launcher may create and describe only jobs named with this stack's prefix.",
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
