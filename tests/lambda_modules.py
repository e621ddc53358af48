"""Lambda handlers as the tests load them: each handler file as its own module, and the context object."""

from __future__ import annotations

import importlib.util
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

LAMBDAS = Path(__file__).resolve().parents[1] / "lambdas"


def load_handler(name: str) -> ModuleType:
    """A fresh module from ``lambdas/<name>/handler.py``, registered in ``sys.modules`` (its dataclasses
    look themselves up there)."""
    spec = importlib.util.spec_from_file_location(f"cf_lambda_{name}", LAMBDAS / name / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class LambdaContext:
    """The LambdaContext fields Powertools reads."""

    function_name: str = "capacity-forecaster-test"
    memory_limit_in_mb: int = 1024
    aws_request_id: str = "5b441b59-a550-11c8-6564-f1c833cf438c"
    timeout_s: float = 900.0
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.started + self.timeout_s - time.monotonic()) * 1000))

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
