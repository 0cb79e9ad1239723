"""One log shape for gunicorn, Flask and Celery: JSON lines in production, key=value on a terminal.

Every process calls `configure_logging` once (the receiver through gunicorn's logger class
in deploy/gunicorn.conf.py, Celery through `setup_celery_logging`, connected to
`celery.signals.setup_logging`). It installs one handler on the root logger whose
structlog `ProcessorFormatter` renders stdlib records (gunicorn, Flask, Celery, httpx,
ours) and structlog events alike:

    {"ts": "2025-01-01T12:00:00.123Z", "level": "info", "logger": "leadlex_sync.receiver",
     "msg": "webhook hubspot 204 accepted", "service": "web", "source": "hubspot", ...}

Fields passed with `extra={...}` become top-level keys. Inside a Celery task every line
also carries `task_id` and `task_name` (bound by task_prerun, cleared by task_postrun).

Redaction runs last, on the finished record (message, extra fields, traceback): the
configured secret values, `Bearer <token>`, `whsec_...`, `wbk_...` (LeadLex keys),
passwords in URLs, `?token=`-style query parameters and the query string of any
`/webhooks/...` path become `***`. Values of keys such as `authorization` or `api_key`
are replaced whole.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TextIO, cast
from urllib.parse import urlsplit

import structlog
from structlog.typing import EventDict, Processor

from worker.settings import SECRET_VARS, SettingsError, load_settings

LogFormat = Literal["auto", "json", "console"]

HANDLER_NAME = "leadlex_sync"
REDACTED = "***"

# The first keys of every line, in this order; anything else follows in insertion order.
_HEAD = ("ts", "level", "logger", "msg", "service", "pid", "task_id", "task_name")
# LogRecord attributes some formatters add; never useful as fields.
_NOISE = frozenset({"message", "asctime", "color_message", "taskName", "positional_args"})
# Keys whose value is a credential whatever it looks like.
_SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api_key",
        "apikey",
        "x-api-key",
        "password",
        "secret",
        "client_secret",
        "token",
        "cookie",
        "set-cookie",
    }
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+"), r"\1 " + REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]+"), "whsec_" + REDACTED),
    (re.compile(r"\bwbk_[A-Za-z0-9_-]+"), "wbk_" + REDACTED),
    # user:password@ in any URL (redis://:pw@host, https://user:pw@host)
    (re.compile(r"(://[^/\s:@]*:)[^@/\s]+@"), r"\1" + REDACTED + "@"),
    # /webhooks/salesforce?token=... : the whole query string of a webhook path
    (re.compile(r"(/webhooks/[^\s?\"'#]*)\?[^\s\"'#]*"), r"\1?" + REDACTED),
    # credentials in any other query string
    (
        re.compile(
            r"(?i)([?&;](?:token|access_token|api_key|apikey|key|secret|password|signature|sig)=)"
            r"[^&\s\"'#]*"
        ),
        r"\1" + REDACTED,
    ),
)

# Celery's trace/strategy loggers pass `extra={"data": {...}}` holding task args/kwargs:
# personal data and whole batches. Only these keys of it are kept.
_CELERY_DATA_KEYS = {"id": "task_id", "name": "task_name"}

# Tasks that run every second: their "received"/"succeeded" lines are DEBUG noise.
QUIET_TASKS = frozenset({"leadlex_sync.pump", "leadlex_sync.probe_circuit"})
_CELERY_TASK_LOGGERS = frozenset({"celery.app.trace", "celery.worker.strategy"})

_task_context: ContextVar[tuple[str, str] | None] = ContextVar(
    "leadlex_sync_task", default=None
)


# ---- redaction -----------------------------------------------------------------------------
class Redactor:
    """Replaces secret values and credential-shaped strings with `***`, recursively.

    Usable as a structlog processor (it is the last step before rendering) and on its
    own (`redactor.redact(value)`).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact_text(self, text: str) -> str:
        """`text` with every secret value and credential pattern replaced."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def redact(self, value: Any, depth: int = 0) -> Any:
        """A copy of `value` with secrets masked (numbers and None kept, other objects as str)."""
        if isinstance(value, str):
            return self.redact_text(value)
        if depth > 8:
            return value
        if isinstance(value, Mapping):
            return {
                k: REDACTED
                if isinstance(k, str) and k.lower() in _SECRET_KEYS and value[k]
                else self.redact(value[k], depth + 1)
                for k in value
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self.redact(v, depth + 1) for v in value]
        if isinstance(value, bytes):
            return self.redact_text(value.decode("utf-8", "replace"))
        if isinstance(value, int | float | bool) or value is None:
            return value
        # Anything else is rendered with str() anyway: redact what will be printed.
        return self.redact_text(str(value))

    def __call__(self, _logger: Any, _method: str, event_dict: EventDict) -> EventDict:
        return cast(EventDict, self.redact(event_dict))


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The values worth redacting from `env`: each SECRET_VARS value and its parts.

    Rotated secrets are space-separated (GENERIC_WEBHOOK_SECRET), Flower takes
    `user:password[,user:password]`, and REDIS_URL may carry a password.
    """
    out: set[str] = set()
    for var in SECRET_VARS:
        raw = (env.get(var) or "").strip()
        if not raw:
            continue
        out.add(raw)
        for part in re.split(r"[\s,]+", raw):
            if not part:
                continue
            out.add(part)
            if part.startswith("whsec_"):
                out.add(part.removeprefix("whsec_"))
            if var == "FLOWER_BASIC_AUTH" and ":" in part:
                out.add(part.split(":", 1)[1])
    password = urlsplit(env.get("REDIS_URL", "")).password
    if password:
        out.add(password)
    # Values under 4 characters would mask ordinary words all over the logs; no real
    # secret is that short.
    return sorted(v for v in out if len(v) >= 4)


