"""Storage errors: every storage failure as one line that says what is wrong and what to do.

:func:`translate_client_error` turns botocore and s3transfer exceptions into this hierarchy, keeping the S3
error code, the bucket, the key and the request id (which AWS support asks for). Messages never contain
credentials.
"""

from __future__ import annotations

from typing import Any

from botocore import exceptions as bce
from s3transfer import exceptions as s3te

from capacity_forecaster.errors import CapacityForecasterError, single_line
from capacity_forecaster.redact import redact
from capacity_forecaster.storage.object_store import ObjectNotFound, PreconditionFailed

__all__ = [
    "InvalidKeyError",
    "S3AccessDeniedError",
    "S3BucketNotFoundError",
    "S3ConnectionError",
    "S3CredentialsError",
    "S3ObjectNotFoundError",
    "S3PreconditionFailedError",
    "S3ThrottledError",
    "S3TransferError",
    "StorageError",
    "translate_client_error",
]


class StorageError(CapacityForecasterError):
    """A storage operation failed. Rendered as ``<problem> <where> (<code>, request id <id>): <hint>``."""

    problem = "S3 request failed for"
    hint = ""

    def __init__(
        self,
        problem: str | None = None,
        *,
        code: str | None = None,
        bucket: str | None = None,
        key: str | None = None,
        request_id: str | None = None,
        operation: str | None = None,
        hint: str | None = None,
        status: int | None = None,
        attempts: int | None = None,
        host_id: str | None = None,
    ) -> None:
        if problem is not None:
            self.problem = problem
        if hint is not None:
            self.hint = hint
        self.code = code
        self.bucket = bucket
        self.key = key
        self.request_id = request_id
        self.operation = operation
        self.status = status
        self.attempts = attempts
        self.host_id = host_id
        super().__init__(self._render())

    @property
    def uri(self) -> str | None:
        """``s3://bucket/key`` (or ``s3://bucket``) of the object concerned, when known."""
        if not self.bucket:
            return None
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def _where(self) -> str:
        if self.uri:
            return self.uri
        return repr(self.key) if self.key is not None else ""

    def _render(self) -> str:
        details = [d for d in (self.code, self.request_id and f"request id {self.request_id}") if d]
        if self.attempts and self.attempts > 1:
            details.append(f"after {self.attempts} attempts")
        text = " ".join(p for p in (self.problem, self._where()) if p)
        if details:
            text += f" ({', '.join(details)})"
        if self.hint:
            text += f": {self.hint}"
        return redact(single_line(text))  # always one line, credentials in an endpoint URL masked

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor: rebuild from the attributes so errors survive pickling (multiprocessing).
        return (_rebuild, (type(self), dict(self.__dict__)))


def _rebuild(cls: type[StorageError], state: dict[str, Any]) -> StorageError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("problem", ""))
    err.__dict__.update(state)
    return err


class S3CredentialsError(StorageError):
    """No usable AWS credentials, or AWS rejected them (unknown key, bad signature, expired token)."""

    problem = "AWS credentials were not accepted for"
    hint = "check AWS_PROFILE (or run `aws sso login`) or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"


class S3AccessDeniedError(StorageError):
    """The credentials are valid but a policy denies the request."""

    problem = "access denied to"
    hint = "check the IAM policy, the bucket policy and any SCP"


class S3BucketNotFoundError(StorageError):
    """The bucket does not exist (or is not visible to this account)."""

    problem = "bucket not found:"
    hint = "check the bucket name and region, or create the bucket first"


class S3ObjectNotFoundError(StorageError, ObjectNotFound):
    """No object at the key. Also an :class:`ObjectNotFound`, so callers of any store catch one type."""

    problem = "no object at"
    hint = "check the key, or list the prefix to see what is there"


class S3PreconditionFailedError(StorageError, PreconditionFailed):
    """A conditional request (``If-None-Match``/``If-Match``) found the object other than expected (412), or
    raced another conditional write of the same key (409). Also a :class:`PreconditionFailed`."""

    problem = "the object is not as the conditional request expected:"
    hint = "another writer got there first"


class S3ThrottledError(StorageError):
    """S3 kept answering SlowDown/503 until the retry mode gave up."""

    problem = "S3 throttled requests to"
    hint = "retry later, lower the concurrency, or set CF_S3_RETRY_MODE=adaptive or a higher CF_S3_MAX_ATTEMPTS"


class S3TransferError(StorageError):
    """An upload or download failed part way (a multipart upload is aborted)."""

    problem = "transfer failed for"
    hint = "nothing was written; run the command again"


class S3ConnectionError(StorageError):
    """The S3 endpoint could not be reached or stopped answering."""

    problem = "cannot reach S3 for"
    hint = "check the network, the proxy settings and the endpoint URL (CF_S3_ENDPOINT_URL)"


