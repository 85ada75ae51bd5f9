"""Baseline HTTP throughput and latency of a live `atelier api`, for the foundation's routes.

    .venv/bin/python bench/http_baseline.py [--seconds 5] [--concurrency 16] [--workers 1]

Starts `atelier api` on a free loopback port with a throw-away SQLite database, drives each route
with `concurrency` keep-alive connections for `seconds`, and prints requests per second and
latency percentiles. Client and server share the machine, so figures are a floor, not a ceiling.
"""

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROUTES = ["/health", "/readiness", "/", "/api/v1/missing"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def drive(url: str, seconds: float, concurrency: int) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                begin = time.perf_counter()
                response = await client.get(url)
                latencies.append(time.perf_counter() - begin)
                errors += response.status_code >= 500

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, errors


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(
            os.environ,
            ATELIER_DATA_DIR=str(Path(tmp) / "var"),
            ATELIER_DATABASE__URL=f"sqlite:///{tmp}/atelier.db",
            ATELIER_LOGGING__LEVEL="WARNING",
        )
        subprocess.run(
            [sys.executable, "-m", "atelier", "migrate", "upgrade"],
            env=env,
            check=True,
            capture_output=True,
        )
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "atelier",
                "api",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    httpx.get(base + "/health", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            print(
                f"# {platform.node()} · {os.cpu_count()} cores · Python "
                f"{platform.python_version()} · workers={args.workers} "
                f"concurrency={args.concurrency} · {time.strftime('%Y-%m-%d')}"
            )
            print(f"{'route':<18}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'5xx':>6}")
            for route in ROUTES:
                asyncio.run(drive(base + route, 0.5, args.concurrency))  # warm up
                count, latencies, errors = asyncio.run(
                    drive(base + route, args.seconds, args.concurrency)
                )
                print(
                    f"{route:<18}{count / args.seconds:>9.0f}{percentile(latencies, 50):>9.2f}"
                    f"{percentile(latencies, 99):>9.2f}{errors:>6}"
                )
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