# ---- record -> event dict ------------------------------------------------------------------
class TaskContextFilter(logging.Filter):
    """Adds `task_id` / `task_name` of the running Celery task (if any) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _task_context.get()
        if ctx is not None:
            if not hasattr(record, "task_id"):
                record.task_id = ctx[0]
            if not hasattr(record, "task_name"):
                record.task_name = ctx[1]
        return True


class QuietTasksFilter(logging.Filter):
    """Drops Celery's INFO received/succeeded lines of QUIET_TASKS unless the root is at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.name not in _CELERY_TASK_LOGGERS:
            return True
        data = getattr(record, "data", None)
        if not isinstance(data, Mapping) or data.get("name") not in QUIET_TASKS:
            return True
        return logging.getLogger().getEffectiveLevel() <= logging.DEBUG


def _record_fields(service: str) -> Processor:
    def processor(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
        record = cast(logging.LogRecord | None, event_dict.get("_record"))
        created = record.created if record is not None else datetime.now(UTC).timestamp()
        for key in ("ts", "level", "logger", "service", "pid"):
            if key in event_dict:  # an extra field by that name: keep it, renamed
                event_dict[f"{key}_"] = event_dict.pop(key)
        event_dict["ts"] = (
            datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
        event_dict["level"] = (record.levelname if record else _method).lower()
        if record is not None:
            event_dict["logger"] = record.name
            for key in ("task_id", "task_name"):
                if hasattr(record, key):
                    event_dict.setdefault(key, getattr(record, key))
        event_dict["service"] = service
        if record is not None:
            event_dict["pid"] = record.process
        data = event_dict.get("data")
        if isinstance(data, Mapping) and str(event_dict.get("logger", "")).startswith("celery"):
            event_dict.pop("data")
            for src, dst in _CELERY_DATA_KEYS.items():
                if data.get(src):
                    event_dict.setdefault(dst, str(data[src]))
            runtime = data.get("runtime")
            if isinstance(runtime, int | float):
                event_dict["runtime_ms"] = round(runtime * 1000, 2)
        for key in _NOISE:
            event_dict.pop(key, None)
        return event_dict

    return processor


def _shape(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Order the keys: the fixed head, then extra fields, then `exception`."""
    msg = event_dict.pop("event", "")
    if "msg" in event_dict:
        event_dict["msg_"] = event_dict.pop("msg")
    event_dict["msg"] = msg if isinstance(msg, str) else str(msg)
    ordered = {key: event_dict.pop(key) for key in _HEAD if key in event_dict}
    exception = event_dict.pop("exception", None)
    ordered.update(event_dict)
    if exception:
        ordered["exception"] = exception
    return ordered


def _render_json(_logger: Any, _method: str, event_dict: EventDict) -> str:
    return json.dumps(event_dict, default=str, separators=(",", ":"))


def _kv(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in " \t\n\"'="):
        return json.dumps(text)
    return text


def _render_console(_logger: Any, _method: str, event_dict: EventDict) -> str:
    ed = dict(event_dict)
    ts = str(ed.pop("ts", ""))
    clock = ts[11:23] if len(ts) >= 23 else ts
    level = str(ed.pop("level", "")).upper()
    logger = ed.pop("logger", "")
    msg = ed.pop("msg", "")
    ed.pop("service", None)
    ed.pop("pid", None)
    exception = ed.pop("exception", None)
    fields = " ".join(f"{k}={_kv(v)}" for k, v in ed.items())
    line = f"{clock} {level:<7} {logger}: {msg}" + (f"  {fields}" if fields else "")
    if exception:
        line += "\n" + str(exception)
    return line


# ---- configuration -------------------------------------------------------------------------
def _stream_is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def resolve_format(fmt: str, stream: TextIO | None = None) -> Literal["json", "console"]:
    """`auto` becomes `console` when the stream (stderr) is a terminal, else `json`."""
    fmt = (fmt or "auto").strip().lower()
    if fmt in ("json", "console"):
        return cast(Literal["json", "console"], fmt)
    if fmt != "auto":
        raise ValueError(f"log format must be auto, json or console, not {fmt!r}")
    return "console" if _stream_is_tty(stream or sys.stderr) else "json"


def _our_handlers(root: logging.Logger) -> list[logging.Handler]:
    return [h for h in root.handlers if h.get_name() == HANDLER_NAME]


def configure_logging(
    fmt: LogFormat | str = "auto",
    level: str | int = "INFO",
    *,
    service: str,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route every logger through one handler on the root logger; returns that handler.

    Idempotent: calling it again replaces the previous handler (other handlers, e.g.
    pytest's, are left alone). `stream` defaults to the process's real stderr.
    """
    if stream is None:
        stream = sys.stderr
        if stream is None or type(stream).__name__ == "LoggingProxy":
            # Celery may swap sys.stderr for a proxy that logs; never write back into it.
            stream = sys.__stderr__
    assert stream is not None
    resolved = resolve_format(str(fmt), stream)
    renderer = _render_json if resolved == "json" else _render_console
    redactor = Redactor(secrets)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[
            _record_fields(service),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redactor,
            _shape,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter)
    handler.addFilter(TaskContextFilter())
    handler.addFilter(QuietTasksFilter())

    root = logging.getLogger()
    for old in _our_handlers(root):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)

    # Loggers that install their own handlers or stop propagation would escape the shape.
    for name in ("gunicorn.error", "gunicorn.access", "celery", "celery.task",
                 "celery.redirected", "werkzeug"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.propagate = True
    # Per-request INFO lines from the HTTP client duplicate our canonical lines, and beat
    # says "Sending due task" every second: both only at DEBUG.
    quiet = logging.NOTSET if root.getEffectiveLevel() <= logging.DEBUG else logging.WARNING
    for name in ("httpx", "httpcore", "celery.beat"):
        logging.getLogger(name).setLevel(quiet)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return handler


def merged_environ(env_file: Path = Path(".env")) -> dict[str, str]:
    """`.env` (if present) overlaid by os.environ, as load_settings reads them."""
    merged: dict[str, str] = {}
    if env_file.is_file():
        from dotenv import dotenv_values

        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)
    return merged


def options_from_env(env: Mapping[str, str] | None = None) -> tuple[str, str, list[str]]:
    """(LOG_FORMAT, LOG_LEVEL, secrets) from the environment (+ `.env`), never failing.

    A malformed setting is reported by the process's own start-up check; logging falls
    back to the defaults so that report can be logged at all.
    """
    data = dict(env) if env is not None else merged_environ()
    secrets = secret_values(data)
    try:
        settings = load_settings(data, require_leadlex=False)
    except SettingsError:
        fmt = data.get("LOG_FORMAT", "auto").strip().lower()
        level = data.get("LOG_LEVEL", "INFO").strip().upper()
        fmt = fmt if fmt in ("auto", "json", "console") else "auto"
        level = level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO"
        return fmt, level, secrets
    return settings.log_format, settings.log_level, secrets


# ---- Celery --------------------------------------------------------------------------------
def bind_task(task_id: str | None, task_name: str | None) -> None:
    """Mark the current context as running a task (None, None clears it)."""
    _task_context.set((task_id or "", task_name or "") if task_id or task_name else None)


def _on_task_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    bind_task(task_id, getattr(task, "name", None))


def _on_task_postrun(**_: Any) -> None:
    bind_task(None, None)


def _celery_service() -> str:
    argv = [a.lower() for a in sys.argv[1:]]
    for name in ("beat", "flower"):
        if name in argv:
            return name
    return "worker"


def setup_celery_logging(loglevel: Any = None, **_kwargs: Any) -> None:
    """Receiver for `celery.signals.setup_logging`: our shape instead of Celery's.

    LOG_LEVEL (environment or `.env`) decides; without it the level is INFO, or DEBUG
    when Celery was started with `-l DEBUG`. Also connects task_prerun/task_postrun so
    lines logged inside a task carry `task_id` and `task_name`.
    """
    from celery.signals import task_postrun, task_prerun

    data = merged_environ()
    fmt, level, secrets = options_from_env(data)
    if not data.get("LOG_LEVEL") and loglevel:
        wanted = loglevel if isinstance(loglevel, int) else logging.getLevelName(
            str(loglevel).upper()
        )
        if wanted == logging.DEBUG:
            level = "DEBUG"
    configure_logging(fmt, level, service=_celery_service(), secrets=secrets,
                      stream=sys.__stderr__)
    task_prerun.connect(_on_task_prerun, weak=False, dispatch_uid="leadlex_sync.logs.prerun")
    task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid="leadlex_sync.logs.postrun")


# ---- gunicorn ------------------------------------------------------------------------------
def strip_query(uri: str) -> str:
    """The path of `uri` without its query string or fragment (`/a?token=x` -> `/a`)."""
    return uri.split("?", 1)[0].split("#", 1)[0]


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def access_fields(
    environ: Mapping[str, Any],
    status: int | str,
    request_time: timedelta | float,
    *,
    size: int | None = None,
    response_headers: Iterable[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Fields of one access-log line. Never the query string (it may carry `?token=`)."""
    if isinstance(status, str):
        status = int(status.split(None, 1)[0]) if status[:3].isdigit() else 0
    seconds = request_time.total_seconds() if isinstance(request_time, timedelta) else request_time
    path = environ.get("PATH_INFO") or environ.get("RAW_URI") or "/"
    request_id = _header(response_headers, "x-request-id") or environ.get("HTTP_X_REQUEST_ID")
    fields: dict[str, Any] = {
        "method": environ.get("REQUEST_METHOD", ""),
        "path": strip_query(str(path)),
        "status": status,
        "latency_ms": round(seconds * 1000, 2),
        "size": size,
        "remote_addr": environ.get("REMOTE_ADDR"),
        "user_agent": environ.get("HTTP_USER_AGENT"),
    }
    if request_id:
        fields["request_id"] = request_id
    return fields


__all__ = [
    "QuietTasksFilter",
    "Redactor",
    "TaskContextFilter",
    "access_fields",
    "bind_task",
    "configure_logging",
    "merged_environ",
    "options_from_env",
    "resolve_format",
    "secret_values",
    "setup_celery_logging",
    "strip_query",
]
