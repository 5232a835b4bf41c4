"""Unit tests of the run's timeline and its recording edges: lazy ordering, per-kind index, signal safety, redaction."""

from __future__ import annotations

import faulthandler
import json
import random
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from harness.core.timeline import Event, Timeline
from harness.drill import session as drill_session


@pytest.fixture
def watchdog() -> Iterator[None]:
    """A deadlock fails the run with every thread's stack instead of hanging it."""
    faulthandler.dump_traceback_later(30, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _brute(events: list[Event]) -> tuple[Event, ...]:
    return tuple(sorted(events, key=lambda e: e.t))


def test_events_are_sorted_by_time_with_ties_in_append_order() -> None:
    tl = Timeline(clock=lambda: 10.0)
    a = tl.append("note", "a")
    b = tl.append("fault", "b", t=5.0)  # out of order
    c = tl.append("note", "c")  # same time as a
    d = tl.append("probe", "d", t=7.5)
    assert tl.events == (b, d, a, c)
    assert tl.of_kind("note") == (a, c)
    assert tl.of_kind("fault") == (b,)
    assert tl.of_kind("op") == () and tl.of_kind("nonsense") == ()


def test_views_stay_right_across_in_order_and_out_of_order_appends() -> None:
    rnd = random.Random(7)
    tl = Timeline(clock=lambda: 0.0)
    appended: list[Event] = []
    for i in range(3000):
        jitter = rnd.choice([0.0, 0.0, 0.0, -0.05, 0.01])
        appended.append(tl.append(rnd.choice(["note", "probe", "fault"]), str(i), t=i * 0.01 + jitter))
        if i % 97 == 0:  # readers in between, as the 0.1 s pollers do
            assert tl.events == _brute(appended)
            assert tl.of_kind("probe") == _brute([e for e in appended if e.kind == "probe"])
    assert tl.events == _brute(appended)
    for kind in ("note", "probe", "fault"):
        assert tl.of_kind(kind) == _brute([e for e in appended if e.kind == kind])


def test_ops_come_from_the_op_index() -> None:
    tl = Timeline(clock=lambda: 1.0)
    tl.record_op("w0", "invoke", "k1", t=2.0)
    tl.append("note", "x")
    tl.record_op("w0", "ok", "k1", t=1.5)
    assert [(o.type, o.t) for o in tl.ops] == [("ok", 1.5), ("invoke", 2.0)]


def test_concurrent_appends_from_threads_are_all_kept_and_sorted(watchdog: None) -> None:
    tl = Timeline()
    stop = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            evs = tl.of_kind("probe")
            assert list(evs) == sorted(evs, key=lambda e: e.t)
            seen.append(len(evs))

    def writer(n: int) -> None:
        for i in range(2000):
            tl.append("probe", f"w{n}-{i}")

    r = threading.Thread(target=reader)
    r.start()
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    r.join()
    assert len(tl.of_kind("probe")) == 8000 and len(tl.events) == 8000
    assert seen


def test_a_signal_handler_appending_while_the_lock_is_held_does_not_deadlock(watchdog: None) -> None:
    """The handler runs in the main thread while that thread is inside the timeline (here: in the sink,
    under the lock), as SIGTERM did during a sort of every event."""
    got: list[str] = []
    tl: Timeline

    def handler(signum, frame):  # noqa: ARG001
        tl.append("note", "from the handler")

    def sink(e: Event) -> None:
        got.append(e.event)
        if e.event == "trigger":
            signal.raise_signal(signal.SIGUSR1)  # delivered right here, with the lock held

    tl = Timeline(sink=sink)
    prev = signal.signal(signal.SIGUSR1, handler)
    try:
        tl.append("note", "trigger")
    finally:
        signal.signal(signal.SIGUSR1, prev)
    assert got == ["trigger", "from the handler"]
    assert {e.event for e in tl.of_kind("note")} == {"trigger", "from the handler"}


def test_a_signal_handler_appending_during_long_reads_does_not_deadlock(watchdog: None) -> None:
    tl = Timeline()
    for i in range(60_000):  # out of order every so often: the reads sort
        tl.append("probe" if i % 3 else "note", str(i), t=1000.0 + i * 0.001 - (0.5 if i % 5000 == 0 else 0.0))
    fired: list[int] = []

    def handler(signum, frame):  # noqa: ARG001
        fired.append(1)
        tl.append("note", "tick", t=900.0 - len(fired))  # out of order as well

    prev = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            tl.of_kind("note")
            tl.events
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, prev)
    assert fired
    notes = tl.of_kind("note")
    assert list(notes) == sorted(notes, key=lambda e: e.t)
    assert sum(1 for e in notes if e.event == "tick") == len(fired)


