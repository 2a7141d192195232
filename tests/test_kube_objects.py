"""The Kubernetes backend's manifests, for every profile and option mix, without a cluster.

What is real: the pure builder (:mod:`daas_hub.kube`), KubeSpawner 7.1.0's own
``get_pod_manifest``/``get_pvc_manifest`` on our backend class (the traits it is
given are the builder's result), and kubernetes-validate 1.37.0 with the pinned
v1.30 schemas in strict mode (unknown fields are errors). What the schema misses
(image present, every volumeMount names a volume, DNS-1123 names, label values, GPU
request = limit, runAsNonRoot with a numeric uid) is checked by :func:`schema_misses`,
itself tested on broken pods. No API
server: KubeSpawner only loads a kubeconfig (a dummy file) when it is built.
"""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import kubernetes_validate
import pytest

from daas_hub.errors import SettingsError
from daas_hub.kube import (
    START_ANNOTATION,
    KubeOrder,
    KubeRefusal,
    describe_event,
    dns_label,
    events_of_pod,
    explain_api_error,
    explain_pod,
    is_dns_label,
    label_value,
    network_policy,
    parse_kube_site,
    pod_of_start,
    session_settings,
    unschedulable_reason,
)
from daas_hub.model import Account, DataLocations, Member, MemberRole, Proposal, ProposalState
from daas_hub.mounts import MountPlan, plan_mounts
from daas_hub.options import SessionRequest
from daas_hub.profiles import load_catalogue

K8S_VERSION = "1.30.0"
GIB = 1024**3

ALICE = Account("alice", uid=21001, gid=21001, roles=frozenset({"user"}))


def proposal(pid, state=ProposalState.ACTIVE, *, gid=None, data=True, instrument="ID11"):
    return Proposal(
        pid, f"title {pid}", instrument, "DEMO", state, members=(Member("alice", MemberRole.PI),),
        data=DataLocations(f"/gpfs/{instrument.lower()}/{pid}/raw", f"/gpfs/{instrument.lower()}/{pid}/processed")
        if data else DataLocations(), gid=gid,
    )


PROPOSAL_SETS = {
    "none": (),
    "one": (proposal("MX-1001", gid=40001),),
    "mixed": (proposal("MX-1001", gid=40001), proposal("HC_3003.a", ProposalState.ARCHIVED),
              proposal("IH-5005", gid=40005, instrument="ID21"), proposal("EMPTY-1", data=False)),
}

STORAGES = {
    "nfs": {"raw": {"kind": "nfs", "server": "nfs.facility.example", "path": "{path}"},
            "processed": {"kind": "nfs", "server": "nfs.facility.example", "path": "{path}"},
            "home": {"kind": "nfs", "server": "nfs.facility.example", "path": "/export/homes/{username}"}},
    "cephfs": {"raw": {"kind": "cephfs", "monitors": ["10.0.0.1:6789"], "path": "/volumes/{instrument}/{proposal}/raw",
                       "user": "daas", "secret": "ceph-daas"},
               "processed": {"kind": "cephfs", "monitors": ["10.0.0.1:6789"], "path": "/volumes/{proposal}/processed",
                             "user": "daas", "secret": "ceph-daas"},
               "home": {"kind": "user-pvc", "size": "10Gi", "storage_class": "ceph-rbd"}},
    "pvc": {"raw": {"kind": "pvc", "claim": "beamline-data", "sub_path": "{relpath}"},
            "processed": {"kind": "pvc", "claim": "processed-data", "sub_path": "{proposal}"},
            "home": {"kind": "pvc", "claim": "homes", "sub_path": "{username}"}},
    "no-home": {"raw": {"kind": "nfs", "server": "10.1.2.3", "path": "{path}"}},
}

NETWORKS = {
    "in-cluster": {},
    "outside": {"hub": {"cidr": "192.0.2.10/32", "port": 8081}, "proxy": {"cidr": "192.0.2.11/32"},
                "allow": [{"name": "storage", "cidr": "10.20.0.0/16", "ports": [2049, 111]}], "internet": True},
    "no-dns": {"dns": False, "allow": [{"name": "ldap", "cidr": "10.30.0.5/32", "ports": [636]}]},
}


