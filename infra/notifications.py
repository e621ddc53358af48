"""Notifications: one KMS-encrypted SNS topic for new critical risks and for failed runs.

Publishers: the risk Lambda (a short summary of the critical risks that are new since the previous run),
an EventBridge rule on failed training jobs of this stack, and every alarm of the pipeline (a Lambda error,
an event in the dead-letter queue). The topic policy allows EventBridge (CDK's statement for the rule) and
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

from infra.names import ALERTS_KEY_ALIAS, NOTIFY_TOPIC_ENV, TRAINING_JOB_PREFIX
from infra.pipeline import SAGEMAKER_STATE_CHANGE, Pipeline
from infra.settings import StackSettings
from infra.training import Training

PUBLISHING_SERVICES = ("events.amazonaws.com", "cloudwatch.amazonaws.com")
"""Services that publish to the encrypted topic and so need its key."""


class Notifications(Construct):
    """The alerts topic, its key, the failed-training rule, and the alarm actions."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: StackSettings,
        pipeline: Pipeline,
        training: Training,
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

        action = cw_actions.SnsAction(self.topic)
        alarms: list[cloudwatch.Alarm] = [
            *pipeline.alarms.values(),
            pipeline.dead_letters_alarm,
            training.launcher_alarm,
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

        risk = pipeline.functions["risk"]
        risk.add_environment(NOTIFY_TOPIC_ENV, self.topic.topic_arn)
        self.topic.grant_publish(risk)
