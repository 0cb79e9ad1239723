"""Journal settings: defaults, one clear line naming a bad or missing variable."""

from __future__ import annotations

import pytest

from worker.settings import SettingsError, load_settings


def load(**env: str):
    return load_settings(env, require_leadlex=False, env_file=None)


def test_journal_is_off_by_default_with_hubspots_api_root() -> None:
    """HUBSPOT_JOURNAL defaults to off, the API root to api.hubapi.com, start to latest."""
    settings = load()
    assert settings.hubspot_journal == "off"
    assert settings.hubspot_api_base_url == "https://api.hubapi.com"
    assert settings.hubspot_journal_start == "latest"
    assert settings.hubspot_journal_scope == "global"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HUBSPOT_JOURNAL": "on", "HUBSPOT_CLIENT_SECRET": "s"}, "HUBSPOT_CLIENT_ID"),
        ({"HUBSPOT_JOURNAL": "on", "HUBSPOT_CLIENT_ID": "i"}, "HUBSPOT_CLIENT_SECRET"),
        ({"HUBSPOT_JOURNAL": "sometimes"}, "HUBSPOT_JOURNAL"),
        ({"HUBSPOT_API_BASE_URL": "api.hubapi.com"}, "HUBSPOT_API_BASE_URL"),
        ({"HUBSPOT_JOURNAL_BATCH_SIZE": "500"}, "HUBSPOT_JOURNAL_BATCH_SIZE"),
        ({"HUBSPOT_JOURNAL_START": "yesterday"}, "HUBSPOT_JOURNAL_START"),
    ],
)
def test_bad_or_missing_journal_setting_is_named(env: dict[str, str], named: str) -> None:
    """Each mistake raises SettingsError whose one line starts with the variable's name."""
    with pytest.raises(SettingsError) as err:
        load(**env)
    assert str(err.value).startswith(named)
    assert "\n" not in str(err.value)


def test_secret_never_appears_in_the_error() -> None:
    """A journal configuration error does not echo HUBSPOT_CLIENT_SECRET."""
    with pytest.raises(SettingsError) as err:
        load(HUBSPOT_JOURNAL="on", HUBSPOT_CLIENT_SECRET="very-secret-value-42")
    assert "very-secret-value-42" not in str(err.value)
