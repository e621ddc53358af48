"""The SageMaker Processing container contract for the fleet-wide stages, as functions of the contract's root.

Where a fleet outgrows Lambda (``scale.engine: sagemaker``, docs/scaling.md) the ETL and the risk outputs run as
SageMaker Processing jobs of the pipeline's image, calling the same stage functions as the Lambdas. In the
container the root is ``/opt/ml``::

    config/processingjobconfig.json   the job's request: AppSpecification.ContainerArguments (the stage and its
                                      options), Environment (CF_LAKE and the CF_* settings)
    config/resourceconfig.json        {"current_host": "algo-1", "hosts": ["algo-1"]}
    processing/output/summary/        <stage>.json: the stage's counts (SageMaker uploads it to S3 at the end)
    output/message                    one line saying why the job failed (the job's ExitMessage)

The stages read and write the lake through S3 directly, as the training job stages its parts: the ETL moves bad
uploads aside and both stages hold a lease in the lake, which Processing's copy-in/copy-out inputs cannot do.

The image is the data Lambdas' (``lambdas/Dockerfile``: the stages' dependencies and this package), run with
``python3 -m capacity_forecaster.processing`` as its ContainerEntrypoint. Arguments: ``etl`` (the ETL Lambda's
work) or ``outputs --run-id ID --run-date YYYY-MM-DD`` (the risk Lambda's: publish the training run, then the
risk register, the consolidation plan and the report, and the run summary to the alerts topic named in
``CF_NOTIFY_TOPIC_ARN`` when the environment sets it, with the risk Lambda's ``outputs.notify_run``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from capacity_forecaster.access import NOTIFY_TOPIC_ENV
from capacity_forecaster.errors import CapacityForecasterError, ConfigError, single_line
from capacity_forecaster.json_files import read_json_object
from capacity_forecaster.processing_request import SUMMARY_OUTPUT
from capacity_forecaster.redact import redact
from capacity_forecaster.settings import Settings, load_settings

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/opt/ml")
PROCESSING_STAGES = ("etl", "outputs")
"""What a processing job runs: the ETL Lambda's stage, or the risk Lambda's (publish, risk, consolidation, report)."""
MAX_MESSAGE_BYTES = 1024
"""SageMaker keeps the first 1 KB of ``output/message`` as the job's ExitMessage."""


@dataclass(frozen=True)
class ProcessingPaths:
    """The files and folders of the processing container contract under one root."""

    root: Path

    @property
    def job_config(self) -> Path:
        return self.root / "config" / "processingjobconfig.json"

    @property
    def resource_config(self) -> Path:
        return self.root / "config" / "resourceconfig.json"

    @property
    def inputs(self) -> Path:
        return self.root / "processing" / "input"

    @property
    def summary(self) -> Path:
        return self.root / "processing" / "output" / SUMMARY_OUTPUT

    @property
    def message(self) -> Path:
        return self.root / "output" / "message"


