"""The images pin what pyproject.toml pins: a package the local run and an image share has one version."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ("lambdas/requirements.txt", "sagemaker_jobs/requirements.txt")
PIN = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)$")


def pins(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        match = PIN.match(line.split("#", 1)[0].strip())
        if match:
            out[match.group(1).lower()] = match.group(2)
    return out


@pytest.mark.parametrize("path", REQUIREMENTS)
def test_image_pins_agree_with_pyproject(path: str) -> None:
    project = pins(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"])
    image = pins((ROOT / path).read_text(encoding="utf-8").splitlines())
    assert image, f"{path} pins nothing"
    differ = {
        name: (version, project[name]) for name, version in image.items() if project.get(name, version) != version
    }
    assert differ == {}, f"{path} pins differ from pyproject.toml (image, pyproject)"
