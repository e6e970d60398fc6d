from __future__ import annotations

from upscayl_cloud.engine.catalog import MODELS
from upscayl_cloud.services.tasks import MODEL_NAMES


def test_every_spec_model_has_an_engine_pipeline() -> None:
    assert set(MODEL_NAMES) == set(MODELS)
