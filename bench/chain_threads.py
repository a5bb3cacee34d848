"""Links of the serial chain on 1, 2, ... threads (`EXCAMERA_CHAIN_THREADS`), in process.

    python bench/chain_threads.py CLIP.y4m [--start-frames MODE] [--threads 1,2,3] [--reps 9]

Encodes CLIP with `excamera encode --keep-work` (ExCamera[6,16]), then times each link's
serial part (`chunk_rebase.rebase_records` from the true incoming state) best of --reps for
every thread count, alternating, and checks that every count writes the same frames and exit
state. Prints each link's time and its ratio to one thread measured in the same run. Run it on
an otherwise idle machine: the wavefront needs the cores to itself.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from shared.pipeline import stages  # noqa: E402
from shared.pipeline.mux import read_ivf_frames  # noqa: E402
from shared.pipeline.store import LocalStore  # noqa: E402


def time_link(store: LocalStore, job: str, index: int, threads: int, reps: int
              ) -> tuple[float, bytes]:
    """Best time of a link's serial part, and its frames and exit state as bytes."""
    plan = stages.load_plan(store, job)
    rebaser = stages.load_rebase()
    key = stages.chunk_key
    context = key(job, index, "provisional.context")
    original = stages._load_state(
        store, context if store.exists(context) else key(job, index - 1, "vpx.state"))
    records = rebaser.parse(read_ivf_frames(store.get(key(job, index, "provisional.ivf"))),
                            original)
    sources = stages._source_images(store, job, index)
    incoming = stages.final_state(store, plan, index - 1)
    anchor = stages._anchor_picture(sources) if plan.anchored(index) else None
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        coded, exit_state = rebaser.rebase(
            incoming, records, sources, revisit_start=plan.start_frames != "rebase",
            anchor_image=anchor, threads=threads)
        best = min(best, time.perf_counter() - started)
    return best, b"".join(rebaser.write(coded)) + exit_state.to_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--start-frames", default="rebase", choices=stages.START_FRAME_MODES)
    parser.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2,4")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--chunks", default="3,5,9,13", help="links to time (chunk indices)")
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    chunks = [int(c) for c in args.chunks.split(",")]
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(
            [sys.executable, "-m", "shared.cli", "encode", str(args.clip), "-o",
             str(Path(work) / "out.ivf"), "--keep-work", str(Path(work) / "kept"),
             "--start-frames", args.start_frames],
            check=True, stdout=subprocess.DEVNULL,
            env={**os.environ, stages.CHAIN_THREADS_ENV: "1"})
        store = LocalStore(Path(work) / "kept")
        (job,) = [p.name for p in (Path(work) / "kept" / "jobs").iterdir()]
        print(f"{args.clip.name}, --start-frames {args.start_frames}, {os.cpu_count()} cores; "
              f"link's serial part, best of {args.reps} (ms):\n")
        print("| chunk | " + " | ".join(f"{t} thread{'s' * (t > 1)}" for t in counts) + " |")
        print("|---:|" + "---:|" * len(counts))
        for index in chunks:
            times: dict[int, float] = {}
            reference = None
            for threads in counts:
                seconds, output = time_link(store, job, index, threads, args.reps)
                reference = reference or output
                if output != reference:
                    raise SystemExit(f"chunk {index}: {threads} threads wrote other bytes")
                times[threads] = seconds
            cells = [f"{times[t] * 1000:.1f} ({times[t] / times[counts[0]]:.2f}x)" for t in counts]
            print(f"| {index} | " + " | ".join(cells) + " |")
    print("\nevery thread count wrote the same frames and exit state")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