class InvalidKeyError(StorageError, ValueError):
    """An object key, prefix, tenant id, bucket name or ``s3://`` URI was rejected before any request."""

    problem = "invalid object key"
    hint = "use a relative key such as 'raw/2026/01/01/metrics.csv'"


# --- translation -------------------------------------------------------------------------------------------

_UNKNOWN_KEY = "the access key id is unknown to AWS; check AWS_PROFILE or AWS_ACCESS_KEY_ID"
_EXPIRED = "the session token has expired; refresh it (`aws sso login` or new temporary credentials)"
_CREDENTIAL_HINTS = {
    "InvalidAccessKeyId": _UNKNOWN_KEY,
    "InvalidClientTokenId": _UNKNOWN_KEY,
    "UnrecognizedClientException": _UNKNOWN_KEY,
    "SignatureDoesNotMatch": "the secret key does not match the access key id; check AWS_SECRET_ACCESS_KEY "
    "or the profile's credentials",
    "ExpiredToken": _EXPIRED,
    "ExpiredTokenException": _EXPIRED,
    "TokenRefreshRequired": _EXPIRED,
    "InvalidToken": "the session token is malformed; check AWS_SESSION_TOKEN or the profile",
    "RequestTimeTooSkewed": "the system clock is off by more than 15 minutes; synchronise it (NTP)",
    "RequestExpired": "the system clock is off; synchronise it (NTP)",
}
_ACCESS_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"})
_THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "503",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
    }
)
_REGION_CODES = frozenset(
    {"PermanentRedirect", "301", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
)
_TRANSFER_CODES = frozenset(
    {"NoSuchUpload", "InvalidPart", "InvalidPartOrder", "EntityTooSmall", "BadDigest", "IncompleteBody"}
)
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
_SERVER_CODES = frozenset({"InternalError", "500", "502", "504", "RequestTimeout"})
_BUCKET_OPERATIONS = frozenset(
    {
        "HeadBucket",
        "CreateBucket",
        "ListObjectsV2",
        "ListObjects",
        "GetBucketLocation",
        "ListMultipartUploads",
    }
)
_IAM_ACTIONS = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "DeleteObject": "s3:DeleteObject",
    "DeleteObjects": "s3:DeleteObject",
    "CreateBucket": "s3:CreateBucket",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "GetBucketLocation": "s3:GetBucketLocation",
}
_CREDENTIAL_EXCEPTIONS: tuple[type[BaseException], ...] = (
    bce.NoCredentialsError,
    bce.PartialCredentialsError,
    bce.CredentialRetrievalError,
    bce.TokenRetrievalError,
    bce.NoAuthTokenError,
    bce.SSOError,
    bce.LoginError,
    bce.RefreshWithMFAUnsupportedError,
    bce.ProfileNotFound,
    bce.UnknownCredentialError,
)
_TRANSFER_EXCEPTIONS: tuple[type[BaseException], ...] = (
    bce.IncompleteReadError,
    bce.ResponseStreamingError,
    bce.ChecksumError,
    bce.FlexibleChecksumError,
    bce.AwsChunkedWrapperError,
    s3te.RetriesExceededError,
    s3te.S3UploadFailedError,
    s3te.S3DownloadFailedError,
)


def _iam_resource(bucket: str | None, key: str | None, action: str) -> str:
    if not bucket:
        return "the bucket"
    if action in (
        "s3:ListBucket",
        "s3:CreateBucket",
        "s3:ListBucketMultipartUploads",
        "s3:GetBucketLocation",
    ):
        return f"arn:aws:s3:::{bucket}"
    folder = key.rsplit("/", 1)[0] + "/" if key and "/" in key else ""
    return f"arn:aws:s3:::{bucket}/{folder}*"


def _access_hint(operation: str, bucket: str | None, key: str | None, message: str) -> str:
    action = _IAM_ACTIONS.get(operation)
    if action is None:
        hint = "check the IAM policy, the bucket policy and any SCP"
    else:
        hint = f"check the IAM policy allows {action} on {_iam_resource(bucket, key, action)}"
    if "kms" in message.lower():
        hint += " and kms:GenerateDataKey/kms:Decrypt on the bucket's KMS key"
    if operation == "HeadObject":
        hint += " (S3 also answers 403 for a missing object when s3:ListBucket is not allowed)"
    return hint


def _client_error_parts(exc: bce.ClientError) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    response: dict[str, Any] = dict(exc.response or {})
    error: dict[str, Any] = dict(response.get("Error") or {})
    meta: dict[str, Any] = dict(response.get("ResponseMetadata") or {})
    code = str(error.get("Code") or meta.get("HTTPStatusCode") or "Unknown")
    return code, str(error.get("Message") or ""), error, meta


