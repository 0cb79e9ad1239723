"""WSGI entry point: `gunicorn webhook_app.wsgi:app` (same as "webhook_app:create_app()")."""

from __future__ import annotations

from webhook_app import create_app

app = create_app()
