"""`leadlex-sync` command line: dev mode, simulator, samples, links, status, dead letters,
config. One module per command group; each registers its commands on `main`.

Every command has --help; bad input exits non-zero with one line saying what is wrong.
The CLI (with dev mode) is the only code that imports from both `webhook_app` and `worker`.
"""

from cli import (  # noqa: F401 - registers the command groups
    backfill,
    config,
    devmode_cmds,
    dlq,
    hubspot,
    links,
    onboarding,
    reconcile,
    salesforce,
    samples,
    status,
)
from cli.context import main

__all__ = ["main"]