def _from_client_error(exc: bce.ClientError, operation: str, bucket: str | None, key: str | None) -> StorageError:
    code, message, error, meta = _client_error_parts(exc)
    operation = getattr(exc, "operation_name", None) or operation
    headers: dict[str, Any] = dict(meta.get("HTTPHeaders") or {})
    common: dict[str, Any] = {
        "code": code,
        "bucket": bucket,
        "key": key,
        "request_id": meta.get("RequestId") or error.get("RequestId") or headers.get("x-amz-request-id"),
        "operation": operation,
        "status": meta.get("HTTPStatusCode"),
        "attempts": int(meta.get("RetryAttempts", 0)) + 1,
        "host_id": meta.get("HostId") or error.get("HostId"),
    }
    if code in _CREDENTIAL_HINTS:
        return S3CredentialsError(hint=_CREDENTIAL_HINTS[code], **common)
    if code in _ACCESS_CODES or (code.startswith("KMS.") and "AccessDenied" in code):
        return S3AccessDeniedError(hint=_access_hint(operation, bucket, key, message), **common)
    if code == "NoSuchBucket" or (code in ("404", "NotFound") and (not key or operation in _BUCKET_OPERATIONS)):
        return S3BucketNotFoundError(**{**common, "key": None})
    if code in ("NoSuchKey", "404", "NotFound"):
        return S3ObjectNotFoundError(**common)
    if code in _PRECONDITION_CODES:
        return S3PreconditionFailedError(**common)
    if code in _THROTTLE_CODES:
        return S3ThrottledError(**common)
    if code in _REGION_CODES:
        region = error.get("Region") or headers.get("x-amz-bucket-region")
        where = f"in region {region}" if region else "in another region"
        return StorageError(
            "wrong region for",
            hint=f"the bucket is {where}; set CF_S3_REGION to the bucket's region",
            **common,
        )
    if code in _TRANSFER_CODES:
        return S3TransferError(hint=f"{message or code}; run the command again", **common)
    if code.startswith("KMS."):
        return StorageError(
            "KMS refused the encryption key for",
            hint="check CF_S3_KMS_KEY_ID names an enabled key in this region that the role may use",
            **common,
        )
    if code in _SERVER_CODES:
        return StorageError("S3 failed on its side for", hint="retry later", **common)
    if code == "BucketAlreadyExists":
        return StorageError("bucket name is taken by another account:", hint="choose another bucket name", **common)
    return StorageError(f"{operation} failed for", hint=message or None, **common)


def translate_client_error(
    exc: BaseException, *, operation: str, bucket: str | None = None, key: str | None = None
) -> StorageError:
    """Map a botocore/s3transfer exception to the storage error hierarchy (a :class:`StorageError` is kept).

    ``operation`` names what was attempted (the S3 API name of a :class:`~botocore.exceptions.ClientError`
    takes precedence); ``bucket`` and ``key`` say where.
    """
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, bce.ClientError):
        return _from_client_error(exc, operation, bucket, key)
    where: dict[str, Any] = {"bucket": bucket, "key": key, "operation": operation, "code": type(exc).__name__}
    if isinstance(exc, _CREDENTIAL_EXCEPTIONS):
        # Raised before any request, often without a bucket: say what is wrong with the credentials themselves.
        problem = "AWS credentials cannot be used" + (" for" if bucket else "")
        if isinstance(exc, bce.NoCredentialsError):
            hint = "no AWS credentials found; set AWS_PROFILE, run `aws configure` or `aws sso login`"
        elif isinstance(exc, bce.PartialCredentialsError):
            provider, missing = exc.kwargs.get("provider", "a credential source"), exc.kwargs.get("cred_var", "a value")
            hint = (
                f"the credentials in {provider} are incomplete, {missing} is missing; "
                "complete them or set AWS_PROFILE to a profile that has both keys"
            )
        else:
            hint = f"{' '.join(str(exc).split())}; check AWS_PROFILE and the credentials it names"
        return S3CredentialsError(problem, hint=hint, **where)
    if isinstance(exc, bce.CapacityNotAvailableError):
        return S3ThrottledError(**where)
    if isinstance(exc, _TRANSFER_EXCEPTIONS):
        return S3TransferError(hint=f"{exc}; run the command again", **where)
    if isinstance(exc, bce.HTTPClientError | bce.ConnectionError):
        endpoint = getattr(exc, "kwargs", {}).get("endpoint_url")
        hint = S3ConnectionError.hint + (f"; endpoint {endpoint}" if endpoint else "")
        return S3ConnectionError(hint=hint, **where)
    if isinstance(exc, OSError):
        return S3TransferError(hint=f"local file error: {exc}", **where)
    return StorageError(f"{operation} failed for", hint=str(exc) or None, **where)
