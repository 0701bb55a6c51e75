"""Hostile YAML (recursive aliases, alias bombs) is refused quickly by check, run and reload;
a reload with it leaves the running daemon answering and streaming."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import Collector, Feeder, wait_until

from camingest.errors import ControlError
from camingest.service.control import call

pytestmark = pytest.mark.process

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"
HOSTILE = ["bad_recursive_alias.yaml", "bad_alias_bomb.yaml"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("verb", ["check", "run"])
def test_check_and_run_refuse_hostile_yaml(name: str, verb: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "camingest", verb, "-c", str(CONFIGS / name)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 3, out.stdout + out.stderr
    assert "alias" in out.stdout + out.stderr


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", HOSTILE)
def test_reload_with_hostile_yaml_is_refused_and_the_stream_goes_on(
    make_daemon, stream, name, leaks
):
    daemon = make_daemon([stream("cam0")])
    col = Collector(daemon.out, ["cam0"]).start()
    daemon.wait_subscribers("cam0")
    feed = Feeder(daemon, "cam0", fps=40).start()
    wait_until(lambda: len(col.packets["cam0"]) > 10, 20, "packets before")
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good + "\n" + (CONFIGS / name).read_text().split("streams:")[0])
    with pytest.raises(ControlError, match="alias"):
        call(daemon.control, "reload", timeout_s=10.0)
    before = len(col.packets["cam0"])
    wait_until(lambda: len(col.packets["cam0"]) > before + 20, 20, "packets after the reload")
    assert daemon.stream_status("cam0")["restarts"] == 0
    feed.stop()
    col.stop()
    leaks.finish(daemon)
