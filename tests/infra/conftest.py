"""Infrastructure test fixtures: the app is synthesized once per session, with cdk.json's context.

Validation failures do not abort the synth here (``failSynthOnValidationErrors: false``), so test_nag.py can
read cdk-nag's findings from ``validation-report.json`` in the assembly directory and show them all.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# jsii prints an end-of-life banner for Node 20 at every start; it must be silenced before aws_cdk loads.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # app.py and infra/ live at the repository root, which is not installed
    sys.path.insert(0, str(ROOT))

import aws_cdk as cdk  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402

from app import build_app, load_cdk_context  # noqa: E402
from infra.stack import CapacityForecasterStack  # noqa: E402
from tests.infra.options import OPTIONS, SAGEMAKER_OPTIONS, OptionsSynth  # noqa: E402

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that need the synthesized app are ``slow`` and share one xdist worker (``--dist loadgroup``),
    so the app is synthesized once per run, not once per worker; those of the options synthesis share another."""
    for item in items:
        if HERE in item.path.parents and "synth" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group("cdk-synth"))
        # the options synthesis (every optional part on) runs on its own worker, beside the default one
        elif HERE in item.path.parents and "options_synth" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group("cdk-synth-options"))
        elif HERE in item.path.parents and "sagemaker_synth" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group("cdk-synth-sagemaker"))


@dataclass(frozen=True)
class Synth:
    """The one synthesis of the session."""

    app: cdk.App
    stack: CapacityForecasterStack
    assembly_dir: Path
    template: Template

    @property
    def template_json(self) -> dict[str, Any]:
        return dict(self.template.to_json())


@pytest.fixture(scope="session")
def cdk_context() -> dict[str, Any]:
    """cdk.json's context, with validation findings reported instead of raised."""
    return {**load_cdk_context(), "@aws-cdk/core:failSynthOnValidationErrors": False}


@pytest.fixture(scope="session")
def synth(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Synth:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(context=cdk_context, outdir=str(outdir))
    assembly = app.synth()
    # Template.from_stack reuses the assembly just synthesized (Stage.synth caches it): one synth per session.
    return Synth(app=app, stack=stack, assembly_dir=Path(assembly.directory), template=Template.from_stack(stack))


@pytest.fixture(scope="session")
def cdk_app(synth: Synth) -> cdk.App:
    return synth.app


@pytest.fixture(scope="session")
def template(synth: Synth) -> Template:
    return synth.template


@pytest.fixture(scope="session")
def template_json(synth: Synth) -> dict[str, Any]:
    return synth.template_json


@pytest.fixture(scope="session")
def assembly_dir(synth: Synth) -> Path:
    return synth.assembly_dir


@pytest.fixture(scope="session")
def stack(synth: Synth) -> CapacityForecasterStack:
    return synth.stack


@pytest.fixture(scope="session")
def validation_report(assembly_dir: Path) -> dict[str, Any]:
    """The validation report of the synth (cdk-nag's findings and CloudFormation's own rules)."""
    path = assembly_dir / "validation-report.json"
    assert path.exists(), f"no validation report in {assembly_dir}: did the validation plugins run?"
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return report


@pytest.fixture(scope="session")
def options_synth(tmp_path_factory: pytest.TempPathFactory) -> OptionsSynth:
    context = {
        **load_cdk_context(),
        "@aws-cdk/core:failSynthOnValidationErrors": False,
        **{f"capacity-forecaster:{k}": v for k, v in OPTIONS.items()},
    }
    app, stack = build_app(context=context, outdir=str(tmp_path_factory.mktemp("cdk.out.options")))
    assembly = app.synth()
    return OptionsSynth(stack, Path(assembly.directory), dict(Template.from_stack(stack).to_json()))


@pytest.fixture(scope="session")
def sagemaker_synth(tmp_path_factory: pytest.TempPathFactory) -> OptionsSynth:
    """The stack whose settings file says ``scale.engine: sagemaker`` (infra.processing)."""
    context = {
        **load_cdk_context(),
        "@aws-cdk/core:failSynthOnValidationErrors": False,
        **{f"capacity-forecaster:{k}": v for k, v in SAGEMAKER_OPTIONS.items()},
    }
    app, stack = build_app(context=context, outdir=str(tmp_path_factory.mktemp("cdk.out.sagemaker")))
    assembly = app.synth()
    return OptionsSynth(stack, Path(assembly.directory), dict(Template.from_stack(stack).to_json()))
