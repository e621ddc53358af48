"""The options synthesis: every optional part on and the settings off their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.stack import CapacityForecasterStack

SETTINGS_FILE = "docs/settings.example.yaml"
"""The example settings file (relative to the project root, as a user would give it)."""
QUICKSIGHT_PRINCIPAL = "arn:aws:quicksight:us-east-1:123456789012:user/default/planner"
OPTIONS: dict[str, Any] = {
    "quicksightPrincipalArn": QUICKSIGHT_PRINCIPAL,
    "alertEmail": "capacity@example.com",
    "demo": "true",  # the demo generator, its schedule and grants
    "generateSchedule": "cron(30 0 * * ? *)",
    "etlSchedule": "rate(12 hours)",
    "trainingSchedule": "cron(0 6 ? * SUN *)",
    "trainingInstanceType": "ml.c5.2xlarge",
    "trainingSpot": "false",
    "trainingVolumeGb": "60",  # values given with `cdk deploy -c key=value` arrive as strings
    "settingsFile": SETTINGS_FILE,
    "cloudwatchTagFilter": "Team=web,Env=prod",
    "cloudwatchSchedule": "cron(15 2 * * ? *)",
    "cloudwatchDays": "3",
}
"""A second synthesis with every optional part on and the settings off their defaults (tests of the optional
parts and of the settings reaching the template share it: group ``cdk-synth-options``)."""

SAGEMAKER_OPTIONS: dict[str, Any] = {"settingsFile": "tests/infra/settings.sagemaker.yaml"}
"""A synthesis whose settings file chooses the SageMaker Processing engine (``scale.engine: sagemaker``)."""


@dataclass(frozen=True)
class OptionsSynth:
    stack: CapacityForecasterStack
    assembly_dir: Path
    template_json: dict[str, Any]
