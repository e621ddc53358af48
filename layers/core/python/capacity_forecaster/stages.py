"""The pipeline stages with their lake I/O: generate, etl, train, risk.

Each stage reads its inputs through a :class:`Lake`, calls the pure domain functions, writes whole partitions
and returns a :class:`StageResult` with counts for logs, handlers and the CLI.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from capacity_forecaster import etl, etl_stream
from capacity_forecaster.access import (
    DEMO_FLEET_PREFIX,
    ETL_SAMPLES_PREFIX,
    QUARANTINED_FILES_PREFIX,
    REPORTS_PREFIX,
    UPLOADS_PREFIX,
)
from capacity_forecaster.errors import CapacityForecasterError, InputError
from capacity_forecaster.progress import NullProgress, ProgressReporter
from capacity_forecaster.raw_formats import too_large
from capacity_forecaster.risk_inputs import champion_forecasts, champion_statuses, recent_observed
from capacity_forecaster.schema import (
    CONSOLIDATION,
    ETL_FILES,
    ETL_RUNS,
    FORECASTS,
    FORECASTS_HOURLY,
    GROUND_TRUTH,
    METRICS_DAILY,
    METRICS_DAILY_FLAGS,
    METRICS_HOURLY,
    MODEL_METRICS,
    MODEL_METRICS_HOURLY,
    QUARANTINE,
    RAW_SAMPLES,
    RISK_REGISTER,
    SERIES_PROFILE,
    SERVER_ATTRIBUTES,
    SERVERS,
)
from capacity_forecaster.settings import RiskSettings, Settings, settings_hyperparameters
from capacity_forecaster.storage.lake import Lake, partition_key
from capacity_forecaster.storage.lease import Lease

if TYPE_CHECKING:
    from capacity_forecaster.generate import FleetSpec

log = logging.getLogger(__name__)

RAW_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".json", ".json.gz", ".xlsx", ".tsv", ".tsv.gz", ".txt", ".txt.gz")
ETL_LEASE = "etl"
"""The lease every ETL run holds (``state/locks/etl.json``): CLI runs and the ETL Lambda, one at a time."""
RISK_LEASE = "risk"
"""The lease of publishing a training run and building its risk register (the risk Lambda, ``risk`` in the CLI)."""
MAX_ETL_PASSES = 3
"""An ETL run processes, before it releases its lease, raw objects that landed while it ran: at most this many
rounds of new objects in all (a run refused by the lease counts on it)."""
MAX_PASS_ROWS = 12_000_000
"""A pass stops taking files once it has staged this many rows (the day's increment of 10,000 servers x 4
metrics, 11.5 million 5-minute samples, is one pass), or :data:`MAX_PASS_SERIES_DAYS`; the files left go to the
next pass of the same run. A backlog (a history of years uploaded at once: 43.8 million daily rows at 10,000
servers) is so processed in passes of bounded memory, each committed on its own, instead of one pass that runs
out of memory on every retry. A ``full`` reprocessing is one pass."""
PASS_TIME_HEADROOM = 1.5
"""A run with a deadline starts another pass only with this many times its longest pass left."""
MAX_PASS_SERIES_DAYS = 6_000_000
"""A pass stops taking files once its valid rows hold this many (server, metric, day): the rows the aggregate
returns to pandas for gap filling and the partition writes. Passes of 12 million daily rows (one row a series
and day) peaked at 3.6 GB, about 0.28 KB a series-day over a 270 MB base; 6 million plan 1.9 GB, inside the 3,008
MB Lambda with its headroom (the day's increment of 5-minute samples at 10,000 servers: 40,000)."""


@dataclass
class StageResult:
    """What a stage did: counts for the summary, and the URIs it wrote."""

    stage: str
    counts: dict[str, Any] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """One line each on what the stage could not do with the lake's data (what is missing, and what to do)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------- generate


DEMO_FLEET_KEY = DEMO_FLEET_PREFIX + "fleet.json"
"""The generator's record of the fleet a lake holds: what the next appending run continues."""


def fleet_spec(settings: Settings, run_date: date) -> FleetSpec:
    """What the generate stage generates for ``run_date``: the fleet settings, the horizon, the risk
    thresholds (for the ground truth), history ending the day before the run unless ``fleet.end_date`` says."""
    from capacity_forecaster.generate import FleetSpec

    fleet_settings = settings.fleet
    return FleetSpec(
        servers=fleet_settings.servers,
        days=fleet_settings.days,
        end_date=fleet_settings.end_date or (run_date - timedelta(days=1)),
        horizon_days=settings.horizon_days,
        seed=fleet_settings.seed,
        country=fleet_settings.country,
        thresholds=dict(settings.risk.thresholds),
    )


def refuse_user_uploads(lake: Lake) -> None:
    """Raise :class:`InputError` when the lake holds user uploads: the demo fleet needs a lake of its own."""
    upload = next(iter(lake.store.list(UPLOADS_PREFIX)), None)
    if upload is not None:
        raise InputError(
            f"the lake holds user uploads ({upload.key}): the demo generator writes synthetic srv-* servers and "
            "their inventory, so it runs only on a lake of its own"
        )


def _fleet_record(spec: FleetSpec) -> dict[str, Any]:
    """What makes the fleet's values: a later run rebuilds the same fleet from it (``FleetSpec`` fields)."""
    return {
        "first_day": spec.start_date.isoformat(),
        "last_day": spec.end_date.isoformat(),
        "servers": spec.servers,
        "days": spec.days,
        "horizon_days": spec.horizon_days,
        "seed": spec.seed,
        "country": spec.country,
        "thresholds": dict(spec.thresholds),
        "missing_rate": spec.missing_rate,
    }


def _continued_spec(lake: Lake, spec: FleetSpec) -> tuple[FleetSpec, date] | None:
    """The lake's fleet extended to ``spec.end_date`` and the last day it holds; None for a lake without one.

    The fleet's shape comes from the lake's record (settings changed since do not change a fleet half
    written); a lake written before records were kept is read from its raw partitions and ``spec``."""
    from capacity_forecaster.generate import FleetSpec

    if lake.store.exists(DEMO_FLEET_KEY):
        try:
            record = json.loads(lake.store.get_bytes(DEMO_FLEET_KEY))
            fields = {k: v for k, v in record.items() if k not in ("first_day", "last_day")}
            first, last = date.fromisoformat(record["first_day"]), date.fromisoformat(record["last_day"])
            return FleetSpec(**fields, first_day=first, end_date=max(spec.end_date, last)), last
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{DEMO_FLEET_KEY} in the lake is not a fleet record this version reads ({exc})") from None
    days = sorted(date.fromisoformat(v["dt"]) for v in lake.list_partitions(RAW_SAMPLES))
    if not days:
        return None
    first, last = days[0], days[-1]
    if (last - first).days + 1 < spec.days:
        raise InputError(
            f"the lake's synthetic history ({first} to {last}) is shorter than fleet.days={spec.days}, and it has "
            f"no {DEMO_FLEET_KEY} to say how it was made: generate into a lake of its own"
        )
    return replace(spec, first_day=first, end_date=max(spec.end_date, last)), last


def run_generate(
    lake: Lake,
    settings: Settings,
    *,
    run_date: date,
    raw_days: Sequence[date] = (),
    append: bool = False,
    progress: ProgressReporter | None = None,
) -> StageResult:
    """Generate the synthetic fleet into the raw zone: one daily-P95 export partition per day.

    Days named in ``raw_days`` get 5-minute samples instead, for the ETL to aggregate. The fleet inventory and
    the planted ground truth go to their own tables. With ``append``, a lake that already holds a fleet gets
    only the days after its last one, continuing it (the values a generation of the whole span gives), and
    nothing it holds is rewritten; the inventory and ground truth are written by the first run only. A lake
    holding user uploads is refused (:class:`InputError`).
    """
    from capacity_forecaster.generate import (
        daily_as_raw_samples,
        generate_fleet,
        generate_raw_samples,
    )

    reporter: ProgressReporter = progress or NullProgress()
    refuse_user_uploads(lake)
    spec = fleet_spec(settings, run_date)
    continued = _continued_spec(lake, spec) if append else None
    if continued is not None:
        spec, last = continued
    with reporter.task("generate fleet", 1) as advance:
        fleet = generate_fleet(spec)
        advance(1)
    daily = fleet.daily if continued is None else fleet.daily[fleet.daily["dt"] > pd.Timestamp(last)]
    raw = daily_as_raw_samples(daily)
    sampled = [d for d in raw_days if continued is None or d > last]  # appending: the new days only
    if sampled:
        samples = generate_raw_samples(fleet, sampled, seed=spec.seed)
        raw = pd.concat([raw[~raw["dt"].isin({pd.Timestamp(d) for d in sampled})], samples], ignore_index=True)
    written = []
    if continued is None:
        written += [
            lake.write_table(SERVERS, fleet.servers)[0],
            lake.write_table(GROUND_TRUTH, fleet.ground_truth)[0],
        ]
    n_days = int(raw["dt"].nunique())
    with reporter.task("write raw samples", n_days) as advance:
        written += lake.write_table(RAW_SAMPLES, raw, on_written=advance)
    if continued is None or n_days:  # after the days it names, so a failed run is written again next time
        written.append(lake.store.put_bytes(DEMO_FLEET_KEY, json.dumps(_fleet_record(spec), indent=1).encode()))
    counts: dict[str, Any] = {
        "servers": len(fleet.servers),
        "days": n_days,
        "raw_rows": len(raw),
        "first_day": raw["dt"].min().date().isoformat() if n_days else None,
        "last_day": raw["dt"].max().date().isoformat() if n_days else None,
    }
    if continued is None:
        counts["series_breaching_in_truth"] = int(fleet.ground_truth["will_breach"].sum())
    return StageResult("generate", counts, written)


# --------------------------------------------------------------------------------------------- etl


def is_raw_input(key: str) -> bool:
    """Raw objects the ETL reads: the generator's partitions and user uploads in the long format."""
    if key.startswith(RAW_SAMPLES.prefix + "/"):
        return key.endswith("/data.parquet")
    return key.startswith(UPLOADS_PREFIX) and key.lower().endswith(RAW_SUFFIXES)


def _read_manifest(lake: Lake) -> pd.DataFrame:
    key = partition_key(ETL_FILES, None)
    if not lake.store.exists(key):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ETL_FILES.column_names})
    return lake.read_table(ETL_FILES)


