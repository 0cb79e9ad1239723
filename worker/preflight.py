"""Start-up checks every process runs before it does anything: one line, then exit.

The same checks for every process (receiver, worker, beat, Flower, CLI and
`leadlex-sync config check`): the settings (worker.settings) and the mapping file.
LEADLEX_API_KEY is required only where LeadLex is called or scheduled from (worker,
beat). A failure is `SettingsError`, whose text is one line naming the variable; the
process prints `leadlex-sync: <that line>` on stderr and exits with status 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from celery.loaders.app import AppLoader

from worker.settings import Settings, SettingsError, load_settings


def check(*, require_leadlex: bool, env_file: Path | None = Path(".env")) -> Settings:
    """Settings and the mapping file, as a process would load them; SettingsError if not."""
    from worker.mapping import MappingError, load_mapping

    settings = load_settings(require_leadlex=require_leadlex, env_file=env_file)
    try:
        load_mapping(settings.mapping_file, settings.default_phone_region)
    except MappingError as err:
        raise SettingsError(f"MAPPING_FILE: {err}") from None
    return settings


def check_or_exit(*, require_leadlex: bool) -> Settings:
    """`check`, or print its one line and end the process (status 2) at once."""
    try:
        return check(require_leadlex=require_leadlex)
    except SettingsError as err:
        print(f"leadlex-sync: {err}", file=sys.stderr, flush=True)
        os._exit(2)


class Loader(AppLoader):
    """Celery's loader, plus the start-up checks: `init_worker` runs first thing in both
    `celery worker` and `celery beat`, before either parses the broker URL or prints."""

    def on_worker_init(self) -> None:
        check_or_exit(require_leadlex=True)
        super().on_worker_init()

    def import_default_modules(self) -> Any:
        # Flower (with or without --conf) and other celery commands load the task modules
        # through here; worker and beat were checked in init_worker just before.
        if not self.worker_initialized:
            check_or_exit(require_leadlex=False)
        return super().import_default_modules()
