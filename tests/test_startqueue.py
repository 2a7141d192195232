"""The start queue and the port book: pure, no hub (daas_hub/startqueue.py); sessions' CPU priority."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
from pathlib import Path

import pytest

from daas_hub.spawners.burst import lower_priority
from daas_hub.startqueue import PortBook, StartQueue, waiting_message


async def test_at_most_slots_start_and_the_rest_wait_in_order():
    q = StartQueue(2)
    tickets = [q.join(f"u{i}") for i in range(5)]
    assert [t.waiting for t in tickets] == [False, False, True, True, True]
    assert [q.position(t) for t in tickets] == [0, 0, 1, 2, 3]
    q.leave(tickets[0])  # a start is over: the first waiting goes
    await asyncio.sleep(0)
    assert not tickets[2].waiting and [q.position(t) for t in tickets[3:]] == [1, 2]
    q.leave(tickets[0])  # leaving twice frees one slot only
    assert q.starting == 2 and tickets[3].waiting


async def test_a_cancelled_wait_gives_its_place_and_no_slot():
    q = StartQueue(1)
    first, second, third = q.join("a"), q.join("b"), q.join("c")
    q.leave(second)  # the person stopped it while it waited
    assert q.position(third) == 1 and q.starting == 1
    q.leave(first)
    assert not third.waiting and q.starting == 1


async def test_no_slots_means_no_queue():
    q = StartQueue(0)
    assert not any(q.join(str(i)).waiting for i in range(50))


@pytest.mark.parametrize("position,words", [(1, "Your session starts next"),
                                            (7, "number 7 in the queue (6 before it)")])
def test_the_waiting_message_says_where_one_stands(position, words):
    text = waiting_message(position, waiting=9, starting=2)
    assert words in text and "2 sessions are starting" in text and "9 waiting" in text


def test_ports_held_by_sessions_are_never_handed_out_twice():
    book = PortBook(40000, 40009, free=lambda ip, port: port != 40003, rng=random.Random(1))
    ports = {book.take() for _ in range(9)}
    assert ports == set(range(40000, 40010)) - {40003}  # 40003 is in use on the machine
    with pytest.raises(RuntimeError, match="no free port"):
        book.take()
    book.give_back(40005)
    assert book.take() == 40005


def test_session_ports_stay_below_the_kernels_ephemeral_range(tmp_path):
    from daas_hub.startqueue import session_port_range

    (tmp_path / "range").write_text("32768\t60999\n")
    assert session_port_range(str(tmp_path / "range")) == (20000, 32767)
    assert session_port_range(str(tmp_path / "missing")) == (20000, 32767)
    low, high = PortBook().low, PortBook().high
    assert 20000 <= low < high


def _niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


@pytest.mark.parametrize("autogroup", ["/proc/self/autogroup", "/nonexistent/autogroup"])
def test_a_session_runs_below_the_hub_in_its_own_autogroup_too(autogroup):
    """A session starts in a new session (setsid), hence a new autogroup: its nice value alone
    would rank it only within that group, so the group's nice value is lowered as well. A kernel
    without autogroups (the file missing) still gets the process's own nice value."""
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True,
                            preexec_fn=lambda: lower_priority(7, autogroup=autogroup))
    try:
        assert _niceness(proc.pid) == min(19, os.nice(0) + 7)
        group = Path(f"/proc/{proc.pid}/autogroup")
        if autogroup.startswith("/proc") and group.exists():
            assert group.read_text().split()[-1] == "7"
    finally:
        proc.kill()
        proc.wait()
