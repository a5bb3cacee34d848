"""The frame writer is the exact inverse of the parser: every conformance frame, parsed into a
FrameRecord and written back, gives the very same bytes."""

import pytest
from decoder_support import require_decoder

require_decoder()

from shared.codec.decoder import decode_record  # noqa: E402
from shared.codec.frame_writer import serialize  # noqa: E402

from shared.codec import DecoderState  # noqa: E402
from shared.codec.ivf import IvfReader  # noqa: E402


def _vector_names(vectors_dir):
    return sorted(p.name for p in vectors_dir.glob("*.ivf"))


def test_parse_then_write_is_identity_on_all_vectors(vectors_dir):
    names = _vector_names(vectors_dir)
    assert len(names) == 61
    mismatches = []
    frames = 0
    for name in names:
        state = DecoderState.initial()
        for frame in IvfReader(vectors_dir / name):
            state, _, record = decode_record(state, frame.data)
            frames += 1
            if serialize(record) != frame.data:
                mismatches.append(f"{name} frame {frame.index}")
    assert not mismatches, f"{len(mismatches)} of {frames} frames differ: {mismatches[:10]}"


@pytest.mark.parametrize("name", ["vp80-00-comprehensive-007.ivf", "vp80-04-partitions-1405.ivf"])
def test_record_exposes_decisions(vectors_dir, name):
    state = DecoderState.initial()
    for frame in IvfReader(vectors_dir / name):
        state, _, record = decode_record(state, frame.data)
        blocks = record.macroblocks()
        assert blocks["y_mode"].shape == (record.mb_rows, record.mb_cols)
        if record.key_frame:
            assert (blocks["ref_frame"] == 0).all()
        assert record.header["q_index"] == record.q_index


def test_parsing_without_pictures_gives_the_same_records(vectors_dir):
    from shared.codec.decoder import parse_records

    for name in ("vp80-03-segmentation-1437.ivf", "vp80-04-partitions-1405.ivf",
                 "vp80-00-comprehensive-018.ivf"):
        frames = [frame.data for frame in IvfReader(vectors_dir / name)]
        parsed = parse_records(DecoderState.initial(), frames)
        state = DecoderState.initial()
        for frame, record in zip(frames, parsed, strict=True):
            state, _, decoded = decode_record(state, frame)
            assert serialize(record) == frame == serialize(decoded), name
            assert record.image is None
            for key, value in record.macroblocks().items():
                assert (value == decoded.macroblocks()[key]).all(), (name, key)


def test_token_tallies_give_the_branch_counts_of_walking_every_token(vectors_dir):
    """The encoder counts tokens once by class and derives each tree node's branches (for
    probability updates); that must equal walking every token down the tree."""
    from shared.codec.decoder import parse_records
    from shared.codec.frame_writer import _branch_counts

    compared = 0
    for name in _vector_names(vectors_dir)[::3]:
        frames = [frame.data for frame in IvfReader(vectors_dir / name)]
        for record in parse_records(DecoderState.initial(), frames)[:8]:
            walked = _branch_counts(record, by_class=False)
            assert (_branch_counts(record) == walked).all(), name
            compared += int(walked.sum() > 0)
    assert compared > 50


def test_records_parsed_without_levels_cannot_be_written(vectors_dir):
    from shared.codec.decoder import parse_records

    frames = [frame.data for frame in IvfReader(vectors_dir / "vp80-00-comprehensive-001.ivf")]
    with_levels, without = (parse_records(DecoderState.initial(), frames[:2], levels=flag)
                            for flag in (True, False))
    assert serialize(with_levels[1]) == frames[1]
    with pytest.raises(ValueError, match="no coded levels"):
        serialize(without[1])
    for key, value in without[1].macroblocks().items():
        if key != "skip":  # with levels, an all-empty macroblock also counts as skipped
            assert (value == with_levels[1].macroblocks()[key]).all(), key