def _read_raw(lake: Lake, key: str, settings: Settings | None = None, size: int | None = None) -> pd.DataFrame:
    aliases = settings.ingest.aliases() if settings is not None else None
    # New objects (``size`` known) are held to the limit; files already processed are read as they were.
    limit = settings.ingest.max_file_bytes if settings is not None and size is not None else None
    if limit is not None and size is not None and size > limit:
        raise too_large(key, size, limit)  # not read: moved aside as it is
    frame = etl.read_raw_object(key, lake.store.get_bytes(key), aliases, max_bytes=limit)
    return frame.assign(source=key, row_number=range(len(frame)))


def _stage_raw(
    lake: Lake, staging: etl_stream.Staging, idx: int, info: Any, settings: Settings, now: pd.Timestamp
) -> int:
    """Download one new raw object, validate its rows chunk by chunk into ``staging``; return its row count."""
    limit = settings.ingest.max_file_bytes
    if info.size is not None and info.size > limit:
        raise too_large(info.key, info.size, limit)  # not read: moved aside as it is
    local = lake.store.download_file(info.key, staging.folder / "download" / f"{idx:06d}")
    try:
        aliases = settings.ingest.aliases()
        chunks = etl_stream.iter_raw_chunks(info.key, local, aliases, max_bytes=limit)
        return staging.stage_file(idx, info.key, chunks, now=now, aliases=aliases)
    finally:
        local.unlink(missing_ok=True)


