"""Annex-B parsing (camingest.wire.annexb) on real libx264/libx265 output and hostile input.

What is pinned: NAL unit boundaries after 3- and 4-byte start codes, NAL types, keyframe
detection, parameter-set extraction, and that ParameterSetKeeper turns a keyframe without
SPS/PPS(/VPS) into one a fresh decoder can start from. That last one is the README's promise
"every keyframe carries SPS/PPS (and VPS for H.265)", so it is checked by decoding with FFmpeg.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

import av
import numpy as np
import pytest

from camingest.wire.annexb import (
    H264_IDR,
    H264_PARAMS,
    H265_IRAP,
    H265_PARAMS,
    ParameterSetKeeper,
    is_keyframe,
    nal_type,
    nal_types,
    nal_units,
    parameter_sets,
)
from camingest.wire.output import CodecName

H264, H265 = CodecName.H264, CodecName.H265
SIZE = 64
FRAMES = 7
GOP = 3  # keyframes at 0, 3 and 6; P frames in between
PARAMS = {H264: H264_PARAMS, H265: H265_PARAMS}
SC3, SC4 = b"\x00\x00\x01", b"\x00\x00\x00\x01"


# -- a real stream -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    codec: CodecName
    extradata: bytes
    units: list[bytes]  # one access unit (packet) per input frame, in order
    keyframe: list[bool]  # what the encoder flagged
    luma: list[np.ndarray]  # the Y plane of each input frame


def source_luma(i: int, size: int = SIZE) -> np.ndarray:
    x, y = np.meshgrid(np.arange(size), np.arange(size))
    return ((x * 3 + y * 2 + 9 * i) % 200 + 20).astype(np.uint8)


def encode(
    codec: CodecName, global_header: bool = False, size: int = SIZE, frames: int = FRAMES
) -> Encoded:
    """Encode a few frames the way the worker does (no B-frames, fixed GOP); with
    `global_header` the parameter sets go to extradata instead of the keyframes."""
    name = "libx264" if codec is H264 else "libx265"
    ctx = cast(av.VideoCodecContext, av.CodecContext.create(name, "w"))
    ctx.width = ctx.height = size
    ctx.pix_fmt = "yuv420p"
    ctx.framerate = Fraction(25)
    ctx.time_base = Fraction(1, 25)
    ctx.gop_size = GOP
    ctx.max_b_frames = 0
    if global_header:
        ctx.flags |= av.codec.context.Flags.global_header
    opts = {"preset": "ultrafast", "bf": "0"}
    if codec is H264:
        opts["x264-params"] = "scenecut=0"
    else:
        opts["x265-params"] = "scenecut=0:open-gop=0:log-level=error"
    ctx.options = opts
    ctx.open()
    units: list[bytes] = []
    flags: list[bool] = []
    lumas = []
    for i in range(frames):
        luma = source_luma(i, size)
        lumas.append(luma)
        yuv = np.concatenate([luma, np.full((size // 2, size), 128, np.uint8)])
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = i
        for packet in ctx.encode(frame):
            units.append(bytes(packet))
            flags.append(bool(packet.is_keyframe))
    for packet in ctx.encode(None):
        units.append(bytes(packet))
        flags.append(bool(packet.is_keyframe))
    assert len(units) == frames, "one packet per frame expected without B-frames"
    return Encoded(codec, bytes(ctx.extradata or b""), units, flags, lumas)


@pytest.fixture(scope="module", params=[H264, H265], ids=["h264", "h265"])
def stream(request: pytest.FixtureRequest) -> Encoded:
    """Parameter sets in band, on every keyframe (the encoders' default without global header)."""
    return encode(request.param)


@pytest.fixture(scope="module", params=[H264, H265], ids=["h264", "h265"])
def gh_stream(request: pytest.FixtureRequest) -> Encoded:
    """Parameter sets only in extradata (global header): keyframes lack them."""
    return encode(request.param, global_header=True)


def first_byte_types(data: bytes, codec: CodecName) -> list[int]:
    """NAL types read independently of annexb: the byte after each 00 00 01."""
    out = []
    for m in re.finditer(b"\x00\x00\x01", data):
        b = data[m.end()]
        out.append(b & 0x1F if codec is H264 else (b >> 1) & 0x3F)
    return out


def strip_params(au: bytes, codec: CodecName) -> bytes:
    """The access unit from its first non-parameter-set NAL on (start code included)."""
    for m in re.finditer(b"\x00\x00\x01", au):
        b = au[m.end()]
        t = b & 0x1F if codec is H264 else (b >> 1) & 0x3F
        if t not in PARAMS[codec]:
            start = m.start() - 1 if m.start() > 0 and au[m.start() - 1] == 0 else m.start()
            return au[start:]
    raise AssertionError("no non-parameter-set NAL in the access unit")


def decode(data: bytes, codec: CodecName) -> list[np.ndarray]:
    """Decode an Annex-B byte stream with a fresh FFmpeg decoder; the Y planes it produced.
    Undecodable data yields fewer (or no) pictures rather than an exception."""
    ctx = av.CodecContext.create("h264" if codec is H264 else "hevc", "r")
    pictures = []
    for packet in [*ctx.parse(data), *ctx.parse(None), None]:
        try:
            frames = ctx.decode(packet)
        except av.error.InvalidDataError:
            continue
        for frame in frames:
            pictures.append(frame.to_ndarray(format="yuv420p")[: frame.height])
    return pictures


def assert_pictures_match(pictures: Sequence[np.ndarray], luma: Sequence[np.ndarray]) -> None:
    assert len(pictures) == len(luma)
    for got, want in zip(pictures, luma, strict=True):
        assert got.shape == want.shape
        error = float(np.mean(np.abs(got.astype(int) - want.astype(int))))
        assert error < 4.0, f"decoded picture differs from its source by {error:.1f} on average"


# -- the encoder output we build on ------------------------------------------------------------


def test_encoders_give_annexb_with_keyframes_and_p_frames(stream: Encoded) -> None:
    """Premise of the other tests: Annex-B packets, IDRs at 0/3/6, P frames in between."""
    for au in stream.units:
        assert au.startswith((SC4, SC3))
    assert stream.keyframe == [i % GOP == 0 for i in range(FRAMES)]
    assert stream.extradata == b""


# -- nal_units, nal_type, nal_types ------------------------------------------------------------


def test_nal_units_split_after_start_codes_of_both_lengths(stream: Encoded) -> None:
    """Each unit starts right after a start code and ends right before the next one, whether
    that is 00 00 01 or 00 00 00 01: start codes plus units give back the access unit exactly.
    The first keyframe of both encoders has both lengths (SEI and slice after a 3-byte one)."""
    lengths: set[int] = set()
    for au in stream.units:
        units = nal_units(au)
        assert units
        rebuilt = bytearray()
        previous_end = 0
        for start, end in units:
            code = au[previous_end:start]
            assert code in (SC3, SC4), code.hex()
            lengths.add(len(code))
            assert start < end
            rebuilt += code + au[start:end]
            previous_end = end
        assert previous_end == len(au)
        assert bytes(rebuilt) == au
    assert lengths == {3, 4}


def test_nal_units_on_handmade_buffers() -> None:
    """Exact (start, end) on a buffer mixing the two start-code lengths."""
    data = SC4 + b"\x67AB" + SC3 + b"\x68C" + SC4 + b"\x65DEF" + SC3 + b"\x06"
    assert nal_units(data) == [(4, 7), (10, 12), (16, 20), (23, 24)]
    assert nal_types(data, H264) == [7, 8, 5, 6]


def test_nal_types_match_the_encoder(stream: Encoded) -> None:
    """Types as the encoder wrote them: parameter sets then an IDR slice on keyframes
    (SPS 7, PPS 8, IDR 5; VPS 32, SPS 33, PPS 34, IDR 19/20), non-IDR slices on P frames."""
    codec = stream.codec
    for au, key in zip(stream.units, stream.keyframe, strict=True):
        types = nal_types(au, codec)
        assert types == first_byte_types(au, codec)
        if codec is H264:
            if key:
                assert types[:2] == [7, 8]
                assert types[-1] == H264_IDR
            else:
                assert types == [1]
        else:
            if key:
                assert types[:3] == [32, 33, 34]
                assert types[-1] in (19, 20)
            else:
                assert types == [1]


def test_nal_type_reads_the_right_header_bits() -> None:
    """H.264: the low 5 bits (nal_ref_idc ignored). H.265: bits 1..6 of the first byte. A
    start at or past the end is -1."""
    for ref_idc in range(4):
        assert nal_type(bytes([ref_idc << 5 | 5]), 0, H264) == 5
    assert nal_type(b"\x67", 0, H264) == 7
    assert nal_type(b"\x40\x01", 0, H265) == 32
    assert nal_type(b"\x26\x01", 0, H265) == 19
    assert nal_type(b"\x28\x01", 0, H265) == 20
    assert nal_type(b"\x7e\x01", 0, H265) == 63
    assert nal_type(b"\x40\x01", 0, H264) == 0  # the same byte means different things
    assert nal_type(b"\x65", 1, H264) == -1
    assert nal_type(b"", 0, H265) == -1


# -- is_keyframe -------------------------------------------------------------------------------


def test_is_keyframe_agrees_with_the_encoder(stream: Encoded, gh_stream: Encoded) -> None:
    """True for the IDR access units and false for the P frames, also for IDRs that carry no
    parameter sets (global header)."""
    for s in (stream, gh_stream):
        got = [is_keyframe(au, s.codec) for au in s.units]
        assert got == s.keyframe
        assert any(got) and not all(got)


@pytest.mark.parametrize("nal", range(64))
def test_is_keyframe_h265_means_an_irap_nal(nal: int) -> None:
    """H.265: BLA, IDR and CRA (types 16..23) are keyframes, nothing else is; a parameter set
    alone does not make a keyframe."""
    au = SC4 + bytes([nal << 1, 1]) + b"\xaa"
    assert is_keyframe(au, H265) is (16 <= nal <= 23)
    assert (nal in H265_IRAP) is (16 <= nal <= 23)


@pytest.mark.parametrize("nal", range(32))
def test_is_keyframe_h264_means_an_idr_slice(nal: int) -> None:
    """H.264: only an IDR slice (type 5) makes a keyframe; SPS/PPS/SEI alone do not."""
    au = SC4 + b"\x67\x42" + SC4 + bytes([0x60 | nal]) + b"\xaa"
    assert is_keyframe(au, H264) is (nal == 5)


# -- parameter_sets ----------------------------------------------------------------------------


def test_parameter_sets_are_exactly_the_leading_parameter_nals(stream: Encoded) -> None:
    """From a keyframe: its SPS/PPS (VPS/SPS/PPS), byte for byte, and not the SEI or slice;
    from a P frame: nothing."""
    codec = stream.codec
    for au, key in zip(stream.units, stream.keyframe, strict=True):
        params = parameter_sets(au, codec)
        if key:
            assert params == au[: len(au) - len(strip_params(au, codec))]
            assert nal_types(params, codec) == list(PARAMS[codec])
        else:
            assert params == b""


def test_parameter_sets_of_extradata(gh_stream: Encoded) -> None:
    """The global-header extradata is Annex-B too; parameter_sets keeps its parameter sets only
    (x265 puts an SEI there as well)."""
    codec = gh_stream.codec
    params = parameter_sets(gh_stream.extradata, codec)
    assert nal_types(params, codec) == list(PARAMS[codec])
    assert set(nal_types(gh_stream.extradata, codec)) >= set(PARAMS[codec])
    for au in gh_stream.units:
        assert parameter_sets(au, codec) == b""


def test_parameter_sets_normalise_start_codes_to_four_bytes() -> None:
    data = SC3 + b"\x67S" + SC3 + b"\x06E" + SC3 + b"\x68P" + SC3 + b"\x65I"
    assert parameter_sets(data, H264) == SC4 + b"\x67S" + SC4 + b"\x68P"
    data = SC3 + b"\x40\x01V" + SC3 + b"\x42\x01S" + SC3 + b"\x44\x01P" + SC3 + b"\x26\x01I"
    assert (
        parameter_sets(data, H265) == SC4 + b"\x40\x01V" + SC4 + b"\x42\x01S" + SC4 + b"\x44\x01P"
    )


# -- ParameterSetKeeper ------------------------------------------------------------------------


def test_keeper_makes_a_headerless_keyframe_decodable(stream: Encoded) -> None:
    """With the parameter sets stripped from the later keyframes, a decoder that joins at the
    second keyframe gets nothing; through the keeper (which saw the first keyframe) it gets
    every picture, correctly."""
    codec = stream.codec
    units = [
        strip_params(au, codec) if key and i > 0 else au
        for i, (au, key) in enumerate(zip(stream.units, stream.keyframe, strict=True))
    ]
    keeper = ParameterSetKeeper(codec)
    out = [keeper.process(au, is_keyframe(au, codec)) for au in units]
    assert decode(b"".join(units[GOP:]), codec) == []  # the control: really undecodable
    assert_pictures_match(decode(b"".join(out[GOP:]), codec), stream.luma[GOP:])
    expected = parameter_sets(stream.units[0], codec)
    for i in (GOP, 2 * GOP):
        assert out[i] == expected + units[i]


def test_keeper_seeded_with_extradata(gh_stream: Encoded) -> None:
    """An encoder with a global header: the keeper seeded with extradata puts the parameter
    sets on every keyframe, so a decoder can start at any of them."""
    codec = gh_stream.codec
    keeper = ParameterSetKeeper(codec, gh_stream.extradata)
    assert keeper.params == parameter_sets(gh_stream.extradata, codec)
    out = [keeper.process(au, is_keyframe(au, codec)) for au in gh_stream.units]
    assert decode(b"".join(gh_stream.units[GOP:]), codec) == []
    assert_pictures_match(decode(b"".join(out), codec), gh_stream.luma)
    assert_pictures_match(decode(b"".join(out[GOP:]), codec), gh_stream.luma[GOP:])


def test_keeper_leaves_other_access_units_alone(stream: Encoded) -> None:
    """P frames, keyframes that carry their own parameter sets, and anything before the keeper
    knows parameter sets pass through unchanged."""
    codec = stream.codec
    stripped = strip_params(stream.units[GOP], codec)
    fresh = ParameterSetKeeper(codec)
    assert fresh.process(stripped, True) == stripped  # nothing known yet
    assert fresh.process(stream.units[1], False) == stream.units[1]
    assert fresh.params == b""

    keeper = ParameterSetKeeper(codec)
    for au, key in zip(stream.units, stream.keyframe, strict=True):
        assert keeper.process(au, key) == au
    assert keeper.params == parameter_sets(stream.units[-1], codec)
    assert keeper.process(stripped, False) == stripped  # only keyframes get them


def test_keeper_uses_the_latest_parameter_sets() -> None:
    """After the encoder changes (here: a new size), a headerless keyframe gets the new
    parameter sets, not the first ones, and the result decodes at the new size."""
    for codec in (H264, H265):
        small, big = encode(codec, frames=1), encode(codec, size=96, frames=1)
        assert parameter_sets(small.units[0], codec) != parameter_sets(big.units[0], codec)
        keeper = ParameterSetKeeper(codec)
        keeper.process(small.units[0], True)
        keeper.process(big.units[0], True)
        out = keeper.process(strip_params(big.units[0], codec), True)
        assert out.startswith(parameter_sets(big.units[0], codec))
        assert_pictures_match(decode(out, codec), big.luma)


def test_keeper_replaces_only_the_kinds_a_packet_carries() -> None:
    """An access unit with only a new PPS replaces the remembered PPS and keeps the SPS it
    refers to, so later headerless keyframes still get SPS + PPS (decodable)."""
    keeper = ParameterSetKeeper(H264, SC4 + b"\x67S" + SC4 + b"\x68P")
    keeper.process(SC4 + b"\x68Q" + SC4 + b"\x41x", False)
    assert keeper.process(SC4 + b"\x65I", True) == SC4 + b"\x67S" + SC4 + b"\x68Q" + SC4 + b"\x65I"


def test_keeper_puts_h265_sets_in_decoding_order() -> None:
    """VPS, SPS, PPS in that order whatever order they were learnt in."""
    vps, sps, pps = b"\x40\x01V", b"\x42\x01S", b"\x44\x01P"
    keeper = ParameterSetKeeper(H265, SC4 + pps)
    keeper.process(SC4 + sps + SC4 + vps, False)
    idr = b"\x26\x01I"
    assert keeper.process(SC4 + idr, True) == SC4 + vps + SC4 + sps + SC4 + pps + SC4 + idr


# -- hostile input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x00\x00", b"\x00\x00\x00", b"\x00\x01\x00\x00\x02", b"\x67\x42\x00\x0a"],
    ids=["empty", "zero", "two-zeros", "three-zeros", "near-miss", "nal-without-start-code"],
)
@pytest.mark.parametrize("codec", [H264, H265], ids=["h264", "h265"])
def test_no_start_code_means_no_units(data: bytes, codec: CodecName) -> None:
    """Bytes without a complete start code hold no NAL unit: nothing is a keyframe or a
    parameter set, and the keeper passes them through (nothing raises)."""
    assert nal_units(data) == []
    assert nal_types(data, codec) == []
    assert is_keyframe(data, codec) is False
    assert parameter_sets(data, codec) == b""
    assert ParameterSetKeeper(codec, data).params == b""
    assert ParameterSetKeeper(codec).process(data, True) == data


