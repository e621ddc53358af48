"""The Capacity Forecaster stack: composes the constructs, one per component, and nothing else."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from infra.catalog import Catalog
from infra.dashboards import Dashboards
from infra.names import (
    OUTPUT_ALERTS_TOPIC,
    OUTPUT_ATHENA_WORKGROUP,
    OUTPUT_DASHBOARD_ID,
    OUTPUT_FUNCTION_NAMES,
    OUTPUT_GLUE_DATABASE,
    OUTPUT_LAKE_BUCKET,
    OUTPUT_LAKE_KEY_ARN,
)
from infra.notifications import Notifications
from infra.pipeline import Pipeline
from infra.processing import Processing
from infra.settings import StackSettings
from infra.storage import DataLake
from infra.training import Training


class CapacityForecasterStack(cdk.Stack):
    """Data lake, Glue catalog and Athena workgroup, pipeline, training, notifications and (optional) dashboards.

    ``stack_props`` are passed to ``cdk.Stack`` (``env``, ``description``, ``tags``, ...).
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: StackSettings, **stack_props: Any) -> None:
        super().__init__(scope, construct_id, **stack_props)
        self.settings = settings

        # 1. storage: the lake bucket, its access-log bucket and the KMS key
        self.lake = DataLake(self, "DataLake", settings=settings)
        # 2. catalog: one Glue table per lake table, and the Athena workgroup
        self.catalog = Catalog(self, "Catalog", lake=self.lake, settings=settings)
        # 3. pipeline: the etl and risk Lambdas (and the demo generator), their schedules and event rules
        self.pipeline = Pipeline(self, "Pipeline", lake=self.lake, settings=settings)
        # 4. training: the SageMaker image and role, and the weekly launcher
        self.training = Training(
            self, "Training", lake=self.lake, settings=settings, dead_letters=self.pipeline.dead_letters
        )
        # 4b. with scale.engine sagemaker: the processing launcher the etl and training-completed rules target
        self.processing: Processing | None = None
        if self.pipeline.engine == "sagemaker":
            self.processing = Processing(
                self, "Processing", lake=self.lake, settings=settings, pipeline=self.pipeline, training=self.training
            )
        # 5. notifications: the alerts topic (run summaries, failed jobs, alarms)
        self.notifications = Notifications(
            self,
            "Notifications",
            settings=settings,
            pipeline=self.pipeline,
            training=self.training,
            processing=self.processing,
        )

        # 6. dashboards (optional): QuickSight data source, data sets over the views, and the dashboard
        self.dashboards: Dashboards | None = None
        if settings.quicksight_principal_arn:
            self.dashboards = Dashboards(self, "Dashboards", catalog=self.catalog, settings=settings)

        # outputs: what the CLI, the runbooks and later stacks need to find the resources
        outputs = {
            OUTPUT_LAKE_BUCKET: (self.lake.bucket_name, "Data lake bucket (lake root s3://<name>)."),
            OUTPUT_LAKE_KEY_ARN: (self.lake.key.key_arn, "KMS key encrypting the lake and query results."),
            OUTPUT_GLUE_DATABASE: (self.catalog.database_name, "Glue database of the lake tables."),
            OUTPUT_ATHENA_WORKGROUP: (self.catalog.workgroup_name, "Athena workgroup to query the lake."),
            OUTPUT_ALERTS_TOPIC: (self.notifications.topic.topic_arn, "SNS topic of new critical risks and failures."),
        }
        if self.dashboards is not None:
            outputs[OUTPUT_DASHBOARD_ID] = (self.dashboards.dashboard.dashboard_id, "QuickSight dashboard id.")
        functions = {**self.pipeline.functions, "launch_training": self.training.launcher}
        for name, output_id in OUTPUT_FUNCTION_NAMES.items():
            if name not in functions:  # the demo generator, without the demo switch
                continue
            outputs[output_id] = (functions[name].function_name, f"The {name} Lambda, to invoke by hand.")
        for output_id, (value, description) in outputs.items():
            cdk.CfnOutput(self, output_id, value=value, description=description)
