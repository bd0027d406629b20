"""PSD diff-mode writes as an activity grows, against add-mode writes of the same points.

A diff-mode write (PSD's default) reports an activity's running total as of ``ts``; the state
subtracts what the activity already recorded in [ts1, ts] (``engine/counters.py``:
``Activity.range_sum``). A live activity's reports cover all its points, which the activity
answers from its kept total. This bench writes one activity's reports, one per second, one
event at a time, at several activity lengths, through both layouts: the packed partition store
the engine runs (``engine/partition_counters.pyx``) and the reference ``UserCounters``:

  * diff: ``(metric, atid, aid, ts, running_total, ts1=start, DIFF)``;
  * add (the baseline, side by side): the same deltas as ``ADD`` events.

Each row gives the microseconds per write, the median of ``--rounds`` rounds; the ratio diff /
add should stay near 1 whatever the activity length (it grew with the length while the points
were summed on every write). Nothing is asserted.

Run::

    .venv/bin/python bench/bench_diff_writes.py            # ~10 s on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.counters import ADD, DIFF, UserCounters  # noqa: E402
from engine.partition_counters import PartitionStores  # noqa: E402

START = 1_704_067_200  # 2024-01-01


def per_write_us(events: list[tuple], packed: bool) -> float:
    apply = PartitionStores(1).user_state(1).apply if packed else UserCounters().apply
    t0 = time.perf_counter()
    for event in events:
        apply((event,))
    return (time.perf_counter() - t0) / len(events) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default="100,1000,3600,10000",
                        help="activity lengths (reports, one per second)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'layout':>10} {'points':>8} {'diff us/write':>14} {'add us/write':>13} {'diff/add':>9}")
    for n in (int(p) for p in args.points.split(",")):
        diff = [("steps", 1, 7, START + i, (i + 1) * 3, START, DIFF) for i in range(n)]
        add = [("steps", 1, 7, START + i, 3, START + i, ADD) for i in range(n)]
        for packed in (True, False):
            d = statistics.median(per_write_us(diff, packed) for _ in range(args.rounds))
            a = statistics.median(per_write_us(add, packed) for _ in range(args.rounds))
            layout = "packed" if packed else "objects"
            print(f"{layout:>10} {n:>8,} {d:>14.2f} {a:>13.2f} {d / a:>8.2f}x")


if __name__ == "__main__":
    main()
