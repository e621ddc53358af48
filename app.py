#!/usr/bin/env python3
"""Build the Capacity Forecaster CDK app: cdk.json's context, the stack, and cdk-nag on every synth.

``python app.py`` does not read cdk.json by itself (only the CDK CLI does), so the context is loaded here as
the app's defaults; the CLI's own context (``cdk synth -c key=value``) still takes precedence.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.names import STACK_DESCRIPTION, STACK_ID, TAGS
from infra.settings import StackSettings
from infra.stack import CapacityForecasterStack

ROOT = Path(__file__).resolve().parent
CDK_JSON = ROOT / "cdk.json"


def load_cdk_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The ``context`` object of cdk.json: feature flags and the project's settings."""
    context = json.loads(path.read_text(encoding="utf-8")).get("context", {})
    if not isinstance(context, dict):
        raise ValueError(f"{path}: 'context' must be an object")
    return context


def build_app(
    *, context: Mapping[str, Any] | None = None, outdir: str | None = None
) -> tuple[cdk.App, CapacityForecasterStack]:
    """The app with its one stack, cdk-nag's AwsSolutions pack registered as a validation plugin."""
    app = cdk.App(context=dict(load_cdk_context() if context is None else context), outdir=outdir)
    settings = StackSettings.from_node(app.node)
    stack = CapacityForecasterStack(app, STACK_ID, settings=settings, description=STACK_DESCRIPTION, tags=dict(TAGS))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
