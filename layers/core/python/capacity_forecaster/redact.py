"""Redaction of secrets that URLs carry: applied where messages are formed (errors, log records, CLI lines).

``http://AKIA...:secret@host:9000/x?X-Amz-Signature=abc`` becomes ``http://***@host:9000/x?X-Amz-Signature=***``:
the credentials in the user-info part and the values of the query parameters that sign or authorise a request
are replaced, the scheme, host, port and path are kept so that the message still says where. Standard library
only (the launcher's light layer holds this module).
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["MASK", "SENSITIVE_PARAMETERS", "install_log_redaction", "redact", "redact_value", "redacting_formatter"]

MASK = "***"
SENSITIVE_PARAMETERS = (
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "awsaccesskeyid",
    "signature",
    "sig",
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "api_key",
    "apikey",
    "key",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "credential",
    "credentials",
    "auth",
    "authorization",
    "session_token",
)
"""Query parameters (case-insensitive) whose values are replaced by :data:`MASK`."""

_STOP = r"\s\"'<>`"
# scheme://userinfo@ : the user-info runs to the last '@' before the path; a "user:secret" part may hold an
# unencoded '/' or '@' (AWS secret keys do), so after a ':' it runs to the last '@' of the URL.
_USERINFO = re.compile(
    rf"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@:{_STOP}]*:[^{_STOP}]*|[^/?#{_STOP}]*)@"
)
# user:password@host with no scheme (an endpoint written without http://).
_BARE_USERINFO = re.compile(rf"(?<![\w/@.%+*-])[\w.%+-]+:(?!//)[^@{_STOP}]+@(?=[A-Za-z0-9\[])")
_PARAMETER = re.compile(
    rf"(?P<lead>[?&;](?:{'|'.join(re.escape(p) for p in SENSITIVE_PARAMETERS)})=)(?P<value>[^&#;{_STOP}]*)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with URL credentials and sensitive query parameter values replaced by ``***``."""
    if not isinstance(text, str) or not text:
        return text
    if "@" in text:
        text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@" if m["userinfo"] else m[0], text)
        text = _BARE_USERINFO.sub(f"{MASK}@", text)
    if "=" in text:
        text = _PARAMETER.sub(lambda m: m["lead"] + (MASK if m["value"] else ""), text)
    return text


def redact_value(value: Any) -> Any:
    """``value`` with every string in it redacted (dicts, lists and tuples are walked; other types kept)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


_base_factory: Any = None


def install_log_redaction() -> None:
    """Redact every standard ``logging`` record's message at creation, whichever handler writes it (idempotent).

    The message is formatted once (``msg % args``) and redacted; a record carrying an exception also gets its
    traceback text formatted and redacted, so that formatters print the clean copy.
    """
    global _base_factory
    if _base_factory is not None:
        return
    _base_factory = logging.getLogRecordFactory()
    base = _base_factory
    plain = logging.Formatter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call is logging's own error to report
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(plain.formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)


def redacting_formatter() -> Any:
    """A Powertools ``LambdaPowertoolsFormatter`` whose JSON lines are redacted (message, extra keys, exception).

    For ``Logger(logger_formatter=redacting_formatter())`` in the handlers; it also installs
    :func:`install_log_redaction` for the domain package's own loggers. Powertools is imported here, not at
    module level, so that this module stays standard library only.
    """
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    class RedactingFormatter(LambdaPowertoolsFormatter):
        def format(self, record: logging.LogRecord) -> str:
            return redact(super().format(record))

    install_log_redaction()
    return RedactingFormatter()
