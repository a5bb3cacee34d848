"""What tuning the codec's choices for SSIM costs in speed (`tune="ssim"` against "psnr").

    python bench/ssim_tuning.py [--repeat 7]

On Big Buck Bunny 720p (bench/.cache/excamera-bbb-96.y4m, made by bench/excamera.py): the
first picture as our key frame, then (1) the second picture encoded as an interframe against
it (the encode of a chunk-start frame in stage 4) and (2) libvpx's second frame of the clip
rebased onto it (one frame of a serial link), each timed best of --repeat, with both tunings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode import CACHE, REPO, BenchError, require_tool  # noqa: E402
from shared.codec.decoder import decode_record  # noqa: E402
from shared.codec.encoder import rebase_record  # noqa: E402

from shared.codec import DecoderState, decode, encode, encode_keyframe  # noqa: E402
from shared.codec.y4m import Y4mReader  # noqa: E402
from shared.pipeline.mux import read_ivf_frames  # noqa: E402
from shared.pipeline.vpx import MAX_LAG_IN_FRAMES, run_vpxenc  # noqa: E402

SOURCE = CACHE / "excamera-bbb-96.y4m"


def best_of(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--cq", type=int, default=20)
    args = parser.parse_args(argv)
    if not SOURCE.exists():
        raise BenchError(f"{SOURCE.relative_to(REPO)} missing: run bench/excamera.py first")
    with Y4mReader(SOURCE) as reader:
        pictures = [next(reader), next(reader)]
    with tempfile.TemporaryDirectory() as work:
        two = Path(work) / "two.y4m"
        data = SOURCE.read_bytes()
        header, _, rest = data.partition(b"\n")
        frame_size = len(rest) // 96
        two.write_bytes(header + b"\n" + rest[: 2 * frame_size])
        libvpx = read_ivf_frames(
            run_vpxenc(require_tool("vpxenc"), args.cq, MAX_LAG_IN_FRAMES, two, Path(work))
        )
    libvpx_state, _ = decode(DecoderState.initial(), libvpx[0])
    shown = [frame for frame in libvpx[1:] if frame[0] & 0x10][0]
    _, _, record = decode_record(libvpx_state, shown)
    key = encode_keyframe(pictures[0], 20)
    state, _ = decode(DecoderState.initial(), key)
    print(f"Big Buck Bunny 1280x720, best of {args.repeat} (ms):")
    print("| tuning | encode interframe (q 20) | rebase a libvpx frame |")
    print("|---|---:|---:|")
    for tune in ("psnr", "ssim"):
        coded = best_of(args.repeat, lambda t=tune: encode(state, pictures[1], 20, tune=t))
        moved = best_of(args.repeat, lambda t=tune: rebase_record(state, pictures[1], record,
                                                                 tune=t))
        print(f"| {tune} | {1000 * coded:.1f} | {1000 * moved:.1f} |")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench/ssim_tuning.py: {exc}", file=sys.stderr)
        sys.exit(2)
