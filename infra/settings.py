"""Stack settings: read from CDK context (cdk.json or ``cdk synth -c key=value``), validated, frozen.

Every setting has a context key ``capacity-forecaster:<camelCaseName>`` and a default, listed in
``StackSettings`` below and repeated in cdk.json. Values given on the command line arrive as strings and are
converted; an unknown key in the project's namespace is an error, so a typo does not pass silently.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import aws_cdk as cdk
import constructs

from capacity_forecaster.limits import LAMBDA_CONFIGURED_MB
from infra.names import CONTEXT_NAMESPACE

if TYPE_CHECKING:
    from capacity_forecaster.settings import Settings

RemovalPolicyName = Literal["retain", "destroy"]
PROJECT_ROOT: Final = Path(__file__).resolve().parents[1]
"""Where a relative ``settings_file`` is read from."""

_BUCKET_PREFIX_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
_GLUE_NAME_RE: Final = re.compile(r"^[a-z0-9_]+$")
_WORKGROUP_RE: Final = re.compile(r"^[a-zA-Z0-9._-]{1,128}$")
# The bucket name is "<prefix>-logs-<12-digit account>-<region>" (regions are at most 14 characters);
# S3 allows 63 characters in all.
MAX_BUCKET_PREFIX: Final = 63 - len("-logs-") - 12 - 1 - 14
ATHENA_MIN_CUTOFF: Final = 10_000_000
"""Athena refuses a per-query bytes-scanned cutoff under 10 MB."""
IA_MIN_DAYS: Final = 30
"""S3 lifecycle transitions to STANDARD_IA need objects at least 30 days old."""
_SCHEDULE_RE: Final = re.compile(r"^(cron\([^()]+\)|rate\(\d+ (minute|minutes|hour|hours|day|days)\))$")
_INSTANCE_TYPE_RE: Final = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
_EMAIL_RE: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_QUICKSIGHT_PRINCIPAL_RE: Final = re.compile(
    r"^arn:aws(-[a-z]+)*:quicksight:[a-z0-9-]+:\d{12}:(user|group)/[A-Za-z0-9._-]+/[^/\s]+$"
)
_ROLE_NAME_RE: Final = re.compile(r"^[\w+=,.@-]{1,64}$")
LOG_RETENTION_DAYS: Final = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 3653)
"""The retention periods CloudWatch Logs accepts."""


class SettingsError(ValueError):
    """A context value is missing its mark: wrong type, out of range or unknown key."""


@dataclass(frozen=True, kw_only=True)
class StackSettings:
    """The knobs of the stack. Defaults suit a first deployment in a single account."""

    lake_bucket_prefix: str = "capacity-forecaster-lake"
    """Lake bucket name prefix; the buckets are ``<prefix>-<account>-<region>`` and ``<prefix>-logs-...``."""
    glue_database_name: str = "capacity_forecaster"
    """Glue database holding one table per lake table (lowercase, digits, underscores)."""
    athena_workgroup_name: str = "capacity-forecaster"
    """Athena workgroup with enforced settings: results location, encryption, scan cutoff."""
    athena_bytes_scanned_cutoff: int = 10 * 1024**3
    """Per-query limit on bytes scanned (default 10 GiB; Athena's minimum is 10 MB)."""
    raw_transition_days: int = 30
    """Days after which raw/ objects move to S3 Standard-IA (0: never; otherwise at least 30)."""
    raw_expiration_days: int = 365
    """Days after which raw/ objects expire (0: never; otherwise later than the transition)."""
    quarantine_expiration_days: int = 90
    """Days after which quarantined rows expire (at least 1)."""
    athena_results_expiration_days: int = 30
    """Days after which Athena query results expire (at least 1)."""
    noncurrent_version_expiration_days: int = 30
    """Days a replaced or deleted object version is kept in the versioned lake bucket (at least 1)."""
    access_log_expiration_days: int = 365
    """Days the server access logs are kept (at least 1)."""
    removal_policy: RemovalPolicyName = "retain"
    """What happens to the buckets and the key when the stack is deleted: retain, or destroy (a bucket must be
    empty to be destroyed; the key is scheduled for deletion)."""
    partition_projection_start: str = "2015-01-01"
    """First day of the projected date partitions (ISO date; the range runs to NOW)."""
    demo: bool = False
    """Deploy the demo generator: a Lambda that appends a synthetic fleet's new days to raw/ on
    ``generate_schedule`` (into a lake holding no user uploads). Off: the stack generates no data (docs/demo.md).
    ``true``/``false``, as a boolean or a string (``cdk deploy -c capacity-forecaster:demo=true``)."""
    generate_schedule: str = "cron(0 1 * * ? *)"
    """When the demo generator Lambda appends the synthetic fleet's new days (EventBridge expression, UTC;
    daily; used with ``demo`` only)."""
    etl_schedule: str = "cron(0 3 * * ? *)"
    """When the ETL Lambda processes new raw objects (EventBridge expression, UTC; daily, after generation)."""
    lambda_memory_mb: int = LAMBDA_CONFIGURED_MB
    """Memory of the container-image Lambdas (128 to 10240 MB; CPU grows with it). The default is the one the
    settings' fleet limits are derived from (``capacity_forecaster.limits``: 3,008 MB hold 16,470 servers)."""
    lambda_timeout_seconds: int = 900
    """Timeout of the container-image Lambdas (1 to 900 seconds)."""
    log_retention_days: int = 90
    """Days the Lambdas' CloudWatch logs are kept (a value CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, ...)."""
    training_schedule: str = "cron(0 5 ? * MON *)"
    """When the launcher starts a SageMaker training job (EventBridge expression, UTC; weekly, Monday 05:00)."""
    training_instance_type: str = "ml.m5.xlarge"
    """Instance type of the training job (an ``ml.*`` type)."""
    training_volume_gb: int = 30
    """EBS volume per training host (1 to 16384 GB)."""
    training_spot: str = "true"
    """Managed spot training, "true" or "false" (spot costs up to 90% less; a job may wait for capacity)."""
    training_max_runtime_seconds: int = 3600
    """The job is stopped after this much training time (60 to 432000 seconds)."""
    training_max_wait_seconds: int = 7200
    """With spot, the job is stopped after this much time waiting plus training (at least the max runtime)."""
    alert_email: str = ""
    """An e-mail address subscribed to the notifications topic (empty: none; the address must confirm)."""
    settings_file: str = ""
    """The YAML settings file of the deployed functions and training job (the local pipeline's format), a path
    relative to the project root; empty: the defaults. See docs/settings.md for what reaches the cloud."""
    cloudwatch_tag_filter: str = ""
    """``Key=Value[,Key2=Value2]``: a scheduled function pulls the CloudWatch metrics of the EC2 instances carrying
    every one of these tags into ``raw/uploads/`` (CF_CLOUDWATCH_TAGS); empty: no puller function, rule or grants."""
    cloudwatch_schedule: str = "cron(0 2 * * ? *)"
    """When the CloudWatch puller runs (EventBridge expression, UTC; daily, before the ETL's schedule)."""
    cloudwatch_days: int = 1
    """Complete UTC days each pull fetches (CF_CLOUDWATCH_DAYS; 1 to 454; overlapping days are quarantined by the
    ETL as duplicates)."""
    quicksight_principal_arn: str = ""
    """The QuickSight user or group (``arn:aws:quicksight:<region>:<account>:user/<namespace>/<name>`` or
    ``...:group/...``) that owns the dashboard, its data sets and data source; empty: no dashboards."""
    quicksight_service_role_name: str = ""
    """With dashboards, an existing IAM role for QuickSight's Athena queries (``aws-quicksight-service-role-v0``,
    say): a policy on it grants the workgroup, the views' Glue tables and lake prefixes and the lake key. Empty:
    the stack creates that role itself and names it in the data source, so none needs to exist."""

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise SettingsError("invalid stack settings: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        out: list[str] = []
        p = self.lake_bucket_prefix
        if not (3 <= len(p) <= MAX_BUCKET_PREFIX and _BUCKET_PREFIX_RE.match(p)) or "--" in p:
            out.append(
                f"lake_bucket_prefix {p!r} must be 3 to {MAX_BUCKET_PREFIX} lowercase letters, digits or "
                "single hyphens, starting and ending with a letter or digit"
            )
        if not (_GLUE_NAME_RE.match(self.glue_database_name) and len(self.glue_database_name) <= 255):
            out.append(f"glue_database_name {self.glue_database_name!r} must be lowercase letters, digits, _")
        if not _WORKGROUP_RE.match(self.athena_workgroup_name):
            out.append(f"athena_workgroup_name {self.athena_workgroup_name!r} must be 1-128 of [a-zA-Z0-9._-]")
        if self.athena_bytes_scanned_cutoff < ATHENA_MIN_CUTOFF:
            out.append(f"athena_bytes_scanned_cutoff must be at least {ATHENA_MIN_CUTOFF} bytes")
        for name in (
            "quarantine_expiration_days",
            "athena_results_expiration_days",
            "noncurrent_version_expiration_days",
            "access_log_expiration_days",
        ):
            if getattr(self, name) < 1:
                out.append(f"{name} must be at least 1")
        transition, expiry = self.raw_transition_days, self.raw_expiration_days
        if transition < 0 or expiry < 0:
            out.append("raw_transition_days and raw_expiration_days must be 0 (never) or positive")
        if 0 < transition < IA_MIN_DAYS:
            out.append(f"raw_transition_days must be 0 or at least {IA_MIN_DAYS} (S3 Standard-IA minimum)")
        if transition > 0 and 0 < expiry <= transition:
            out.append("raw_expiration_days must be later than raw_transition_days")
        if not isinstance(self.demo, bool):
            out.append(f"demo {self.demo!r} must be true or false")
        if self.removal_policy not in get_args(RemovalPolicyName):
            out.append(f"removal_policy {self.removal_policy!r} must be one of {get_args(RemovalPolicyName)}")
        try:
            start = dt.date.fromisoformat(self.partition_projection_start)
        except (TypeError, ValueError):
            out.append(f"partition_projection_start {self.partition_projection_start!r} must be YYYY-MM-DD")
        else:
            if start.isoformat() != self.partition_projection_start:
                out.append("partition_projection_start must be written YYYY-MM-DD")
        out += self._pipeline_problems()
        out += self._dashboard_problems()
        out += self._settings_file_problems()
        return out

    def _settings_file_problems(self) -> list[str]:
        from capacity_forecaster.errors import ConfigError

        try:
            self.domain_settings  # noqa: B018  (loaded and validated once, here)
        except ConfigError as exc:
            return [f"settings_file {self.settings_file}: {exc}"]
        return []

    @functools.cached_property
    def domain_settings(self) -> Settings:
        """The settings file's settings, read and checked for the cloud with the domain package's own rules."""
        from capacity_forecaster.settings import load_cloud_settings

        return load_cloud_settings(PROJECT_ROOT / self.settings_file if self.settings_file else None)

    def _dashboard_problems(self) -> list[str]:
        out: list[str] = []
        if self.quicksight_principal_arn and not _QUICKSIGHT_PRINCIPAL_RE.match(self.quicksight_principal_arn):
            out.append(
                f"quicksight_principal_arn {self.quicksight_principal_arn!r} must be a QuickSight user or group ARN "
                "(arn:aws:quicksight:<region>:<account>:user/<namespace>/<name>), or empty for no dashboards"
            )
        if self.quicksight_service_role_name and not _ROLE_NAME_RE.match(self.quicksight_service_role_name):
            out.append(f"quicksight_service_role_name {self.quicksight_service_role_name!r} must be an IAM role name")
        return out

    def _pipeline_problems(self) -> list[str]:
        out: list[str] = []
        out += _cloudwatch_problems(self.cloudwatch_tag_filter, self.cloudwatch_days)
        for name in ("generate_schedule", "etl_schedule", "cloudwatch_schedule"):
            if not _SCHEDULE_RE.match(getattr(self, name)):
                out.append(f"{name} {getattr(self, name)!r} must be an EventBridge cron(...) or rate(...) expression")
        ranges = {
            "lambda_memory_mb": (128, 10_240),
            "lambda_timeout_seconds": (1, 900),
        }
        for name, (low, high) in ranges.items():
            if not low <= getattr(self, name) <= high:
                out.append(f"{name} must be between {low} and {high}")
        if not _SCHEDULE_RE.match(self.training_schedule):
            out.append(f"training_schedule {self.training_schedule!r} must be a cron(...) or rate(...) expression")
        if not _INSTANCE_TYPE_RE.match(self.training_instance_type):
            out.append(f"training_instance_type {self.training_instance_type!r} must be an ml.* instance type")
        if self.training_spot not in ("true", "false"):
            out.append(f"training_spot {self.training_spot!r} must be 'true' or 'false'")
        for name, (low, high) in {
            "training_volume_gb": (1, 16_384),
            "training_max_runtime_seconds": (60, 432_000),
            "training_max_wait_seconds": (60, 432_000),
        }.items():
            if not low <= getattr(self, name) <= high:
                out.append(f"{name} must be between {low} and {high}")
        if self.training_spot == "true" and self.training_max_wait_seconds < self.training_max_runtime_seconds:
            out.append("training_max_wait_seconds must be at least training_max_runtime_seconds")
        if self.alert_email and not _EMAIL_RE.match(self.alert_email):
            out.append(f"alert_email {self.alert_email!r} must be an e-mail address (or empty for none)")
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            out.append(f"log_retention_days must be one of {LOG_RETENTION_DAYS}")
        return out

    @property
    def cdk_removal_policy(self) -> cdk.RemovalPolicy:
        """The removal policy for stateful resources (buckets, key)."""
        return cdk.RemovalPolicy.DESTROY if self.removal_policy == "destroy" else cdk.RemovalPolicy.RETAIN

    @property
    def projection_range(self) -> str:
        """The ``projection.<key>.range`` value of date partitions."""
        return f"{self.partition_projection_start},NOW"

    # ---- context --------------------------------------------------------------------------------------

    @classmethod
    def context_keys(cls) -> dict[str, str]:
        """Field name -> context key: ``lake_bucket_prefix`` -> ``capacity-forecaster:lakeBucketPrefix``."""
        return {f.name: f"{CONTEXT_NAMESPACE}:{_camel(f.name)}" for f in dataclasses.fields(cls)}

    @classmethod
    def context_defaults(cls) -> dict[str, Any]:
        """Context key -> default value: what cdk.json lists."""
        defaults = cls()
        return {key: getattr(defaults, name) for name, key in cls.context_keys().items()}

    @classmethod
    def from_mapping(cls, context: Mapping[str, Any]) -> StackSettings:
        """Settings from a context mapping; keys outside the project's namespace are ignored."""
        keys = cls.context_keys()
        unknown = sorted(k for k in context if k.startswith(f"{CONTEXT_NAMESPACE}:") and k not in keys.values())
        if unknown:
            raise SettingsError(f"unknown context key(s) {unknown}; known: {sorted(keys.values())}")
        is_int = {f.name: isinstance(f.default, int) for f in dataclasses.fields(cls)}
        is_bool = {f.name: isinstance(f.default, bool) for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name, key in keys.items():
            if key in context and context[key] is not None and is_bool[name]:
                values[name] = _coerce_bool(key, context[key])
            elif key in context and context[key] is not None:
                values[name] = _coerce(key, context[key], as_int=is_int[name])
        return cls(**values)

    @classmethod
    def from_node(cls, node: constructs.Node) -> StackSettings:
        """Settings from the context visible at a construct (the app's, usually)."""
        return cls.from_mapping(node.get_all_context())


def _cloudwatch_problems(tag_filter: str, days: int) -> list[str]:
    """The puller's settings checked with the rules ``pull-cloudwatch`` applies to ``--tag`` and ``--days``."""
    from capacity_forecaster.cloudwatch_pull import choose_period, parse_tag_filters
    from capacity_forecaster.errors import InputError

    out = []
    try:
        parse_tag_filters(tag_filter)
    except InputError as exc:
        out.append(f"cloudwatch_tag_filter {tag_filter!r}: {exc}")
    try:
        choose_period(days)
    except InputError as exc:
        out.append(f"cloudwatch_days: {exc}")
    return out


def _camel(snake: str) -> str:
    first, *rest = snake.split("_")
    return first + "".join(w.capitalize() for w in rest)


def _coerce_bool(key: str, value: Any) -> bool:
    """A boolean from cdk.json (true/false) or the command line (the strings "true"/"false", any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise SettingsError(f"context {key} must be true or false, got {value!r}")


def _coerce(key: str, value: Any, *, as_int: bool) -> Any:
    if not as_int:
        if not isinstance(value, str):
            raise SettingsError(f"context {key} must be a string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SettingsError(f"context {key} must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"context {key} must be an integer, got {value!r}") from None
