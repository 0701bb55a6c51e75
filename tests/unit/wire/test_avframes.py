"""Pins camingest.wire.avframes: planes <-> PyAV frames and the worker's pixel-format conversion.

Every source format of PixelFormat is checked, at sizes that are not multiples of 16/32 and at
odd sizes where the format has them, against PyAV/FFmpeg itself: the plane geometry FFmpeg
reports for each format, the bytes FFmpeg's own `reformat` produces, and (independently of
swscale) numpy references for the chroma reshuffles and BT.601 luma/chroma. The references never
use camingest code: planes are read out of PyAV frames with the geometry of FFmpeg's pixel-format
descriptors (av.VideoFormat components) and each line's `line_size`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import av
import numpy as np
import numpy.typing as npt
import pytest

from camingest.wire.avframes import convert, from_av_frame, plane_rows, to_av_frame
from camingest.wire.pixels import FFMPEG_NAMES, PixelFormat, frame_size, plane_layout

Array = npt.NDArray[np.uint8]
Planes = tuple[Array, ...]

FORMATS = tuple(PixelFormat)
YUV420 = (PixelFormat.NV12, PixelFormat.NV21, PixelFormat.I420)
# What the worker converts to (worker/main.py): NV12 when the encoder takes it, else the
# smallest accepted format. The pyav backend accepts one of nv12/nv21/i420 (NATIVE_CANDIDATES,
# nv12 first), the acl backend nv12/nv21; so nv12 and i420 are the real targets, and nv21 only
# for an FFmpeg encoder that takes nv21 but not nv12.
TARGETS = (PixelFormat.NV12, PixelFormat.I420, PixelFormat.NV21)
# Widths that are not multiples of 16 or 32; odd widths and heights too.
SIZES = ((98, 66), (130, 70), (97, 67), (98, 67))


def allowed(fmt: PixelFormat, width: int, height: int) -> bool:
    """yuyv422 stores pixel pairs (one U and V per two pixels): an odd width does not exist in
    it (pixels.EVEN_WIDTH). The 4:2:0 formats round their chroma up (plane_layout), so their
    odd sizes are exercised here even though configs only ever use even sizes."""
    return not (fmt is PixelFormat.YUYV422 and width % 2)


def size_id(width: int, height: int) -> str:
    return f"{width}x{height}"


FMT_SIZES = [
    pytest.param(fmt, w, h, id=f"{fmt.value}-{size_id(w, h)}")
    for fmt in FORMATS
    for w, h in SIZES
    if allowed(fmt, w, h)
]
CONVERSIONS = [
    pytest.param(src, dst, w, h, id=f"{src.value}-to-{dst.value}-{size_id(w, h)}")
    for src in FORMATS
    for dst in TARGETS
    for w, h in SIZES
    if allowed(src, w, h)
]


# -- references built from PyAV/FFmpeg only ----------------------------------------------------


def ffmpeg_geometry(fmt: PixelFormat, width: int, height: int) -> list[tuple[int, int]]:
    """(rows, row_bytes) of each plane, from FFmpeg's pixel-format descriptor: the rows of a
    plane are its components' height, its bytes per row the sum of its components' widths."""
    desc = av.VideoFormat(FFMPEG_NAMES[fmt], width, height)
    planes: dict[int, tuple[int, int]] = {}
    for c in desc.components:
        assert c.bits == 8, "every camingest format has 8-bit components"
        rows, row_bytes = planes.get(c.plane, (0, 0))
        planes[c.plane] = (max(rows, c.height), row_bytes + c.width)
    return [planes[i] for i in sorted(planes)]


def ffmpeg_planes(frame: av.VideoFrame, fmt: PixelFormat) -> Planes:
    """Packed copies of the planes of a PyAV frame, read with FFmpeg's geometry and line sizes."""
    assert frame.format.name == FFMPEG_NAMES[fmt]
    out = []
    geometry = ffmpeg_geometry(fmt, frame.width, frame.height)
    assert len(frame.planes) == len(geometry)
    for plane, (rows, row_bytes) in zip(frame.planes, geometry, strict=True):
        raw = np.frombuffer(bytes(plane), dtype=np.uint8)
        step = int(plane.line_size)
        out.append(raw[: rows * step].reshape(rows, step)[:, :row_bytes].copy())
    return tuple(out)


