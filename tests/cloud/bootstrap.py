"""What runs inside each image's interpreter: record every AWS call, then run a handler or an entry point.

The runner passes this file's text to ``python -S -c`` (so no folder of the test suite lands on the path) with
one argument, a JSON spec. Before anything imports boto3, every botocore ``Session`` created from then on gets
two event hooks: ``provide-client-params`` keeps the call's service, operation and parameters (bucket, key,
prefix, topic, training job, KMS and SSE settings, Athena workgroup and the head of a statement; bodies are left
out), ``after-call`` adds the HTTP status, the error code and the response's encryption facts, and writes the call
as one JSON line to ``spec["calls"]``.

Then either ``spec["handler"]`` (``module:function``) is called with the event in ``spec["event"]`` and a
Lambda context, its return value written to ``spec["result"]`` and printed; or ``spec["script"]`` (the training
entry point) or ``spec["module"]`` (as ``python -m``: the processing entry point) is run as ``__main__`` and its
exit code written. The modules loaded (name -> file) go to
``spec["modules"]`` so the runner can check nothing came from outside the image.

Only the standard library is imported here at the top: the hooks must not need what the image may lack.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

KEEP = (
    "Bucket",
    "Key",
    "Prefix",
    "Delimiter",
    "MaxKeys",
    "CopySource",
    "UploadId",
    "PartNumber",
    "ServerSideEncryption",
    "SSEKMSKeyId",
    "IfNoneMatch",
    "IfMatch",
    "TopicArn",
    "TargetArn",
    "Subject",
    "TrainingJobName",
    "RoleArn",
    "KeyId",
    "Namespace",
    "Tags",
    "OutputDataConfig",
    "Environment",
    "WorkGroup",
    "QueryExecutionId",
    "QueryExecutionContext",
)
RESPONSE_KEEP = ("ServerSideEncryption", "SSEKMSKeyId", "TrainingJobArn", "MessageId", "KeyCount", "QueryExecutionId")


def statement_head(sql: str) -> str:
    """The start of an SQL statement without its leading ``--`` comment lines (what it does, e.g. which view
    it creates)."""
    lines = sql.strip().splitlines()
    while lines and lines[0].lstrip().startswith("--"):
        lines.pop(0)
    return " ".join(" ".join(lines).split())[:200]


def _plain(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value[:300] if isinstance(value, str) else value
    if depth > 4:
        return repr(value)[:100]
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value[:1000]]
    return repr(value)[:100]


def recorder(path: str, source: str = "") -> tuple[Callable[..., None], Callable[..., None]]:
    """The two hooks (before, after) that append each call to ``path`` as one JSON line.

    An Athena call on a query execution gets the ``WorkGroup`` the query was started in (its IAM resource)."""
    workgroups: dict[str, str] = {}

    def before(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        kept: dict[str, Any] = {k: _plain(params[k]) for k in KEEP if k in params}
        if "Delete" in params:
            kept["Delete"] = {"Objects": [{"Key": o.get("Key")} for o in params["Delete"].get("Objects", [])]}
        if "QueryString" in params:
            kept["QueryString"] = statement_head(str(params["QueryString"]))
        if "QueryExecutionId" in params and "WorkGroup" not in params and params["QueryExecutionId"] in workgroups:
            kept["WorkGroup"] = workgroups[params["QueryExecutionId"]]
        context["cf_call"] = {
            "service": model.service_model.service_name,
            "operation": model.name,
            "params": kept,
            "source": source,
            "time": time.time(),
        }

    def after(http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        call = context.pop("cf_call", None)
        if call is None:
            return
        call["status"] = getattr(http_response, "status_code", None)
        call["error"] = (parsed.get("Error") or {}).get("Code") if isinstance(parsed, dict) else None
        if isinstance(parsed, dict):
            call["response"] = {k: _plain(parsed[k]) for k in RESPONSE_KEEP if k in parsed}
            if call["operation"] == "StartQueryExecution" and "QueryExecutionId" in parsed:
                workgroups[str(parsed["QueryExecutionId"])] = str(call["params"].get("WorkGroup", "primary"))
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(call, default=str) + "\n")

    return before, after


def register(emitter: Any, path: str, source: str = "") -> None:
    """Attach the recorder to one event emitter (a botocore session's, or a client's ``meta.events``)."""
    before, after = recorder(path, source)
    emitter.register("provide-client-params", before)
    emitter.register("after-call", after)


def install(path: str, source: str = "") -> None:
    """Record the calls of every botocore Session created from now on."""
    import botocore.session

    original = botocore.session.Session.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        register(self, path, source)

    botocore.session.Session.__init__ = init  # type: ignore[method-assign]


class LambdaContext:
    """What the Lambda runtime passes as ``context`` (the attributes Powertools reads)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.function_name = spec["function_name"]
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec["function_arn"]
        self.memory_limit_in_mb = int(spec.get("memory_mb", 1024))
        self.aws_request_id = spec.get("request_id", "00000000-0000-4000-8000-000000000000")
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "2026/11/23/[$LATEST]cloud-test"
        self._deadline = time.monotonic() + int(spec.get("timeout_s", 900))

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main(spec: dict[str, Any]) -> int:
    install(spec["calls"], spec.get("source", ""))
    code = 0
    try:
        if "handler" in spec:
            import importlib

            module_name, function = spec["handler"].rsplit(".", 1)
            handler = getattr(importlib.import_module(module_name), function)
            with open(spec["event"], encoding="utf-8") as f:
                event = json.load(f)
            result = handler(event, LambdaContext(spec["context"]))
            with open(spec["result"], "w", encoding="utf-8") as out:
                json.dump(result, out, default=str)
            print("CF-RESULT " + json.dumps(result, default=str), flush=True)
        else:
            import runpy

            try:
                if "module" in spec:
                    sys.argv = [spec["module"], *spec.get("argv", [])]
                    runpy.run_module(spec["module"], run_name="__main__", alter_sys=True)
                else:
                    runpy.run_path(spec["script"], run_name="__main__")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            with open(spec["result"], "w", encoding="utf-8") as out:
                json.dump({"exit_code": code}, out)
    finally:
        files = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
        with open(spec["modules"], "w", encoding="utf-8") as out:
            json.dump({n: f for n, f in files.items() if f}, out)
    return code


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
