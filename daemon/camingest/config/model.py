"""The configuration model: typed, frozen, validated by pydantic. No I/O and no probing here.

Loading (YAML, defaults merge, error messages with line numbers) lives in config/load.py;
checks that need the machine (shm space, devices, `auto`) live in service/preflight.py.

Checks across fields raise `cross_error(...)`: a PydanticCustomError whose context carries
every problem found together with the path (relative to the model) of the field to blame, so
that the loader can point at the offending line instead of at the enclosing model.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from camingest.config.endpoints import IPC_PATH_MAX, check_endpoint, socket_problems
from camingest.config.endpoints import Loc as Loc  # the path of a field; the loader's too
from camingest.wire.output import CodecName
from camingest.wire.pixels import PixelFormat

STREAM_NAME = r"^[a-z0-9][a-z0-9_-]{0,30}$"
INSTANCE_NAME = r"^[a-z0-9][a-z0-9_-]{0,15}$"
ENCODER_NAME = r"^[A-Za-z0-9_]+$"

# What each pattern allows, in words, for error messages.
PATTERN_WORDS: dict[str, str] = {
    STREAM_NAME: "lowercase letters, digits, '_' and '-', starting with a letter or digit, "
    "at most 31 characters",
    INSTANCE_NAME: "lowercase letters, digits, '_' and '-', starting with a letter or digit, "
    "at most 16 characters",
    ENCODER_NAME: "an FFmpeg encoder name: letters, digits and '_' (e.g. libx264, h264_nvenc)",
}

CROSS_FIELD = "cross_field"


class Backend(enum.StrEnum):
    PYAV = "pyav"
    ACL = "acl"
    AUTO = "auto"
    NULL = "null"  # benchmark instrument: discards frames, publishes nothing


class RateControl(enum.StrEnum):
    CBR = "cbr"
    VBR = "vbr"
    CQP = "cqp"


class OnFull(enum.StrEnum):
    DROP = "drop"
    WAIT = "wait"


PROFILES: dict[CodecName, tuple[str, ...]] = {
    CodecName.H264: ("baseline", "main", "high"),
    CodecName.H265: ("main",),
}

# Pixel formats each backend takes as they come from the ring. PyAV converts any format it
# knows; Ascend VENC takes YUV420SP only (reference/acl-venc.md section 5).
# Integers, numbers and booleans are strict: YAML already typed them, so "1280" (quoted), a
# bool where a number belongs, or 25.5 where an integer belongs is a mistake, not a conversion.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]


def _scalar_to_str(value: Any) -> Any:
    # FFmpeg options are strings, but `crf: 23` in YAML is an int: accept scalars as text.
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    return value


Endpoint = Annotated[str, Strict(), AfterValidator(check_endpoint)]
OptionValue = Annotated[str, BeforeValidator(_scalar_to_str), Strict()]


def cross_error(problems: list[tuple[Loc, str]]) -> PydanticCustomError:
    """One error for the problems found across fields; `ctx["problems"]` keeps each with the
    path of the field to blame, relative to the model that raised it."""
    return PydanticCustomError(
        CROSS_FIELD,
        "{message}",
        {"message": "; ".join(m for _, m in problems), "problems": problems},
    )


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class EncoderConfig(Model):
    """One stream's encoder. `preset`, `tune`, `encoder`, `options` and `threads` apply to
    `pyav`; `device_id` and `soc` to `acl`."""

    backend: Backend = Field(
        default=Backend.AUTO, description="pyav, acl, auto (acl when present), null"
    )
    codec: CodecName = Field(default=CodecName.H264, description="h264 or h265")
    profile: Literal["baseline", "main", "high"] | None = Field(
        default=None, description="h264: baseline, main, high; h265: main (default: main)"
    )
    rate_control: RateControl = Field(default=RateControl.CBR, description="cbr, vbr or cqp")
    bitrate_kbps: Int = Field(default=4000, ge=2, le=614400, description="target bitrate, kbit/s")
    qp: Int = Field(default=26, ge=0, le=51, description="quantizer for rate_control: cqp")
    gop: Int = Field(default=60, ge=1, le=65536, description="frames between keyframes")
    encoder: Str | None = Field(
        default=None,
        pattern=ENCODER_NAME,
        description="pyav: an FFmpeg encoder by name (default libx264/libx265)",
    )
    preset: Str = Field(default="veryfast", min_length=1, description="pyav: x264/x265 preset")
    tune: Str | None = Field(default="zerolatency", description="pyav: x264/x265 tune")
    options: dict[str, OptionValue] = Field(
        default_factory=dict, description="pyav: extra FFmpeg encoder options"
    )
    threads: Int = Field(default=0, ge=0, le=64, description="pyav: encoder threads, 0 = automatic")
    device_id: Int = Field(default=0, ge=0, le=63, description="acl: the Ascend device")
    soc: Literal["310B", "310P", "310"] | None = Field(
        default=None,
        description="acl: product limits to apply (default: what pyACL reports, else 310B)",
    )

    @model_validator(mode="after")
    def _profile_fits_codec(self) -> EncoderConfig:
        if self.profile is not None and self.profile not in PROFILES[self.codec]:
            allowed = ", ".join(PROFILES[self.codec])
            raise cross_error(
                [
                    (
                        ("profile",),
                        f"{self.profile!r} is not available for {self.codec.value}; "
                        f"allowed: {allowed}",
                    )
                ]
            )
        return self

    @property
    def effective_profile(self) -> str:
        return self.profile or "main"


def stream_fit_problems(stream: StreamConfig, backend: Backend) -> list[tuple[Loc, str]]:
    """What `backend` cannot take in this stream, known without probing the machine.

    Called by the model for an explicit backend and by preflight once `auto` is resolved."""
    # Every backend takes every pixel format: what the encoder cannot take natively is
    # converted in the worker (to nv12 for acl).
    problems: list[tuple[Loc, str]] = []
    if backend is Backend.ACL and stream.encoder.encoder is not None:
        problems.append(
            (
                ("encoder", "encoder"),
                f"{stream.encoder.encoder!r} names an FFmpeg encoder, which backend acl does not "
                "use; remove it or choose backend: pyav",
            )
        )
    return problems


class StreamConfig(Model):
    name: Str = Field(pattern=STREAM_NAME, description="[a-z0-9_-], at most 31 characters")
    width: Int = Field(ge=16, le=8192, description="frame width in pixels, even")
    height: Int = Field(ge=16, le=8192, description="frame height in pixels, even")
    pixel_format: PixelFormat = Field(
        default=PixelFormat.NV12, description="layout of frames in the ring"
    )
    fps: Float = Field(
        default=30.0, gt=0, le=240, description="frames per second the capture sends"
    )
    slots: Int = Field(default=4, ge=2, le=64, description="frames in the shared-memory ring")
    ingest: tuple[Endpoint, ...] = Field(
        default=(), description="ingest endpoints; default ipc://<runtime_dir>/ingest/<name>.sock"
    )
    on_full: OnFull = Field(default=OnFull.DROP, description="capture policy when no slot is free")
    max_wait_ms: Int = Field(
        default=0, ge=0, le=10000, description="bounded wait for on_full: wait"
    )
    encoder: EncoderConfig = Field(default_factory=lambda: EncoderConfig())

    @model_validator(mode="after")
    def _fits(self) -> StreamConfig:
        problems: list[tuple[Loc, str]] = []
        # Every backend encodes 4:2:0, so odd sizes cannot be encoded whatever comes in.
        for key, value in (("width", self.width), ("height", self.height)):
            if value % 2:
                problems.append(
                    ((key,), f"{value} is odd; allowed: even numbers (the encoders take 4:2:0)")
                )
        if self.encoder.backend is not Backend.AUTO:
            problems += stream_fit_problems(self, self.encoder.backend)
        if self.on_full is OnFull.WAIT and self.max_wait_ms == 0:
            problems.append(
                (("max_wait_ms",), "on_full: wait needs max_wait_ms > 0 (a bounded wait)")
            )
        if problems:
            raise cross_error(problems)
        return self


class OutputConfig(Model):
    endpoints: tuple[Endpoint, ...] = Field(
        default=(), description="XPUB endpoints; default ipc://<runtime_dir>/out.sock"
    )
    sndhwm: Int = Field(
        default=200, ge=1, le=100000, description="messages queued per subscriber before it drops"
    )


class SupervisionConfig(Model):
    heartbeat_interval_s: Float = Field(
        default=0.5, gt=0, le=10, description="worker heartbeat period"
    )
    hang_timeout_s: Float = Field(
        default=5.0, gt=0, le=300, description="no heartbeat for this long: hung"
    )
    start_timeout_s: Float = Field(
        default=20.0, gt=0, le=600, description="first heartbeat within this"
    )
    stable_after_s: Float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="a worker that ran this long and crashes is restarted at once, no backoff",
    )
    backoff_initial_s: Float = Field(default=0.5, gt=0, le=60, description="first restart delay")
    backoff_max_s: Float = Field(default=30.0, gt=0, le=3600, description="longest restart delay")
    max_restarts: Int = Field(
        default=5, ge=0, le=1000, description="crashes within the window: failed"
    )
    restart_window_s: Float = Field(
        default=60.0, gt=0, le=86400, description="window for max_restarts"
    )
    stop_timeout_s: Float = Field(default=5.0, gt=0, le=300, description="bound on a clean stop")

    @model_validator(mode="after")
    def _ordered(self) -> SupervisionConfig:
        problems: list[tuple[Loc, str]] = []
        if self.backoff_initial_s > self.backoff_max_s:
            problems.append(
                (
                    ("backoff_initial_s",),
                    f"{self.backoff_initial_s:g} is above backoff_max_s {self.backoff_max_s:g}",
                )
            )
        if self.heartbeat_interval_s >= self.hang_timeout_s:
            problems.append(
                (
                    ("hang_timeout_s",),
                    f"{self.hang_timeout_s:g} must be longer than heartbeat_interval_s "
                    f"{self.heartbeat_interval_s:g}",
                )
            )
        if problems:
            raise cross_error(problems)
        return self


class MetricsConfig(Model):
    enabled: Bool = Field(default=False, description="serve Prometheus metrics over HTTP")
    address: Str = Field(
        default="127.0.0.1", min_length=1, description="address the HTTP server binds"
    )
    port: Int = Field(default=9464, ge=1, le=65535, description="HTTP port")


class LoggingConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="log level"
    )


class DefaultsConfig(Model):
    """Values every stream inherits unless it sets its own (merged key by key for `encoder`,
    by config.load.merge_defaults, before validation). Only the keys written in the file are
    inherited; the values shown here are the streams' own defaults."""

    fps: Float = Field(default=30.0, gt=0, le=240, description="frames per second")
    slots: Int = Field(default=4, ge=2, le=64, description="frames in each shared-memory ring")
    pixel_format: PixelFormat = Field(default=PixelFormat.NV12, description="layout of frames")
    on_full: OnFull = Field(default=OnFull.DROP, description="capture policy when no slot is free")
    max_wait_ms: Int = Field(
        default=0, ge=0, le=10000, description="bounded wait for on_full: wait"
    )
    encoder: EncoderConfig = Field(default_factory=lambda: EncoderConfig())


