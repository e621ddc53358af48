"""The pipeline: the data Lambdas (one container image, a command each), their schedules and event rules.

generate (daily schedule) -> raw/ -> etl (daily schedule, and objects created under raw/uploads/) -> curated/
SageMaker training job Completed -> risk (publishes the staged forecasts, builds the risk register, the
consolidation plan and the report under reports/, and sends the run summary).
The generator is the demo's: it is deployed only with the ``demo`` switch (StackSettings.demo, docs/demo.md).
pull_cloudwatch (daily schedule, only with a cloudwatchTagFilter) -> raw/uploads/ -> etl.

Each function gets Powertools settings, the domain package's ``CF_*`` settings, grants on exactly the lake
prefixes it reads and writes, asynchronous retries with a KMS-encrypted dead-letter queue as its on-failure
destination, and an alarm on errors. ETL and risk run one at a time, but not through reserved concurrency (a
new account's default quota of 10 concurrent executions cannot reserve any): each run holds a lease object in
the lake (``state/locks/etl.json``, ``state/locks/risk.json``, see ``capacity_forecaster.storage.lease``), which
also serialises them with CLI runs on the same lake. Two ETL runs at once would both process the same new raw
objects, two risk runs could publish the same run twice.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from capacity_forecaster.access import ACCOUNT_WIDE_ACTIONS, StageAccess
from capacity_forecaster.access import function_access as stage_access
from capacity_forecaster.scale import engine_for
from capacity_forecaster.settings import settings_environment
from infra.names import (
    ALARM_PERIOD_MINUTES,
    DLQ_RETENTION_DAYS,
    EPHEMERAL_STORAGE_MB,
    ETL_TRIGGER_PREFIX,
    HANDLER_COMMANDS,
    LAMBDA_DOCKERFILE,
    LAMBDA_MAX_EVENT_AGE_HOURS,
    LAMBDA_RETRY_ATTEMPTS,
    OPS_KEY_ALIAS,
    OPTIONAL_FUNCTIONS,
    POWERTOOLS_NAMESPACE,
    PROJECT,
    TRAINING_JOB_PREFIX,
)
from infra.settings import LOG_RETENTION_DAYS, StackSettings
from infra.storage import DataLake

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: the build context of the image (see .dockerignore for what it holds)."""

SAGEMAKER_STATE_CHANGE = ("aws.sagemaker", "SageMaker Training Job State Change")
OBJECT_CREATED = ("aws.s3", "Object Created")


LAMBDA_NAG_REASONS: dict[str, str] = {
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    "AWSLambdaBasicExecutionRole]": "The AWS managed basic execution policy only lets the function "
    "create its log streams and write its own logs; it grants no data access.",
    "AwsSolutions-IAM5[Resource::*]": "X-Ray's PutTraceSegments and PutTelemetryRecords (active tracing) "
    "support no resource-level permissions; they can only write traces.",
    "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]": "Sending to the KMS-encrypted dead-letter queue "
    "(and, for risk, the alerts topic) needs data keys of those keys only, named as the resources.",
    "AwsSolutions-IAM5[Action::kms:ReEncrypt*]": "CDK's grant for sending to the encrypted dead-letter "
    "queue; it is limited to the queue's own key.",
}
"""cdk-nag findings every function of the stack shares (basic execution role, X-Ray, the encrypted DLQ), with why."""


FUNCTION_STAGES: dict[str, tuple[str, ...]] = {
    "generate": ("generate",),
    "etl": ("etl",),
    "risk": ("publish", "risk", "consolidation", "report", "notify"),
    "pull_cloudwatch": ("pull_cloudwatch",),
}
"""The stages each function's handler runs; its role gets what they touch (``capacity_forecaster.access``)."""

DEMO_FUNCTIONS = frozenset({"generate"})
"""Functions deployed only with the ``demo`` switch (StackSettings.demo): the synthetic fleet's generator."""


def function_access(name: str) -> StageAccess:
    """What the function ``name`` touches: the union of its stages' declarations."""
    return stage_access(*FUNCTION_STAGES[name])


LAUNCHED_FUNCTIONS = frozenset({"etl", "risk"})
"""Functions whose rules start a SageMaker Processing job instead with ``scale.engine`` sagemaker (infra.processing)."""

SERIALISED = frozenset({"etl", "risk"})
"""Functions that must not overlap: their stages hold a lease under ``state/locks/`` in the lake."""


