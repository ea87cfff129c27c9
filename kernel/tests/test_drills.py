"""keel.testing.drills: the crash-drill helper that store tests (ours and third parties') share."""

from __future__ import annotations

import sys

import pytest

from keel.testing.drills import kill_after_acks

COUNTER = (
    "import sys, time\nfor i in range(int(sys.argv[1])):\n    print(i, i * 2, flush=True)\n    time.sleep(0.001)\n"
)


def test_kills_after_the_count_and_returns_the_integers() -> None:
    acked = kill_after_acks([sys.executable, "-c", COUNTER, "100000"], kill_after=50)
    assert 50 <= len(acked) < 100000
    assert acked[:3] == [(0, 0), (1, 2), (2, 4)]
    assert all(b == 2 * a for a, b in acked)


def test_a_writer_that_ends_first_tested_nothing() -> None:
    with pytest.raises(AssertionError, match="ended before it was killed"):
        kill_after_acks([sys.executable, "-c", COUNTER, "5"], kill_after=50)