@functools.cache
def rgb_pattern(width: int, height: int) -> Array:
    """Real content: smooth gradients in R and G, a B ramp that wraps (a sharp diagonal edge),
    a white and a black box, and a one-pixel vertical line."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack(
        [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) * 3 % 256], axis=-1
    ).astype(np.uint8)
    img[height // 4 : height // 2, width // 4 : width // 2] = (255, 255, 255)
    img[height // 2 : 3 * height // 4, width // 2 : 3 * width // 4] = (0, 0, 0)
    img[:, width // 3] = (250, 10, 40)
    img.setflags(write=False)
    return img


def source_frame(fmt: PixelFormat, width: int, height: int) -> av.VideoFrame:
    """The RGB pattern in `fmt`, converted by PyAV itself."""
    rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb_pattern(width, height)), "rgb24")
    return rgb.reformat(format=FFMPEG_NAMES[fmt])


def random_planes(fmt: PixelFormat, width: int, height: int, seed: int = 0) -> Planes:
    rng = np.random.default_rng(seed)
    return tuple(
        rng.integers(0, 256, size=(rows, row_bytes), dtype=np.uint8)
        for rows, row_bytes in ffmpeg_geometry(fmt, width, height)
    )


def psnr(a: Planes, b: Planes) -> float:
    x = np.concatenate([p.reshape(-1) for p in a]).astype(np.float64)
    y = np.concatenate([p.reshape(-1) for p in b]).astype(np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def assert_planes_equal(got: Planes, want: Planes, what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} planes, want {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == np.uint8, f"{what}: plane {i} is {g.dtype}"
        assert g.shape == w.shape, f"{what}: plane {i} is {g.shape}, want {w.shape}"
        if not np.array_equal(g, w):
            bad = np.argwhere(g != w)
            raise AssertionError(
                f"{what}: plane {i} differs in {len(bad)} bytes (first at {tuple(bad[0])}), "
                f"PSNR {psnr(got, want):.1f} dB"
            )


def mask_ffmpeg_garbage(src: PixelFormat, dst: PixelFormat, height: int, planes: Planes) -> Planes:
    """At odd heights FFmpeg's yuyv422 -> yuv420p conversion leaves the last U and V rows
    varying from run to run (with FFmpeg's own reformat too: uninitialised memory, as if a
    line past the picture were read). Zero them so the rest is still compared byte for byte."""
    if src is PixelFormat.YUYV422 and dst is PixelFormat.I420 and height % 2:
        planes = tuple(p.copy() for p in planes)
        planes[1][-1] = planes[2][-1] = 0
    return planes


def chroma_of(fmt: PixelFormat, planes: Planes) -> tuple[Array, Array]:
    """(U, V) of a 4:2:0 frame, by hand: interleaved UV in nv12, VU in nv21, planes in i420."""
    if fmt is PixelFormat.NV12:
        return planes[1][:, 0::2], planes[1][:, 1::2]
    if fmt is PixelFormat.NV21:
        return planes[1][:, 1::2], planes[1][:, 0::2]
    assert fmt is PixelFormat.I420
    return planes[1], planes[2]


def yuv420_planes(fmt: PixelFormat, y: Array, u: Array, v: Array) -> Planes:
    """A 4:2:0 frame in `fmt` assembled by hand from Y, U, V."""
    if fmt is PixelFormat.I420:
        return (y, u, v)
    first, second = (u, v) if fmt is PixelFormat.NV12 else (v, u)
    return (y, np.stack([first, second], axis=-1).reshape(u.shape[0], 2 * u.shape[1]))


# -- plane geometry ----------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "width", "height"), FMT_SIZES)
def test_plane_layout_matches_ffmpeg_geometry(fmt: PixelFormat, width: int, height: int) -> None:
    """plane_layout is what the capture, the ring and the worker agree on: its plane order,
    rows and bytes per row must be FFmpeg's for the same format, and packed back to back.
    A mismatch would shear or truncate every frame handed to the encoder."""
    layout = plane_layout(fmt, width, height)
    assert [(p.rows, p.row_bytes) for p in layout] == ffmpeg_geometry(fmt, width, height)
    offset = 0
    for p in layout:
        assert p.stride == p.row_bytes
        assert p.offset == offset
        offset += p.rows * p.row_bytes
    assert frame_size(fmt, width, height) == offset
    frame = av.VideoFrame(width, height, FFMPEG_NAMES[fmt])
    assert len(frame.planes) == len(layout)
    for plane, p in zip(frame.planes, layout, strict=True):
        assert plane.line_size >= p.row_bytes


@pytest.mark.parametrize(
    "fmt", [pytest.param(f, id=f.value) for f in FORMATS if f is not PixelFormat.NV21]
)
def test_from_av_frame_matches_pyav_to_ndarray(fmt: PixelFormat) -> None:
    """from_av_frame reads the same bytes as PyAV's own to_ndarray (which knows every format
    here but nv21, at even sizes), so the independent reader used as reference elsewhere in this
    file and camingest's reader both agree with PyAV."""
    frame = source_frame(fmt, 98, 66)
    want = frame.to_ndarray().reshape(-1)
    got = np.concatenate([p.reshape(-1) for p in from_av_frame(frame, fmt)])
    ref = np.concatenate([p.reshape(-1) for p in ffmpeg_planes(frame, fmt)])
    assert np.array_equal(got, want)
    assert np.array_equal(ref, want)


