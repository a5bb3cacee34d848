"""Phase 1 in process (the libvpx binding, `shared.libvpx`) against the `vpxenc` command: time
per chunk for the same work, and a check that both make the same bytes.

    python bench/libvpx_binding.py [--clip bbb|sintel | --source IN.y4m] [-n 6] [--chunks 16]
                                   [--cq 20] [--rounds 2] [--json]

The clip is cut into chunks of n frames as the pipeline does (stages.split); each chunk is then
encoded one at a time by `shared.pipeline.vpx.encode_chunk` both ways, alternating which goes
first from round to round: in process (read the chunk's Y4M, both passes through the binding,
the IVF in memory) and with vpxenc (a process that reads the Y4M and writes the IVF, read back).
Reported: mean and median seconds per chunk over all rounds, in-process / vpxenc, and how many
chunks came out byte-identical: all of them, unless libvpx's read of heap bytes it never wrote
(shared/libvpx/heap.c) finds there, in vpxenc, a value that changes one of its decisions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import excamera as bx  # noqa: E402

from shared.pipeline import stages, vpx  # noqa: E402
from shared.pipeline.store import LocalStore  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="bbb", choices=sorted(bx.CLIPS))
    parser.add_argument("--source", type=Path, help="a Y4M file instead of --clip")
    parser.add_argument("-n", type=int, default=6, help="frames per chunk")
    parser.add_argument("--chunks", type=int, default=16, help="chunks to encode (the first)")
    parser.add_argument("--cq", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    binding = vpx.load_libvpx()
    if binding is None:
        sys.exit("the libvpx binding (shared.libvpx) is not built: install libvpx-dev, rebuild")
    vpxenc = bx.require_tool("vpxenc")
    source = args.source or bx.source_y4m(bx.CLIPS[args.clip], bx.DEFAULT_SHARED)
    settings = vpx.EncodeSettings(cq_level=args.cq, vpxenc=vpxenc)
    ways = {
        "in process": replace(settings, encoder="libvpx"),
        "vpxenc": replace(settings, encoder="vpxenc"),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    identical = 0
    with tempfile.TemporaryDirectory(prefix="excamera-bench-binding-") as directory:
        tmp = Path(directory)
        store = LocalStore(tmp / "work", durable=False)
        plan = stages.split(store, "job", str(source), args.n)
        count = min(args.chunks, plan.chunk_count)
        for round_ in range(args.rounds):
            order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
            for index in range(count):
                with store.local_file(stages.chunk_key("job", index, "source.y4m")) as chunk:
                    outputs = {}
                    for name in order:
                        started = time.perf_counter()
                        outputs[name] = vpx.encode_chunk(ways[name], args.cq, chunk, tmp)
                        times[name].append(time.perf_counter() - started)
                    if round_ == 0:
                        identical += len(set(outputs.values())) == 1

    result = {
        "source": str(source),
        "size": [plan.width, plan.height],
        "frames_per_chunk": args.n,
        "chunks": count,
        "cq": args.cq,
        "rounds": args.rounds,
        "libvpx": binding.version(),
        "vpxenc": vpx.vpxenc_version(vpxenc),
        "zeroed_heap": binding.ZEROED_HEAP,
        "identical_chunks": identical,
        "seconds_per_chunk": {
            name: {"mean": statistics.mean(t), "median": statistics.median(t), "min": min(t)}
            for name, t in times.items()
        },
    }
    ratio = statistics.mean(times["in process"]) / statistics.mean(times["vpxenc"])
    result["in_process_over_vpxenc"] = ratio
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{source}: {plan.width}x{plan.height}, {count} chunks of {args.n} frames, cq "
          f"{args.cq}, {args.rounds} rounds; libvpx {binding.version()} in process, "
          f"vpxenc: {result['vpxenc']}")
    print("| phase 1 | mean s/chunk | median | min |")
    print("|---|---:|---:|---:|")
    for name, figures in result["seconds_per_chunk"].items():
        print(f"| {name} | {figures['mean']:.3f} | {figures['median']:.3f} | "
              f"{figures['min']:.3f} |")
    saved = statistics.mean(times["vpxenc"]) - statistics.mean(times["in process"])
    print(f"in process / vpxenc: {ratio:.3f} ({saved * 1000:+.1f} ms per chunk saved); "
          f"{identical} of {count} chunks' IVF files identical")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
