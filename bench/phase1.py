"""Which phase-1 (libvpx) settings serve ExCamera best: ExCamera[6,16] made from chunks encoded
with each variant of the vpxenc command line, against one fixed anchor, the single libvpx stream
with the original settings.

    python bench/phase1.py [--clips sintel,bbb] [--cq 10,20,30,40] [--variants all|a,b,...]

Variants (changes to shared/pipeline/vpx.py's command line, everything else as there):
  original   2 passes, good, cpu-used 0, cq, --tune=ssim, --auto-alt-ref=1 (the original's)
  no-altref  --auto-alt-ref=0
  psnr       --tune=psnr
  one-pass   --passes=1

For each: BD-rate of the joined ExCamera[6,16] output against the anchor at equal SSIM and at
equal PSNR (vpxdec decodes, libvpx's SSIM), hidden alt-ref frames made per chunk, and phase 1's
mean time per chunk. The stages run one at a time in this process (phase-1 times are for one
vpxenc at a time); everything else is as bench/excamera.py does it. Sintel takes about a
minute per variant, BBB (96 frames of 720p) about five.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import excamera as bx  # noqa: E402

from shared.pipeline import stages, vpx  # noqa: E402
from shared.pipeline.store import LocalStore  # noqa: E402
from shared.pipeline.vpx import EncodeSettings  # noqa: E402

VARIANTS: dict[str, dict[str, str]] = {
    "original": {},
    "no-altref": {"--auto-alt-ref=1": "--auto-alt-ref=0"},
    "psnr": {"--tune=ssim": "--tune=psnr"},
    "one-pass": {"--passes=2": "--passes=1"},
}
N, X = 6, 16
ORIGINAL_COMMAND = vpx.vpxenc_command


def with_changes(changes: dict[str, str]):  # noqa: ANN201
    def command(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return [changes.get(arg, arg) for arg in ORIGINAL_COMMAND(*args, **kwargs)]

    return command


def excamera_point(source: Path, cq: int, vpxenc: str, vpxdec: str, tmp: Path):  # noqa: ANN201
    """ExCamera[6,16] of `source` at `cq` with work under `tmp` (which must be fresh): (quality,
    hidden frames, phase-1 seconds per chunk)."""
    store = LocalStore(tmp / f"work-cq{cq}", durable=False)
    plan = stages.split(store, "job", str(source), N, X)
    # The variants change vpxenc's command line: the in-process binding would ignore them.
    settings = EncodeSettings(cq_level=cq, vpxenc=vpxenc, encoder="vpxenc")
    phase1, hidden = [], 0
    for i in range(plan.chunk_count):
        started = time.perf_counter()
        hidden += stages.encode_chunk_vpx(store, "job", i, settings).hidden
        phase1.append(time.perf_counter() - started)
        if plan.has_successor(i):
            stages.decode_exit_state(store, "job", i)
    for i in range(plan.chunk_count):
        if plan.position(i) >= 1:
            stages.rebase_first(store, "job", i)
    stages.HELD_STATES.clear()
    for i in range(plan.chunk_count):
        stages.rebase_serial(store, "job", i)
    output = tmp / f"excamera-cq{cq}.ivf"
    stages.join(store, "job", plan, output)
    return bx.measure_stream(str(output), str(source), vpxdec), hidden, phase1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="sintel,bbb")
    parser.add_argument("--cq", type=bx.int_list, default=list(bx.DEFAULT_CQ))
    parser.add_argument("--variants", default="all", help=f"all, or some of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants: {', '.join(unknown)}")
    vpxenc, vpxdec = bx.require_tool("vpxenc"), bx.require_tool("vpxdec")
    print("| clip | phase 1 | BD-rate at equal SSIM | at equal PSNR | hidden frames | s/chunk |")
    print("|---|---|---:|---:|---:|---:|")
    for clip_name in args.clips.split(","):
        clip = bx.CLIPS[clip_name]
        source = bx.source_y4m(clip, bx.DEFAULT_SHARED)
        with tempfile.TemporaryDirectory(prefix="excamera-phase1-") as directory:
            tmp = Path(directory)
            anchor = []
            for cq in args.cq:
                single = tmp / f"single-cq{cq}.ivf"
                bx.encode_single(vpxenc, cq, str(source), str(single))
                anchor.append(bx.measure_stream(str(single), str(source), vpxdec))
            for name in names:
                vpx.vpxenc_command = with_changes(VARIANTS[name])
                try:
                    work = tmp / name
                    points = [excamera_point(source, cq, vpxenc, vpxdec, work) for cq in args.cq]
                finally:
                    vpx.vpxenc_command = ORIGINAL_COMMAND
                bd = {}
                for metric in ("ssim_db", "psnr_db"):
                    result = bx.bd_rate(
                        [(q.payload_bytes, getattr(q, metric)) for q in anchor],
                        [(q.payload_bytes, getattr(q, metric)) for q, _, _ in points],
                    )
                    bd[metric] = f"{result[0]:+.1f} %" if result else "n/a"
                hidden = sum(h for _, h, _ in points)
                seconds = [s for _, _, times in points for s in times]
                print(
                    f"| {clip.label} | {name} | {bd['ssim_db']} | {bd['psnr_db']} | {hidden} | "
                    f"{sum(seconds) / len(seconds):.2f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
