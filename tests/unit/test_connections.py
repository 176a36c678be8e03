"""The connection cap fits the open-file limit. Each case runs in its own process, because the
function raises the process's soft limit when it can."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import logging, resource, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
from hushscribe.api.connections import connection_limit
print(connection_limit({wanted}), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _probe(soft: int, hard: int, wanted: int) -> tuple[list[int], str]:
    code = PROBE.format(soft=soft, hard=hard, wanted=wanted)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return [int(v) for v in done.stdout.split()], done.stderr


def test_soft_limit_is_raised_when_the_hard_one_allows() -> None:
    (cap, soft), log = _probe(300, 4096, 512)
    assert (cap, soft) == (512, 256 + 2 * 512)
    assert log == ""


def test_cap_is_lowered_below_a_hard_limit_with_a_warning() -> None:
    (cap, soft), log = _probe(300, 300, 512)
    assert (cap, soft) == ((300 - 256) // 2, 300)
    assert "server.max_connections is 512" in log and "serving at most 22" in log
