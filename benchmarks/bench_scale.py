"""Benchmark: the daily increment of a fleet against the limits of the deployed design (the fleet-scale issue).

Usage::

    .venv/bin/python benchmarks/bench_scale.py [--servers 10000] [--work .bench-scale] [--train-servers 12]
                                               [--skip-large] [--skip-files] [--json out.json]

Builds, once, a lake of ``--servers`` servers x 4 metrics with three years of daily history (the generator's raw
mode: daily-P95 exports, through the real ETL) and one more day of 5-minute samples not yet processed, and caches it
under ``--work/base-<servers>`` (reruns reuse it). Each run copies that lake and measures, every stage in a child
process of its own, wall time, CPU time (the child and what it waited for, from ``wait4``) and the peak resident set
of the process tree (summed over the tree, sampled every 0.1 s from psutil when installed, else ``/proc``):

- ``etl``: the daily increment (the one day of 5-minute samples; 11.5 million rows at 10,000 servers);
- ``train``: the training job's own entry point (``sagemaker_jobs/train.py`` under the container contract, one
  contract root per simulated host, ``SM_CONTRACT_ROOT``) on the first ``--train-servers`` servers, sharded over
  1, 2 and 4 simulated hosts run side by side (``training.n_jobs: 1`` each: one core a host); per-series CPU,
  per-host peak memory, the sharding efficiency ``CPU(1 host) / (hosts x CPU of the busiest host)``, each host's
  CPU against what ``capacity_forecaster.scale``'s constants predict for its series (``--backtest-sample`` sets
  how many of each metric a host backtests, so that a small sample mixes backtested and fitted series as a large
  host does), then one host with ``--workers`` worker processes (the efficiency of a host's cores);
- ``risk``, ``consolidation``, ``report``: on a forecasts partition for the whole fleet, the trained sample's
  forecasts and model metrics tiled over every server (same rows per series as a full run, without training
  the whole fleet).

Each figure is printed against its limit as a ratio: the Lambda targets of the issue (3 GB and 300 s for ETL,
risk, consolidation and report), and for training 40,000 series in 15 minutes on at most 8 instances of 4 vCPU:
``scale.training_seconds`` (the model the stack sizes training with) times the largest measured/predicted ratio of
any host, at the measured worker efficiency (with the channel read's memory measured at this fleet size and scaled
to one host's shard of 40,000 series). A fleet smaller than 10,000 servers is also extrapolated to 10,000
linearly above the measured base memory of a child that only imports the stages. Finally the ETL's peak memory per
input byte for one 100 MB and one 1 GB long-format CSV upload (``--skip-large``: not the 1 GB one;
``--skip-files``: neither), with ``ingest.max_file_mb`` raised so that the file is read rather than refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

RUN_DATE = date(2026, 11, 23)
"""The run date: the history ends the day before, and that last day is the increment of 5-minute samples."""
INCREMENT_DAY = RUN_DATE - timedelta(days=1)
HISTORY_DAYS = 1095
LAMBDA_MB = 3 * 1024
LAMBDA_SECONDS = 300.0
TRAIN_SERIES = 40_000
TRAIN_SECONDS = 15 * 60.0
TRAIN_INSTANCES = 8
TRAIN_VCPUS = 4
TRAIN_INSTANCE_MB = 16 * 1024
"""ml.m5.xlarge: 4 vCPU, 16 GiB."""
TARGET_SERVERS = 10_000
HOSTS = (1, 2, 4)
FILE_SIZES_MB = (100, 1024)
HERE = Path(__file__).resolve().parent
TRAIN_ENTRY = HERE.parent / "sagemaker_jobs" / "train.py"


# ------------------------------------------------------------------------------------------------ measuring


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def tree_rss_bytes(pid: int) -> int:
    """The resident set of ``pid`` and all its descendants, in bytes."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total
    tree, total, todo = _children(), 0, [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        current = todo.pop()
        todo.extend(tree.get(current, []))
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * page
    return total


@dataclass
class Measured:
    """One child process: wall and CPU seconds, the peak RSS of its tree, and what it printed last (JSON)."""

    name: str
    wall_s: float
    cpu_s: float
    peak_mb: float
    result: dict[str, Any] = field(default_factory=dict)


def measure(name: str, argv: Sequence[str], env: dict[str, str] | None = None, interval: float = 0.1) -> Measured:
    """Run ``argv`` as a child, sampling its tree's RSS, and return what it cost; raise when it fails."""
    started = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_bytes(proc.pid))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out_chunks: list[str] = []
    err_chunks: list[str] = []
    readers = [
        threading.Thread(target=lambda: out_chunks.append(proc.stdout.read() if proc.stdout else ""), daemon=True),
        threading.Thread(target=lambda: err_chunks.append(proc.stderr.read() if proc.stderr else ""), daemon=True),
    ]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    for reader in readers:
        reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = "".join(out_chunks), "".join(err_chunks)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}): {stderr.strip()[-2000:]}")
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    return Measured(name, wall, usage.ru_utime + usage.ru_stime, peak / 2**20, result)