class DaemonConfig(Model):
    runtime_dir: Path = Field(default=Path("/run/camingest"), description="sockets, lock file")
    instance: Str | None = Field(
        default=None, pattern=INSTANCE_NAME, description="names shm segments; default from dir"
    )
    output: OutputConfig = Field(default_factory=lambda: OutputConfig())
    control: Str | None = Field(
        default=None, description="control socket path; default in runtime_dir"
    )
    metrics: MetricsConfig = Field(default_factory=lambda: MetricsConfig())
    supervision: SupervisionConfig = Field(default_factory=lambda: SupervisionConfig())
    logging: LoggingConfig = Field(default_factory=lambda: LoggingConfig())
    defaults: DefaultsConfig = Field(default_factory=lambda: DefaultsConfig())
    streams: tuple[StreamConfig, ...] = Field(description="a list of streams, at least one")

    @field_validator("runtime_dir")
    @classmethod
    def _absolute_dir(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"{str(value)!r} is relative; allowed: an absolute path")
        return value

    @field_validator("control")
    @classmethod
    def _absolute_control(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value!r} is relative; allowed: an absolute path")
        if value is not None and len(value.encode()) > IPC_PATH_MAX:
            raise ValueError(f"path is {len(value.encode())} bytes; at most {IPC_PATH_MAX}")
        return value

    @field_validator("streams")
    @classmethod
    def _some_streams(cls, value: tuple[StreamConfig, ...]) -> tuple[StreamConfig, ...]:
        if not value:
            raise ValueError("the list is empty; at least one stream is needed")
        return value

    @model_validator(mode="after")
    def _unique(self) -> DaemonConfig:
        problems: list[tuple[Loc, str]] = []
        seen: dict[str, int] = {}
        for i, s in enumerate(self.streams):
            if s.name in seen:
                problems.append(
                    (
                        ("streams", i, "name"),
                        f"{s.name!r} is already the name of streams[{seen[s.name]}]",
                    )
                )
            else:
                seen[s.name] = i
        problems += socket_problems(self._claims(), str(self.runtime_dir))
        if problems:
            raise cross_error(problems)
        return self

    def _claims(self) -> list[tuple[str, str, Loc]]:
        """(endpoint, owner, path to blame) of every socket the daemon binds, in claim order."""
        rd: Loc = ("runtime_dir",)
        explicit_control = self.control is not None
        claims: list[tuple[str, str, Loc]] = [
            (self.fanin_endpoint, "the internal fan-in socket", rd),
            (self.command_endpoint, "the internal command socket", rd),
            (
                f"ipc://{self.control_path}",
                "the control socket",
                ("control",) if explicit_control else rd,
            ),
        ]
        for j, ep in enumerate(self.output_endpoints):
            at: Loc = ("output", "endpoints", j) if self.output.endpoints else rd
            claims.append((ep, f"output.endpoints[{j}]", at))
        if self.metrics.enabled:
            ep = f"tcp://{self.metrics.address}:{self.metrics.port}"
            claims.append((ep, "the metrics server", ("metrics", "port")))
        names: set[str] = set()
        for i, s in enumerate(self.streams):
            if s.name in names:
                continue  # already reported as a duplicate name
            names.add(s.name)
            for j, ep in enumerate(self.ingest_endpoints(s)):
                at = ("streams", i, "ingest", j) if s.ingest else ("streams", i, "name")
                claims.append((ep, f"the ingest socket of stream {s.name!r}", at))
        return claims

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