# -- planes <-> frames -------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "width", "height"), FMT_SIZES)
def test_round_trip_is_bit_exact(fmt: PixelFormat, width: int, height: int) -> None:
    """planes -> to_av_frame -> from_av_frame returns the very same bytes (random bytes, so any
    misplaced row, plane or byte shows), the frame FFmpeg sees holds them in its own strides,
    and both directions copy: the ring slot is released (and rewritten) right after the call,
    so neither the frame nor the returned planes may alias their input."""
    planes = random_planes(fmt, width, height, seed=width * height)
    frame = to_av_frame(fmt, width, height, planes)
    assert (frame.format.name, frame.width, frame.height) == (FFMPEG_NAMES[fmt], width, height)
    assert_planes_equal(ffmpeg_planes(frame, fmt), planes, "frame as FFmpeg reads it")

    back = from_av_frame(frame, fmt)
    assert_planes_equal(back, planes, "round trip")
    for p in back:
        assert p.flags.c_contiguous and p.flags.owndata

    before = tuple(p.copy() for p in planes)
    for p in planes:
        p[...] ^= 0xFF  # the ring slot is reused by the capture
    assert_planes_equal(ffmpeg_planes(frame, fmt), before, "frame after its input changed")
    for p in back:
        p[...] = 0
    assert_planes_equal(ffmpeg_planes(frame, fmt), before, "frame after its output changed")


@pytest.mark.parametrize(("fmt", "width", "height"), FMT_SIZES)
def test_from_av_frame_of_ffmpeg_made_frame(fmt: PixelFormat, width: int, height: int) -> None:
    """from_av_frame reads a frame FFmpeg filled itself (its own strides and padding) exactly,
    and to_av_frame of those planes reformats to the same RGB as the original frame."""
    frame = source_frame(fmt, width, height)
    planes = from_av_frame(frame, fmt)
    assert_planes_equal(planes, ffmpeg_planes(frame, fmt), "from_av_frame")
    again = to_av_frame(fmt, width, height, planes).reformat(format="rgb24")
    assert np.array_equal(again.to_ndarray(), frame.reformat(format="rgb24").to_ndarray())


@pytest.mark.parametrize("fmt", [PixelFormat.GRAY, PixelFormat.I420, PixelFormat.RGBA], ids=str)
@pytest.mark.parametrize("width", [128, 98], ids=lambda w: f"w{w}")
def test_from_av_frame_gives_packed_planes_that_keep_their_bytes(
    fmt: PixelFormat, width: int
) -> None:
    """At a width whose rows fill the line size (128 px, as 640/1280/1920 do) the planes are
    views of the frame, elsewhere copies: either way packed, C-contiguous, with the frame's
    bytes, and still valid after the caller dropped its reference to the frame."""
    frame = source_frame(fmt, width, 64)
    expected = ffmpeg_planes(frame, fmt)
    planes = from_av_frame(frame, fmt)
    del frame
    for plane, want in zip(planes, expected, strict=True):
        assert plane.flags.c_contiguous
        assert plane.shape == want.shape
    assert_planes_equal(planes, expected, "from_av_frame")


STRIDED = ("ring-slot", "fortran", "reversed")


