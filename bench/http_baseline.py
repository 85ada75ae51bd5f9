"""Baseline HTTP throughput and latency of a live Atelier, on the foundation's routes.

    .venv/bin/python bench/http_baseline.py [--seconds 5] [--connections 16] [--workers 1]

Starts `atelier api` on a free loopback port with a throw-away SQLite database and drives each
route with wrk (Debian package `wrk`), which is light enough not to starve the server on a small
machine. Prints requests per second and latency percentiles, one line per route.
"""

import argparse
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROUTES = ["/health", "/readiness", "/", "/api/v1/missing", "/metrics"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wrk(url: str, *, seconds: float, connections: int) -> dict[str, str]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    figures = {"req/s": re.search(r"Requests/sec:\s+(\S+)", out).group(1)}
    for q in ("50", "99"):
        figures[f"p{q}"] = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M).group(1)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non-2xx"] = bad.group(1) if bad else "0"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(
            os.environ,
            ATELIER_DATA_DIR=str(Path(tmp) / "var"),
            ATELIER_DATABASE__URL=f"sqlite:///{tmp}/atelier.db",
            ATELIER_LOGGING__LEVEL="WARNING",
        )
        atelier = [sys.executable, "-m", "atelier"]
        subprocess.run([*atelier, "migrate", "upgrade"], env=env, check=True, capture_output=True)
        server = subprocess.Popen(
            [*atelier, "api", "--port", str(port), "--workers", str(args.workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(150):
                try:
                    httpx.get(base + "/health", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            print(
                f"# {os.cpu_count()} cores, Python {platform.python_version()}, "
                f"workers={args.workers}, connections={args.connections}, "
                f"{args.seconds:g} s per route, {time.strftime('%Y-%m-%d')}"
            )
            print("| route | req/s | p50 | p99 | non-2xx |\n|---|---|---|---|---|")
            for route in ROUTES:
                wrk(base + route, seconds=1, connections=args.connections)  # warm up
                f = wrk(base + route, seconds=args.seconds, connections=args.connections)
                print(f"| `{route}` | {f['req/s']} | {f['p50']} | {f['p99']} | {f['non-2xx']} |")
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
