"""melanged's coalescing of changes into renders, on a clock the test moves (no sleeping):
lone changes render at once, bursts are gathered, and no change waits past max_wait."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from melanged.quiescence import Quiescence

POLL = 0.01


def _renders(changes: list[float], quiet: Quiescence, until: float) -> list[tuple[float, int]]:
    """Poll every POLL seconds as melanged's loop does: note the changes made since the
    last poll, render when due. Each render's time and how many changes it took."""
    pending = sorted(changes)
    renders: list[tuple[float, int]] = []
    taken = 0
    now = 0.0
    gathered = 0
    while now <= until:
        while taken < len(pending) and pending[taken] <= now:
            quiet.changed(now)
            taken += 1
            gathered += 1
        if quiet.due(now):
            renders.append((now, gathered))
            quiet.rendered(now)
            gathered = 0
        now = round(now + POLL, 6)
    return renders


def test_lone_changes_a_few_hundred_milliseconds_apart_each_render_at_once():
    """What an operator allocating by hand, or a provisioning script, does: every change
    is rendered at the first poll that sees it (the DNS and DHCP latency goals)."""
    changes = [0.5 + 0.3 * n for n in range(10)]
    renders = _renders(changes, Quiescence(0.2, 2.0), until=5.0)
    assert [count for _, count in renders] == [1] * 10
    assert all(abs(at - change) <= POLL for (at, _), change in zip(renders, changes, strict=True))


def test_a_burst_is_rendered_at_its_first_change_and_once_it_is_over():
    """200 changes 5 ms apart: one render at the first, one when quiet for min_wait."""
    changes = [1.0 + 0.005 * n for n in range(200)]
    renders = _renders(changes, Quiescence(0.2, 2.0), until=4.0)
    assert [count for _, count in renders] == [1, 199]
    assert renders[0][0] == 1.0
    assert abs(renders[1][0] - (changes[-1] + 0.2)) <= POLL + 1e-9


def test_a_stream_that_never_pauses_is_rendered_every_max_wait():
    changes = [0.1 * n for n in range(1, 100)]  # 10 s of a change every 100 ms
    renders = _renders(changes, Quiescence(0.2, 2.0), until=12.0)
    gaps = [b - a for (a, _), (b, _) in zip(renders, renders[1:], strict=False)]
    # The first change after a render is gathered (it came within min_wait of it), so
    # renders are max_wait apart plus the wait for that change, never more.
    assert len(renders) <= 7 and max(gaps) <= 2.0 + 0.1 + 2 * POLL


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=6.0), max_size=60),
       st.floats(min_value=0.05, max_value=0.5), st.floats(min_value=0.5, max_value=3.0))
def test_every_change_is_rendered_in_time_and_renders_stay_apart(changes, min_wait, max_wait):
    """Any changes: each is rendered at most max_wait (and a poll) after it came, and two
    renders are min_wait apart unless the second ends a burst's gathering."""
    changes = [round(c, 2) for c in changes]
    renders = _renders(changes, Quiescence(min_wait, max_wait), until=12.0)
    assert sum(count for _, count in renders) == len(changes)
    times = [at for at, _ in renders]
    for change in changes:
        rendered_at = next(at for at in times if at >= change - 1e-9)
        assert rendered_at - change <= max_wait + 2 * POLL
    # Renders closer than min_wait: only a leading edge followed by the end of a burst.
    close = [b for a, b in zip(times, times[1:], strict=False) if b - a < min_wait - 1e-9]
    assert len(close) <= len(times) // 2 + 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=20),
       st.floats(min_value=-1.0, max_value=3.0), st.floats(min_value=0.05, max_value=0.5),
       st.floats(min_value=0.5, max_value=3.0))  # fmt: skip
def test_due_at_is_when_due_turns_true(changes, rendered_at, min_wait, max_wait):
    """The watcher sleeps until `due_at` unless woken: so `due` must be false before it
    (no look is missed that was needed) and true from it on (no look wasted)."""
    quiet = Quiescence(min_wait, max_wait)
    assert quiet.due_at() is None
    changes = sorted(round(c, 3) for c in changes)
    quiet.rendered(round(rendered_at, 3))
    for change in changes:
        quiet.changed(change)
    at = quiet.due_at()
    assert at is not None
    last = changes[-1]
    if at > last:
        assert not quiet.due(at - 1e-6)
    assert quiet.due(max(at, last))
    assert quiet.due(max(at, last) + 10.0)
