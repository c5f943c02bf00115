"""The validation threads run below the priority of the thread that made them (Linux: per thread)."""

from __future__ import annotations

import os

import pytest

from gateway.http.offload import validation_executor


def own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)  # 0: the calling thread


@pytest.mark.parametrize("increment", [0, 3, 19])
def test_validation_threads_run_the_increment_below_their_creator(increment: int) -> None:
    before = own_nice()
    with validation_executor(increment) as pool:
        assert min(19, before + increment) == pool.submit(own_nice).result()
        # applied once per thread, not per task
        assert pool.submit(own_nice).result() == min(19, before + increment)
    assert own_nice() == before  # the creator is left as it was