def run_etl(
    lake: Lake,
    settings: Settings,
    *,
    now: datetime | None = None,
    full: bool = False,
    progress: ProgressReporter | None = None,
    deadline: float | None = None,
) -> StageResult:
    """Validate new raw objects, quarantine bad rows, and rewrite the daily partitions they touch.

    Each raw object is processed once (tracked in ``etl_files``); ``full`` reprocesses everything. Counts
    reconcile: rows in = rows written + rows quarantined. Every pass records a row in ``etl_runs``: ``started``
    before its first write, ``succeeded`` after its files are recorded in ``etl_files`` (the commit point), or
    ``failed`` with the reason when it raises. A row left ``started`` by a killed run is settled by the next run
    (see :func:`_settle_interrupted_runs`), so that after a rerun every raw row is counted once.

    The run holds the ``etl`` lease (:class:`~capacity_forecaster.storage.lease.LeaseHeld`, a one-line error,
    when another ETL run holds it). Before releasing it, the run looks for raw objects that landed meanwhile
    and processes them in another pass, so a run refused by the lease loses nothing.

    ``deadline`` (a :func:`time.monotonic` time; the ETL Lambda's end less a margin) stops the run from starting
    a pass that would not finish by then, at :data:`PASS_TIME_HEADROOM` times its longest pass so far: the files
    left stay new for the next run (``files_left`` in the counts) instead of a pass killed halfway.
    """
    with Lease(lake.store, ETL_LEASE):
        _settle_interrupted_runs(lake)
        pending = _new_raw_objects(lake, _read_manifest(lake), full=full)
        started = time.monotonic()
        result, pending = _etl_pass(lake, settings, now=now, full=full, progress=progress, objects=pending)
        longest = time.monotonic() - started
        passes, rounds = 1, 1

        def no_time() -> bool:
            return deadline is not None and time.monotonic() + PASS_TIME_HEADROOM * longest > deadline

        while True:
            while pending:  # this round's files left by a pass's row budget, as they are now
                current = {o.key: o for o in _new_raw_objects(lake, _read_manifest(lake), full=False)}
                pending = [current[o.key] for o in pending if o.key in current]
                if not pending or no_time():
                    break
                started = time.monotonic()
                later, pending = _etl_pass(lake, settings, now=now, full=False, progress=progress, objects=pending)
                longest = max(longest, time.monotonic() - started)
                result = _merge_passes(result, later)
                passes += 1
            if pending:
                result.counts["files_left"] = len(pending)
                break
            if rounds >= MAX_ETL_PASSES or no_time():
                break
            pending = _new_raw_objects(lake, _read_manifest(lake), full=False)
            if not pending:
                break
            rounds += 1
    if passes > 1:
        result.counts["passes"] = passes
    return result


def _new_raw_objects(lake: Lake, manifest: pd.DataFrame, *, full: bool) -> list[Any]:
    """Raw objects not yet processed in their current version (every raw object with ``full``)."""
    objects = [o for o in lake.store.list("raw/") if is_raw_input(o.key)]
    seen = set() if full else set(zip(manifest["key"], manifest["fingerprint"], strict=True))
    new = [o for o in objects if (o.key, _fingerprint(o)) not in seen]
    # A key listed twice (or re-delivered unchanged) is processed once.
    return list({o.key: o for o in new}.values())


def _merge_passes(first: StageResult, later: StageResult) -> StageResult:
    """The counts of two ETL passes together: numbers added, lists joined, the run ids listed."""
    counts = dict(first.counts)
    for key, value in later.counts.items():
        mine = counts.get(key)
        if key == "run_id":
            counts["run_ids"] = [*counts.get("run_ids", [mine]), value]
        elif isinstance(value, int) and isinstance(mine, int):
            counts[key] = mine + value
        elif isinstance(value, list):
            counts[key] = [*(mine or []), *value]
        elif isinstance(value, dict):
            merged = dict(mine or {})
            for reason, n in value.items():
                merged[reason] = merged.get(reason, 0) + n
            counts[key] = merged
        else:
            counts[key] = value
    return StageResult(first.stage, counts, [*first.written, *later.written])


def _etl_pass(
    lake: Lake,
    settings: Settings,
    *,
    now: datetime | None,
    full: bool,
    progress: ProgressReporter | None,
    objects: list[Any],
) -> tuple[StageResult, list[Any]]:
    """One pass of the ETL over ``objects`` (raw objects new at the run's start, see :func:`run_etl`), up to
    :data:`MAX_PASS_ROWS` staged rows or :data:`MAX_PASS_SERIES_DAYS` unless ``full``; returns its result and the
    objects it left.

    Write order, so that a kill between any two writes is settled by a rerun: the ``started`` run row (with
    the counts), the curated partitions, quarantine rows and copies of unreadable files (all replaced whole,
    recomputed by a rerun), then ``etl_files`` (the commit), the ``succeeded`` row, and last the unreadable
    files' deletion from the raw zone."""
    started = now or utc_now()
    run_id = f"etl-{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    committed = False
    try:
        result, finish, left = _etl_pass_writes(
            lake, settings, started, run_id, full, progress or NullProgress(), objects
        )
        committed = True
        finish()
        return result, left
    except Exception as exc:
        if not committed:  # the run recorded nothing: its row says why, with counts of 0
            _record_failure(lake, run_id, started, exc)
        raise


