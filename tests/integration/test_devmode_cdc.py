"""Dev mode with Salesforce CDC: `leadlex-sync dev --salesforce cdc` and the sample command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.integration.support import wait_for
from worker.embedded_redis import free_port


def test_dev_mode_with_cdc_syncs_a_sample_change_event(tmp_path: Path) -> None:
    """`dev --salesforce cdc` runs the Pub/Sub simulator and subscriber; a sample change event
    reaches the demo contact, and Ctrl-C stops everything."""
    port, sandbox_port = free_port(), free_port()
    # No REDIS_URL: dev mode starts its own embedded Redis under .run/ of its directory.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LEADLEX_", "SALESFORCE_")) and k != "REDIS_URL"
    }
    env.update(
        SANDBOX_PORT=str(sandbox_port),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        LOG_FORMAT="json",
    )
    cli = str(Path(sys.executable).with_name("leadlex-sync"))
    out_path = tmp_path / "dev.out"
    out = out_path.open("wb")
    proc = subprocess.Popen(
        [cli, "dev", "--port", str(port), "--no-flower", "--salesforce", "cdc"],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: b"leadlex-sync is running" in out_path.read_bytes(), 90)
        text = out_path.read_text()
        sample = re.search(r"salesforce sample --instance-url (\S+)", text)
        contact = re.search(r"hubspot 101\s+-> (\S+)", text)
        assert sample, text
        assert contact, text
        sent = subprocess.run(
            [cli, "salesforce", "sample", "--instance-url", sample.group(1),
             "--title", "Chief Data Officer"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr
        url = f"http://127.0.0.1:{sandbox_port}/_sandbox/contacts/{contact.group(1)}"
        wait_for(
            lambda: httpx.get(url, timeout=5).json()["data"]["job_title"] == "Chief Data Officer",
            timeout=60,
        )
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        out.close()
    assert code == 0
