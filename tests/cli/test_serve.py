"""``serve``'s process setup."""

from __future__ import annotations

import subprocess
import sys

# A child process with a soft limit of 64 under a hard limit of 1000 (lowering
# a hard limit needs no privilege, so this runs wherever the test does).
_CHILD = """
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 1000))
from upscayl_cloud.cli.serve import raise_descriptor_limit
print(raise_descriptor_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def test_serve_lifts_the_open_file_limit_to_the_hard_limit() -> None:
    """A soft limit of 64 would refuse the 60th client; serve takes all it may."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True
    ).stdout.split()
    returned, soft, hard = (int(v) for v in out)
    assert returned == soft == hard == 1000