@pytest.mark.parametrize("tail", [b"\x00", b"\x00\x00", b"\x00\x00\x00"])
def test_a_truncated_start_code_at_the_end_stays_in_the_last_unit(
    stream: Encoded, tail: bytes
) -> None:
    """Zero bytes of a start code cut off at the end of a buffer make no new unit; they end up
    in the last unit and change neither types, keyframe nor parameter sets."""
    codec = stream.codec
    au = stream.units[0]
    data = au + tail
    assert nal_units(data)[:-1] == nal_units(au)[:-1]
    assert nal_units(data)[-1] == (nal_units(au)[-1][0], len(data))
    assert nal_types(data, codec) == nal_types(au, codec)
    assert is_keyframe(data, codec) is True
    assert parameter_sets(data, codec) == parameter_sets(au, codec)


@pytest.mark.parametrize("code", [SC3, SC4], ids=["3-byte", "4-byte"])
def test_a_start_code_with_nothing_after_it(stream: Encoded, code: bytes) -> None:
    """A complete start code at the very end is an empty unit of type -1: no IndexError, and the
    units before it keep their exact ends."""
    codec = stream.codec
    au = stream.units[1]
    data = au + code
    assert nal_units(data) == [*nal_units(au), (len(data), len(data))]
    assert nal_types(data, codec) == [*nal_types(au, codec), -1]
    assert is_keyframe(data, codec) is False
    assert parameter_sets(data, codec) == b""
    assert nal_units(code) == [(len(code), len(code))]
    assert nal_types(code, codec) == [-1]