class Pipeline(Construct):
    """The generate, etl and risk Lambdas with their triggers, dead-letter queue and alarms."""

    def __init__(self, scope: Construct, construct_id: str, *, lake: DataLake, settings: StackSettings) -> None:
        super().__init__(scope, construct_id)
        self._lake = lake
        self._settings = settings
        self.engine = engine_for(settings.domain_settings)
        """lambda, or sagemaker: the etl and risk rules are left for infra.processing's launcher to target."""

        self.key = kms.Key(
            self,
            "Key",
            alias=OPS_KEY_ALIAS,
            description="Encrypts the Capacity Forecaster dead-letter queue.",
            enable_key_rotation=True,
            removal_policy=settings.cdk_removal_policy,
        )
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            retention_period=cdk.Duration.days(DLQ_RETENTION_DAYS),
        )
        # EventBridge dead-letters the events it cannot deliver to a target into the same encrypted queue.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowEventBridgeDeadLettersOfThisAccount",
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}},
            )
        )
        cdk.Validations.of(self.dead_letters).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-SQS3",
                reason="This queue is itself the dead-letter queue: it holds the failed Lambda invocations.",
            )
        )
        self.dead_letters_alarm = cloudwatch.Alarm(
            self,
            "DeadLettersAlarm",
            alarm_description="A pipeline Lambda gave up on an event: it is in the dead-letter queue.",
            metric=self.dead_letters.metric_approximate_number_of_messages_visible(
                period=cdk.Duration.minutes(ALARM_PERIOD_MINUTES), statistic="Maximum"
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

        self.code_directory = str(ROOT)
        self.functions: dict[str, lambda_.DockerImageFunction] = {}
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for name in HANDLER_COMMANDS:
            if not self._enabled(name):
                continue  # the demo's generator only with the demo switch (docs/demo.md), the puller with tags
            self.functions[name] = self._function(name)
            self.alarms[name] = self._errors_alarm(name)

        lake.enable_event_bridge()
        self.rules = {
            "etl-schedule": self._rule(
                "EtlSchedule",
                "etl",
                description="Processes the new raw objects daily.",
                schedule=events.Schedule.expression(settings.etl_schedule),
            ),
            "raw-object-created": self._rule(
                "RawObjectCreated",
                "etl",
                description=f"Starts the ETL when an object is created under {ETL_TRIGGER_PREFIX} in the lake.",
                event_pattern=events.EventPattern(
                    source=[OBJECT_CREATED[0]],
                    detail_type=[OBJECT_CREATED[1]],
                    detail={
                        "bucket": {"name": [lake.bucket_name]},
                        "object": {"key": events.Match.prefix(ETL_TRIGGER_PREFIX)},
                    },
                ),
            ),
            "training-completed": self._rule(
                "TrainingCompleted",
                "risk",
                description="Publishes a completed training run and builds the risk register.",
                event_pattern=events.EventPattern(
                    source=[SAGEMAKER_STATE_CHANGE[0]],
                    detail_type=[SAGEMAKER_STATE_CHANGE[1]],
                    detail={
                        "TrainingJobStatus": ["Completed"],
                        "TrainingJobName": events.Match.prefix(TRAINING_JOB_PREFIX),
                    },
                ),
            ),
        }
        if settings.demo:
            self.rules["generate-schedule"] = self._rule(
                "GenerateSchedule",
                "generate",
                description="Appends the synthetic demo fleet's new days to raw/ daily.",
                schedule=events.Schedule.expression(settings.generate_schedule),
            )
        if "pull_cloudwatch" in self.functions:
            self.rules["cloudwatch-schedule"] = self._rule(
                "CloudWatchSchedule",
                "pull_cloudwatch",
                description="Pulls the tagged EC2 instances' CloudWatch metrics into raw/uploads/ (starts the ETL).",
                schedule=events.Schedule.expression(settings.cloudwatch_schedule),
            )

    def _enabled(self, name: str) -> bool:
        """Whether a function is deployed: the demo's generator only with the demo switch, the CloudWatch puller
        only with a tag filter, the others always."""
        if name in DEMO_FUNCTIONS:
            return self._settings.demo
        return name not in OPTIONAL_FUNCTIONS or bool(self._settings.cloudwatch_tag_filter)

    def _function_environment(self, name: str) -> dict[str, str]:
        """What one function reads beyond :meth:`environment` (the puller's tags and days)."""
        if name != "pull_cloudwatch":
            return {}
        settings = self._settings
        return {
            "CF_CLOUDWATCH_TAGS": settings.cloudwatch_tag_filter,
            "CF_CLOUDWATCH_DAYS": str(settings.cloudwatch_days),
        }

    def environment(self, name: str) -> dict[str, str]:
        """The function's environment: Powertools, the lake, and the settings file's ``CF_*`` variables (those
        off their defaults: ``capacity_forecaster.settings.settings_environment``)."""
        return {
            "POWERTOOLS_SERVICE_NAME": f"{PROJECT}-{name}",
            "POWERTOOLS_METRICS_NAMESPACE": POWERTOOLS_NAMESPACE,
            "CF_LAKE": self._lake.uri,
            "CF_S3_SSE": "aws:kms",
            "CF_S3_KMS_KEY_ID": self._lake.key.key_arn,
            **settings_environment(self._settings.domain_settings),
        }

    def _function(self, name: str) -> lambda_.DockerImageFunction:
        title = _title(name)
        settings = self._settings
        fn = lambda_.DockerImageFunction(
            self,
            f"{title}Function",
            description=f"Capacity Forecaster {name} stage ({HANDLER_COMMANDS[name]}).",
            code=lambda_.DockerImageCode.from_image_asset(
                self.code_directory,
                file=LAMBDA_DOCKERFILE,
                cmd=[HANDLER_COMMANDS[name]],
                platform=ecr_assets.Platform.LINUX_AMD64,
            ),
            architecture=lambda_.Architecture.X86_64,
            memory_size=settings.lambda_memory_mb,
            ephemeral_storage_size=cdk.Size.mebibytes(EPHEMERAL_STORAGE_MB.get(name, 512)),
            timeout=cdk.Duration.seconds(settings.lambda_timeout_seconds),
            environment={**self.environment(name), **self._function_environment(name)},
            tracing=lambda_.Tracing.ACTIVE,
            on_failure=destinations.SqsDestination(self.dead_letters),
            retry_attempts=LAMBDA_RETRY_ATTEMPTS,
            max_event_age=cdk.Duration.hours(LAMBDA_MAX_EVENT_AGE_HOURS),
            log_group=logs.LogGroup(
                self,
                f"{title}Logs",
                retention=RETENTION[settings.log_retention_days],
                removal_policy=cdk.RemovalPolicy.DESTROY,
            ),
        )
        access = function_access(name)
        self._lake.grant_access(fn, access)
        account_wide = sorted(set(access.actions) & ACCOUNT_WIDE_ACTIONS)
        if account_wide:
            fn.add_to_role_policy(iam.PolicyStatement(actions=account_wide, resources=["*"]))
        self._acknowledge(fn, access)
        return fn

    def _acknowledge(self, fn: lambda_.DockerImageFunction, access: StageAccess) -> None:
        """cdk-nag findings on the function's role that are by design, each with its reason."""
        assert fn.role is not None
        stack = cdk.Stack.of(self)
        bucket = self._lake.bucket.node.default_child
        assert isinstance(bucket, cdk.CfnElement)
        bucket_id = stack.resolve(bucket.logical_id)
        reasons = dict(LAMBDA_NAG_REASONS)
        for prefix in sorted({*access.read, *access.write, *access.delete}):
            reasons[f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{prefix.rstrip('/')}/*]"] = (
                f"Objects under the lake prefix {prefix.rstrip('/')}/ that this stage reads or writes: "
                "the narrowest scope for a stage writing one object per partition."
            )
        account_wide = sorted(set(access.actions) & ACCOUNT_WIDE_ACTIONS)
        if account_wide:
            reasons["AwsSolutions-IAM5[Resource::*]"] += (
                f" {', '.join(account_wide)} support no resource-level permissions either; they only read EC2 "
                "instance descriptions and CloudWatch metrics of the account."
            )
        for rule_id, reason in reasons.items():
            cdk.Validations.of(fn.role).acknowledge(cdk.Acknowledgment(id=rule_id, reason=reason))

    def _errors_alarm(self, name: str) -> cloudwatch.Alarm:
        return cloudwatch.Alarm(
            self,
            f"{_title(name)}Errors",
            alarm_description=f"The {name} Lambda failed (see its logs; the event is retried, then dead-lettered).",
            metric=self.functions[name].metric_errors(
                period=cdk.Duration.minutes(ALARM_PERIOD_MINUTES), statistic="Sum"
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def _rule(
        self,
        construct_id: str,
        function: str,
        *,
        description: str,
        schedule: events.Schedule | None = None,
        event_pattern: events.EventPattern | None = None,
    ) -> events.Rule:
        return events.Rule(
            self,
            construct_id,
            description=description,
            schedule=schedule,
            event_pattern=event_pattern,
            targets=[]
            if self.engine == "sagemaker" and function in LAUNCHED_FUNCTIONS
            else [
                targets.LambdaFunction(
                    self.functions[function],
                    retry_attempts=LAMBDA_RETRY_ATTEMPTS,
                    max_event_age=cdk.Duration.hours(LAMBDA_MAX_EVENT_AGE_HOURS),
                    dead_letter_queue=self.dead_letters,
                )
            ],
        )


def _title(name: str) -> str:
    """A function's name in its construct ids: ``pull_cloudwatch`` -> ``PullCloudwatch``."""
    return "".join(word.capitalize() for word in name.split("_"))


RETENTION: dict[int, logs.RetentionDays] = dict(
    zip(
        LOG_RETENTION_DAYS,
        [
            *(logs.RetentionDays[n] for n in ("ONE_DAY", "THREE_DAYS", "FIVE_DAYS", "ONE_WEEK", "TWO_WEEKS")),
            *(logs.RetentionDays[n] for n in ("ONE_MONTH", "TWO_MONTHS", "THREE_MONTHS", "FOUR_MONTHS")),
            *(logs.RetentionDays[n] for n in ("FIVE_MONTHS", "SIX_MONTHS", "ONE_YEAR", "THIRTEEN_MONTHS")),
            *(logs.RetentionDays[n] for n in ("EIGHTEEN_MONTHS", "TWO_YEARS", "THREE_YEARS", "FIVE_YEARS")),
            logs.RetentionDays.TEN_YEARS,
        ],
        strict=True,
    )
)
"""Days (as StackSettings.log_retention_days accepts them) -> CloudWatch Logs retention."""
