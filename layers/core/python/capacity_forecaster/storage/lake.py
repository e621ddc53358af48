"""The lake: partitioned Parquet tables and plain objects on a local folder or an S3 prefix.

A table partition is exactly one Parquet object under a deterministic key,
``<zone>/<table>/<key>=<value>/data.parquet``, so re-writing a partition replaces it atomically (S3 PUT, or a
temporary file and a rename locally) and readers never see half of it. The lake URI alone chooses the store.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from capacity_forecaster.errors import ConfigError, SchemaError
from capacity_forecaster.schema import Column, TableSchema
from capacity_forecaster.storage.keys import parse_s3_uri, validate_key
from capacity_forecaster.storage.object_store import LocalObjectStore, ObjectStore

if TYPE_CHECKING:
    from capacity_forecaster.storage.s3_client import S3Config

DATA_OBJECT = "data.parquet"
PartitionSpec = Mapping[str, date | datetime | str]
PartitionFilter = Mapping[str, date | datetime | str | Sequence[date | datetime | str]]


def format_partition_value(value: date | datetime | str | pd.Timestamp) -> str:
    """Render a partition value for a key: dates as YYYY-MM-DD, other values as text."""
    if isinstance(value, datetime | pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def partition_key(table: TableSchema, partition: PartitionSpec | None) -> str:
    """The deterministic object key of one partition of ``table``."""
    given = dict(partition or {})
    if sorted(given) != sorted(table.partition_names):
        raise SchemaError(
            f"table {table.name} is partitioned by {table.partition_names or 'nothing'}, got {sorted(given)}"
        )
    parts = [f"{name}={format_partition_value(given[name])}" for name in table.partition_names]
    return validate_key("/".join([table.prefix, *parts, DATA_OBJECT]))


def parse_partition_key(table: TableSchema, key: str, prefix: str | None = None) -> dict[str, str] | None:
    """Partition values of an object key of ``table``, or None when the key is not one of its partitions.

    ``prefix`` is the folder holding the partitions: the table's lake prefix unless given ("" for a folder
    that holds them directly, like a SageMaker data channel).
    """
    root = table.prefix if prefix is None else prefix
    relative = key[len(root) + 1 :] if root else key
    if (root and not key.startswith(root + "/")) or not relative.endswith(DATA_OBJECT):
        return None
    middle = relative[: -len(DATA_OBJECT)].rstrip("/")
    segments = middle.split("/") if middle else []
    if len(segments) != len(table.partition_keys):
        return None
    values: dict[str, str] = {}
    for segment, column in zip(segments, table.partition_keys, strict=True):
        name, sep, value = segment.partition("=")
        if not sep or name != column.name:
            return None
        values[name] = value
    return values


def to_arrow(table: TableSchema, df: pd.DataFrame, *, with_partitions: bool = False) -> pa.Table:
    """Validate ``df`` against the table's columns and convert it to Arrow with the exact schema."""
    schema = table.arrow_schema(with_partitions=with_partitions)
    absent = [table.column(n) for n in table.optional if n not in df.columns]
    if absent:  # optional columns a writer left out are stored as nulls (or their default, when not nullable)
        df = df.assign(**{c.name: pd.Series(_absent_value(c), index=df.index, dtype="object") for c in absent})
    missing = [n for n in schema.names if n not in df.columns]
    extra = [c for c in df.columns if c not in schema.names]
    if missing or extra:
        detail = "; ".join(
            part
            for part in (
                f"missing columns {', '.join(missing)}" if missing else "",
                f"unexpected columns {', '.join(map(str, extra))}" if extra else "",
            )
            if part
        )
        raise SchemaError(f"table {table.name}: {detail}")
    arrays = []
    for field in schema:
        arrays.append(_to_arrow_column(table.name, field, df[field.name]))
    return pa.Table.from_arrays(arrays, schema=schema)


def _to_arrow_column(table_name: str, field: pa.Field, series: pd.Series) -> pa.Array:
    try:
        if pa.types.is_date32(field.type) and not pd.api.types.is_object_dtype(series.dtype):
            series = pd.to_datetime(series).dt.tz_localize(None) if _is_tz_aware(series) else series
            arr = pa.array(pd.to_datetime(series).dt.normalize(), from_pandas=True).cast(pa.timestamp("us"))
            arr = arr.cast(field.type)
        elif pa.types.is_timestamp(field.type):
            naive_utc = pd.to_datetime(series, utc=True).dt.tz_convert(None).to_numpy()
            arr = pa.array(naive_utc, from_pandas=True).cast(field.type, safe=False)
        else:
            arr = pa.array(series, from_pandas=True)
            if arr.type != field.type:
                arr = arr.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise SchemaError(f"table {table_name}: column {field.name} cannot be stored as {field.type}: {exc}") from None
    if not field.nullable and arr.null_count:
        raise SchemaError(f"table {table_name}: column {field.name} has {arr.null_count} empty values")
    return arr


