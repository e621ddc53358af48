"""``capacity-forecaster doctor``: can this machine reach and write the lake? Each failure says what to do."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capacity_forecaster.errors import ConfigError
from capacity_forecaster.storage.keys import parse_s3_uri
from capacity_forecaster.storage.lake import local_lake_root


@dataclass(frozen=True)
class Check:
    """One check: its name, whether it passed, and a one-line message (what to do when it failed)."""

    name: str
    ok: bool
    message: str


def check_lake(settings: Any) -> list[Check]:
    """Run the checks for the configured lake (S3 or local)."""
    if str(settings.lake).startswith("s3://"):
        return _check_s3(settings)
    return _check_local(Path(settings.lake))


def _check_local(root: Path) -> list[Check]:
    try:
        local_lake_root(str(root))  # a file in the way, or a parent this user cannot write in
        root.mkdir(parents=True, exist_ok=True)
    except ConfigError as exc:
        return [Check("lake folder", False, str(exc))]
    except OSError as exc:
        return [Check("lake folder", False, f"cannot create {root}: {exc.strerror}; choose another --lake")]
    probe = root / f".doctor-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return [
            Check("lake folder", True, f"{root.resolve()} exists"),
            Check(
                "write access",
                False,
                f"cannot write in {root.resolve()}: {exc.strerror}; fix its permissions",
            ),
        ]
    return [Check("lake folder", True, f"{root.resolve()} exists"), Check("write access", True, "can write")]


def _check_s3(settings: Any) -> list[Check]:
    from capacity_forecaster.storage.s3_client import S3Client

    bucket, prefix = parse_s3_uri(str(settings.lake))
    report = S3Client(settings.s3_config()).check_access(bucket, probe_prefix=prefix)
    return [Check(c.name, c.ok, c.message) for c in report.checks]