def _etl_pass_writes(
    lake: Lake,
    settings: Settings,
    started: datetime,
    run_id: str,
    full: bool,
    reporter: ProgressReporter,
    objects: list[Any],
) -> tuple[StageResult, Callable[[], None], list[Any]]:
    """The pass up to its commit (``etl_files`` written); returns its result, the steps after the commit and
    the objects left for the next pass."""
    manifest = _read_manifest(lake)
    new, left = list(objects), []
    limit = pd.Timestamp(started) + pd.Timedelta(minutes=settings.etl.future_tolerance_minutes)
    run_day = started.date()
    with etl_stream.work_folder() as folder:
        staging = etl_stream.Staging(folder)
        file_rows: list[tuple[Any, int]] = []
        rejected_files: list[tuple[Any, str]] = []
        with reporter.task("etl: read and validate raw files", len(new)) as advance:
            for idx, info in enumerate(objects):
                if not full and (staging.rows_in >= MAX_PASS_ROWS or staging.series_days >= MAX_PASS_SERIES_DAYS):
                    new, left = list(objects[:idx]), list(objects[idx:])
                    break
                try:
                    file_rows.append((info, _stage_raw(lake, staging, idx, info, settings, limit)))
                except InputError as exc:
                    rejected_files.append((info, str(exc)))
                advance(1)
        new_keys = {o.key for o in new}
        con = etl_stream.connect(folder, sum(int(info.size or 0) for info, _ in file_rows), staging.rows_in)
        try:
            days = etl_stream.staged_days(con, staging)
            context_files, legacy = _context_parts(lake, manifest, new_keys, days, folder, settings, limit)
            etl_stream.deduplicate(con, staging, context_files)
            rows_valid, _ = etl_stream.counts(con)
            rejected = etl_stream.rejected_rows(con, staging)
            etl.reconcile(staging.rows_in, rows_valid, len(rejected))

            reasons = rejected["reason"].value_counts().sort_index().to_dict()
            counts: dict[str, Any] = {
                "run_id": run_id,
                "files_read": len(new),
                "files_rejected": len(rejected_files),
                "rows_in": staging.rows_in,
                "rows_written": rows_valid,
                "rows_quarantined": len(rejected),
                "quarantine_reasons": {str(k): int(v) for k, v in reasons.items()},
                "partitions_written": 0,
            }
            written = [_record_run(lake, _run_row(counts, started, "started"), run_day)]

            affected = [
                str(r[0])
                for r in con.sql(
                    'SELECT DISTINCT CAST(CAST("timestamp" AS TIMESTAMP) AS DATE) FROM valid ORDER BY 1'
                ).fetchall()
            ]
            etl_stream.define_samples(con, context_files, affected)
            min_coverage = settings.etl.min_coverage
            with reporter.task("etl: aggregate", 1) as advance:
                batches = etl_stream.sample_batches(con, affected)
                daily_new = (
                    etl_stream.aggregate(con, "day", period_seconds=86_400, min_coverage=min_coverage, batches=batches)
                    if affected
                    else None
                )
                hourly = (
                    etl_stream.aggregate(con, "hour", period_seconds=3600, min_coverage=min_coverage, batches=batches)
                    if affected and settings.etl.grain == "hourly"
                    else None
                )
                advance(1)
            daily_written = _write_daily(lake, settings, daily_new, reporter)
            written += daily_written
            hourly_written = _write_hourly(lake, hourly) if hourly is not None else []
            written += hourly_written
            _drop_stale_parts(lake, manifest, new)
            if legacy is not None:
                con.execute(f"CREATE VIEW legacy AS SELECT * FROM read_parquet('{legacy}')")
            etl_stream.write_parts(con, lake, folder, extra="legacy" if legacy is not None else "")
            quarantine_rows = _quarantine_frame(rejected, rejected_files, run_id)
            if not quarantine_rows.empty or _partition_exists(lake, QUARANTINE, run_day):
                written.append(_merge_quarantine(lake, quarantine_rows, run_day, new_keys))
            moved = [_move_aside(lake, info.key, reason, run_id, run_day) for info, reason in rejected_files]
            attributes_written = _write_server_attributes(lake, etl_stream.attribute_samples(con))
            if attributes_written:
                written.append(attributes_written)
            counts["partitions_written"] = len(daily_written)
            _write_manifest(lake, manifest, etl_stream.spans(con), file_rows, rejected_files, run_id, full)
        finally:
            con.close()

    def finish() -> None:
        """After the commit: the run's row says succeeded, and unreadable files leave the raw zone."""
        written.append(_record_run(lake, _run_row(counts, started, "succeeded"), run_day))
        for info, _ in rejected_files:
            lake.store.delete(info.key)

    if settings.etl.grain == "hourly":
        counts["hourly_partitions_written"] = len(hourly_written)
    if rejected_files:
        counts["rejected_files"] = [f"{info.key}: {reason}" for info, reason in rejected_files]
        counts["moved_aside"] = moved
    return StageResult("etl", counts, written), finish, left


RUN_COUNTS = ("files_read", "files_rejected", "rows_in", "rows_written", "rows_quarantined", "partitions_written")
"""The counts of an ``etl_runs`` row: what the run recorded (0 in a failed or interrupted run's row)."""


def _run_row(counts: dict[str, Any], started: datetime, status: str, reason: str = "") -> pd.DataFrame:
    """One ``etl_runs`` row of a pass's ``counts``."""
    return pd.DataFrame(
        [
            {
                "run_id": counts["run_id"],
                **{k: int(counts.get(k, 0)) for k in RUN_COUNTS},
                "quarantine_reasons": json.dumps(counts.get("quarantine_reasons", {}), sort_keys=True),
                "started_at": pd.Timestamp(started),
                "finished_at": pd.Timestamp(utc_now()),
                "status": status,
                "reason": reason,
            }
        ]
    )


def _record_run(lake: Lake, row: pd.DataFrame, day: date) -> str:
    """Write ``row`` into the day's ``etl_runs`` partition, replacing the row of the same run (idempotent)."""
    if _partition_exists(lake, ETL_RUNS, day):
        existing = lake.read_table(ETL_RUNS, where={"dt": day}).drop(columns="dt")
        row = pd.concat([existing[existing["run_id"] != row["run_id"].iloc[0]], row], ignore_index=True)
    return lake.write_partition(ETL_RUNS, row, {"dt": day})


