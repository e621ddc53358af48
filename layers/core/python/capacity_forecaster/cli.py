"""The ``capacity-forecaster`` command: the local pipeline and each of its stages.

User errors (bad settings, unreadable input, missing tables, S3 access problems) are printed as one line on
standard error with exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from capacity_forecaster.errors import CapacityForecasterError, InputError, single_line
from capacity_forecaster.redact import install_log_redaction, redact
from capacity_forecaster.storage.lease import LEASE_TTL, waiting_for_leases

EXIT_USER_ERROR = 2
CONFIG_DOC = "docs/settings.md#the-settings-file"
"""Where --config's help sends the reader (a test checks that the section exists)."""
LEASE_WAIT_DEFAULT_S = int(LEASE_TTL.total_seconds())  # a bare --wait: a killed holder's lease is taken over by then

DESCRIPTION = """\
Forecast which servers will run out of CPU, memory, disk or network, and when.

The lake is a local folder (default ./lake) or s3://bucket/prefix. Settings come from built-in defaults, then a
YAML file (--config or CF_CONFIG), then CF_* environment variables, then these flags.
"""


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date in YYYY-MM-DD form") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"{value:g} must be between 0 and 86400 seconds")
    return value


def _wait_arg(parser: argparse.ArgumentParser) -> None:
    """``--wait [SECONDS]`` on the commands that take a lease (etl, train, risk, run)."""
    parser.add_argument(
        "--wait",
        nargs="?",
        type=_seconds,
        const=float(LEASE_WAIT_DEFAULT_S),
        default=0.0,
        metavar="SECONDS",
        help="when another run holds this stage's lease, wait up to SECONDS (default "
        f"{LEASE_WAIT_DEFAULT_S}) for it to be free instead of exiting with status 2",
    )


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error as one ``error:`` line and exit status 2, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {_one_line(message)} (see `{self.prog} --help`)\n")


def _one_line(message: object) -> str:
    """One line, credentials in URLs masked: every error and usage line passes here."""
    return redact(single_line(str(message)))


def _common() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument("--lake", help="lake location: a folder (default ./lake) or s3://bucket/prefix")
    common.add_argument("--config", type=Path, help=f"YAML settings file (see {CONFIG_DOC})")
    return common


def _fleet_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--servers", type=_positive, help="servers in the synthetic fleet (default 100)")
    parser.add_argument("--days", type=_positive, help="days of history to generate (default 730)")
    parser.add_argument("--seed", type=int, help="random seed; the same seed gives the same fleet (default 42)")
    parser.add_argument("--end-date", type=_date, help="last generated day (default: the day before the run)")
    parser.add_argument(
        "--raw-day",
        type=_date,
        action="append",
        default=[],
        help="write 5-minute samples for this day instead of its daily P95 (repeatable)",
    )


