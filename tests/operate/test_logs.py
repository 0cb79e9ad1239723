"""worker.logs: one JSON/console shape, extra fields kept, secrets never printed, task ids bound."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
import structlog
from celery import Celery

from worker.logs import (
    HANDLER_NAME,
    Redactor,
    configure_logging,
    options_from_env,
    resolve_format,
    secret_values,
    setup_celery_logging,
)

SECRET = "hs-client-secret-7f3a9c"
TOKEN = "wbk_live_a1b2c3d4e5f6g7h8i9j0"
WHSEC = "whsec_ZXhhbXBsZS1ub3QtYS1yZWFsLXNlY3JldA=="


class TTY(io.StringIO):
    """A stream that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def json_logging(secrets: list[str] | None = None, level: str = "INFO") -> io.StringIO:
    stream = io.StringIO()
    configure_logging("json", level, service="test", secrets=secrets or [], stream=stream)
    return stream


def test_json_line_has_the_fixed_fields_then_the_extra_fields() -> None:
    """A JSON line starts with ts, level, logger, msg, service and carries every extra field."""
    stream = json_logging()
    extra = {
        "request_id": "req-1",
        "fingerprint": "fp-1",
        "contact": "8c1f0d3e",
        "leadlex_request_id": "ll-9",
        "source": "hubspot",
        "outcome": "sent",
        "latency_ms": 12.5,
    }
    logging.getLogger("leadlex_sync.worker").info("flush %s", "done", extra=extra)
    (line,) = lines(stream)
    assert list(line)[:5] == ["ts", "level", "logger", "msg", "service"]
    assert line["level"] == "info"
    assert line["logger"] == "leadlex_sync.worker"
    assert line["msg"] == "flush done"
    assert line["service"] == "test"
    assert line["ts"].endswith("Z")
    assert len(line["ts"]) == len("2026-01-01T00:00:00.000Z")
    assert {k: line[k] for k in extra} == extra


def test_extra_field_named_like_a_fixed_field_is_kept_renamed() -> None:
    """An extra field called `level` does not overwrite the record's level."""
    stream = json_logging()
    logging.getLogger("x").warning("w", extra={"level": "custom"})
    (line,) = lines(stream)
    assert line["level"] == "warning"
    assert line["level_"] == "custom"


def test_structlog_loggers_render_in_the_same_shape() -> None:
    """structlog.get_logger() events come out with the same fixed fields."""
    stream = json_logging()
    structlog.get_logger("leadlex_sync.sl").info("native", contact="c-2")
    (line,) = lines(stream)
    assert (line["logger"], line["msg"], line["contact"], line["service"]) == (
        "leadlex_sync.sl",
        "native",
        "c-2",
        "test",
    )


def test_configured_secret_and_bearer_token_never_appear() -> None:
    """A configured secret, a Bearer wbk_ token and a whsec_ secret are masked in msg and extra."""
    stream = json_logging([SECRET])
    log = logging.getLogger("leadlex_sync.receiver")
    log.info(
        "secret %s and Authorization: Bearer %s and %s",
        SECRET,
        TOKEN,
        WHSEC,
        extra={
            "detail": f"used {SECRET}",
            "headers": {"Authorization": f"Bearer {TOKEN}", "X-Other": "fine"},
            "tokens": [TOKEN, WHSEC],
        },
    )
    try:
        raise ValueError(f"refused key {SECRET} / Bearer {TOKEN}")
    except ValueError:
        log.exception("failed with %s", SECRET)
    out = stream.getvalue()
    for leaked in (SECRET, TOKEN, WHSEC, "a1b2c3d4e5f6", "ZXhhbXBsZS1ub3Q"):
        assert leaked not in out
    first, second = lines(stream)
    assert first["msg"] == "secret *** and Authorization: Bearer *** and whsec_***"
    assert first["detail"] == "used ***"
    assert first["headers"] == {"Authorization": "***", "X-Other": "fine"}
    assert "ValueError: refused key *** / Bearer ***" in second["exception"]


def test_webhook_query_strings_and_url_passwords_are_masked() -> None:
    """`/webhooks/salesforce?token=...`, `?api_key=` and `redis://:pw@` are masked anywhere."""
    stream = json_logging()
    logging.getLogger("gunicorn.error").error(
        "Error handling request /webhooks/salesforce?token=sf-shared-123",
        extra={"url": "https://x.example/cb?api_key=k-999&x=1", "redis": "redis://:pw-777@r:6379/0"},
    )
    out = stream.getvalue()
    for leaked in ("sf-shared-123", "k-999", "pw-777"):
        assert leaked not in out
    (line,) = lines(stream)
    assert line["msg"].endswith("/webhooks/salesforce?***")
    assert line["redis"] == "redis://:***@r:6379/0"