def _reason(exc: BaseException) -> str:
    """An exception as the one line a run log keeps: its first line, with the type for non-user errors."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if isinstance(exc, CapacityForecasterError) and text else f"{type(exc).__name__}: {text}".rstrip(": ")


def _record_failure(lake: Lake, run_id: str, started: datetime, exc: BaseException) -> None:
    """Record the pass as ``failed`` with the reason; a failure to record it is logged, never hides ``exc``.

    A pass whose manifest write reached the store although it raised keeps its ``started`` row: the next run
    settles it as succeeded (:func:`_settle_interrupted_runs`)."""
    try:
        if (_read_manifest(lake)["etl_run_id"] == run_id).any():
            return
        _record_run(lake, _run_row({"run_id": run_id}, started, "failed", _reason(exc)), started.date())
    except Exception as again:  # the store itself may be what failed
        log.warning("could not record the failed ETL run %s: %s", run_id, _reason(again))


SETTLE_RUN_DAYS = 7
"""How many of the newest ``etl_runs`` partitions a run looks through for rows that killed runs left started."""


def _settle_interrupted_runs(lake: Lake) -> None:
    """Settle what killed runs left (the caller holds the ETL lease): rows still ``started``, and unreadable files.

    A run whose files ``etl_files`` records (killed after its commit) is ``succeeded``, with its counts. A run
    killed before its commit is ``interrupted``, with counts of 0: its files are new to the next pass, which
    counts them; its quarantine rows and file copies are removed, as that pass makes them again. Files the
    manifest records as rejected that are still in the raw zone (killed before their deletion; their copies
    are under the quarantine) are deleted."""
    manifest = _read_manifest(lake)
    # Each run settles the runs before it ahead of its own first write: a row left started is among the newest.
    newest = sorted(p["dt"] for p in lake.list_partitions(ETL_RUNS))[-SETTLE_RUN_DAYS:]
    runs = lake.read_table(ETL_RUNS, where={"dt": newest}) if newest else lake.read_table(ETL_RUNS)
    stale: dict[date, list[str]] = {}
    for run_id, day_value in zip(*(runs.loc[runs["status"] == "started", c] for c in ("run_id", "dt")), strict=True):
        stale.setdefault(day_value.date(), []).append(run_id)
    for day, run_ids in sorted(stale.items()):
        part = lake.read_table(ETL_RUNS, where={"dt": day}).drop(columns="dt")
        for run_id in run_ids:
            mine = part["run_id"] == run_id
            if (manifest["etl_run_id"] == run_id).any():
                part.loc[mine, ["status", "reason"]] = ["succeeded", "killed after its files were recorded"]
            else:
                part.loc[mine, list(RUN_COUNTS)] = 0
                part.loc[mine, "quarantine_reasons"] = "{}"
                part.loc[mine, ["status", "reason"]] = ["interrupted", "killed before its files were recorded"]
                _undo_quarantine(lake, run_id, day)
        lake.write_partition(ETL_RUNS, part, {"dt": day})
    rejected = manifest[manifest["status"] == "rejected"]
    if not rejected.empty:
        versions = set(zip(rejected["key"], rejected["fingerprint"], strict=True))
        for info in list(lake.store.list("raw/")):
            if (info.key, _fingerprint(info)) in versions:
                lake.store.delete(info.key)


def _undo_quarantine(lake: Lake, run_id: str, day: date) -> None:
    """Remove an interrupted run's quarantine rows and copies of unreadable files (made again by the rerun)."""
    if _partition_exists(lake, QUARANTINE, day):
        rows = lake.read_table(QUARANTINE, where={"dt": day}).drop(columns="dt")
        if (rows["etl_run_id"] == run_id).any():
            lake.write_partition(QUARANTINE, rows[rows["etl_run_id"] != run_id], {"dt": day})
    prefix = f"{QUARANTINED_FILES_PREFIX}dt={day.isoformat()}/"
    for info in list(lake.store.list(prefix)):
        if info.key.endswith(".reason.json") and json.loads(lake.store.get_bytes(info.key)).get("etl_run_id") == run_id:
            lake.store.delete(info.key[: -len(".reason.json")])
            lake.store.delete(info.key)


def _write_server_attributes(lake: Lake, samples: pd.DataFrame) -> str | None:
    """Merge the extra columns of this run's valid samples (server_id, timestamp, source, attributes; those
    carrying attributes) into ``server_attributes`` (latest value wins)."""
    if samples.empty:
        return None
    fresh = etl.server_attributes(samples)
    if fresh.empty:
        return None
    key = partition_key(SERVER_ATTRIBUTES, None)
    if lake.store.exists(key):
        merged = pd.concat([lake.read_table(SERVER_ATTRIBUTES), fresh], ignore_index=True)
        merged = merged.sort_values("last_seen", kind="stable").drop_duplicates(["server_id", "attribute"], keep="last")
        fresh = merged.sort_values(["server_id", "attribute"], ignore_index=True)
    return lake.write_partition(SERVER_ATTRIBUTES, fresh)


def quarantined_file_key(key: str, day: date) -> str:
    """Where an unreadable raw object is moved: ``quarantine/files/dt=YYYY-MM-DD/<original key>``."""
    return f"{QUARANTINED_FILES_PREFIX}dt={day.isoformat()}/{key}"


def _move_aside(lake: Lake, key: str, reason: str, run_id: str, day: date) -> str:
    """Copy an unreadable raw object under the quarantine prefix with a ``.reason.json`` next to it; the run
    deletes it from the raw zone after its commit, so that no later run picks it up again. Returns the new URI.

    The note goes first: it names the run, so the copy of a run killed before its commit is found and removed."""
    target = quarantined_file_key(key, day)
    note = {"source": key, "reason": reason, "etl_run_id": run_id, "moved_at": utc_now().isoformat()}
    lake.store.put_bytes(
        target + ".reason.json", json.dumps(note, sort_keys=True).encode(), content_type="application/json"
    )
    return lake.store.copy(key, target)  # not through memory: the object may be over the size limit


def _fingerprint(info: Any) -> str:
    return f"{info.size}:{info.etag or info.last_modified.isoformat()}"


def _empty_raw() -> pd.DataFrame:
    cols = [*etl.REQUIRED_COLUMNS, "attributes", "source", "row_number"]
    return pd.DataFrame({c: pd.Series(dtype=object) for c in cols}).astype({"row_number": "int64"})


def _context_parts(
    lake: Lake,
    manifest: pd.DataFrame,
    new_keys: set[str],
    days: list[str],
    folder: Path,
    settings: Settings,
    now: pd.Timestamp,
) -> tuple[list[str], str | None]:
    """Local copies of the day-store parts of ``days`` from files already processed (not being reprocessed),
    and the local file of the samples of processed files that have no part yet (read from their raw objects)."""
    if manifest.empty or not days:
        return [], None
    done = manifest[(manifest["status"] == "processed") & ~manifest["key"].isin(new_keys)]
    ids = {etl_stream.file_id(k): k for k in done["key"]}
    local, found = [], set()
    for day in days:
        for info in lake.store.list(f"{ETL_SAMPLES_PREFIX}dt={day}/"):
            fid = info.key.rsplit("/", 1)[-1].removesuffix(".parquet")
            if fid in ids:
                local.append(str(lake.store.download_file(info.key, folder / "ctx" / f"dt={day}" / f"{fid}.parquet")))
                found.add(ids[fid])
    first, last = pd.Timestamp(days[0]), pd.Timestamp(days[-1])
    overlap = done[(done["first_day"] <= last) & (done["last_day"] >= first) & ~done["key"].isin(found)]
    if overlap.empty:
        return local, None
    # Processed before the day store: read and validated again, as before; write_parts stores their samples.
    frames = [_read_raw(lake, key, settings) for key in overlap["key"]]
    valid, _ = etl.validate_samples(pd.concat(frames, ignore_index=True), now=now, aliases=settings.ingest.aliases())
    legacy = folder / "legacy.parquet"
    etl_stream.write_context(legacy, valid)
    return [*local, str(legacy)], str(legacy)


