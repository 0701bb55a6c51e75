"""Config model, loader messages, preflight and `camingest check`.

Each tests/data/configs/bad_<defect>.yaml holds one defect, marked with `# <- defect` on the
line the message must name; the table below gives the path and a part of the message.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from camingest.cli.check import check_config
from camingest.config.endpoints import endpoints_collide
from camingest.config.load import load_config, merge_defaults, parse_config
from camingest.config.model import Backend, DaemonConfig, OnFull, RateControl
from camingest.errors import ConfigError, ExitCode
from camingest.service.preflight import preflight, ring_bytes, summary_line
from camingest.wire.output import CodecName
from camingest.wire.pixels import PixelFormat

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "tests" / "data" / "configs"
SHIPPED = [
    ROOT / "config" / "camingest.yaml",
    ROOT / "config" / "examples" / "atlas-200i-a2.yaml",
    ROOT / "config" / "examples" / "x86-rtsp.yaml",
]
MARK = "# <- defect"
GIB = 1 << 30

# file -> (path in the document or "" for the whole file, a part of the message)
BAD: dict[str, tuple[str, str]] = {
    "bad_typo_key.yaml": ("streams[0].heigth", "unknown key 'heigth' (did you mean 'height'?)"),
    "bad_codec.yaml": ("streams[1].encoder.codec", "'h266' is not allowed; allowed: h264, h265"),
    "bad_odd_width.yaml": ("streams[0].width", "641 is odd; allowed: even numbers"),
    "bad_duplicate_name.yaml": ("streams[1].name", "'cam0' is already the name of streams[0]"),
    "bad_endpoint_collision.yaml": (
        "streams[0].ingest[0]",
        "tcp://*:5600 collides with output.endpoints[0] (tcp://127.0.0.1:5600)",
    ),
    "bad_endpoint_same_ipc.yaml": ("streams[1].ingest[0]", "collides with the ingest socket"),
    "bad_ingest_is_control.yaml": ("streams[0].ingest[0]", "collides with the control socket"),
    "bad_output_is_fanin.yaml": ("output.endpoints[0]", "collides with the internal fan-in"),
    "bad_metrics_port_collision.yaml": ("metrics.port", "tcp://0.0.0.0:5600 collides with"),
    "bad_not_yaml.yaml": ("", "not valid YAML: expected ',' or ']'"),
    "bad_empty.yaml": ("", "the file is empty; expected a mapping"),
    "bad_top_list.yaml": ("", "expected a mapping at the top"),
    "bad_out_of_range_fps.yaml": (
        "streams[0].fps",
        "500 is out of range; allowed: a number above 0 and at most 240",
    ),
    "bad_profile_for_h265.yaml": (
        "streams[0].encoder.profile",
        "'high' is not available for h265; allowed: main",
    ),
    "bad_ipc_path_too_long.yaml": ("output.endpoints[0]", "is 111 bytes; at most 107"),
    "bad_runtime_dir_too_long.yaml": ("runtime_dir", "at most 107: choose a shorter runtime_dir"),
    "bad_defaults_typo.yaml": (
        "defaults.encoder.bitrat_kbps",
        "unknown key 'bitrat_kbps' (did you mean 'bitrate_kbps'?)",
    ),
    "bad_defaults_out_of_range.yaml": (
        "defaults.encoder.gop",
        "0 is out of range; allowed: an integer from 1 to 65536",
    ),
    "bad_name_pattern.yaml": (
        "streams[0].name",
        "'Front Door' is not allowed; allowed: lowercase letters, digits",
    ),
    "bad_missing_width.yaml": (
        "streams[0].width",
        "required key is missing; allowed: an integer from 16 to 8192",
    ),
    "bad_quoted_number.yaml": ("streams[0].width", "'640' is not an integer"),
    "bad_yaml_boolean.yaml": ("streams[0].encoder.tune", "false is not a string (YAML reads"),
    "bad_duplicate_key.yaml": ("", "duplicate key 'width' (first at line 3)"),
    "bad_no_streams.yaml": ("streams", "the list is empty"),
    "bad_wait_without_bound.yaml": ("streams[0].max_wait_ms", "on_full: wait needs max_wait_ms"),
    "bad_backoff_order.yaml": (
        "supervision.backoff_initial_s",
        "20 is above backoff_max_s 10",
    ),
    "bad_endpoint_scheme.yaml": (
        "output.endpoints[0]",
        "allowed: ipc:///absolute/path or tcp://HOST:PORT",
    ),
    "bad_pixel_format.yaml": ("streams[0].pixel_format", "'yuv420p' is not allowed; allowed: nv12"),
    "bad_streams_not_list.yaml": ("streams", "expected a list, got a mapping"),
    "bad_soc.yaml": ("streams[0].encoder.soc", "'910B' is not allowed; allowed: 310B, 310P, 310"),
    "bad_recursive_alias.yaml": ("", "a recursive alias: this value contains itself"),
    "bad_alias_bomb.yaml": ("", "expands to more than 100000 values through its aliases"),
    "bad_nested_too_deep.yaml": ("", "nested too deeply to be a camingest config"),
}


def marked_line(path: Path) -> int | None:
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if MARK in text:
            return number
    return None


def test_every_bad_file_is_in_the_table() -> None:
    assert {p.name for p in CONFIGS.glob("bad_*.yaml")} == set(BAD)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_config_is_refused_with_file_line_and_path(name: str) -> None:
    path = CONFIGS / name
    dotted, words = BAD[name]
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.exit_code is ExitCode.CONFIG
    problems = info.value.problems
    assert len(problems) == 1, problems  # one defect, one message: nothing repeated or noisy
    line = marked_line(path)
    where = f"{path}:{line}: " if line else f"{path}: "
    prefix = where + (f"{dotted}: " if dotted else "")
    assert problems[0].startswith(prefix), problems[0]
    assert words in problems[0]


@pytest.mark.parametrize("path", [CONFIGS / "minimal.yaml", CONFIGS / "full.yaml", *SHIPPED])
def test_good_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.streams
    ok, lines = check_config(str(path), shm_free=lambda: GIB)
    assert ok, lines
    assert lines[0] == f"ok: {path}: {len(config.streams)} stream" + (
        "s" if len(config.streams) != 1 else ""
    )
    assert [line.split(":")[0] for line in lines[1:]] == [s.name for s in config.streams]


def test_shipped_default_is_the_demo_config() -> None:
    config = load_config(SHIPPED[0])
    assert config.runtime_dir == Path("/tmp/camingest-demo")
    assert config.output_endpoints == (
        "ipc:///tmp/camingest-demo/out.sock",
        "tcp://127.0.0.1:5600",
    )
    cam0, cam1 = config.streams
    assert (cam0.width, cam0.height, cam0.pixel_format, cam0.fps) == (1280, 720, "nv12", 25)
    assert (cam0.encoder.codec, cam0.encoder.effective_profile) == (CodecName.H264, "main")
    assert (cam1.width, cam1.height, cam1.pixel_format, cam1.fps) == (640, 480, "i420", 15)
    assert cam1.encoder.codec is CodecName.H265
    assert {s.encoder.backend for s in config.streams} == {Backend.PYAV}
    assert {s.encoder.preset for s in config.streams} == {"ultrafast"}


def test_minimal_config_takes_the_documented_defaults() -> None:
    config = load_config(CONFIGS / "minimal.yaml")
    (s,) = config.streams
    assert (s.pixel_format, s.fps, s.slots, s.on_full) == (PixelFormat.NV12, 30.0, 4, OnFull.DROP)
    assert s.encoder.backend is Backend.AUTO
    assert s.encoder.rate_control is RateControl.CBR
    assert config.output_endpoints == ("ipc:///run/camingest/out.sock",)
    assert config.ingest_endpoints(s) == ("ipc:///run/camingest/ingest/cam0.sock",)
    assert config.control_path == Path("/run/camingest/control.sock")
    assert config.fanin_endpoint == "ipc:///run/camingest/fanin.sock"
    assert config.command_endpoint == "ipc:///run/camingest/command.sock"
    assert config.stream("cam0") is s
    with pytest.raises(KeyError):
        config.stream("nope")


def test_defaults_merge_key_by_key_and_streams_override() -> None:
    config = load_config(CONFIGS / "full.yaml")
    cam0, cam1, bench = config.streams
    # cam0 sets nothing: everything from defaults
    assert (cam0.fps, cam0.slots, cam0.pixel_format) == (15.0, 3, PixelFormat.I420)
    assert (cam0.encoder.codec, cam0.encoder.profile, cam0.encoder.gop) == ("h264", "high", 30)
    assert cam0.encoder.options == {"crf": "23", "forced-idr": "1"}  # scalars become strings
    # cam1 overrides top-level keys and some encoder keys; the rest still comes from defaults
    assert (cam1.fps, cam1.slots, cam1.pixel_format) == (30.0, 8, PixelFormat.NV12)
    assert (cam1.encoder.codec, cam1.encoder.profile) == (CodecName.H265, "main")
    assert cam1.encoder.rate_control is RateControl.CQP and cam1.encoder.qp == 30
    assert (cam1.encoder.preset, cam1.encoder.bitrate_kbps) == ("ultrafast", 1000)
    assert cam1.on_full is OnFull.WAIT and cam1.max_wait_ms == 20
    assert config.ingest_endpoints(cam1) == ("tcp://127.0.0.1:15601",)
    assert bench.encoder.backend is Backend.NULL
    assert config.control_path == Path("/tmp/camingest-test-full/ctl.sock")


def test_merge_defaults_leaves_the_input_alone_and_skips_excluded_keys() -> None:
    data = {
        "defaults": {"fps": 10, "encoder": {"gop": 5, "codec": "h265"}},
        "streams": [{"name": "a", "encoder": {"gop": 7}}, {"name": "b"}],
    }
    merged = merge_defaults(data, exclude=frozenset({("encoder", "codec")}))
    assert merged["streams"] == [
        {"name": "a", "fps": 10, "encoder": {"gop": 7}},
        {"name": "b", "fps": 10, "encoder": {"gop": 5}},
    ]
    assert data["streams"] == [{"name": "a", "encoder": {"gop": 7}}, {"name": "b"}]


def test_inherited_profile_that_does_not_fit_the_streams_codec() -> None:
    text = (
        "defaults:\n  encoder: {profile: high}\n"
        "streams:\n  - {name: a, width: 64, height: 64, encoder: {codec: h265}}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.yaml")
    assert info.value.problems == [
        "x.yaml:4: streams[0].encoder.profile: 'high' is not available for h265; allowed: main"
        " (inherited from defaults.encoder.profile, line 2)"
    ]


STREAM = "streams:\n  - {name: a, width: 64, height: 64, %s}\n"


@pytest.mark.parametrize(
    ("fragment", "path", "words"),
    [
        ("fps: fast", "streams[0].fps", "'fast' is not a number"),
        ("fps: .nan", "streams[0].fps", "out of range"),
        ("slots: 2.5", "streams[0].slots", "2.5 is not an integer"),
        ("slots: true", "streams[0].slots", "true is not an integer"),
        ("slots: 1", "streams[0].slots", "allowed: an integer from 2 to 64"),
        ("on_full: block", "streams[0].on_full", "'block' is not allowed; allowed: drop, wait"),
        ("encoder: {codec: 264}", "streams[0].encoder.codec", "264 is not allowed; allowed: h264"),
        ("encoder: {encoder: lib x264}", "streams[0].encoder.encoder", "an FFmpeg encoder name"),
        ("encoder: {bitrate_kbps: 1}", "streams[0].encoder.bitrate_kbps", "from 2 to 614400"),
        ("encoder: {preset: ''}", "streams[0].encoder.preset", "must not be empty"),
        ("encoder: fast", "streams[0].encoder", "expected a mapping"),
        ("ingest: [tcp://host]", "streams[0].ingest[0]", "tcp://HOST:PORT"),
        ("ingest: [ipc://rel/x.sock]", "streams[0].ingest[0]", "an absolute path"),
        ("encoder: {backend: acl, encoder: libx264}", "streams[0].encoder.encoder", "acl"),
    ],
)
def test_value_messages(fragment: str, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(STREAM % fragment, "x.yaml")
    assert len(info.value.problems) == 1, info.value.problems
    assert info.value.problems[0].startswith(f"x.yaml:2: {path}: ")
    assert words in info.value.problems[0]


def test_top_level_typo_and_relative_paths() -> None:
    text = "runtim_dir: /x\nruntime_dir: rel\ncontrol: rel.sock\n" + STREAM % "fps: 5"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.yaml")
    assert info.value.problems == [
        "x.yaml:1: runtim_dir: unknown key 'runtim_dir' (did you mean 'runtime_dir'?); "
        "allowed: runtime_dir, instance, output, control, metrics, supervision, logging, "
        "defaults, streams",
        "x.yaml:2: runtime_dir: 'rel' is relative; allowed: an absolute path",
        "x.yaml:3: control: 'rel.sock' is relative; allowed: an absolute path",
    ]


def test_unreadable_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "does-not-exist.yaml")
    assert info.value.problems[0].endswith("cannot read: No such file or directory")


@pytest.mark.parametrize(
    ("a", "b", "collide"),
    [
        ("tcp://127.0.0.1:5600", "tcp://127.0.0.1:5600", True),
        ("tcp://127.0.0.1:5600", "tcp://127.0.0.1:5601", False),
        ("tcp://127.0.0.1:5600", "tcp://10.0.0.1:5600", False),
        ("tcp://*:5600", "tcp://10.0.0.1:5600", True),
        ("tcp://10.0.0.1:5600", "tcp://0.0.0.0:5600", True),
        ("tcp://[::]:5600", "tcp://[::1]:5600", True),
        ("ipc:///run/x/a.sock", "ipc:///run/x/./a.sock", True),
        ("ipc:///run/x/a.sock", "ipc:///run/x/b.sock", False),
        ("ipc:///run/x/a.sock", "tcp://*:5600", False),
    ],
)
def test_endpoints_collide(a: str, b: str, collide: bool) -> None:
    assert endpoints_collide(a, b) is collide
    assert endpoints_collide(b, a) is collide


def test_config_is_frozen() -> None:
    config = load_config(CONFIGS / "minimal.yaml")
    with pytest.raises(ValueError):
        config.streams[0].width = 64


# ---------------------------------------------------------------------------------------------
# preflight and check


def two_streams(extra: str = "") -> DaemonConfig:
    return parse_config(
        "runtime_dir: /tmp/camingest-t\nstreams:\n"
        "  - {name: a, width: 1280, height: 720, slots: 4, encoder: {backend: pyav}}\n"
        f"  - {{name: b, width: 640, height: 480, pixel_format: bgr24, slots: 2{extra}}}\n",
        "t.yaml",
    )


def test_ring_bytes_counts_header_and_aligned_slots() -> None:
    a, b = two_streams().streams
    assert ring_bytes(a) == 4096 + 4 * 1384448  # 1280*720*1.5 = 1382400, rounded up to 4 KiB
    assert ring_bytes(b) == 4096 + 2 * 921600  # 640*480*3 is already 4 KiB aligned


def test_preflight_refuses_rings_that_do_not_fit_in_shm() -> None:
    config = two_streams(", encoder: {backend: pyav}")
    need = sum(ring_bytes(s) for s in config.streams)
    assert preflight(config, shm_free=lambda: need) == []
    (problem,) = preflight(config, shm_free=lambda: need - 1)
    assert problem.startswith(
        f"/dev/shm: the frame rings need 7.0 MiB ({need} bytes: a 5.3 MiB, b 1.8 MiB) "
        f"but only 7.0 MiB ({need - 1} bytes) is free; enlarge /dev/shm"
    )
    assert problem.endswith("or lower slots")


def test_preflight_shm_unreadable() -> None:
    def broken() -> int:
        raise FileNotFoundError(2, "No such file or directory")

    config = two_streams(", encoder: {backend: pyav}")
    assert preflight(config, shm_free=broken) == [
        "/dev/shm: cannot check free space: No such file or directory"
    ]


def test_preflight_resolves_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    import camingest.worker.encoders.auto as auto

    config = two_streams()  # stream b: auto, bgr24
    monkeypatch.setattr(auto, "resolve_backend", lambda: "pyav")
    assert preflight(config, shm_free=lambda: GIB) == []
    monkeypatch.setattr(auto, "resolve_backend", lambda: "acl")
    problems = preflight(two_streams(", encoder: {rate_control: cqp}"), shm_free=lambda: GIB)
    assert len(problems) == 1
    assert problems[0].startswith("streams[1]")
    assert "cqp" in problems[0]


def test_preflight_checks_acl_product_limits() -> None:
    config = parse_config(
        "streams:\n  - {name: a, width: 4000, height: 480, encoder: {backend: acl, soc: '310'}}\n"
    )
    problems = preflight(config, shm_free=lambda: GIB)
    assert problems, "a 4000 pixel wide frame is beyond the Ascend 310"
    assert all(p.startswith("streams[0]: ") for p in problems)
    assert any("4000" in p for p in problems)


@pytest.mark.parametrize(
    ("name", "codec", "words"),
    [
        ("libx264", "h264", None),
        ("libx265", "h265", None),
        ("libx265", "h264", "'libx265' encodes libx265 H.265 / HEVC, not h264"),
        ("no_such_encoder", "h264", "'no_such_encoder' is not in this FFmpeg build"),
        ("mjpeg", "h265", "not h265; choose an hevc encoder (e.g. libx265)"),
    ],
)
def test_preflight_checks_pyav_encoder_names(name: str, codec: str, words: str | None) -> None:
    config = parse_config(
        "streams:\n  - {name: a, width: 64, height: 64, "
        f"encoder: {{backend: pyav, encoder: {name}, codec: {codec}}}}}\n"
    )
    problems = preflight(config, shm_free=lambda: GIB)
    if words is None:
        assert problems == []
    else:
        (problem,) = problems
        assert problem.startswith("streams[0].encoder.encoder: ")
        assert words in problem


def test_preflight_names_the_missing_device_of_a_hardware_encoder() -> None:
    import av

    if "h264_nvenc" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no h264_nvenc")
    if any(Path("/dev").glob("nvidia[0-9]*")):
        pytest.skip("an NVIDIA device is present")
    config = parse_config(
        "streams:\n  - {name: a, width: 64, height: 64, "
        "encoder: {backend: pyav, encoder: h264_nvenc}}\n"
    )
    (problem,) = preflight(config, shm_free=lambda: GIB)
    assert "'h264_nvenc' needs device /dev/nvidia0" in problem


def test_summary_line() -> None:
    config = load_config(CONFIGS / "full.yaml")
    assert [summary_line(s) for s in config.streams] == [
        "cam0: 160x120 i420 15 fps -> pyav h264/high cbr 1000 kbit/s, gop 30, 3 slots",
        "cam1: 320x240 nv12 30 fps -> pyav h265/main cqp qp 30, gop 30, 8 slots",
        "bench: 64x64 i420 15 fps -> null h264/high cbr 1000 kbit/s, gop 30, 3 slots",
    ]


def test_check_config_ok_output() -> None:
    path = str(CONFIGS / "full.yaml")
    ok, lines = check_config(path, shm_free=lambda: GIB)
    assert ok
    assert lines[0] == f"ok: {path}: 3 streams"
    assert lines[1].startswith("cam0: 160x120 i420 15 fps -> pyav h264/high")


def test_check_config_reports_load_errors() -> None:
    path = str(CONFIGS / "bad_codec.yaml")
    ok, lines = check_config(path)
    assert not ok
    assert lines == [
        f"{path}:9: streams[1].encoder.codec: 'h266' is not allowed; allowed: h264, h265"
    ]


def test_check_config_reports_preflight_problems_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "streams:\n"
        "  - {name: a, width: 64, height: 64, encoder: {backend: pyav}}\n"
        "  - name: b\n"
        "    width: 64\n"
        "    height: 64\n"
        "    encoder:\n"
        "      backend: pyav\n"
        "      encoder: libx265\n"
    )
    ok, lines = check_config(str(path), shm_free=lambda: 1)
    assert not ok
    assert lines[0].startswith(f"{path}: /dev/shm: the frame rings need")
    assert lines[1].startswith(f"{path}:8: streams[1].encoder.encoder: 'libx265' encodes")
    assert len(lines) == 2


def test_check_config_on_the_real_shm() -> None:
    """The default measures /dev/shm itself; a tiny config fits any machine that has one."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm on this machine")
    ok, lines = check_config(str(CONFIGS / "full.yaml"))
    assert ok, lines
