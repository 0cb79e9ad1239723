"""deploy/gunicorn.conf.py: settings from the environment, our log shape, no query strings."""

from __future__ import annotations

import json
import logging
import runpy
from datetime import timedelta
from typing import Any

import pytest
from gunicorn import glogging
from gunicorn.config import Config

from tests.operate.conftest import ROOT
from worker.logs import access_fields, strip_query

CONF = ROOT / "deploy" / "gunicorn.conf.py"
TOKEN = "sf-shared-token-4242-Qx7Lm2Vb9Zr4Kp8N"


@pytest.fixture
def conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> dict[str, Any]:
    """The config module's namespace, executed with a known environment and no .env."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("LOG_LEVEL", "INFO")
    monkeypatch.setenv("SALESFORCE_TOKEN", TOKEN)
    return runpy.run_path(str(CONF))


class FakeResponse:
    """What gunicorn hands Logger.access as `resp`."""

    status = "200 OK"
    sent = 120
    headers = [("Content-Type", "text/xml"), ("X-Request-ID", "req-77")]


def salesforce_environ() -> dict[str, str]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/webhooks/salesforce",
        "QUERY_STRING": f"token={TOKEN}",
        "RAW_URI": f"/webhooks/salesforce?token={TOKEN}",
        "REMOTE_ADDR": "203.0.113.7",
        "HTTP_USER_AGENT": "Jakarta Commons-HttpClient/3.1",
        "HTTP_REFERER": f"https://x.example/?token={TOKEN}",
    }


def test_conf_reads_port_and_concurrency_from_the_environment(conf: dict[str, Any]) -> None:
    """bind follows $PORT, workers $WEB_CONCURRENCY; the buffering worker, bounded timeouts."""
    assert conf["bind"] == "0.0.0.0:9123"
    assert conf["workers"] == 3
    assert conf["worker_class"] == "webhook_app.serving.BufferingWorker"
    assert conf["threads"] >= 1
    assert conf["worker_connections"] >= 64
    assert 0 < conf["graceful_timeout"] <= conf["timeout"] <= 60
    assert conf["accesslog"] == "-"
    assert issubclass(conf["logger_class"], glogging.Logger)


def test_conf_defaults_without_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Without PORT and WEB_CONCURRENCY the receiver binds 8000 with 2 workers."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    namespace = runpy.run_path(str(CONF))
    assert (namespace["bind"], namespace["workers"]) == ("0.0.0.0:8000", 2)


def test_every_conf_name_is_a_gunicorn_setting(conf: dict[str, Any]) -> None:
    """Each public name in the file is a real gunicorn setting (gunicorn ignores unknown ones)."""
    settings = Config().settings
    public = {k for k in conf if not k.startswith("_") and k.islower()}
    helpers = {"annotations", "glogging", "logging", "os", "access_fields",
               "configure_logging", "options_from_env", "timedelta"}
    assert public - helpers <= set(settings), public - helpers - set(settings)
    cfg = Config()
    for name in public - helpers:
        cfg.set(name, conf[name])  # validates each value as gunicorn would
    assert cfg.worker_class_str == "webhook_app.serving.BufferingWorker"
    from webhook_app.serving import BufferingWorker

    assert cfg.worker_class is BufferingWorker


def test_strip_query() -> None:
    """strip_query drops the query string and fragment and keeps the path."""
    assert strip_query(f"/webhooks/salesforce?token={TOKEN}") == "/webhooks/salesforce"
    assert strip_query("/a/b#frag") == "/a/b"
    assert strip_query("/plain") == "/plain"


def test_access_fields_never_include_the_query_string() -> None:
    """access_fields gives method, path, status, latency_ms, request_id, and no query/referer."""
    fields = access_fields(
        salesforce_environ(), "200 OK", timedelta(milliseconds=12.345),
        size=120, response_headers=FakeResponse.headers,
    )
    assert fields["method"] == "POST"
    assert fields["path"] == "/webhooks/salesforce"
    assert fields["status"] == 200
    assert fields["latency_ms"] == pytest.approx(12.35, abs=0.01)
    assert fields["request_id"] == "req-77"
    assert TOKEN not in json.dumps(fields)
    # Without PATH_INFO the raw URI is used, still without its query string.
    raw_only = {"REQUEST_METHOD": "GET", "RAW_URI": f"/webhooks/salesforce?token={TOKEN}"}
    assert access_fields(raw_only, 404, 0.001)["path"] == "/webhooks/salesforce"


def test_gunicorn_logger_writes_json_access_lines_without_the_token(
    conf: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The configured logger class logs one JSON access line with no query string or secret."""
    cfg = Config()
    for name in ("accesslog", "errorlog", "loglevel", "logger_class"):
        cfg.set(name, conf[name])
    logger = cfg.logger_class(cfg)
    logger.access(FakeResponse(), None, salesforce_environ(), timedelta(milliseconds=3))
    logger.error("Error handling request /webhooks/salesforce?token=%s", TOKEN)
    err = capsys.readouterr().err
    assert TOKEN not in err
    access, error = (json.loads(line) for line in err.splitlines() if line.startswith("{"))
    assert access["logger"] == "gunicorn.access"
    assert access["msg"] == "POST /webhooks/salesforce 200"
    assert (access["path"], access["status"], access["service"]) == (
        "/webhooks/salesforce", 200, "web")
    assert "latency_ms" in access
    assert error["logger"] == "gunicorn.error"
    assert error["msg"] == "Error handling request /webhooks/salesforce?***"
    assert logging.getLogger("gunicorn.access").handlers == []


def test_health_probe_access_lines_only_at_debug(
    conf: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Successful /healthz requests leave no access line at INFO."""
    cfg = Config()
    for name in ("accesslog", "errorlog", "loglevel", "logger_class"):
        cfg.set(name, conf[name])
    logger = cfg.logger_class(cfg)
    probe = {"REQUEST_METHOD": "GET", "PATH_INFO": "/healthz"}
    logger.access(FakeResponse(), None, probe, timedelta(milliseconds=1))
    assert capsys.readouterr().err == ""
