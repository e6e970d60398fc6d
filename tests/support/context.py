"""Building settings and callers for tests on a temporary data directory."""

from __future__ import annotations

from pathlib import Path

from upscayl_cloud.config import Settings
from upscayl_cloud.services import keys
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.keys import Principal

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The contract, as this repository carries it (spec/README.md).
SPEC_PATH = REPO_ROOT / "spec" / "upscayl-cloud-api.yaml"
#: Where the project's workspace keeps the original, beside the repository.
SHARED_SPEC_PATH = (REPO_ROOT / ".." / "shared" / "spec" / "upscayl-cloud-api.yaml").resolve()


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "workers": 0,
        "secret_keys": "test-secret-one",
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def new_principal(ctx: Context, credits: int = 10, name: str = "test") -> tuple[str, Principal]:
    key, info = keys.create_key(ctx, name, credits)
    return key, Principal(account_id=info.account_id, key_id=info.id)
