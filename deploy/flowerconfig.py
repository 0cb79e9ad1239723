"""Flower settings: `celery -A worker flower --conf=deploy/flowerconfig.py` (the Procfile's line).

Flower (tornado) executes this file; every top-level name that is a Flower option is
applied. Settings come from the environment (or `.env`):

- FLOWER_BASIC_AUTH (`user:password`, comma-separated for several) is required: without
  it Flower would be open to anyone who reaches the port, so this file stops start-up,
  as it does when any user or password is empty (`admin:` would let anyone in).
  It is read from the environment rather than the command line, where `ps` would show it.
- FLOWER_PORT (default 5555).
- LOG_FORMAT / LOG_LEVEL: Flower's own lines use worker.logs' shape (service "flower").

Flower's `/metrics` and `/healthcheck` answer without authentication: keep the port private.
Flower access is operator access: a logged-in user can revoke tasks and enqueue any task
through Flower's API (bypassing the receiver's signature checks). Task arguments carry
only ids (event fingerprints, LeadLex contact ids), never contact data.
"""

from __future__ import annotations

import logging as _logging
import sys as _sys

from worker.logs import configure_logging as _configure_logging
from worker.logs import merged_environ as _merged_environ
from worker.logs import options_from_env as _options_from_env
from worker.preflight import check_or_exit as _check_or_exit

# The same start-up checks as every other process (one line naming the variable).
_check_or_exit(require_leadlex=False)
_env = _merged_environ()
_auth = [p.strip() for p in _env.get("FLOWER_BASIC_AUTH", "").split(",") if p.strip()]
if not _auth or not all(
    _user.strip() and _password.strip()
    for _user, _sep, _password in (p.partition(":") for p in _auth)
):
    _sys.exit(
        "leadlex-sync: FLOWER_BASIC_AUTH: missing, or not user:password with a non-empty "
        "user and password (Flower refuses)"
    )

basic_auth = _auth
port = int(_env.get("FLOWER_PORT") or 5555)

_fmt, _level, _secrets = _options_from_env(_env)
# Tornado installed its own handler on the root logger before running this file.
_logging.getLogger().handlers.clear()
_configure_logging(_fmt, _level, service="flower", secrets=_secrets)
# Tornado's `logging` option: it keeps the root level at LOG_LEVEL and, since the root now
# has a handler, adds none of its own.
logging = _level.lower()
