"""One module per sender, each a `Source` (data) and a blueprint.

Adding a CRM = one module here (plus a mapping module in the worker and a payload folder
in tests/payloads), and one line in BLUEPRINTS and SOURCE_MODULES.
"""

from __future__ import annotations

from flask import Blueprint

from webhook_app.intake import HasSource
from webhook_app.sources import generic, hubspot, salesforce

BLUEPRINTS: tuple[Blueprint, ...] = (hubspot.blueprint, salesforce.blueprint, generic.blueprint)
# The source modules (each with its `SOURCE`), for the WSGI fast path: it reads `SOURCE` at
# each request, as the views do.
SOURCE_MODULES: tuple[HasSource, ...] = (hubspot, salesforce, generic)

__all__ = ["BLUEPRINTS", "SOURCE_MODULES"]
