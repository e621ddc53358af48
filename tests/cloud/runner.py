"""Run one function (or training host) as the cloud would: its image's packages only, its environment, a moto
endpoint, every AWS call it makes recorded.

Each run is a ``python -S -c <bootstrap>`` subprocess whose ``PYTHONPATH`` is only the image's folders
(:func:`tests.images.image_path`), in an empty working folder, with the environment the function gets in the
synthesized template (intrinsics resolved to the moto names) plus what Lambda or SageMaker itself sets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cloud.template import ACCOUNT, REGION

BOOTSTRAP = Path(__file__).with_name("bootstrap.py")
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


@dataclass
class Run:
    """One subprocess: what it returned, what it called, what it loaded."""

    step: str
    principal: str
    """The role ARN its calls are made as."""
    returncode: int
    result: dict[str, Any] | None
    output: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    modules: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


def base_environment(endpoint: str, home: Path) -> dict[str, str]:
    """What every run gets: the moto endpoint, the region, dummy credentials, no config files, no site."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        **FAKE_CREDENTIALS,
    }


def lambda_environment(function_name: str, memory_mb: int, task_root: Path) -> dict[str, str]:
    """What the Lambda runtime sets besides the function's own variables."""
    trace = f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"
    return {
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "LAMBDA_TASK_ROOT": str(task_root),
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "_X_AMZN_TRACE_ID": trace,
    }


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def start(
    step: str,
    *,
    path: Sequence[Path],
    env: Mapping[str, str],
    spec: Mapping[str, Any],
    workdir: Path,
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start the bootstrap in a subprocess; returns the process and its full spec (file names)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cwd = workdir / "cwd"
    cwd.mkdir(exist_ok=True)
    full = {
        **spec,
        "calls": str(workdir / "calls.jsonl"),
        "result": str(workdir / "result.json"),
        "modules": str(workdir / "modules.json"),
        "source": step,
    }
    environment = {**env, "PYTHONPATH": os.pathsep.join(map(str, path))}
    process = subprocess.Popen(
        [sys.executable, "-S", "-c", BOOTSTRAP.read_text(encoding="utf-8"), json.dumps(full)],
        env=environment,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, full


def finish(
    step: str, principal: str, process: subprocess.Popen[str], spec: Mapping[str, Any], started: float, timeout: float
) -> Run:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        output += f"\n[harness] {step} ran past {timeout:.0f} s and was killed"
    result_path, modules_path = Path(spec["result"]), Path(spec["modules"])
    result = json.loads(result_path.read_text(encoding="utf-8")) if result_path.exists() else None
    modules = json.loads(modules_path.read_text(encoding="utf-8")) if modules_path.exists() else {}
    return Run(
        step=step,
        principal=principal,
        returncode=process.returncode,
        result=result,
        output=output,
        calls=read_lines(Path(spec["calls"])),
        modules=modules,
        seconds=time.perf_counter() - started,
    )


def run(
    step: str,
    *,
    principal: str,
    path: Sequence[Path],
    env: Mapping[str, str],
    spec: Mapping[str, Any],
    workdir: Path,
    timeout: float = 600,
) -> Run:
    """Run one handler or script to the end."""
    started = time.perf_counter()
    process, full = start(step, path=path, env=env, spec=spec, workdir=workdir)
    return finish(step, principal, process, full, started, timeout)


__all__ = ["ACCOUNT", "Run", "base_environment", "finish", "lambda_environment", "run", "start"]
