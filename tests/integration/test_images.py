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

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.images import image_path, images, outside_image

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("image-packages")]


PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
files = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
print(json.dumps({"path": sys.path, "files": {n: f for n, f in files.items() if f}}))
"""


@pytest.mark.parametrize("name", ["lambdas", "training", "launcher", "processing_launcher", "views"])
def test_every_module_imports_with_only_the_image_requirements(name: str, tmp_path: Path) -> None:
    image = images()[name]
    allowed = image_path(name, image)
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
    assert outside_image(report["files"], allowed) == {}, f"{name} image: modules loaded from outside its folders"
    for module in image.required_loaded:
        assert module in report["files"], f"{name} image: {module} was not loaded"
