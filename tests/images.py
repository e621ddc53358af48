"""What each deployed runtime has on its path: its requirements installed for the platform, and its own code.

Five runtimes: the data Lambdas' image (lambdas/Dockerfile), the SageMaker training image
(sagemaker_jobs/Dockerfile), the two zip launchers (training, and processing with ``scale.engine: sagemaker``: each
its own folder, the domain layer's few modules ``infra.names.LAYER_MODULES``, AWS's Powertools layer and the Lambda
runtime's boto3) and the zip views handler of the ``Custom::AthenaViews`` resource (its own folder and the Lambda
runtime's boto3).

:func:`installed` runs ``pip install --platform ... --python-version 3.13 --only-binary=:all: --target DIR`` of an
image's requirements (the wheels the image build would get on Linux x86_64) and caches DIR per requirements
content under ``~/.cache/capacity-forecaster/images`` (``CF_IMAGE_CACHE`` to move it): the first run downloads
several hundred MB of wheels. :func:`image_path` is the whole ``PYTHONPATH`` of a runtime, for a ``python -S``
subprocess that sees nothing else.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux2014_x86_64")
"""Lambda's Python 3.13 runtime (Amazon Linux 2023) and python:3.13-slim both have glibc newer than 2.28."""
PYTHON_VERSION = "3.13"
DOMAIN = ROOT / "layers" / "core" / "python"
LAMBDA_REQUIREMENTS = ROOT / "lambdas" / "requirements.txt"
LAUNCHER_PACKAGES = ("boto3", "aws-lambda-powertools")
"""What the launcher's runtime provides besides its code: the Lambda runtime's boto3 (with its botocore) and
AWS's Powertools layer, at the versions lambdas/requirements.txt pins."""
VIEWS_PACKAGES = ("boto3",)
"""What the views handler's runtime provides besides its code: the Lambda runtime's boto3 (with its botocore)."""


@dataclass(frozen=True)
class Image:
    requirements: str
    """The requirements file's text (what pip installs)."""
    code: tuple[Path, ...]
    """Folders on the path beside the installed packages: the domain package and the image's own code."""
    modules: tuple[str, ...] = ()
    """Modules that must import in the image (handlers, and what their stages import lazily)."""
    required_loaded: tuple[str, ...] = ()
    """Modules that must end up loaded (an optional dependency the code reaches at import time)."""


def pinned(requirements: Path, names: tuple[str, ...]) -> str:
    """The lines of a requirements file that pin one of ``names`` (extras allowed), in the file's order."""
    lines = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*\])?==", line.strip())
        if match and match.group(1).lower() in names:
            lines.append(line.strip())
    missing = set(names) - {re.split(r"[\[=]", line)[0].lower() for line in lines}
    assert not missing, f"{requirements} pins none of {sorted(missing)}"
    return "\n".join(lines) + "\n"


def launcher_layer(cache: Path | None = None) -> Path:
    """The launcher's domain layer: only ``LAYER_MODULES`` of the package, as the layer asset keeps them."""
    from infra.names import LAYER_MODULES

    package = DOMAIN / "capacity_forecaster"
    digest = hashlib.sha256(b"".join(m.encode() + (package / m).read_bytes() for m in LAYER_MODULES)).hexdigest()
    target = (cache or cache_root()) / f"launcher-layer-{digest[:16]}"
    if not target.is_dir():
        scratch = Path(tempfile.mkdtemp(prefix="launcher-layer-", dir=target.parent))
        for module in LAYER_MODULES:
            (scratch / "capacity_forecaster" / module).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(package / module, scratch / "capacity_forecaster" / module)
        try:
            scratch.rename(target)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)  # another worker finished first
    return target


