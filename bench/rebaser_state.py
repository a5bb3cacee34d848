#!/usr/bin/env python3
"""Where the rebaser should run on AWS: a long-lived process that holds each group's exit
state in memory, or a Lambda per link (an SQS FIFO event source mapping) that must read the
state before its link and write it after. Measures, on real 720p chunks (Big Buck Bunny from
samples/, ExCamera[6,x], cq 20), the serial step of one link when

1. the state is held in memory (the container rebaser),
2. the state is read from the store and deserialized first (what a Lambda per link, or a
   process taking a group over, pays), and the exit state serialized and written after,
3. no state is stored: decoded from the group's final chunks (a process that takes a group
   over without stored states).

    python bench/rebaser_state.py [--chunks 6] [--repeat 5] [--json]

Reading and writing go to a local directory here; on S3 each adds a request's latency and the
transfer of the state's bytes (printed), which this machine cannot measure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared.pipeline import stages  # noqa: E402
from shared.pipeline.store import LocalStore  # noqa: E402
from shared.pipeline.vpx import EncodeSettings  # noqa: E402


def prepare(store: LocalStore, chunks: int) -> None:
    settings = EncodeSettings(cq_level=20)
    source = REPO / "samples" / "bigbuckbunny-720p.mp4"
    stages.split(store, "job", source, 6, 16)
    for i in range(chunks):
        stages.encode_chunk_vpx(store, "job", i, settings)
        stages.decode_exit_state(store, "job", i)
        if i:
            stages.rebase_first(store, "job", i)


def remove_final(store: LocalStore, index: int) -> None:
    for name in ("final.ivf", "final.state"):
        store.path_for(stages.chunk_key("job", index, name)).unlink(missing_ok=True)


def timed_link(store: LocalStore, index: int, *, held: bool, stored: bool) -> dict[str, float]:
    """One run of link `index`, its predecessors final; returns the serial step's parts."""
    key = stages.chunk_key("job", index - 1, "final.state")
    plan = stages.load_plan(store, "job")
    state = stages.final_state(store, plan, index - 1)
    stages.HELD_STATES.clear()
    if held:
        stages.HELD_STATES.keep(store, key, state)
    load = 0.0
    if stored:
        store.put(key, state.to_bytes(compress=stages.STATE_COMPRESSION))
    else:
        store.path_for(key).unlink(missing_ok=True)
    remove_final(store, index)
    times = stages.rebase_serial(store, "job", index)
    if stored and not held:
        began = time.perf_counter()
        stages.final_state(store, plan, index - 1)  # what the link's own read cost
        load = time.perf_counter() - began
    began = time.perf_counter()
    blob = state.to_bytes(compress=stages.STATE_COMPRESSION)
    store.put(stages.chunk_key("job", index, "spare.state"), blob)
    write = time.perf_counter() - began
    return {"critical": times.critical, "load": load, "write": write, "bytes": len(blob)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="excamera-rebaser-") as directory:
        store = LocalStore(directory, durable=False)
        prepare(store, args.chunks)
        for i in range(args.chunks):  # make every link final once
            stages.rebase_serial(store, "job", i)
        last = args.chunks - 1
        runs = {"held": [], "stored": [], "decoded": []}
        for _ in range(args.repeat):
            runs["held"].append(timed_link(store, last, held=True, stored=False))
            runs["stored"].append(timed_link(store, last, held=False, stored=True))
            runs["decoded"].append(timed_link(store, last, held=False, stored=False))
    median = {name: {part: statistics.median(r[part] for r in rows) for part in rows[0]}
              for name, rows in runs.items()}
    held = median["held"]["critical"]
    result = {
        "link_position": last,
        "state_bytes": int(median["held"]["bytes"]),
        "held_ms": round(1000 * held, 1),
        "stored_ms": round(1000 * median["stored"]["critical"], 1),
        "stored_read_ms": round(1000 * median["stored"]["load"], 1),
        "state_write_ms": round(1000 * median["stored"]["write"], 1),
        "decoded_ms": round(1000 * median["decoded"]["critical"], 1),
    }
    result["stored_over_held"] = round(
        (median["stored"]["critical"] + median["stored"]["write"]) / held, 2)
    result["decoded_over_held"] = round(median["decoded"]["critical"] / held, 2)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    size = result["state_bytes"] / 1e6
    print(f"720p link at position {last} of its group, serial step (median of {args.repeat}):")
    print(f"  state held in memory            {result['held_ms']:7.1f} ms")
    print(f"  state read from the store first {result['stored_ms']:7.1f} ms  (of which reading "
          f"{result['stored_read_ms']:.1f}), plus {result['state_write_ms']:.1f} ms to write "
          f"the exit state: {result['stored_over_held']:.2f}x")
    print(f"  state decoded from the group    {result['decoded_ms']:7.1f} ms: "
          f"{result['decoded_over_held']:.2f}x")
    print(f"  a state is {size:.1f} MB: on S3 each read and write adds a request's latency and "
          f"{size:.1f} MB of transfer (x7.75 at 4K)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