def _is_tz_aware(series: pd.Series) -> bool:
    return isinstance(series.dtype, pd.DatetimeTZDtype)


def from_arrow(table: pa.Table) -> pd.DataFrame:
    """Arrow to pandas with the project's conventions: dates as datetime64, timestamps UTC-aware."""
    df = table.to_pandas(date_as_object=False)
    for field in table.schema:
        if pa.types.is_date32(field.type):
            df[field.name] = df[field.name].astype("datetime64[ns]")
    return df


def to_parquet_bytes(table: TableSchema, df: pd.DataFrame) -> bytes:
    """Serialise the data columns of ``df`` (partition columns excluded) as one Parquet object."""
    arrow = to_arrow(table, df.drop(columns=[c for c in table.partition_names if c in df.columns]))
    buf = io.BytesIO()
    pq.write_table(arrow, buf, compression="zstd")
    return buf.getvalue()


def _read_parquet_bytes(table: TableSchema, data: bytes) -> pa.Table:
    arrow = pq.read_table(io.BytesIO(data))
    return with_optional_columns(table, arrow).select(table.column_names).cast(table.arrow_schema())


def _absent_value(column: Column) -> object:
    return pd.NA if column.nullable else column.default


def with_optional_columns(table: TableSchema, arrow: pa.Table, names: Sequence[str] | None = None) -> pa.Table:
    """``arrow`` with the optional columns it lacks (of ``names``, default all) appended: nulls, or the column's
    default when it may not be null (an object written before the column was added to the schema)."""
    for name in table.optional if names is None else [n for n in names if n in table.optional]:
        if name not in arrow.column_names:
            column = table.column(name)
            value = _absent_value(column)
            filler = (
                pa.nulls(arrow.num_rows, column.type)
                if value is pd.NA
                else pa.array([value] * arrow.num_rows, column.type)
            )
            arrow = arrow.append_column(name, filler)
    return arrow


def _partition_value(value: object) -> date | datetime | str:
    return value if isinstance(value, date | datetime | str) else str(value)


def _with_partition_columns(table: TableSchema, data: bytes, values: Mapping[str, str]) -> pa.Table:
    arrow = _read_parquet_bytes(table, data)
    for column in table.partition_keys:
        arrow = arrow.append_column(
            pa.field(column.name, column.type, nullable=column.nullable),
            _partition_array(column.type, values[column.name], arrow.num_rows),
        )
    return arrow


def _partition_array(column_type: pa.DataType, value: str, length: int) -> pa.Array:
    if pa.types.is_date32(column_type):
        return pa.array([date.fromisoformat(value)] * length, type=column_type)
    return pa.array([value] * length, type=pa.string()).cast(column_type)


def _matches(values: Mapping[str, str], wanted: PartitionFilter | None) -> bool:
    if not wanted:
        return True
    for name, accepted in wanted.items():
        options = [accepted] if isinstance(accepted, str | date | datetime) else list(accepted)
        if values.get(name) not in {format_partition_value(o) for o in options}:
            return False
    return True


