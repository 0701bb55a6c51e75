"""The configuration model: typed, frozen, validated by pydantic. No I/O and no probing here.

Loading (YAML, defaults merge, error messages with line numbers) lives in config_load.py;
checks that need the machine (shm space, devices, `auto`) live in preflight.py.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from camingest.protocol import PixelFormat

STREAM_NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"
IPC_PATH_MAX = 107  # sun_path is 108 bytes including the NUL


class Backend(enum.StrEnum):
    PYAV = "pyav"
    ACL = "acl"
    AUTO = "auto"
    NULL = "null"  # benchmark instrument: discards frames, publishes nothing


class CodecName(enum.StrEnum):
    H264 = "h264"
    H265 = "h265"


class RateControl(enum.StrEnum):
    CBR = "cbr"
    VBR = "vbr"
    CQP = "cqp"


PROFILES: dict[CodecName, tuple[str, ...]] = {
    CodecName.H264: ("baseline", "main", "high"),
    CodecName.H265: ("main",),
}


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderConfig(Model):
    """One stream's encoder. `preset`, `tune`, `encoder` and `options` apply to `pyav`;
    `device_id` and `soc` to `acl`."""

    backend: Backend = Field(Backend.AUTO, description="pyav, acl, or auto (acl when present)")
    codec: CodecName = Field(CodecName.H264, description="h264 or h265")
    profile: Literal["baseline", "main", "high"] | None = Field(
        None, description="h264: baseline, main, high; h265: main (default: main)"
    )
    rate_control: RateControl = Field(RateControl.CBR, description="cbr, vbr or cqp")
    bitrate_kbps: int = Field(4000, ge=2, le=614400, description="target bitrate, kbit/s")
    qp: int = Field(26, ge=0, le=51, description="quantizer for rate_control: cqp")
    gop: int = Field(60, ge=1, le=65536, description="frames between keyframes")
    encoder: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_]+$",
        description="pyav: an FFmpeg encoder by name (default libx264/libx265)",
    )
    preset: str = Field("veryfast", description="pyav: x264/x265 preset")
    tune: str | None = Field("zerolatency", description="pyav: x264/x265 tune")
    options: dict[str, str] = Field(
        default_factory=dict, description="pyav: extra FFmpeg encoder options"
    )
    threads: int = Field(0, ge=0, le=64, description="pyav: encoder threads, 0 = automatic")
    device_id: int = Field(0, ge=0, le=63, description="acl: the Ascend device")
    soc: Literal["310B", "310P", "310"] | None = Field(
        None, description="acl: product limits to apply (default: what pyACL reports, else 310B)"
    )

    @model_validator(mode="after")
    def _profile_fits_codec(self) -> EncoderConfig:
        if self.profile is not None and self.profile not in PROFILES[self.codec]:
            allowed = ", ".join(PROFILES[self.codec])
            raise ValueError(
                f"profile {self.profile!r} is not available for {self.codec.value}; "
                f"allowed: {allowed}"
            )
        return self

    @property
    def effective_profile(self) -> str:
        return self.profile or "main"


class OnFull(enum.StrEnum):
    DROP = "drop"
    WAIT = "wait"


class StreamConfig(Model):
    name: str = Field(pattern=STREAM_NAME, description="[a-z0-9_-], at most 32 characters")
    width: int = Field(ge=16, le=8192)
    height: int = Field(ge=16, le=8192)
    pixel_format: PixelFormat = PixelFormat.NV12
    fps: float = Field(30.0, gt=0, le=240)
    slots: int = Field(4, ge=2, le=64, description="frames in the shared-memory ring")
    ingest: tuple[str, ...] = Field(
        (), description="ingest endpoints; default ipc://<runtime_dir>/ingest/<name>.sock"
    )
    on_full: OnFull = Field(OnFull.DROP, description="capture policy when no slot is free")
    max_wait_ms: int = Field(0, ge=0, le=10000, description="bounded wait for on_full: wait")
    encoder: EncoderConfig = Field(default_factory=lambda: EncoderConfig())

    @model_validator(mode="after")
    def _even_sizes(self) -> StreamConfig:
        # Every backend encodes 4:2:0, so odd sizes cannot be encoded whatever comes in.
        if self.width % 2:
            raise ValueError(f"width {self.width} must be even (the encoders take 4:2:0)")
        if self.height % 2:
            raise ValueError(f"height {self.height} must be even (the encoders take 4:2:0)")
        return self

    @field_validator("ingest")
    @classmethod
    def _ingest_endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for ep in value:
            check_endpoint(ep)
        return value


class OutputConfig(Model):
    endpoints: tuple[str, ...] = Field(
        (), description="XPUB endpoints; default ipc://<runtime_dir>/out.sock"
    )
    sndhwm: int = Field(
        200, ge=1, le=100000, description="messages queued per subscriber before it drops"
    )

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for ep in value:
            check_endpoint(ep)
        if len(set(value)) != len(value):
            raise ValueError("the same endpoint is listed twice")
        return value


class SupervisionConfig(Model):
    heartbeat_interval_s: float = Field(0.5, gt=0, le=10)
    hang_timeout_s: float = Field(5.0, gt=0, le=300, description="no heartbeat for this long: hung")
    start_timeout_s: float = Field(20.0, gt=0, le=600, description="first heartbeat within this")
    backoff_initial_s: float = Field(0.5, gt=0, le=60)
    backoff_max_s: float = Field(30.0, gt=0, le=3600)
    max_restarts: int = Field(5, ge=0, le=1000, description="crashes within the window: failed")
    restart_window_s: float = Field(60.0, gt=0, le=86400)
    stop_timeout_s: float = Field(5.0, gt=0, le=300, description="bound on a clean stop")


class MetricsConfig(Model):
    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = Field(9464, ge=1, le=65535)


class LoggingConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"


class DefaultsConfig(Model):
    """Values every stream inherits unless it sets its own (merged key by key for encoder)."""

    fps: float = Field(30.0, gt=0, le=240)
    slots: int = Field(4, ge=2, le=64)
    pixel_format: PixelFormat = PixelFormat.NV12
    encoder: dict[str, object] = Field(default_factory=dict)

    @field_validator("encoder")
    @classmethod
    def _encoder_keys(cls, value: dict[str, object]) -> dict[str, object]:
        EncoderConfig.model_validate(value)  # same keys, types and ranges as a stream's encoder
        return value


class DaemonConfig(Model):
    runtime_dir: Path = Field(Path("/run/camingest"), description="sockets, lock file")
    instance: str | None = Field(
        None, pattern=r"^[a-z0-9_-]{1,16}$", description="names shm segments; default from dir"
    )
    output: OutputConfig = Field(default_factory=lambda: OutputConfig())
    control: str | None = Field(None, description="control socket path; default in runtime_dir")
    metrics: MetricsConfig = Field(default_factory=lambda: MetricsConfig())
    supervision: SupervisionConfig = Field(default_factory=lambda: SupervisionConfig())
    logging: LoggingConfig = Field(default_factory=lambda: LoggingConfig())
    defaults: DefaultsConfig = Field(default_factory=lambda: DefaultsConfig())
    streams: tuple[StreamConfig, ...]

    @field_validator("streams")
    @classmethod
    def _some_streams(cls, value: tuple[StreamConfig, ...]) -> tuple[StreamConfig, ...]:
        if not value:
            raise ValueError("at least one stream is needed")
        return value

    @model_validator(mode="after")
    def _unique(self) -> DaemonConfig:
        seen: dict[str, int] = {}
        for i, s in enumerate(self.streams):
            if s.name in seen:
                raise ValueError(
                    f"stream name {s.name!r} is used by streams[{seen[s.name]}] and streams[{i}]"
                )
            seen[s.name] = i
        owners: dict[str, str] = {}
        for ep in self.output_endpoints:
            owners[_endpoint_key(ep)] = "output.endpoints"
        for s in self.streams:
            for ep in self.ingest_endpoints(s):
                key = _endpoint_key(ep)
                if key in owners:
                    raise ValueError(f"endpoint {ep} of stream {s.name} collides with {owners[key]}")
                owners[key] = f"stream {s.name}"
        for path in [self.control_path, *(e[6:] for e in owners if e.startswith("ipc://"))]:
            if len(str(path).encode()) > IPC_PATH_MAX:
                raise ValueError(f"socket path {path} is longer than {IPC_PATH_MAX} bytes")
        return self

    # Resolved endpoints: the single place that knows the defaults under runtime_dir.
    @property
    def output_endpoints(self) -> tuple[str, ...]:
        return self.output.endpoints or (f"ipc://{self.runtime_dir}/out.sock",)

    def ingest_endpoints(self, stream: StreamConfig) -> tuple[str, ...]:
        return stream.ingest or (f"ipc://{self.runtime_dir}/ingest/{stream.name}.sock",)

    @property
    def control_path(self) -> Path:
        return Path(self.control) if self.control else self.runtime_dir / "control.sock"

    @property
    def fanin_endpoint(self) -> str:
        return f"ipc://{self.runtime_dir}/fanin.sock"

    @property
    def command_endpoint(self) -> str:
        return f"ipc://{self.runtime_dir}/command.sock"

    def stream(self, name: str) -> StreamConfig:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(name)


def check_endpoint(ep: str) -> None:
    if ep.startswith("ipc://"):
        if not ep[6:].startswith("/"):
            raise ValueError(f"{ep}: ipc endpoints need an absolute path")
        if len(ep[6:].encode()) > IPC_PATH_MAX:
            raise ValueError(f"{ep}: ipc path is longer than {IPC_PATH_MAX} bytes")
    elif ep.startswith("tcp://"):
        host, _, port = ep[6:].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{ep}: expected tcp://HOST:PORT with PORT in 1..65535")
    else:
        raise ValueError(f"{ep}: endpoints are ipc://PATH or tcp://HOST:PORT")


def _endpoint_key(ep: str) -> str:
    """Two tcp endpoints on the same port collide when either binds the wildcard address."""
    if ep.startswith("tcp://"):
        host, _, port = ep[6:].rpartition(":")
        return f"tcp://*:{port}" if host in ("*", "0.0.0.0", "[::]") else f"tcp://{host}:{port}"
    return ep
