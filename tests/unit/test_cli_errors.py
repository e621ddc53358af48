"""Hostile command lines: every one is refused with exit status 2 and one ``error:`` line, never a traceback,
and nothing is logged as an error beside it (the user is told once)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from capacity_forecaster.cli import main
from capacity_forecaster.settings import MAX_CONFIG_BYTES

Case = Callable[[Path], list[str]]


def _file(tmp: Path, name: str, data: str | bytes) -> str:
    path = tmp / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return str(path)


def _sparse(tmp: Path, size: int) -> str:
    """A file of ``size`` zero bytes that takes no disk (``/dev/zero`` stands for it, without the hang)."""
    path = tmp / "huge.yaml"
    with path.open("wb") as fh:
        fh.truncate(size)
    return str(path)


def _config(text: str | bytes, *rest: str, command: str = "etl") -> Case:
    return lambda tmp: [command, "--lake", str(tmp / "lake"), "--config", _file(tmp, "cf.yaml", text), *rest]


CASES: dict[str, tuple[Case, str]] = {
    # from the issue
    "lake is a file": (lambda tmp: ["etl", "--lake", "/etc/passwd"], "lake /etc/passwd is a file, not a folder"),
    "lake inside a file": (lambda tmp: ["etl", "--lake", "/etc/passwd/lake"], "/etc/passwd is a file, not a folder"),
    "lake under /proc": (lambda tmp: ["etl", "--lake", "/proc/1/x"], "lake /proc/1/x cannot be created"),
    "config is a folder": (lambda tmp: ["etl", "--config", str(tmp)], "is a folder, not a YAML file"),
    "binary config": (_config(bytes(range(256)) * 4), "is not UTF-8 text"),
    "impossible date": (_config("fleet: {end_date: 2026-02-30}\n"), "fleet.end_date='2026-02-30' is not a valid date"),
    "bool as a horizon": (_config("horizon_days: true\n"), "horizon_days=True is not a valid int"),
    "fraction as a whole number": (_config("fleet: {servers: 2.5}\n"), "fleet.servers=2.5 is not a valid int"),
    "alias onto another metric": (_config("ingest: {metric_aliases: {cpu: mem}}\n"), "'cpu' is itself a metric"),
    "built-in alias moved": (_config("ingest: {metric_aliases: {memory: cpu}}\n"), "'memory' is already a name of mem"),
    # more of the same kind
    "empty mapping of the wrong type": (_config("fleet: []\n"), "setting 'fleet' must be a mapping"),
    "scalar config": (_config("42\n"), "must hold a mapping of settings, not int"),
    "mixed key types": (_config("fleet: {1: 2, a: 3}\n"), "unknown setting 'fleet.1'"),
    "too deep": (_config("fleet: " + "[" * 3000 + "]" * 3000 + "\n"), "nests its values too deeply"),
    "python tag": (_config("horizon_days: !!python/object:os.system x\n"), "is not valid YAML at line 1"),
    "norway": (_config("fleet: {country: NO}\n"), "quote it"),
    "infinite ratio": (_config("risk: {overprovisioned_ratio: .inf}\n"), "is not a valid float (a finite number)"),
    "huge seed": (_config("training: {seed: 1.0e+400}\n"), "training.seed=inf is not a valid int"),
    "huge horizon": (lambda tmp: ["train", "--horizon", "9" * 40], "must be between 1 and 730"),
    "oversized config": (lambda tmp: ["etl", "--config", _sparse(tmp, MAX_CONFIG_BYTES + 1)], "is larger than 4 MiB"),
    "missing config": (lambda tmp: ["etl", "--config", str(tmp / "nö-such-fïle.yaml")], "not found"),
    "non-ASCII lake that is a file": (
        lambda tmp: ["etl", "--lake", _file(tmp, "läke-データ", "x")],
        "is a file, not a folder",
    ),
    "negative servers": (lambda tmp: ["generate", "--servers", "-5"], "argument --servers: -5 must be 1 or more"),
    "bad date flag": (lambda tmp: ["train", "--run-date", "2026-13-01"], "is not a date in YYYY-MM-DD form"),
    "unknown format": (lambda tmp: ["risk", "--format", "xml"], "invalid choice: 'xml'"),
    "negative wait": (lambda tmp: ["etl", "--wait", "-1"], "argument --wait: -1 must be between 0 and 86400 seconds"),
    "wait not a number": (lambda tmp: ["risk", "--wait", "soon"], "argument --wait: 'soon' is not a number of seconds"),
    "wait without a lease": (lambda tmp: ["query", "SELECT 1", "--wait"], "unrecognized arguments: --wait"),
    "unknown flag": (lambda tmp: ["etl", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    "unknown command": (lambda tmp: ["explode"], "invalid choice: 'explode'"),
    "missing upload": (lambda tmp: ["ingest", "--lake", str(tmp / "lake"), str(tmp / "gone.csv")], "gone.csv"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_invocations_are_one_line_errors(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    build, message = CASES[name]
    argv = build(tmp_path)
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse leaves by SystemExit
            code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) > len("error: "), err
    assert message in lines[0]
    assert "Traceback" not in err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "the error was logged as well as printed"


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (["etl", "--lake", "s3://cf-lake/x"], "error: AWS credentials cannot be used (PartialCredentialsError): "),
        (
            ["pull-cloudwatch", "--tag", "team=a", "--days", "1"],
            "error: creating the EC2 and CloudWatch clients: AWS credentials could not be loaded: ",
        ),
    ],
)
def test_partial_credentials_are_one_line(
    argv: list[str], start: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    credentials = _file(tmp_path, "credentials", "[default]\naws_access_key_id = AKIA1\n")  # no secret
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", credentials)
    monkeypatch.setenv("AWS_CONFIG_FILE", _file(tmp_path, "config", ""))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("CF_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # never reached: the credentials fail first
    monkeypatch.chdir(tmp_path)  # pull-cloudwatch's local lake is ./lake
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(start), err
    assert "aws_secret_access_key" in err


def test_a_lake_folder_blocked_by_a_file_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "state").write_text("not a folder")  # the lease and the run state go under state/
    assert main(["etl", "--lake", str(lake)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: lake {lake}: cannot write state/"), err


def test_doctor_tells_each_failure_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--lake", "/etc/passwd"]) == 2
    captured = capsys.readouterr()
    reason = "lake /etc/passwd is a file, not a folder"
    assert captured.out == f"[FAIL] lake folder: {reason}: choose a folder for --lake\n"
    assert captured.err == "error: 1 of 1 lake checks failed (lake folder): see the [FAIL] lines\n"
