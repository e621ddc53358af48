"""End-to-end fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture
def s3_endpoint_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every S3 client the pipeline builds (including the training job's) at the moto server."""
    monkeypatch.setenv("CF_S3_ENDPOINT_URL", moto_server)
