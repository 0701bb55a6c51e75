"""acl.media.dvpp_*: DVPP memory, picture descriptors and (encoder output) stream descriptors."""

from __future__ import annotations

from dataclasses import dataclass

from acl import codes
from acl.state import STATE

U32 = 0xFFFF_FFFF


@dataclass
class PicDesc:
    data: int = 0
    size: int = 0
    format: int = 0
    width: int = 0
    height: int = 0
    width_stride: int = 0
    height_stride: int = 0


@dataclass
class StreamDesc:
    data: int = 0
    size: int = 0
    format: int = 0
    timestamp: int = 0
    ret_code: int = 0
    eos: int = 0


def dvpp_malloc(size: int) -> tuple[int, int]:
    if not isinstance(size, int):
        raise TypeError("size must be an int")
    if not STATE.initialized:
        return 0, codes.UNINITIALIZE
    if size <= 0:
        return 0, codes.INVALID_PARAM
    return STATE.memory.alloc(size, "dvpp"), codes.SUCCESS


def dvpp_free(ptr: int) -> int:
    reason = STATE.memory.free(ptr, ("dvpp",))
    if reason:
        STATE.violate(f"dvpp_free: {reason}")
        return codes.INVALID_PARAM
    return codes.SUCCESS


def dvpp_create_pic_desc() -> int:
    return STATE.new_handle(PicDesc()) if STATE.initialized else 0


def dvpp_destroy_pic_desc(pic: int) -> int:
    return _destroy(pic, PicDesc, "dvpp_destroy_pic_desc")


def dvpp_create_stream_desc() -> int:
    return STATE.new_handle(StreamDesc()) if STATE.initialized else 0


def dvpp_destroy_stream_desc(sd: int) -> int:
    return _destroy(sd, StreamDesc, "dvpp_destroy_stream_desc")


def _destroy(handle: int, kind: type, call: str) -> int:
    with STATE.lock:
        if STATE.get(handle, kind) is None:
            STATE.violate(f"{call}(0x{handle:x}): not a live {kind.__name__} (double destroy?)")
            return codes.INVALID_PARAM
        del STATE.handles[handle]
    return codes.SUCCESS


def _set(pic: int, field: str, value: object) -> int:
    if not isinstance(pic, int) or not isinstance(value, int):
        raise TypeError(f"dvpp_set_pic_desc_{field} takes (pic_desc, value) as ints")
    desc = STATE.get(pic, PicDesc)
    if desc is None:
        return codes.INVALID_PARAM
    setattr(desc, field, value if field == "data" else value & U32)
    return codes.SUCCESS


def _get(pic: int, field: str) -> int:
    desc = STATE.get(pic, PicDesc)
    return int(getattr(desc, field)) if desc is not None else 0


def dvpp_set_pic_desc_data(pic: int, data: int) -> int:
    return _set(pic, "data", data)


def dvpp_set_pic_desc_size(pic: int, size: int) -> int:
    return _set(pic, "size", size)


def dvpp_set_pic_desc_format(pic: int, fmt: int) -> int:
    return _set(pic, "format", fmt)


def dvpp_set_pic_desc_width(pic: int, width: int) -> int:
    return _set(pic, "width", width)


def dvpp_set_pic_desc_height(pic: int, height: int) -> int:
    return _set(pic, "height", height)


def dvpp_set_pic_desc_width_stride(pic: int, stride: int) -> int:
    return _set(pic, "width_stride", stride)


def dvpp_set_pic_desc_height_stride(pic: int, stride: int) -> int:
    return _set(pic, "height_stride", stride)


def dvpp_get_pic_desc_data(pic: int) -> int:
    return _get(pic, "data")


def dvpp_get_pic_desc_size(pic: int) -> int:
    return _get(pic, "size")


def dvpp_get_pic_desc_format(pic: int) -> int:
    return _get(pic, "format")


def dvpp_get_pic_desc_width(pic: int) -> int:
    return _get(pic, "width")


def dvpp_get_pic_desc_height(pic: int) -> int:
    return _get(pic, "height")


def dvpp_get_pic_desc_width_stride(pic: int) -> int:
    return _get(pic, "width_stride")


def dvpp_get_pic_desc_height_stride(pic: int) -> int:
    return _get(pic, "height_stride")


def _sget(sd: int, field: str) -> int:
    # Getters on a dead descriptor return 0, as ACL's do; the output desc dies with its callback.
    desc = STATE.get(sd, StreamDesc)
    return int(getattr(desc, field)) if desc is not None else 0


def dvpp_get_stream_desc_data(sd: int) -> int:
    return _sget(sd, "data")


def dvpp_get_stream_desc_size(sd: int) -> int:
    return _sget(sd, "size")


def dvpp_get_stream_desc_format(sd: int) -> int:
    return _sget(sd, "format")


def dvpp_get_stream_desc_timestamp(sd: int) -> int:
    return _sget(sd, "timestamp")


def dvpp_get_stream_desc_ret_code(sd: int) -> int:
    return _sget(sd, "ret_code")


def dvpp_get_stream_desc_eos(sd: int) -> int:
    return _sget(sd, "eos")