def _drop_stale_parts(lake: Lake, manifest: pd.DataFrame, new: list[Any]) -> None:
    """Delete the day-store parts of the earlier version of files processed again (their days may differ)."""
    again = manifest[manifest["key"].isin({o.key for o in new}) & manifest["first_day"].notna()]
    for key, first, last in zip(again["key"], again["first_day"], again["last_day"], strict=True):
        for day in pd.date_range(first, last, freq="D"):
            part = f"{ETL_SAMPLES_PREFIX}dt={day.date().isoformat()}/{etl_stream.file_id(key)}.parquet"
            if lake.store.exists(part):
                lake.store.delete(part)


def _write_daily(
    lake: Lake,
    settings: Settings,
    daily_new: pd.DataFrame | None,
    progress: ProgressReporter,
) -> list[str]:
    """Fill gaps around the affected days (those ``daily_new`` holds) and rewrite their daily partitions."""
    if daily_new is None or daily_new.empty:
        return []
    affected = set(daily_new["dt"])
    pad = pd.Timedelta(days=max(settings.etl.max_gap_days, 7) + 7)
    lo, hi = min(affected) - pad, max(affected) + pad
    window = [d.date() for d in pd.date_range(lo, hi, freq="D")]
    existing = lake.read_table(METRICS_DAILY, where={"dt": window})
    if not existing.empty:
        existing = existing[~existing["imputed"] & ~existing["dt"].isin(affected)]
    observed = pd.concat([existing.drop(columns=["imputed"], errors="ignore"), daily_new], ignore_index=True)
    filled = etl.fill_gaps(
        observed,
        max_gap_days=settings.etl.max_gap_days,
        method=settings.etl.imputation,
        neighbors=settings.etl.knn_neighbors,
    )
    to_write = filled[filled["dt"].isin(affected) | filled["imputed"]]
    # Days in the window whose partition must change: affected days and days that gained or lost imputed rows.
    with progress.task("etl: write daily partitions", int(to_write["dt"].nunique())) as advance:
        days_to_write = sorted(set(to_write["dt"]))
        frame = filled[filled["dt"].isin(days_to_write)]
        return lake.write_table(METRICS_DAILY, frame, on_written=advance)


def _write_hourly(lake: Lake, hourly: pd.DataFrame) -> list[str]:
    """Hourly P95 of every day the new samples touch (old samples of those days included), one partition a day."""
    if hourly.empty:
        return []
    hourly = hourly[etl.HOURLY_COLUMNS]
    return lake.write_table(METRICS_HOURLY, hourly.assign(day=hourly["dt"].dt.floor("D").dt.date))


def _quarantine_frame(rejected: pd.DataFrame, rejected_files: list[tuple[Any, str]], run_id: str) -> pd.DataFrame:
    files = pd.DataFrame(
        {
            "source": [info.key for info, _ in rejected_files],
            "row_number": pd.Series([-1] * len(rejected_files), dtype="int64"),
            "timestamp": "",
            "server_id": "",
            "metric": "",
            "value": "",
            "reason": [f"unreadable_file: {reason}" for _, reason in rejected_files],
        }
    )
    frame = pd.concat([rejected, files], ignore_index=True) if rejected_files else rejected
    return frame.assign(etl_run_id=run_id)[QUARANTINE.column_names]


def _partition_exists(lake: Lake, table: Any, day: date) -> bool:
    return lake.store.exists(partition_key(table, {"dt": day}))


def _merge_quarantine(lake: Lake, rows: pd.DataFrame, day: date, sources: set[str]) -> str:
    """Replace the day's quarantine rows of the sources just processed (re-runs do not duplicate)."""
    existing = lake.read_table(QUARANTINE, where={"dt": day}) if _partition_exists(lake, QUARANTINE, day) else None
    if existing is not None and not existing.empty:
        rows = pd.concat([existing[~existing["source"].isin(sources)].drop(columns="dt"), rows], ignore_index=True)
    return lake.write_partition(QUARANTINE, rows, {"dt": day})


def _write_manifest(
    lake: Lake,
    manifest: pd.DataFrame,
    spans: pd.DataFrame,
    file_rows: list[tuple[Any, int]],
    rejected_files: list[tuple[Any, str]],
    run_id: str,
    full: bool,
) -> None:
    """Record the pass's files (``spans``: each source's first and last day of valid rows) in ``etl_files``."""
    entries = [
        {
            "key": info.key,
            "fingerprint": _fingerprint(info),
            "first_day": spans["min"].get(info.key, pd.NaT),
            "last_day": spans["max"].get(info.key, pd.NaT),
            "rows": rows,
            "status": "processed",
            "etl_run_id": run_id,
        }
        for info, rows in file_rows
    ] + [
        {
            "key": info.key,
            "fingerprint": _fingerprint(info),
            "first_day": pd.NaT,
            "last_day": pd.NaT,
            "rows": 0,
            "status": "rejected",
            "etl_run_id": run_id,
        }
        for info, _ in rejected_files
    ]
    if not entries:
        return
    fresh = pd.DataFrame(entries)
    keep = manifest[~manifest["key"].isin(fresh["key"])] if not full else manifest.iloc[0:0]
    combined = pd.concat([keep, fresh], ignore_index=True) if not keep.empty else fresh
    lake.write_table(ETL_FILES, combined.sort_values("key", ignore_index=True))


# --------------------------------------------------------------------------------------------- profile