class Lake:
    """Tables and objects on one :class:`ObjectStore`."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @property
    def uri(self) -> str:
        return self.store.uri

    def write_partition(self, table: TableSchema, df: pd.DataFrame, partition: PartitionSpec | None = None) -> str:
        """Replace one partition of ``table`` with ``df``; return the object's URI."""
        key = partition_key(table, partition)
        return self.store.put_bytes(key, to_parquet_bytes(table, df), content_type="application/vnd.apache.parquet")

    def write_table(
        self, table: TableSchema, df: pd.DataFrame, on_written: Callable[[int], None] | None = None
    ) -> list[str]:
        """Write ``df`` split on the table's partition columns: one object per partition it covers.

        ``on_written(1)`` is called after each object, for progress bars.
        """
        if not table.partition_keys:
            return [self.write_partition(table, df)]
        names = table.partition_names
        missing = [n for n in names if n not in df.columns]
        if missing:
            raise SchemaError(f"table {table.name}: missing partition columns {', '.join(missing)}")
        uris = []
        for values, group in df.groupby(names, sort=True):
            keys = values if isinstance(values, tuple) else (values,)
            spec: dict[str, date | datetime | str] = {n: _partition_value(v) for n, v in zip(names, keys, strict=True)}
            uris.append(self.write_partition(table, group, spec))
            if on_written is not None:
                on_written(1)
        return uris

    def list_partitions(self, table: TableSchema, where: PartitionFilter | None = None) -> list[dict[str, str]]:
        """Partition values of every object of ``table`` (matching ``where``), in key order."""
        found = []
        for info in self.store.list(table.prefix + "/"):
            values = parse_partition_key(table, info.key)
            if values is not None and _matches(values, where):
                found.append(values)
        return found

    def read_arrow(self, table: TableSchema, where: PartitionFilter | None = None) -> pa.Table:
        """The whole table (or the partitions matching ``where``) as one Arrow table with partition columns."""
        pieces = [
            _with_partition_columns(table, self.store.get_bytes(partition_key(table, values)), values)
            for values in self.list_partitions(table, where)
        ]
        if not pieces:
            return table.arrow_schema(with_partitions=True).empty_table()
        return pa.concat_tables(pieces)

    def read_table(self, table: TableSchema, where: PartitionFilter | None = None) -> pd.DataFrame:
        """Like :meth:`read_arrow`, as a DataFrame."""
        return from_arrow(self.read_arrow(table, where))

    def latest_partition(self, table: TableSchema) -> dict[str, str] | None:
        """The partition with the greatest key (e.g. the newest run_date), or None for an empty table."""
        partitions = self.list_partitions(table)
        return max(partitions, key=lambda v: [v[n] for n in table.partition_names]) if partitions else None

    def delete_partition(self, table: TableSchema, partition: PartitionSpec) -> None:
        self.store.delete(partition_key(table, partition))

    def write_object_table(self, key: str, table: TableSchema, df: pd.DataFrame) -> str:
        """Write ``df`` (the table's data columns) as one Parquet object at an arbitrary key."""
        return self.store.put_bytes(
            validate_key(key), to_parquet_bytes(table, df), content_type="application/vnd.apache.parquet"
        )

    def read_object_table(self, key: str, table: TableSchema) -> pd.DataFrame:
        """Read a Parquet object written by :meth:`write_object_table`."""
        return from_arrow(_read_parquet_bytes(table, self.store.get_bytes(validate_key(key))))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; return how many."""
        keys = [info.key for info in self.store.list(validate_key(prefix.rstrip("/")) + "/")]
        for key in keys:
            self.store.delete(key)
        return len(keys)


def read_partitioned_dir(
    path: Path, table: TableSchema, keep: Callable[[pa.Table], pa.Table] | None = None
) -> pd.DataFrame:
    """Read a table's Hive-partitioned objects from a local folder (e.g. a SageMaker data channel); ``keep``
    filters each object's rows as it is read, so only the kept rows are held."""
    store = LocalObjectStore(path)
    pieces = []
    for info in store.list(""):
        values = parse_partition_key(table, info.key, prefix="")
        if values is not None:
            piece = _with_partition_columns(table, store.get_bytes(info.key), values)
            pieces.append(piece if keep is None else keep(piece))
    if not pieces:
        return from_arrow(table.arrow_schema(with_partitions=True).empty_table())
    return from_arrow(pa.concat_tables(pieces))


def open_lake(uri: str | Path, s3_config: S3Config | None = None) -> Lake:
    """Open the lake at a local path or an ``s3://bucket/prefix`` URI."""
    text = str(uri)
    if text.startswith("s3://"):
        from capacity_forecaster.storage.s3_client import S3Client
        from capacity_forecaster.storage.s3_store import S3ObjectStore

        bucket, prefix = parse_s3_uri(text)
        return Lake(S3ObjectStore(S3Client(s3_config), bucket, prefix))
    if "://" in text:
        raise ConfigError(f"lake URI {text!r} is neither a local folder nor s3://bucket/prefix")
    return Lake(LocalObjectStore(local_lake_root(text)))


def local_lake_root(text: str) -> Path:
    """The absolute folder of a local lake; ConfigError when it is a file, lies under one, cannot be read, or
    does not exist and cannot be created (the folder itself is made by the first write)."""
    try:
        root = Path(text).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise ConfigError(f"lake {root} is a file, not a folder: choose a folder for --lake")
        if root.is_dir():
            if not os.access(root, os.R_OK | os.X_OK):
                raise ConfigError(f"lake {root} cannot be read by this user: check its permissions")
            return root
        parent = next(p for p in root.parents if p.exists())
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"lake {text!r} is not a usable folder: {' '.join(str(exc).split())}") from None
    if not parent.is_dir():
        raise ConfigError(f"lake {root} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"lake {root} cannot be created: this user cannot write in {parent}")
    return root
