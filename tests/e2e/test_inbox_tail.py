"""Issue 9 build item 7, against real processes (a broker, three member witnesses) and the
unmodified client and `msmt audit`: an operator who deletes, or never serves, the LAST entries
of a recipient's inbox is caught by the recipient alone, because the log's last leaf commits
to every inbox's size; rewriting the stored opening of that commitment to hide it is caught
too; and an honest broker gives no finding."""

from __future__ import annotations

import json

import pytest

from .test_log_attacks import Deployment, _witnessed_at, d, deployment, submit, wait_for

__all__ = ["d", "deployment"]  # the fixtures of test_log_attacks: real witnesses, a pinned log

EXIT_AUDIT = 8


def _settled_and_witnessed(d: Deployment, base: str) -> int:
    size = d.settled_size()
    wait_for("the witnesses to cosign the last batch", lambda: _witnessed_at(d, base, size))
    return size


def _pull(d: Deployment, base: str, code: str, count: int, after: int = 0) -> None:
    """The recipient's client opens (verifies) and confirms `count` entries after `after`."""
    with d.client(code, base) as client:
        batch = client.receive(after, limit=count)
        assert len(batch.received) == count, batch
        client.confirm(batch.received)


def _audit(d: Deployment, base: str, code: str) -> tuple[int, list[str]]:
    status, out, _ = d.msmt(code, base, "--json", "audit")
    return status, json.loads(out)["problems"]


@pytest.mark.parametrize("deleted", [1, 2], ids=["last-deleted", "last-two-never-served"])
def test_the_recipient_alone_finds_the_end_of_its_inbox_withheld(d: Deployment, deleted: int) -> None:
    with d.broker("tail") as (base, _):
        sent = [submit(base, "KOR", "USA", f"report {n}".encode()) for n in range(3)]
        _settled_and_witnessed(d, base)
        _pull(d, base, "USA", 2)
        assert _audit(d, base, "USA") == (0, [])  # honest: nothing to report
        assert (d.keys("USA") / "trust" / "inbox-tail.txt").read_text().split()[1] == "3"

        # the operator deletes the last delivery rows of USA's inbox: the last one, which USA
        # has not pulled yet; or the last two, one of them already pulled (never served again)
        for item_id in sent[3 - deleted :]:
            d.sql("DELETE FROM deliveries WHERE item_id = :i", i=item_id)
        status, problems = _audit(d, base, "USA")
        which = "entry 3 is" if deleted == 1 else "entries 2-3 are"
        assert status == EXIT_AUDIT
        assert problems == [
            f"inbox {which} committed in the log (the inbox holds 3) but not listed by the broker: "
            "withheld or deleted"
        ]

        # the operator also rewrites the stored size (and then the salt) to hide it, in the
        # leaves since USA's last audit (a batch for someone else makes one; without any, the
        # size USA kept from its last audit still shows the end of its inbox missing)
        submit(base, "KOR", "JPN", b"another batch")
        _settled_and_witnessed(d, base)
        size = 3 - deleted
        d.sql("UPDATE inbox_commitments SET size = :s WHERE country = 'USA' AND size = 3", s=size)
        status, problems = _audit(d, base, "USA")
        assert status == EXIT_AUDIT and any("the broker rewrote them" in p for p in problems), problems
        d.sql("UPDATE inbox_commitments SET salt = :z WHERE country = 'USA'", z=bytes(16))
        status, problems = _audit(d, base, "USA")
        assert status == EXIT_AUDIT and any("the broker rewrote them" in p for p in problems), problems


def test_new_batches_continue_the_chain_from_the_last_audit(d: Deployment) -> None:
    """Audits walk only the inboxes leaves since the last one verified; an honest broker that
    keeps logging gives no finding."""
    with d.broker("chain") as (base, _):
        submit(base, "KOR", "USA", b"one")
        _settled_and_witnessed(d, base)
        _pull(d, base, "USA", 1)
        assert _audit(d, base, "USA") == (0, [])
        first = (d.keys("USA") / "trust" / "inbox-tail.txt").read_text().split()
        submit(base, "KOR", "JPN", b"not for USA")
        submit(base, "KOR", "USA", b"two")
        _settled_and_witnessed(d, base)
        _pull(d, base, "USA", 1, after=1)
        assert _audit(d, base, "USA") == (0, [])
        second = (d.keys("USA") / "trust" / "inbox-tail.txt").read_text().split()
        assert int(second[0]) > int(first[0]) and (first[1], second[1]) == ("1", "2")