def site(storage="nfs", network="in-cluster", **extra):
    section = {"namespace": "daas-sessions", "storage": STORAGES[storage], "network_policy": NETWORKS[network],
               "gpu": {"node_selector": {"gpu": "true"},
                       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
               **extra}
    return parse_kube_site(section, "site.yaml")


CATALOGUE = load_catalogue()


def order(profile="python", proposals="one", *, cpu=2, memory=4, gpu=0, storage="nfs", network="in-cluster",
          account=ALICE, **site_extra) -> KubeOrder:
    props = PROPOSAL_SETS[proposals]
    chosen = props[0].id if props else None
    prof = CATALOGUE.get(profile)
    request = SessionRequest(chosen, profile, "kubernetes", cpu, int(memory * GIB), gpu, 4.0)
    return KubeOrder(hub_user="alice", account=account, request=request, profile=prof, proposals=props,
                     plan=plan_mounts(account.username, list(props), data_portal_url="https://data.example"),
                     site=site(storage, network, **site_extra))


# -- KubeSpawner itself writes the manifests
@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    """A kubeconfig KubeSpawner can load (it does so when built); nothing listens there."""
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "x", "user": {"token": "unused"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(path))
    from kubespawner.clients import load_config

    load_config.cache_clear()
    return path


async def manifests(o: KubeOrder, *, hub_user: str = "alice", **traits) -> tuple[dict, dict | None]:
    """(pod, home PVC or None) as KubeSpawner writes them for the builder's settings."""
    from kubernetes_asyncio.client import ApiClient

    from daas_hub.spawners.kubernetes import KubeSessionSpawner

    user = SimpleNamespace(name=hub_user, id=7, url=f"/user/{hub_user}/", escaped_name=hub_user)
    hub = SimpleNamespace(public_host="", url="http://hub:8081/hub/", base_url="/hub/",
                          api_url="http://hub:8081/hub/api")
    spawner = KubeSessionSpawner(user=user, hub=hub, api_token="t0ken", **traits)
    session = session_settings(o)
    for name, value in session.traits.items():
        setattr(spawner, name, value)
    spawner._session_env = session.env
    async with ApiClient() as api:
        pod = api.sanitize_for_serialization(await spawner.get_pod_manifest())
        pvc = api.sanitize_for_serialization(spawner.get_pvc_manifest()) if spawner.storage_pvc_ensure else None
    await spawner.api.api_client.close()
    return pod, pvc


def schema_misses(pod: dict) -> list[str]:
    """What kubernetes-validate does not check but the API server (or the kubelet) refuses."""
    problems = []
    spec = pod["spec"]
    if not is_dns_label(pod["metadata"]["name"]):
        problems.append(f"pod name {pod['metadata']['name']!r} is not DNS-1123")
    for key, value in pod["metadata"].get("labels", {}).items():
        if label_value(value) != value:
            problems.append(f"label {key}={value!r} is not a valid label value")
    volumes = {v["name"] for v in spec.get("volumes", [])}
    for v in volumes:
        if not is_dns_label(v):
            problems.append(f"volume name {v!r} is not DNS-1123")
    psc = spec.get("securityContext") or {}
    for c in spec["containers"] + spec.get("initContainers", []):
        if not c.get("image"):
            problems.append(f"container {c['name']} has no image")
        if not is_dns_label(c["name"]):
            problems.append(f"container name {c['name']!r} is not DNS-1123")
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                problems.append(f"{c['name']} mounts undefined volume {m['name']}")
        res = c.get("resources") or {}
        for name, amount in (res.get("limits") or {}).items():
            if "/" in name and (res.get("requests") or {}).get(name) != amount:
                problems.append(f"{c['name']}: {name} request != limit")
        csc = {**psc, **(c.get("securityContext") or {})}
        if csc.get("runAsNonRoot") is not True:
            problems.append(f"{c['name']}: runAsNonRoot is not set")
        if not isinstance(csc.get("runAsUser"), int) or csc["runAsUser"] == 0:
            problems.append(f"{c['name']}: runAsUser {csc.get('runAsUser')!r} is not a numeric non-root uid")
        if csc.get("allowPrivilegeEscalation") is not False or csc.get("capabilities") != {"drop": ["ALL"]}:
            problems.append(f"{c['name']}: privilege escalation or capabilities left open")
    return problems


def validate(manifest: dict) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


MIXES = [
    pytest.param(profile, proposals, storage, gpu, id=f"{profile}-{proposals}-{storage}-gpu{gpu}")
    for (profile, proposals, storage), gpu in itertools.product(
        [("python", "one", "nfs"), ("diffraction", "mixed", "pvc"), ("spectroscopy", "none", "no-home"),
         ("tomography", "mixed", "cephfs"), ("crystallography", "one", "pvc"), ("ptychography", "mixed", "nfs")],
        [0, 1, 2])
    if gpu <= CATALOGUE.get(profile).max.gpu and "kubernetes" in CATALOGUE.get(profile).backends
]
# every shipped profile that runs on Kubernetes is in the table (ptychography: Slurm only, no image)
assert {m.values[0] for m in MIXES} == {p.slug for p in CATALOGUE.profiles if "kubernetes" in p.backends}


@pytest.mark.parametrize("profile, proposals, storage, gpu", MIXES)
async def test_every_profile_and_option_mix_validates(kubeconfig, profile, proposals, storage, gpu):
    o = order(profile, proposals, gpu=gpu, cpu=3, memory=6, storage=storage)
    pod, pvc = await manifests(o)
    validate(pod)
    assert schema_misses(pod) == []
    if pvc is not None:
        validate(pvc)
        assert pvc["metadata"]["name"] == "home-alice" and is_dns_label(pvc["metadata"]["name"])
    for network in NETWORKS:
        validate(network_policy(site(storage, network)))

    (c,) = pod["spec"]["containers"]
    assert c["image"] == CATALOGUE.get(profile).image
    limits, requests = c["resources"]["limits"], c["resources"]["requests"]
    assert (float(limits["cpu"]), float(requests["cpu"])) == (3.0, 3.0)
    assert str(limits["memory"]) == str(requests["memory"]) == str(6 * GIB)
    if gpu:
        assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == str(gpu)
        assert pod["spec"]["nodeSelector"] == {"gpu": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    else:
        assert "nvidia.com/gpu" not in limits and not pod["spec"].get("nodeSelector")
    # identity: the facility account, never root, nothing to escalate
    psc, csc = pod["spec"]["securityContext"], c["securityContext"]
    assert (csc["runAsUser"], csc["runAsGroup"], psc["fsGroup"]) == (21001, 21001, 21001)
    assert psc["runAsNonRoot"] is True and csc["runAsNonRoot"] is True
    assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["automountServiceAccountToken"] is False
    expected_groups = {"none": None, "one": [40001], "mixed": [40001, 40005]}[proposals]
    assert psc.get("supplementalGroups") == expected_groups
    # labels for metrics and policies
    labels = pod["metadata"]["labels"]
    assert labels["daas-hub/session"] == "true" and labels["daas-hub/profile"] == profile
    assert labels["daas-hub/user"] == "alice"
    assert labels["daas-hub/proposal"] == (PROPOSAL_SETS[proposals][0].id if PROPOSAL_SETS[proposals] else "none")
    assert pod["metadata"]["annotations"]["daas-hub/account"] == "alice"


def _no_image(pod):
    del pod["spec"]["containers"][0]["image"]


def _undefined_volume(pod):
    pod["spec"]["containers"][0]["volumeMounts"].append({"name": "nowhere", "mountPath": "/x"})


def _bad_name(pod):
    pod["metadata"]["name"] = "Jupyter_Alice"


def _gpu_mismatch(pod):
    res = pod["spec"]["containers"][0]["resources"]
    res["limits"]["nvidia.com/gpu"], res["requests"]["nvidia.com/gpu"] = "2", "1"


def _root(pod):
    pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0


def _string_uid(pod):
    pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = "21001"


def _bad_label(pod):
    pod["metadata"]["labels"]["daas-hub/user"] = "alice@example.org"


@pytest.mark.parametrize("breaks", [_no_image, _undefined_volume, _bad_name, _gpu_mismatch, _root, _string_uid,
                                    _bad_label])
async def test_schema_misses_catches_what_the_schema_does_not(kubeconfig, breaks):
    pod, _ = await manifests(order("python", "one", gpu=1))
    assert schema_misses(pod) == []
    breaks(pod)
    assert schema_misses(pod), breaks.__name__


@pytest.mark.parametrize("hub_user", ["Jupyter_Alice", "alice.smith@esrf.fr", "a" * 80])
async def test_any_hub_user_name_gives_valid_names_and_labels(kubeconfig, hub_user):
    import dataclasses

    o = dataclasses.replace(order("python", "mixed"), hub_user=hub_user)
    pod, _ = await manifests(o, hub_user=hub_user)
    validate(pod)
    assert schema_misses(pod) == []
    assert pod["metadata"]["annotations"]["daas-hub/user"] == hub_user


async def test_proposal_volumes_follow_the_mount_plan(kubeconfig):
    """raw read-only, processed read-write, archived and data-less ones as notices; ~/proposals links."""
    pod, _ = await manifests(order("diffraction", "mixed", storage="pvc"))
    (c,) = pod["spec"]["containers"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/daas-hub/proposals/MX-1001/raw"]["readOnly"] is True
    assert mounts["/daas-hub/proposals/MX-1001/raw"]["subPath"] == "gpfs/id11/MX-1001/raw"
    assert mounts["/daas-hub/proposals/MX-1001/processed"]["readOnly"] is False
    assert mounts["/daas-hub/proposals/IH-5005/processed"]["subPath"] == "IH-5005"
    assert mounts["/home/alice"]["subPath"] == "alice"
    assert mounts["/etc/passwd"] == {"name": "daas-hub-etc", "mountPath": "/etc/passwd", "subPath": "passwd",
                                     "readOnly": True}
    assert not any("HC_3003" in p or "EMPTY-1" in p for p in mounts)  # archived, no data: nothing mounted
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["raw-mx-1001"]["persistentVolumeClaim"] == {"claimName": "beamline-data", "readOnly": True}
    env = {e["name"]: e.get("value") for e in c["env"]}
    plan = MountPlan.from_json(env["DAAS_HUB_MOUNT_PLAN"])
    assert [(m.path, m.source, m.read_only) for m in plan.mounts] == [
        ("proposals/IH-5005/raw", "/daas-hub/proposals/IH-5005/raw", True),
        ("proposals/IH-5005/processed", "/daas-hub/proposals/IH-5005/processed", False),
        ("proposals/MX-1001/raw", "/daas-hub/proposals/MX-1001/raw", True),
        ("proposals/MX-1001/processed", "/daas-hub/proposals/MX-1001/processed", False),
    ]
    assert [n.path for n in plan.notices] == ["proposals/EMPTY-1/NO-DATA-README.txt",
                                              "proposals/HC_3003.a/ARCHIVED-README.txt"]
    assert "https://data.example" in plan.notices[1].text
    assert (env["HOME"], env["NB_USER"], env["NB_UID"], env["NB_GID"]) == ("/home/alice", "alice", "21001", "21001")
    assert c["args"][:2] == ["daas-hub-session", "jupyterhub-singleuser"] and c["workingDir"] == "/home/alice"
    # the passwd entry: an init container with the session's image and identity, no root
    (init,) = pod["spec"]["initContainers"]
    assert init["image"] == c["image"] and init["securityContext"]["runAsUser"] == 21001
    assert "/daas-hub-etc/passwd" in init["command"][-1]


async def test_nfs_and_cephfs_volumes_and_the_home_claim(kubeconfig):
    pod, pvc = await manifests(order("tomography", "one", storage="cephfs", gpu=1))
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["raw-mx-1001"]["cephfs"] == {"monitors": ["10.0.0.1:6789"], "path": "/volumes/ID11/MX-1001/raw",
                                                "user": "daas", "secretRef": {"name": "ceph-daas"}, "readOnly": True}
    assert volumes["home"]["persistentVolumeClaim"] == {"claimName": "home-alice"}
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi" and pvc["spec"]["storageClassName"] == "ceph-rbd"
    pod, _ = await manifests(order("python", "one", storage="nfs"))
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["processed-mx-1001"]["nfs"] == {"server": "nfs.facility.example",
                                                   "path": "/gpfs/id11/MX-1001/processed", "readOnly": False}
    assert volumes["home"]["nfs"]["path"] == "/export/homes/alice"


async def test_profile_node_selector_tolerations_image_override_and_guarantee(kubeconfig):
    import dataclasses

    o = order("python", "one", cpu=4, memory=8, images={"python": "registry.example/other:1"},
              guarantee_fraction=0.5)
    prof = dataclasses.replace(o.profile, kube_node_selector={"pool": "interactive"},
                               kube_tolerations=({"key": "interactive", "operator": "Exists"},))
    pod, _ = await manifests(dataclasses.replace(o, profile=prof))
    validate(pod)
    (c,) = pod["spec"]["containers"]
    assert c["image"] == "registry.example/other:1"
    assert (float(c["resources"]["requests"]["cpu"]), str(c["resources"]["requests"]["memory"])) == (2.0, str(4 * GIB))
    assert pod["spec"]["nodeSelector"] == {"pool": "interactive"}
    assert pod["spec"]["tolerations"] == [{"key": "interactive", "operator": "Exists"}]


# -- the NetworkPolicy: hub, proxy, DNS and the admin's list; nothing else
async def test_vm_gateway_tile_reaches_kubernetes_sessions_by_name_only(kubeconfig):
    """With a VM gateway (configure_vm_gateway sets vm_service), the pod gets the service name, nothing else."""
    pod, _ = await manifests(order("python", "one"), vm_service="vm")
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["DAAS_HUB_VM_SERVICE"] == "vm"
    assert not [k for k in env if "GUAC" in k]
    pod, _ = await manifests(order("python", "one"))
    assert "DAAS_HUB_VM_SERVICE" not in {e["name"] for e in pod["spec"]["containers"][0]["env"]}


def test_network_policy_in_cluster_in_full():
    assert network_policy(site()) == {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "daas-hub-sessions", "namespace": "daas-sessions",
                     "labels": {"app.kubernetes.io/managed-by": "daas-hub"}},
        "spec": {
            "podSelector": {"matchLabels": {"daas-hub/session": "true"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"component": "hub"}}},
                                  {"podSelector": {"matchLabels": {"component": "proxy"}}}],
                         "ports": [{"port": 8888, "protocol": "TCP"}]}],
            "egress": [
                {"to": [{"podSelector": {"matchLabels": {"component": "hub"}}}],
                 "ports": [{"port": 8081, "protocol": "TCP"}]},
                {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                 "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
            ],
        },
    }


