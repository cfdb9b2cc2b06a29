"""UUIDv7 ids: strictly increasing in a process, and their timestamps stay on the clock."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
import uuid

from allot.kernel.ids import new_id


def _millis(value: uuid.UUID) -> int:
    return value.int >> 80


def test_ids_are_version_7_rfc_variant_and_strictly_increasing_in_a_burst():
    ids = [new_id() for _ in range(50_000)]  # far more than one per millisecond
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert len(set(ids)) == len(ids)


def test_a_burst_does_not_push_timestamps_ahead_of_the_clock():
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(100_000)]
    after = time.time_ns() // 1_000_000
    assert before <= _millis(ids[0]) <= _millis(ids[-1]) <= after


def test_ids_of_another_process_made_later_sort_after_a_burst_here():
    burst = [new_id() for _ in range(100_000)]
    time.sleep(0.002)
    code = "from allot.kernel.ids import new_id; print(new_id())"
    later = uuid.UUID(subprocess.check_output([sys.executable, "-c", code], text=True).strip())
    assert later > burst[-1]
