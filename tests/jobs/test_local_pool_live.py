"""The embedded executor as `atelier up` runs it: real worker processes, real signals."""

import json
import os
import signal
import time

import httpx
import pytest

from tests.jobs.live import FAST_JOBS, get, sign_up, submit, wait_for, wait_for_line

pytestmark = [pytest.mark.live, pytest.mark.backend_independent]


@pytest.fixture
def up(start_server):
    return start_server("up", **FAST_JOBS)


def test_progress_streams_and_a_running_job_is_cancelled(up, tmp_path):
    headers = sign_up(up.url)
    job = submit(up.url, headers, "test.work", {"seconds": 30})
    events: list[tuple[str, dict]] = []
    with httpx.stream(
        "GET", f"{up.url}/api/v1/jobs/{job['id']}/events", headers=headers, timeout=30
    ) as stream:
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
                progressed = [d for n, d in events if n == "job" and d["progress"] > 0]
                if len(progressed) == 2:
                    cancel = httpx.post(
                        f"{up.url}/api/v1/jobs/{job['id']}/cancel", headers=headers, timeout=10
                    )
                    assert cancel.json()["cancel_requested"] is True
                if name == "end":
                    break
    assert events[-1] == ("end", {"status": "cancelled"})
    statuses = [d["status"] for n, d in events if n == "job"]
    assert statuses[0] in ("queued", "running")
    assert statuses[-1] == "cancelled"
    fractions = [d["progress"] for n, d in events if n == "job" and d["status"] == "running"]
    assert fractions == sorted(fractions)
    assert 0 < fractions[-1] < 1


def test_a_killed_up_process_loses_no_job(start_server, tmp_path):
    database = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    first = start_server("up", database=database, **FAST_JOBS)
    headers = sign_up(first.url)
    ledger = tmp_path / "ledger.txt"
    job = submit(first.url, headers, "test.work", {"seconds": 2, "ledger": str(ledger)})
    started = wait_for_line(ledger, "start")
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()
    # The orphaned worker notices on its next heartbeat and stops.
    deadline = time.monotonic() + 5
    while _alive(int(started[3])) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(int(started[3]))

    second = start_server("up", database=database, **FAST_JOBS)
    done = wait_for(second.url, headers, job["id"], "succeeded")
    assert done["attempt"] == 2
    assert done["result"]["attempt"] == 2
    lines = ledger.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["start", "start", "done"]


def test_a_killed_worker_costs_only_its_own_job(up, tmp_path):
    headers = sign_up(up.url)
    victim_ledger, bystander_ledger = tmp_path / "victim.txt", tmp_path / "bystander.txt"
    victim = submit(up.url, headers, "test.work", {"seconds": 3, "ledger": str(victim_ledger)})
    bystander = submit(
        up.url, headers, "test.work", {"seconds": 2, "ledger": str(bystander_ledger)}
    )
    pid = int(wait_for_line(victim_ledger, "start")[3])
    wait_for_line(bystander_ledger, "start")
    os.kill(pid, signal.SIGKILL)
    # The pool re-queues the dead worker's job at once (no heartbeat timeout to wait for).
    redone = wait_for(up.url, headers, victim["id"], "succeeded", within=15)
    assert redone["attempt"] == 2
    assert redone["result"]["pid"] != pid
    other = wait_for(up.url, headers, bystander["id"], "succeeded")
    assert other["attempt"] == 1
    assert '"event": "local_worker_died"' in up.log()


def test_a_job_ignoring_its_time_limit_is_stopped_and_its_worker_replaced(up):
    headers = sign_up(up.url)
    stubborn = submit(up.url, headers, "test.stubborn")
    failed = wait_for(up.url, headers, stubborn["id"], "failed")
    assert failed["error"]["type"] == "/problems/job-time-limit"
    # Both workers still serve: two jobs run side by side afterwards.
    jobs = [submit(up.url, headers, "test.work", {"seconds": 1}) for _ in range(2)]
    done = [wait_for(up.url, headers, j["id"], "succeeded") for j in jobs]
    assert len({d["result"]["pid"] for d in done}) == 2


def test_a_flooding_organization_does_not_delay_another(up):
    flooder, other = sign_up(up.url), sign_up(up.url)
    flood = [submit(up.url, flooder, "test.work", {"seconds": 0.4}) for _ in range(12)]
    time.sleep(0.3)
    late = submit(up.url, other, "test.work", {"seconds": 0.1})
    done = wait_for(up.url, other, late["id"], "succeeded", within=10)
    waited = _seconds(done["started_at"]) - _seconds(done["created_at"])
    # First come, first served would make it wait for the whole flood (12 x 0.4 s / 2).
    assert waited < 1.5, waited
    flood_done = [wait_for(up.url, flooder, j["id"], "succeeded") for j in flood]
    assert max(_seconds(j["started_at"]) for j in flood_done) > _seconds(done["started_at"])


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_readiness_and_metrics_cover_the_pool(up):
    headers = sign_up(up.url)
    job = submit(up.url, headers, "test.noop")
    wait_for(up.url, headers, job["id"], "succeeded")
    ready = httpx.get(up.url + "/readiness", timeout=10).json()
    assert ready["checks"]["broker"]["detail"].startswith("local pool: 2 workers")
    assert ready["checks"]["storage"]["status"] == "ok"
    metrics = httpx.get(up.url + "/metrics", timeout=10).text
    assert 'atelier_jobs_finished_total{kind="test.noop",status="succeeded"} 1.0' in metrics
    assert 'atelier_jobs_queued{queue="default"} 0.0' in metrics
    assert get(up.url, headers, job["id"])["result"] == {"ok": True}