def test_network_policy_internet_never_opens_metadata_or_internal_networks():
    egress = network_policy(site(network="outside"))["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
            "ports": [{"port": 2049, "protocol": "TCP"}, {"port": 111, "protocol": "TCP"}]} in egress
    (internet,) = [r for r in egress if r["to"][0].get("ipBlock", {}).get("cidr") == "0.0.0.0/0"]
    excepted = internet["to"][0]["ipBlock"]["except"]
    assert "169.254.0.0/16" in excepted and "10.0.0.0/8" in excepted and "192.168.0.0/16" in excepted
    no_dns = network_policy(site(network="no-dns"))["spec"]["egress"]
    assert not any("namespaceSelector" in str(r) for r in no_dns)


# -- refusals: sentences
@pytest.mark.parametrize("account, reason, words", [
    (Account("alice", uid=None, gid=None), "no-uid", "gives your account alice no numeric uid/gid"),
    (Account("alice", uid=0, gid=0), "root", "never run as root"),
])
def test_accounts_without_a_usable_uid_are_refused(account, reason, words):
    with pytest.raises(KubeRefusal) as e:
        session_settings(order(account=account))
    assert e.value.reason == reason and words in str(e.value)


def test_profile_without_image_is_refused():
    import dataclasses

    o = order()
    with pytest.raises(KubeRefusal, match="has no container image for Kubernetes"):
        session_settings(dataclasses.replace(o, profile=dataclasses.replace(o.profile, image=None)))


