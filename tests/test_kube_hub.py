"""The Kubernetes backend end to end, against a real API server on loopback.

Real: JupyterHub + configurable-http-proxy with the daas spawner and its
``kubernetes`` backend (KubeSpawner 7.1.0 and kubernetes_asyncio underneath),
etcd and kube-apiserver v1.20.2 (tests/kube_cluster.py: token auth, RBAC, the hub
with a namespaced Role only), the session's JupyterLab reached through the proxy,
the session's own ``daas-hub-session`` laying out ~/proposals, and the init container
writing the passwd entry. Not real: the scheduler and kubelet are
:class:`kube_cluster.TestKubelet` (local processes in a mount namespace with bind
mounts, as the pod's uid and groups; no container images). Skipped, with the reason,
where the API server cannot run (not root, kube-apiserver not built yet).
"""

from __future__ import annotations

import grp
import json
import os
import re
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kube_cluster
import pytest
import yaml

from conftest import make_world_dir, start_hub, stop_process, wait_until

pytestmark = pytest.mark.hub

POLL = 5  # seconds: c.Spawner.poll_interval in these tests
MISSING_IMAGE = "registry.facility.example/daas/spectroscopy:does-not-exist"


@pytest.fixture(scope="module")
def apiserver():
    yield from kube_cluster.apiserver_fixture("daas-hub-kube-")


