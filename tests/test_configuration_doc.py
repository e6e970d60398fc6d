"""docs/configuration.md names every setting (and no setting that does not exist)."""

from __future__ import annotations

import re

from support.context import REPO_ROOT
from upscayl_cloud.config import Settings


def test_every_setting_is_documented() -> None:
    text = (REPO_ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`UPSCAYL_([A-Z0-9_]+)`", text))
    expected = {name.upper() for name in Settings.model_fields}
    assert documented == expected
