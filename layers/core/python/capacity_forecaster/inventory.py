"""The server inventory (the ``servers`` table) from a planner's own file, and from EC2's DescribeInstances.

:func:`read_inventory` reads a CSV (comma, semicolon or tab) or an Excel workbook (its first sheet): a server id
column and any of application, environment, data centre, availability zone, instance type, cores, memory and
monthly cost, under their usual names (:data:`ALIASES`); every other column becomes a tag (``servers.tags``, a
JSON object). :func:`write_inventory` writes it, with cores, memory and costs the file lacks taken from the price
table by instance type (:func:`capacity_forecaster.rightsizing.complete_inventory`). Bad files are one-line
:class:`InputError` messages naming the file, the row and the column.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from capacity_forecaster.errors import InputError
from capacity_forecaster.schema import SERVERS

ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "server_id": ("server_id", "server", "hostname", "host", "host_name", "instance_id", "instance", "name", "node"),
    "application": ("application", "app", "service", "workload"),
    "environment": ("environment", "env", "stage", "tier"),
    "datacenter": ("datacenter", "data_centre", "data_center", "datacentre", "dc", "region", "site", "location"),
    "availability_zone": ("availability_zone", "az", "zone"),
    "instance_type": ("instance_type", "type", "size", "flavor", "flavour", "vm_size", "sku"),
    "cores": ("cores", "vcpus", "vcpu", "cpus", "cpu_count", "cpu_cores", "num_cpus"),
    "memory_gib": ("memory_gib", "memory_gb", "mem_gib", "mem_gb", "ram_gib", "ram_gb", "memory", "ram", "mem"),
    "monthly_cost": (
        "monthly_cost",
        "monthly_cost_usd",
        "cost_per_month",
        "monthly_usd",
        "cost_usd",
        "cost",
        "monthly_price",
        "price",
    ),
}
"""Inventory column -> the header names read as it (case, spaces, punctuation and units in brackets ignored:
``Monthly cost ($)`` is ``monthly_cost``, ``Data centre`` is ``data_centre``); the first one present wins."""
NUMERIC: Final[tuple[str, ...]] = ("cores", "memory_gib", "monthly_cost")
TAGS_COLUMN: Final = "tags"
EXCEL_SUFFIXES: Final = (".xlsx", ".xlsm")
_ZIP_MAGIC = b"PK\x03\x04"
_DECIMAL_COMMA = re.compile(r"^-?\d+,\d{1,2}$")


def header_key(name: object) -> str:
    """A header reduced to the form :data:`ALIASES` uses: lower case, units in brackets dropped, ``_`` between words."""
    text = re.sub(r"\(.*?\)|\[.*?\]", " ", str(name).strip().lower())
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


def _read_table(path: Path) -> pd.DataFrame:
    """The file's cells as text (a CSV's delimiter detected, an Excel workbook's first sheet)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not data.strip():
        raise InputError(f"{path.name}: the file is empty; an inventory needs a header row with server_id")
    if data.startswith(_ZIP_MAGIC) or path.suffix.lower() in EXCEL_SUFFIXES:
        try:
            frame = pd.read_excel(io.BytesIO(data), sheet_name=0, dtype=str, engine="openpyxl")
        except Exception as exc:  # openpyxl and zipfile raise many kinds on a broken workbook
            raise InputError(f"{path.name}: not a readable Excel workbook ({type(exc).__name__})") from None
        return frame.dropna(how="all")
    text = _decode(data, path.name)
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    delimiter = max((";", ",", "\t"), key=first.count)
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    header, body = rows[0], rows[1:]
    long = next((i for i, r in enumerate(body) if len(r) > len(header)), None)
    if long is not None:
        raise InputError(
            f"{path.name}, row {long + 2}: {len(body[long])} fields but the header has {len(header)} "
            f"(delimiter {delimiter!r}; quote cells that hold it)"
        )
    return pd.DataFrame([r + [""] * (len(header) - len(r)) for r in body], columns=header, dtype=object)