@dataclass(frozen=True)
class ProcessingRequest:
    """One processing job's stage, its options and settings, as the contract gives them."""

    stage: str
    settings: Settings
    job_name: str = "local"
    run_id: str | None = None
    run_date: date | None = None
    notify_topic_arn: str | None = None
    """The alerts topic the ``outputs`` stage sends the run summary to (``CF_NOTIFY_TOPIC_ARN``); None: no summary."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise ConfigError(f"processing job arguments: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="process.py", add_help=False)
    parser.add_argument("stage", choices=PROCESSING_STAGES)
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--run-date", type=date.fromisoformat, default=None)
    return parser


def read_request(
    paths: ProcessingPaths, argv: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> ProcessingRequest:
    """The stage and settings of the job: ``argv`` (the container's arguments) or the config's
    ``ContainerArguments``; the settings from the config's ``Environment`` over ``environ``. One host only: the
    per-series work shards across hosts in the training job, not here."""
    config = read_json_object(paths.job_config, "processing job config")
    if paths.resource_config.exists():
        hosts = read_json_object(paths.resource_config, "resource config").get("hosts")
        if not isinstance(hosts, list) or len(hosts) != 1:
            count = len(hosts) if isinstance(hosts, list) else hosts
            raise ConfigError(
                f"a processing job of the fleet-wide stages runs on one instance, not {count} (InstanceCount 1: "
                "the per-series work is sharded across hosts by the training job)"
            )
    args = list(argv) or list((config.get("AppSpecification") or {}).get("ContainerArguments") or [])
    try:
        parsed = _parser().parse_args(args)
    except ValueError as exc:  # a bad --run-date
        raise ConfigError(f"processing job arguments: {exc}") from None
    if parsed.stage == "outputs" and (parsed.run_id is None or parsed.run_date is None):
        raise ConfigError("processing stage outputs needs --run-id and --run-date (the training run to publish)")
    environment = config.get("Environment") or {}
    if not isinstance(environment, dict):
        raise ConfigError("processing job config: Environment must be an object of strings")
    env = {**(os.environ if environ is None else environ), **{str(k): str(v) for k, v in environment.items()}}
    if not env.get("CF_LAKE"):
        raise ConfigError("processing job environment has no CF_LAKE: the lake's s3://bucket/prefix (or a folder)")
    return ProcessingRequest(
        stage=parsed.stage,
        settings=load_settings(environ=env),
        job_name=str(config.get("ProcessingJobName") or "local"),
        run_id=parsed.run_id,
        run_date=parsed.run_date,
        notify_topic_arn=env.get(NOTIFY_TOPIC_ENV) or None,
    )


def run_stage(request: ProcessingRequest) -> dict[str, Any]:
    """Run the request's stage on its lake with the same functions as the Lambdas; its counts."""
    from capacity_forecaster.storage.lake import open_lake

    settings = request.settings
    lake = open_lake(settings.lake, settings.s3_config())
    if request.stage == "etl":
        from capacity_forecaster.stages import run_etl

        return {"etl": run_etl(lake, settings).counts}
    from capacity_forecaster.forecasting.job import publish_training_run
    from capacity_forecaster.outputs import build_outputs, notify_run
    from capacity_forecaster.stages import RISK_LEASE
    from capacity_forecaster.storage.lease import Lease

    assert request.run_id is not None and request.run_date is not None
    with Lease(lake.store, RISK_LEASE) as lease:
        published = publish_training_run(lake, run_id=request.run_id, run_date=request.run_date)
        outputs = build_outputs(lake, settings, run_date=request.run_date, grain=published.grain, held=lease)
        notified = notify_run(outputs, run_id=request.run_id, topic_arn=request.notify_topic_arn)
    return {"publish": published.as_json(), **{s.stage: s.counts for s in outputs.stages}, "notified": notified}


def run_processing_job(root: Path = DEFAULT_ROOT, argv: Sequence[str] = ()) -> int:
    """Run the job under the contract at ``root``; the exit code. A failure writes a one-line reason to
    ``output/message`` and returns 1; success writes ``processing/output/summary/<stage>.json``."""
    paths = ProcessingPaths(Path(root))
    try:
        request = read_request(paths, argv)
        counts = run_stage(request)
    except Exception as exc:
        reason = (
            str(exc)
            if isinstance(exc, CapacityForecasterError)
            else redact(single_line(f"{type(exc).__name__}: {exc}"))
        )
        if not isinstance(exc, CapacityForecasterError):
            sys.stderr.write(redact(traceback.format_exc()))
        paths.message.parent.mkdir(parents=True, exist_ok=True)
        paths.message.write_bytes(reason.encode()[:MAX_MESSAGE_BYTES])
        log.error("processing failed: %s", reason)
        return 1
    summary = {"job": request.job_name, "stage": request.stage, **counts}
    paths.summary.mkdir(parents=True, exist_ok=True)
    (paths.summary / f"{request.stage}.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    log.info("processing finished: %s", json.dumps(summary, default=str, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The container's entry point: ``python -m capacity_forecaster.processing <stage> [options]``, the
    contract at ``/opt/ml`` or ``$SM_CONTRACT_ROOT`` (tests, local runs), as ``sagemaker_jobs/train.py`` does."""
    from capacity_forecaster.redact import install_log_redaction

    install_log_redaction()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = Path(os.environ.get("SM_CONTRACT_ROOT", str(DEFAULT_ROOT)))
    return run_processing_job(root, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
