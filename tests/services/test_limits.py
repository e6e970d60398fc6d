from __future__ import annotations

import pytest

from support.images import png_header_only
from support.tasks import uploaded
from upscayl_cloud.engine.options import ImageLimits
from upscayl_cloud.services import keys, tasks
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.errors import BadRequestError
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.limits import output_problem
from upscayl_cloud.services.tasks import TaskOptions

LIMITS = ImageLimits()


@pytest.mark.parametrize(
    ("size", "scale", "fmt", "text"),
    [
        ((8000, 8000), 2, "png", "exceeds the limit of 50000000"),
        ((40000, 10), 2, "png", "longest accepted edge"),
        ((7000, 7000), 8, "png", "choose a smaller scale"),
        ((3000, 3000), 4, "webp", "WebP limit"),
        ((5000, 100), 4, "webp", "cannot store an edge"),
        ((9000, 100), 8, "jpg", "cannot store an edge"),
    ],
)
def test_problems(size: tuple[int, int], scale: int, fmt: str, text: str) -> None:
    problem = output_problem(*size, scale, fmt, LIMITS)
    assert problem is not None and text in problem


def test_within_limits() -> None:
    assert output_problem(4000, 3000, 4, "jpg", LIMITS) is None
    assert output_problem(5000, 100, 2, "webp", LIMITS) is None


def test_start_task_refuses_an_impossible_output_before_charging(
    ctx: Context, principal: Principal
) -> None:
    name = uploaded(ctx, principal, png_header_only(5000, 100))
    options = TaskOptions(scale="4", save_image_as="webp")
    with pytest.raises(BadRequestError, match="cannot store an edge"):
        tasks.start_task(ctx, principal, options, [{"fileName": name}])
    assert keys.account_credits(ctx, principal.account_id) == 10
    tasks.start_task(ctx, principal, TaskOptions(scale="4"), [{"fileName": name}])