def test_console_format_is_key_value_and_redacted() -> None:
    """The console renderer prints `LEVEL logger: msg key=value` with secrets masked."""
    stream = TTY()
    configure_logging("auto", "INFO", service="test", secrets=[SECRET], stream=stream)
    logging.getLogger("leadlex_sync.worker").warning(
        "flush %s", SECRET, extra={"contact": "c 1", "attempt": 2}
    )
    out = stream.getvalue()
    assert "WARNING leadlex_sync.worker: flush ***" in out
    assert 'contact="c 1" attempt=2' in out
    assert SECRET not in out
    assert not out.lstrip().startswith("{")


def test_auto_format_follows_the_terminal() -> None:
    """`auto` is console on a terminal and JSON otherwise; anything else is refused."""
    assert resolve_format("auto", TTY()) == "console"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("JSON", TTY()) == "json"
    with pytest.raises(ValueError, match="log format"):
        resolve_format("xml", io.StringIO())


def test_configure_twice_keeps_one_handler() -> None:
    """Calling configure_logging again replaces its handler instead of adding a second."""
    json_logging()
    json_logging()
    ours = [h for h in logging.getLogger().handlers if h.get_name() == HANDLER_NAME]
    assert len(ours) == 1


def test_level_filters_lines() -> None:
    """At WARNING, INFO lines are dropped and WARNING lines kept."""
    stream = json_logging(level="WARNING")
    log = logging.getLogger("leadlex_sync.any")
    log.info("hidden")
    log.warning("shown")
    assert [line["msg"] for line in lines(stream)] == ["shown"]


def test_secret_values_cover_rotation_flower_and_redis_password() -> None:
    """secret_values covers each SECRET_VARS value, rotated parts, Flower and Redis passwords."""
    values = secret_values(
        {
            "LEADLEX_API_KEY": TOKEN,
            "GENERIC_WEBHOOK_SECRET": f"{WHSEC} whsec_b2xkLXNlY3JldA==",
            "FLOWER_BASIC_AUTH": "ops:flower-pass-1,admin:flower-pass-2",
            "REDIS_URL": "redis://:redis-pass-3@redis:6379/0",
            "PUBLIC_BASE_URL": "https://not-a-secret.example",
        }
    )
    for expected in (TOKEN, WHSEC, "whsec_b2xkLXNlY3JldA==", "flower-pass-1", "flower-pass-2",
                     "redis-pass-3"):
        assert expected in values
    assert "https://not-a-secret.example" not in values
    assert Redactor(values).redact_text("auth admin:flower-pass-2") == "auth ***"


def test_options_from_env_never_fails_on_bad_settings() -> None:
    """A malformed setting elsewhere still gives logging options (defaults for bad log values)."""
    fmt, level, secrets = options_from_env(
        {"LEADLEX_PLAN": "gold", "LOG_FORMAT": "json", "LOG_LEVEL": "loud",
         "HUBSPOT_CLIENT_SECRET": SECRET}
    )
    assert (fmt, level) == ("json", "INFO")
    assert SECRET in secrets


def test_celery_task_lines_carry_task_id_and_name() -> None:
    """After setup_celery_logging, lines logged inside a task carry its id and name; after, not."""
    setup_celery_logging(loglevel=logging.INFO)
    stream = json_logging()  # same handler shape, captured
    app = Celery("lls_logs_test", set_as_current=False)
    log = logging.getLogger("leadlex_sync.worker")

    @app.task(name="leadlex_sync.test_task")
    def work() -> str:
        log.info("inside")
        return "ok"

    assert work.apply(task_id="task-123").get() == "ok"
    log.info("outside")
    inside, outside = (line for line in lines(stream) if line["logger"] == "leadlex_sync.worker")
    assert (inside["task_id"], inside["task_name"]) == ("task-123", "leadlex_sync.test_task")
    assert "task_id" not in outside


def test_celery_trace_lines_drop_task_arguments() -> None:
    """Celery's succeeded line keeps runtime_ms but not the args (contact data) it carries."""
    stream = json_logging()
    context = {"id": "t-9", "name": "leadlex_sync.ingest_batch", "runtime": 0.25,
               "args": "[{'email': 'mara@example.org'}]", "kwargs": "{}", "return_value": "{}"}
    logging.getLogger("celery.app.trace").info(
        "Task %(name)s[%(id)s] succeeded in %(runtime)ss", context, extra={"data": context}
    )
    (line,) = lines(stream)
    assert "mara@example.org" not in stream.getvalue()
    assert (line["task_id"], line["task_name"], line["runtime_ms"]) == (
        "t-9", "leadlex_sync.ingest_batch", 250.0)
    assert "data" not in line


def test_every_second_pump_lines_only_at_debug() -> None:
    """Celery's INFO lines about leadlex_sync.pump are dropped unless the level is DEBUG."""
    context = {"id": "p-1", "name": "leadlex_sync.pump", "runtime": 0.001}
    trace = logging.getLogger("celery.app.trace")
    stream = json_logging(level="INFO")
    trace.info("Task %(name)s[%(id)s] succeeded", context, extra={"data": context})
    assert stream.getvalue() == ""
    stream = json_logging(level="DEBUG")
    trace.info("Task %(name)s[%(id)s] succeeded", context, extra={"data": context})
    assert lines(stream)[0]["task_name"] == "leadlex_sync.pump"
