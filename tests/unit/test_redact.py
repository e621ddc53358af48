"""Secrets in URLs never reach a message: errors, CLI lines (stdout and stderr), log records, handler logs."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from capacity_forecaster.cli import main
from capacity_forecaster.errors import ConfigError, InputError
from capacity_forecaster.redact import install_log_redaction, redact, redact_value, redacting_formatter
from capacity_forecaster.storage.errors import S3ConnectionError
from tests.lambda_modules import LambdaContext, load_handler

KEY_ID, SECRET, PASSWORD = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCY", "hunter2@home"
SIGNATURE, TOKEN = "9f2c4e0bdeadbeef5ac0ffee", "FQoGZXIvYXdzEJr//////////wEaDM"
SECRETS = (KEY_ID, SECRET, PASSWORD, SIGNATURE, TOKEN, "s3cr3t")
HOST = "minio.internal"

URLS = {
    "access key in an endpoint": f"http://{KEY_ID}:{SECRET}@{HOST}:9000",
    "user and password": f"https://alice:{PASSWORD}@{HOST}/lake",
    "presigned URL": (
        f"https://{HOST}/bucket/raw/a.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={KEY_ID}%2F20261201%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261201T000000Z"
        f"&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}&X-Amz-Security-Token={TOKEN}"
    ),
    "token and sig": f"https://{HOST}/export.csv?token={TOKEN}&sig={SIGNATURE}&page=2",
    "no scheme": f"{KEY_ID}:{SECRET}@{HOST}:9000",
    "user only": f"ftp://{KEY_ID}@{HOST}/",
    "upper-case parameters": f"https://{HOST}/a?X-AMZ-SIGNATURE={SIGNATURE}&Password=s3cr3t",
}


def assert_clean(text: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"{leaked} in {text!r}"
    assert HOST in text or "127.0.0.1" in text, text


@pytest.mark.parametrize("url", URLS.values(), ids=URLS.keys())
def test_redact_masks_credentials_and_keeps_the_host(url: str) -> None:
    text = redact(f"lake {url!r} cannot be used")
    assert_clean(text)
    assert "***" in text
    assert redact(text) == text  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "s3://bucket/raw/uploads/a@b.csv",
        "http://minio.internal:9000/bucket/key",
        "https://host/x?page=2&X-Amz-Date=20261201",
        "a@b.example.com at 10:30, setting key: v@x",
        "",
    ],
)
def test_redact_leaves_messages_without_secrets_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_value_walks_containers() -> None:
    value = redact_value({"a": [URLS["user and password"], 3], "b": (URLS["token and sig"],), "c": None})
    assert_clean(json.dumps(value))
    assert value["a"][1] == 3 and value["c"] is None and isinstance(value["b"], tuple)


def test_errors_are_redacted_when_made_and_rendered() -> None:
    url = URLS["access key in an endpoint"]
    for err in (
        ConfigError(f"s3.endpoint_url {url!r} is not valid"),
        InputError(url),
        S3ConnectionError(hint=f"check the endpoint; endpoint {url}"),
    ):
        assert_clean(str(err))
        assert_clean(repr(err))
        assert_clean(" ".join(str(a) for a in err.args))


def _cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    monkeypatch.chdir(tmp_path)  # a lake given as a URL must not become a folder here either
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return out + err


LAKE_URLS = {k: v for k, v in URLS.items() if "://" in v}  # without a scheme it is a (strange) folder name


@pytest.mark.parametrize("url", LAKE_URLS.values(), ids=LAKE_URLS.keys())
def test_cli_lake_url_secrets_never_printed(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_clean(_cli(tmp_path, monkeypatch, capsys, ["etl", "--lake", url]))
    assert_clean(_cli(tmp_path, monkeypatch, capsys, ["ingest", "--lake", str(tmp_path / "lake"), url + ".csv"]))
    assert not list(tmp_path.glob("*:*"))


@pytest.mark.parametrize("how", ["environment", "config file"])
@pytest.mark.parametrize("url", [URLS["access key in an endpoint"], URLS["user and password"], URLS["no scheme"]])
def test_cli_endpoint_secrets_never_printed(
    url: str,
    how: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = url.replace(HOST, "127.0.0.1").replace(":9000", ":9")  # a closed port: nothing is sent anywhere
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "CF_S3_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    argv = ["--lake", "s3://cf-redact-test"]
    if how == "environment":
        monkeypatch.setenv("CF_S3_ENDPOINT_URL", endpoint)
    else:
        config = tmp_path / "cf.yaml"
        config.write_text(f"s3: {{endpoint_url: {json.dumps(endpoint)}}}\n", encoding="utf-8")
        argv += ["--config", str(config)]
    caplog.set_level(logging.DEBUG)
    for command in ("etl", "doctor", "query"):
        extra = ["SELECT 1"] if command == "query" else []
        assert_clean(_cli(tmp_path, monkeypatch, capsys, [command, *argv, *extra]))
    for record in caplog.records:
        assert not [s for s in SECRETS if s in record.getMessage()], record.getMessage()


def test_log_records_are_redacted_at_creation(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    log = logging.getLogger("capacity_forecaster.test_redact")
    with caplog.at_level(logging.INFO):
        log.info("could not reach %s", URLS["user and password"])
        try:
            raise RuntimeError(f"Could not connect to the endpoint URL: {URLS['presigned URL']}")
        except RuntimeError:
            log.exception("download failed")
    messages = [r.getMessage() for r in caplog.records]
    assert_clean(messages[0])
    assert_clean(caplog.text)
    assert "Traceback" in caplog.text


def test_powertools_lines_are_redacted_message_extras_and_exception() -> None:
    from aws_lambda_powertools import Logger

    stream = io.StringIO()
    logger = Logger(
        service="redact-test", logger_formatter=redacting_formatter(), logger_handler=logging.StreamHandler(stream)
    )
    logger.info(f"endpoint {URLS['access key in an endpoint']}", extra={"lake": URLS["token and sig"]})
    try:
        raise ValueError(URLS["presigned URL"])
    except ValueError:
        logger.exception("failed", extra={"nested": {"url": URLS["user and password"]}})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2 and "exception" in lines[1]
    assert_clean(stream.getvalue())


def test_handler_rejects_a_secret_lake_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CF_LAKE", URLS["access key in an endpoint"] + "/lake")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CapacityForecaster")
    module = load_handler("etl")
    stream = io.StringIO()
    module.logger.registered_handler.setStream(stream)
    event = json.loads((Path(__file__).parents[1] / "events" / "scheduled_event.json").read_text())
    result = module.handler(event, LambdaContext())
    assert result["status"] == "rejected"
    assert_clean(result["reason"])
    assert "event rejected" in stream.getvalue()
    assert_clean(stream.getvalue())
