"""The SciCat proposal source against a loopback HTTP server replaying SciCat's
documented response shapes (scicat-backend-next for v4: ``auth/login``,
``useridentities/findOne``, ``proposals?filters=``; the LoopBack backend for v3:
``Users/login``, ``UserIdentities/findOne``, ``Proposals?filter=``). No SciCat
(NestJS + MongoDB) runs on the test machine; the replayed documents follow the
ProposalClass / UserIdentity / login answer models of SciCat's OpenAPI.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from daas_hub.errors import SettingsError, SourceUnavailable
from daas_hub.model import Account, Identity, MemberRole
from daas_hub.sources import ScicatProposalSource

TOKEN = "eyJhbGciOiJIUzI1NiJ9.reader"

IDENTITIES = {
    "jdoe": {
        "authStrategy": "ldap", "created": "2026-01-10T09:00:00.000Z", "modified": "2026-01-10T09:00:00.000Z",
        "credentials": {}, "externalId": "umb-77aa", "provider": "ldap", "userId": "6650a1",
        "profile": {"displayName": "Jane Doe", "email": "jane.doe@example.org", "username": "jdoe",
                    "id": "6650a1", "accessGroups": ["p20001", "p20002"]},
    },
}

PROPOSALS = [
    {   # the full SciCat 4 shape (ProposalClass)
        "createdBy": "ingestor", "updatedBy": "ingestor", "createdAt": "2026-02-01T10:00:00.000Z",
        "updatedAt": "2026-02-01T10:00:00.000Z", "ownerGroup": "p20001", "accessGroups": ["tomcat"],
        "isPublished": False, "proposalId": "20001", "pi_email": "jane.doe@example.org",
        "pi_firstname": "Jane", "pi_lastname": "Doe", "email": "jane.doe@example.org", "firstname": "Jane",
        "lastname": "Doe", "title": "Tomography of wood", "abstract": "...", "startTime": "2026-11-01T08:00:00.000Z",
        "endTime": "2026-11-30T08:00:00.000Z",
        "MeasurementPeriodList": [
            {"_id": "a1", "instrument": "/PSI/SLS/TOMCAT", "start": "2026-11-02T08:00:00.000Z",
             "end": "2026-11-04T08:00:00.000Z", "comment": ""},
            {"_id": "a2", "instrument": "/PSI/SLS/TOMCAT", "start": "2026-11-20T08:00:00.000Z",
             "end": "2026-11-21T08:00:00.000Z"},
        ],
        "metadata": {}, "parentProposalId": None, "type": "Default Proposal", "instrumentIds": [], "keywords": [],
    },
    {   # the smaller SciCat 3 shape: no measurement periods, only start/end times
        "proposalId": "20002", "ownerGroup": "p20002", "accessGroups": [], "email": "pi@example.org",
        "pi_email": "pi@example.org", "title": "Powder diffraction", "startTime": "2026-10-01T08:00:00Z",
        "endTime": "2026-10-03T08:00:00Z",
    },
    {"ownerGroup": "p20002", "title": "no proposalId: skipped"},
]


class Replay(BaseHTTPRequestHandler):
    version = "v4"
    requests: list[tuple[str, str, dict, dict]] = []
    reject_token = 0  # how many authenticated requests get HTTP 401

    def log_message(self, *args):
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _token(self, query):
        if self.version == "v4":
            return self.headers.get("Authorization", "").removeprefix("Bearer ")
        return (query.get("access_token") or [""])[0]

    def do_POST(self):
        url = urlparse(self.path)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Replay.requests.append(("POST", url.path, {}, body))
        login_path = "/api/v3/auth/login" if self.version == "v4" else "/api/v3/Users/login"
        if url.path != login_path:
            return self._send(404, {"statusCode": 404, "message": "Not Found"})
        if body != {"username": "reader", "password": "s3cret"}:
            return self._send(401, {"statusCode": 401, "message": "Unauthorized"})
        if self.version == "v4":
            return self._send(201, {"access_token": TOKEN, "id": TOKEN, "expires_in": 3600, "ttl": 3600,
                                    "created": "2026-11-22T00:00:00.000Z", "userId": "reader-id",
                                    "user": {"username": "reader", "email": "reader@example.org"}})
        return self._send(200, {"id": TOKEN, "ttl": 1209600, "created": "2026-11-22T00:00:00.000Z",
                                "userId": "reader-id"})

    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        Replay.requests.append(("GET", url.path, {k: v[0] for k, v in query.items()}, {}))
        if self._token(query) != TOKEN or Replay.reject_token:
            Replay.reject_token = max(0, Replay.reject_token - 1)
            return self._send(401, {"statusCode": 401, "message": "Unauthorized"})
        v4 = self.version == "v4"
        if url.path == ("/api/v3/useridentities/findOne" if v4 else "/api/v3/UserIdentities/findOne"):
            where = json.loads(query["filter"][0])["where"]
            (field, value), = where.items()
            for identity in IDENTITIES.values():
                node = identity
                for part in field.split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                if node == value:
                    return self._send(200, identity)
            return self._send(200, {}) if v4 else self._send(404, {"error": {"statusCode": 404}})
        if url.path == ("/api/v3/proposals" if v4 else "/api/v3/Proposals"):
            filters = json.loads(query["filters" if v4 else "filter"][0])
            op_or, op_in = ("$or", "$in") if v4 else ("or", "inq")
            groups = set(filters["where"][op_or][0]["ownerGroup"][op_in])
            assert filters["where"][op_or][1] == {"accessGroups": {op_in: sorted(groups)}}
            found = [p for p in PROPOSALS if p["ownerGroup"] in groups or groups & set(p.get("accessGroups", []))]
            return self._send(200, found)
        return self._send(404, {"statusCode": 404, "message": "Not Found"})


@pytest.fixture(params=["v4", "v3"])
def scicat(request):
    handler = type("ReplayHandler", (Replay,), {"version": request.param})
    Replay.requests = []
    Replay.reject_token = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield request.param, f"http://127.0.0.1:{server.server_address[1]}/api/v3"
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
def make_source(scicat, tmp_path):
    version, url = scicat
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")

    def make(**kwargs):
        settings = dict(url=url, api_version=version, reader_username="reader", password_file=str(secret),
                        facility="PSI", raw_template="/sls/data/{owner_group}/raw", timeout=5)
        settings.update(kwargs)
        source = ScicatProposalSource(**settings)
        source.check()
        return source
    return make


async def test_account_and_proposals_through_the_users_groups(make_source, scicat):
    source = make_source()
    account = await source.resolve_account(Identity("facility", "jdoe", username="jdoe"))
    assert account == Account("jdoe", roles=frozenset({"user"}), display_name="Jane Doe", email="jane.doe@example.org")
    proposals = {p.id: p for p in await source.proposals_for(account)}
    assert sorted(proposals) == ["20001", "20002"]
    tomo = proposals["20001"]
    assert (tomo.title, tomo.instrument, tomo.facility) == ("Tomography of wood", "/PSI/SLS/TOMCAT", "PSI")
    assert [b.start for b in tomo.beamtimes] == [datetime(2026, 11, 2, 8, tzinfo=UTC),
                                                datetime(2026, 11, 20, 8, tzinfo=UTC)]
    assert tomo.role_of("jdoe") is MemberRole.PI
    assert tomo.data.raw == "/sls/data/p20001/raw"
    powder = proposals["20002"]
    assert powder.role_of("jdoe") is MemberRole.MEMBER
    assert [(b.start, b.end) for b in powder.beamtimes] == [
        (datetime(2026, 10, 1, 8, tzinfo=UTC), datetime(2026, 10, 3, 8, tzinfo=UTC))]
    logins = [r for r in Replay.requests if r[0] == "POST"]
    assert len(logins) == 1  # the token is reused


async def test_umbrella_identity_is_linked_through_the_external_id(make_source):
    source = make_source()
    account = await source.resolve_account(Identity("umbrella", "umb-77aa", email="other@example.org"))
    assert account.username == "jdoe"
    assert await source.resolve_account(Identity("umbrella", "umb-unknown")) is None


async def test_names_are_sent_as_json_values(make_source):
    source = make_source()
    name = '" } , "$where": "1 == 1'
    assert await source.resolve_account(Identity("facility", name, username=name)) is None
    lookup = [r for r in Replay.requests if r[1].lower().endswith("findone")][-1]
    assert json.loads(lookup[2]["filter"]) == {"where": {"profile.username": name}}


async def test_an_expired_token_logs_in_again_once(make_source):
    source = make_source()
    await source.resolve_account(Identity("facility", "jdoe", username="jdoe"))
    Replay.reject_token = 1
    assert (await source.resolve_account(Identity("facility", "jdoe", username="jdoe"))).username == "jdoe"
    assert len([r for r in Replay.requests if r[0] == "POST"]) == 2
    Replay.reject_token = 5
    with pytest.raises(SourceUnavailable, match="HTTP 401"):
        await source.resolve_account(Identity("facility", "jdoe", username="jdoe"))


async def test_the_token_never_appears_in_errors(make_source, scicat):
    source = make_source()
    await source.resolve_account(Identity("facility", "jdoe", username="jdoe"))
    Replay.reject_token = 5
    with pytest.raises(SourceUnavailable) as e:
        await source.proposals_for(Account("jdoe"))
    assert TOKEN not in str(e.value) and "s3cret" not in str(e.value)


async def test_wrong_password_and_wrong_api_version_say_so(make_source, scicat, tmp_path):
    version, _ = scicat
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    with pytest.raises(SourceUnavailable, match="HTTP 401"):
        await make_source(password_file=str(wrong)).resolve_account(Identity("facility", "jdoe", username="jdoe"))
    other = "v3" if version == "v4" else "v4"
    with pytest.raises(SourceUnavailable, match="HTTP 404"):
        await make_source(api_version=other).resolve_account(Identity("facility", "jdoe", username="jdoe"))


async def test_scicat_down_is_unavailable():
    from conftest import free_port

    source = ScicatProposalSource(url=f"http://127.0.0.1:{free_port()}/api/v3", reader_username="r", password="p",
                                  timeout=5)
    with pytest.raises(SourceUnavailable, match="SciCat POST"):
        await source.resolve_account(Identity("facility", "jdoe", username="jdoe"))


@pytest.mark.parametrize("change, entry", [
    ({"url": ""}, "proposal_source > url"),
    ({"url": "scicat.example.org"}, "proposal_source > url"),
    ({"reader_username": ""}, "proposal_source > reader_username"),
])
def test_check_names_the_setting_to_fix(change, entry):
    settings = {"url": "https://scicat.example.org/api/v3", "reader_username": "r", **change}
    with pytest.raises(SettingsError) as e:
        ScicatProposalSource(**settings).check()
    assert e.value.entry == entry