# -- the session ----------------------------------------------------------------------------------
@pytest.fixture
def session(tmp_path: Path) -> Iterator[drill_session.DrillSession]:
    s = drill_session.begin("test", "timeline", report_dir=tmp_path / "report")
    try:
        yield s
    finally:
        drill_session.end()


def test_fault_t_reads_the_fault_index_only(session: drill_session.DrillSession,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(1000):
        session.timeline.record_op("w0", "ok", f"k{i}")
    session.event("fault", "fail_region", phase="planned", dry_run=True)
    inj = session.event("fault", "fail_region", phase="inject")
    session.event("fault", "fail_region", phase="inject")

    def boom(self):  # noqa: ARG001
        raise AssertionError("fault_t must not read every event")

    monkeypatch.setattr(Timeline, "events", property(boom))
    assert session.fault_t == inj.t


def test_timeline_jsonl_redacts_the_lab_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.lab.kerp.seed import LAB_PASSWORD

    state = tmp_path / "lab"
    state.mkdir()
    (state / "jwt-secret").write_text("jwt-very-secret-value-123\n")
    s = drill_session.begin("test", "redact", report_dir=tmp_path / "report")
    try:
        drill_session.register_lab_secrets(s, state)
        assert {"jwt-very-secret-value-123", LAB_PASSWORD} <= s.secrets
        s.event("note", "activity failed", error=f"Traceback ... login {LAB_PASSWORD!r} token "
                                                 f"signed with jwt-very-secret-value-123")
    finally:
        drill_session.end()
    text = (tmp_path / "report" / "timeline.jsonl").read_text()
    assert LAB_PASSWORD not in text and "jwt-very-secret-value-123" not in text
    last = json.loads(text.splitlines()[-1])
    assert last["data"]["error"] == "Traceback ... login '***' token signed with ***"


# -- signals --------------------------------------------------------------------------------------
def test_the_signal_handler_only_sets_flags_and_interrupts_once(session: drill_session.DrillSession) -> None:
    shield = drill_session.SignalShield()
    n = len(session.timeline.events)
    with shield:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            signal.raise_signal(signal.SIGTERM)
        assert session.aborted
        assert len(session.timeline.events) == n  # nothing written from the handler
        signal.raise_signal(signal.SIGINT)  # the clean-up the first one started must finish: recorded only
        assert shield.received == ["SIGTERM", "SIGINT"]
        drill_session.note_signals(session, "in the test")  # the shared instance: nothing of ours
        for name in shield.unrecorded():
            session.note(f"{name} received")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert [e.event for e in session.timeline.of_kind("note")][-2:] == ["SIGTERM received", "SIGINT received"]


def test_shielded_blocks_defer_signals(session: drill_session.DrillSession) -> None:
    shield = drill_session.SignalShield()
    with shield:
        with shield.shielded():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGTERM)
        assert shield.received == ["SIGINT", "SIGTERM"]
        with pytest.raises(KeyboardInterrupt):
            shield.raise_pending()


def test_nested_use_reinstalls_over_a_foreign_handler_and_restores_it() -> None:
    shield = drill_session.SignalShield()
    foreign = lambda signum, frame: None  # noqa: E731 - e.g. chaoslib's SIGTERM handler
    before = signal.getsignal(signal.SIGINT)
    with shield:
        prev = signal.signal(signal.SIGTERM, foreign)
        with shield:
            assert signal.getsignal(signal.SIGTERM) == shield._handler
        assert signal.getsignal(signal.SIGTERM) is foreign
        signal.signal(signal.SIGTERM, prev)
    assert signal.getsignal(signal.SIGINT) == before


def test_the_control_interrupts_on_sigterm_and_shields_the_rollbacks(tmp_path: Path) -> None:
    from harness.drill import control

    before = signal.getsignal(signal.SIGTERM)
    s = drill_session.begin("test", "control", report_dir=tmp_path / "report")
    try:
        control.before_experiment_control({"title": "t"}, configuration={"drill_state_dir": str(tmp_path / "lab"),
                                                                          "drill_run_id": s.run_id})  # as drill run
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
        assert s.aborted and not [e for e in s.timeline.of_kind("note") if "SIGTERM" in e.event]
        control.before_rollback_control()  # chaoslib caught the interrupt: now it is written down
        signal.raise_signal(signal.SIGTERM)  # a second one during the rollbacks: recorded, not raised
        signal.raise_signal(signal.SIGINT)
        control.after_experiment_control({"title": "t"}, state={"status": "interrupted"}, configuration={})
        notes = [e.event for e in s.timeline.of_kind("note") if "received" in e.event]
        assert notes[0].startswith("SIGTERM received during the method")
        assert [n.split()[0] for n in notes[1:]] == ["SIGTERM", "SIGINT"]
        assert all("during the rollbacks" in n for n in notes[1:])
    finally:
        drill_session.end()
    assert signal.getsignal(signal.SIGTERM) == before and not drill_session.SIGNALS.installed
