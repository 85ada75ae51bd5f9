from datetime import UTC, datetime, timedelta

from atelier.core.clock import Clock, FixedClock, SystemClock


def test_the_system_clock_is_utc_aware():
    now = SystemClock().now()
    assert now.tzinfo is UTC
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


def test_a_fixed_clock_moves_only_when_told():
    clock: Clock = FixedClock(datetime(2026, 11, 21, 12, tzinfo=UTC))
    assert clock.now() == clock.now() == datetime(2026, 11, 21, 12, tzinfo=UTC)
    clock.advance(timedelta(minutes=5))
    assert clock.now() == datetime(2026, 11, 21, 12, 5, tzinfo=UTC)
