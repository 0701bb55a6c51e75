"""docs/protocol.md against camingest.wire, and the message classes of wire/ on their own.

The document's struct formats, stated sizes, byte tables, constants, enum tables and worked
pixel-format example are parsed and compared with the code, so the two cannot drift apart.
"""

from __future__ import annotations

import ast
import re
import struct
from enum import IntEnum
from pathlib import Path

import pytest

from camingest.wire import fanin, framing, ingest, output, pixels, ring
from camingest.wire.control import ControlCode
from camingest.wire.fanin import WorkerHealth
from camingest.wire.framing import VERSION, ProtocolError, VersionError
from camingest.wire.ingest import (
    FLAG_FORCE_KEYFRAME,
    FRAME,
    HELLO,
    INGEST_MAGIC,
    INLINE_SLOT,
    MAX_PLANES,
    PLANE,
    REFUSE,
    RELEASE,
    WELCOME,
    FrameDesc,
    Hello,
    Kind,
    RefuseCode,
    Release,
    ReleaseStatus,
    Transport,
    Welcome,
    message_kind,
    pack_refuse,
    unpack_refuse,
)
from camingest.wire.output import OUT_EOS, OUT_KEYFRAME, OUTPUT_HEADER, Codec, OutputHeader
from camingest.wire.pixels import (
    FFMPEG_NAMES,
    PIXEL_FORMAT_CODES,
    PixelFormat,
    Plane,
    frame_size,
    plane_layout,
)
from camingest.wire.ring import RING_FIRST_SLOT_OFFSET, RING_SLOT_ALIGN, ring_bytes, slot_stride

DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"

# Every struct.Struct the protocol defines; the document must list each one.
WIRE_MODULES = (framing, pixels, ingest, ring, output, fanin)
WIRE_NAMES = {name: v for m in WIRE_MODULES for name, v in vars(m).items()}
STRUCTS = {name: s for name, s in WIRE_NAMES.items() if isinstance(s, struct.Struct)}