def _grain_args(parser: argparse.ArgumentParser, *, hours: bool) -> None:
    parser.add_argument(
        "--grain",
        dest="training_grain",
        choices=("daily", "hourly"),
        help="daily: metrics_daily -> forecasts; hourly: metrics_hourly -> forecasts_hourly (default training.grain)",
    )
    if hours:
        parser.add_argument("--horizon-hours", type=_positive, help="horizon of --grain hourly in hours (default 168)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="capacity-forecaster",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()

    def add(name: str, help_text: str, description: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=description, **kwargs)

    for name in ("run", "demo"):
        if name == "run":
            p = add(
                name,
                "run every stage on the lake's own data: etl -> train -> risk -> consolidation -> report",
                "Validate and aggregate the raw files not processed before (what `ingest` and `pull-cloudwatch` "
                "put in the lake), train forecasts through the SageMaker entry point on local cores, build the risk "
                "register and the consolidation plan (on the inventory of `inventory`), print the servers most at "
                "risk and write the HTML report and exports. Generates nothing; --demo (or `demo`) runs on a "
                "synthetic fleet instead.",
            )
            p.add_argument(
                "--demo", action="store_true", help="generate the synthetic demo fleet first (as `demo` does)"
            )
        else:
            p = add(
                name,
                "the whole pipeline on a synthetic demo fleet: generate -> etl -> ... -> report",
                "Generate a synthetic fleet (servers, inventory, daily P95 exports and the planted ground truth) into "
                "a lake of its own, then run every stage on it as `run` does. A lake holding uploads is refused.",
            )
        _fleet_args(p)
        p.add_argument("--horizon", type=_positive, help="forecast horizon in days (default 90)")
        p.add_argument("--run-date", type=_date, help="date of the run (default: today, UTC)")
        p.add_argument("--hosts", type=_positive, help="simulated training hosts, each takes a shard (default 1)")
        p.add_argument("--top", type=_positive, help="rows in the top-risks table (default 15)")
        p.add_argument(
            "--report-dir", type=Path, default=Path("reports"), help="where the HTML report and exports go (./reports)"
        )
        _wait_arg(p)

    p = add(
        "consolidate",
        "build the consolidation plan of the latest (or a given) risk register",
        "Profile each server's cpu and mem, find idle and over-provisioned servers, pack idle workloads onto "
        "servers of the same environment and data centre and pick cheaper sizes, on the inventory the lake holds "
        "(`inventory`; sizes and prices by instance type from the price table); write the consolidation table "
        "and print the plan. What the inventory lacks is said in one line.",
    )
    p.add_argument("--run-date", type=_date, help="risk register to use (default: the latest)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    p.add_argument("--top", type=_positive, help="rows to print in table format (default 15)")

    p = add(
        "inventory",
        "write the server inventory (servers table) from a CSV or Excel file",
        "Read FILE (CSV with comma, semicolon or tab; or .xlsx, its first sheet): a server id column (server_id, "
        "hostname, host, instance, name...) and any of application, environment, datacenter (data centre, "
        "region), availability_zone, instance_type, cores (vcpus), memory_gib (memory, ram), monthly_cost (cost, "
        "monthly_cost_usd); every other column becomes a tag. Cores, memory and costs the file lacks come from "
        "the price table by instance type. Replaces the lake's inventory (--merge: only the servers FILE names).",
    )
    p.add_argument("file", type=Path, help="the inventory file (.csv or .xlsx)")
    p.add_argument("--merge", action="store_true", help="replace only the rows of the servers FILE lists")

    p = add(
        "generate",
        "write a synthetic fleet into the lake's raw zone",
        "Write servers with attributes, daily P95 exports for cpu, mem, disk and net (or 5-minute samples for "
        "--raw-day days), and the planted ground truth. Deterministic for a seed.",
    )
    _fleet_args(p)
    p.add_argument("--horizon", type=_positive, help="days after the history the ground truth covers (90)")
    p.add_argument("--run-date", type=_date, help="date of the run (default: today, UTC)")
    p.add_argument(
        "--append",
        action="store_true",
        help="write only the days after the lake's last one, continuing its fleet; rewrite nothing (as the "
        "deployed demo does)",
    )

    p = add(
        "ingest",
        "copy monitoring exports into the raw zone",
        "Check each file with the ETL's reader and row rules (long or wide CSV/Parquet/xlsx, CloudWatch JSON and "
        "console CSV, Prometheus query_range JSON, Grafana and Datadog CSV, semicolon or tab CSV, UTF-16; see "
        "docs/own-data.md) and copy the good ones into raw/uploads/tenants/<tenant>/YYYY/MM/DD/ under a UTC "
        "timestamped name; the next `etl` picks them up. A file no row of which would survive, or whose percent "
        "values all lie in 0-1, is refused with the fix; each refused file is listed, and the exit status is 2 "
        "if any was. With a read option the file is stored as the long CSV the option gives.",
    )
    p.add_argument("paths", nargs="+", type=Path, help="files to ingest")
    p.add_argument("--tenant", default="default", help="tenant prefix the files go under (default: default)")
    _ingest_options(p)

    p = add(
        "etl",
        "validate new raw files and rewrite the daily P95 partitions they cover",
        "Read raw objects not processed before, quarantine bad rows with a reason, aggregate to daily P95, "
        "fill short gaps, and log the run in etl_runs (rows in = rows written + rows quarantined).",
    )
    p.add_argument("--full", action="store_true", help="reprocess every raw object, not only new ones")
    p.add_argument(
        "--grain",
        choices=["daily", "hourly"],
        help="hourly: write metrics_hourly (P95, sample count, coverage flag) as well as metrics_daily",
    )
    _wait_arg(p)

    p = add(
        "profile",
        "flag outliers and anomalies and profile each daily series (ADF stationarity test)",
        "Flag each daily P95 by a rolling z-score and IQR fences over the trailing etl.outlier_window days "
        "(metrics_daily_flags; anomaly = both) and write one row per series to series_profile with the "
        "augmented Dickey-Fuller test. metrics_daily is not changed.",
    )

    p = add(
        "train",
        "run the training job (SageMaker container contract) on local cores",
        "Run sagemaker_jobs' entry point under the training container contract with its folders in a "
        "temporary directory, one per simulated host, then publish forecasts and model metrics to the lake.",
    )
    p.add_argument("--run-date", type=_date, help="date of the run (default: today, UTC)")
    p.add_argument("--hosts", type=_positive, help="simulated hosts; each trains its shard of the series")
    p.add_argument("--horizon", type=_positive, help="forecast horizon in days (default 90)")
    _grain_args(p, hours=True)
    _wait_arg(p)

    p = add(
        "risk",
        "build the risk register from the latest (or a given) forecast run",
        "Find the first day each champion forecast's P50 and P90 cross the threshold, the severity and the "
        "finding, write the risk_register partition and print the top risks.",
    )
    p.add_argument("--run-date", type=_date, help="forecast run to use (default: the latest)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    p.add_argument("--top", type=_positive, help="rows to print in table format (default 15)")
    _grain_args(p, hours=False)
    _wait_arg(p)

    p = add(
        "query",
        "run SQL on the lake with DuckDB",
        query_description(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sql", help='one read-only SQL statement, e.g. "SELECT * FROM risk_register LIMIT 5"')
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")

    p = add(
        "report",
        "write the HTML capacity report and CSV/Excel exports",
        "One self-contained HTML file (fleet heatmap, top risks, forecast-versus-actual charts with P10-P90 "
        "bands, utilisation profiles, consolidation plan and savings), plus CSV and Excel exports of the risk "
        "register and the consolidation plan.",
    )
    p.add_argument("--run-date", type=_date, help="run to report on (default: the latest)")
    p.add_argument("--output-dir", type=Path, default=Path("reports"), help="folder for the files (./reports)")
    p.add_argument("--top", type=_positive, help="rows in the top-risks table (default 15)")

    p = add(
        "pull-cloudwatch",
        "fetch EC2 CloudWatch metrics of tagged instances into the raw zone",
        "Find the running and stopped EC2 instances carrying the tag(s), fetch CPUUtilization and, where the "
        "CloudWatch agent publishes them, mem_used_percent and disk_used_percent (the fullest filesystem) for "
        "the last N complete UTC days with GetMetricData (5-minute averages up to 62 days, hourly up to 454), "
        "and write the responses as CloudWatch JSON into raw/uploads/tenants/<tenant>/YYYY/MM/DD/; the next "
        "`etl` picks them up. Needs ec2:DescribeInstances, cloudwatch:ListMetrics and cloudwatch:GetMetricData.",
    )
    p.add_argument("--tag", action="append", required=True, metavar="KEY=VALUE", help="instance tag (repeatable)")
    p.add_argument(  # not `days`: that name sets fleet.days
        "--days",
        dest="pull_days",
        metavar="N",
        type=_positive,
        required=True,
        help="complete UTC days to fetch, up to today",
    )
    p.add_argument("--tenant", default="default", help="tenant prefix the files go under (default: default)")
    p.add_argument("--region", help="region of the instances (default: the S3 settings' region)")

    add(
        "doctor",
        "check that the lake is reachable and writable",
        "For an S3 lake: credentials, bucket, list and write access, each with what to do when it fails. "
        "For a local lake: the folder can be created and written.",
    )
    return parser


def package_version() -> str:
    """The installed package's version; the source tree's ``__version__`` when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("capacity-forecaster")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without `pip install -e .`
        from capacity_forecaster import __version__

        return __version__


def query_description() -> str:
    """``query --help``'s text: the lake's tables (from the schemas) and the planners' views (from ``sql/``)."""
    import textwrap

    from capacity_forecaster.query import views
    from capacity_forecaster.schema import TABLES

    def listing(names: Sequence[str]) -> str:
        return textwrap.fill(", ".join(names), width=96, initial_indent="  ", subsequent_indent="  ")

    return (
        "Run one read-only SQL statement on the lake's tables and views with DuckDB (the same names as in "
        "Athena).\n\nTables:\n"
        + listing(sorted(TABLES))
        + "\n\nViews (docs/outputs.md):\n"
        + listing(sorted(views()))
        + '\n\nA table\'s columns: capacity-forecaster query "DESCRIBE risk_register"'
    )


def _settings(args: argparse.Namespace) -> Any:
    from capacity_forecaster.settings import load_settings

    overrides = {
        "lake": args.lake,
        "horizon_days": getattr(args, "horizon", None),
        "fleet.servers": getattr(args, "servers", None),
        "fleet.days": getattr(args, "days", None),
        "fleet.seed": getattr(args, "seed", None),
        "fleet.end_date": getattr(args, "end_date", None),
        "training.hosts": getattr(args, "hosts", None),
        "risk.top": getattr(args, "top", None),
        "etl.grain": getattr(args, "grain", None),
        "training.grain": getattr(args, "training_grain", None),
        "training.horizon_hours": getattr(args, "horizon_hours", None),
    }
    return load_settings(args.config, overrides=overrides)


def _lake(settings: Any) -> Any:
    from capacity_forecaster.storage.lake import open_lake

    s3_config = settings.s3_config() if str(settings.lake).startswith("s3://") else None
    return open_lake(settings.lake, s3_config)


def _run_date(args: argparse.Namespace) -> date:
    return getattr(args, "run_date", None) or datetime.now(UTC).date()


def _console() -> Any:
    from rich.console import Console

    # Piped output (CI logs, `| tee`) gets a wide fixed width instead of rich's 80 columns.
    return Console(width=None if sys.stdout.isatty() else 160)


def _table_width() -> int:
    """Tables fit the terminal (COLUMNS when set), 100 columns when there is none."""
    import shutil

    from capacity_forecaster.tables import DEFAULT_WIDTH

    return max(40, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


def _print_frame(df: Any, fmt: str, title: str | None = None) -> None:
    from capacity_forecaster.query import format_result

    if fmt != "table":
        sys.stdout.write(format_result(df, fmt))
        return
    from capacity_forecaster.report import print_table

    print_table(_console(), df, title=title, width=_table_width())


FLEET_OPTIONS = {"servers": "--servers", "days": "--days", "seed": "--seed", "end_date": "--end-date"}


def cmd_run(args: argparse.Namespace) -> None:
    from capacity_forecaster.pipeline import run_pipeline
    from capacity_forecaster.progress import RichProgress
    from capacity_forecaster.report import render_summary
    from capacity_forecaster.schema import SERVERS

    demo = args.command == "demo" or getattr(args, "demo", False)
    given = [flag for key, flag in FLEET_OPTIONS.items() if getattr(args, key) is not None]
    if not demo and (given or args.raw_day):
        flag = (given or ["--raw-day"])[0]
        raise CapacityForecasterError(
            f"{flag} shapes the synthetic demo fleet; `run` works on the lake's own data: use "
            f"`capacity-forecaster demo {flag} ...` (or `run --demo`)"
        )
    settings = _settings(args)
    lake = _lake(settings)
    run_date = _run_date(args)
    console = _console()
    what = (
        f"the demo fleet of {settings.fleet.servers} servers, {settings.fleet.days} days of history"
        if demo
        else "the lake's own data"
    )
    console.print(
        f"Running the pipeline for {run_date} on {lake.uri}: {what}, {settings.horizon_days}-day horizon",
        soft_wrap=True,
    )
    started = time.perf_counter()
    with RichProgress() as progress:
        result = run_pipeline(lake, settings, run_date=run_date, demo=demo, raw_days=args.raw_day, progress=progress)
    lines = [
        f"{s.stage}: " + ", ".join(f"{k}={v}" for k, v in s.counts.items() if k != "run_id") for s in result.stages
    ]
    lines += [f"{s.stage}: {note}" for s in result.stages for note in s.notes]
    render_summary(
        console,
        register=result.register,
        servers=lake.read_table(SERVERS),
        top=settings.risk.top,
        stage_lines=lines,
        outputs=result.outputs,
        width=_table_width(),
    )
    from capacity_forecaster.html_report import load_report_data, write_report

    data = load_report_data(lake, run_date=run_date, top=settings.risk.top)
    paths = write_report(data, args.report_dir)
    console.print(f"Finished in {time.perf_counter() - started:.1f} s.")
    console.print(f"Report: {paths['html']}", soft_wrap=True)


def cmd_consolidate(args: argparse.Namespace) -> None:
    from capacity_forecaster.schema import CONSOLIDATION
    from capacity_forecaster.stages import run_consolidation

    settings = _settings(args)
    lake = _lake(settings)
    result = run_consolidation(lake, settings, run_date=args.run_date)
    plan = lake.read_table(CONSOLIDATION, where={"run_date": result.counts["run_date"]})
    if args.format != "table":
        _print_frame(plan.drop(columns="run_date", errors="ignore"), args.format)
        return
    _print_counts(result)
    for note in result.notes:
        print(f"  note: {note}")
    changes = plan[plan["action"] != "keep"]
    if changes.empty:
        print("  no server to consolidate or downsize")
        return
    shown = changes[
        ["server_id", "action", "current_instance_type", "target_instance_type", "target_server_id", "monthly_savings"]
    ]
    shown = shown.head(settings.risk.top)
    _print_frame(shown.astype(object).where(shown.notna(), None), "table", "Consolidation plan")


def cmd_inventory(args: argparse.Namespace) -> None:
    from capacity_forecaster.inventory import completed, inventory_summary, read_inventory, write_inventory

    settings = _settings(args)
    lake = _lake(settings)
    servers = read_inventory(args.file)
    uri = write_inventory(lake, servers, settings, merge=args.merge)
    summary = inventory_summary(completed(servers, settings))
    print("inventory: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    print(f"  wrote {redact(uri)}")


def cmd_generate(args: argparse.Namespace) -> None:
    from capacity_forecaster.progress import RichProgress
    from capacity_forecaster.stages import run_generate

    settings = _settings(args)
    lake = _lake(settings)
    with RichProgress() as progress:
        result = run_generate(
            lake,
            settings,
            run_date=_run_date(args),
            raw_days=args.raw_day,
            append=args.append,
            progress=progress,
        )
    _print_counts(result)


def _ingest_options(p: argparse.ArgumentParser) -> None:
    """The per-file read options of ``ingest`` (see docs/own-data.md, "Export formats")."""
    p.add_argument("--date-format", help="strptime pattern of the timestamps, e.g. '%%d.%%m.%%Y %%H:%%M' (UTC)")
    p.add_argument(
        "--label-format",
        help="pattern of the series labels, with {server}, {metric} and {_} (any text), e.g. '{metric}-{server}'",
    )
    p.add_argument("--server", help="server id of the rows that have none (a file of one server)")
    p.add_argument(
        "--metric", help="metric of the rows that have none: cpu, mem, disk, net or a node_exporter PromQL expression"
    )
    values = p.add_mutually_exclusive_group()
    values.add_argument("--fraction", action="store_true", help="the values are 0-1 fractions: multiply them by 100")
    values.add_argument("--percent", action="store_true", help="the values are percent even if all are under 1")


def cmd_ingest(args: argparse.Namespace) -> None:
    from capacity_forecaster.formats.options import ReadOptions
    from capacity_forecaster.ingest import ingest_batch

    settings = _settings(args)
    options = ReadOptions(
        date_format=args.date_format,
        label_format=args.label_format,
        server=args.server,
        metric=args.metric,
        fraction=args.fraction,
    )
    report = ingest_batch(
        _lake(settings),
        args.paths,
        tenant=args.tenant,
        aliases=settings.ingest.aliases(),
        max_bytes=settings.ingest.max_file_bytes,
        options=options,
        percent=args.percent,
    )
    for uri in report.uploaded:
        print(redact(uri))
    for path, first in report.skipped:
        print(redact(f"skipped {path}: the same content as {first}"))
    if not report.refused:
        return
    if len(args.paths) == 1:
        path, reason = report.refused[0]
        raise InputError(f"{path}: {reason}")
    for path, reason in report.refused:
        print(f"error: {_one_line(f'{path}: {reason}')}", file=sys.stderr)
    raise InputError(
        f"{len(report.refused)} of {len(args.paths)} files refused (listed above); {len(report.uploaded)} ingested"
    )


def cmd_pull_cloudwatch(args: argparse.Namespace) -> None:
    from capacity_forecaster.cloudwatch_pull import AwsClients, TagFilter, pull_cloudwatch

    settings = _settings(args)
    tags = [TagFilter.parse(text) for text in args.tag]
    lake = _lake(settings)
    clients = AwsClients.create(settings.s3_config(), args.region)
    result = pull_cloudwatch(lake, clients, tags=tags, days=args.pull_days, tenant=args.tenant, settings=settings)
    series = ", ".join(f"{name}={n}" for name, n in result.series.items())
    print(
        f"pull-cloudwatch: instances={len(result.instances)}, {series}, period={result.period}s, "
        f"window={result.start:%Y-%m-%d}..{result.end - timedelta(days=1):%Y-%m-%d}, calls={result.calls}, "
        f"points={result.points}"
    )
    for uri in result.written:
        print(f"  wrote {uri}")
    if not result.written:
        print("  no data points in the window: nothing written")
    if result.inventory:
        print(f"  inventory (instance types, zones, tags of {len(result.instances)} instances): {result.inventory}")


def cmd_profile(args: argparse.Namespace) -> None:
    from capacity_forecaster.progress import RichProgress
    from capacity_forecaster.stages import run_profile

    settings = _settings(args)
    lake = _lake(settings)
    with RichProgress() as progress:
        result = run_profile(lake, settings, progress=progress)
    _print_counts(result)


def cmd_etl(args: argparse.Namespace) -> None:
    from capacity_forecaster.progress import RichProgress
    from capacity_forecaster.stages import run_etl

    settings = _settings(args)
    lake = _lake(settings)
    with RichProgress() as progress:
        result = run_etl(lake, settings, full=args.full, progress=progress)
    _print_counts(result)


def cmd_train(args: argparse.Namespace) -> None:
    from capacity_forecaster.stages import run_train

    settings = _settings(args)
    result = run_train(_lake(settings), settings, run_date=_run_date(args), progress=True)
    _print_counts(result)


def cmd_risk(args: argparse.Namespace) -> None:
    from capacity_forecaster.report import print_risks
    from capacity_forecaster.schema import RISK_REGISTER, SERVERS
    from capacity_forecaster.stages import run_risk

    settings = _settings(args)
    lake = _lake(settings)
    result = run_risk(lake, settings, run_date=args.run_date)
    register = lake.read_table(RISK_REGISTER, where={"run_date": result.counts["run_date"]})
    if args.format == "table":
        _print_counts(result)
        servers = lake.read_table(SERVERS)
        print_risks(_console(), register, servers, top=settings.risk.top, width=_table_width())
    else:
        _print_frame(register, args.format)


def cmd_report(args: argparse.Namespace) -> None:
    from capacity_forecaster.html_report import load_report_data, write_report

    settings = _settings(args)
    data = load_report_data(_lake(settings), run_date=args.run_date, top=settings.risk.top)
    for name, path in write_report(data, args.output_dir).items():
        print(f"{name:<18} {path}")


def cmd_query(args: argparse.Namespace) -> None:
    from capacity_forecaster.query import run_query

    settings = _settings(args)
    _print_frame(run_query(_lake(settings), args.sql), args.format)


def cmd_doctor(args: argparse.Namespace) -> None:
    from capacity_forecaster.doctor import check_lake

    settings = _settings(args)
    checks = check_lake(settings)
    for check in checks:
        mark = "ok  " if check.ok else "FAIL"
        print(f"[{mark}] {check.name}: {redact(check.message)}")
    failed = [c.name for c in checks if not c.ok]
    if failed:  # each failure and what to do is on its [FAIL] line above: not repeated here
        raise CapacityForecasterError(
            f"{len(failed)} of {len(checks)} lake checks failed ({', '.join(failed)}): see the [FAIL] lines"
        )


def _print_counts(result: Any) -> None:
    print(redact(f"{result.stage}: " + ", ".join(f"{k}={v}" for k, v in result.counts.items())))
    for uri in result.written[:5]:
        print(f"  wrote {redact(uri)}")
    if len(result.written) > 5:
        print(f"  ... and {len(result.written) - 5} more objects")


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "run": cmd_run,
    "demo": cmd_run,
    "consolidate": cmd_consolidate,
    "inventory": cmd_inventory,
    "generate": cmd_generate,
    "ingest": cmd_ingest,
    "etl": cmd_etl,
    "profile": cmd_profile,
    "train": cmd_train,
    "risk": cmd_risk,
    "query": cmd_query,
    "report": cmd_report,
    "doctor": cmd_doctor,
    "pull-cloudwatch": cmd_pull_cloudwatch,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    install_log_redaction()
    args = build_parser().parse_args(argv)
    try:
        with waiting_for_leases(getattr(args, "wait", 0.0)):
            COMMANDS[args.command](args)
    except CapacityForecasterError as exc:
        print(f"error: {_one_line(exc) or type(exc).__name__}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
