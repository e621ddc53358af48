"""Key builders: valid keys pass unchanged; every escape or ambiguity raises InvalidKeyError."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from capacity_forecaster.errors import CapacityForecasterError
from capacity_forecaster.storage import keys
from capacity_forecaster.storage.errors import InvalidKeyError, StorageError
from capacity_forecaster.storage.keys import (
    TenantPrefix,
    date_folder,
    join_key,
    parse_s3_uri,
    timestamped_name,
    validate_bucket_name,
    validate_key,
    validate_prefix,
)

NOW = datetime(2026, 11, 23, 10, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "raw/2026/01/02/metrics.csv",
        "curated/metrics_daily/dt=2026-01-01/data.parquet",
        "tenants/acme/x.csv.gz",
        "name with spaces/é.csv",
        "a/.hidden",
        "a/..b/c..",
    ],
)
def test_validate_key_accepts_relative_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/abs", "leading '/'"),
        ("/", "leading '/'"),
        ("a//b", "empty segments"),
        ("a/", "empty segments"),
        ("..", "'..' segments"),
        ("../other", "'..' segments"),
        ("a/../b", "'..' segments"),
        ("a/..", "'..' segments"),
        ("./a", "'.' segments"),
        ("a/./b", "'.' segments"),
        ("a\\b", "'\\'"),
        ("..\\other", "'\\'"),
        ("a\nb", "control characters"),
        ("a\x00b", "control characters"),
        ("a\x7fb", "control characters"),
        ("x" * 1025, "1024 bytes"),
        ("é" * 513, "1024 bytes"),
    ],
)
def test_validate_key_rejects(key: str, reason: str) -> None:
    with pytest.raises(InvalidKeyError, match="invalid object key") as info:
        validate_key(key)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)


def test_validate_key_rejects_non_strings() -> None:
    with pytest.raises(InvalidKeyError, match="must be a string"):
        validate_key(None)  # type: ignore[arg-type]


def test_invalid_key_error_is_a_value_error_and_a_user_facing_storage_error() -> None:
    with pytest.raises(ValueError) as info:
        validate_key("../x")
    assert isinstance(info.value, InvalidKeyError | StorageError | CapacityForecasterError)
    assert str(info.value) == "invalid object key '../x': '..' segments are not allowed"


def test_invalid_key_error_is_reachable_from_keys_module() -> None:
    assert keys.InvalidKeyError is InvalidKeyError
    with pytest.raises(AttributeError):
        _ = keys.NoSuchThing


@pytest.mark.parametrize("prefix", ["", "a", "a/", "raw/2026/", "tenants/acme/raw"])
def test_validate_prefix_accepts(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "//", "/a/", "a//", "../", "a/../", "a\\b/"])
def test_validate_prefix_rejects(prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_prefix(prefix)


def test_join_key() -> None:
    assert join_key("raw/", "2026/01/02", "m.csv") == "raw/2026/01/02/m.csv"
    assert join_key("", "m.csv") == "m.csv"
    assert join_key("a", "", "b") == "a/b"


@pytest.mark.parametrize("parts", [(), ("",), ("a", "/abs"), ("a", ".."), ("a", "../b"), ("a//", "b"), ("a", "b\\c")])
def test_join_key_rejects(parts: tuple[str, ...]) -> None:
    with pytest.raises(InvalidKeyError):
        join_key(*parts)


def test_date_folder_styles() -> None:
    d = date(2026, 3, 7)
    assert date_folder(d) == "2026/03/07"
    assert date_folder(d, "hive") == "dt=2026-03-07"
    assert date_folder(d, style="hive", name="day") == "day=2026-03-07"
    assert date_folder(datetime(2026, 3, 7, 23, 59, tzinfo=UTC)) == "2026/03/07"
    assert date_folder(date(987, 1, 2)) == "0987/01/02"


def test_date_folder_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown date folder style"):
        date_folder(date(2026, 1, 1), "weekly")  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError, match="invalid partition name"):
        date_folder(date(2026, 1, 1), "hive", name="d/t")
    with pytest.raises(TypeError):
        date_folder("2026-01-01")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("metrics.csv", "20261123T101500Z_metrics.csv"),
        ("my metrics (1).csv.gz", "20261123T101500Z_my_metrics_1_.csv.gz"),
        ("/home/me/exports/data.parquet", "20261123T101500Z_data.parquet"),
        ("C:\\Users\\me\\data.csv", "20261123T101500Z_data.csv"),
        ("../../etc/passwd", "20261123T101500Z_passwd"),
        ("données.csv", "20261123T101500Z_donnees.csv"),
        (".hidden", "20261123T101500Z_hidden"),
    ],
)
def test_timestamped_name(original: str, expected: str) -> None:
    name = timestamped_name(original, NOW)
    assert name == expected
    assert validate_key(name) == name


def test_timestamped_name_converts_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    assert timestamped_name("a.csv", datetime(2026, 11, 23, 11, 15, tzinfo=paris)) == "20261123T101500Z_a.csv"


def test_timestamped_name_defaults_to_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    stamp = datetime.strptime(timestamped_name("a.csv").split("_", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= stamp <= datetime.now(UTC)


def test_timestamped_name_keeps_names_short() -> None:
    name = timestamped_name("x" * 500 + ".parquet", NOW)
    assert name.endswith(".parquet")
    assert len(name) <= len("20261123T101500Z_") + 200


@pytest.mark.parametrize("original", ["", "   ", "..", "/", "???", "日本語"])
def test_timestamped_name_rejects_unusable_names(original: str) -> None:
    with pytest.raises(InvalidKeyError):
        timestamped_name(original, NOW)


def test_timestamped_name_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        timestamped_name("a.csv", datetime(2026, 11, 23, 10, 15))


def test_tenant_prefix_builds_keys_under_the_tenant() -> None:
    tenant = TenantPrefix("acme-01")
    assert tenant.prefix == "tenants/acme-01/"
    assert tenant.key("raw", "2026/01/02", "m.csv") == "tenants/acme-01/raw/2026/01/02/m.csv"
    assert tenant.key(date_folder(date(2026, 1, 2)), timestamped_name("m.csv", NOW)) == (
        "tenants/acme-01/2026/01/02/20261123T101500Z_m.csv"
    )
    assert tenant.owns(tenant.key("x")) and not tenant.owns("tenants/acme-012/x")
    assert tenant == TenantPrefix("acme-01") and len({tenant, TenantPrefix("acme-01")}) == 1
    assert repr(tenant) == "TenantPrefix('acme-01')"


@pytest.mark.parametrize(
    "parts",
    [
        (),
        ("",),
        ("..",),
        ("../other",),
        ("../other", "x.csv"),
        ("a", "..", "..", "other"),
        ("a/../../other",),
        ("/abs",),
        ("/tenants/other/x",),
        ("a//b",),
        ("a", ""),
        ("a/",),
        ("a\\..\\..\\other",),
        ("a\x00",),
    ],
)
def test_tenant_prefix_cannot_be_escaped(parts: tuple[str, ...]) -> None:
    with pytest.raises(InvalidKeyError):
        TenantPrefix("acme").key(*parts)


@pytest.mark.parametrize(
    "tenant", ["", "a/b", "../other", "..", "ACME", "acme corp", "a" * 64, "acme/", "/acme", "acme\n", "é"]
)
def test_tenant_ids_are_validated(tenant: str) -> None:
    with pytest.raises(InvalidKeyError, match="invalid tenant id"):
        TenantPrefix(tenant)


def test_tenant_ids_at_the_limits() -> None:
    assert TenantPrefix("a" * 63).tenant == "a" * 63
    assert TenantPrefix("a_b-c").prefix == "tenants/a_b-c/"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://my-bucket.data/lake", ("my-bucket.data", "lake")),
        ("s3://bucket/lake/", ("bucket", "lake/")),
        ("s3://bucket/a/b/c.parquet", ("bucket", "a/b/c.parquet")),
        ("S3://bucket/x", ("bucket", "x")),
    ],
)
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("bucket/prefix", "it must look like s3://bucket/prefix"),
        ("s3:/bucket/x", "it must look like s3://bucket/prefix"),
        ("https://bucket.s3.amazonaws.com/x", "it must look like s3://bucket/prefix"),
        ("s3://", "the bucket name is missing"),
        ("s3:///prefix", "the bucket name is missing"),
        ("s3://Bucket/x", "invalid bucket name"),
        ("s3://b/x", "invalid bucket name"),
        ("s3://bucket_name/x", "invalid bucket name"),
        ("s3://bucket//x", "invalid key prefix"),
        ("s3://bucket/../x", "invalid key prefix"),
    ],
)
def test_parse_s3_uri_rejects(uri: str, message: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        parse_s3_uri(uri)
    assert message in str(info.value)


@pytest.mark.parametrize("name", ["abc", "my-bucket", "my.bucket.1", "a" * 63])
def test_bucket_names_accepted(name: str) -> None:
    assert validate_bucket_name(name) == name


@pytest.mark.parametrize(
    "name", ["ab", "a" * 64, "-abc", "abc-", "a..b", "a.-b", "a-.b", "192.168.1.1", "ABC", "a_b", "a b"]
)
def test_bucket_names_rejected(name: str) -> None:
    with pytest.raises(InvalidKeyError, match="invalid bucket name"):
        validate_bucket_name(name)


RAW = (".csv", ".csv.gz", ".parquet", ".json", ".json.gz")


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("..csv", "upload.csv"),
        ("../../etc/passwd.csv", "passwd.csv"),
        ("a/b/..CSV.GZ", "upload.csv.gz"),
        ("DATA.Json.Gz", "DATA.json.gz"),
        ("...hidden.parquet", "hidden.parquet"),
        ("100% done%2F.json", "100_done_2F.json"),
        ("ctrl\x00\x1b[31m.csv", "ctrl_31m.csv"),
        ("日本語.csv", "upload.csv"),
        ("report.csv.gz.csv", "report.csv.gz.csv"),
        ("a." + "b" * 600 + ".csv.gz", "a." + "b" * (200 - 2 - 7) + ".csv.gz"),
    ],
)
def test_timestamped_name_keeps_the_etl_suffix(original: str, expected: str) -> None:
    name = timestamped_name(original, NOW, suffixes=RAW, tag="0a1b2c3d")
    assert name == f"20261123T101500Z_0a1b2c3d_{expected}"
    assert validate_key(name) == name


def test_the_longest_upload_key_fits_s3() -> None:
    from capacity_forecaster.storage.keys import MAX_KEY_BYTES

    name = timestamped_name("é" * 1000 + ".json.gz", NOW, suffixes=RAW, tag="f" * 16)
    key = TenantPrefix("t" * 63).key(date_folder(NOW.date()), name)
    assert len(("raw/uploads/" + key).encode()) <= MAX_KEY_BYTES


@pytest.mark.parametrize("tag", ["ABC", "a_b", "x" * 17, "é"])
def test_timestamped_name_rejects_bad_tags(tag: str) -> None:
    with pytest.raises(InvalidKeyError, match="tag"):
        timestamped_name("a.csv", NOW, tag=tag)