TYPE_TOKENS = {"u8": ["B"], "u16": ["H"], "u32": ["I"], "u64": ["Q"], "i64": ["q"]}


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def tables_after(text: str, anchor: str) -> list[list[list[str]]]:
    """The markdown tables following the first line containing `anchor`, up to the next
    heading; each table as its body rows (header and separator skipped)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if anchor in line)
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    header = False
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
                header = True
            elif header:
                header = False  # the separator line
            else:
                current.append(cells(line))
        else:
            current = None
    assert tables, f"no table after {anchor!r}"
    return tables


def unquote(cell: str) -> str:
    assert cell.startswith("`") and cell.endswith("`"), cell
    return cell[1:-1]


def format_tokens(fmt: str) -> list[str]:
    """A struct format as a list of fields: "4s", "B", ..., with runs of padding merged."""
    assert fmt[0] == "<", fmt
    tokens: list[str] = []
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", fmt[1:]):
        n = int(count) if count else 1
        if code == "s":
            tokens.append(f"{n}s")
        elif code == "x":
            tokens += ["x"] * n
        else:
            tokens += [code] * n
    return merge_pads(tokens)


def merge_pads(tokens: list[str]) -> list[str]:
    merged: list[str] = []
    for tok in tokens:
        if tok == "x" and merged and merged[-1].endswith("x"):
            merged[-1] = f"{int(merged[-1][:-1]) + 1}x"
        else:
            merged.append("1x" if tok == "x" else tok)
    return merged


def type_tokens(type_: str) -> list[str]:
    if type_ in TYPE_TOKENS:
        return TYPE_TOKENS[type_]
    m = re.fullmatch(r"(char|pad|plane)\[(\d+)\]", type_)
    assert m, f"unknown type {type_!r} in a byte table"
    kind, n = m.group(1), int(m.group(2))
    if kind == "char":
        return [f"{n}s"]
    if kind == "pad":
        return ["x"] * n
    return format_tokens(PLANE.format)[0:4] * n


# ---------------------------------------------------------------------------------------------
# The document against the code


def test_layout_summary_lists_every_struct_with_format_and_size(doc: str) -> None:
    rows = tables_after(doc, "### All layouts")[0]
    listed = {unquote(r[0]): (unquote(r[1]), int(r[2])) for r in rows}
    assert set(listed) == set(STRUCTS)
    for name, (fmt, size) in listed.items():
        assert STRUCTS[name].format == fmt, name
        assert struct.calcsize(fmt) == size == STRUCTS[name].size, name


def test_every_format_string_in_the_doc_is_current(doc: str) -> None:
    quoted = set(re.findall(r"`(<[0-9A-Za-z]+)`", doc))
    quoted |= set(re.findall(r'struct\.Struct\("(<[0-9A-Za-z]+)"\)', doc))
    assert quoted, "no format strings found"
    assert quoted <= {s.format for s in STRUCTS.values()}


def test_byte_tables_match_the_formats(doc: str) -> None:
    markers = re.findall(r"\*\*`(\w+)`\*\* — format `([^`]+)`, (\d+) bytes", doc)
    assert {m[0] for m in markers} == set(STRUCTS)
    for name, fmt, size in markers:
        layout = STRUCTS[name]
        assert layout.format == fmt, name
        assert layout.size == int(size) == struct.calcsize(fmt), name
        rows = tables_after(doc, f"**`{name}`** — format")[0]
        offset = 0
        tokens: list[str] = []
        for row in rows:
            row_offset, row_size, type_ = int(row[0]), int(row[1]), row[2]
            assert row_offset == offset, f"{name}: field {row[3]} at {row_offset}, not {offset}"
            got = type_tokens(type_)
            assert struct.calcsize("<" + "".join(got)) == row_size, f"{name}: {row}"
            tokens += got
            offset += row_size
        assert offset == layout.size, name
        assert merge_pads(tokens) == format_tokens(fmt), name


def test_constants_table(doc: str) -> None:
    rows = tables_after(doc, "### Constants")[0]
    values = {unquote(r[0]): ast.literal_eval(unquote(r[1])) for r in rows}
    assert values["MAX_PLANES"] == MAX_PLANES
    for name, value in values.items():
        assert WIRE_NAMES[name] == value, name


@pytest.mark.parametrize(
    "enum", [Kind, Transport, RefuseCode, ReleaseStatus, Codec], ids=lambda e: e.__name__
)
def test_enum_tables(doc: str, enum: type[IntEnum]) -> None:
    rows = tables_after(doc, f"`{enum.__name__}`:")[0]
    assert {unquote(r[0]): int(r[1]) for r in rows} == {m.name: m.value for m in enum}


def test_control_codes_table(doc: str) -> None:
    rows = tables_after(doc, "`ControlCode`:")[0]
    assert {unquote(r[0]) for r in rows} == {c.value for c in ControlCode}


def test_pixel_format_codes_table(doc: str) -> None:
    rows = tables_after(doc, "Pixel format codes")[0]
    assert [(unquote(r[0]), int(r[1]), r[2]) for r in rows] == [
        (fmt.value, code, FFMPEG_NAMES[fmt]) for fmt, code in PIXEL_FORMAT_CODES.items()
    ]


def test_worked_example(doc: str) -> None:
    planes, sizes = tables_after(doc, "### Worked example: 640x480")
    got = [tuple(int(c) for c in r[1:]) for r in planes]
    want = []
    for fmt in dict.fromkeys(PixelFormat(r[0]) for r in planes):
        for i, p in enumerate(plane_layout(fmt, 640, 480)):
            want.append((i, p.offset, p.stride, p.rows, p.row_bytes, p.size))
    assert got == want
    for row in sizes:
        size = frame_size(PixelFormat(row[0]), 640, 480)
        assert [int(c) for c in row[1:]] == [size, slot_stride(size), ring_bytes(4, size)]


def test_python_sketch_compiles(doc: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert blocks
    for block in blocks:
        compile(block, "protocol.md", "exec")


# ---------------------------------------------------------------------------------------------
# Round trips


def test_hello_round_trip() -> None:
    for fmt in PixelFormat:
        for transport in Transport:
            hello = Hello("cam-1_x", 1920, 1080, fmt, transport)
            raw = hello.pack()
            assert len(raw) == HELLO.size
            assert raw[:6] == b"CGI1\x01\x01"
            assert raw[48] == PIXEL_FORMAT_CODES[fmt]
            assert Hello.unpack(raw) == hello


def test_hello_stream_name_limit() -> None:
    assert Hello.unpack(Hello("a" * 31, 16, 16, "nv12", Transport.SHM).pack()).stream == ("a" * 31)
    with pytest.raises(ProtocolError):
        Hello("a" * 32, 16, 16, PixelFormat.NV12, Transport.SHM).pack()


def test_welcome_round_trip() -> None:
    for fmt in PixelFormat:
        planes = plane_layout(fmt, 640, 480)
        w = Welcome(0xDEADBEEF, 6, 4096, 462848, 460800, "camingest.abc.cam1.deadbeef", planes)
        raw = w.pack()
        assert len(raw) == WELCOME.size
        assert raw[6] == len(planes)
        assert Welcome.unpack(raw) == w
    inline = Welcome(1, 0, 0, 0, 460800, "", plane_layout(PixelFormat.I420, 640, 480))
    assert Welcome.unpack(inline.pack()) == inline


@pytest.mark.parametrize("count", [0, MAX_PLANES + 1])
def test_welcome_bad_plane_count(count: int) -> None:
    raw = bytearray(Welcome(1, 4, 4096, 4096, 100, "r", (Plane(0, 10, 10, 10),)).pack())
    raw[6] = count
    with pytest.raises(ProtocolError, match="plane count"):
        Welcome.unpack(bytes(raw))


def test_frame_round_trip() -> None:
    for desc in (
        FrameDesc(7, 3, 2**64 - 1, -(2**63), FLAG_FORCE_KEYFRAME),
        FrameDesc(0xFFFFFFFF, INLINE_SLOT, 1, 1_700_000_000_000_000_000),
    ):
        raw = desc.pack()
        assert len(raw) == FRAME.size
        assert FrameDesc.unpack(raw) == desc
    assert FrameDesc(1, 0, 1, 0, FLAG_FORCE_KEYFRAME).force_keyframe
    assert not FrameDesc(1, 0, 1, 0).force_keyframe


def test_release_round_trip() -> None:
    for status in ReleaseStatus:
        rel = Release(9, 2, 12345, status)
        raw = rel.pack()
        assert len(raw) == RELEASE.size
        assert Release.unpack(raw) == rel
    unknown = RELEASE.pack(INGEST_MAGIC, VERSION, Kind.RELEASE, 77, 1, 0, 1)
    assert Release.unpack(unknown).status is ReleaseStatus.DROPPED


def test_refuse_round_trip() -> None:
    for code in RefuseCode:
        frames = pack_refuse(code, "why: ü")
        assert len(frames) == 2
        assert len(frames[0]) == REFUSE.size
        assert unpack_refuse(frames) == (code, "why: ü")
    assert unpack_refuse(pack_refuse(RefuseCode.GEOMETRY, "x")[:1]) == (
        RefuseCode.GEOMETRY,
        "",
    )
    later = REFUSE.pack(INGEST_MAGIC, VERSION, Kind.REFUSE, 99)
    assert unpack_refuse([later, b"?"]) == (99, "?")


def test_output_header_round_trip() -> None:
    h = OutputHeader(Codec.H265, OUT_KEYFRAME, 42, 3840, 2160, 0, 17, -5, 2**62)
    raw = h.pack()
    assert len(raw) == OUTPUT_HEADER.size
    assert raw[:5] == b"CGO1\x01"
    assert OutputHeader.unpack(raw) == h
    assert h.keyframe and not h.eos
    eos = OutputHeader(Codec.H264, OUT_EOS, 1, 16, 16, 5, 0, 0, 1)
    assert OutputHeader.unpack(eos.pack()).eos


def test_worker_health_round_trip() -> None:
    health = WorkerHealth(
        "cam1", 123, 5, True, 10, 9, 9, 4096, 1, {"bad_slot": 1}, 1.5, 9.0, True, ""
    )
    assert WorkerHealth.unpack(health.pack()) == health


# ---------------------------------------------------------------------------------------------
# Rejections

SAMPLES = {
    Hello: Hello("cam1", 640, 480, PixelFormat.NV12, Transport.SHM).pack(),
    Welcome: Welcome(1, 4, 4096, 462848, 460800, "r", (Plane(0, 1, 1, 1),)).pack(),
    FrameDesc: FrameDesc(1, 0, 1, 0).pack(),
    Release: Release(1, 0, 1, ReleaseStatus.CONSUMED).pack(),
}
IDS = [cls.__name__ for cls in SAMPLES]


@pytest.mark.parametrize(("cls", "raw"), SAMPLES.items(), ids=IDS)
def test_wrong_magic(cls: type[Hello], raw: bytes) -> None:
    with pytest.raises(ProtocolError, match="magic") as info:
        cls.unpack(b"XXXX" + raw[4:])
    assert not isinstance(info.value, VersionError)


@pytest.mark.parametrize(("cls", "raw"), SAMPLES.items(), ids=IDS)
def test_wrong_version(cls: type[Hello], raw: bytes) -> None:
    with pytest.raises(VersionError):
        cls.unpack(raw[:4] + bytes([VERSION + 1]) + raw[5:])


@pytest.mark.parametrize(("cls", "raw"), SAMPLES.items(), ids=IDS)
def test_wrong_kind(cls: type[Hello], raw: bytes) -> None:
    for other in SAMPLES.values():
        if other is not raw:
            with pytest.raises(ProtocolError, match="expected kind"):
                cls.unpack(other)


@pytest.mark.parametrize(("cls", "raw"), SAMPLES.items(), ids=IDS)
def test_wrong_length(cls: type[Hello], raw: bytes) -> None:
    for bad in (raw[:-1], raw + b"\0"):
        with pytest.raises(ProtocolError, match="expected"):
            cls.unpack(bad)
    with pytest.raises(ProtocolError, match="shorter than the prefix"):
        cls.unpack(raw[:5])


def test_refuse_rejections() -> None:
    good = pack_refuse(RefuseCode.STALE_EPOCH, "again")
    with pytest.raises(ProtocolError, match="magic"):
        unpack_refuse([b"CGIX" + good[0][4:], good[1]])
    with pytest.raises(VersionError):
        unpack_refuse([good[0][:4] + b"\x02" + good[0][5:], good[1]])
    with pytest.raises(ProtocolError, match="expected"):
        unpack_refuse([good[0] + b"\0", good[1]])
    with pytest.raises(ProtocolError, match="expected kind"):
        unpack_refuse([SAMPLES[Release]])


@pytest.mark.parametrize("code", [0, len(PixelFormat) + 1, 255])
def test_unknown_pixel_format_code(code: int) -> None:
    raw = bytearray(SAMPLES[Hello])
    raw[48] = code
    with pytest.raises(ProtocolError, match="pixel format"):
        Hello.unpack(bytes(raw))


def test_unknown_transport() -> None:
    raw = bytearray(SAMPLES[Hello])
    raw[49] = 2
    with pytest.raises(ProtocolError, match="transport"):
        Hello.unpack(bytes(raw))


def test_output_header_rejections() -> None:
    raw = OutputHeader(Codec.H264, 0, 1, 16, 16, 0, 1, 0, 0).pack()
    with pytest.raises(ProtocolError, match="magic") as info:
        OutputHeader.unpack(b"CGI1" + raw[4:])
    assert not isinstance(info.value, VersionError)
    with pytest.raises(VersionError):
        OutputHeader.unpack(raw[:4] + b"\x09" + raw[5:])
    for bad in (raw[:-1], raw + b"\0"):
        with pytest.raises(ProtocolError, match="expected"):
            OutputHeader.unpack(bad)


def test_message_kind() -> None:
    for kind, raw in zip(
        (Kind.HELLO, Kind.WELCOME, Kind.FRAME, Kind.RELEASE), SAMPLES.values(), strict=True
    ):
        assert message_kind(raw) == kind
    assert message_kind(pack_refuse(RefuseCode.GEOMETRY, "")[0]) == Kind.REFUSE


# ---------------------------------------------------------------------------------------------
# Plane geometry

# (row_bytes, rows) of each plane at 170x96, worked out by hand from section 4 of the document.
EXPECTED_170X96 = {
    PixelFormat.NV12: [(170, 96), (170, 48)],
    PixelFormat.NV21: [(170, 96), (170, 48)],
    PixelFormat.I420: [(170, 96), (85, 48), (85, 48)],
    PixelFormat.YUYV422: [(340, 96)],
    PixelFormat.GRAY: [(170, 96)],
    PixelFormat.BGR24: [(510, 96)],
    PixelFormat.RGB24: [(510, 96)],
    PixelFormat.BGRA: [(680, 96)],
    PixelFormat.RGBA: [(680, 96)],
}


def test_expected_table_covers_every_format() -> None:
    assert set(EXPECTED_170X96) == set(PixelFormat)


@pytest.mark.parametrize("fmt", list(PixelFormat), ids=str)
def test_plane_layout_170x96(fmt: PixelFormat) -> None:
    planes = plane_layout(fmt, 170, 96)
    assert [(p.row_bytes, p.rows) for p in planes] == EXPECTED_170X96[fmt]
    offset = 0
    for p in planes:
        assert p.offset == offset  # packed: each plane right after the previous one
        assert p.stride == p.row_bytes  # packed: no row padding
        assert p.size == p.stride * p.rows
        offset += p.size
    assert frame_size(fmt, 170, 96) == offset == sum(rb * r for rb, r in EXPECTED_170X96[fmt])
    assert len(planes) <= MAX_PLANES


@pytest.mark.parametrize("fmt", [PixelFormat.NV12, PixelFormat.NV21, PixelFormat.I420])
def test_odd_sizes_round_chroma_up(fmt: PixelFormat) -> None:
    w, h = 171, 97
    cw, ch = 86, 49
    assert frame_size(fmt, w, h) == w * h + 2 * cw * ch
    assert plane_layout(fmt, w, h)[-1].rows == ch


def test_slot_stride_and_ring_bytes() -> None:
    assert slot_stride(1) == slot_stride(4096) == RING_SLOT_ALIGN
    assert slot_stride(4097) == 8192
    assert ring_bytes(3, 4097) == RING_FIRST_SLOT_OFFSET + 3 * 8192
