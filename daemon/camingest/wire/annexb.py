"""Annex-B access units: NAL unit types, keyframes, and parameter sets on every keyframe."""

from __future__ import annotations

from camingest.wire.output import CodecName

# NAL unit types
H264_IDR = 5
H264_PARAMS = (7, 8)  # SPS, PPS
H265_IRAP = range(16, 24)  # BLA, IDR, CRA
H265_PARAMS = (32, 33, 34)  # VPS, SPS, PPS


def nal_units(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each NAL unit's payload (after its start code) in an Annex-B buffer."""
    starts: list[int] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    units = []
    for n, start in enumerate(starts):
        end = starts[n + 1] - 3 if n + 1 < len(starts) else len(data)
        if n + 1 < len(starts) and end > start and data[end - 1] == 0:
            end -= 1  # the next start code was 4 bytes long
        units.append((start, end))
    return units


def nal_type(data: bytes, start: int, codec: CodecName) -> int:
    if start >= len(data):
        return -1
    return (data[start] & 0x1F) if codec is CodecName.H264 else (data[start] >> 1) & 0x3F


def nal_types(data: bytes, codec: CodecName) -> list[int]:
    return [nal_type(data, s, codec) for s, _ in nal_units(data)]


def is_keyframe(data: bytes, codec: CodecName) -> bool:
    types = nal_types(data, codec)
    if codec is CodecName.H264:
        return H264_IDR in types
    return any(t in H265_IRAP for t in types)


def parameter_sets(data: bytes, codec: CodecName) -> bytes:
    """The parameter-set NAL units of `data`, each with a 4-byte start code."""
    wanted = H264_PARAMS if codec is CodecName.H264 else H265_PARAMS
    out = bytearray()
    for start, end in nal_units(data):
        if nal_type(data, start, codec) in wanted:
            out += b"\x00\x00\x00\x01" + data[start:end]
    return bytes(out)


class ParameterSetKeeper:
    """Remembers the latest parameter sets and puts them in front of keyframes that lack them.

    Encoders that send SPS/PPS only once (or in extradata) would otherwise leave a subscriber
    that joins later unable to decode anything. Each kind (VPS, SPS, PPS) is replaced only by a
    packet that carries that kind: a new PPS alone keeps the SPS it refers to."""

    def __init__(self, codec: CodecName, initial: bytes = b"") -> None:
        self.codec = codec
        self._sets: dict[int, bytes] = {}  # NAL type -> its units, each with a start code
        if initial:
            self._remember(initial)

    @property
    def params(self) -> bytes:
        return b"".join(self._sets[t] for t in sorted(self._sets, key=self._order))

    def process(self, data: bytes, keyframe: bool) -> bytes:
        if self._remember(data):
            return data
        if keyframe and self._sets:
            return self.params + data
        return data

    def _remember(self, data: bytes) -> bool:
        wanted = H264_PARAMS if self.codec is CodecName.H264 else H265_PARAMS
        found: dict[int, bytearray] = {}
        for start, end in nal_units(data):
            kind = nal_type(data, start, self.codec)
            if kind in wanted:
                found.setdefault(kind, bytearray()).extend(b"\x00\x00\x00\x01" + data[start:end])
        self._sets.update({kind: bytes(units) for kind, units in found.items()})
        return bool(found)

    def _order(self, kind: int) -> int:
        return kind  # VPS < SPS < PPS in both codecs' numbering: the order a decoder needs
