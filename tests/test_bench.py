"""``etcdlite bench`` smoke tests: every workload at a tiny scale on the embedded store and an
``etcdlite serve`` child (and real etcd when installed), so the tool never rots. The JSON
output is checked for its fields; timings are never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from etcdlite import Client
from etcdlite.__main__ import main as etcdlite_main
from etcdlite.bench import clientrun
from etcdlite.bench.clients import ROWS, client_table, missing_clients
from etcdlite.bench.measure import percentile, proc_cpu_seconds
from etcdlite.bench.report import CHECKS, Result, fmt
from etcdlite.bench.runner import merge_repeats
from etcdlite.bench.targets import start_child
from etcdlite.bench.workloads import GROUPS, HEAVY, WORKLOADS, select

from .helpers import need
from .launch import etcd_binary, run_python, running_cli

#: Small enough that the whole run takes seconds; sizes have floors so nothing is empty.
SCALE = "0.002"


def _bench(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_python(["-m", "etcdlite", "bench", *args], timeout=timeout)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "targets",
    [
        pytest.param(
            ["embedded", "serve"], marks=[pytest.mark.store, pytest.mark.serve], id="etcdlite"
        ),
        pytest.param(["embedded", "serve", "etcd"], marks=pytest.mark.etcd, id="etcd"),
    ],
)
def test_every_workload_on_every_target_at_tiny_scale(tmp_path: Path, targets: list[str]) -> None:
    if "etcd" in targets:
        need("etcd", etcd_binary() is None)
    out = tmp_path / "bench.json"
    every = ",".join(("all", *HEAVY))
    proc = _bench(every, "--compare", ",".join(targets), "--scale", SCALE, "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]

    doc = json.loads(out.read_text())
    # The children's temp dirs are removed (by name: other benchmarks may be running).
    temp_dirs = [t["temp_dir"] for t in doc["targets"][1:]]
    assert all(d.startswith(("/dev/shm/", "/tmp/")) for d in temp_dirs)
    assert not [d for d in temp_dirs if os.path.exists(d)]
    meta = doc["meta"]
    assert meta["targets"] == targets and meta["scale"] == float(SCALE)
    assert meta["reference"] == ("etcd" if "etcd" in targets else "serve")
    assert {"date", "command", "python", "cpus", "loadavg", "elapsed_s"} <= set(meta)
    assert [t["name"] for t in doc["targets"]] == targets
    for t in doc["targets"][1:]:
        assert t["pid"] and t["endpoint"].startswith("127.0.0.1:")

    results = {(r["workload"], r["target"]): r for r in doc["results"]}
    for w in WORKLOADS:
        for target in targets:
            runs_here = w.where == "all" or target == "embedded" or w.where == "spawned"
            if not runs_here:
                assert (w.name, target) not in results
                continue
            r = results[(w.name, target)]
            assert r["error"] is None, (w.name, target, r["error"])
            missing = set(w.fields) - set(r["metrics"])
            assert not missing, (w.name, target, missing)
            for metric, _label in w.rows:
                assert metric in r["metrics"], (w.name, target, metric)
            if target != "embedded":
                # The server's CPU came from /proc (a number, possibly 0 at this scale).
                for key in ("cpu_us_per_op", "cpu_us_per_event"):
                    if key in r["metrics"]:
                        assert isinstance(r["metrics"][key], int | float)
    fan = results[("watch-fanout-100", "serve")]["metrics"]
    assert fan["complete"] is True and fan["events"] == fan["puts"] * 100
    assert results[("lease-expiry", "embedded")]["metrics"]["keys_left"] == 0
    # Only the change at the compacted revision itself stays in the log.
    assert results[("compaction", "embedded")]["metrics"]["log_left"] <= 1

    checks = {c["text"] for c in doc["checks"]}
    assert checks == {c.text for c in CHECKS}
    for c in doc["checks"]:
        if c["value"] is not None:
            assert isinstance(c["ok"], bool)

    # One table on stdout (workloads × metrics, a column per target, ratios), progress on
    # stderr.
    header = proc.stdout.splitlines()[0].split()
    assert header[:2] == ["workload", "metric"] and header[2 : 2 + len(targets)] == targets
    assert any("/" in h for h in header)
    for w in WORKLOADS:
        assert w.name in proc.stdout
    assert doc["table"].strip() == proc.stdout.split("\n\n")[0].strip()
    assert "[1/" in proc.stderr and "starting target serve" in proc.stderr


def test_endpoint_target_with_pid(tmp_path: Path) -> None:
    with running_cli() as server:
        out = tmp_path / "ep.json"
        proc = _bench(
            "get,txn",
            "--endpoint",
            server.endpoint,
            "--pid",
            str(server.proc.pid),
            "--scale",
            SCALE,
            "--json",
            str(out),
            "--quiet",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stderr == ""
        doc = json.loads(out.read_text())
        assert [(r["workload"], r["target"]) for r in doc["results"]] == [
            ("get", "endpoint"),
            ("txn", "endpoint"),
        ]
        for r in doc["results"]:
            assert r["error"] is None
            assert isinstance(r["metrics"]["cpu_us_per_op"], int | float)
            assert r["metrics"]["ops"] > 0
        assert server.proc.poll() is None  # the benchmark does not stop a server it did not start


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "unknown workload"),
        (["get", "--target", "endpoint"], "needs --endpoint"),
        (["get", "--compare", "embedded,embedded"], "named twice"),
        (["get", "--compare", "embedded,mars"], "unknown target"),
        (["get", "--scale", "0"], "--scale"),
        (["get", "--repeat", "0"], "--repeat"),
        (["get", "--data-dir-parent", "/nonexistent/dir"], "--data-dir-parent"),
        (["--clients", "etcdlite,mars"], "unknown client"),
        (["--clients", "aetcd,aetcd"], "named twice"),
        (["--clients", "aetcd", "--compare", "embedded,serve"], "one etcd"),
        (["txn", "--clients", "aetcd"], "unknown client workload"),
        (["--clients", "aetcd", "--scale", "0"], "--scale"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    proc = _bench(*args, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr


async def test_data_dir_parent_gives_serve_a_data_dir_there(tmp_path: Path) -> None:
    async with start_child("serve", data_parent=str(tmp_path)) as (child, _ready):
        assert Path(child.tmpdir).parent == tmp_path
        async with Client(child.endpoint) as client:
            await client.put(b"k", b"v")
        data = Path(child.tmpdir) / "data"
        assert any(p.name.startswith("wal-") for p in data.iterdir())
    assert list(tmp_path.iterdir()) == []  # removed with the child


def test_list_and_selection() -> None:
    proc = _bench("--list", timeout=60)
    assert proc.returncode == 0
    for w in WORKLOADS:
        assert w.name in proc.stdout
    assert "--clients" in proc.stdout and "keepalive" in proc.stdout
    assert [w.name for w in select("watch-fanout")] == list(GROUPS["watch-fanout"])
    # put brings the floor along: its target is a ratio to it.
    assert [w.name for w in select("put")] == ["floor", "put"]
    # all but the heavy ones (minutes each at scale 1), which are named to run.
    assert HEAVY and [w.name for w in select("all")] == [
        w.name for w in WORKLOADS if w.name not in HEAVY
    ]
    assert [w.name for w in select(",".join(HEAVY))] == list(HEAVY)


def test_measure_helpers() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    assert proc_cpu_seconds(os.getpid()) > 0
    assert fmt(None) == "-" and fmt(1234567) == "1.23M" and fmt(0.5) == "0.500"


def test_repeated_runs_alternate_and_report_medians(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = _bench(
        "get,txn", "--compare", "embedded,serve", "--repeat", "3", "--scale", SCALE,
        "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the targets alternate: get@embedded, get@serve, get@embedded, ...
    steps = [
        line.split("] ", 1)[1].split(":")[0] for line in proc.stderr.splitlines() if "] " in line
    ]
    assert steps[:6] == ["get @ embedded", "get @ serve"] * 3
    results = json.loads(out.read_text())["results"]
    assert [(r["workload"], r["target"]) for r in results] == [
        ("get", "embedded"), ("get", "serve"), ("txn", "embedded"), ("txn", "serve"),
    ]  # fmt: skip
    assert all(r["metrics"]["runs"] == 3 for r in results)


def test_merge_repeats_takes_medians_and_keeps_flags_and_failures() -> None:
    runs = [
        Result("w", "a", {"ops_per_s": 10.0, "complete": True, "note": "x"}, wall_s=1.0),
        Result("w", "a", {"ops_per_s": 30.0, "complete": False, "note": "y"}, wall_s=1.0),
        Result("w", "a", error="boom", wall_s=1.0),
        Result("w", "a", {"ops_per_s": 20.0, "complete": True, "note": "z"}, wall_s=1.0),
        Result("w", "b", error="always"),
        Result("w", "b", error="again"),
    ]
    a, b = merge_repeats(runs)
    assert a.metrics == {"ops_per_s": 20.0, "complete": False, "note": "x", "runs": 3}
    assert a.wall_s == 4.0 and a.error is None
    assert b.error == "always"


# --- the client axis: --clients etcdlite,aetcd,etcd3 -----------------------------------------

CLIENTS = ["etcdlite", "aetcd", "etcd3"]


@pytest.mark.etcd
@pytest.mark.timeout(300)
def test_every_client_on_every_client_workload_against_etcd(tmp_path: Path) -> None:
    need("etcd", etcd_binary() is None)
    out = tmp_path / "clients.json"
    proc = _bench("--clients", ",".join(CLIENTS), "--scale", SCALE, "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]

    doc = json.loads(out.read_text())
    meta = doc["meta"]
    assert meta["temp_dir"] and not os.path.exists(meta["temp_dir"])  # etcd's data dir is gone
    assert meta["clients"] == CLIENTS and meta["reference"] == "aetcd"
    assert meta["workloads"] == list(clientrun.WORKLOADS)
    assert meta["etcd_version"] and meta["endpoint"].startswith("127.0.0.1:")
    assert {"date", "command", "python", "cpus", "loadavg", "elapsed_s", "sizes"} <= set(meta)
    results = {(r["workload"], r["target"]): r for r in doc["results"]}
    assert set(results) == {(w, c) for w in clientrun.WORKLOADS for c in CLIENTS}
    # every child's own result too, in the order they ran (clients take turns per workload)
    assert [(r["workload"], r["target"]) for r in doc["runs"]][:3] == [("put", c) for c in CLIENTS]
    for (w, c), r in results.items():
        assert r["error"] is None, (w, c, r["error"])
        m = r["metrics"]
        for metric, _label in ROWS[w]:
            if metric == "p50_us":
                continue
            assert isinstance(m[metric], int | float) and m[metric] > 0, (w, c, metric, m)
    for c in CLIENTS:
        watch = results[("watch", c)]["metrics"]
        assert watch["complete"] is True and watch["events"] == watch["expected"] > 0
        assert results[("range", c)]["metrics"]["keys_per_range"] == 1000
        assert results[("put-16", c)]["metrics"]["concurrency"] == 16

    # One table: a column per client, then each other client's ratio against aetcd.
    table = proc.stdout.split("\n\n")[0]
    header = table.splitlines()[0].split()
    assert header == ["workload", "metric", *CLIENTS, "etcdlite/aetcd", "etcd3/aetcd"]
    assert doc["table"].strip() == table.strip()
    ops_rows = [line.split() for line in table.splitlines()[2:] if line.split()[0] in ROWS]
    assert [row[0] for row in ops_rows] == list(clientrun.WORKLOADS)
    for row in ops_rows:
        assert row[-2].endswith("×") and row[-1].endswith("×"), row
    assert "starting target etcd" in proc.stderr and "@ etcd3" in proc.stderr


def test_a_missing_client_says_install_the_test_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "aetcd", None)  # find_spec / import: not there
    assert missing_clients(CLIENTS) == ["aetcd"]
    assert etcdlite_main(["bench", "--clients", "etcdlite,aetcd"]) == 2
    err = capsys.readouterr().err
    assert "aetcd not installed" in err and "install the test extra" in err
    # The child says the same (exit 3) if it is started anyway.
    code = clientrun.main(["aetcd", "put", "--endpoint", "127.0.0.1:1", "--prefix", "x/"])
    assert code == 3 and "install the test extra" in capsys.readouterr().err


def test_client_table_without_aetcd_has_no_ratios() -> None:
    results = [
        Result("put", "etcdlite", {"ops_per_s": 1000.0, "client_cpu_us_per_op": 500.0}),
        Result("put", "etcd3", error="exit 1: boom"),
    ]
    text = client_table(results, ["etcdlite", "etcd3"], None)
    header, _sep, *rows = text.splitlines()
    assert header.split() == ["workload", "metric", "etcdlite", "etcd3"]
    assert rows[0].split() == ["put", "ops/s", "1000", "error"]
    with_ref = client_table(
        [*results, Result("put", "aetcd", {"ops_per_s": 2000.0})],
        ["etcdlite", "aetcd"],
        "aetcd",
    )
    assert with_ref.splitlines()[2].split()[-1] == "0.500×"


@pytest.mark.etcd
def test_clients_on_a_given_endpoint(tmp_path: Path, etcd_endpoint: str) -> None:
    """``--endpoint``: no etcd child; the workloads write under a prefix of their own."""
    out = tmp_path / "ep.json"
    proc = _bench(
        "get,keepalive", "--clients", "etcdlite,etcd3", "--endpoint", etcd_endpoint,
        "--scale", SCALE, "--json", str(out), "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""
    doc = json.loads(out.read_text())
    assert doc["meta"]["endpoint"] == etcd_endpoint and doc["meta"]["reference"] is None
    assert [(r["workload"], r["target"]) for r in doc["results"]] == [
        ("get", "etcdlite"), ("get", "etcd3"), ("keepalive", "etcdlite"), ("keepalive", "etcd3"),
    ]  # fmt: skip
    assert all(r["error"] is None and r["metrics"]["ops_per_s"] > 0 for r in doc["results"])
    assert "/" not in proc.stdout.splitlines()[0]  # no aetcd: no ratio columns
