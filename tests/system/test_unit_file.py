"""The shipped systemd files: `systemd-analyze verify` passes, the design's settings are there,
and the sysusers/tmpfiles snippets apply to a scratch root."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "camingest.service"
SHIPPED_BINARY = "/usr/local/bin/camingest"


def need(command: str) -> str:
    path = shutil.which(command)
    if path is None:
        pytest.skip(f"{command} is not installed (systemd tools missing on this machine)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def unit_settings(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> values in order (systemd keys may repeat, e.g. DeviceAllow=)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def local_unit(tmp_path: Path) -> Path:
    """The unit with its Exec paths pointing at this environment's camingest, because verify
    checks that the binaries exist; the shipped file keeps the real install path."""
    text = UNIT.read_text()
    assert text.count(SHIPPED_BINARY) >= 2
    script = Path(sys.executable).with_name("camingest")
    binary = script if script.exists() else Path(sys.executable)
    path = tmp_path / "camingest.service"
    path.write_text(text.replace(SHIPPED_BINARY, str(binary)))
    return path


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = need("systemd-analyze")
    unit = local_unit(tmp_path)
    result = run(analyze, "verify", "--man=no", str(unit))
    # verify exits 0 on unknown keys and bad values, so its warnings must be checked too;
    # lines about other units (a host's own configuration) are not ours to fix.
    ours = [line for line in result.stderr.splitlines() if "camingest" in line]
    assert result.returncode == 0, result.stderr
    assert ours == [], result.stderr


def test_verify_would_catch_a_typo(tmp_path: Path) -> None:
    """Guards the check above: a misspelt key must show up in verify's output."""
    analyze = need("systemd-analyze")
    unit = local_unit(tmp_path)
    unit.write_text(unit.read_text().replace("LockPersonality=", "LockPersonalty="))
    result = run(analyze, "verify", "--man=no", str(unit))
    assert "LockPersonalty" in result.stderr


def test_security_exposure(tmp_path: Path) -> None:
    analyze = need("systemd-analyze")
    unit = local_unit(tmp_path)
    # --threshold: the command fails when the exposure score is above 4.0 ("OK" and better).
    result = run(analyze, "security", "--offline=yes", "--threshold=40", "--no-pager", str(unit))
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_has_the_designed_settings() -> None:
    s = unit_settings(UNIT.read_text())
    assert s["Service.Type"] == ["notify"]
    assert s["Service.NotifyAccess"] == ["main"]
    assert s["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Service.ExecStartPre"] == [f"{SHIPPED_BINARY} check -c /etc/camingest/camingest.yaml"]
    assert s["Service.ExecStart"] == [f"{SHIPPED_BINARY} run -c /etc/camingest/camingest.yaml"]
    assert s["Service.WatchdogSec"] == ["10"]
    assert s["Service.Restart"] == ["on-failure"]
    assert s["Service.RestartPreventExitStatus"] == ["2 3"]
    assert s["Service.KillMode"] == ["mixed"]
    assert s["Service.TimeoutStopSec"] == ["20"]
    assert s["Service.RuntimeDirectory"] == ["camingest"]
    assert s["Service.RuntimeDirectoryMode"] == ["0750"]
    assert s["Service.User"] == ["camingest"]
    assert "video" in s["Service.SupplementaryGroups"][0].split()
    assert s["Service.DevicePolicy"] == ["closed"]
    allowed = {v.split()[0] for v in s["Service.DeviceAllow"]}
    assert {"char-video4linux", "char-drm", "/dev/davinci_manager", "/dev/davinci0"} <= allowed
    # The rings live in /dev/shm and are opened by captures outside the unit: no private /dev.
    assert s.get("Service.PrivateDevices", ["no"]) == ["no"]
    assert "Service.PrivateIPC" not in s
    assert s["Service.RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert s["Install.WantedBy"] == ["multi-user.target"]


def apply_sysusers(root: Path) -> subprocess.CompletedProcess[str]:
    """Install the snippet into a scratch root the way a package would, and run sysusers."""
    sysusers = need("systemd-sysusers")
    conf = root / "usr/lib/sysusers.d"
    conf.mkdir(parents=True)
    (root / "etc").mkdir(exist_ok=True)
    shutil.copy(SYSTEMD_DIR / "camingest.sysusers", conf / "camingest.conf")
    return run(sysusers, f"--root={root}", "camingest.conf")


def group_entries(root: Path) -> dict[str, list[str]]:
    lines = (root / "etc/group").read_text().split()
    return {fields[0]: fields for fields in (line.split(":") for line in lines)}


def test_sysusers_snippet_applies(tmp_path: Path) -> None:
    result = apply_sysusers(tmp_path)
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc/passwd").read_text().splitlines()
    groups = group_entries(tmp_path)
    assert any(line.startswith("camingest:") for line in passwd)
    assert "camingest" in groups
    assert "camingest" in groups["video"][3].split(",")
    assert "HwHiAiUser" not in groups  # only where the Ascend driver made it


def test_tmpfiles_snippet_applies(tmp_path: Path) -> None:
    tmpfiles = need("systemd-tmpfiles")
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles --create chowns to root, which needs root")
    # Same order as an install: sysusers makes the group the tmpfiles lines name.
    assert apply_sysusers(tmp_path).returncode == 0
    conf = tmp_path / "usr/lib/tmpfiles.d"
    conf.mkdir(parents=True)
    shutil.copy(SYSTEMD_DIR / "camingest.tmpfiles", conf / "camingest.conf")
    result = run(tmpfiles, f"--root={tmp_path}", "--create", "camingest.conf")
    assert result.returncode == 0, result.stderr
    etc = (tmp_path / "etc/camingest").stat()
    assert stat.S_IMODE(etc.st_mode) == 0o750
    assert etc.st_uid == 0
    assert etc.st_gid == int(group_entries(tmp_path)["camingest"][2])
    assert stat.S_IMODE((tmp_path / "etc/camingest/credentials").stat().st_mode) == 0o700
