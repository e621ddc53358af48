"""The inventory command and module: CSV and xlsx, column aliases, tags, prices by instance type, bad files in one
line with exit 2, re-runs replacing the table; the shipped price table; consolidation on a partial inventory."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from capacity_forecaster import rightsizing
from capacity_forecaster.cli import main
from capacity_forecaster.errors import InputError
from capacity_forecaster.inventory import ec2_rows, merge_ec2, read_inventory
from capacity_forecaster.prices import HOURS_PER_MONTH, load_price_table
from capacity_forecaster.schema import SERVERS
from capacity_forecaster.storage.lake import open_lake

CSV = """Hostname,App,Environment,DC,Instance Type,vCPUs,Memory (GiB),Cost,team,region
web-1,shop,prod,dc-london,,4,16,"1,234.50",web,eu
web-2,shop,prod,dc-london,m6i.large,,,,web,
db-1,ledger,,dc-london,r7i.xlarge,,,99,,eu
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _servers(lake_dir: Path) -> pd.DataFrame:
    return open_lake(lake_dir).read_table(SERVERS).set_index("server_id")


def test_csv_with_aliases_and_tags_priced_from_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, lake = _write(tmp_path, "inventory.csv", CSV), tmp_path / "lake"
    assert main(["inventory", str(path), "--lake", str(lake)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("inventory: servers=3, sized=3, costs_from_inventory=2, costs_from_price_table=1, no_cost=0")
    servers = _servers(lake)
    web1, web2, db1 = (servers.loc[s] for s in ("web-1", "web-2", "db-1"))
    assert (web1["application"], web1["environment"], web1["datacenter"]) == ("shop", "prod", "dc-london")
    assert (web1["cores"], web1["memory_gib"], web1["monthly_cost"]) == (4, 16.0, 1234.5)
    assert json.loads(web1["tags"]) == {"region": "eu", "team": "web"}  # DC took data centre: region is a tag
    assert (web2["cores"], web2["memory_gib"]) == (2, 8.0)  # m6i.large from the price table
    assert web2["monthly_cost"] == pytest.approx(0.096 * HOURS_PER_MONTH)
    assert web2["cost_source"] == "price table 2025-01-01" and web1["cost_source"] == "inventory"
    assert (db1["cores"], db1["memory_gib"], db1["monthly_cost"]) == (4, 32.0, 99.0)  # its own cost is kept
    assert pd.isna(db1["environment"])


def test_rerunning_replaces_and_merge_replaces_only_the_named_servers(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    path = _write(tmp_path, "inventory.csv", CSV)
    for _ in range(2):
        assert main(["inventory", str(path), "--lake", str(lake)]) == 0
    assert sorted(_servers(lake).index) == ["db-1", "web-1", "web-2"]
    update = _write(tmp_path, "update.csv", "server_id;monthly_cost_usd\nweb-2;12,5\nnew-1;7\n")
    assert main(["inventory", str(update), "--lake", str(lake), "--merge"]) == 0
    servers = _servers(lake)
    assert sorted(servers.index) == ["db-1", "new-1", "web-1", "web-2"]
    assert servers.loc["web-2", "monthly_cost"] == 12.5 and servers.loc["web-1", "monthly_cost"] == 1234.5
    assert main(["inventory", str(update), "--lake", str(lake)]) == 0
    assert sorted(_servers(lake).index) == ["new-1", "web-2"]


def test_xlsx_first_sheet(tmp_path: Path) -> None:
    path = tmp_path / "inventory.xlsx"
    frame = pd.DataFrame(
        {
            "Name": ["app-1", "app-2"],
            "Type": ["c7i.2xlarge", "t3a.medium"],
            "Monthly cost USD": [None, 30],
            "Owner": ["x", None],
        }
    )
    frame.to_excel(path, index=False, sheet_name="Servers")
    servers = read_inventory(path).set_index("server_id")
    assert list(servers.index) == ["app-1", "app-2"]
    assert servers.loc["app-1", "instance_type"] == "c7i.2xlarge" and pd.isna(servers.loc["app-1", "monthly_cost"])
    assert servers.loc["app-2", "monthly_cost"] == 30.0
    assert json.loads(servers.loc["app-1", "tags"]) == {"Owner": "x"} and pd.isna(servers.loc["app-2", "tags"])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "empty.csv: the file is empty"),
        ("header.csv", "server_id,cost\n", "header.csv: the header has no rows under it"),
        ("nokey.csv", "ip,cost\n10.0.0.1,5\n", "nokey.csv: no server id column; name one server_id, server, hostname"),
        ("twice.csv", "host,cost\na,1\nb,2\na,3\n", "twice.csv: server a is listed 2 times (rows 2, 4)"),
        ("blank.csv", "host,cost\na,1\n ,2\n", "blank.csv, row 3: the server id (host) is empty"),
        ("nan.csv", "host,cost\na,lots\n", "nan.csv, row 2: monthly_cost 'lots' is not a number"),
        ("zero.csv", "host,cores\na,0\n", "zero.csv, row 2: cores '0' must be a number more than 0"),
        ("long.csv", "host,cost\na,1,2\n", "long.csv, row 2: 3 fields but the header has 2"),
        ("broken.xlsx", "PK\x03\x04 not a zip", "broken.xlsx: not a readable Excel workbook"),
    ],
)
def test_bad_files_are_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str, message: str
) -> None:
    path = _write(tmp_path, name, content)
    assert main(["inventory", str(path), "--lake", str(tmp_path / "lake")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not open_lake(tmp_path / "lake").list_partitions(SERVERS) and not (tmp_path / "lake" / "curated").exists()


def test_a_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inventory", str(tmp_path / "nope.csv"), "--lake", str(tmp_path / "lake")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope.csv'}: no such file\n"


def test_the_shipped_price_table_covers_the_common_families() -> None:
    table = load_price_table()
    assert table.price_date == "2025-01-01"
    families = [
        "m5",
        "m6i",
        "m7i",
        "m6a",
        "m6g",
        "m7g",
        "c5",
        "c6i",
        "c7i",
        "c6g",
        "c7g",
        "r5",
        "r6i",
        "r7i",
        "r6g",
        "r7g",
        "t3",
        "t3a",
        "t4g",
    ]
    for family in families:
        for size, cores in (("large", 2), ("xlarge", 4), ("2xlarge", 8)) + (
            () if family.startswith("t") else (("4xlarge", 16),)
        ):
            entry = table.sizes[f"{family}.{size}"]
            assert entry["cores"] == cores, (family, size)
            assert 0 < entry["monthly_cost"] < 2000
    # within a family the price doubles with the size; a memory-optimised size costs more than a compute one
    assert table.sizes["m7i.2xlarge"]["monthly_cost"] == pytest.approx(
        2 * table.sizes["m7i.xlarge"]["monthly_cost"], abs=0.02
    )
    assert (
        table.sizes["r6i.large"]["monthly_cost"]
        > table.sizes["m6i.large"]["monthly_cost"]
        > table.sizes["c6i.large"]["monthly_cost"]
    )
    assert table.sizes["m5.large"]["monthly_cost"] == pytest.approx(0.096 * 730)


def test_downsizing_stays_in_the_family() -> None:
    sizes = {
        k: rightsizing.Size(int(v["cores"]), v["memory_gib"], v["monthly_cost"])
        for k, v in load_price_table().sizes.items()
    }
    limits = {"cpu": 0.7, "mem": 0.7}
    assert rightsizing.smallest_size(0.5, 2.0, sizes, limits, "m5.2xlarge") in {"m5.large", "c5.large"}
    assert rightsizing.smallest_size(0.5, 2.0, sizes, limits, "m6g.2xlarge") == "c6g.large"
    assert rightsizing.smallest_size(0.5, 0.3, sizes, limits, "t3.large") == "t3.nano"
    assert rightsizing.size_family("on-prem-blade") is None


def test_consolidation_without_an_inventory_keeps_every_server_and_says_what_is_missing() -> None:
    register = pd.DataFrame(
        {
            "server_id": ["a", "a", "b", "b"],
            "metric": ["cpu", "mem"] * 2,
            "peak_p90": [5.0, 10.0, 30.0, 30.0],
            "finding": ["over-provisioned"] * 2 + ["optimized"] * 2,
        }
    )
    profiles = pd.Series({"a": "idle", "b": "steady"})
    idle = pd.Series({"a": True, "b": False})
    empty = rightsizing.inventory_columns(pd.DataFrame({"server_id": pd.Series(dtype=str)}))
    servers = rightsizing.inventory_for(empty, ["a", "b"])
    plan = rightsizing.plan_consolidation(
        servers, register, profiles, idle, sizes={}, thresholds={"cpu": 80, "mem": 80}, headroom={}
    )
    assert list(plan["action"]) == ["keep", "keep"] and (plan["monthly_savings"] == 0).all()
    assert plan["reason"].str.startswith("not sized").all()
    [note] = rightsizing.inventory_gaps(empty, ["a", "b"])
    assert note.startswith("no inventory: every server is kept; write one with `capacity-forecaster inventory FILE`")
    sized = servers.assign(cores=[4, 4], memory_gib=[16.0, 16.0], environment="prod", datacenter="x")
    plan = rightsizing.plan_consolidation(
        sized, register, profiles, idle, sizes={}, thresholds={"cpu": 80, "mem": 80}, headroom={}
    ).set_index("server_id")
    assert plan.loc["a", "action"] == "consolidate" and plan.loc["a", "monthly_savings"] == 0
    assert plan.loc["a", "reason"].endswith("; savings not computed: no monthly cost")
    notes = rightsizing.inventory_gaps(sized, ["a", "b"])
    assert notes == [
        "savings not computed for 2 of 2 servers (e.g. a): no monthly_cost nor an instance_type of the price table"
    ]


def test_ec2_facts_merge_into_the_inventory() -> None:
    own = read_inventory_frame()
    described = [
        {
            "InstanceId": "i-1",
            "InstanceType": "m6i.xlarge",
            "Placement": {"AvailabilityZone": "eu-west-1b"},
            "Tags": [{"Key": "Environment", "Value": "prod"}, {"Key": "Team", "Value": "web"}],
        },
        {"InstanceId": "i-2", "InstanceType": "c7i.large", "Placement": {"AvailabilityZone": "us-east-1a"}},
    ]
    merged = merge_ec2(own, ec2_rows(described)).set_index("server_id")
    assert merged.loc["i-1", "application"] == "shop" and merged.loc["i-1", "environment"] == "prod"
    assert merged.loc["i-1", "instance_type"] == "m6i.xlarge" and merged.loc["i-1", "datacenter"] == "eu-west-1"
    assert merged.loc["i-1", "monthly_cost"] == 500.0  # the inventory's own cost survives a type change
    assert json.loads(merged.loc["i-1", "tags"]) == {"Environment": "prod", "Team": "web", "owner": "ann"}
    assert merged.loc["i-2", "availability_zone"] == "us-east-1a" and pd.isna(merged.loc["i-2", "monthly_cost"])


def read_inventory_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "server_id": ["i-1"],
            "application": ["shop"],
            "instance_type": ["m5.xlarge"],
            "monthly_cost": [500.0],
            "cost_source": ["inventory"],
            "tags": ['{"owner": "ann"}'],
        }
    )


def test_read_inventory_error_type(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        read_inventory(_write(tmp_path, "x.csv", "nothing\n1\n"))


def test_consolidate_without_a_risk_register_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["consolidate", "--lake", str(tmp_path / "lake")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no risk register in" in err and "run `capacity-forecaster risk` first" in err


def test_run_on_an_empty_lake_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--lake", str(tmp_path / "lake")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no monitoring data in ") and err.count("\n") == 1
    assert "`capacity-forecaster ingest FILE...`" in err and "`capacity-forecaster demo`" in err
    assert main(["run", "--lake", str(tmp_path / "lake"), "--raw-day", "2026-11-01"]) == 2
    assert "--raw-day shapes the synthetic demo fleet" in capsys.readouterr().err