def _decode(data: bytes, name: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{name}: not UTF-8 text, nor an Excel workbook; save it as CSV UTF-8 or .xlsx") from None


def _columns(frame: pd.DataFrame, name: str) -> dict[str, str]:
    """Inventory column -> the file's header it is read from."""
    keys: dict[str, str] = {}
    for label in frame.columns:
        keys.setdefault(header_key(label), str(label))
    found: dict[str, str] = {}
    for column, aliases in ALIASES.items():
        header = next((keys[a] for a in aliases if a in keys and keys[a] not in found.values()), None)
        if header is not None:
            found[column] = header
    if "server_id" not in found:
        raise InputError(
            f"{name}: no server id column; name one {', '.join(ALIASES['server_id'])} (the columns are "
            f"{', '.join(map(str, frame.columns)) or 'none'})"
        )
    return found


def _number(text: object, name: str, row: int, column: str) -> float:
    """A cell as a number: currency signs and spaces dropped, ``1,234.5`` and ``12,5`` (decimal comma) read."""
    raw = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text).strip()
    cleaned = re.sub(r"[\s$€£¥]|USD|EUR|GBP|GiB|GB", "", raw, flags=re.IGNORECASE)
    if not cleaned:
        return float("nan")
    cleaned = cleaned.replace(",", ".") if _DECIMAL_COMMA.match(cleaned) else cleaned.replace(",", "")
    try:
        value = float(cleaned)
    except ValueError:
        raise InputError(f"{name}, row {row}: {column} {raw!r} is not a number") from None
    if not np.isfinite(value) or value < 0 or (column != "monthly_cost" and value == 0):
        raise InputError(f"{name}, row {row}: {column} {raw!r} must be a number more than 0")
    return value


def read_inventory(path: Path) -> pd.DataFrame:
    """The inventory in a CSV or Excel file as ``servers`` rows (``cost_source`` inventory where a cost is given).

    :class:`InputError` for a file that cannot be read, has no server id column or no rows, or holds a server
    twice, an empty server id or a number that is not one."""
    name = path.name
    frame = _read_table(path)
    found = _columns(frame, name)
    if frame.empty:
        raise InputError(f"{name}: the header has no rows under it")
    cells = frame.astype(object).where(frame.notna(), None)
    ids = cells[found["server_id"]].map(lambda v: "" if v is None else str(v).strip())
    if (ids == "").any():
        row = int(np.flatnonzero((ids == "").to_numpy())[0]) + 2
        raise InputError(f"{name}, row {row}: the server id ({found['server_id']}) is empty")
    repeated = ids[ids.duplicated()]
    if not repeated.empty:
        first = repeated.iloc[0]
        rows = [int(i) + 2 for i in np.flatnonzero((ids == first).to_numpy())]
        raise InputError(f"{name}: server {first} is listed {len(rows)} times (rows {', '.join(map(str, rows))})")
    out = pd.DataFrame({"server_id": ids.to_numpy()})
    for column in SERVERS.column_names[1:]:
        if column in (TAGS_COLUMN, "cost_source"):
            continue
        header = found.get(column)
        values = cells[header] if header is not None else pd.Series([None] * len(cells), index=cells.index)
        if column in NUMERIC:
            numbers = [_number(v, name, i + 2, column) for i, v in enumerate(values)]
            out[column] = pd.Series(numbers, dtype="float64")
        else:
            out[column] = [None if v is None or not str(v).strip() else str(v).strip() for v in values]
    used = set(found.values())
    extra = [c for c in cells.columns if str(c) not in used and not str(c).startswith("Unnamed:")]
    out[TAGS_COLUMN] = [_tags({str(c): cells.iloc[i][c] for c in extra}) for i in range(len(cells))]
    out["cost_source"] = np.where(out["monthly_cost"].notna(), "inventory", "")
    return out


def _tags(values: Mapping[str, object]) -> str | None:
    from capacity_forecaster.rightsizing import tags_text

    return tags_text({k: str(v).strip() for k, v in values.items() if v is not None})


def tags_of(text: object) -> dict[str, str]:
    """``servers.tags`` back as a dict ({} for none)."""
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def completed(servers: pd.DataFrame, settings: Any) -> pd.DataFrame:
    """``servers`` with what the price table of ``settings`` adds (cores, memory, costs by instance type)."""
    from capacity_forecaster import rightsizing

    table = settings.rightsizing.price_table()
    sizes = {
        name: rightsizing.Size(int(v["cores"]), float(v["memory_gib"]), float(v["monthly_cost"]))
        for name, v in table.sizes.items()
    }
    done = rightsizing.complete_inventory(servers, sizes, table.label)
    return done[SERVERS.column_names]