def strided_copy(planes: Planes, kind: str) -> Planes:
    """Non-contiguous arrays holding the same pixels: views into one read-only slot with padded
    strides (exactly how ingest.py and the ring hand planes over, padding filled with junk),
    column-major arrays, and views with negative strides in both axes."""
    if kind == "ring-slot":
        strides = [p.shape[1] + 13 for p in planes]  # odd, unaligned padding
        slot = np.full(sum(s * p.shape[0] for s, p in zip(strides, planes, strict=True)), 0xA5)
        slot = slot.astype(np.uint8)
        views = []
        offset = 0
        for stride, p in zip(strides, planes, strict=True):
            rows, row_bytes = p.shape
            view = slot[offset : offset + rows * stride].reshape(rows, stride)[:, :row_bytes]
            view[...] = p
            views.append(view)
            offset += rows * stride
        slot.setflags(write=False)
        return tuple(views)
    if kind == "fortran":
        return tuple(np.asfortranarray(p) for p in planes)
    assert kind == "reversed"
    return tuple(p[::-1, ::-1].copy()[::-1, ::-1] for p in planes)


@pytest.mark.parametrize("kind", STRIDED)
@pytest.mark.parametrize(("fmt", "width", "height"), FMT_SIZES[::2])
def test_strided_input_planes(fmt: PixelFormat, width: int, height: int, kind: str) -> None:
    """Planes arrive as strided (and read-only) views of a ring slot: to_av_frame and convert
    must give the same bytes as for packed planes, never reading the junk between rows."""
    planes = from_av_frame(source_frame(fmt, width, height), fmt)
    strided = strided_copy(planes, kind)
    assert not all(p.flags.c_contiguous for p in strided)
    assert_planes_equal(tuple(np.asarray(p) for p in strided), planes, "test setup")
    back = from_av_frame(to_av_frame(fmt, width, height, strided), fmt)
    assert_planes_equal(back, planes, f"round trip of {kind} planes")
    for target in (PixelFormat.NV12, PixelFormat.I420):
        got = mask_ffmpeg_garbage(fmt, target, height, convert(fmt, width, height, strided, target))
        want = mask_ffmpeg_garbage(fmt, target, height, convert(fmt, width, height, planes, target))
        assert_planes_equal(got, want, f"{kind} planes to {target.value}")


# -- conversion --------------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst", "width", "height"), CONVERSIONS)
def test_convert_matches_pyav_reformat(
    src: PixelFormat, dst: PixelFormat, width: int, height: int
) -> None:
    """convert gives exactly the bytes FFmpeg's own reformat gives for the same picture (same
    swscale, default flags), laid out in FFmpeg's geometry for the target, and leaves its
    input alone. Any plane-order, chroma-order, stride or size slip breaks byte equality."""
    frame = source_frame(src, width, height)
    planes = ffmpeg_planes(frame, src)
    before = tuple(p.copy() for p in planes)
    got = mask_ffmpeg_garbage(src, dst, height, convert(src, width, height, planes, dst))
    want = ffmpeg_planes(frame.reformat(format=FFMPEG_NAMES[dst]), dst)
    want = mask_ffmpeg_garbage(src, dst, height, want)
    assert_planes_equal(got, want, f"{src.value} -> {dst.value}")
    assert psnr(got, want) > 40.0  # implied by equality; the brief's quality bar
    assert_planes_equal(planes, before, "input after convert")


