"""ETL rules: parsing, validation with reasons, reconciliation, daily P95 and gap filling."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capacity_forecaster import etl
from capacity_forecaster.errors import InputError

NOW = pd.Timestamp("2026-03-01T00:00:00Z")


def raw(rows: list[tuple[object, object, object, object]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(etl.REQUIRED_COLUMNS))
    return df.assign(source="upload.csv", row_number=range(len(df)))


def test_each_rule_gives_its_reason() -> None:
    frame = raw(
        [
            ("2026-01-01T00:00:00Z", "srv-1", "cpu", "50"),  # valid
            ("2026-01-01T00:00:00Z", "", "cpu", "50"),
            ("2026-01-01T00:00:00Z", "srv/1", "cpu", "50"),
            ("2026-01-01T00:00:00Z", "srv-1", "gpu", "50"),
            ("yesterday", "srv-1", "mem", "50"),
            ("2027-01-01T00:00:00Z", "srv-1", "mem", "50"),
            ("2026-01-01T00:05:00Z", "srv-1", "cpu", "n/a"),
            ("2026-01-01T00:10:00Z", "srv-1", "cpu", "101"),
            ("2026-01-01T00:10:00Z", "srv-1", "disk", "-1"),
            ("2026-01-01T00:00:00Z", "srv-1", "cpu", "50"),  # exact duplicate of row 0
            ("2026-01-02T00:00:00Z", "srv-2", "net", "10"),  # conflicting pair
            ("2026-01-02T00:00:00Z", "srv-2", "net", "11"),
            ("2026-01-02T01:00:00+01:00", "srv-3", "CPU", "12.5"),  # valid: offset and case normalised
        ]
    )
    valid, rejected = etl.validate_samples(frame, now=NOW)
    assert rejected.set_index("row_number")["reason"].to_dict() == {
        1: "missing_server_id",
        2: "invalid_server_id",
        3: "unknown_metric",
        4: "unparseable_timestamp",
        5: "future_timestamp",
        6: "non_numeric_value",
        7: "value_out_of_range",
        8: "value_out_of_range",
        9: "duplicate",
        10: "conflicting_duplicate",
        11: "conflicting_duplicate",
    }
    assert valid["row_number"].tolist() == [0, 12]
    assert valid.loc[1, "metric"] == "cpu"
    assert valid.loc[1, "timestamp"] == pd.Timestamp("2026-01-02T00:00:00Z")
    assert rejected.loc[rejected["row_number"] == 6, "value"].item() == "n/a"
    assert set(rejected["reason"]) <= set(etl.REASONS)


def test_context_duplicates_from_earlier_files() -> None:
    context = pd.DataFrame(
        {
            "timestamp": [pd.Timestamp("2026-01-01T00:00:00Z")] * 2,
            "server_id": ["srv-1", "srv-2"],
            "metric": ["cpu", "cpu"],
            "value": [50.0, 60.0],
        }
    )
    frame = raw([("2026-01-01T00:00:00Z", "srv-1", "cpu", "50"), ("2026-01-01T00:00:00Z", "srv-2", "cpu", "61")])
    valid, rejected = etl.validate_samples(frame, now=NOW, context=context)
    assert valid.empty
    assert rejected["reason"].tolist() == ["duplicate", "conflicting_duplicate"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z", "bad", "2030-01-01T00:00:00Z", ""]),
            st.sampled_from(["srv-1", "srv-2", "", "bad id", None]),
            st.sampled_from(["cpu", "mem", "MEM", "gpu", None]),
            st.sampled_from(["0", "50", "100", "100.5", "-3", "x", "", None, "1e2"]),
        ),
        max_size=60,
    )
)
def test_reconciliation_holds_for_any_mix(rows: list[tuple[object, object, object, object]]) -> None:
    frame = raw(rows)
    valid, rejected = etl.validate_samples(frame, now=NOW)
    assert len(valid) + len(rejected) == len(frame)
    assert sorted(valid["row_number"].tolist() + rejected["row_number"].tolist()) == list(range(len(frame)))
    assert not valid.duplicated(subset=etl.SAMPLE_KEY).any()
    assert valid["value"].between(0, 100).all()


def test_boolean_values_are_not_numbers() -> None:
    """A Parquet boolean column (long or wide) is not a percentage: its rows are non-numeric, not 1 and 0."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    def parquet(table: pa.Table) -> bytes:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()

    ts, srv = ["2026-01-01T00:00:00Z"] * 2, ["srv-1", "srv-2"]
    long = pa.table({"timestamp": ts, "server_id": srv, "metric": ["cpu", "cpu"], "value": [True, False]})
    wide = pa.table({"timestamp": ts, "server_id": srv, "cpu": [True, False], "mem": [5.0, 6.0]})
    for table in (long, wide):
        frame = etl.read_raw_object("x.parquet", parquet(table)).assign(source="x.parquet")
        valid, rejected = etl.validate_samples(frame.assign(row_number=range(len(frame))), now=NOW)
        assert set(valid["metric"]) <= {"mem"}
        assert rejected["reason"].tolist() == ["non_numeric_value"] * 2
        assert sorted(rejected["value"]) == ["False", "True"]


