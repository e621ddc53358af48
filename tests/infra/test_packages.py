"""Zip functions with all their layers fit Lambda's 250 MB unzipped limit, measured on the staged assets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
"""A function's code and all its layers, unzipped."""
POWERTOOLS_LAYER_BUDGET = 60 * 1024 * 1024
"""Room kept for AWS's Powertools layer, which is not staged here and so not measured: Powertools itself takes
about 7 MB installed for the Lambda platform (OFFLINE-AWS.md); AWS's layer adds its extras' dependencies."""


def staged_size(assembly_dir: Path, s3_key: str) -> int:
    """Bytes of the staged (unzipped) asset a zip ``S3Key`` points at."""
    folder = assembly_dir / f"asset.{s3_key.removesuffix('.zip')}"
    assert folder.is_dir(), f"no staged asset {folder}"
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_zip_functions_and_their_layers_fit_the_unzipped_limit(
    template_json: dict[str, Any], assembly_dir: Path
) -> None:
    resources = template_json["Resources"]
    layers = {
        logical_id: staged_size(assembly_dir, r["Properties"]["Content"]["S3Key"])
        for logical_id, r in resources.items()
        if r["Type"] == "AWS::Lambda::LayerVersion"
    }
    measured = {}
    for logical_id, r in resources.items():
        props = r["Properties"]
        if r["Type"] != "AWS::Lambda::Function" or props.get("PackageType") == "Image":
            continue
        size = staged_size(assembly_dir, props["Code"]["S3Key"])
        ours = [layer for layer in props.get("Layers", []) if isinstance(layer, dict)]
        size += sum(layers[layer["Ref"]] for layer in ours)
        # the only other layer is AWS's Powertools layer (resolved at deploy time), budgeted, not measured
        external = [layer for layer in props.get("Layers", []) if not isinstance(layer, dict)]
        assert all("/aws/service/powertools/python/" in layer for layer in external), external
        size += len(external) * POWERTOOLS_LAYER_BUDGET
        measured[logical_id] = size
        assert size <= LAMBDA_UNZIPPED_LIMIT, f"{logical_id}: {size / 2**20:.1f} MiB unzipped with its layers"
    assert measured, "no zip function in the stack"
    # The launcher's own layer holds only the light modules: kilobytes, not the scientific stack.
    assert max(measured.values()) < POWERTOOLS_LAYER_BUDGET + 1024 * 1024