def test_cluster_messages_become_sentences():
    pod = {"status": {"containerStatuses": [{"name": "notebook", "image": "reg.example/x:1",
                                             "state": {"waiting": {"reason": "ErrImagePull",
                                                                   "message": "manifest unknown"}}}]}}
    refusal = explain_pod(pod, [])
    assert refusal.reason == "image" and "reg.example/x:1 could not be pulled (ErrImagePull: manifest unknown)" in str(refusal)
    assert explain_pod({"status": {"phase": "Pending"}}, []) is None
    # the same failure seen first as the kubelet's event: the same sentence, the image named
    pending = {"spec": {"containers": [{"name": "notebook", "image": "reg.example/x:1"}]},
               "status": {"phase": "Pending"}}
    failed = [{"reason": "Failed", "message": 'Failed to pull image "reg.example/x:1": not found'}]
    assert 'reg.example/x:1 could not be pulled (ErrImagePull: Failed to pull image "reg.example/x:1": ' \
           'not found)' in str(explain_pod(pending, failed))
    events = [{"reason": "FailedScheduling", "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
    assert unschedulable_reason(events).startswith("No node has a free GPU (nvidia.com/gpu) for this session now")
    assert describe_event({"reason": "Pulling", "message": 'Pulling image "x"'}) == 'Kubernetes: Pulling image "x"'
    quota = explain_api_error(403, 'pods "jupyter-alice" is forbidden: exceeded quota: sessions, requested: '
                                   'limits.cpu=4, used: limits.cpu=8, limited: limits.cpu=8')
    assert quota.startswith("The Kubernetes namespace's quota is used up (sessions, requested: limits.cpu=4")
    assert "RBAC" in explain_api_error(403, "pods is forbidden: User cannot create")


# -- site settings: the same error style as every settings file
@pytest.mark.parametrize("section, entry, problem", [
    ({"storage": {"raw": {"kind": "nfs", "server": "x"}}}, "spawner > kubernetes > storage > raw > path",
     "the nfs storage needs path"),
    ({"storage": {"raw": {"kind": "user-pvc", "size": "1Gi"}}}, "spawner > kubernetes > storage > raw > kind",
     "unknown storage kind 'user-pvc'"),
    ({"storage": {"processed": {"kind": "pvc", "claim": "d", "sub_path": "{proposl}"}}},
     "spawner > kubernetes > storage > processed > sub_path", "unknown variable {proposl}"),
    ({"home_path": "home/{username}"}, "spawner > kubernetes > home_path", "is not an absolute path"),
    ({"network_policy": {"hub": {}}}, "spawner > kubernetes > network_policy > hub", "give either pod_labels"),
    ({"guarantee_fraction": 0}, "spawner > kubernetes > guarantee_fraction", "is not in (0, 1]"),
])
def test_refused_kubernetes_settings(section, entry, problem):
    with pytest.raises(SettingsError) as e:
        parse_kube_site(section, "/etc/daas/site.yaml")
    assert e.value.file == "/etc/daas/site.yaml" and e.value.entry == entry
    assert problem in e.value.problem and e.value.fix


@pytest.mark.parametrize("text, name", [
    ("MX-1001", "mx-1001"), ("HC_3003.a", None), ("x" * 70, None),
])
def test_names_are_dns_labels_and_unique(text, name):
    got = dns_label(text, prefix="raw-")
    assert is_dns_label(got)
    if name:
        assert got == f"raw-{name}"
    assert dns_label("MX_1") != dns_label("MX.1")
    assert label_value("alice@example.org") != label_value("alice_example.org")


# -- the site file's spawner.kubernetes: schema, checks, traits
def kube_site_doc(kube: dict) -> dict:
    from daas_hub.demo import site_settings

    doc = site_settings("http://127.0.0.1:8000")
    doc["spawner"] = {"backend": "kubernetes", "backends": ["kubernetes", "local"],
                      "local": doc["spawner"]["local"], "kubernetes": kube}
    return doc


def test_site_file_kubernetes_section_becomes_traits(tmp_path):
    from traitlets.config import Config

    from daas_hub.config import _apply_kubernetes
    from daas_hub.settings import parse_settings

    kube = {"namespace": "daas-sessions", "images": {"python": "reg.example/py:1"},
            "storage": STORAGES["pvc"], "network_policy": NETWORKS["outside"], "guarantee_fraction": 0.5}
    settings = parse_settings(kube_site_doc(kube), tmp_path / "site.yaml")
    assert settings.backend == "kubernetes" and settings.kubernetes == kube
    c = Config()
    _apply_kubernetes(c, settings.kubernetes)
    assert c.KubeSessionSpawner.namespace == "daas-sessions"
    assert c.KubeSessionSpawner.session_images == {"python": "reg.example/py:1"}
    assert c.KubeSessionSpawner.storage == STORAGES["pvc"] and c.KubeSessionSpawner.guarantee_fraction == 0.5


@pytest.mark.parametrize("kube, entry, problem", [
    ({"namespce": "x"}, "spawner > kubernetes", "Additional properties are not allowed ('namespce'"),
    ({"namespace": "Daas_Sessions"}, "spawner > kubernetes > namespace", "does not match"),
    ({"storage": {"raw": {"kind": "hostPath", "path": "/data"}}}, "spawner > kubernetes > storage > raw > kind",
     "is not one of"),
    ({"network_policy": {"allow": [{"name": "nfs", "cidr": "10.0.0.0"}]}},
     "spawner > kubernetes > network_policy > allow[0] \"nfs\" > cidr", "does not match"),
    ({"storage": {"home": {"kind": "nfs", "server": "h"}}}, "spawner > kubernetes > storage > home > path",
     "the nfs storage needs path"),
])
def test_site_file_kubernetes_errors_name_the_entry(tmp_path, kube, entry, problem):
    from daas_hub.settings import parse_settings

    with pytest.raises(SettingsError) as e:
        parse_settings(kube_site_doc(kube), tmp_path / "site.yaml")
    assert e.value.file == str(tmp_path / "site.yaml") and e.value.entry == entry
    assert problem in e.value.problem, e.value.problem


def test_images_must_name_profiles():
    from daas_hub.kube import check_images

    with pytest.raises(SettingsError) as e:
        check_images(parse_kube_site({"images": {"pythn": "x"}}, "site.yaml"), CATALOGUE.profiles)
    assert e.value.entry == "spawner > kubernetes > images > pythn" and 'no profile "pythn"' in e.value.problem


def test_a_start_reads_only_its_own_pod_and_events():
    """A refused start's pod (same name, image missing) must not speak for the next start."""
    old = {"metadata": {"name": "jupyter-bob", "uid": "u-old", "annotations": {START_ANNOTATION: "s1"}},
           "status": {"containerStatuses": [{"image": "x", "state": {"waiting": {"reason": "ErrImagePull"}}}]}}
    new = {"metadata": {"name": "jupyter-bob", "uid": "u-new", "annotations": {START_ANNOTATION: "s2"}},
           "status": {"phase": "Pending"}}
    assert pod_of_start(old, "s2") is None and pod_of_start(new, "s2") is new
    assert pod_of_start(new, None) is None and pod_of_start(None, "s2") is None
    # the same second, in the order a re-list gives (by name): the old pod's events after the new one's
    events = [
        {"involvedObject": {"name": "jupyter-bob", "uid": "u-new"}, "reason": "FailedScheduling",
         "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.", "lastTimestamp": "2026-11-30T11:34:04Z"},
        {"involvedObject": {"name": "jupyter-bob", "uid": "u-old"}, "reason": "Failed",
         "message": 'Failed to pull image "x": not found', "lastTimestamp": "2026-11-30T11:34:04Z"},
    ]
    mine = events_of_pod(new, events)
    assert [e["reason"] for e in mine] == ["FailedScheduling"]
    assert explain_pod(new, mine) is None
    assert unschedulable_reason(mine).startswith("No node has a free GPU")
    assert events_of_pod(None, events) == [] and events_of_pod({"metadata": {}}, events) == []
