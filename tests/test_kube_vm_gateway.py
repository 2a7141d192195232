"""kubernetes/vm-gateway.yaml: guacd reachable only by the VM gateway, on a real kube-apiserver.

Real: the kube-apiserver v1.20.2 (with etcd) of tests/kube_cluster.py, admitting the
objects with its own validation and admission, first as a server-side dry run
(``dryRun=All``), then for real; the chart's values schema for the hub's side
(kubernetes/vm-gateway-values.yaml over helm-values.yaml); the hub's own config step.

Not real: this apiserver has no network plugin (CNI), so nothing here enforces the
NetworkPolicy; no packet is sent. The test checks the policy as the apiserver stores
it (1.20 silently drops unknown fields, so a misspelt key would vanish there): which
pods it selects (guacd's, by the labels of guacd's stored pod template), that its only
ingress rule admits the gateway's pods (by the labels of the gateway's stored pod
template) on TCP 4822, and that session and hub pods do not carry those labels.
"""

from __future__ import annotations

import copy
from pathlib import Path

import kube_cluster
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = list(yaml.safe_load_all((REPO / "kubernetes" / "vm-gateway.yaml").read_text()))
VALUES = yaml.safe_load((REPO / "kubernetes" / "vm-gateway-values.yaml").read_text())
NS = kube_cluster.NAMESPACE
PATHS = {
    "Deployment": f"/apis/apps/v1/namespaces/{NS}/deployments",
    "Service": f"/api/v1/namespaces/{NS}/services",
    "NetworkPolicy": f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies",
}


def manifest(kind: str, name: str) -> dict:
    return next(m for m in MANIFESTS if m["kind"] == kind and m["metadata"]["name"] == name)


def selected(selector: dict, labels: dict) -> bool:
    """Does a matchLabels-only selector select a pod with ``labels``?"""
    assert set(selector) == {"matchLabels"}, selector  # no matchExpressions to reason about
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


@pytest.fixture(scope="module")
def apiserver():
    yield from kube_cluster.apiserver_fixture("daas-hub-kubevm-")


@pytest.fixture(scope="module")
def stored(apiserver):
    """Every object of the file, accepted by a dry run, then created; as the apiserver stores them."""
    out = {}
    for m in MANIFESTS:
        path = PATHS[m["kind"]]
        dry = apiserver.request("POST", f"{path}?dryRun=All", json=m)
        assert dry.status_code == 201, (m["kind"], m["metadata"]["name"], dry.text[:800])
        assert apiserver.request("GET", f"{path}/{m['metadata']['name']}").status_code == 404  # a dry run stores nothing
        apiserver.create(path, m)
        got = apiserver.request("GET", f"{path}/{m['metadata']['name']}")
        assert got.status_code == 200, got.text[:500]
        out[(m["kind"], m["metadata"]["name"])] = got.json()
    return out


def test_the_apiserver_accepts_every_object(stored):
    assert sorted(stored) == [("Deployment", "daas-guacd"), ("Deployment", "daas-vm-gateway"),
                              ("NetworkPolicy", "daas-guacd"), ("Service", "daas-guacd"),
                              ("Service", "daas-vm-gateway")]


def test_guacd_admits_only_the_gateways_pods_on_its_port(stored):
    policy = stored[("NetworkPolicy", "daas-guacd")]["spec"]
    guacd_pod = stored[("Deployment", "daas-guacd")]["spec"]["template"]
    gateway_pod = stored[("Deployment", "daas-vm-gateway")]["spec"]["template"]
    guacd_labels, gateway_labels = guacd_pod["metadata"]["labels"], gateway_pod["metadata"]["labels"]

    # the policy applies to guacd's pods, and to nothing else of the file
    assert selected(policy["podSelector"], guacd_labels)
    assert not selected(policy["podSelector"], gateway_labels)
    assert policy["policyTypes"] == ["Ingress"]
    # one rule: from the gateway's pods (same namespace: no namespaceSelector), TCP 4822 only
    assert len(policy["ingress"]) == 1
    rule = policy["ingress"][0]
    assert rule["ports"] == [{"protocol": "TCP", "port": 4822}]
    assert len(rule["from"]) == 1 and set(rule["from"][0]) == {"podSelector"}
    peer = rule["from"][0]["podSelector"]
    assert selected(peer, gateway_labels) and not selected(peer, guacd_labels)
    # what the chart and daas-hub label sessions and the hub with: never admitted
    session = {"app": "jupyterhub", "component": "singleuser-server", "release": "daas",
               "hub.jupyter.org/network-access-hub": "true", "app.kubernetes.io/part-of": "daas-hub"}
    hub = {"app": "jupyterhub", "component": "hub", "release": "daas", "hub.jupyter.org/network-access-hub": "true"}
    assert not selected(peer, session) and not selected(peer, hub)

    # guacd listens where the rule admits, and its Service leads there
    (port,) = guacd_pod["spec"]["containers"][0]["ports"]
    assert (port["containerPort"], port["protocol"]) == (4822, "TCP")
    service = stored[("Service", "daas-guacd")]["spec"]
    assert selected({"matchLabels": service["selector"]}, guacd_labels)
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(4822, port["name"])]


