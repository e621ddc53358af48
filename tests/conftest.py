"""Shared fixtures for code that talks to S3: a moto server on loopback, its config, a fresh bucket per test.

boto3 reaches moto over real HTTP, so real botocore code paths (signing, retries, the transfer manager) run.
The ``moto_server`` fixture replaces the AWS variables of this process with fake credentials for the session;
``aws_environ_before_moto`` keeps what they were, for the tests against a real bucket.
"""

from __future__ import annotations

import logging
import os
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported inside the fixtures: test runs that need no S3 do not pay for boto3
    from capacity_forecaster.storage.s3_client import S3Client, S3Config

_ENV_BEFORE_MOTO = dict(os.environ)

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Removed for the session so that nothing from the developer's machine reaches the tests.
UNSET_AWS_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "CF_S3_REGION",
    "CF_S3_ENDPOINT_URL",
    "CF_S3_RETRY_MODE",
    "CF_S3_MAX_ATTEMPTS",
    "CF_S3_SSE",
    "CF_S3_KMS_KEY_ID",
)


@pytest.fixture(scope="session")
def aws_environ_before_moto() -> dict[str, str]:
    """The environment as it was when the tests started, before ``moto_server`` put fake credentials in it."""
    return dict(_ENV_BEFORE_MOTO)


@contextmanager
def loopback_moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 (a free port) while the block runs; its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server on 127.0.0.1 (a free port) for the session; yields its endpoint URL.

    Sets fake credentials and ``AWS_DEFAULT_REGION=us-east-1`` in ``os.environ`` and removes ``AWS_PROFILE``
    (and the other variables that would send boto3 elsewhere) until the session ends.
    """
    empty = tmp_path_factory.mktemp("aws-config")
    with pytest.MonkeyPatch.context() as mp:
        for name in UNSET_AWS_ENV:
            mp.delenv(name, raising=False)
        for name, value in FAKE_AWS_ENV.items():
            mp.setenv(name, value)
        # No ~/.aws files either: their settings (profiles, retry modes) would change what the tests see.
        mp.setenv("AWS_CONFIG_FILE", str(Path(empty, "config")))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(Path(empty, "credentials")))
        # One log line per request on stderr is noise in failure reports; warnings and errors still show.
        werkzeug_log = logging.getLogger("werkzeug")
        old_level = werkzeug_log.level
        werkzeug_log.setLevel(max(old_level, logging.WARNING))
        try:
            with loopback_moto_server() as endpoint:
                yield endpoint
        finally:
            werkzeug_log.setLevel(old_level)


@pytest.fixture(scope="session")
def s3_config(moto_server: str) -> S3Config:
    """An :class:`S3Config` pointing at the moto server (us-east-1, path-style addressing)."""
    from capacity_forecaster.storage.s3_client import S3Config

    return S3Config(endpoint_url=moto_server, region="us-east-1")


@pytest.fixture
def s3_client(s3_config: S3Config) -> Iterator[S3Client]:
    """An :class:`S3Client` on the moto server, closed after the test."""
    from capacity_forecaster.storage.s3_client import S3Client

    with S3Client(s3_config) as client:
        yield client


@pytest.fixture(scope="session")
def s3_boto_client(moto_server: str) -> Any:
    """A plain boto3 S3 client on the moto server, for setting up and checking state independently."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url=moto_server,
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"mode": "standard", "total_max_attempts": 1}),
    )


def _empty_and_delete_bucket(client: Any, bucket: str) -> None:
    from botocore.exceptions import ClientError

    with suppress(ClientError):
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_bucket(s3_boto_client: Any) -> Iterator[str]:
    """A new, empty bucket with a unique name on the moto server; emptied and deleted after the test."""
    name = f"cf-test-{uuid.uuid4().hex[:12]}"
    s3_boto_client.create_bucket(Bucket=name)
    yield name
    _empty_and_delete_bucket(s3_boto_client, name)


@pytest.fixture
def s3_endpoint_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Set ``CF_S3_ENDPOINT_URL`` to the moto server for one test, so ``S3Config.from_env()`` (and every client
    the code under test builds from the environment) reaches moto; returns the endpoint URL."""
    monkeypatch.setenv("CF_S3_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def reset_moto(moto_server: str) -> Callable[[], None]:
    """A function that wipes every moto backend (all buckets, keys, uploads) on the session's server."""

    def reset() -> None:
        request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    return reset
