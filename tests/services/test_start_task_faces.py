"""``enhanceFace`` is refused when no face model is installed, never ignored."""

from dataclasses import replace

import pytest
from sqlalchemy import select

from support.tasks import queued_task, uploaded
from tests.engine.faces import nets
from upscayl_cloud.db.tables import accounts, tasks
from upscayl_cloud.engine import faces
from upscayl_cloud.services import tasks as task_service
from upscayl_cloud.services.errors import FaceEnhancementUnavailableError
from upscayl_cloud.services.tasks import TaskOptions


def _credits(ctx, who) -> int:
    with ctx.db.connect() as conn:
        return conn.execute(
            select(accounts.c.credits).where(accounts.c.id == who.account_id)
        ).scalar_one()


def test_refused_with_a_clear_code_and_nothing_charged(ctx, principal):
    name = uploaded(ctx, principal)
    before = _credits(ctx, principal)
    with pytest.raises(FaceEnhancementUnavailableError) as caught:
        task_service.start_task(
            ctx, principal, TaskOptions(enhance_face=True), [{"fileName": name}]
        )
    assert caught.value.code == "FACE_ENHANCEMENT_UNAVAILABLE"
    assert caught.value.status_code == 400
    assert "upscayl-cloud models add" in caught.value.public_message
    assert _credits(ctx, principal) == before


def test_accepted_once_a_model_is_installed(ctx, principal, tmp_path):
    faces.add(faces.models_dir(ctx.settings.data_dir), nets.invert(tmp_path / "invert.onnx"))
    task_id = queued_task(ctx, principal, enhance_face=True)
    with ctx.db.connect() as conn:
        row = conn.execute(select(tasks.c.enhance_face).where(tasks.c.id == task_id)).one()
    assert row.enhance_face


def test_refused_when_the_configured_model_is_not_installed(ctx, principal, tmp_path):
    """``UPSCAYL_FACE_MODEL`` names a model the folder lacks: every worker
    would refuse it, so start-task must too, before charging anything."""
    ctx = replace(ctx, settings=ctx.settings.model_copy(update={"face_model": "gfpgan-1.4"}))
    faces.add(faces.models_dir(ctx.settings.data_dir), nets.invert(tmp_path / "invert.onnx"))
    name = uploaded(ctx, principal)
    before = _credits(ctx, principal)
    with pytest.raises(FaceEnhancementUnavailableError) as caught:
        task_service.start_task(
            ctx, principal, TaskOptions(enhance_face=True), [{"fileName": name}]
        )
    assert "'gfpgan-1.4' is not installed" in caught.value.public_message
    assert "models add PATH --name gfpgan-1.4" in caught.value.public_message
    assert _credits(ctx, principal) == before
