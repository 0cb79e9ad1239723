"""Running it like a product: dev mode end to end, metrics that move, readiness."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from tests.integration.conftest import Sandbox
from tests.integration.support import hs_change, link, now_ms, post_hubspot, wait_for
from worker.embedded_redis import free_port
from worker.ratelimit import Circuit


def test_dev_mode_runs_everything_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    """`leadlex-sync dev` with no Redis and no LeadLex key syncs a sample; Ctrl-C stops all."""
    port, sandbox_port, dead_redis = free_port(), free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LEADLEX_", "HUBSPOT_")) and k != "REDIS_URL"
    }
    env.update(
        # Nothing answers at the default address (test-only variable, worker/settings.py).
        LLS_TEST_DEFAULT_REDIS_ADDRESS=f"127.0.0.1:{dead_redis}",
        SANDBOX_PORT=str(sandbox_port),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        LOG_FORMAT="json",
    )
    cli = str(Path(sys.executable).with_name("leadlex-sync"))
    out = (tmp_path / "dev.out").open("wb")
    proc = subprocess.Popen(
        [cli, "dev", "--port", str(port), "--no-flower"],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: b"leadlex-sync is running" in (tmp_path / "dev.out").read_bytes(), 60)
        text = (tmp_path / "dev.out").read_text()
        assert "REDIS_URL is not set, so dev mode runs its own" in text
        assert f"POST http://127.0.0.1:{port}/webhooks/hubspot" in text
        match = re.search(r"hubspot 101\s+-> (\S+)", text)
        assert match, text
        contact_id = match.group(1)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4  # redis, simulator, web, worker, beat (+ their children)

        sent = subprocess.run(
            [
                cli,
                "send-sample",
                "hubspot",
                "--url",
                f"http://127.0.0.1:{port}",
                "--value",
                "Chief Legal Officer",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        sandbox = f"http://127.0.0.1:{sandbox_port}/_sandbox/contacts/{contact_id}"
        wait_for(
            lambda: (
                httpx.get(sandbox, timeout=5).json()["data"]["job_title"] == "Chief Legal Officer"
            ),
            timeout=30,
        )
        # Salesforce in dev mode: a dev token, which send-sample from another shell knows too.
        sf = subprocess.run(
            [cli, "send-sample", "salesforce", "--url", f"http://127.0.0.1:{port}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert sf.returncode == 0, sf.stdout + sf.stderr
        assert "HTTP 200" in sf.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        out.close()
    assert code == 0
    time.sleep(0.5)
    alive = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [p.cmdline() for p in alive]


def test_metrics_move_after_an_end_to_end_run(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """After one synced change, /metrics counts the webhook, the event and the LeadLex call."""
    cid = sandbox.seed(full_name="Ruth Bader")
    link(redis_url, "hubspot", "901", cid)
    workers()
    post_hubspot(receiver, [hs_change(901, "jobtitle", "Justice", now_ms())])
    wait_for(lambda: sandbox.contact(cid)["job_title"] == "Justice", timeout=60)

    def scrape() -> str:
        return str(receiver.get("/metrics").get_data(as_text=True))

    text = wait_for(
        lambda: 'leadlex_calls_total{method="PATCH",status="200"} 1.0' in scrape() and scrape()
    )
    assert 'leadlex_sync_webhooks_received_total{source="hubspot"} 1.0' in text
    assert 'leadlex_sync_events_enqueued_total{source="hubspot"} 1.0' in text
    assert 'leadlex_sync_fields_staged_total{source="hubspot"} 1.0' in text
    assert 'leadlex_sync_sync_latency_seconds_count{source="hubspot"} 1.0' in text
    assert "leadlex_sync_budget_daily_remaining" in text
    assert "leadlex_sync_circuit_open 0.0" in text


def test_readyz_reports_an_open_circuit(receiver: Any, redis_url: str) -> None:
    """/readyz turns 503 and names the circuit while LeadLex refuses our key."""
    assert receiver.get("/readyz").status_code == 200
    Circuit(redis.Redis.from_url(redis_url)).open("invalid_key", "401 from LeadLex")
    resp = receiver.get("/readyz")
    assert resp.status_code == 503
    check = resp.get_json()["checks"]["leadlex_circuit"]
    assert check["ok"] is False
    assert "invalid_key" in check["detail"]
