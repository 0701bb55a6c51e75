"""A subscriber that never reads: it loses its own messages at its high-water mark, the others
lose nothing and the daemon's memory stays bounded."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Collector, Feeder, check_decodes, wait_until

pytestmark = pytest.mark.process


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(90)
def test_a_subscriber_that_never_reads_slows_no_one_and_costs_bounded_memory(
    make_daemon, stream, leaks
):
    """A stalled subscriber loses its own messages at its high-water mark (the client counts
    the gap when it reads again); the encoder and a healthy subscriber lose nothing, and the
    daemon's memory stays bounded by the high-water mark while it does not read."""
    from camingest.subscribe import Subscriber

    daemon = make_daemon([stream("cam0", 320, 240)], output={"sndhwm": 5})
    stalled = Subscriber([daemon.out], ["cam0"], rcvhwm=5, control_path=str(daemon.control))
    try:
        col = Collector(daemon.out, ["cam0"]).start()
        daemon.wait_subscribers("cam0", 2)
        leaks.baseline(daemon)
        rss_before = rss_kib(daemon.proc.pid)
        first = Feeder(daemon, "cam0", fps=100).start()
        wait_until(lambda: len(first.sent) >= 150, 30, "frames sent")
        first.stop()
        # 150 packets of ~5-20 KB held for a reader that never comes would be megabytes; the
        # high-water mark of 5 (plus the socket's own buffers) keeps it to a few hundred KB.
        assert rss_kib(daemon.proc.pid) - rss_before < 8 * 1024
        queued = []
        while (p := stalled.recv(0.5)) is not None:
            queued.append(p)
        assert len(queued) < len(first.sent)  # it lost its own messages ...
        second = Feeder(daemon, "cam0", fps=100).start()  # a new capture session
        wait_until(lambda: len(second.sent) >= 60, 30, "more frames")
        second.stop()
        total = len(first.sent) + len(second.sent)
        wait_until(lambda: len(col.packets["cam0"]) >= total, 15, "every packet")
        col.stop()
        # ... while the healthy subscriber lost nothing.
        expected = sorted(first.sent) + sorted(second.sent)
        assert [p.header.frame_seq for p in col.packets["cam0"]] == expected
        later = []
        while (p := stalled.recv(1.0)) is not None:
            later.append(p)
        assert stalled.gaps >= 1  # the gap was seen and counted
        assert later and later[0].header.keyframe  # it resumed at a (requested) keyframe
        check_decodes(later, second.sent, "h264")
    finally:
        stalled.close()
    leaks.finish(daemon)