def test_read_raw_object_formats_and_errors() -> None:
    csv = b"timestamp,server_id,metric,value,extra\n2026-01-01T00:00:00Z,srv-1,cpu,5,x\n"
    assert etl.read_raw_object("a.csv", csv).columns.tolist() == [*etl.REQUIRED_COLUMNS, "attributes"]
    assert len(etl.read_raw_object("a.csv.gz", gzip.compress(csv))) == 1
    cases = {
        ("a.csv", b""): "the file is empty",
        ("a.csv", b"timestamp,server_id,metric\n1,2,3\n"): "missing required columns value",
        ("a.csv", b"timestamp,server_id,metric,value\n"): "header but no rows",
        ("a.csv", b"\xff\x00bad\xfe"): "not UTF-8",
        ("a.csv", b"\xff\xfe\x00bad"): "missing required columns",  # a UTF-16 BOM: decoded, but not a table
        ("a.parquet", b"not parquet at all"): "cannot be read as parquet",
        ("a.xlsx", b"PK\x03\x04\x14\x00"): "not a readable Excel workbook",
    }
    for (name, data), message in cases.items():
        with pytest.raises(InputError, match=message):
            etl.read_raw_object(name, data)


def test_aggregate_daily_p95_and_counts() -> None:
    ts = pd.date_range("2026-01-01", periods=288 * 2, freq="5min", tz="UTC")
    values = np.tile(np.arange(288, dtype=float) / 2.88, 2)
    samples = pd.DataFrame({"timestamp": ts, "server_id": "srv-1", "metric": "cpu", "value": values})
    daily = etl.aggregate_daily(samples)
    assert daily["n_samples"].tolist() == [288, 288]
    assert daily["p95"].iloc[0] == pytest.approx(np.quantile(values[:288], 0.95))
    assert daily["dt"].tolist() == [pd.Timestamp("2026-01-01"), pd.Timestamp("2026-01-02")]


def test_fill_gaps_seasonal_and_limits() -> None:
    days = pd.date_range("2026-01-01", periods=40, freq="D")
    weekly = 40 + 10 * (days.day_of_week < 5)
    series = pd.DataFrame({"server_id": "s", "metric": "cpu", "dt": days, "p95": weekly.astype(float), "n_samples": 1})
    gappy = series.drop(index=[10, 20, 21, 22]).reset_index(drop=True)
    long_gap = series.assign(server_id="t").drop(index=range(5, 30)).reset_index(drop=True)
    filled = etl.fill_gaps(pd.concat([gappy, long_gap], ignore_index=True), max_gap_days=14)
    s = filled[filled["server_id"] == "s"].set_index("dt")
    assert len(s) == 40
    assert s["imputed"].sum() == 4
    # Seasonal interpolation recovers a pure weekly pattern exactly.
    assert s["p95"].tolist() == weekly.astype(float).tolist()
    assert (s.loc[s["imputed"], "n_samples"] == 0).all()
    t = filled[filled["server_id"] == "t"]
    assert len(t) == 15 and not t["imputed"].any()  # a 25-day gap stays missing


def test_aggregate_daily_matches_pandas_linear_quantile_on_uneven_groups() -> None:
    rng = np.random.default_rng(7)
    n = 5_000
    samples = pd.DataFrame(
        {
            "timestamp": pd.Timestamp("2026-01-01T00:00:00Z")
            + pd.to_timedelta(rng.integers(0, 3 * 86_400, n), unit="s"),
            "server_id": rng.choice(["a", "b", "c-1", "d.2"], n),
            "metric": rng.choice(["cpu", "mem", "disk", "net"], n),
            "value": rng.uniform(0, 100, n).round(3),
        }
    )
    lone = pd.DataFrame(
        {"timestamp": [pd.Timestamp("2026-01-05T23:59:59Z")], "server_id": ["z"], "metric": ["cpu"], "value": [42.0]}
    )
    samples = pd.concat([samples, lone], ignore_index=True)
    ours = etl.aggregate_daily(samples)
    day = samples["timestamp"].dt.tz_localize(None).dt.floor("D")
    grouped = samples.assign(dt=day).groupby(["server_id", "metric", "dt"])["value"]
    expected = pd.DataFrame({"p95": grouped.quantile(0.95), "n_samples": grouped.size()}).reset_index()
    assert (
        ours[["server_id", "metric", "dt"]].values.tolist() == expected[["server_id", "metric", "dt"]].values.tolist()
    )
    np.testing.assert_allclose(ours["p95"], expected["p95"], rtol=0, atol=1e-12)
    assert ours["n_samples"].tolist() == expected["n_samples"].tolist()
    assert ours["dt"].dtype == "datetime64[ns]" and ours["n_samples"].dtype == "int32"
    assert ours.iloc[-1][["server_id", "p95", "n_samples"]].tolist() == ["z", 42.0, 1]