def images() -> dict[str, Image]:
    """The five runtimes of the stack (the launchers' layer folder is built on first use)."""
    from infra.names import LAUNCHER_CODE, PROCESSING_LAUNCHER_CODE, VIEWS_HANDLER_CODE

    return {
        "lambdas": Image(
            requirements=LAMBDA_REQUIREMENTS.read_text(encoding="utf-8"),
            code=(DOMAIN, ROOT / "lambdas"),
            modules=(
                "generate.handler",
                "etl.handler",
                "risk.handler",
                "pull_cloudwatch.handler",
                # imported inside the stage functions, so at the first invocation
                "capacity_forecaster.generate",
                "capacity_forecaster.etl",
                "capacity_forecaster.risk",
                "capacity_forecaster.forecasting.job",
                "capacity_forecaster.outputs",
                "capacity_forecaster.cloudwatch_pull",
                "capacity_forecaster.html_report",
                "capacity_forecaster.rightsizing",
                "duckdb",
                "sklearn.cluster",  # rightsizing.cluster_profiles
                "sklearn.metrics",
                "sklearn.preprocessing",
                "openpyxl",  # the report's Excel export (pandas' ExcelWriter engine)
            ),
            required_loaded=("aws_xray_sdk",),  # Powertools' tracer, enabled in Lambda
        ),
        "training": Image(
            requirements=(ROOT / "sagemaker_jobs" / "requirements.txt").read_text(encoding="utf-8"),
            code=(DOMAIN, ROOT / "sagemaker_jobs"),
            modules=(
                "train",
                "capacity_forecaster.forecasting.engine",
                "capacity_forecaster.forecasting.job",
                "stanio",  # imported by cmdstanpy at Prophet's first fit
            ),
            required_loaded=("ujson",),  # stanio's fast JSON writer for CmdStan's data (json.dump without it)
        ),
        "launcher": Image(
            requirements=pinned(LAMBDA_REQUIREMENTS, LAUNCHER_PACKAGES),
            code=(launcher_layer(), ROOT / LAUNCHER_CODE),
            modules=("handler",),
            required_loaded=("aws_xray_sdk",),
        ),
        "processing_launcher": Image(
            requirements=pinned(LAMBDA_REQUIREMENTS, LAUNCHER_PACKAGES),
            code=(launcher_layer(), ROOT / PROCESSING_LAUNCHER_CODE),
            modules=("handler",),
            required_loaded=("aws_xray_sdk",),
        ),
        "views": Image(
            requirements=pinned(LAMBDA_REQUIREMENTS, VIEWS_PACKAGES),
            code=(ROOT / VIEWS_HANDLER_CODE,),
            modules=("handler",),
        ),
    }


def cache_root() -> Path:
    root = Path(os.environ.get("CF_IMAGE_CACHE", Path.home() / ".cache" / "capacity-forecaster" / "images"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def installed(name: str, image: Image) -> Path:
    """The image's requirements installed for the platform (cached by the requirements' content)."""
    args = ["--implementation", "cp", "--python-version", PYTHON_VERSION, "--only-binary=:all:"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    digest = hashlib.sha256(image.requirements.encode() + " ".join(args).encode()).hexdigest()[:16]
    target = cache_root() / f"{name}-{digest}"
    if target.is_dir():
        return target
    scratch = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=target.parent))
    requirements = scratch.with_suffix(".txt")
    requirements.write_text(image.requirements, encoding="utf-8")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args]
    command += ["--target", str(scratch), "--requirement", str(requirements)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
        scratch.rename(target)  # atomic: a half-installed folder is never taken for a cached one
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        pytest.fail(f"pip could not install the {name} image's requirements for {PLATFORMS}: {exc.stderr[-2000:]}")
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)  # another worker finished first
    finally:
        requirements.unlink(missing_ok=True)
    return target


def image_path(name: str, image: Image) -> list[Path]:
    """Everything on a runtime's path: its installed packages, then its code folders."""
    return [installed(name, image), *image.code]


def outside_image(modules: Mapping[str, str], allowed: Sequence[Path]) -> dict[str, str]:
    """Modules loaded from anywhere but the image's folders and the standard library (not its site-packages)."""
    stdlib = Path(os.__file__).resolve().parent
    site = stdlib / "site-packages"
    roots = [p.resolve() for p in [*allowed, stdlib]]

    def inside(file: str) -> bool:
        resolved = Path(file).resolve()
        if resolved.is_relative_to(site):
            return False
        return any(resolved.is_relative_to(root) for root in roots)

    return {name: file for name, file in modules.items() if not inside(file)}


if __name__ == "__main__":  # pre-fill the cache: python -m tests.images [name ...]
    for key, value in images().items():
        if len(sys.argv) == 1 or key in sys.argv[1:]:
            print(key, installed(key, value), flush=True)