@pytest.fixture(scope="module")
def kube_site(apiserver):
    """The demo site, its sessions on Kubernetes; proposal data and homes on hostPath volumes."""
    from daas_hub.demo import DEMO_ACCOUNT, ensure_demo_site
    from daas_hub.profiles import load_catalogue

    site = make_world_dir("daas-hub-kubesite-")
    ensure_demo_site(site)
    # the processed folders belong to the demo account's group: the proposals' group
    group = grp.getgrnam(DEMO_ACCOUNT).gr_gid
    doc = yaml.safe_load((site / "proposals.yaml").read_text())
    for p in doc["proposals"]:
        p["gid"] = group
    (site / "proposals.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    # homes the admin made, owned by each facility account (as on an NFS home server)
    homes = site / "kube-homes"
    homes.mkdir(mode=0o755)
    for a in doc["accounts"]:
        (homes / a["username"]).mkdir(mode=0o700)
        os.chown(homes / a["username"], a["uid"], a["gid"])
    kube_cluster.host_path_claim(apiserver, "proposal-data", "/")
    kube_cluster.host_path_claim(apiserver, "homes", str(homes))
    hub_kubeconfig = apiserver.kubeconfig(site / "hub-kubeconfig", apiserver.hub_token)
    s = yaml.safe_load((site / "site.yaml").read_text())
    s["spawner"]["backend"] = "kubernetes"
    s["spawner"]["backends"] = ["kubernetes", "local"]
    s["spawner"]["kubernetes"] = {
        "namespace": kube_cluster.NAMESPACE,
        "images": {"spectroscopy": MISSING_IMAGE},
        # in-pod paths; the test kubelet mounts them on this machine, so under the site folder
        "home_path": f"{site}/pods/home/{{username}}",
        "data_root": f"{site}/pods/data",
        "storage": {
            "raw": {"kind": "pvc", "claim": "proposal-data", "sub_path": "{relpath}"},
            "processed": {"kind": "pvc", "claim": "proposal-data", "sub_path": "{relpath}"},
            "home": {"kind": "pvc", "claim": "homes", "sub_path": "{username}"},
        },
        "network_policy": {"hub": {"cidr": "127.0.0.1/32"}, "proxy": {"cidr": "127.0.0.1/32"}, "dns": False,
                           "allow": [{"name": "storage", "cidr": "192.0.2.0/24", "ports": [2049]}]},
    }
    (site / "site.yaml").write_text(yaml.safe_dump(s, sort_keys=False))
    images = {p.image for p in load_catalogue().profiles if p.image}
    kubelet = kube_cluster.TestKubelet(
        apiserver, make_world_dir("daas-hub-kubelet-"), images=images,
        path=os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
    ).start()
    yield site, kubelet, hub_kubeconfig
    kubelet.stop()
    shutil.rmtree(kubelet.folder, ignore_errors=True)
    shutil.rmtree(site, ignore_errors=True)


HUB_ARGS = [f"--Spawner.poll_interval={POLL}", "--Spawner.poll_jitter=0", "--JupyterHub.cleanup_servers=False",
            "--KubeSessionSpawner.unschedulable_timeout=5"]


@pytest.fixture(scope="module")
def kube_hub(kube_site, apiserver, output_dir):
    site, kubelet, kubeconfig = kube_site
    h = start_hub(site, extra_args=HUB_ARGS, env={"KUBECONFIG": str(kubeconfig)})
    yield h
    if h.proc.poll() is None:
        h.stop_all_servers()
    stop_process(h.proc, timeout=60)
    shutil.copy(h.log, output_dir / "hub-kube.log")
    (output_dir / "kube-apiserver.log").write_text(apiserver.log("kube-apiserver")[-200_000:])
    for log in kubelet.folder.glob("*.log"):
        shutil.copy(log, output_dir / f"kubelet-{log.name}")


def pods(api):
    return {p["metadata"]["name"]: p for p in api.pods()}


def test_form_offers_kubernetes_and_the_session_runs_in_a_pod(kube_hub, kube_site, apiserver):
    site, kubelet, _ = kube_site
    session = kube_hub.signed_in("alice")
    form = kube_hub.spawn_form(session, "alice")
    assert form["backend"] == "kubernetes" and form["proposal"] == "MX-1001"
    page = session.get(f"{kube_hub.url}/hub/spawn", timeout=60).text
    offered = json.loads(re.search(r"var profiles = (\[.*?\]);\n", page).group(1))
    assert {p["slug"]: p["backends"] for p in offered} == {
        "python": ["kubernetes", "local"], "diffraction": ["kubernetes", "local"], "spectroscopy": ["kubernetes", "local"]}
    r = kube_hub.submit_form(session, "alice", profile="diffraction", cpu=2, memory=3)
    assert r.status_code == 200, r.text[:500]
    events = kube_hub.progress("alice", until="Server ready")
    messages = [e.get("message", "") for e in events]
    kube_hub.wait_ready("alice", timeout=120)
    try:
        assert messages[:2] == ["Server requested", "Asking Kubernetes for a pod in namespace daas-sessions"], messages
        for expected in ("Kubernetes: Successfully assigned daas-sessions/jupyter-alice to test-node",
                         'Kubernetes: Pulling image "registry.facility.example/daas/diffraction:2026.11"',
                         "Kubernetes: Started container notebook"):
            assert expected in messages, messages
        pod = pods(apiserver)["jupyter-alice"]
        (c,) = pod["spec"]["containers"]
        assert c["image"] == "registry.facility.example/daas/diffraction:2026.11"
        assert c["resources"]["limits"] == {"cpu": "2", "memory": str(3 * 1024**3)}
        assert c["resources"]["requests"] == c["resources"]["limits"]
        assert c["securityContext"]["runAsUser"] == 21001 and c["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["securityContext"]["supplementalGroups"] == [grp.getgrnam("daas-demo").gr_gid]
        assert pod["metadata"]["labels"]["daas-hub/proposal"] == "MX-1001"
        assert pod["metadata"]["labels"]["daas-hub/profile"] == "diffraction"
        # JupyterLab through the proxy, with the same ~/proposals layout as the other backends
        r = kube_hub.server_api("alice", "GET", "/contents/proposals")
        assert r.status_code == 200, r.text
        assert {c["name"] for c in r.json()["content"]} == {"MX-1001", "HC-3003", "IH-5005"}
        raw = kube_hub.server_api("alice", "GET", "/contents/proposals/MX-1001/raw").json()
        assert "cathode_scan0001.h5" in {c["name"] for c in raw["content"]}
        notice = kube_hub.server_api("alice", "GET", "/contents/proposals/HC-3003/ARCHIVED-README.txt").json()
        assert "is archived" in notice["content"] and "https://data.demo.invalid" in notice["content"]
        put = {"type": "file", "format": "text", "content": "ok\n"}
        r = kube_hub.server_api("alice", "PUT", "/contents/proposals/MX-1001/processed/from-kube.txt", json=put)
        assert r.status_code == 201, r.text  # read-write, through the proposal's group
        written = site / "data/id11/MX-1001/processed/from-kube.txt"
        assert written.stat().st_uid == 21001
        r = kube_hub.server_api("alice", "PUT", "/contents/proposals/MX-1001/raw/nope.txt", json=put)
        assert r.status_code >= 400  # raw data is mounted read-only
        # the passwd entry the init container wrote, from the image's own file
        (passwd,) = kubelet.folder.glob("jupyter-alice-*/volumes/daas-hub-etc/passwd")
        text = passwd.read_text()
        assert f"alice:x:21001:21001::{site}/pods/home/alice:/bin/bash" in text and text.startswith("root:")
        # the namespace's NetworkPolicy: the hub and the proxy, the admin's list, nothing else
        policy = apiserver.request(
            "GET", f"/apis/networking.k8s.io/v1/namespaces/{kube_cluster.NAMESPACE}/networkpolicies/daas-hub-sessions"
        ).json()
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        cidrs = [t["ipBlock"]["cidr"] for rule in policy["spec"]["egress"] for t in rule["to"]]
        assert cidrs == ["127.0.0.1/32", "192.0.2.0/24"]
    finally:
        kube_hub.stop_server("alice")
    assert "jupyter-alice" not in pods(apiserver)
    written.unlink()


def test_pod_deleted_behind_the_hub_is_shown_stopped_within_one_poll(kube_hub, apiserver):
    session = kube_hub.signed_in("bob")
    assert kube_hub.submit_form(session, "bob", profile="python", cpu=1, memory=1).status_code == 200
    kube_hub.wait_ready("bob", timeout=120)
    apiserver.delete_pod("jupyter-bob")
    t0 = time.monotonic()
    wait_until(lambda: "" not in kube_hub.api("GET", "/users/bob").json().get("servers", {}),
               timeout=POLL * 2 + 20, interval=0.5, what="bob's server shown stopped")
    assert time.monotonic() - t0 <= POLL * 2 + 20
    assert kube_hub.submit_form(session, "bob", profile="python", cpu=1, memory=1).status_code == 200
    kube_hub.wait_ready("bob", timeout=120)
    assert kube_hub.server_api("bob", "GET", "/contents").status_code == 200
    kube_hub.stop_server("bob")
    assert "jupyter-bob" not in pods(apiserver)


def pod_events(apiserver, name: str) -> list[dict]:
    items = apiserver.request("GET", f"/api/v1/namespaces/{kube_cluster.NAMESPACE}/events").json()["items"]
    return [e for e in items if e["involvedObject"]["name"] == name]


def failed_message(hub, user, seen: list | None = None) -> str:
    """The last progress message of a failed spawn; ``seen`` gets every message."""
    events = hub.progress(user, until="Spawn failed")
    wait_until(lambda: not hub.api("GET", f"/users/{user}").json().get("pending"), timeout=60,
               what=f"{user}'s spawn over")
    if seen is not None:
        seen.extend(e.get("message", "") for e in events)
    return re.sub(r"\s+", " ", events[-1].get("message", "")) if events else ""


def test_refusals_are_sentences(kube_hub, apiserver):
    session = kube_hub.signed_in("bob")
    # the image cannot be pulled
    assert kube_hub.submit_form(session, "bob", proposal="EC-2002", profile="spectroscopy",
                                cpu=1, memory=1).status_code == 200
    message = failed_message(kube_hub, "bob")
    # the kubelet reports it as the container's state or as an event, whichever the hub reads first
    assert re.search(rf"The session's image {re.escape(MISSING_IMAGE)} could not be pulled "
                     r"\((ErrImagePull|ImagePullBackOff): .*not found", message), message
    assert "Traceback" not in message
    wait_until(lambda: "jupyter-bob" not in pods(apiserver), timeout=30, what="the pod deleted")
    # no node has the GPU: the same person, so a pod of the same name right after the deleted one;
    # an event of the deleted pod that sorts after the new start (as KubeSpawner's re-list can
    # order them) must not speak for the new pod
    pulls = [e for e in pod_events(apiserver, "jupyter-bob") if e["reason"] == "Failed"]
    old_uid = max(pulls, key=lambda e: e["lastTimestamp"])["involvedObject"]["uid"]
    assert kube_hub.submit_form(session, "bob", profile="python", cpu=1, memory=1, gpu=1).status_code == 200
    later = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    apiserver.create(f"/api/v1/namespaces/{kube_cluster.NAMESPACE}/events", {
        "metadata": {"generateName": "jupyter-bob."},
        "involvedObject": {"kind": "Pod", "name": "jupyter-bob", "namespace": kube_cluster.NAMESPACE, "uid": old_uid},
        "reason": "Failed", "message": f'Failed to pull image "{MISSING_IMAGE}": not found', "type": "Warning",
        "count": 1, "firstTimestamp": later, "lastTimestamp": later, "source": {"component": "test-kubelet"}})
    seen = []
    message = failed_message(kube_hub, "bob", seen)
    assert "Waiting for a node: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu." in seen, seen
    assert "No node has a free GPU (nvidia.com/gpu) for this session now: 0/1 nodes are available: " \
           "1 Insufficient nvidia.com/gpu." in message, message
    assert not any("Failed to pull" in m for m in seen), seen
    wait_until(lambda: "jupyter-bob" not in pods(apiserver), timeout=30, what="the pod deleted")
    # the namespace's quota is used up (the quota controller's status is written by hand)
    quotas = f"/api/v1/namespaces/{kube_cluster.NAMESPACE}/resourcequotas"
    apiserver.create(quotas, {"metadata": {"name": "sessions"}, "spec": {"hard": {"pods": "0"}}})
    r = apiserver.request("PUT", f"{quotas}/sessions/status", json={
        "metadata": {"name": "sessions"}, "spec": {"hard": {"pods": "0"}},
        "status": {"hard": {"pods": "0"}, "used": {"pods": "0"}}})
    assert r.ok, r.text
    try:
        r = kube_hub.submit_form(session, "bob", profile="python", cpu=1, memory=1)
        # refused at once, so the hub answers the form itself (503) instead of the pending page
        message = re.sub(r"\s+", " ", r.text) if r.status_code == 503 else failed_message(kube_hub, "bob")
        assert "The Kubernetes namespace&#39;s quota is used up (sessions, requested: pods=1, used: pods=0, " \
               "limited: pods=0)" in message.replace("'", "&#39;"), message[-3000:]
        assert "Traceback" not in message
    finally:
        apiserver.request("DELETE", f"{quotas}/sessions")


# last: it stops the module's hub
def test_hub_restart_finds_the_running_pod(kube_hub, kube_site, apiserver):
    site, _, kubeconfig = kube_site
    session = kube_hub.signed_in("alice")
    assert kube_hub.submit_form(session, "alice", profile="python", cpu=1, memory=1).status_code == 200
    kube_hub.wait_ready("alice", timeout=120)
    hub_bind = re.search(r"hub_bind_url = '([^']+)'", (site / "test_jupyterhub_config.py").read_text()).group(1)
    stop_process(kube_hub.proc, timeout=60)
    assert "jupyter-alice" in pods(apiserver)
    again = start_hub(site, extra_args=[*HUB_ARGS, f"--JupyterHub.hub_bind_url={hub_bind}"],
                      env={"KUBECONFIG": str(kubeconfig)})
    try:
        model = again.wait_ready("alice", timeout=60)
        assert model["servers"][""]["ready"]
        assert again.server_api("alice", "GET", "/contents").status_code == 200
        again.stop_server("alice")
        assert "jupyter-alice" not in pods(apiserver)
    finally:
        stop_process(again.proc, timeout=60)
        shutil.copy(again.log, site / "hub-after-restart.log")
