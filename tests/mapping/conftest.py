"""Fixtures for the pure mapping tests."""

from __future__ import annotations

import pytest

from worker.mapping import MappingConfig, default_mapping


@pytest.fixture(scope="session")
def cfg() -> MappingConfig:
    """The built-in mapping with the US as default phone region."""
    return default_mapping("US")
