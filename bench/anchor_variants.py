"""Variants of anchored chunks (`--start-frames anchor`), measured outside the pipeline.

Usage: python bench/anchor_variants.py Y4M SINGLE_PREFIX [JSON_OPTIONS]
  e.g. python bench/anchor_variants.py bench/.cache/excamera-sintel-all.y4m \
       excamera-sintel-all '{"span": 1, "approx": true, "revisit_h": true, "revisit_first": true}'

Needs the single streams that `bench/excamera.py` caches in bench/.cache/ (run it once first).
Chunks of 6 after a first chunk kept as libvpx made it; every `span` chunks share one anchor
(the picture `anchor_at` of the way into them), coded as a hidden frame at `weight` of its key
frame's quantizer. Without `approx`, the anchor and the first frame are encoded against the
true state; with it, against libvpx's exit state of the chunk before (stage 4), then rebased,
or decided again (`revisit_h`, `revisit_first`) or encoded (`exact_h`, `exact_first`) in the
chain. `hidden_target: "decoded"` rebases the anchor towards its approximate decode instead of
the source picture. `rounds: R` (R >= 2, with `approx`) decides the anchor and the first
frame again R-1 times in parallel before the chain, round j against round j-1's exit state of
the chunk before (an iteration towards the chain's states; measured, not shipped). Prints
BD-rates against the single stream (cq 10/20/30/40); the scene-cut clip is run as its three
shots. The pipeline's mode is the last example's settings.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from shared.codec.decoder import decode_record
from shared.codec.encoder import encode, rebase_record, revisit_record
from shared.codec.frame_writer import serialize

from shared import libvpx as binding
from shared.codec import DecoderState, decode, metrics
from shared.codec.y4m import Y4mReader
from shared.pipeline.mux import read_ivf_frames


def libvpx_chunk(pictures, w, h, fps, cq):
    packets = binding.encode_two_pass_packets(pictures, w, h, fps, cq_level=cq, lag_in_frames=25)
    return [bytes(p.data) for p in packets]


def records_of(frames):
    state = DecoderState.initial()
    out = []
    for f in frames:
        state, _, r = decode_record(state, f)
        out.append(r)
    return out, state


def quality(frames, src):
    state = DecoderState.initial()
    ssims = []
    sse = 0
    samples = 0
    k = 0
    for f in frames:
        state, img = decode(state, f)
        if img is None:
            continue
        ssims.append(metrics.ssim(img, src[k]))
        for a, b in zip(img.planes, src[k].planes, strict=False):
            sse += metrics.sse(a, b)
            samples += a.size
        k += 1
    assert k == len(src)
    return metrics.ssim_db(float(np.mean(ssims))), metrics.psnr_from_sse(sse, samples)


def run(
    src,
    w,
    h,
    fps,
    cq,
    n=6,
    span=3,
    weight=0.8,
    first="encode",
    anchor_at=0.5,
    verbose=False,
    approx=False,
    lam=1.0,
    flam=1.0,
    exact_h=False,
    exact_first=False,
    hidden_target="source",
    revisit_h=False,
    revisit_first=False,
    rounds=1,
):
    out = []
    chunks = [list(range(i, min(i + n, len(src)))) for i in range(0, len(src), n)]
    c0 = libvpx_chunk([src[i] for i in chunks[0]], w, h, fps, cq)
    out += c0
    _, state = records_of(c0)
    vpx_exit = state
    round_exits = [state] * max(0, rounds - 1)  # the chunk before's exit states, by round
    k = 1
    while k < len(chunks):
        members = chunks[k : k + span]
        pics = [i for c in members for i in c]
        a = pics[min(len(pics) - 1, int(anchor_at * len(pics)))]
        hidden_q = None
        for c in members:
            frames = libvpx_chunk([src[a]] + [src[i] for i in c], w, h, fps, cq)
            recs, next_vpx_exit = records_of(frames)
            key_q = recs[0].q_index
            inter_q = recs[1].q_index
            if approx:
                # stage 4: against the approximate state
                ap = vpx_exit
                prov = []
                if hidden_q is None:
                    hidden_q = max(0, min(127, round(weight * key_q + (1 - weight) * inter_q)))
                    hr, ap = encode(
                        ap,
                        src[a],
                        hidden_q,
                        hidden=True,
                        with_state=True,
                        as_record=True,
                        lambda_scale=lam,
                    )
                    prov.append((hr, src[a] if hidden_target == "source" else None))
                fr, ap = encode(
                    ap,
                    src[c[0]],
                    recs[1].q_index,
                    with_state=True,
                    as_record=True,
                    lambda_scale=flam,
                )
                prov.append((fr, src[c[0]]))
                if rounds >= 2:
                    # round j decides the chunk start again against round j-1's exit state of
                    # the chunk before (round 1: stage 4, against libvpx's)
                    def rest_rebased(st, recs=recs, c=c):
                        for r, i in zip(recs[2:], c[1:], strict=False):
                            _, st = rebase_record(st, src[i], r, with_state=True)
                        return st

                    exits = [rest_rebased(ap)]
                    for j in range(2, rounds + 1):
                        st = round_exits[j - 2]
                        redone = []
                        for r, target in prov:
                            r2, st = revisit_record(st, target, r, with_state=True, as_record=True)
                            redone.append((r2, target))
                        prov = redone
                        if j < rounds:
                            exits.append(rest_rebased(st))
                    round_exits = exits
                prov += list(zip(recs[2:], [src[i] for i in c[1:]], strict=False))
                for j, (r, target) in enumerate(prov):
                    if target is None:
                        from shared.codec.decoder import decode_record as _dr

                        target = _dr(vpx_exit, serialize(r))[2].image
                    if r.show_frame == 0 and revisit_h or j == len(prov) - len(c) and revisit_first:
                        f, state = revisit_record(state, target, r, with_state=True)
                    elif r.show_frame == 0 and exact_h:
                        f, state = encode(state, target, r.q_index, hidden=True, with_state=True)
                    elif j == len(prov) - len(c) and exact_first:
                        f, state = encode(state, target, r.q_index, with_state=True)
                    else:
                        f, state = rebase_record(state, target, r, with_state=True)
                    out.append(f)
                vpx_exit = next_vpx_exit
                continue
            if hidden_q is None:
                hidden_q = max(0, min(127, round(weight * key_q + (1 - weight) * inter_q)))
                t = time.perf_counter()
                hf, state = encode(state, src[a], hidden_q, hidden=True, with_state=True)
                if verbose:
                    print(f"anchor p{a} q{hidden_q} {len(hf)} B {time.perf_counter() - t:.2f}s")
                out.append(hf)
            for j, (r, i) in enumerate(zip(recs[1:], c, strict=False)):
                if j == 0 and first == "encode":
                    f, state = encode(state, src[i], r.q_index, with_state=True)
                else:
                    f, state = rebase_record(state, src[i], r, with_state=True)
                out.append(f)
            vpx_exit = next_vpx_exit
        k += span
    return out


def load(path):
    with Y4mReader(path) as r:
        pics = list(r)
        hd = r.header
    return pics, hd.width, hd.height, hd.fps


if __name__ == "__main__":
    from excamera import bd_rate

    path = sys.argv[1]
    single = sys.argv[2]  # glob prefix for single streams
    opts = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    src, w, h, fps = load(path)
    def rate(frames):
        return sum(map(len, frames)) * 8 * fps[0] / fps[1] / len(src) / 1000
    anchor_s, anchor_p, test_s, test_p = [], [], [], []
    for cq in (10, 20, 30, 40):
        sp = sorted(
            (Path(__file__).resolve().parent / ".cache").glob(f"single-{single}-cq{cq}-*.ivf")
        )[0]
        sf = read_ivf_frames(sp.read_bytes())
        s_ssim, s_psnr = quality(sf, src)
        segs = opts.pop("segments", None) if "segments" in opts else None
        if segs is None and "cuts" in single:
            segs = [(0, 40), (40, 64), (64, 96)]
        if segs:
            frames = []
            for a0, b0 in segs:
                frames += run(src[a0:b0], w, h, fps, cq, **opts)
        else:
            frames = run(src, w, h, fps, cq, verbose=cq == 20, **opts)
        e_ssim, e_psnr = quality(frames, src)
        print(
            f"cq{cq}: single {rate(sf):.0f} kb/s {s_ssim:.3f} {s_psnr:.2f} | "
            f"anchored {rate(frames):.0f} {e_ssim:.3f} {e_psnr:.2f}",
            flush=True,
        )
        anchor_s.append((rate(sf), s_ssim))
        anchor_p.append((rate(sf), s_psnr))
        test_s.append((rate(frames), e_ssim))
        test_p.append((rate(frames), e_psnr))
    print(
        opts,
        f"BD SSIM {bd_rate(anchor_s, test_s)[0]:+.1f}%",
        f"PSNR {bd_rate(anchor_p, test_p)[0]:+.1f}%",
    )