def bt601(rgb: Array) -> tuple[npt.NDArray[np.float64], ...]:
    """Limited-range BT.601 Y, Cb, Cr of an RGB image (swscale's default for RGB -> YUV)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return y, cb, cr


def db(a: npt.NDArray[np.generic], b: npt.NDArray[np.generic]) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


@pytest.mark.parametrize(("src", "dst", "width", "height"), CONVERSIONS)
def test_convert_quality_against_numpy_reference(
    src: PixelFormat, dst: PixelFormat, width: int, height: int
) -> None:
    """Independently of swscale: the target's luma is the BT.601 luma of the RGB picture
    (> 45 dB; gray is range-mapped to 16..235 with neutral chroma), and at even sizes its U and
    V are the 2x2-averaged Cb and Cr (> 40 dB), so U and V cannot be swapped or misplaced."""
    rgb = rgb_pattern(width, height)
    planes = from_av_frame(source_frame(src, width, height), src)
    out = convert(src, width, height, planes, dst)
    u, v = chroma_of(dst, out)
    if src is PixelFormat.GRAY:
        want_y = 16 + planes[0].astype(np.float64) * 219 / 255
        assert np.abs(out[0] - want_y).max() <= 1.0
        assert (u == 128).all() and (v == 128).all()
        return
    y, cb, cr = bt601(rgb)
    assert db(out[0], y) > 45.0, f"luma {db(out[0], y):.1f} dB"
    if width % 2 or height % 2:
        return  # swscale resamples chroma to the rounded-up size: not a 2x2 average
    ch, cw = height // 2, width // 2
    cb2 = cb.reshape(ch, 2, cw, 2).mean(axis=(1, 3))
    cr2 = cr.reshape(ch, 2, cw, 2).mean(axis=(1, 3))
    assert db(u, cb2) > 40.0, f"U {db(u, cb2):.1f} dB"
    assert db(v, cr2) > 40.0, f"V {db(v, cr2):.1f} dB"


@pytest.mark.parametrize(("width", "height"), [(98, 66), (97, 67)], ids=["98x66", "97x67"])
@pytest.mark.parametrize("dst", YUV420, ids=str)
@pytest.mark.parametrize("src", YUV420, ids=str)
def test_yuv420_reshuffles_are_exact(
    src: PixelFormat, dst: PixelFormat, width: int, height: int
) -> None:
    """Between nv12, nv21 and i420 nothing is resampled: Y is copied and the chroma samples
    are only (de)interleaved or swapped, bit for bit (checked against numpy, random bytes)."""
    rng = np.random.default_rng(7)
    cw, ch = (width + 1) // 2, (height + 1) // 2
    y = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
    u = rng.integers(0, 256, size=(ch, cw), dtype=np.uint8)
    v = rng.integers(0, 256, size=(ch, cw), dtype=np.uint8)
    got = convert(src, width, height, yuv420_planes(src, y, u, v), dst)
    assert_planes_equal(got, yuv420_planes(dst, y, u, v), f"{src.value} -> {dst.value}")


# -- wrong input -------------------------------------------------------------------------------

W, H = 98, 66  # i420: Y (66, 98), U and V (33, 49)


def _i420() -> Planes:
    return random_planes(PixelFormat.I420, W, H)


def _replace(index: int, plane: Array) -> Callable[[Planes], Planes]:
    def build(planes: Planes) -> Planes:
        return (*planes[:index], plane, *planes[index + 1 :])

    return build


def _whole_frame(planes: Planes) -> Planes:
    return (np.concatenate([p.reshape(-1) for p in planes]),)


BAD = [
    pytest.param(
        _replace(0, np.zeros((H - 1, W), np.uint8)), r"shape \(65, 98\)", id="y-row-short"
    ),
    pytest.param(
        _replace(0, np.zeros((H + 1, W), np.uint8)), r"shape \(67, 98\)", id="y-row-extra"
    ),
    pytest.param(
        _replace(0, np.zeros((H, W + 2), np.uint8)), r"shape \(66, 100\)", id="y-too-wide"
    ),
    pytest.param(
        _replace(0, np.zeros((H, W - 1), np.uint8)), r"shape \(66, 97\)", id="y-too-narrow"
    ),
    pytest.param(_replace(0, np.zeros((W, H), np.uint8)), r"shape \(98, 66\)", id="y-transposed"),
    pytest.param(_replace(0, np.zeros(W * H, np.uint8)), r"shape \(6468,\)", id="y-flat"),
    pytest.param(_replace(1, np.zeros((H, W // 2), np.uint8)), r"\(66, 49\)", id="u-full-height"),
    pytest.param(lambda p: p[:2], r"zip\(\) argument", id="missing-plane"),
    pytest.param(lambda p: (*p, p[2]), r"zip\(\) argument", id="extra-plane"),
    pytest.param(_whole_frame, r"shape \(9702,\)", id="whole-frame-as-one-plane"),
]


@pytest.mark.parametrize(("bad", "match"), BAD)
def test_wrong_plane_shapes_raise(bad: Callable[[Planes], Planes], match: str) -> None:
    """Planes of the wrong shape or count raise ValueError (numpy's broadcast error naming the
    shapes, or zip's length error) from to_av_frame and convert, instead of a torn frame."""
    planes = bad(_i420())
    with pytest.raises(ValueError, match=match):
        to_av_frame(PixelFormat.I420, W, H, planes)
    with pytest.raises(ValueError, match=match):
        convert(PixelFormat.I420, W, H, planes, PixelFormat.NV12)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(_replace(0, np.zeros((1, W), np.uint8)), id="y-single-row"),
        pytest.param(_replace(0, np.zeros(W, np.uint8)), id="y-1d-row"),
        pytest.param(_replace(1, np.zeros((H // 2, 1), np.uint8)), id="u-single-column"),
        pytest.param(_replace(2, np.array(128, np.uint8)), id="v-scalar"),
    ],
)
def test_broadcastable_wrong_shapes_raise(bad: Callable[[Planes], Planes]) -> None:
    """A plane with one row, one column or a single value is not the frame: it raises like
    every other wrong shape instead of being spread over the plane by numpy broadcasting."""
    with pytest.raises(ValueError):
        to_av_frame(PixelFormat.I420, W, H, bad(_i420()))


@pytest.mark.parametrize(
    ("actual", "claimed", "match"),
    [
        pytest.param(PixelFormat.I420, PixelFormat.NV12, "shorter than", id="i420-as-nv12"),
        pytest.param(PixelFormat.NV12, PixelFormat.I420, r"zip\(\) argument", id="nv12-as-i420"),
        pytest.param(PixelFormat.GRAY, PixelFormat.RGB24, "shorter than", id="gray-as-rgb24"),
        pytest.param(PixelFormat.I420, PixelFormat.GRAY, r"zip\(\) argument", id="i420-as-gray"),
    ],
)
def test_from_av_frame_of_other_geometry_raises(
    actual: PixelFormat, claimed: PixelFormat, match: str
) -> None:
    """from_av_frame of a frame whose planes cannot hold the claimed format raises ValueError
    (too few or too many planes, or lines too short) rather than reading past the lines."""
    frame = av.VideoFrame(W, H, FFMPEG_NAMES[actual])
    with pytest.raises(ValueError, match=match):
        from_av_frame(frame, claimed)


# -- plane_rows --------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "width", "height"), FMT_SIZES[::3])
def test_plane_rows_is_a_writable_view_of_the_plane(
    fmt: PixelFormat, width: int, height: int
) -> None:
    """plane_rows is a (rows, row_bytes) view with the plane's line size as row stride: writes
    through it land in the frame's rows (to_av_frame relies on this) and the padding is skipped."""
    frame = av.VideoFrame(width, height, FFMPEG_NAMES[fmt])
    planes = random_planes(fmt, width, height, seed=3)
    for plane, p, src in zip(frame.planes, plane_layout(fmt, width, height), planes, strict=True):
        view = plane_rows(plane, p.rows, p.row_bytes)
        assert view.shape == (p.rows, p.row_bytes)
        assert view.strides == (plane.line_size, 1)
        view[...] = src
    assert_planes_equal(ffmpeg_planes(frame, fmt), planes, "frame written through plane_rows")


def test_plane_rows_rejects_lines_shorter_than_a_row() -> None:
    """A row wider than the plane's line size is refused with a message naming both sizes."""
    plane = av.VideoFrame(W, H, "gray").planes[0]
    with pytest.raises(ValueError, match=rf"line size {plane.line_size} is shorter than 999"):
        plane_rows(plane, H, 999)


class _Buffer(np.ndarray):
    """Any buffer with a `line_size`, as plane_rows takes it. PyAV's planes always expose
    line_size * rows bytes, so a buffer whose last line lacks its padding needs a stand-in."""

    line_size: int


def _buffer(size: int, line_size: int) -> _Buffer:
    buf = np.arange(size, dtype=np.uint16).astype(np.uint8).view(_Buffer)
    buf.line_size = line_size
    return buf


def test_plane_rows_last_line_without_padding() -> None:
    """A buffer that ends right after the last row's bytes still gives every row in full; one
    byte less is refused instead of reading past the buffer."""
    rows, row_bytes, line_size = 5, 10, 16
    size = (rows - 1) * line_size + row_bytes
    buf = _buffer(size, line_size)
    view = plane_rows(buf, rows, row_bytes)
    want = np.array([np.asarray(buf)[r * line_size : r * line_size + row_bytes] for r in range(5)])
    assert np.array_equal(view, want)
    with pytest.raises(ValueError, match=rf"buffer of {size - 1} bytes is too small for 5 rows"):
        plane_rows(_buffer(size - 1, line_size), rows, row_bytes)
