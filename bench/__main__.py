"""``python -m bench`` (``make bench``): run every benchmark module in turn.

Each module in :data:`BENCHMARKS` has ``main(argv: list[str] | None) -> int`` and ignores flags it
does not know, so ``python -m bench --quick --device cuda`` reaches all of them. A listed module
that is not there yet is skipped with a note.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS: list[str] = [
    "bench.engine_bench",
    "bench.speed_bench",
    "bench.timelapse_bench",
    "bench.service_bench",
    "bench.batch_bench",
    "bench.admission_bench",
    "bench.purge_bench",
    "bench.scale_bench",
]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    status = 0
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            print(f"({name} not present, skipped)")
            continue
        print(f"\n#### {name}")
        status = max(status, int(module.main(args) or 0))
    return status


if __name__ == "__main__":
    sys.exit(main())
