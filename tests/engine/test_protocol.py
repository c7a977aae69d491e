"""The wire messages of issue 14: plain data, and where a result's timelapse files are."""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict

import pytest

from engine import protocol


@pytest.mark.parametrize(
    ("result", "webp", "mp4"),
    [
        (
            "/data/results/j1.png",
            "/data/results/j1.timelapse.webp",
            "/data/results/j1.timelapse.mp4",
        ),
        ("results/a.b/j-2.png", "results/a.b/j-2.timelapse.webp", "results/a.b/j-2.timelapse.mp4"),
        ("plain", "plain.timelapse.webp", "plain.timelapse.mp4"),
    ],
)
def test_a_results_timelapse_lies_beside_it(result: str, webp: str, mp4: str) -> None:
    assert protocol.timelapse_paths(result) == protocol.TimelapsePaths(webp=webp, mp4=mp4)


def test_the_new_messages_are_plain_data() -> None:
    job = protocol.PaintJob(
        job_id="j1",
        photo_path="p.png",
        painting_path="a.png",
        result_path="r.png",
        options=protocol.PaintOptions(blend=30),
        painting2_path="b.png",
        timelapse=True,
    )
    done = protocol.JobDone("j1", "r.png", 64, 48, 1.0, 20, 61440, "r.timelapse.webp", None)
    messages = [job, done, protocol.PinStyle("a.png", "draft"), protocol.UnpinStyle("a.png")]
    for message in messages:
        assert pickle.loads(pickle.dumps(message)) == message
        json.dumps(asdict(message))  # nothing but plain values
    # Options stored before blends existed still load, with the default blend.
    stored = asdict(protocol.PaintOptions(strength=7))
    del stored["blend"]
    assert protocol.PaintOptions(**stored).validate().blend == protocol.DEFAULT_BLEND == 50
