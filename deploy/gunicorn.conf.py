"""gunicorn settings for the receiver (the Procfile's `web` line).

    gunicorn -c deploy/gunicorn.conf.py "webhook_app:create_app()"

Everything comes from the environment: PORT (default 8000), WEB_CONCURRENCY (worker
processes, default 2), LOG_FORMAT / LOG_LEVEL and the secrets to redact (see .env.example).

The worker class is webhook_app.serving.BufferingWorker: an asyncio loop reads each request
whole (REQUEST_READ_SECONDS to arrive, MAX_BODY_BYTES at most) and only then runs the WSGI
app on one of `threads` threads, so slow clients cost a socket, never a thread (issue 11;
gthread gave each trickling client a thread until it finished).
Error and access logs go through worker.logs, so they have the same JSON shape as the
application's and Celery's lines. Access lines carry method, path, status, latency_ms,
size, remote_addr, user_agent and request_id, and never a query string: the Salesforce
endpoint's `?token=` is a shared secret.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from gunicorn import glogging

from worker.logs import access_fields, configure_logging, options_from_env
from worker.preflight import check_or_exit as _check_or_exit

# The same start-up checks as every other process, before gunicorn forks any worker: a bad
# setting is one line naming it (exit status 2), not a traceback per worker.
_check_or_exit(require_leadlex=False)
_LOG_FORMAT, _LOG_LEVEL, _SECRETS = options_from_env()

bind = f"0.0.0.0:{int(os.environ.get('PORT') or 8000)}"
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
worker_class = "webhook_app.serving.BufferingWorker"
# Threads per worker process that run the WSGI app on complete requests.
threads = 4
# Open connections per worker process (slow or idle ones cost a socket each, no thread).
worker_connections = 1000
# A webhook is verified and enqueued in milliseconds; HubSpot gives up after ~5 s,
# Salesforce after 60 s. `timeout` is the heartbeat of each worker's event loop: a worker
# whose loop has not run for 30 s is killed and replaced. It does not bound one request
# (no gunicorn worker class recycles for a slow request); requests are bounded by
# REQUEST_READ_SECONDS while they arrive and by RECEIVER_REDIS_TIMEOUT_SECONDS per Redis
# call while they run.
timeout = 30
graceful_timeout = 25
keepalive = 5
# Bound what one request can hold (MAX_BODY_BYTES caps the body in the app).
limit_request_line = 8190
limit_request_fields = 100
# The heartbeat file on tmpfs (gunicorn's advice for containers): a slow overlay filesystem
# must not make a busy worker look hung. gunicorn creates its own private file in it.
_SHM = "/dev/shm"  # noqa: S108
if os.path.isdir(_SHM):
    worker_tmp_dir = _SHM
accesslog = "-"
errorlog = "-"
loglevel = _LOG_LEVEL.lower()
proc_name = "leadlex-sync-web"

# Health probes and scrapes come every few seconds: their successful access lines are
# logged only at LOG_LEVEL=DEBUG.
_PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class JsonLogger(glogging.Logger):
    """gunicorn's logger, rendering through worker.logs (one handler on the root logger)."""

    def setup(self, cfg: Any) -> None:
        self.cfg = cfg
        self.loglevel = self.LOG_LEVELS.get(cfg.loglevel.lower(), logging.INFO)
        configure_logging(_LOG_FORMAT, self.loglevel, service="web", secrets=_SECRETS)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate = True
        self.error_log.setLevel(self.loglevel)
        # Access lines are kept even when LOG_LEVEL is WARNING (they are the request record).
        self.access_log.setLevel(logging.DEBUG)

    @property
    def access_log_enabled(self) -> bool:
        return bool(self.cfg.accesslog)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.cfg.accesslog:
            return
        try:
            if not isinstance(request_time, int | float | timedelta):
                # The asyncio worker passes an object with seconds and microseconds only.
                request_time = request_time.seconds + request_time.microseconds / 1e6
            fields = access_fields(
                environ,
                getattr(resp, "status", None) or "0",
                request_time,
                size=getattr(resp, "sent", None),
                response_headers=getattr(resp, "headers", None) or (),
            )
            if (
                fields["path"] in _PROBE_PATHS
                and fields["status"] < 400
                and not logging.getLogger().isEnabledFor(logging.DEBUG)
            ):
                return
            level = logging.DEBUG if fields["path"] in _PROBE_PATHS else logging.INFO
            self.access_log.log(
                level,
                "%s %s %s",
                fields["method"],
                fields["path"],
                fields["status"],
                extra=fields,
            )
        except Exception:  # noqa: BLE001 - a logging failure must never fail the request
            self.error_log.exception("access log line failed")


logger_class = JsonLogger
