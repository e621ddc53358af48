"""The console table formatter: dates as dates, numbers rounded to what they mean, NULL empty, 100 columns with no
clipped header or server id; the risk lists split into breaching now and next to break."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capacity_forecaster.cli import CONFIG_DOC, build_parser, main, package_version
from capacity_forecaster.query import views
from capacity_forecaster.report import NEXT_HEADERS, NOW_HEADERS, breaching_now, chart_series, next_to_break
from capacity_forecaster.schema import TABLES
from capacity_forecaster.tables import format_table, format_value, value_kind

ROOT = Path(__file__).resolve().parents[2]
LONG_ID = "db-primary-01.eu-west-1.internal.example.com"


def cells(lines: list[str], row: int) -> list[str]:
    """The cells of data row ``row`` (after the header and the rule), split on the two-space gap."""
    return [c.strip() for c in re.split(r"\s{2,}", lines[2 + row].strip())]


def test_dates_print_as_dates_and_times_only_when_there_are_any() -> None:
    frame = pd.DataFrame(
        {
            "breach_date_p50": pd.to_datetime(["2026-12-16", None]),
            "ts": pd.to_datetime(["2026-12-16 13:05", "2026-12-17 00:00"], format="%Y-%m-%d %H:%M"),
            "dt": [date(2026, 12, 16), None],
        }
    )
    lines = format_table(frame)
    text = "\n".join(lines)
    assert "00:00:00" not in text and "NaT" not in text and "None" not in text
    assert cells(lines, 0) == ["2026-12-16", "2026-12-16 13:05", "2026-12-16"]
    assert cells(lines, 1) == ["2026-12-17 00:00"]  # NULLs are empty: only the one value is left on the line


def test_numbers_are_rounded_to_what_they_mean() -> None:
    frame = pd.DataFrame(
        {
            "days_to_breach_p50": pd.array([15, None], dtype="Int32"),
            "last_p95": [76.283999, np.nan],
            "breach_probability": [0.3333, 1.0],
            "monthly_savings": [1234.5, 0.0],
            "mase": [0.59412, 12.3456],
            "days_float": [15.0, 2.0],
        }
    ).rename(columns={"days_float": "history_days"})
    lines = format_table(frame)
    assert cells(lines, 0) == ["15", "76.3", "33%", "1,234.50", "0.594", "15"]
    assert cells(lines, 1) == ["100%", "0.00", "12.35", "2"]
    assert "nan" not in "\n".join(lines).lower()
    assert value_kind("threshold", np.dtype("float64")) == "percent"
    assert format_value(True, "bool") == "yes" and format_value(pd.NA) == "" and format_value(np.nan, "percent") == ""


def wide_register() -> pd.DataFrame:
    """Every column of the risk register, with long server ids and unrounded values."""
    n = 4
    frame = pd.DataFrame({c.name: [None] * n for c in TABLES["risk_register"].columns})
    frame["server_id"] = [LONG_ID, "srv-0001", LONG_ID.replace("01", "02"), "x"]
    frame["metric"] = "cpu"
    frame["last_p95"] = [76.283999, 12.0, 99.9, np.nan]
    frame["breach_probability"] = [0.5, 1.0, 0.0, np.nan]
    frame["breach_date_p50"] = pd.to_datetime(["2026-12-16", None, "2027-01-02", None])
    frame["days_to_breach_p50"] = pd.array([15, None, 32, None], dtype="Int32")
    frame["reason"] = "a long free-text reason " * 5
    return frame


@pytest.mark.parametrize("width", [100, 80])
def test_a_wide_table_fits_by_dropping_columns_not_by_clipping(width: int) -> None:
    frame = wide_register()
    lines = format_table(frame, width=width, title="Risk register")
    assert all(len(line) <= width for line in lines), [len(line) for line in lines]
    header = lines[1]
    shown = header.split()
    assert shown[:2] == ["server_id", "metric"]  # the keys come first and stay
    assert all(name in frame.columns for name in shown)  # every header whole, none cut to 'breach_proba...'
    assert "…" not in header and "..." not in "\n".join(lines)
    ids = [line.split()[0] for line in lines[3 : 3 + len(frame)]]
    assert ids == list(frame["server_id"])  # whole ids, in order
    footer = " ".join(lines[3 + len(frame) :]).strip()
    left_out = [c for c in frame.columns if c not in shown]
    assert left_out and footer.startswith(f"not shown at {width} columns")
    assert all(c in footer for c in left_out)


def test_headers_given_are_kept_whole_and_priority_decides_what_stays() -> None:
    frame = wide_register()[["server_id", "metric", "breach_probability", "last_p95", "reason"]]
    headers = {"breach_probability": "chance", "last_p95": "last P95 %"}
    lines = format_table(frame, width=70, headers=headers, priority=["server_id", "last_p95", "breach_probability"])
    assert lines[0].startswith("server_id") and LONG_ID in lines[2]
    assert "last P95 %" in lines[0] and "chance" not in lines[0] and "reason" not in lines[0]
    assert all(len(line) <= 70 for line in lines)


def test_an_empty_result_still_shows_its_headers() -> None:
    lines = format_table(pd.DataFrame({"server_id": pd.Series([], dtype=str)}), empty="nothing")
    assert lines == ["server_id", "─" * len("server_id"), "  (nothing)"]


# ------------------------------------------------------------------------------ breaching now and next to break

RUN = pd.Timestamp("2026-01-01")


def register() -> pd.DataFrame:
    def day(n: int | None) -> pd.Timestamp | None:
        return None if n is None else RUN + pd.Timedelta(days=n)

    rows = [  # server, already, days p50, days likely, chance, severity
        ("now-over", True, 0, 0, 1.0, "critical", 95.0),
        ("now-p50", False, 0, 0, 1.0, "critical", 79.0),
        ("soon", False, 12, 10, 0.9, "critical", 70.0),
        ("later", False, 40, None, 0.6, "high", 60.0),
        ("likely-only", False, None, 5, 0.4, "high", 65.0),
        ("never", False, None, None, 0.05, "low", 20.0),
    ]
    return pd.DataFrame(
        {
            "server_id": [r[0] for r in rows],
            "metric": "cpu",
            "model": "linear_trend",
            "threshold": 80.0,
            "already_breaching": [r[1] for r in rows],
            "days_to_breach_p50": pd.array([r[2] for r in rows], dtype="Int32"),
            "breach_date_p50": pd.to_datetime([day(r[2]) for r in rows]),
            "breach_date_p90": pd.to_datetime([day(r[2]) for r in rows]),
            "likely_breach_date": pd.to_datetime([day(r[3]) for r in rows]),
            "breach_probability": [r[4] for r in rows],
            "severity": [r[5] for r in rows],
            "last_p95": [r[6] for r in rows],
            "peak_p50": 90.0,
            "peak_p90": 99.0,
            "run_date": RUN,
        }
    )


def test_breaching_now_and_next_to_break_split_the_register() -> None:
    reg = register()
    servers = pd.DataFrame({"server_id": reg["server_id"], "application": "billing"})
    now = breaching_now(reg, servers, top=10)
    upcoming = next_to_break(reg, servers, top=10)
    assert list(now["server_id"]) == ["now-over", "now-p50"]  # the furthest over the threshold first
    # Soonest first, by the earlier of the P50 and the likely breach dates; none of them breaching now.
    assert list(upcoming["server_id"]) == ["likely-only", "soon", "later"]
    assert list(upcoming["days"]) == [5, 10, 40]
    assert set(now["server_id"]).isdisjoint(upcoming["server_id"])
    assert list(now.columns) == [c for c in NOW_HEADERS if c in now.columns]
    assert list(upcoming.columns) == [c for c in NEXT_HEADERS if c in upcoming.columns]
    assert (upcoming["application"] == "billing").all()
    assert list(next_to_break(reg, None, top=1)["server_id"]) == ["likely-only"]


def test_short_histories_are_marked_yes_and_their_days_shown_when_there_is_room() -> None:
    reg = register().assign(
        short_history=[False, False, True, False, False, False],
        history_days=pd.array([700, 700, 20, 700, 700, 700], dtype="Int32"),
    )
    upcoming = next_to_break(reg, None, top=3)
    assert dict(zip(upcoming["server_id"], upcoming["short"], strict=True)) == {
        "likely-only": "",
        "soon": "yes",
        "later": "",
    }
    lines = format_table(upcoming, headers=NEXT_HEADERS, priority=list(NEXT_HEADERS), width=100)
    header = lines[0].split()
    assert "short" in header and "history" not in header  # the days drop first, named in the footer
    assert "history days" in " ".join(lines[-2:])
    soon = next(line for line in lines if line.startswith("soon"))
    assert soon.split()[6] == "yes"  # server, metric, severity, breaks on, in days, chance, short
    narrow = format_table(upcoming, headers=NEXT_HEADERS, priority=list(NEXT_HEADERS), width=60)
    assert "short" not in narrow[0].split() and all(
        line.startswith(("soon", "later", "likely")) for line in narrow[2:5]
    )
    wide = format_table(upcoming, headers=NEXT_HEADERS, priority=list(NEXT_HEADERS), width=200)
    assert "history days" in wide[0] and "20" in next(line for line in wide if line.startswith("soon")).split()
    now = breaching_now(reg, None, top=3)
    assert list(now["short"]) == ["", ""] and "short" in now.columns
    assert list(breaching_now(register(), None, top=3)["short"]) == ["", ""]  # a register without the column


def test_the_charts_take_next_to_break_and_breaching_now_alternately() -> None:
    picked = chart_series(register(), None, charts=4)
    assert list(picked["server_id"]) == ["likely-only", "now-over", "soon", "now-p50"]
    assert list(chart_series(register(), None, charts=6)["server_id"])[-1] == "later"  # one list runs short


# ------------------------------------------------------------------------------ the commands


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"capacity-forecaster {package_version()}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", package_version())


def test_query_help_lists_every_table_and_view(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["query", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in [*TABLES, *views()]:
        assert re.search(rf"\b{name}\b", text), name


def test_config_help_points_to_a_section_that_exists() -> None:
    help_text = build_parser()._subparsers._group_actions[0].choices["etl"].format_help()  # type: ignore[union-attr]
    assert CONFIG_DOC in " ".join(help_text.replace("-\n", "-").split()).replace("- ", "-")
    page, _, anchor = CONFIG_DOC.partition("#")
    headings = [line.lstrip("#").strip() for line in (ROOT / page).read_text().splitlines() if line.startswith("#")]
    slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    assert anchor in slugs


def test_query_table_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # the terminal's width, whatever runs the test
    sql = (
        "SELECT 'srv-0001' AS server_id, NULL::DOUBLE AS last_p95, 76.283999 AS peak_p50, "
        "DATE '2026-12-16' AS breach_date_p50, 15::DOUBLE AS days_to_breach_p50, 0.25 AS breach_probability"
    )
    assert main(["query", "--lake", str(tmp_path / "lake"), sql]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "server_id",
        "last_p95",
        "peak_p50",
        "breach_date_p50",
        "days_to_breach_p50",
        "breach_probability",
    ]
    assert out[2].split() == ["srv-0001", "76.3", "2026-12-16", "15", "25%"]
