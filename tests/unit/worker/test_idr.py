"""IdrRequests: forced IDRs are merged to one per interval, and a refused frame keeps one due."""

from __future__ import annotations

from camingest.worker.idr import IdrRequests


def test_the_first_frame_is_asked_to_be_an_idr() -> None:
    assert IdrRequests(0.5).due(0.0)


def test_requests_within_the_interval_are_merged() -> None:
    idr = IdrRequests(0.5)
    idr.sent(10.0)
    for t in (10.1, 10.2, 10.3):  # a subscriber toggling its subscription
        idr.request(t)
    assert not idr.due(10.4)
    assert idr.due(10.5)
    idr.sent(10.5)
    assert not idr.due(11.5)  # nothing asked since


def test_a_request_after_a_quiet_period_is_due_at_once() -> None:
    idr = IdrRequests(0.5)
    idr.sent(0.0)
    idr.request(5.0)
    assert idr.due(5.0)


def test_an_idr_stays_due_until_a_frame_carries_it() -> None:
    idr = IdrRequests(0.5)
    idr.sent(0.0)
    idr.request(1.0)
    assert idr.due(1.0)
    assert idr.due(1.2)  # the encoder refused the frame: the next one carries the IDR
