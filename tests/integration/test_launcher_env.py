"""The launchers' shared environment parsing (``capacity_forecaster.launcher_env``), through both real handlers.

Each bad environment is given to ``lambdas/launch_training`` and ``lambdas/launch_processing`` with a Scheduled
Event (which both accept) and the SageMaker endpoint on a closed port: the handler must answer ``rejected`` with
the one line the module words, before any AWS call. The module's own edge cases (padding, signs, no upper bound)
are checked directly. Both launchers import with only their folder, the layer's modules and the runtime's boto3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from capacity_forecaster import launcher_env
from capacity_forecaster.errors import ConfigError
from tests.lambda_modules import LambdaContext, load_handler

ROOT = Path(__file__).resolve().parents[2]
EVENT = json.loads((ROOT / "tests" / "events" / "scheduled_event.json").read_text())
LAKE = "s3://capacity-forecaster-lake-123456789012-us-east-1"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
CLOSED = "http://127.0.0.1:9"
"""Nothing listens there: an AWS call would raise instead of answering."""
COMMON = {
    "AWS_ENDPOINT_URL_SAGEMAKER": CLOSED,
    "CF_LAKE": LAKE,
    "CF_S3_KMS_KEY_ID": KEY,
    "POWERTOOLS_METRICS_NAMESPACE": "CapacityForecaster",
    "POWERTOOLS_TRACE_DISABLED": "true",
}
LAUNCHERS: dict[str, dict[str, str]] = {
    "launch_training": {
        **COMMON,
        "POWERTOOLS_SERVICE_NAME": "capacity-forecaster-launch-training",
        "CF_TRAINING_IMAGE_URI": "capacity-forecaster-training:test",
        "CF_TRAINING_ROLE_ARN": "arn:aws:iam::123456789012:role/training",
        "CF_TRAINING_VOLUME_GB": "30",
        "CF_TRAINING_HYPERPARAMETERS": json.dumps({"horizon_days": "120"}),
    },
    "launch_processing": {
        **COMMON,
        "POWERTOOLS_SERVICE_NAME": "capacity-forecaster-launch-processing",
        "CF_PROCESSING_IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/cdk-assets:data",
        "CF_PROCESSING_ETL_ROLE_ARN": "arn:aws:iam::123456789012:role/etl-job",
        "CF_PROCESSING_OUTPUTS_ROLE_ARN": "arn:aws:iam::123456789012:role/outputs-job",
        "CF_PROCESSING_VOLUME_GB": "30",
        "CF_PROCESSING_ENVIRONMENT": json.dumps({"CF_SCALE_ENGINE": "sagemaker"}),
    },
}
PREFIX = {"launch_training": "CF_TRAINING", "launch_processing": "CF_PROCESSING"}
JSON_VARIABLE = {"launch_training": "CF_TRAINING_HYPERPARAMETERS", "launch_processing": "CF_PROCESSING_ENVIRONMENT"}


def _rejected(monkeypatch: pytest.MonkeyPatch, launcher: str, changes: dict[str, str | None]) -> str:
    for name, value in {**LAUNCHERS[launcher], **changes}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    result: dict[str, Any] = load_handler(launcher).handler(EVENT, LambdaContext(f"capacity-forecaster-{launcher}"))
    assert result["status"] == "rejected", result
    reason = str(result["reason"])
    assert "\n" not in reason and len(reason) <= 300
    return reason


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_every_missing_variable_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch, launcher: str) -> None:
    image = f"{PREFIX[launcher]}_IMAGE_URI"
    reason = _rejected(monkeypatch, launcher, {image: None, "CF_S3_KMS_KEY_ID": ""})
    assert reason == f"the launcher needs {image}, CF_S3_KMS_KEY_ID in its environment"


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
@pytest.mark.parametrize(
    ("value", "span"),
    [
        ("thirty", "between 1 and 16384"),  # not a number
        ("-5", "between 1 and 16384"),  # a sign is no digit
        ("2.5", "between 1 and 16384"),
        ("0", "between 1 and 16384"),  # below
        ("16385", "between 1 and 16384"),  # above
        ("", "between 1 and 16384"),  # set but empty
    ],
)
def test_a_bad_or_out_of_range_integer_is_refused(
    monkeypatch: pytest.MonkeyPatch, launcher: str, value: str, span: str
) -> None:
    variable = f"{PREFIX[launcher]}_VOLUME_GB"
    reason = _rejected(monkeypatch, launcher, {variable: value})
    assert reason == f"{variable}={value!r} must be an integer {span}"


def test_an_integer_without_upper_bound_says_at_least(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = _rejected(monkeypatch, "launch_training", {"CF_TRAINING_INSTANCE_COUNT": "0"})
    assert reason == "CF_TRAINING_INSTANCE_COUNT='0' must be an integer of at least 1"


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"text"', '{"a": 1}', '{"a": null}', "null"])
def test_bad_json_is_refused_as_not_an_object_of_strings(
    monkeypatch: pytest.MonkeyPatch, launcher: str, text: str
) -> None:
    variable = JSON_VARIABLE[launcher]
    assert _rejected(monkeypatch, launcher, {variable: text}) == f"{variable} must be a JSON object of strings"


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
@pytest.mark.parametrize(
    ("lake", "reason"),
    [
        (f"{LAKE}/lake", f"CF_LAKE must be the lake bucket's root ({LAKE}), not '{LAKE}/lake'"),
        ("/tmp/lake", "CF_LAKE: "),
    ],
)
def test_the_lake_must_be_a_bucket_root(monkeypatch: pytest.MonkeyPatch, launcher: str, lake: str, reason: str) -> None:
    assert _rejected(monkeypatch, launcher, {"CF_LAKE": lake}).startswith(reason)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_an_instance_type_must_be_ml(monkeypatch: pytest.MonkeyPatch, launcher: str) -> None:
    variable = f"{PREFIX[launcher]}_INSTANCE_TYPE"
    reason = _rejected(monkeypatch, launcher, {variable: "m5.xlarge"})
    assert reason == f"{variable}='m5.xlarge' is not an ml.* instance type"


def test_integers_are_read_padded_and_unset_ones_are_left_out() -> None:
    limits = {"a": ("A", 1, 10), "b": ("B", 60, None), "c": ("C", 1, 2)}
    assert launcher_env.bounded_ints({"A": " 10 ", "B": "999999"}, limits) == {"a": 10, "b": 999999}
    assert launcher_env.bounded_int({}, "A", 1, 10) is None
    with pytest.raises(ConfigError, match=r"^B='59' must be an integer of at least 60$"):
        launcher_env.bounded_int({"B": "59"}, "B", 60, None)


def test_required_variables_come_back_by_field() -> None:
    assert launcher_env.require({"X": "1", "Y": "2"}, {"x": "X", "y": "Y"}) == {"x": "1", "y": "2"}
    with pytest.raises(ConfigError, match=r"^the launcher needs Y in its environment$"):
        launcher_env.require({"X": "1", "Y": ""}, {"x": "X", "y": "Y"})


def test_a_string_object_keeps_its_values_and_a_quoted_reason_stays_one_line() -> None:
    assert launcher_env.string_object("V", '{"a": "1", "b": ""}') == {"a": "1", "b": ""}
    assert launcher_env.lake_bucket("s3://bucket") == "bucket"
    assert launcher_env.one_line("a\n  b\tc") == "a b c"
    assert len(launcher_env.one_line("x" * 400)) == 300 and launcher_env.one_line("x" * 400).endswith("...")
    assert launcher_env.shown("y" * 100) == repr("y" * 100)[:57] + "..."


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_each_launcher_imports_no_pandas_and_only_the_light_domain_modules(tmp_path: Path, launcher: str) -> None:
    """Imported the way Lambda does: the function folder and the layer's python/ folder, boto3 from the runtime
    (and Powertools, AWS's layer there, from the same site-packages)."""
    from infra.names import LAYER_MODULES

    layer = tmp_path / "layer" / "python" / "capacity_forecaster"
    for module in LAYER_MODULES:
        target = layer / module
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / "layers" / "core" / "python" / "capacity_forecaster" / module).read_bytes())
    import boto3

    runtime = str(Path(boto3.__file__).parents[1])  # site-packages: boto3 and botocore, as in the runtime
    script = (
        "import sys, json\n"
        "import handler\n"
        "heavy = sorted(m for m in ('pandas', 'numpy', 'pyarrow', 'duckdb', 'yaml') if m in sys.modules)\n"
        "ours = sorted(m for m in sys.modules if m.startswith('capacity_forecaster'))\n"
        "print(json.dumps({'heavy': heavy, 'ours': ours,"
        " 'from': sys.modules['capacity_forecaster'].__file__}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "lambdas" / launcher), str(tmp_path / "layer" / "python")])
    out = subprocess.run(
        [sys.executable, "-S", "-c", f"import sys; sys.path.append({runtime!r})\n{script}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    found = json.loads(out.stdout)
    assert found["heavy"] == []
    assert found["from"].startswith(str(tmp_path))
    dotted = [
        m.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for m in LAYER_MODULES if m.endswith("py")
    ]
    assert "capacity_forecaster.launcher_env" in found["ours"]
    assert set(found["ours"]) <= {"capacity_forecaster", *(f"capacity_forecaster.{m}" for m in dotted)}
