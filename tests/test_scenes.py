"""Scene cuts in the split (`shared.pipeline.scenes`) and variable chunk plans end to end.

The detector is checked on real video from the reference folder: a clip joined from carphone
and Big Buck Bunny (cropped to carphone's 176x144, no resampling) with two hard cuts, and the
unjoined clips, which have none. The joined clip then goes through `excamera encode`: a group,
with a key frame, starts exactly at each cut, and libvpx decodes the output to our pictures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from decoder_support import first_difference, require_decoder, require_tools
from libvpx_oracle import read_ivf, vpxdec_frames
from scene_clip import CUTS, frames_of, joined_clip

from shared import cli
from shared.codec.image import Image
from shared.pipeline import graph, stages
from shared.pipeline.scenes import Chunker, CutDetector, min_chunk_frames
from shared.pipeline.stages import ChunkPlan
from shared.pipeline.store import LocalStore
from shared.pipeline.vpx import EncodeSettings, find_vpxenc, is_key_frame, is_shown

codec = require_decoder()
require_tools()

@pytest.fixture(scope="session")
def joined_y4m(video_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return joined_clip(video_dir, tmp_path_factory.mktemp("joined") / "joined.y4m")


def detect(images: list[Image]) -> list[int]:
    detector = CutDetector()
    decided = [cut for image in images for _, cut in detector.push(image)]
    decided += [cut for _, cut in detector.finish()]
    assert len(decided) == len(images)
    return [number for number, cut in enumerate(decided) if cut]


# --------------------------------------------------------------------------- the detector


def test_detector_finds_the_cuts_of_a_joined_clip(joined_y4m: Path) -> None:
    assert detect(frames_of(joined_y4m, range(10_000))) == list(CUTS)


@pytest.mark.parametrize(
    "clip", ["clips/carphone_pristine.mp4", "clips/bigbuckbunny.mp4", "sintel/chunk1.y4m"]
)
def test_detector_finds_no_cut_in_a_single_shot(video_dir: Path, clip: str) -> None:
    """Whole real clips without cuts: motion, pans, repeated frames, no false cut."""
    assert detect(frames_of(video_dir / clip, range(10_000))) == []


def test_a_flash_is_not_a_cut(video_dir: Path) -> None:
    """A single picture from elsewhere, with the scene resuming after it: no group there."""
    carphone = frames_of(video_dir / "clips" / "carphone_pristine.mp4", range(20))
    bright = Image(np.full_like(carphone[0].y, 235), carphone[0].u, carphone[0].v)
    assert detect(carphone[:10] + [bright] + carphone[10:]) == []


# --------------------------------------------------------------------------- the layout


def layout(count: int, n: int, cuts: tuple[int, ...] = ()) -> tuple[list[int], list[int], list]:
    """(chunk lengths, frames where chunks start at a cut, cuts used) for `count` pictures."""
    chunker = Chunker(n, min_chunk_frames(n))
    picture = Image.blank(16, 16)
    chunks = [c for i in range(count) for c in chunker.push(picture, i in cuts)]
    chunks += chunker.finish()
    assert sum(len(c.images) for c in chunks) == count
    starts = [c.first_frame for c in chunks if c.at_cut]
    return [len(c.images) for c in chunks], starts, chunker.cuts


@pytest.mark.parametrize("n", [1, 2, 3, 6, 7])
@pytest.mark.parametrize("count", [1, 5, 6, 7, 12, 13, 40])
def test_without_cuts_chunks_are_n_then_the_rest(n: int, count: int) -> None:
    expected = [n] * (count // n) + ([count % n] if count % n else [])
    assert layout(count, n) == (expected, [], [])


def test_a_cut_starts_a_chunk_and_chunks_stay_between_the_floor_and_n() -> None:
    assert min_chunk_frames(6) == 3
    # A cut after 40 frames: 6 x 6 and 4, then the next shot from 40.
    assert layout(64, 6, (40,)) == ([6] * 6 + [4] + [6] * 4, [40], [40])
    # 7 or 8 frames since the last chunk when the cut comes: two chunks, neither above n.
    assert layout(19, 6, (13,))[0] == [6, 4, 3, 6]
    assert layout(20, 6, (14,))[0] == [6, 4, 4, 6]
    # Two frames after the start, or after another cut: too close, no group there.
    assert layout(20, 6, (2,)) == ([6, 6, 6, 2], [], [])
    assert layout(30, 6, (10, 12)) == ([6, 4, 6, 6, 6, 2], [10], [10])
    for cuts in [(3,), (9,), (10, 17), (25, 31, 38)]:
        lengths, starts, used = layout(48, 6, cuts)
        assert starts == used == list(cuts)
        assert all(3 <= length <= 6 for length in lengths[:-1]), (cuts, lengths)


# --------------------------------------------------------------------------- the plan


def test_plan_methods_follow_variable_groups() -> None:
    plan = ChunkPlan(
        job="j", source="s", width=16, height=16, fps=(25, 1), frames_per_chunk=6,
        chunks_per_group=3, chunk_frames=(6, 6, 6, 6, 4, 6, 6, 2), group_starts=(0, 3, 5, 6),
        scene_cuts=(28,),
    )  # fmt: skip
    assert plan.group_count == 4
    assert [plan.group_of(i) for i in range(8)] == [0, 0, 0, 1, 1, 2, 3, 3]
    assert [plan.position(i) for i in range(8)] == [0, 1, 2, 0, 1, 0, 0, 1]
    assert [list(plan.group_chunks(g)) for g in range(4)] == [[0, 1, 2], [3, 4], [5], [6, 7]]
    assert [plan.has_successor(i) for i in range(8)] == [1, 1, 0, 1, 0, 0, 1, 0]
    assert [plan.first_frame(i) for i in (0, 5, 7)] == [0, 28, 40]
    assert ChunkPlan.from_json(plan.to_json()) == plan
    for task in graph.tasks(plan):
        inverse = {t for t in graph.tasks(plan) if task in graph.dependencies(plan, t)}
        assert set(graph.dependents(plan, task)) == inverse, task


def test_a_plan_written_before_scene_cuts_still_loads() -> None:
    old = {
        "job": "j", "source": "s", "width": 16, "height": 16, "fps": [25, 1],
        "frames_per_chunk": 2, "chunks_per_group": 2, "chunk_frames": [2, 2, 1], "notices": [],
    }  # fmt: skip
    plan = ChunkPlan.from_json(json.dumps(old).encode())
    assert (plan.group_starts, plan.scene_cuts, plan.lead_in) == ((), (), False)
    assert [plan.position(i) for i in range(3)] == [0, 1, 0]
    assert plan.group_count == 2


def test_split_records_the_cuts(joined_y4m: Path, tmp_path: Path) -> None:
    plan = stages.split(LocalStore(tmp_path / "a"), "j", joined_y4m, 6, 16)
    assert plan.scene_cuts == CUTS
    assert plan.chunk_frames == (6, 4, 4, 6, 4, 6, 6)  # 14 = 6 + 4 + 4; 10 = 6 + 4; 12
    assert plan.group_starts == (0, 3, 5)
    off = stages.split(LocalStore(tmp_path / "b"), "j", joined_y4m, 6, 16, scene_cuts="off")
    assert (off.chunk_frames, off.scene_cuts, off.group_starts) == ((6,) * 6, (), ())
    with pytest.raises(ValueError, match="scene_cuts"):
        stages.split(LocalStore(tmp_path / "c"), "j", joined_y4m, 6, 16, scene_cuts="on")


# --------------------------------------------------------------------------- end to end


def key_frames_at(path: Path) -> list[int]:
    shown, keys = 0, []
    for frame in read_ivf(path).frames:
        if is_key_frame(frame):
            keys.append(shown)
        shown += is_shown(frame)
    return keys


def check_decodes_like_libvpx(path: Path, frames: int) -> None:
    state, ours = codec.DecoderState.initial(), []
    for frame in read_ivf(path).frames:
        state, image = codec.decode(state, frame)
        if image is not None:
            ours.append(image)
    expected = vpxdec_frames(path)
    assert len(ours) == len(expected) == frames
    assert first_difference(expected, ours) is None


def run_encode(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = cli.main(["encode", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_encode_starts_groups_at_cuts(
    capsys: pytest.CaptureFixture[str], joined_y4m: Path, tmp_path: Path
) -> None:
    output = tmp_path / "auto.ivf"
    code, out, err = run_encode(capsys, joined_y4m, "-o", output, "-n", 6, "-x", 16, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["scene_cuts"] == list(CUTS)
    assert (summary["chunks"], summary["groups"], summary["frames"]) == (7, 3, 36)
    assert key_frames_at(output) == [0, *CUTS]
    check_decodes_like_libvpx(output, 36)

    code, out, err = run_encode(capsys, joined_y4m, "-o", tmp_path / "a.ivf", "-n", 6)
    assert code == 0, err
    assert "2 scene cuts, each starting a group: at frames 14, 24" in out


def test_encode_without_scene_cuts(
    capsys: pytest.CaptureFixture[str], joined_y4m: Path, tmp_path: Path
) -> None:
    output = tmp_path / "off.ivf"
    code, out, err = run_encode(
        capsys, joined_y4m, "-o", output, "-n", 6, "-x", 16, "--scene-cuts", "off", "--json"
    )
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["scene_cuts"], summary["chunks"], summary["groups"]) == ([], 6, 1)
    assert key_frames_at(output) == [0]
    check_decodes_like_libvpx(output, 36)
    with pytest.raises(SystemExit) as usage:
        cli.main(["encode", str(joined_y4m), "-o", str(output), "--scene-cuts", "maybe"])
    assert usage.value.code == 2 and "--scene-cuts" in capsys.readouterr().err


def test_lead_in_chunks_decode_like_libvpx(joined_y4m: Path, tmp_path: Path) -> None:
    """Chunks encoded after a lead-in picture (phase 1), the lead-in dropped in stage 4:
    every stage on the real codec, groups at the cuts, the joined output as libvpx sees it."""
    store = LocalStore(tmp_path / "work", durable=False)
    plan = stages.split(store, "j", joined_y4m, 6, 16, lead_in=True)
    assert [plan.has_lead_in(i) for i in range(plan.chunk_count)] == [0, 1, 1, 0, 1, 0, 1]
    settings = EncodeSettings(vpxenc=find_vpxenc())
    stages.HELD_STATES.clear()
    for task in graph.tasks(plan, verify=False):
        if task.stage != "join":
            graph.run_task(store, plan, settings, task)
    encoded = stages.encode_chunk_vpx(store, "j", 1, settings)
    assert encoded.lead_in == 1 and encoded.frames == 5  # the lead-in and the chunk's 4
    output = tmp_path / "lead-in.ivf"
    stages.join(store, "j", plan, output)
    assert key_frames_at(output) == [0, *CUTS]
    check_decodes_like_libvpx(output, 36)
    for g in range(plan.group_count):
        stages.measure_group(store, "j", g)  # exit states as decoded, one key frame a group
