"""cdk-nag's AwsSolutions pack runs on every synth and finds nothing unacknowledged; each ack has a reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk

ACK_METADATA = cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY  # "aws:cdk:acknowledged-rules"
MIN_REASON = 30
"""A reason says why the finding does not apply here; a few words are not one."""


def test_aws_solutions_pack_is_registered(cdk_app: cdk.App) -> None:
    # Validations.of(app).plugins is not exposed to Python yet; this older getter lists the same plugins.
    plugins = cdk_app.policy_validation_beta1
    assert [p.name for p in plugins] == ["AwsSolutions"]


def test_no_unacknowledged_finding(validation_report: dict[str, Any]) -> None:
    findings = [
        f"{plugin['pluginName']}: {v['ruleName']} at {c['constructPath']}: {v['description']}"
        for plugin in validation_report["pluginReports"]
        for v in plugin.get("violations", [])
        for c in v.get("violatingConstructs", [])
    ]
    assert findings == [], "\n".join(findings)
    assert all(p.get("conclusion") != "failure" for p in validation_report["pluginReports"])


def acknowledgments(assembly_dir: Path) -> list[tuple[str, str, str]]:
    """(construct path, rule id, reason) for every acknowledgment recorded in the assembly's metadata."""
    files = sorted(assembly_dir.glob("*.metadata.json"))
    sources = [json.loads(p.read_text(encoding="utf-8")) for p in files]
    manifest = json.loads((assembly_dir / "manifest.json").read_text(encoding="utf-8"))
    sources += [a.get("metadata", {}) for a in manifest.get("artifacts", {}).values()]
    found: list[tuple[str, str, str]] = []
    for metadata in sources:
        for construct_path, entries in metadata.items():
            for entry in entries:
                if entry.get("type") == ACK_METADATA:
                    found += [(construct_path, rule, reason) for rule, reason in entry["data"].items()]
    return found


def test_every_acknowledgment_has_a_reason_at_a_narrow_construct(assembly_dir: Path) -> None:
    for construct_path, rule, reason in acknowledgments(assembly_dir):
        where = f"{rule} at {construct_path}"
        assert len(reason.strip()) >= MIN_REASON, f"{where}: the reason is missing or too short: {reason!r}"
        # /Stack/Component/Resource at least: never the app, the stack or a whole component.
        assert construct_path.strip("/").count("/") >= 2, f"{where}: acknowledge at the narrowest construct"