def test_a_misspelt_selector_is_stored_as_every_pod_so_the_checks_read_the_stored_object(apiserver):
    """Why the checks above read the stored object: 1.20 drops an unknown key without an
    error. A policy whose ``podSelector`` is misspelt is accepted and stored with an empty
    selector (every pod of the namespace); the selector check above would fail on it. (A
    misspelt peer is refused: "must specify a peer".)"""
    broken = copy.deepcopy(manifest("NetworkPolicy", "daas-guacd"))
    broken["metadata"]["name"] = "daas-guacd-typo"
    broken["spec"]["podSelecter"] = broken["spec"].pop("podSelector")
    r = apiserver.request("POST", f"{PATHS['NetworkPolicy']}?dryRun=All", json=broken)
    assert r.status_code == 201, r.text[:500]
    assert r.json()["spec"]["podSelector"] == {}
    with pytest.raises(AssertionError):
        selected(r.json()["spec"]["podSelector"], {})
    peer = copy.deepcopy(manifest("NetworkPolicy", "daas-guacd"))
    peer["metadata"]["name"] = "daas-guacd-typo"
    rule = peer["spec"]["ingress"][0]["from"][0]
    rule["podSelecter"] = rule.pop("podSelector")
    r = apiserver.request("POST", f"{PATHS['NetworkPolicy']}?dryRun=All", json=peer)
    assert r.status_code == 422 and "must specify a peer" in r.text, r.text[:500]


def test_pods_run_as_non_root_without_a_service_account_token(stored):
    for name in ("daas-guacd", "daas-vm-gateway"):
        pod = stored[("Deployment", name)]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"] + pod.get("initContainers", []):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_gateway_shares_the_token_and_the_hub_registers_it_with_its_roles(monkeypatch):
    """The values file passes the chart's schema over helm-values.yaml, and its config step
    registers the gateway's Service with the shared token."""
    import jsonschema
    from test_helm_values import CHART, helm_merge
    from test_helm_values import VALUES as BASE
    from traitlets.config import Config

    gateway = manifest("Deployment", "daas-vm-gateway")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in gateway["env"]}
    secret = VALUES["hub"]["extraEnv"]["DAAS_HUB_VM_GATEWAY_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == secret
    service = manifest("Service", "daas-vm-gateway")

    monkeypatch.setenv("DAAS_HUB_VM_GATEWAY_TOKEN", "shared-token")
    c = Config()
    exec(VALUES["hub"]["extraConfig"]["10-daas-vm-gateway"], {"c": c})  # noqa: S102 - the file's own snippet
    (entry,) = c.JupyterHub.services.get_value([])  # appended to the hub's (empty) default
    port = service["spec"]["ports"][0]["port"]
    assert entry == {"name": "vm", "url": f"http://{service['metadata']['name']}:{port}",
                     "api_token": "shared-token", "oauth_no_confirm": True, "display": False}
    assert env["JUPYTERHUB_SERVICE_NAME"]["value"] == entry["name"]
    assert env["JUPYTERHUB_SERVICE_URL"]["value"].endswith(f":{port}")
    roles = {r["name"]: r for r in c.JupyterHub.load_roles.get_value([])}
    assert roles["daas-vm-gateway"]["scopes"] == ["read:users", "admin:auth_state"]
    assert "access:services!service=vm" in roles["user"]["scopes"]

    if not (CHART / "values.yaml").is_file():
        pytest.skip(f"the chart's values and schema are not at {CHART}")
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = yaml.safe_load((CHART / "values.schema.yaml").read_text())
    merged = helm_merge(helm_merge(defaults, BASE), VALUES)
    assert set(merged["hub"]["extraConfig"]) == {"00-daas-hub", "10-daas-vm-gateway"}
    assert "JUPYTERHUB_CRYPT_KEY" in merged["hub"]["extraEnv"]
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(merged)
              if "set-by-chartpress" not in str(e.instance)]
    assert errors == []
