"""docs/protocol.md against protocol.py, and the message classes of protocol.py on their own.

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

from camingest import protocol as P
from camingest.shm import ring_bytes, slot_stride

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

# Every struct.Struct the protocol defines; the document must list each one.
STRUCTS = {name: s for name, s in vars(P).items() if isinstance(s, struct.Struct)}

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
    return format_tokens(P.PLANE.format)[0:4] * n


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
    assert values["MAX_PLANES"] == P.MAX_PLANES
    for name, value in values.items():
        assert getattr(P, name) == value, name


@pytest.mark.parametrize(
    "enum", [P.Kind, P.Transport, P.RefuseCode, P.ReleaseStatus, P.Codec], ids=lambda e: e.__name__
)
def test_enum_tables(doc: str, enum: type[IntEnum]) -> None:
    rows = tables_after(doc, f"`{enum.__name__}`:")[0]
    assert {unquote(r[0]): int(r[1]) for r in rows} == {m.name: m.value for m in enum}


def test_control_codes_table(doc: str) -> None:
    rows = tables_after(doc, "`ControlCode`:")[0]
    assert {unquote(r[0]) for r in rows} == {c.value for c in P.ControlCode}


def test_pixel_format_codes_table(doc: str) -> None:
    rows = tables_after(doc, "Pixel format codes")[0]
    assert [(unquote(r[0]), int(r[1]), r[2]) for r in rows] == [
        (fmt.value, code, P.FFMPEG_NAMES[fmt]) for fmt, code in P.PIXEL_FORMAT_CODES.items()
    ]


def test_worked_example(doc: str) -> None:
    planes, sizes = tables_after(doc, "### Worked example: 640x480")
    got = [tuple(int(c) for c in r[1:]) for r in planes]
    want = []
    for fmt in dict.fromkeys(P.PixelFormat(r[0]) for r in planes):
        for i, p in enumerate(P.plane_layout(fmt, 640, 480)):
            want.append((i, p.offset, p.stride, p.rows, p.row_bytes, p.size))
    assert got == want
    for row in sizes:
        size = P.frame_size(P.PixelFormat(row[0]), 640, 480)
        assert [int(c) for c in row[1:]] == [size, slot_stride(size), ring_bytes(4, size)]


def test_python_sketch_compiles(doc: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert blocks
    for block in blocks:
        compile(block, "protocol.md", "exec")


# ---------------------------------------------------------------------------------------------
# Round trips


def test_hello_round_trip() -> None:
    for fmt in P.PixelFormat:
        for transport in P.Transport:
            hello = P.Hello("cam-1_x", 1920, 1080, fmt, transport)
            raw = hello.pack()
            assert len(raw) == P.HELLO.size
            assert raw[:6] == b"CGI1\x01\x01"
            assert raw[48] == P.PIXEL_FORMAT_CODES[fmt]
            assert P.Hello.unpack(raw) == hello


def test_hello_stream_name_limit() -> None:
    assert P.Hello.unpack(P.Hello("a" * 31, 16, 16, "nv12", P.Transport.SHM).pack()).stream == (
        "a" * 31
    )
    with pytest.raises(P.ProtocolError):
        P.Hello("a" * 32, 16, 16, P.PixelFormat.NV12, P.Transport.SHM).pack()


def test_welcome_round_trip() -> None:
    for fmt in P.PixelFormat:
        planes = P.plane_layout(fmt, 640, 480)
        w = P.Welcome(0xDEADBEEF, 6, 4096, 462848, 460800, "camingest.abc.cam1.deadbeef", planes)
        raw = w.pack()
        assert len(raw) == P.WELCOME.size
        assert raw[6] == len(planes)
        assert P.Welcome.unpack(raw) == w
    inline = P.Welcome(1, 0, 0, 0, 460800, "", P.plane_layout(P.PixelFormat.I420, 640, 480))
    assert P.Welcome.unpack(inline.pack()) == inline


@pytest.mark.parametrize("count", [0, P.MAX_PLANES + 1])
def test_welcome_bad_plane_count(count: int) -> None:
    raw = bytearray(P.Welcome(1, 4, 4096, 4096, 100, "r", (P.Plane(0, 10, 10, 10),)).pack())
    raw[6] = count
    with pytest.raises(P.ProtocolError, match="plane count"):
        P.Welcome.unpack(bytes(raw))


def test_frame_round_trip() -> None:
    for desc in (
        P.FrameDesc(7, 3, 2**64 - 1, -(2**63), P.FLAG_FORCE_KEYFRAME),
        P.FrameDesc(0xFFFFFFFF, P.INLINE_SLOT, 1, 1_700_000_000_000_000_000),
    ):
        raw = desc.pack()
        assert len(raw) == P.FRAME.size
        assert P.FrameDesc.unpack(raw) == desc
    assert P.FrameDesc(1, 0, 1, 0, P.FLAG_FORCE_KEYFRAME).force_keyframe
    assert not P.FrameDesc(1, 0, 1, 0).force_keyframe


def test_release_round_trip() -> None:
    for status in P.ReleaseStatus:
        rel = P.Release(9, 2, 12345, status)
        raw = rel.pack()
        assert len(raw) == P.RELEASE.size
        assert P.Release.unpack(raw) == rel
    unknown = P.RELEASE.pack(P.INGEST_MAGIC, P.VERSION, P.Kind.RELEASE, 77, 1, 0, 1)
    assert P.Release.unpack(unknown).status is P.ReleaseStatus.DROPPED


def test_refuse_round_trip() -> None:
    for code in P.RefuseCode:
        frames = P.pack_refuse(code, "why: ü")
        assert len(frames) == 2
        assert len(frames[0]) == P.REFUSE.size
        assert P.unpack_refuse(frames) == (code, "why: ü")
    assert P.unpack_refuse(P.pack_refuse(P.RefuseCode.GEOMETRY, "x")[:1]) == (
        P.RefuseCode.GEOMETRY,
        "",
    )
    later = P.REFUSE.pack(P.INGEST_MAGIC, P.VERSION, P.Kind.REFUSE, 99)
    assert P.unpack_refuse([later, b"?"]) == (99, "?")


def test_output_header_round_trip() -> None:
    h = P.OutputHeader(P.Codec.H265, P.OUT_KEYFRAME, 42, 3840, 2160, 0, 17, -5, 2**62)
    raw = h.pack()
    assert len(raw) == P.OUTPUT_HEADER.size
    assert raw[:5] == b"CGO1\x01"
    assert P.OutputHeader.unpack(raw) == h
    assert h.keyframe and not h.eos
    eos = P.OutputHeader(P.Codec.H264, P.OUT_EOS, 1, 16, 16, 5, 0, 0, 1)
    assert P.OutputHeader.unpack(eos.pack()).eos


def test_worker_health_round_trip() -> None:
    health = P.WorkerHealth("cam1", 123, 5, True, 10, 9, 9, 4096, 1, {"bad_slot": 1}, 1.5, 9.0,
                            True, "")  # fmt: skip
    assert P.WorkerHealth.unpack(health.pack()) == health


# ---------------------------------------------------------------------------------------------
# Rejections

SAMPLES = {
    P.Hello: P.Hello("cam1", 640, 480, P.PixelFormat.NV12, P.Transport.SHM).pack(),
    P.Welcome: P.Welcome(1, 4, 4096, 462848, 460800, "r", (P.Plane(0, 1, 1, 1),)).pack(),
    P.FrameDesc: P.FrameDesc(1, 0, 1, 0).pack(),
    P.Release: P.Release(1, 0, 1, P.ReleaseStatus.CONSUMED).pack(),
}
IDS = [cls.__name__ for cls in SAMPLES]


@pytest.mark.parametrize(("cls", "raw"), SAMPLES.items(), ids=IDS)
def test_wrong_magic(cls: type[P.Hello], raw: bytes) -> None:
    with pytest.raises(P.ProtocolError, match="magic") as info:
        cls.unpack(b"XXXX" + raw[4:])
    assert not isinstance(info.value, P.VersionError)


@pytest.mark.parametrize(("cls", "raw"), SAMPLES.items(), ids=IDS)
def test_wrong_version(cls: type[P.Hello], raw: bytes) -> None:
    with pytest.raises(P.VersionError):
        cls.unpack(raw[:4] + bytes([P.VERSION + 1]) + raw[5:])


@pytest.mark.parametrize(("cls", "raw"), SAMPLES.items(), ids=IDS)
def test_wrong_kind(cls: type[P.Hello], raw: bytes) -> None:
    for other in SAMPLES.values():
        if other is not raw:
            with pytest.raises(P.ProtocolError, match="expected kind"):
                cls.unpack(other)


@pytest.mark.parametrize(("cls", "raw"), SAMPLES.items(), ids=IDS)
def test_wrong_length(cls: type[P.Hello], raw: bytes) -> None:
    for bad in (raw[:-1], raw + b"\0"):
        with pytest.raises(P.ProtocolError, match="expected"):
            cls.unpack(bad)
    with pytest.raises(P.ProtocolError, match="shorter than the prefix"):
        cls.unpack(raw[:5])


def test_refuse_rejections() -> None:
    good = P.pack_refuse(P.RefuseCode.STALE_EPOCH, "again")
    with pytest.raises(P.ProtocolError, match="magic"):
        P.unpack_refuse([b"CGIX" + good[0][4:], good[1]])
    with pytest.raises(P.VersionError):
        P.unpack_refuse([good[0][:4] + b"\x02" + good[0][5:], good[1]])
    with pytest.raises(P.ProtocolError, match="expected"):
        P.unpack_refuse([good[0] + b"\0", good[1]])
    with pytest.raises(P.ProtocolError, match="expected kind"):
        P.unpack_refuse([SAMPLES[P.Release]])


@pytest.mark.parametrize("code", [0, len(P.PixelFormat) + 1, 255])
def test_unknown_pixel_format_code(code: int) -> None:
    raw = bytearray(SAMPLES[P.Hello])
    raw[48] = code
    with pytest.raises(P.ProtocolError, match="pixel format"):
        P.Hello.unpack(bytes(raw))


def test_unknown_transport() -> None:
    raw = bytearray(SAMPLES[P.Hello])
    raw[49] = 2
    with pytest.raises(P.ProtocolError, match="transport"):
        P.Hello.unpack(bytes(raw))


def test_output_header_rejections() -> None:
    raw = P.OutputHeader(P.Codec.H264, 0, 1, 16, 16, 0, 1, 0, 0).pack()
    with pytest.raises(P.ProtocolError, match="magic") as info:
        P.OutputHeader.unpack(b"CGI1" + raw[4:])
    assert not isinstance(info.value, P.VersionError)
    with pytest.raises(P.VersionError):
        P.OutputHeader.unpack(raw[:4] + b"\x09" + raw[5:])
    for bad in (raw[:-1], raw + b"\0"):
        with pytest.raises(P.ProtocolError, match="expected"):
            P.OutputHeader.unpack(bad)


def test_message_kind() -> None:
    for kind, raw in zip(
        (P.Kind.HELLO, P.Kind.WELCOME, P.Kind.FRAME, P.Kind.RELEASE), SAMPLES.values(), strict=True
    ):
        assert P.message_kind(raw) == kind
    assert P.message_kind(P.pack_refuse(P.RefuseCode.GEOMETRY, "")[0]) == P.Kind.REFUSE


# ---------------------------------------------------------------------------------------------
# Plane geometry

# (row_bytes, rows) of each plane at 170x96, worked out by hand from section 4 of the document.
EXPECTED_170X96 = {
    P.PixelFormat.NV12: [(170, 96), (170, 48)],
    P.PixelFormat.NV21: [(170, 96), (170, 48)],
    P.PixelFormat.I420: [(170, 96), (85, 48), (85, 48)],
    P.PixelFormat.YUYV422: [(340, 96)],
    P.PixelFormat.GRAY: [(170, 96)],
    P.PixelFormat.BGR24: [(510, 96)],
    P.PixelFormat.RGB24: [(510, 96)],
    P.PixelFormat.BGRA: [(680, 96)],
    P.PixelFormat.RGBA: [(680, 96)],
}


def test_expected_table_covers_every_format() -> None:
    assert set(EXPECTED_170X96) == set(P.PixelFormat)


@pytest.mark.parametrize("fmt", list(P.PixelFormat), ids=str)
def test_plane_layout_170x96(fmt: P.PixelFormat) -> None:
    planes = P.plane_layout(fmt, 170, 96)
    assert [(p.row_bytes, p.rows) for p in planes] == EXPECTED_170X96[fmt]
    offset = 0
    for p in planes:
        assert p.offset == offset  # packed: each plane right after the previous one
        assert p.stride == p.row_bytes  # packed: no row padding
        assert p.size == p.stride * p.rows
        offset += p.size
    assert P.frame_size(fmt, 170, 96) == offset == sum(rb * r for rb, r in EXPECTED_170X96[fmt])
    assert len(planes) <= P.MAX_PLANES


@pytest.mark.parametrize("fmt", [P.PixelFormat.NV12, P.PixelFormat.NV21, P.PixelFormat.I420])
def test_odd_sizes_round_chroma_up(fmt: P.PixelFormat) -> None:
    w, h = 171, 97
    cw, ch = 86, 49
    assert P.frame_size(fmt, w, h) == w * h + 2 * cw * ch
    assert P.plane_layout(fmt, w, h)[-1].rows == ch


def test_slot_stride_and_ring_bytes() -> None:
    assert slot_stride(1) == slot_stride(4096) == P.RING_SLOT_ALIGN
    assert slot_stride(4097) == 8192
    assert ring_bytes(3, 4097) == P.RING_FIRST_SLOT_OFFSET + 3 * 8192