def run_profile(lake: Lake, settings: Settings, *, progress: ProgressReporter | None = None) -> StageResult:
    """Flag outliers and anomalies in every daily series and rewrite ``metrics_daily_flags`` and
    ``series_profile`` (with the ADF test); ``metrics_daily`` itself is never changed."""
    from capacity_forecaster import quality

    reporter: ProgressReporter = progress or NullProgress()
    daily = lake.read_table(METRICS_DAILY)
    if daily.empty:
        raise InputError(
            f"no curated daily metrics in {lake.uri}: run `capacity-forecaster etl` (after `ingest`) first"
        )
    flags = quality.flag_outliers(
        daily, window=settings.etl.outlier_window, z_threshold=settings.etl.outlier_z, iqr_k=settings.etl.outlier_iqr_k
    )
    with reporter.task("profile: ADF test per series", 1) as advance:
        profile = quality.profile_series(flags, daily)
        advance(1)
    stale = {p["dt"] for p in lake.list_partitions(METRICS_DAILY_FLAGS)} - {str(d.date()) for d in flags["dt"]}
    for day in sorted(stale):
        lake.delete_partition(METRICS_DAILY_FLAGS, {"dt": date.fromisoformat(day)})
    with reporter.task("profile: write flags", int(flags["dt"].nunique())) as advance:
        written = lake.write_table(METRICS_DAILY_FLAGS, flags, on_written=advance)
    written.append(lake.write_partition(SERIES_PROFILE, profile))
    counts = {
        "series": len(profile),
        "values_flagged_z": int(flags["outlier_z"].sum()),
        "values_flagged_iqr": int(flags["outlier_iqr"].sum()),
        "anomalies": int(flags["anomaly"].sum()),
        "stationary_series": int(profile["stationary"].sum()),
    }
    return StageResult("profile", counts, written)


# --------------------------------------------------------------------------------------------- train


def training_hyperparameters(settings: Settings, *, run_date: date, run_id: str, lake_uri: str) -> dict[str, str]:
    """The training job's hyperparameters, as the strings SageMaker passes: the run's keys and the settings
    hyperparameters, written as the stack writes them for the cloud job (``settings_hyperparameters``)."""
    return {
        **settings_hyperparameters(settings),
        "run_date": run_date.isoformat(),
        "run_id": run_id,
        "lake_uri": lake_uri,
    }


def run_train(
    lake: Lake,
    settings: Settings,
    *,
    run_date: date,
    hosts: int | None = None,
    progress: bool | ProgressReporter = False,
) -> StageResult:
    """Run the SageMaker training entry point locally, under the container contract, and publish its output.

    ``training.grain: hourly`` forecasts metrics_hourly into forecasts_hourly and model_metrics_hourly."""
    from capacity_forecaster.forecasting.job import run_local_training

    hourly = settings.training.grain == "hourly"
    if not lake.list_partitions(METRICS_HOURLY if hourly else METRICS_DAILY):
        raise CapacityForecasterError(
            f"no curated hourly metrics in {lake.uri}: run `capacity-forecaster etl --grain hourly` first"
            if hourly
            else f"no curated daily metrics in {lake.uri}: run `capacity-forecaster etl` (after `ingest`) first"
        )
    # One run id per run date (and grain): re-running the same day replaces the same staging objects and partitions.
    run_id = f"local-{run_date:%Y%m%d}" + ("-hourly" if hourly else "")
    params = training_hyperparameters(settings, run_date=run_date, run_id=run_id, lake_uri=lake.uri)
    result = run_local_training(
        lake,
        run_date=run_date,
        hyperparameters=params,
        hosts=hosts or settings.training.hosts,
        progress=progress,
    )
    counts = {"run_id": run_id, "hosts": hosts or settings.training.hosts, "grain": settings.training.grain}
    counts.update({k: v for k, v in vars(result).items() if isinstance(v, int | float | str)})
    written = [w for w in getattr(result, "written", []) if isinstance(w, str)]
    return StageResult("train", counts, written)


# --------------------------------------------------------------------------------------------- risk


