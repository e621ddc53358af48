"""Instance sizes and prices: the EC2 on-demand price table shipped with the package, or a price file of one's own.

A price table maps an instance type to its vCPUs, memory and monthly cost (USD, hourly list price x
:data:`HOURS_PER_MONTH`). The shipped one (``data/ec2_prices.csv``) holds the common EC2 families' on-demand Linux
prices in us-east-1, with the date they were taken (``# price_date:``). ``rightsizing.price_file`` replaces it,
``rightsizing.instance_types`` overrides or adds single types (:meth:`RightsizingSettings.sizes`).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Final

from capacity_forecaster.errors import ConfigError

HOURS_PER_MONTH: Final = 730.0
"""Hours in the average month (8,760 / 12), as AWS's pricing calculator counts them."""
SHIPPED_PRICES: Final = "ec2_prices.csv"
_HEADER = re.compile(r"#\s*([a-z_]+)\s*:\s*(.+?)\s*$")
_CORES = ("vcpus", "cores", "vcpu")
_COSTS = ("monthly_cost", "hourly_usd")


@dataclass(frozen=True)
class PriceTable:
    """Instance type -> {cores, memory_gib, monthly_cost}; where the prices come from and their date."""

    sizes: dict[str, dict[str, float]]
    source: str
    price_date: str | None = None

    @property
    def label(self) -> str:
        """``price table 2025-01-01`` (or the file's name when it carries no date), for ``cost_source``."""
        return f"price table {self.price_date}" if self.price_date else f"price table {self.source}"


def parse_price_table(text: str, source: str) -> PriceTable:
    """Read a price table: ``# key: value`` header lines (``price_date``), then a CSV with instance_type, vcpus
    (or cores), memory_gib and hourly_usd (or monthly_cost). A bad table is a one-line :class:`ConfigError`."""
    meta = {m.group(1): m.group(2) for line in text.splitlines() if (m := _HEADER.match(line.strip()))}
    rows = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(rows)))
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    cores = next((c for c in _CORES if c in fields), None)
    cost = next((c for c in _COSTS if c in fields), None)
    if "instance_type" not in fields or cores is None or "memory_gib" not in fields or cost is None:
        raise ConfigError(
            f"price table {source} needs the columns instance_type, vcpus, memory_gib and hourly_usd (or "
            f"monthly_cost); it has {', '.join(fields) or 'none'}"
        )
    sizes: dict[str, dict[str, float]] = {}
    for number, raw in enumerate(reader, start=2):
        row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        name = row["instance_type"]
        try:
            values = float(row[cores]), float(row["memory_gib"]), float(row[cost])
        except ValueError:
            raise ConfigError(f"price table {source}, row {number} ({name or 'no type'}): not a number") from None
        if not name or values[0] <= 0 or values[1] <= 0 or values[2] < 0:
            raise ConfigError(
                f"price table {source}, row {number}: needs an instance type, vcpus and memory_gib > 0 and a price >= 0"
            )
        monthly = values[2] * HOURS_PER_MONTH if cost == "hourly_usd" else values[2]
        sizes[name] = {"cores": values[0], "memory_gib": values[1], "monthly_cost": round(monthly, 2)}
    if not sizes:
        raise ConfigError(f"price table {source} holds no instance types")
    return PriceTable(sizes, source, meta.get("price_date"))


def load_price_table(path: str = "") -> PriceTable:
    """The price table at ``path`` (read again when the file changes); the shipped EC2 table for ``""``."""
    if not path:
        return _shipped()
    file = Path(path).expanduser()
    try:
        stat = file.stat()
    except (OSError, ValueError) as exc:  # ValueError: a NUL character in the path
        raise ConfigError(f"rightsizing.price_file {path}: cannot be read ({type(exc).__name__})") from None
    return _read_file(str(file), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=1)
def _shipped() -> PriceTable:
    text = resources.files("capacity_forecaster").joinpath("data", SHIPPED_PRICES).read_text(encoding="utf-8")
    return parse_price_table(text, SHIPPED_PRICES)


@lru_cache(maxsize=8)
def _read_file(path: str, mtime_ns: int, size: int) -> PriceTable:
    del mtime_ns, size  # the cache key: a changed file is read again
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"rightsizing.price_file {path}: cannot be read ({type(exc).__name__})") from None
    return parse_price_table(text, Path(path).name)
