"""Server CPU per gateway request: ``etcdlite serve`` vs a real etcd, each a child process.

    python tests/bench_http.py [--requests N] [--keys 100]

Puts ``--keys`` keys under one prefix through the gateway, then sends ``--requests``
``/v3/kv/range`` requests for the whole prefix on one keep-alive connection, and reports
each server's CPU (utime+stime from /proc/<pid>/stat) per request, and the wall time.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.launch import free_port, running_etcd


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def etcd_pid(port: int) -> int:
    out = subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}"], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split() if int(p) != os.getpid()]
    return pids[0]


@contextmanager
def etcdlite_server() -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__)) or "."}
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "etcdlite", "serve", "--listen-client-urls", url],
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(0.05)
            yield f"127.0.0.1:{port}", proc.pid
        finally:
            proc.terminate()
            proc.wait(10)


def run(endpoint: str, pid: int, n: int, keys: int) -> tuple[float, float]:
    host, port = endpoint.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def post(path: str, body: dict[str, str]) -> bytes:
        conn.request("POST", path, body=json.dumps(body))
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200, data
        return data

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    for i in range(keys):
        post("/v3/kv/put", {"key": b64(b"/bench/%04d" % i), "value": b64(b"v" * 64)})
    query = {"key": b64(b"/bench/"), "range_end": b64(b"/bench0")}
    assert len(json.loads(post("/v3/kv/range", query))["kvs"]) == keys
    for _ in range(50):  # warm-up
        post("/v3/kv/range", query)
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    for _ in range(n):
        post("/v3/kv/range", query)
    cpu, wall = cpu_seconds(pid) - cpu0, time.perf_counter() - t0
    conn.close()
    return cpu / n * 1e6, wall / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--keys", type=int, default=100)
    args = ap.parse_args()
    with etcdlite_server() as (endpoint, pid):
        ours = run(endpoint, pid, args.requests, args.keys)
    with running_etcd() as endpoint:
        theirs = run(endpoint, etcd_pid(int(endpoint.split(":")[1])), args.requests, args.keys)
    print(f"gateway range of {args.keys} keys, {args.requests} requests, one connection")
    print(f"  etcdlite: server CPU {ours[0]:7.0f} µs/request, wall {ours[1]:7.0f} µs/request")
    print(f"  etcd:     server CPU {theirs[0]:7.0f} µs/request, wall {theirs[1]:7.0f} µs/request")
    print(f"  ratio (etcdlite/etcd CPU): {ours[0] / theirs[0]:.2f}")


if __name__ == "__main__":
    main()
