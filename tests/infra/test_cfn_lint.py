"""cfn-lint finds nothing in the synthesized templates (W3005: CDK's own redundant DependsOn entries)."""

from __future__ import annotations

from pathlib import Path

from cfnlint.api import ManualArgs, lint_file

IGNORED = ["W3005"]


def test_templates_pass_cfn_lint(assembly_dir: Path) -> None:
    templates = sorted(assembly_dir.glob("*.template.json"))
    assert templates, f"no template in {assembly_dir}"
    findings = [
        str(match)
        for template in templates
        for match in lint_file(template, ManualArgs(ignore_checks=IGNORED, regions=["us-east-1", "eu-west-1"]))
    ]
    assert findings == [], "\n".join(findings)
