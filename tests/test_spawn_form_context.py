"""The spawn form's variables from plain inputs (daas_hub.spawn_form): no hub, no I/O."""

from __future__ import annotations

import pytest
from test_options import ctx

from daas_hub.options import SessionRequest
from daas_hub.quotas import GIB
from daas_hub.spawn_form import ClusterFigures, form_context, prefill, query_options


def test_simplest_form_context():
    c = form_context(ctx(backends=("local",)), last={}, query={}, cluster=None, quota_url="/hub/quota")
    assert c["cluster"] is None and c["quota_url"] == "/hub/quota"
    assert [p["id"] for p in c["proposals"]] == ["MX-1001", "IH-5005"]  # archived and others' left out
    assert c["no_proposal"] is False and c["no_proposal_value"] == "none"
    assert [p["slug"] for p in c["profiles"]] == ["python", "diffraction", "spectroscopy"]  # the local ones
    assert c["profiles"][0]["backends"] == ["local"]
    assert c["values"] == {"proposal": "MX-1001", "profile": "python", "backend": "local", "cpu": 2,
                           "memory": 4.0, "gpu": 0, "hours": 4.0}
    assert c["role"] == "user" and c["gib"] == GIB
    assert (c["quota"].sessions, c["used"].sessions, c["left"].sessions) == (2, 0, 2)
    assert c["others"] == []


def test_other_sessions_count_against_the_quota_shown():
    other = SessionRequest("IH-5005", "python", "slurm", 2, 4 * GIB, 0, 4)
    c = form_context(ctx(others=[other]), last={}, query={}, cluster=None, quota_url="/q")
    assert (c["used"].cpu, c["left"].cpu, c["left"].sessions) == (2, 14, 1)
    assert c["others"] == [other.to_options()]


@pytest.mark.parametrize(("last", "query", "expected"), [
    ({}, {}, {"profile": "python", "cpu": 2}),
    ({"profile": ["diffraction"], "cpu": ["4"]}, {}, {"profile": "diffraction", "cpu": "4"}),
    ({"profile": "diffraction", "cpu": 4}, {"cpu": "8"}, {"profile": "diffraction", "cpu": "8"}),
    ({"cpu": ["1", "2"], "gpu": True, "hours": {"x": 1}}, {}, {"cpu": 2, "gpu": 0, "hours": 4.0}),  # not scalars
    # a refused start's stored options (forged through the REST API) do not prefill the next form
    ({"profile": "diffraction", "cpu": "999"}, {}, {"profile": "python", "cpu": 2}),
    ({"proposal": "EC-2002", "cpu": "4"}, {}, {"proposal": "MX-1001", "cpu": 2}),  # someone else's proposal
])
def test_prefill_defaults_then_last_choice_then_permalink(last, query, expected):
    values = prefill(ctx(), last, query)
    assert {k: values[k] for k in expected} == expected


def test_permalink_query_takes_known_options_with_or_without_prefix():
    args = {"opt-cpu": [b"4"], "memory": [b"1", b"8"], "cmd": [b"/bin/sh"], "opt-gpu": []}
    assert query_options(args) == {"cpu": "4", "memory": "8"}


def test_cluster_figures_pass_through_unknown_included():
    unknown = ClusterFigures("slurm", None)
    assert form_context(ctx(), last={}, query={}, cluster=unknown, quota_url="/q")["cluster"] is unknown