def test_aggregate_hourly_counts_and_coverage_flag() -> None:
    full = pd.date_range("2026-01-01T00:00:00Z", periods=12, freq="5min")  # a complete hour
    half = pd.date_range("2026-01-01T01:00:00Z", periods=6, freq="5min")  # half of the next one
    stamps = full.append(half)
    values = np.arange(len(stamps), dtype=float)
    samples = pd.DataFrame({"timestamp": stamps, "server_id": "a", "metric": "cpu", "value": values})
    lone = pd.DataFrame(
        {"timestamp": [pd.Timestamp("2026-01-01T03:10:00Z")], "server_id": ["b"], "metric": ["mem"], "value": [7.0]}
    )
    out = etl.aggregate_hourly(pd.concat([samples, lone], ignore_index=True), min_coverage=0.8)
    assert out.columns.tolist() == etl.HOURLY_COLUMNS
    assert out["dt"].tolist() == [
        pd.Timestamp("2026-01-01T00:00:00"),
        pd.Timestamp("2026-01-01T01:00:00"),
        pd.Timestamp("2026-01-01T03:00:00"),
    ]
    assert out["n_samples"].tolist() == [12, 6, 1]
    assert out["expected_samples"].tolist()[:2] == [12, 12] and pd.isna(out["expected_samples"].iloc[2])
    assert out["low_coverage"].tolist() == [False, True, False]
    assert out["p95"].iloc[0] == pytest.approx(np.quantile(values[:12], 0.95))
    assert etl.aggregate_hourly(samples.iloc[0:0], min_coverage=0.8).columns.tolist() == etl.HOURLY_COLUMNS
    # Ten-minute samples: six expected an hour, five still enough at 0.8.
    ten = samples.iloc[::2].iloc[:-1]
    assert etl.aggregate_hourly(ten, min_coverage=0.8)["expected_samples"].tolist() == [6, 6]


def test_fill_gaps_knn_takes_the_day_from_similar_servers() -> None:
    days = pd.date_range("2026-01-01", periods=20, freq="D")
    base = 30 + 10 * np.sin(np.arange(20) / 3)

    def series(server: str, values: np.ndarray, metric: str = "cpu") -> pd.DataFrame:
        return pd.DataFrame({"server_id": server, "metric": metric, "dt": days, "p95": values, "n_samples": 288})

    # "a" follows "b" and "c" closely; "far" is another level altogether; "m" is another metric.
    frame = pd.concat(
        [
            series("a", base).drop(index=[9]),
            series("b", base + 1),
            series("c", base - 1),
            series("far", base + 50),
            series("m", base + 20, metric="mem"),
        ],
        ignore_index=True,
    )
    knn = etl.fill_gaps(frame, max_gap_days=14, method="knn", neighbors=2)
    seasonal = etl.fill_gaps(frame, max_gap_days=14)
    filled = knn[(knn["server_id"] == "a") & knn["imputed"]]
    assert filled["dt"].tolist() == [days[9]]
    assert filled["p95"].item() == pytest.approx(base[9])  # mean of b and c, not far nor the mem series
    assert seasonal.loc[seasonal["imputed"], "p95"].item() != pytest.approx(base[9])
    assert len(knn) == len(seasonal) and knn["imputed"].sum() == 1
    # A day no other series of the metric observed falls back to the seasonal fill.
    alone = pd.concat([series("a", base).drop(index=[9]), series("b", base + 1).drop(index=[9])], ignore_index=True)
    fallback = etl.fill_gaps(alone, max_gap_days=14, method="knn")
    pd.testing.assert_frame_equal(fallback, etl.fill_gaps(alone, max_gap_days=14))
    with pytest.raises(ValueError, match="unknown imputation"):
        etl.fill_gaps(frame, max_gap_days=14, method="magic")


def test_daily_coverage_from_the_median_sampling_interval() -> None:
    full = pd.date_range("2026-01-01T00:00:00Z", periods=288, freq="5min")
    partial = pd.date_range("2026-01-02T00:00:00Z", periods=200, freq="5min")
    samples = pd.DataFrame({"timestamp": full.append(partial), "server_id": "a", "metric": "cpu"}).assign(value=1.0)
    daily = etl.add_coverage(etl.aggregate_daily(samples), samples, period_seconds=86_400, min_coverage=0.8)
    assert daily["expected_samples"].tolist() == [288, 288]
    assert daily["low_coverage"].tolist() == [False, True]  # 200 < 0.8 x 288
    filled = etl.fill_gaps(daily, max_gap_days=14)
    assert filled[["expected_samples", "low_coverage"]].values.tolist() == [[288, False], [288, True]]
