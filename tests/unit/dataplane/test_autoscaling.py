"""The queue-depth scaling rule, fed samples: no clock, no server."""

from __future__ import annotations

from dms.dataplane.autoscaling import QueueDepthScaler, Sample


def scaler() -> QueueDepthScaler:
    return QueueDepthScaler(minimum=1, maximum=4, target_queue=2.0, up_after_s=1.0, down_after_s=5.0)


def test_a_deep_queue_grows_the_workers_once_it_has_lasted_and_in_proportion():
    s = scaler()
    assert s.decide(Sample(0.0, pending=8, ready=1, busy=1, target=1)) is None  # not yet: it must last
    assert s.decide(Sample(0.5, pending=8, ready=1, busy=1, target=1)) is None
    assert s.decide(Sample(1.0, pending=8, ready=1, busy=1, target=1)) == 4  # 8 waiting / 2 per worker
    assert s.decide(Sample(1.5, pending=40, ready=4, busy=4, target=4)) is None  # at the ceiling


def test_a_short_burst_or_workers_still_starting_change_nothing():
    s = scaler()
    assert s.decide(Sample(0.0, pending=8, ready=1, busy=1, target=1)) is None
    assert s.decide(Sample(0.5, pending=0, ready=1, busy=1, target=1)) is None  # the burst ended: clock reset
    assert s.decide(Sample(1.2, pending=8, ready=1, busy=1, target=1)) is None
    assert s.decide(Sample(2.0, pending=8, ready=1, busy=1, target=2)) is None  # one is starting: wait for it
    assert s.decide(Sample(3.0, pending=8, ready=1, busy=1, target=2)) is None


def test_grows_by_at_least_one_and_never_past_the_maximum():
    s = scaler()
    s.decide(Sample(0.0, pending=3, ready=2, busy=2, target=2))
    assert s.decide(Sample(1.0, pending=3, ready=2, busy=2, target=2)) is None  # 1.5 per worker: under the target
    s.decide(Sample(2.0, pending=5, ready=2, busy=2, target=2))
    assert s.decide(Sample(3.0, pending=5, ready=2, busy=2, target=2)) == 3  # 2.5 per worker: 5 / 2 rounds up
    s.decide(Sample(4.0, pending=100, ready=3, busy=3, target=3))
    assert s.decide(Sample(5.0, pending=100, ready=3, busy=3, target=3)) == 4


def test_an_idle_worker_with_nothing_waiting_shrinks_them_one_at_a_time_to_the_minimum():
    s = scaler()
    assert s.decide(Sample(0.0, pending=0, ready=3, busy=1, target=3)) is None
    assert s.decide(Sample(4.9, pending=0, ready=3, busy=1, target=3)) is None
    assert s.decide(Sample(5.0, pending=0, ready=3, busy=1, target=3)) == 2
    assert s.decide(Sample(6.0, pending=0, ready=2, busy=0, target=2)) is None  # its own wait again
    assert s.decide(Sample(11.0, pending=0, ready=2, busy=0, target=2)) == 1
    assert s.decide(Sample(30.0, pending=0, ready=1, busy=0, target=1)) is None  # at the minimum


def test_every_worker_busy_keeps_them_even_with_nothing_queued():
    s = scaler()
    for at in range(20):
        assert s.decide(Sample(float(at), pending=0, ready=3, busy=3, target=3)) is None


def test_a_count_outside_the_bounds_is_brought_back_at_once():
    s = scaler()
    assert s.decide(Sample(0.0, pending=0, ready=0, busy=0, target=0)) == 1
    assert s.decide(Sample(0.0, pending=0, ready=6, busy=0, target=6)) == 4
