"""deploy/flowerconfig.py: no start without FLOWER_BASIC_AUTH; options and logs from the env."""

from __future__ import annotations

import logging
import runpy
from typing import Any

import pytest

from tests.operate.conftest import ROOT
from worker.logs import HANDLER_NAME

CONF = ROOT / "deploy" / "flowerconfig.py"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> pytest.MonkeyPatch:
    """A clean environment for the config file: no .env, no Flower variables."""
    monkeypatch.chdir(tmp_path)
    for var in ("FLOWER_BASIC_AUTH", "FLOWER_PORT", "LOG_FORMAT", "LOG_LEVEL"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "value", ["", "justauser", "ops:pw,broken", "admin:", ":justapassword", "ops:pw, admin: "]
)
def test_refuses_to_start_without_user_password(env: pytest.MonkeyPatch, value: str) -> None:
    """Without a user:password list the config file exits with one line naming the variable."""
    env.setenv("FLOWER_BASIC_AUTH", value)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(CONF))
    message = str(exit_info.value.code)
    assert message.startswith("leadlex-sync: FLOWER_BASIC_AUTH")
    assert "justauser" not in message


def test_sets_flower_options_from_the_environment(env: pytest.MonkeyPatch) -> None:
    """basic_auth, port and tornado's logging option come from FLOWER_* and LOG_LEVEL."""
    env.setenv("FLOWER_BASIC_AUTH", "ops:pw-1, admin:pw-2")
    env.setenv("FLOWER_PORT", "5601")
    env.setenv("LOG_LEVEL", "WARNING")
    namespace = runpy.run_path(str(CONF))
    assert namespace["basic_auth"] == ["ops:pw-1", "admin:pw-2"]
    assert namespace["port"] == 5601
    assert namespace["logging"] == "warning"
    root = logging.getLogger()
    assert [h.get_name() for h in root.handlers if h.get_name() == HANDLER_NAME] == [HANDLER_NAME]
    assert root.level == logging.WARNING
