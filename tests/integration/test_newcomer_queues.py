"""The plain `celery -A worker worker` (no -Q) delivers; a queue nobody consumes is reported
by /readyz and `leadlex-sync status`, which names the fix."""

from __future__ import annotations

from typing import Any

import redis
from click.testing import CliRunner

from cli import main
from tests.integration.conftest import Sandbox
from tests.integration.support import hs_change, link, now_ms, post_hubspot, wait_for
from worker.celery_app import QUEUE_FLUSH, QUEUE_INGEST, QUEUES


def test_plain_celery_worker_consumes_every_queue_and_delivers(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """A signed HubSpot change reaches the simulator via `celery -A worker worker` (no -Q)."""
    cid = sandbox.seed(full_name="Sandra Day")
    link(redis_url, "hubspot", "701", cid)
    worker = workers("plain", beat=False, queues=None)
    assert worker.proc is not None
    for queue in QUEUES:
        assert f".> {queue}" in worker.log()
    post_hubspot(receiver, [hs_change(701, "jobtitle", "Associate Justice", now_ms())])
    wait_for(lambda: sandbox.contact(cid)["job_title"] == "Associate Justice", timeout=60)
    assert len(sandbox.patches(cid)) == 1
    ready = receiver.get("/readyz").get_json()
    assert ready["status"] == "ready"
    assert ready["checks"]["queues"]["ok"] is True


def test_a_queue_without_consumer_is_reported_with_the_fix(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """With a worker on lls.ingest only, /readyz and status name stranded lls.flush and the fix."""
    cid = sandbox.seed(full_name="Thurgood Marshall")
    link(redis_url, "hubspot", "702", cid)
    workers("ingest-only", beat=False, queues=(QUEUE_INGEST,))
    post_hubspot(receiver, [hs_change(702, "jobtitle", "Solicitor General", now_ms())])
    client = redis.Redis.from_url(redis_url)
    wait_for(lambda: client.llen(QUEUE_FLUSH) > 0, timeout=60)

    resp = receiver.get("/readyz")
    body = resp.get_json()
    assert resp.status_code == 200  # the receiver still takes webhooks safely
    assert body["status"] == "degraded"
    check = body["checks"]["queues"]
    assert check["ok"] is False
    assert f"no worker consumes {QUEUE_FLUSH}" in check["detail"]
    assert "celery -A worker worker` without -Q" in check["detail"]
    metrics = receiver.get("/metrics").get_data(as_text=True)
    assert "leadlex_sync_queues_stranded 1.0" in metrics

    result = CliRunner().invoke(main, ["status"], env={"REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output
    assert f"PROBLEM    no worker consumes {QUEUE_FLUSH}" in result.stdout
    assert "NOT draining" in result.stdout or "drains by" not in result.stdout
    assert f"{QUEUE_INGEST} 0 waiting (1 consumer)" in result.stdout

    # The fix named: a plain worker drains it.
    workers("plain", beat=False, queues=None)
    wait_for(lambda: sandbox.contact(cid)["job_title"] == "Solicitor General", timeout=60)
    assert receiver.get("/readyz").get_json()["checks"]["queues"]["ok"] is True
