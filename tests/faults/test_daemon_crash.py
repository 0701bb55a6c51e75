"""The main process is SIGKILLed and started again (as systemd would): captures and subscribers
carry on without being restarted, and no recorder is told the stream ended."""

from __future__ import annotations

import os
import signal
import time

import pytest
from faultkit import alive, group_alive
from helpers import Collector, Feeder, check_decodes, shm_segments, start_daemon, wait_until

pytestmark = pytest.mark.process


@pytest.mark.timeout(120)
@pytest.mark.parametrize("gap_s", [0.1, 1.0])
def test_daemon_killed_and_restarted_subscribers_see_no_false_end(
    make_daemon, stream, gap_s, leaks
):
    daemon = make_daemon([stream("cam0"), stream("cam1", codec="h265")])
    col = Collector(daemon.out, ["cam0", "cam1"]).start()
    daemon.wait_subscribers("cam0")
    daemon.wait_subscribers("cam1")
    feeds = {n: Feeder(daemon, n, fps=40).start() for n in ("cam0", "cam1")}
    wait_until(lambda: min(len(p) for p in col.packets.values()) > 20, 20, "packets before")
    workers = [daemon.worker_pid(n) for n in ("cam0", "cam1")]
    old_epochs = {n: col.packets[n][-1].header.epoch for n in ("cam0", "cam1")}

    old_group = daemon.proc.pid
    os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait(5)
    time.sleep(gap_s)  # the restart delay is the scenario, not a synchronisation
    restarted = start_daemon(daemon.config, daemon.config_path.parent)
    daemon.proc = restarted.proc  # the fixture stops and checks this one at teardown
    # The orphaned workers (and the dead run's fork server) stop by themselves, keeping nothing.
    wait_until(lambda: not any(alive(p) for p in workers), 5, "the orphaned workers to exit")
    wait_until(lambda: not group_alive(old_group), 5, "every process of the dead run to exit")
    daemon.wait_running()

    counts = {n: len(col.packets[n]) for n in ("cam0", "cam1")}
    wait_until(
        lambda: all(len(col.packets[n]) > counts[n] + 20 for n in counts), 30, "packets after"
    )
    # Only the new run's rings exist; the dead run's were swept or unlinked.
    rings = shm_segments(daemon.config["instance"])
    assert len(rings) == 2, rings
    for f in feeds.values():
        f.stop()
    col.stop()
    assert not col.eos, f"a false end of stream reached the subscriber: {col.eos}"
    for name in ("cam0", "cam1"):
        packets = col.packets[name]
        epochs = [p.header.epoch for p in packets]
        new = [e for e in epochs if e != old_epochs[name]]
        assert new, f"{name}: nothing from the new daemon's worker"
        first_new = packets[epochs.index(new[0])]
        assert first_new.header.keyframe, f"{name}: the subscriber resumes at a keyframe"
        # No packet of the old run came after the new run's first one.
        assert old_epochs[name] not in epochs[epochs.index(new[0]) :]
        check_decodes(packets, feeds[name].sent, "h264" if name == "cam0" else "h265")
    leaks.finish(daemon)
