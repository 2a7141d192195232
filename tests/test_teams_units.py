"""Teams without a hub: who is a visitor of a session, what the session remembers about
them, and the name collaborators see (docs/teams.md). The hub test is test_hub_teams.py."""

from __future__ import annotations

import pytest

from daas_hub.authenticators.mapping import user_info
from daas_hub.model import Account
from daas_hub.spawners.visitors import OwnerOnlyCache, is_visitor


@pytest.mark.parametrize("model, visitor", [
    (None, False),  # nobody: not allowed anyway
    ({"kind": "user", "name": "alice"}, False),  # the owner
    ({"name": "alice"}, False),
    ({"kind": "user", "name": "bob"}, True),  # a team member it is shared with
    ({"kind": "service", "name": "alice"}, True),  # a service, even one named like the owner
    ({"kind": "user", "name": "Alice"}, True),
])
def test_who_is_a_visitor(model, visitor):
    assert is_visitor(model, "alice") is visitor


def test_the_cache_keeps_the_owner_and_never_gives_back_a_visitor():
    cache = OwnerOnlyCache(300, "alice")
    cache["owner"] = {"kind": "user", "name": "alice"}
    cache["visitor"] = {"kind": "user", "name": "bob"}
    cache["nobody"] = None
    assert cache["owner"]["name"] == "alice"
    assert cache["nobody"] is None
    with pytest.raises(KeyError):
        cache["visitor"]  # HubAuth asks the hub again
    assert cache.get("visitor") is None


@pytest.mark.parametrize("display_name, shown, initials", [
    ("Bob Bragg", "Bob Bragg", "BB"),
    ("Dave Debye (beamline scientist)", "Dave Debye (beamline scientist)", "DD"),
    ("", "bob", "B"),  # no display name in the catalogue: the account name
])
def test_collaborators_see_the_catalogue_name(display_name, shown, initials):
    info = user_info(Account(username="bob", display_name=display_name))
    assert info == {"display_name": shown, "initials": initials}
