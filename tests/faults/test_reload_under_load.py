"""A reload while every capture sends as fast as its worker takes frames: the streams the
reload does not change lose no frame; the changed one resumes with its new settings."""

from __future__ import annotations

import pytest
from helpers import Collector, Feeder, check_decodes, wait_until, write_config

from camingest.service.control import call

pytestmark = pytest.mark.process


@pytest.mark.timeout(120)
def test_reload_at_full_rate_leaves_unchanged_streams_whole(make_daemon, stream, leaks):
    daemon = make_daemon([stream("keep"), stream("change")])
    col = Collector(daemon.out, ["keep", "change"]).start()
    daemon.wait_subscribers("keep")
    daemon.wait_subscribers("change")
    feeds = {n: Feeder(daemon, n, fps=1000).start() for n in ("keep", "change")}
    wait_until(lambda: len(col.packets["keep"]) > 50, 20, "packets before the reload")
    keep_pid = daemon.worker_pid("keep")
    leaks.baseline(daemon)

    new = dict(daemon.config)
    new["streams"] = [stream("keep"), stream("change", codec="h265")]
    write_config(daemon.config_path, new)
    daemon.config = new
    summary = call(daemon.control, "reload", timeout_s=15.0)
    assert summary == {"added": [], "removed": [], "changed": ["change"]}
    daemon.wait_running()
    before = {n: len(col.packets[n]) for n in ("keep", "change")}
    wait_until(
        lambda: all(len(col.packets[n]) > before[n] + 50 for n in before), 30, "packets after"
    )
    for f in feeds.values():
        f.stop()
    wait_until(lambda: len(col.packets["keep"]) >= len(feeds["keep"].sent), 15, "keep drained")
    col.stop()

    keep = col.packets["keep"]
    assert daemon.worker_pid("keep") == keep_pid
    assert [p.header.frame_seq for p in keep] == sorted(feeds["keep"].sent)
    assert len({p.header.epoch for p in keep}) == 1
    check_decodes(keep, feeds["keep"].sent, "h264")
    changed = [p for p in col.packets["change"] if p.header.codec.name == "H265"]
    assert changed and changed[0].header.keyframe
    leaks.finish(daemon)