def write_inventory(lake: Any, servers: pd.DataFrame, settings: Any, *, merge: bool = False) -> str:
    """Write ``servers`` as the lake's inventory, replacing it (with ``merge``, replacing only the rows of the
    servers it names); returns the object's URI."""
    frame = completed(servers, settings)
    if merge:
        existing = lake.read_table(SERVERS)
        if not existing.empty:
            kept = existing[~existing["server_id"].astype(str).isin(set(frame["server_id"]))]
            frame = pd.concat([completed(kept, settings), frame], ignore_index=True) if not kept.empty else frame
    frame = frame.sort_values("server_id", ignore_index=True)
    return str(lake.write_table(SERVERS, frame)[0])


def inventory_summary(servers: pd.DataFrame) -> dict[str, int]:
    """Counts for the command's line: servers, and how many have a size, a cost (and from where), tags."""
    priced = servers["monthly_cost"].notna()
    return {
        "servers": len(servers),
        "sized": int((servers["cores"].notna() & servers["memory_gib"].notna()).sum()),
        "costs_from_inventory": int((priced & (servers["cost_source"] == "inventory")).sum()),
        "costs_from_price_table": int((priced & (servers["cost_source"] != "inventory")).sum()),
        "no_cost": int((~priced).sum()),
        "with_tags": int(servers[TAGS_COLUMN].notna().sum()),
    }


# ---------------------------------------------------------------------------------------------- EC2

EC2_TAG_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "application": ("application", "app", "service"),
    "environment": ("environment", "env", "stage"),
}
"""Inventory columns an EC2 tag fills when the inventory has no value (tag keys compared case-insensitively)."""


def ec2_rows(instances: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``servers`` rows of EC2 instances (DescribeInstances' items): the id, instance type, availability zone,
    its region as the data centre, the tags (application and environment from their usual tag keys)."""
    rows = []
    for item in instances:
        tags = {str(t.get("Key")): str(t.get("Value", "")) for t in item.get("Tags", []) if t.get("Key")}
        zone = (item.get("Placement") or {}).get("AvailabilityZone")
        row: dict[str, Any] = {
            "server_id": str(item["InstanceId"]),
            "instance_type": item.get("InstanceType"),
            "availability_zone": zone,
            "datacenter": zone[:-1] if isinstance(zone, str) and zone[-1:].isalpha() else zone,
        }
        lowered = {k.lower(): v for k, v in tags.items()}
        for column, keys in EC2_TAG_COLUMNS.items():
            row[column] = next((lowered[k] for k in keys if lowered.get(k)), None)
        from capacity_forecaster.rightsizing import tags_text

        row[TAGS_COLUMN] = tags_text(tags)
        rows.append(row)
    return pd.DataFrame(
        rows, columns=["server_id", "instance_type", "availability_zone", "datacenter", *EC2_TAG_COLUMNS, TAGS_COLUMN]
    )


def merge_ec2(existing: pd.DataFrame, ec2: pd.DataFrame) -> pd.DataFrame:
    """The inventory with EC2's facts: instance type and availability zone replaced by EC2's, the data centre,
    application and environment filled where empty, tags merged (EC2's win on a shared key); rows for instances
    the inventory lacks added. Sizes and costs derived from an instance type that changed are dropped (to be priced
    again); costs the inventory gave are kept."""
    from capacity_forecaster.rightsizing import inventory_columns, tags_text

    columns = SERVERS.column_names
    rows: dict[str, dict[str, Any]] = {
        str(r["server_id"]): {str(k): v for k, v in r.items()}
        for r in inventory_columns(existing)[columns].to_dict("records")
    }
    for record in inventory_columns(ec2)[columns].to_dict("records"):
        fresh = {str(k): v for k, v in record.items()}
        sid = str(fresh["server_id"])
        old = rows.get(sid)
        if old is None:
            rows[sid] = fresh
            continue
        row = dict(old)
        if _text(fresh["instance_type"]) and fresh["instance_type"] != old["instance_type"]:
            row.update(instance_type=fresh["instance_type"], cores=np.nan, memory_gib=np.nan)
            if old["cost_source"] != "inventory":  # a cost priced for the old type: priced again
                row.update(monthly_cost=np.nan, cost_source="")
        if _text(fresh["availability_zone"]):
            row["availability_zone"] = fresh["availability_zone"]
        for column in ("datacenter", *EC2_TAG_COLUMNS):
            if not _text(old[column]):
                row[column] = fresh[column]
        row[TAGS_COLUMN] = tags_text({**tags_of(old[TAGS_COLUMN]), **tags_of(fresh[TAGS_COLUMN])})
        rows[sid] = row
    return pd.DataFrame(list(rows.values()), columns=columns)


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())
