"""The speed model's passes and ETAs over passes, on their own (the service's tests cover them
through the queue)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from bot import batching
from bot.eta import SpeedModel, etas
from bot.store import Store


def test_etas_count_a_pass_once_and_free_its_device_when_its_last_job_ends() -> None:
    def pass_seconds(works: Sequence[int]) -> float:
        return {(100,): 1.0, (100, 100): 1.5}[tuple(works)]

    result = etas(
        [[("a", 100), ("b", 100)], [("c", 100)]],
        [[("r1", 2.0), ("r2", 3.0)]],
        capacity=1,
        pass_seconds=pass_seconds,
    )
    assert result == {"r1": 2.0, "r2": 3.0, "a": 4.5, "b": 4.5, "c": 5.5}
    # Two devices: the second is free at once and takes the first waiting pass, then c (free
    # again at 1.5, before r1's ends at 2.0).
    two = etas(
        [[("a", 100), ("b", 100)], [("c", 100)]],
        [[("r1", 2.0)]],
        capacity=2,
        pass_seconds=pass_seconds,
    )
    assert two == {"r1": 2.0, "a": 1.5, "b": 1.5, "c": 2.5}


def test_a_pass_size_is_learned_kept_and_never_quicker_than_its_largest_job(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "atelier.sqlite3")
    speed = SpeedModel(store, lambda: "gpu")
    speed.learn(1000, 1.0)  # alone: 1 ms per work
    assert speed.batch_factor(1) == 1.0
    assert speed.batch_factor(3) == batching.default_factor(3)  # not measured yet
    speed.learn_batch(3, 1000, 1.8)  # three jobs in 1.8 times the largest one's time alone
    assert speed.batch_factor(3) == pytest.approx(1.8)
    assert speed.pass_seconds([400, 1000, 700]) == pytest.approx(1.8)
    assert speed.seconds_per_work == pytest.approx(1e-3)  # a pass does not teach the speed alone

    again = SpeedModel(store, lambda: "gpu")  # after a restart
    again.load()
    assert again.batch_factor(3) == pytest.approx(1.8)
    again.learn_batch(2, 1000, 0.5)  # a measurement below one job's time alone
    assert again.batch_factor(2) == 1.0
    store.close()
