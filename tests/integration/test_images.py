"""Each container image's requirements, installed by pip for the Lambda/SageMaker platform, run its code alone.

For every image: ``pip install --platform ... --python-version 3.13 --only-binary=:all: --target DIR`` of its
requirements file (the wheels the image build would get on Linux x86_64), then, in a fresh interpreter
without site-packages, with only DIR, the domain package and the image's own code on the path, import every
handler and every module its stages import lazily. A requirement missing from the image, or a wheel that does
not exist for the platform, fails here instead of at the first invocation.

The installed folder is cached per requirements file content under ``~/.cache/capacity-forecaster/images``
(``CF_IMAGE_CACHE`` to move it): the first run downloads about 400 MB of wheels (pip's cache keeps them too).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux2014_x86_64")
"""Lambda's Python 3.13 runtime (Amazon Linux 2023) and python:3.13-slim both have glibc newer than 2.28."""
PYTHON_VERSION = "3.13"
DOMAIN = ROOT / "layers" / "core" / "python"

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("image-packages")]


@dataclass(frozen=True)
class Image:
    requirements: Path
    code: Path
    """The folder the image copies its handlers from (on the path beside the domain package)."""
    modules: tuple[str, ...]
    required_loaded: tuple[str, ...] = ()
    """Modules that must end up loaded (an optional dependency the code reaches at import time)."""


IMAGES = {
    "lambdas": Image(
        requirements=ROOT / "lambdas" / "requirements.txt",
        code=ROOT / "lambdas",
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
            "sklearn.cluster",  # rightsizing.cluster_profiles
            "sklearn.metrics",
            "sklearn.preprocessing",
            "openpyxl",  # the report's Excel export (pandas' ExcelWriter engine)
        ),
        required_loaded=("aws_xray_sdk",),  # Powertools' tracer, enabled in Lambda
    ),
    "training": Image(
        requirements=ROOT / "sagemaker_jobs" / "requirements.txt",
        code=ROOT / "sagemaker_jobs",
        modules=("train", "capacity_forecaster.forecasting.engine", "capacity_forecaster.forecasting.job"),
    ),
}


def cache_root() -> Path:
    return Path(os.environ.get("CF_IMAGE_CACHE", Path.home() / ".cache" / "capacity-forecaster" / "images"))


def installed(name: str, image: Image) -> Path:
    """The image's requirements installed for the platform (cached by the requirements' content)."""
    args = ["--implementation", "cp", "--python-version", PYTHON_VERSION, "--only-binary=:all:"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    digest = hashlib.sha256(image.requirements.read_bytes() + " ".join(args).encode()).hexdigest()[:16]
    target = cache_root() / f"{name}-{digest}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=target.parent))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args]
    command += ["--target", str(scratch), "--requirement", str(image.requirements)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
        scratch.rename(target)  # atomic: a half-installed folder is never taken for a cached one
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        pytest.fail(f"pip could not install {image.requirements.name} for {PLATFORMS}: {exc.stderr[-2000:]}")
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)  # another worker finished first
    return target


PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
files = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
print(json.dumps({"path": sys.path, "files": {n: f for n, f in files.items() if f}}))
"""


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_every_module_imports_with_only_the_image_requirements(name: str, tmp_path: Path) -> None:
    image = IMAGES[name]
    packages = installed(name, image)
    allowed = [packages, DOMAIN, image.code]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(map(str, allowed)),
        "PYTHONNOUSERSITE": "1",
        # what Lambda sets: Powertools turns its tracer on only inside Lambda
        "AWS_LAMBDA_FUNCTION_NAME": "capacity-forecaster-probe",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": "capacity-forecaster-probe",
    }
    # -S: no site-packages (the test's own virtual environment stays out); cwd: an empty folder
    run = subprocess.run(
        [sys.executable, "-S", "-c", PROBE, *image.modules],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, f"{name} image: {run.stderr.strip().splitlines()[-1:]}"
    report = json.loads(run.stdout)
    stdlib = Path(os.__file__).resolve().parent
    site = stdlib / "site-packages"

    def inside(file: str) -> bool:
        path = Path(file).resolve()
        if path.is_relative_to(site):
            return False
        return any(path.is_relative_to(p.resolve()) for p in [*allowed, stdlib])

    outside = {module: file for module, file in report["files"].items() if not inside(file)}
    assert outside == {}, f"{name} image: modules loaded from outside the image's folders"
    for module in image.required_loaded:
        assert module in report["files"], f"{name} image: {module} was not loaded"
