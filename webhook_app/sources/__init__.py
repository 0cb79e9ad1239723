"""One module per sender, each a `Source` (data) and a blueprint.

Adding a CRM = one module here (plus a mapping module in the worker and a payload folder
in tests/payloads), and one line in BLUEPRINTS.
"""

from __future__ import annotations

from flask import Blueprint

from webhook_app.sources import generic, hubspot, salesforce

BLUEPRINTS: tuple[Blueprint, ...] = (hubspot.blueprint, salesforce.blueprint, generic.blueprint)

__all__ = ["BLUEPRINTS"]