def _child(job: dict[str, Any]) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job, default=str)]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CF_")}
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------------------ child jobs


def _settings(servers: int, lake: str, **overrides: Any) -> Any:
    from capacity_forecaster.settings import load_settings

    return load_settings(
        environ={}, overrides={"lake": lake, "fleet.servers": servers, "fleet.days": HISTORY_DAYS, **overrides}
    )


def child_main(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job in this (child) process and return its summary."""
    from capacity_forecaster import stages
    from capacity_forecaster.storage.lake import open_lake

    kind = job["kind"]
    if kind == "noop":
        return {}
    lake = open_lake(job["lake"])
    settings = _settings(int(job.get("servers", 1)), job["lake"], **job.get("overrides", {}))
    if kind == "build":
        first = stages.run_generate(lake, settings, run_date=INCREMENT_DAY)
        etl_history = stages.run_etl(lake, settings)
        increment = stages.run_generate(lake, settings, run_date=RUN_DATE, raw_days=[INCREMENT_DAY], append=True)
        return {"generate": first.counts, "etl": etl_history.counts, "increment": increment.counts}
    if kind == "etl":
        return stages.run_etl(lake, settings).counts
    if kind == "subset":
        return _subset(lake, Path(job["target"]), int(job["train_servers"]))
    if kind == "channel":
        return _read_channel(job["lake"])
    if kind == "tile":
        return _tile(lake, open_lake(job["source"]))
    if kind == "risk":
        return stages.run_risk(lake, settings, run_date=RUN_DATE).counts
    if kind == "consolidation":
        return stages.run_consolidation(lake, settings, run_date=RUN_DATE).counts
    if kind == "report":
        return {k: v for k, v in stages.run_report(lake, settings, run_date=RUN_DATE).counts.items() if k != "report"}
    if kind == "file_etl":
        return stages.run_etl(lake, settings).counts
    raise SystemExit(f"unknown child job {kind}")


def _subset(lake: Any, target: Path, train_servers: int) -> dict[str, Any]:
    """A lake holding the metrics_daily of the first ``train_servers`` servers (the training sample)."""
    import duckdb
    import pandas as pd

    from capacity_forecaster.schema import METRICS_DAILY
    from capacity_forecaster.storage.lake import open_lake

    pattern = str(Path(lake.uri) / METRICS_DAILY.prefix / "*" / "data.parquet")
    con = duckdb.connect()
    ids = [r[0] for r in con.execute(f"SELECT DISTINCT server_id FROM read_parquet('{pattern}') ORDER BY 1").fetchall()]
    chosen = ids[:train_servers]
    frame = con.execute(
        f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true) WHERE server_id IN (SELECT unnest(?))",
        [chosen],
    ).df()
    frame["dt"] = pd.to_datetime(frame["dt"])
    if target.exists():
        shutil.rmtree(target)
    open_lake(str(target)).write_table(METRICS_DAILY, frame)
    return {"servers": len(chosen), "series": int(frame[["server_id", "metric"]].drop_duplicates().shape[0])}


def _read_channel(uri: str) -> dict[str, Any]:
    """Read the whole metrics_daily as one training host reads its channel (a host of several keeps only its
    shard's rows as it reads: this is the one-host upper bound)."""
    from capacity_forecaster.schema import METRICS_DAILY
    from capacity_forecaster.storage.lake import read_partitioned_dir

    daily = read_partitioned_dir(Path(uri) / METRICS_DAILY.prefix, METRICS_DAILY)
    return {"rows": len(daily), "series": int(daily[["server_id", "metric"]].drop_duplicates().shape[0])}


def _tile(lake: Any, source: Any) -> dict[str, Any]:
    """Copy the sample's forecasts and model metrics onto every server of ``lake``, as a full run would write."""
    import pandas as pd

    from capacity_forecaster.schema import FORECASTS, MODEL_METRICS, SERVERS

    servers = sorted(lake.read_table(SERVERS)["server_id"].astype(str))
    out: dict[str, Any] = {}
    for table in (FORECASTS, MODEL_METRICS):
        sample = source.read_table(table, where={"run_date": RUN_DATE}).drop(columns="run_date", errors="ignore")
        sample_ids = sorted(sample["server_id"].astype(str).unique())
        by_server = {sid: sample[sample["server_id"] == sid] for sid in sample_ids}
        frames = [by_server[sample_ids[i % len(sample_ids)]].assign(server_id=sid) for i, sid in enumerate(servers)]
        tiled = pd.concat(frames, ignore_index=True)
        lake.write_partition(table, tiled, {"run_date": RUN_DATE})
        out[table.name] = len(tiled)
    return out


# ------------------------------------------------------------------------------------------------ training


def _contract(root: Path, params: dict[str, str], host: str, hosts: list[str], channel: Path) -> None:
    """One simulated host's /opt/ml: hyperparameters, resource config, the curated channel (hard links)."""
    from capacity_forecaster.forecasting.job import ContractPaths

    if root.exists():
        shutil.rmtree(root)
    paths = ContractPaths(root)
    paths.hyperparameters.parent.mkdir(parents=True)
    paths.hyperparameters.write_text(json.dumps(params), encoding="utf-8")
    paths.resource_config.write_text(json.dumps({"current_host": host, "hosts": hosts}), encoding="utf-8")
    paths.channel.parent.mkdir(parents=True)
    shutil.copytree(channel, paths.channel, copy_function=os.link)
    paths.model_dir.mkdir()
    paths.failure.parent.mkdir()


def host_series(train_lake: Path, n_hosts: int) -> list[dict[str, int]]:
    """Series of each metric on each of ``n_hosts`` hosts, sharded as the training job shards them."""
    import duckdb

    from capacity_forecaster.forecasting.job import shard_of
    from capacity_forecaster.schema import METRICS_DAILY

    pattern = str(train_lake / METRICS_DAILY.prefix / "*" / "data.parquet")
    pairs = duckdb.connect().execute(f"SELECT DISTINCT server_id, metric FROM read_parquet('{pattern}')").fetchall()
    counts: list[dict[str, int]] = [{} for _ in range(n_hosts)]
    for server_id, metric in pairs:
        host = counts[shard_of(str(server_id), str(metric), n_hosts)]
        host[metric] = host.get(metric, 0) + 1
    return counts


def predicted_host_cpu(per_metric: dict[str, int], sample: int) -> tuple[float, int]:
    """(CPU seconds, backtested series) ``capacity_forecaster.scale``'s constants predict for one host."""
    from capacity_forecaster import scale

    backtested = scale.backtested_of(list(per_metric.values()), sample)
    return scale.cpu_seconds_of(sum(per_metric.values()), backtested), backtested


def train_sharded(
    train_lake: Path, work: Path, n_hosts: int, settings: Any, n_jobs: int = 1
) -> tuple[list[Measured], float, Any]:
    """Run the training entry point on ``n_hosts`` simulated hosts side by side (``n_jobs`` worker processes
    each); publish; (hosts, wall, result)."""
    from capacity_forecaster.forecasting.job import publish_training_run
    from capacity_forecaster.schema import METRICS_DAILY
    from capacity_forecaster.stages import training_hyperparameters
    from capacity_forecaster.storage.lake import open_lake

    lake = open_lake(str(train_lake))
    run_id = f"bench-{n_hosts}-{n_jobs}"
    params = training_hyperparameters(settings, run_date=RUN_DATE, run_id=run_id, lake_uri=str(train_lake))
    params["training.n_jobs"] = str(n_jobs)
    names = [f"algo-{k}" for k in range(1, n_hosts + 1)]
    base = work / f"contract-{os.getpid()}-{n_hosts}-{n_jobs}"  # runs sharing --work do not collide
    for name in names:
        _contract(base / name, params, name, names, train_lake / METRICS_DAILY.prefix)
    results: list[Measured | None] = [None] * n_hosts
    errors: list[BaseException] = []

    def host(i: int) -> None:
        env = _env(SM_CONTRACT_ROOT=str(base / names[i]))
        try:
            results[i] = measure(names[i], [sys.executable, str(TRAIN_ENTRY), "train"], env=env)
        except BaseException as exc:
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=host, args=(i,)) for i in range(n_hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        reasons = [(base / n / "output" / "failure") for n in names]
        raise RuntimeError(f"{errors[0]} {[r.read_text() for r in reasons if r.exists()]}")
    published = publish_training_run(lake, run_id=run_id, run_date=RUN_DATE)
    shutil.rmtree(base)
    return [r for r in results if r is not None], wall, published


def train_rounds(
    lake: Path, train_lake: Path, work: Path, n: int, args: argparse.Namespace, hosts_list: tuple[int, ...]
) -> dict[str, Any]:
    """The training sample sharded over each host count of ``hosts_list`` (one core a host), then one host with
    ``--workers`` worker processes; per host the measured CPU against what ``capacity_forecaster.scale``'s
    constants predict for its series."""
    sub = measure(
        "subset",
        _child({"kind": "subset", "lake": str(lake), "target": str(train_lake), "train_servers": args.train_servers}),
    )
    series = int(sub.result["series"])
    overrides: dict[str, Any] = {}
    if args.models:
        overrides["training.models"] = args.models
    if args.backtest_sample is not None:
        overrides["training.backtest_sample"] = args.backtest_sample
    settings = _settings(n, str(lake), **overrides)
    sample = settings.training.backtest_sample
    print(
        f"training sample: {series} series of the first {sub.result['servers']} servers, "
        f"models {', '.join(settings.training.models)}, backtest sample {sample} a metric on each host"
    )
    rounds: dict[int, dict[str, Any]] = {}
    for hosts in hosts_list:
        host_runs, wall, published = train_sharded(train_lake, work, hosts, settings)
        shards = host_series(train_lake, hosts)
        predicted = [predicted_host_cpu(per_metric, sample) for per_metric in shards]
        cpu = [h.cpu_s for h in host_runs]
        rounds[hosts] = {
            "wall_s": wall,
            "host_cpu_s": cpu,
            "host_wall_s": [h.wall_s for h in host_runs],
            "host_peak_mb": [h.peak_mb for h in host_runs],
            "host_series": [sum(m.values()) for m in shards],
            "host_backtested": [b for _, b in predicted],
            "host_predicted_cpu_s": [p for p, _ in predicted],
            "series": published.series,
        }
        print(
            f"  train {hosts} host(s): {wall:7.1f} s wall; per host: series "
            f"{', '.join(str(sum(m.values())) for m in shards)}, CPU {', '.join(f'{c:.1f}' for c in cpu)} s "
            f"(scale predicts {', '.join(f'{p:.1f}' for p, _ in predicted)}), "
            f"peak {', '.join(f'{h.peak_mb:.0f}' for h in host_runs)} MB",
            flush=True,
        )
    cpu1 = sum(rounds[1]["host_cpu_s"])
    for hosts in hosts_list:
        t = rounds[hosts]
        t["efficiency"] = cpu1 / (hosts * max(t["host_cpu_s"]))
        t["wall_efficiency"] = rounds[1]["wall_s"] / (hosts * t["wall_s"])
        t["cpu_vs_predicted"] = [c / p for c, p in zip(t["host_cpu_s"], t["host_predicted_cpu_s"], strict=True)]
    workers: dict[str, Any] = {}
    if args.workers > 1:
        host_runs, wall, _ = train_sharded(train_lake, work, 1, settings, n_jobs=args.workers)
        one = rounds[1]["wall_s"]
        workers = {
            "n_jobs": args.workers,
            "wall_s": wall,
            "cpu_s": host_runs[0].cpu_s,
            "peak_mb": host_runs[0].peak_mb,
            "efficiency": one / (args.workers * wall),
            "load_average": os.getloadavg(),
        }
        print(
            f"  train 1 host, {args.workers} worker processes: {wall:7.1f} s wall against {one:.1f} s with one: "
            f"efficiency {workers['efficiency']:.2f}, peak {host_runs[0].peak_mb:.0f} MB "
            f"(load average {workers['load_average'][0]:.1f})",
            flush=True,
        )
    return {"rounds": rounds, "series": series, "per_series_cpu_s": cpu1 / series, "sample": sample, "workers": workers}


# ------------------------------------------------------------------------------------------------ files


def write_csv(path: Path, megabytes: int) -> int:
    """A long-format CSV upload of about ``megabytes`` MB: 5-minute samples of one day, 4 metrics a server."""
    import duckdb

    if path.exists() and path.stat().st_size >= megabytes * 10**6 * 0.95:
        return path.stat().st_size
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = int(megabytes * 2**20 / 43)  # about 43 bytes a row
    servers = max(1, rows // (288 * 4))
    tmp = path.with_suffix(".tmp")
    duckdb.sql(
        f"""
        COPY (
          SELECT strftime(TIMESTAMP '{INCREMENT_DAY}' + to_minutes(CAST(5 * (i // ({servers} * 4)) AS BIGINT)),
                          '%Y-%m-%dT%H:%M:%SZ') AS timestamp,
                 printf('srv-%06d', (i // 4) % {servers}) AS server_id,
                 ['cpu', 'mem', 'disk', 'net'][CAST(i % 4 AS INTEGER) + 1] AS metric,
                 round(20 + (hash(i) % 60000) / 1000.0, 3) AS value
          FROM range({servers * 4 * 288}) t(i)
        ) TO '{tmp}' (HEADER, DELIMITER ',')
        """
    )
    tmp.replace(path)
    return path.stat().st_size


def file_etl(work: Path, megabytes: int) -> tuple[Measured, int]:
    from capacity_forecaster.access import UPLOADS_PREFIX

    csv = work / "files" / f"upload-{megabytes}mb.csv"
    size = write_csv(csv, megabytes)
    lake = work / f"file-lake-{megabytes}"
    if lake.exists():
        shutil.rmtree(lake)
    target = lake / UPLOADS_PREFIX / csv.name
    target.parent.mkdir(parents=True)
    os.link(csv, target)
    overrides = {"ingest.max_file_mb": max(200, 2 * megabytes)}
    job = {"kind": "file_etl", "lake": str(lake), "servers": 1, "overrides": overrides}
    measured = measure(f"etl {megabytes} MB file", _child(job))
    shutil.rmtree(lake)
    return measured, size


# ------------------------------------------------------------------------------------------------ report


def ratio_line(name: str, value: float, limit: float, unit: str, note: str = "") -> str:
    flag = "ok" if value <= limit else "OVER"
    return f"  {name:<44} {value:10,.1f} {unit:<3} / {limit:8,.0f} {unit:<3} = {value / limit:6.3f}  {flag} {note}"


def scaled(value: float, base: float, factor: float) -> float:
    """``value`` scaled by ``factor`` above the fixed ``base`` (memory a child holds before any data)."""
    return base + max(0.0, value - base) * factor


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    n = args.servers
    base = work / f"base-{n}"
    report: dict[str, Any] = {"servers": n, "started": datetime.now().isoformat(timespec="seconds")}
    report["load_average_start"] = os.getloadavg()

    if not (base / "built.json").exists():
        if base.exists():
            shutil.rmtree(base)
        print(f"building the lake: {n} servers x 4 metrics x {HISTORY_DAYS} days + 1 day of 5-minute samples ...")
        built = measure("build", _child({"kind": "build", "lake": str(base), "servers": n}))
        (base / "built.json").write_text(json.dumps(asdict(built), default=str))
        print(f"  built in {built.wall_s:.0f} s, peak {built.peak_mb:,.0f} MB: {built.result}")
    report["build"] = json.loads((base / "built.json").read_text())

    lake = work / f"run-{n}"
    if lake.exists():
        shutil.rmtree(lake)
    shutil.copytree(base, lake)
    noop = measure("noop", _child({"kind": "noop"}))
    measured: dict[str, Measured] = {"base": noop}

    def stage(kind: str, **extra: Any) -> Measured:
        m = measure(kind, _child({"kind": kind, "lake": str(lake), "servers": n, **extra}))
        print(f"  {kind:<14} {m.wall_s:8.1f} s wall {m.cpu_s:8.1f} s CPU {m.peak_mb:8,.0f} MB  {m.result}", flush=True)
        measured[kind] = m
        return m

    print(f"daily increment of {n} servers (child processes; base RSS {noop.peak_mb:.0f} MB):")
    stage("etl")
    stage("channel")

    hosts_list = tuple(int(h) for h in args.hosts.split(","))
    train_lake = Path(args.tile_from).resolve() if args.tile_from else work / f"train-{n}-{args.train_servers}"
    training: dict[str, Any] = {}
    if not args.tile_from:
        training = train_rounds(lake, train_lake, work, n, args, hosts_list)

    tile = measure("tile", _child({"kind": "tile", "lake": str(lake), "source": str(train_lake), "servers": n}))
    print(f"  forecasts tiled over the fleet: {tile.result}")
    for kind in ("risk", "consolidation", "report"):
        stage(kind)

    files: dict[int, dict[str, float]] = {}
    if not args.skip_files:
        for mb in FILE_SIZES_MB:
            if mb > 200 and args.skip_large:
                continue
            m, size = file_etl(work, mb)
            files[mb] = {
                "bytes": size,
                "wall_s": m.wall_s,
                "peak_mb": m.peak_mb,
                "per_byte": m.peak_mb * 2**20 / size,
                "per_byte_above_base": (m.peak_mb - noop.peak_mb) * 2**20 / size,
            }
            print(
                f"  etl of one {size / 1e6:,.0f} MB CSV: {m.wall_s:.1f} s, peak {m.peak_mb:,.0f} MB = "
                f"{files[mb]['per_byte']:.2f} x its size ({files[mb]['per_byte_above_base']:.2f} x above the base)"
            )

    # --------------------------------------------------------------------------------------- against limits
    factor = TARGET_SERVERS / n
    print(
        f"\nagainst the limits ({n} servers measured; '10k' = scaled to {TARGET_SERVERS:,} servers above the "
        f"{noop.peak_mb:.0f} MB base, time linearly):"
    )
    lines: list[tuple[str, float, float, str]] = []
    for kind in ("etl", "risk", "consolidation", "report"):
        m = measured[kind]
        lines.append((f"{kind} wall ({n})", m.wall_s, LAMBDA_SECONDS, "s"))
        lines.append((f"{kind} peak RSS ({n})", m.peak_mb, LAMBDA_MB, "MB"))
        if factor != 1:
            lines.append((f"{kind} wall (10k, scaled)", m.wall_s * factor, LAMBDA_SECONDS, "s"))
            lines.append((f"{kind} peak RSS (10k, scaled)", scaled(m.peak_mb, noop.peak_mb, factor), LAMBDA_MB, "MB"))
    channel_40k = scaled(measured["channel"].peak_mb, noop.peak_mb, TRAIN_SERIES / (4 * n))
    # A host reads only its shard of the channel: 40,000 series over 8 hosts.
    channel_host = scaled(measured["channel"].peak_mb, noop.peak_mb, TRAIN_SERIES / TRAIN_INSTANCES / (4 * n))
    train_s = host_40k = per_series = calibration = efficiency = float("nan")
    needed = 0
    if training:
        from capacity_forecaster import scale

        rounds = training["rounds"]
        most = max(rounds)
        per_series = training["per_series_cpu_s"]
        # The busiest host against scale's model of its series, over every round: the model's error, applied.
        calibration = max(max(t["cpu_vs_predicted"]) for t in rounds.values())
        efficiency = training["workers"].get("efficiency", scale.PARALLEL_EFFICIENCY)
        efficiency = min(1.0, efficiency)
        modelled = scale.training_seconds(TRAIN_SERIES, TRAIN_INSTANCES, efficiency=efficiency, vcpus=TRAIN_VCPUS)
        train_s = modelled * calibration
        needed = scale.training_hosts(TRAIN_SERIES, budget_s=TRAIN_SECONDS / calibration, efficiency=efficiency)
        host_40k = max(rounds[most]["host_peak_mb"]) + max(0.0, channel_host - noop.peak_mb)
        lines.append(("train 40k series on 8 x 4 vCPU (scale x measured)", train_s, TRAIN_SECONDS, "s"))
        lines.append(("train host peak RSS, its 5k-series shard", host_40k, TRAIN_INSTANCE_MB, "MB"))
    lines.append(("channel read, all 40k series (one reader)", channel_40k, TRAIN_INSTANCE_MB, "MB"))
    for name, value, limit, unit in lines:
        print(ratio_line(name, value, limit, unit))
    if training:
        rounds = training["rounds"]
        print(
            f"  training: {per_series:.3f} CPU s a series ({training['series']} series, 1 host, backtest sample "
            f"{training['sample']} a metric); sharding efficiency "
            + ", ".join(
                f"{h} hosts {rounds[h]['efficiency']:.2f} (wall {rounds[h]['wall_efficiency']:.2f})" for h in rounds
            )
            + f"; measured CPU / scale's prediction, busiest host: {calibration:.2f}; worker efficiency "
            f"{efficiency:.2f}{'' if training['workers'] else ' (assumed: --workers 1)'}; {needed} instance(s) of "
            f"{TRAIN_VCPUS} vCPU would do 40,000 series in 15 minutes"
        )
    report.update(
        {
            "measured": {k: asdict(v) for k, v in measured.items()},
            "training": training,
            "train_per_series_cpu_s": per_series,
            "train_calibration": calibration,
            "train_worker_efficiency": efficiency,
            "train_40k_seconds": train_s,
            "train_instances_needed": needed,
            "train_host_peak_40k_mb": host_40k,
            "files": files,
            "limits": [{"name": a, "value": b, "limit": c, "unit": d, "ratio": b / c} for a, b, c, d in lines],
            "load_average_end": os.getloadavg(),
        }
    )
    shutil.rmtree(lake)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=TARGET_SERVERS, help="fleet size (default 10000)")
    parser.add_argument("--work", default=".bench-scale", help="where the built lake is cached (default .bench-scale)")
    parser.add_argument("--train-servers", type=int, default=12, help="servers of the training sample (default 12)")
    parser.add_argument("--models", default=None, help="training.models for the training sample (default: the setting)")
    parser.add_argument("--hosts", default="1,2,4", help="simulated host counts to shard over (default 1,2,4)")
    parser.add_argument(
        "--backtest-sample", type=int, default=None, help="training.backtest_sample (default: the setting)"
    )
    parser.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), help="worker processes of the one-host round"
    )
    parser.add_argument("--tile-from", default=None, help="a trained sample's lake to tile from, skipping training")
    parser.add_argument("--skip-large", action="store_true", help="skip the 1 GB file")
    parser.add_argument("--skip-files", action="store_true", help="skip the file-size measurements")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        logging_quiet()
        print(json.dumps(child_main(json.loads(args.child)), default=str))
        return
    report = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


def logging_quiet() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)


if __name__ == "__main__":
    main()