def risk_register(
    forecasts: pd.DataFrame,
    daily: pd.DataFrame,
    risk: RiskSettings,
    run_date: date,
    statuses: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The risk register of ``forecasts`` under the ``risk`` settings (tier windows of 0: the whole horizon);
    ``statuses``: the champions' model-metrics status per series (see ``risk.build_risk_register``)."""
    from capacity_forecaster.risk import build_risk_register

    return build_risk_register(
        forecasts,
        daily,
        run_date=run_date,
        thresholds=risk.thresholds,
        critical_days=risk.critical_days,
        saturation_days=risk.saturation_days,
        overprovisioned_ratio=risk.overprovisioned_ratio,
        high_days=risk.high_days or None,
        medium_days=risk.medium_days or None,
        headroom=risk.headroom,
        breach_days=risk.breach_days,
        likely=risk.likely_breach_probability,
        statuses=statuses,
    )


def risk_lease(lake: Lake, held: Lease | None = None) -> AbstractContextManager[object]:
    """The ``risk`` lease to hold around publishing a run and building its register; nothing new when the
    caller already holds it (``held``)."""
    return nullcontext() if held is not None and held.held else Lease(lake.store, RISK_LEASE)


def run_risk(
    lake: Lake,
    settings: Settings,
    *,
    run_date: date | None = None,
    progress: ProgressReporter | None = None,
    held: Lease | None = None,
) -> StageResult:
    """Build the risk register from a run's forecasts (the latest run when no date is given).

    With ``training.grain: hourly`` the run's ``forecasts_hourly`` are used, each day taken at its peak hour.
    Runs under the ``risk`` lease (``LeaseHeld`` when another risk run holds it) unless ``held`` is that lease,
    taken by the caller around more work (the risk Lambda publishes the training run under it first)."""
    with risk_lease(lake, held):
        return _run_risk(lake, settings, run_date=run_date, progress=progress)


def _run_risk(
    lake: Lake, settings: Settings, *, run_date: date | None, progress: ProgressReporter | None
) -> StageResult:
    from capacity_forecaster.forecasting.grain import daily_peaks
    from capacity_forecaster.query import record_latest_run
    from capacity_forecaster.risk import history_days

    reporter: ProgressReporter = progress or NullProgress()
    hourly = settings.training.grain == "hourly"
    source, metrics = (FORECASTS_HOURLY, MODEL_METRICS_HOURLY) if hourly else (FORECASTS, MODEL_METRICS)
    if run_date is None:
        latest = lake.latest_partition(source)
        if latest is None:
            raise CapacityForecasterError(
                f"no {source.name} in {lake.uri}: run `capacity-forecaster train"
                + (" --grain hourly` first" if hourly else "` first")
            )
        run_date = date.fromisoformat(latest["run_date"])
    # Only the champion's rows of the run (forecasts, and their status in the model metrics) and the observed days
    # of the saturation rule's look-back window.
    forecasts = champion_forecasts(lake, source, run_date)
    if forecasts.empty:
        raise CapacityForecasterError(f"no {source.name} for run date {run_date} in {lake.uri}")
    if hourly:
        forecasts = daily_peaks(forecasts)
    with reporter.task("risk register", 1) as advance:
        daily = recent_observed(lake, settings.risk.saturation_days)
        statuses = champion_statuses(lake, metrics, run_date)
        statuses["history_days"] = history_days(statuses.pop("n_history"), 24 if hourly else 1)
        register = risk_register(forecasts, daily, settings.risk, run_date, statuses)
        uri = lake.write_partition(RISK_REGISTER, register, {"run_date": run_date})
        pointer = record_latest_run(lake, run_date)
        advance(1)
    by_severity = register["severity"].value_counts().to_dict()
    return StageResult(
        "risk",
        {
            "run_date": run_date.isoformat(),
            "series": len(register),
            **{f"severity_{k}": int(by_severity.get(k, 0)) for k in ("critical", "high", "medium", "low")},
            "seasonal_peaks": int(register["seasonal_peak"].sum()),
            "short_history": int(register["short_history"].sum()),
        },
        [uri, pointer],
    )


# --------------------------------------------------------------------------------------------- consolidation


def read_risk_register(lake: Lake, run_date: date | None, *, command: str) -> tuple[date, pd.DataFrame]:
    """The risk register of ``run_date`` (default: the newest) and its date; a one-line error naming ``command``
    (what to run first) when there is none."""
    if run_date is None:
        latest = lake.latest_partition(RISK_REGISTER)
        if latest is None:
            raise CapacityForecasterError(f"no risk register in {lake.uri}: run `capacity-forecaster {command}` first")
        run_date = date.fromisoformat(latest["run_date"])
    register = lake.read_table(RISK_REGISTER, where={"run_date": run_date})
    if register.empty:
        raise CapacityForecasterError(f"no risk register for run date {run_date} in {lake.uri}")
    return run_date, register


def run_consolidation(
    lake: Lake, settings: Settings, *, run_date: date | None = None, progress: ProgressReporter | None = None
) -> StageResult:
    """Profile the fleet, recommend consolidate / downsize / keep per server, and write the plan with savings.

    Runs on whatever inventory the lake holds: servers it lacks, or whose size or cost it lacks (and the price
    table cannot give by instance type), are kept or get no savings, each gap said in one line of ``notes``."""
    from capacity_forecaster import rightsizing
    from capacity_forecaster.inventory import completed

    reporter: ProgressReporter = progress or NullProgress()
    run_date, register = read_risk_register(lake, run_date, command="risk")
    cfg = settings.rightsizing
    with reporter.task("consolidation plan", 1) as advance:
        daily = recent_observed(lake, max(cfg.profile_days, cfg.idle_days), metrics=rightsizing.PROFILE_METRICS)
        stored = lake.read_table(SERVERS)
        ids = sorted(register["server_id"].astype(str).unique())
        servers = completed(rightsizing.inventory_for(stored, ids), settings)
        features = rightsizing.server_features(daily, days=cfg.profile_days)
        labels, k, silhouette = rightsizing.cluster_profiles(features, k_min=cfg.k_min, k_max=cfg.k_max, seed=cfg.seed)
        profiles = rightsizing.name_profiles(features, labels)
        idle = rightsizing.idle_servers(daily, days=cfg.idle_days, cpu_p95=cfg.idle_cpu_p95, mem_p95=cfg.idle_mem_p95)
        sizes = {
            name: rightsizing.Size(int(v["cores"]), float(v["memory_gib"]), float(v["monthly_cost"]))
            for name, v in cfg.sizes().items()
        }
        plan = rightsizing.plan_consolidation(
            servers,
            register,
            profiles,
            idle,
            sizes=sizes,
            thresholds=settings.risk.thresholds,
            headroom=settings.risk.headroom,
        )
        uri = lake.write_partition(CONSOLIDATION, plan, {"run_date": run_date})
        advance(1)
    return StageResult(
        "consolidation",
        {
            "run_date": run_date.isoformat(),
            "servers": len(plan),
            "profiles": k,
            "silhouette": round(silhouette, 3) if silhouette == silhouette else None,
            **rightsizing.savings_summary(plan),
        },
        [uri],
        rightsizing.inventory_gaps(completed(stored, settings) if not stored.empty else stored, ids),
    )


# --------------------------------------------------------------------------------------------- report


def report_prefix(run_date: date) -> str:
    """Where a run's report and exports go in the lake: ``reports/run_date=YYYY-MM-DD/``."""
    return f"{REPORTS_PREFIX}run_date={run_date.isoformat()}/"


def run_report(
    lake: Lake, settings: Settings, *, run_date: date | None = None, progress: ProgressReporter | None = None
) -> StageResult:
    """Write the HTML report, its CSV exports and the Excel workbook of a run into the lake, under
    :func:`report_prefix`, each object with its content type; counts name the HTML report's URI."""
    from capacity_forecaster.html_report import load_report_data, report_files

    reporter: ProgressReporter = progress or NullProgress()
    with reporter.task("report", 1) as advance:
        data = load_report_data(
            lake, run_date=run_date, top=settings.risk.top, hourly=settings.training.grain == "hourly"
        )
        prefix = report_prefix(data.run_date)
        written = {
            key: lake.store.put_bytes(prefix + file.name, file.data, content_type=file.content_type)
            for key, file in report_files(data).items()
        }
        advance(1)
    return StageResult(
        "report",
        {"run_date": data.run_date.isoformat(), "files": len(written), "report": written["html"]},
        list(written.values()),
    )
