"""Notifications: one KMS-encrypted SNS topic for new critical risks and for failed runs.

Publishers: the risk Lambda, or with ``scale.engine: sagemaker`` the ``outputs`` processing job (the run summary:
counts, the critical risks that are new since the previous run, the report's key), an EventBridge rule on failed
training jobs of this stack and, with the sagemaker engine, one on its failed processing jobs, and every alarm of
the pipeline (a Lambda error, the launchers' included, an event in the dead-letter queue). Who sends the run
summary follows ``capacity_forecaster.access``: every function and job role whose stages hold ``NOTIFY_ACTIONS``
may publish to the topic and is told its ARN. The topic policy allows EventBridge (CDK's statement for the rule) and
CloudWatch for this stack's alarms (``aws:SourceAccount`` and ``aws:SourceArn``); the key, both services of this
account. Subscribe an e-mail address with the ``alertEmail`` context value, or any
other endpoint to the topic named in the stack output.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from capacity_forecaster.access import NOTIFY_ACTIONS, StageAccess, function_access
from infra.names import ALERTS_KEY_ALIAS, NOTIFY_TOPIC_ENV, TRAINING_JOB_PREFIX
from infra.pipeline import SAGEMAKER_STATE_CHANGE, Pipeline
from infra.pipeline import function_access as pipeline_access
from infra.processing import JOB_STAGES, PROCESSING_JOB_PREFIX, Processing
from infra.settings import StackSettings
from infra.training import Training

PUBLISHING_SERVICES = ("events.amazonaws.com", "cloudwatch.amazonaws.com")
"""Services that publish to the encrypted topic and so need its key."""
PROCESSING_STATE_CHANGE = ("aws.sagemaker", "SageMaker Processing Job State Change")


def notifies(access: StageAccess) -> bool:
    """Whether stages with this access send the run summary (``capacity_forecaster.access.NOTIFY_ACTIONS``)."""
    return set(NOTIFY_ACTIONS) <= set(access.actions)


class Notifications(Construct):
    """The alerts topic, its key, the failed-job rules, the alarm actions and the run summary's publishers."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: StackSettings,
        pipeline: Pipeline,
        training: Training,
        processing: Processing | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            alias=ALERTS_KEY_ALIAS,
            description="Encrypts the Capacity Forecaster alerts topic.",
            enable_key_rotation=True,
            removal_policy=settings.cdk_removal_policy,
        )
        # EventBridge and CloudWatch alarms publish to the encrypted topic with this key, for this account only.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowAlertPublishersOfThisAccount",
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                principals=[iam.ServicePrincipal(s) for s in PUBLISHING_SERVICES],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}},
            )
        )
        self.topic = sns.Topic(
            self,
            "Topic",
            display_name="Capacity Forecaster alerts",
            master_key=self.key,
            enforce_ssl=True,
        )
        if settings.alert_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(settings.alert_email))

        self.training_failed = events.Rule(
            self,
            "TrainingFailed",
            description="Notifies the alerts topic when a training job of this stack fails.",
            event_pattern=events.EventPattern(
                source=[SAGEMAKER_STATE_CHANGE[0]],
                detail_type=[SAGEMAKER_STATE_CHANGE[1]],
                detail={
                    "TrainingJobStatus": ["Failed"],
                    "TrainingJobName": events.Match.prefix(TRAINING_JOB_PREFIX),
                },
            ),
            targets=[
                targets.SnsTopic(
                    self.topic,
                    message=events.RuleTargetInput.from_text(
                        f"Capacity Forecaster training job {events.EventField.from_path('$.detail.TrainingJobName')} "
                        f"failed: {events.EventField.from_path('$.detail.FailureReason')}. The forecasts and the "
                        "risk register keep the previous run until the next job completes."
                    ),
                    dead_letter_queue=pipeline.dead_letters,
                )
            ],
        )

        self.processing_failed: events.Rule | None = None
        if processing is not None:
            self.processing_failed = self._processing_failed(pipeline)

        action = cw_actions.SnsAction(self.topic)
        alarms: list[cloudwatch.Alarm] = [
            *pipeline.alarms.values(),
            pipeline.dead_letters_alarm,
            training.launcher_alarm,
            *([processing.launcher_alarm] if processing is not None else []),
        ]
        for alarm in alarms:
            alarm.add_alarm_action(action)
        self.alarms = alarms
        # The topic's policy (created for the EventBridge rule above) replaces SNS's default one, so the alarms
        # need their own statement: CloudWatch may publish for this stack's alarms in this account only.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowAlarmsOfThisStack",
                actions=["sns:Publish"],
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID},
                    "ArnLike": {"aws:SourceArn": [alarm.alarm_arn for alarm in alarms]},
                },
            )
        )

        for name, fn in pipeline.functions.items():
            if notifies(pipeline_access(name)):
                fn.add_environment(NOTIFY_TOPIC_ENV, self.topic.topic_arn)
                self.topic.grant_publish(fn)
        if processing is not None:
            senders = [
                role for stage, role in processing.roles.items() if notifies(function_access(*JOB_STAGES[stage]))
            ]
            for role in senders:
                self.topic.grant_publish(role)
                cdk.Validations.of(role).acknowledge(
                    cdk.Acknowledgment(
                        id="AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",
                        reason="Publishing the run summary to the encrypted alerts topic needs data keys of the "
                        "topic's own key, named as the resource.",
                    )
                )
            if senders:  # one environment for every job: only the roles above may publish
                processing.add_job_environment(NOTIFY_TOPIC_ENV, self.topic.topic_arn)

    def _processing_failed(self, pipeline: Pipeline) -> events.Rule:
        """The rule that tells the topic when a processing job of this stack fails, in a readable line."""
        name = events.EventField.from_path("$.detail.ProcessingJobName")
        return events.Rule(
            self,
            "ProcessingFailed",
            description="Notifies the alerts topic when a processing job (scale.engine sagemaker) of this stack fails.",
            event_pattern=events.EventPattern(
                source=[PROCESSING_STATE_CHANGE[0]],
                detail_type=[PROCESSING_STATE_CHANGE[1]],
                detail={
                    "ProcessingJobStatus": ["Failed"],
                    "ProcessingJobName": events.Match.prefix(PROCESSING_JOB_PREFIX),
                },
            ),
            targets=[
                targets.SnsTopic(
                    self.topic,
                    message=events.RuleTargetInput.from_text(
                        f"Capacity Forecaster processing job {name} failed: "
                        f"{events.EventField.from_path('$.detail.FailureReason')}. The job's own one-line reason is "
                        f"its exit message (aws sagemaker describe-processing-job --processing-job-name {name}). "
                        "The lake's tables keep what the last completed job wrote."
                    ),
                    dead_letter_queue=pipeline.dead_letters,
                )
            ],
        )
