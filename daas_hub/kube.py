"""The Kubernetes backend's pure half: site settings in, KubeSpawner settings and manifests out.

Nothing here talks to a cluster or imports JupyterHub or kubespawner. The backend
(:mod:`daas_hub.spawners.kubernetes`) hands :func:`session_settings` one checked
request (the same :class:`~daas_hub.options.SessionRequest` the other backends get),
the facility account and the proposals, and sets the result on KubeSpawner's own
traits (``image``, ``cpu_limit``, ``uid``, ``volumes``...). KubeSpawner writes the pod.

- :func:`parse_kube_site`: the ``spawner.kubernetes`` section of site.yaml (or the
  equivalent traits), checked, as a frozen :class:`KubeSite`.
- :func:`session_settings`: request in, :class:`KubeSession` (trait values, environment) out.
- :func:`network_policy`: the NetworkPolicy for every session pod of the namespace.
- :func:`explain_pod`, :func:`explain_api_error`, :func:`describe_event`: sentences
  for what the cluster says (image missing, quota, no node with the GPU).
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass, field, replace

from .errors import SettingsError
from .model import Account, Proposal
from .mounts import MountEntry, MountPlan
from .options import SessionRequest
from .profiles import Profile, parse_memory

DOCS = "docs/backend-kubernetes.md"
LABEL_PREFIX = "daas-hub"
#: every session pod carries this label; the NetworkPolicy selects it
SESSION_LABEL = f"{LABEL_PREFIX}/session"
SESSION_PORT = 8888
#: variables an admin may use in storage templates
TEMPLATE_FIELDS = ("username", "proposal", "instrument", "facility", "path", "relpath")
STORAGE_KINDS = ("nfs", "cephfs", "pvc", "user-pvc")
#: what a session may never reach, even when the admin opens the internet
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class KubeRefusal(Exception):
    """A session that cannot start; ``str()`` is the sentence people read."""

    def __init__(self, message: str, reason: str):
        self.reason = reason
        super().__init__(message)


# -- names
def dns_label(text: str, *, prefix: str = "") -> str:
    """``text`` as a DNS-1123 label (lower case, ``-``, at most 63), unique per input."""
    base = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = f"{prefix}{base}" if base else prefix.rstrip("-") or "x"
    if name != f"{prefix}{text.lower()}" or len(name) > 63:  # changed: a hash keeps MX_1 and MX.1 apart
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-')}-{digest}"
    return name


def is_dns_label(name: str) -> bool:
    return bool(_DNS_LABEL.match(name))


def label_value(text: str) -> str:
    """``text`` as a label value (63 characters of ``[A-Za-z0-9._-]``), unique per input."""
    if _LABEL_VALUE.match(text) and len(text) <= 63:
        return text
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:50].rstrip("-._")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{cleaned}-{digest}" if cleaned else digest


# -- site settings
@dataclass(frozen=True)
class Storage:
    """Where one kind of folder (raw, processed, home) lives: an admin-written template."""

    kind: str  # nfs | cephfs | pvc | user-pvc (home only: a claim per user, made by KubeSpawner)
    server: str = ""  # nfs
    path: str = ""  # nfs, cephfs: the exported folder (template)
    monitors: tuple[str, ...] = ()  # cephfs
    user: str = ""  # cephfs
    secret: str = ""  # cephfs: name of the Secret holding the key
    claim: str = ""  # pvc: an existing claim in the namespace
    sub_path: str = ""  # pvc: the folder inside the claim (template)
    size: str = ""  # user-pvc
    storage_class: str = ""  # user-pvc


@dataclass(frozen=True)
class Peer:
    """Who a session may talk to: pods by label (same namespace) or an address block."""

    pod_labels: tuple[tuple[str, str], ...] = ()
    cidr: str = ""
    port: int | None = None


@dataclass(frozen=True)
class Egress:
    name: str
    cidr: str
    ports: tuple[int, ...] = ()
    protocol: str = "TCP"


@dataclass(frozen=True)
class NetworkRules:
    manage: bool = True
    hub: Peer = Peer(pod_labels=(("component", "hub"),), port=8081)
    proxy: Peer = Peer(pod_labels=(("component", "proxy"),))
    dns: bool = True
    allow: tuple[Egress, ...] = ()
    internet: bool = False
    name: str = "daas-hub-sessions"


@dataclass(frozen=True)
class KubeSite:
    namespace: str = "default"
    images: dict = field(default_factory=dict)  # profile slug -> image, over the catalogue's
    raw: Storage | None = None
    processed: Storage | None = None
    home: Storage | None = None
    home_path: str = "/home/{username}"
    data_root: str = "/daas-hub/proposals"
    command: tuple[str, ...] = ("daas-hub-session", "jupyterhub-singleuser")
    gpu_resource: str = "nvidia.com/gpu"
    gpu_node_selector: dict = field(default_factory=dict)
    gpu_tolerations: tuple[dict, ...] = ()
    guarantee_fraction: float = 1.0
    image_pull_policy: str = "IfNotPresent"
    network: NetworkRules = NetworkRules()
    file: str = "site.yaml"


def _template_fields(text: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as e:
        raise ValueError(f"{text!r} is not a template ({e})") from None


def _storage(d: dict | None, where: str, file: str, *, home: bool) -> Storage | None:
    if not d:
        return None
    kind = d.get("kind")
    allowed = STORAGE_KINDS if home else STORAGE_KINDS[:3]
    if kind not in allowed:
        raise SettingsError(file, f"{where} > kind", f"unknown storage kind {kind!r}", f"use one of: {', '.join(allowed)}")
    need = {"nfs": ("server", "path"), "cephfs": ("monitors", "path", "user", "secret"), "pvc": ("claim",),
            "user-pvc": ("size",)}[kind]
    for key in need:
        if not d.get(key):
            raise SettingsError(file, f"{where} > {key}", f"the {kind} storage needs {key}",
                                f"add {key} (see {DOCS}#storage)")
    for key in ("path", "sub_path"):
        text = str(d.get(key, ""))
        try:
            unknown = [f for f in _template_fields(text) if f not in TEMPLATE_FIELDS]
        except ValueError as e:
            raise SettingsError(file, f"{where} > {key}", str(e), "write {name} for a variable, {{ for a brace") from None
        if unknown:
            raise SettingsError(file, f"{where} > {key}", f"unknown variable {{{unknown[0]}}}",
                                f"use only {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}")
    if kind == "user-pvc":
        try:
            parse_memory(str(d["size"]).removesuffix("i"))
        except ValueError:
            raise SettingsError(file, f"{where} > size", f"{d['size']!r} is not a size",
                                'write e.g. "10Gi"') from None
    return Storage(kind=kind, server=d.get("server", ""), path=d.get("path", ""),
                   monitors=tuple(d.get("monitors", ())), user=d.get("user", ""), secret=d.get("secret", ""),
                   claim=d.get("claim", ""), sub_path=d.get("sub_path", ""), size=str(d.get("size", "")),
                   storage_class=d.get("storage_class", ""))


def _peer(d: dict | None, fallback: Peer) -> Peer:
    if d is None:
        return fallback
    return Peer(pod_labels=tuple(sorted((d.get("pod_labels") or {}).items())), cidr=d.get("cidr", ""),
                port=d.get("port", fallback.port))


def parse_kube_site(section: dict | None, file: str, *, entry: str = "spawner > kubernetes") -> KubeSite:
    """The ``spawner.kubernetes`` section as a :class:`KubeSite`; SettingsError names the entry.

    The section's shape is checked by the site schema; this adds what a schema cannot say.
    """
    d = dict(section or {})
    storage = d.get("storage", {})
    raw = _storage(storage.get("raw"), f"{entry} > storage > raw", file, home=False)
    processed = _storage(storage.get("processed"), f"{entry} > storage > processed", file, home=False)
    home = _storage(storage.get("home"), f"{entry} > storage > home", file, home=True)
    for key in ("home_path", "data_root"):
        if key in d and not str(d[key]).startswith("/"):
            raise SettingsError(file, f"{entry} > {key}", f"{d[key]!r} is not an absolute path",
                                "write the path inside the session's container, starting with /")
    home_path = d.get("home_path", KubeSite.home_path)
    if [f for f in _template_fields(home_path) if f != "username"]:
        raise SettingsError(file, f"{entry} > home_path", "only {username} may be used here",
                            'write e.g. "/home/{username}"')
    net = d.get("network_policy", {})
    defaults = NetworkRules()
    rules = NetworkRules(
        manage=net.get("manage", True),
        hub=_peer(net.get("hub"), defaults.hub),
        proxy=_peer(net.get("proxy"), defaults.proxy),
        dns=net.get("dns", True),
        allow=tuple(Egress(a["name"], a["cidr"], tuple(a.get("ports", ())), a.get("protocol", "TCP"))
                    for a in net.get("allow", ())),
        internet=net.get("internet", False),
    )
    for name, peer in (("hub", rules.hub), ("proxy", rules.proxy)):
        if bool(peer.pod_labels) == bool(peer.cidr):
            raise SettingsError(file, f"{entry} > network_policy > {name}",
                                "give either pod_labels (the hub runs in the cluster) or cidr (it runs outside)",
                                f"see {DOCS}#network-policy")
    gpu = d.get("gpu", {})
    fraction = float(d.get("guarantee_fraction", 1.0))
    if not 0 < fraction <= 1:
        raise SettingsError(file, f"{entry} > guarantee_fraction", f"{fraction:g} is not in (0, 1]",
                            "1 reserves what the person asked for; 0.5 reserves half of it")
    return KubeSite(
        namespace=d.get("namespace", "default"),
        images=dict(d.get("images", {})),
        raw=raw, processed=processed, home=home,
        home_path=home_path,
        data_root=d.get("data_root", KubeSite.data_root).rstrip("/"),
        command=tuple(d.get("command", KubeSite.command)),
        gpu_resource=gpu.get("resource", "nvidia.com/gpu"),
        gpu_node_selector=dict(gpu.get("node_selector", {})),
        gpu_tolerations=tuple(gpu.get("tolerations", ())),
        guarantee_fraction=fraction,
        image_pull_policy=d.get("image_pull_policy", "IfNotPresent"),
        network=rules,
        file=str(file),
    )


def check_images(site: KubeSite, profiles, *, entry: str = "spawner > kubernetes > images") -> None:
    """Every profile offering kubernetes has an image; every ``images`` key is a profile."""
    slugs = {p.slug for p in profiles}
    for slug in site.images:
        if slug not in slugs:
            raise SettingsError(site.file, f"{entry} > {slug}", f'there is no profile "{slug}"',
                                f"use one of: {', '.join(sorted(slugs))}")


# -- one session
@dataclass(frozen=True)
class KubeOrder:
    """What the builder needs; every field checked before (never the browser's words)."""

    hub_user: str
    account: Account
    request: SessionRequest
    profile: Profile
    proposals: tuple[Proposal, ...]
    plan: MountPlan
    site: KubeSite


@dataclass(frozen=True)
class KubeSession:
    """KubeSpawner trait values and the session's environment (set by the backend)."""

    traits: dict
    env: dict


def _fill(template: str, values: dict) -> str:
    return template.format_map(values)


def _volume(name: str, storage: Storage, values: dict, *, read_only: bool) -> tuple[dict, str]:
    """A pod volume for ``storage`` and the subPath to mount (pvc)."""
    if storage.kind == "nfs":
        return {"name": name, "nfs": {"server": storage.server, "path": _fill(storage.path, values),
                                      "readOnly": read_only}}, ""
    if storage.kind == "cephfs":
        return {"name": name, "cephfs": {"monitors": list(storage.monitors), "path": _fill(storage.path, values),
                                         "user": storage.user, "secretRef": {"name": storage.secret},
                                         "readOnly": read_only}}, ""
    if storage.kind == "pvc":
        return {"name": name, "persistentVolumeClaim": {"claimName": storage.claim, "readOnly": read_only}}, \
            _fill(storage.sub_path, values)
    # user-pvc: KubeSpawner creates the claim; it fills in {pvc_name}
    return {"name": name, "persistentVolumeClaim": {"claimName": "{pvc_name}"}}, ""


IDENTITY_SCRIPT = (
    # the image's passwd and group without the session's name or ids, then the session's entries
    'awk -F: -v u="$NB_UID" -v n="$NB_USER" \'$3 != u && $1 != n\' /etc/passwd > /daas-hub-etc/passwd'
    ' && printf "%s:x:%s:%s::%s:/bin/bash\\n" "$NB_USER" "$NB_UID" "$NB_GID" "$HOME" >> /daas-hub-etc/passwd'
    ' && awk -F: -v g="$NB_GID" -v n="$NB_USER" \'$3 != g && $1 != n\' /etc/group > /daas-hub-etc/group'
    ' && printf "%s:x:%s:\\n" "$NB_USER" "$NB_GID" >> /daas-hub-etc/group'
)


def session_settings(order: KubeOrder) -> KubeSession:
    """The KubeSpawner settings for one session; raises :class:`KubeRefusal`."""
    site, r, account, profile = order.site, order.request, order.account, order.profile
    image = site.images.get(profile.slug) or profile.image
    if not image:
        raise KubeRefusal(
            f"The {profile.name} profile has no container image for Kubernetes. The admin must name one "
            f"(profile kubernetes.image, or spawner.kubernetes.images in site.yaml; see {DOCS}).",
            reason="no-image",
        )
    if account.uid is None or account.gid is None:
        raise KubeRefusal(
            f"The proposal system gives your account {account.username} no numeric uid/gid, so a Kubernetes "
            f"session cannot run as you. Contact the user office.", reason="no-uid",
        )
    if account.uid == 0 or account.gid == 0:
        raise KubeRefusal(f"Sessions never run as root, and {account.username} has uid/gid 0.", reason="root")

    home = _fill(site.home_path, {"username": account.username})
    mounted = {m.proposal for m in order.plan.mounts}
    by_id = {p.id: p for p in order.proposals}
    groups = []
    for pid in ([r.proposal] if r.proposal else []) + sorted(mounted):
        gid = getattr(by_id.get(pid), "gid", None)
        if gid and gid != account.gid and gid not in groups:
            groups.append(gid)

    volumes = [{"name": "daas-hub-etc", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]
    mounts = [
        {"name": "daas-hub-etc", "mountPath": "/etc/passwd", "subPath": "passwd", "readOnly": True},
        {"name": "daas-hub-etc", "mountPath": "/etc/group", "subPath": "group", "readOnly": True},
    ]
    if site.home:
        volume, sub = _volume("home", site.home, {"username": account.username, "proposal": "", "instrument": "",
                                                  "facility": "", "path": home, "relpath": home.lstrip("/")},
                              read_only=False)
        volumes.append(volume)
        mounts.append({"name": "home", "mountPath": home, **({"subPath": sub} if sub else {})})
    plan_mounts: list[MountEntry] = []
    for m in order.plan.mounts:
        which = "raw" if m.read_only else "processed"
        storage = site.raw if m.read_only else site.processed
        if storage is None:
            continue  # the admin gives no storage for this kind of folder: not shown
        p = by_id.get(m.proposal)
        values = {"username": account.username, "proposal": m.proposal, "instrument": p.instrument if p else "",
                  "facility": p.facility if p else "", "path": m.source, "relpath": m.source.lstrip("/")}
        name = dns_label(m.proposal, prefix=f"{which}-")
        target = f"{site.data_root}/{m.proposal}/{which}"
        volume, sub = _volume(name, storage, values, read_only=m.read_only)
        volumes.append(volume)
        mounts.append({"name": name, "mountPath": target, "readOnly": m.read_only, **({"subPath": sub} if sub else {})})
        plan_mounts.append(replace(m, source=target))  # the session links ~/proposals/<id>/<which> here
    plan = replace(order.plan, mounts=tuple(plan_mounts))

    security = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}}
    env = {
        "HOME": home, "USER": account.username, "NB_USER": account.username,
        "NB_UID": str(account.uid), "NB_GID": str(account.gid), "SHELL": "/bin/bash",
        "DAAS_HUB_PROPOSAL": r.proposal or "", "DAAS_HUB_PROFILE": r.profile,
        "DAAS_HUB_MOUNT_PLAN": plan.to_json(),
    }
    identity = {
        "name": "daas-hub-identity", "image": image, "imagePullPolicy": site.image_pull_policy,
        "command": ["/bin/sh", "-c", IDENTITY_SCRIPT],
        "env": [{"name": k, "value": env[k]} for k in ("HOME", "NB_USER", "NB_UID", "NB_GID")],
        "securityContext": {**security, "runAsUser": account.uid, "runAsGroup": account.gid},
        "volumeMounts": [{"name": "daas-hub-etc", "mountPath": "/daas-hub-etc"}],
        "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}},
    }
    node_selector = dict(profile.kube_node_selector)
    tolerations = list(profile.kube_tolerations)
    gpu = {}
    if r.gpu:
        gpu = {site.gpu_resource: str(r.gpu)}
        node_selector.update(site.gpu_node_selector)
        tolerations += [t for t in site.gpu_tolerations if t not in tolerations]
    labels = {SESSION_LABEL: "true", f"{LABEL_PREFIX}/user": label_value(order.hub_user),
              f"{LABEL_PREFIX}/proposal": label_value(r.proposal or "none"),
              f"{LABEL_PREFIX}/profile": label_value(r.profile)}
    annotations = {f"{LABEL_PREFIX}/user": order.hub_user, f"{LABEL_PREFIX}/account": account.username,
                   f"{LABEL_PREFIX}/proposal": r.proposal or "", f"{LABEL_PREFIX}/profile": r.profile,
                   f"{LABEL_PREFIX}/hours": f"{r.hours:g}"}
    f = site.guarantee_fraction
    traits = {
        "namespace": site.namespace,
        "image": image,
        "image_pull_policy": site.image_pull_policy,
        "cmd": list(site.command),
        "port": SESSION_PORT,
        "working_dir": home,
        "cpu_limit": float(r.cpu),
        "cpu_guarantee": float(r.cpu) * f,
        "mem_limit": int(r.memory),
        "mem_guarantee": int(r.memory * f),
        "extra_resource_limits": gpu,
        "extra_resource_guarantees": dict(gpu),
        "uid": account.uid,
        "gid": account.gid,
        "fs_gid": account.gid,
        "supplemental_gids": groups,
        "privileged": False,
        "allow_privilege_escalation": False,
        "container_security_context": security,
        "pod_security_context": {"runAsNonRoot": True, "fsGroupChangePolicy": "OnRootMismatch",
                                 "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": volumes,
        "volume_mounts": mounts,
        "init_containers": [identity],
        "node_selector": node_selector,
        "tolerations": tolerations,
        "extra_labels": labels,
        "extra_annotations": annotations,
        "automount_service_account_token": False,
        "storage_pvc_ensure": bool(site.home and site.home.kind == "user-pvc"),
    }
    if site.home and site.home.kind == "user-pvc":
        # the claim is named by KubeSessionSpawner.pvc_name_template ("home-{username}")
        traits.update({"storage_capacity": site.home.size,
                       "storage_class": site.home.storage_class, "storage_access_modes": ["ReadWriteOnce"],
                       "storage_extra_labels": {f"{LABEL_PREFIX}/user": label_value(order.hub_user)}})
    return KubeSession(traits=traits, env=env)


# -- the namespace's NetworkPolicy
def _peer_rule(peer: Peer) -> dict:
    if peer.cidr:
        return {"ipBlock": {"cidr": peer.cidr}}
    return {"podSelector": {"matchLabels": dict(peer.pod_labels)}}


def network_policy(site: KubeSite) -> dict:
    """Sessions answer the hub and the proxy, and reach the hub, DNS and what the admin lists."""
    rules = site.network
    ingress = [{"from": [_peer_rule(rules.hub), _peer_rule(rules.proxy)],
                "ports": [{"port": SESSION_PORT, "protocol": "TCP"}]}]
    egress = [{"to": [_peer_rule(rules.hub)],
               **({"ports": [{"port": rules.hub.port, "protocol": "TCP"}]} if rules.hub.port else {})}]
    if rules.dns:
        egress.append({"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                       "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]})
    for a in rules.allow:
        rule = {"to": [{"ipBlock": {"cidr": a.cidr}}]}
        if a.ports:
            rule["ports"] = [{"port": p, "protocol": a.protocol} for p in a.ports]
        egress.append(rule)
    if rules.internet:
        egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_RANGES)}}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": rules.name, "namespace": site.namespace,
                     "labels": {"app.kubernetes.io/managed-by": "daas-hub"}},
        "spec": {
            "podSelector": {"matchLabels": {SESSION_LABEL: "true"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


# -- which pod and events belong to this start
#: annotation with the id of the start that created a pod
START_ANNOTATION = f"{LABEL_PREFIX}/start"


def pod_of_start(pod: dict | None, start_id: str | None) -> dict | None:
    """``pod`` if this start created it (its start annotation), else None.

    A pod of the same name deleted a moment before (a refused start, a stop) can still be in
    the hub's view of the cluster when the next start begins; its status (ErrImagePull) must
    not end the new start.
    """
    annotations = ((pod or {}).get("metadata") or {}).get("annotations") or {}
    return pod if start_id and annotations.get(START_ANNOTATION) == start_id else None


def events_of_pod(pod: dict | None, events: list[dict]) -> list[dict]:
    """The events about this very pod (by its uid), in the order given.

    KubeSpawner tells a pod's events from those of an earlier pod of the same name by their
    place in a list sorted on second-resolution timestamps, which its periodic re-list can
    reorder: a new pod's FailedScheduling could be dropped (the start then hung) or an old
    pod's failed pull kept. The uid cannot be confused.
    """
    uid = ((pod or {}).get("metadata") or {}).get("uid")
    if not uid:
        return []
    return [e for e in events if (e.get("involvedObject") or {}).get("uid") == uid]


# -- what the cluster says, as sentences
_IMAGE_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")


def describe_event(event: dict) -> str:
    """One pod event as a progress line: ``Pulling image "x"`` -> ``Kubernetes: Pulling image "x"``."""
    reason = event.get("reason") or ""
    message = (event.get("message") or "").strip()
    if reason == "FailedScheduling":
        return f"Waiting for a node: {message}"
    return f"Kubernetes: {message}" if message else f"Kubernetes: {reason}"


def _image_refusal(image: str, reason: str, detail: str) -> KubeRefusal:
    return KubeRefusal(
        f"The session's image {image} could not be pulled ({reason}: {detail.strip() or 'no details'}). "
        f"The admin must publish it or correct the profile's image (see {DOCS}).", reason="image",
    )


def explain_pod(pod: dict | None, events: list[dict]) -> KubeRefusal | None:
    """A refusal when the pod can never start as it is (image missing); None while it may.

    The kubelet reports a failed pull twice, in no fixed order: as the container's waiting state and
    as a ``Failed`` event; whichever the hub sees first gives the same sentence.
    """
    if not pod:
        return None
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_REASONS:
            return _image_refusal(status.get("image") or "?", waiting["reason"], waiting.get("message") or "")
    for event in events:
        message = (event.get("message") or "").strip()
        if event.get("reason") == "Failed" and "pull" in message.lower():
            containers = (pod.get("spec") or {}).get("containers") or [{}]
            return _image_refusal(containers[0].get("image") or "?", "ErrImagePull", message)
    return None


def unschedulable_reason(events: list[dict], *, gpu_resource: str = "nvidia.com/gpu") -> str | None:
    """A sentence when the scheduler says no node fits (the last FailedScheduling event)."""
    failed = [e for e in events if e.get("reason") == "FailedScheduling"]
    if not failed:
        return None
    message = (failed[-1].get("message") or "").strip()
    if f"Insufficient {gpu_resource}" in message:
        return f"No node has a free GPU ({gpu_resource}) for this session now: {message}"
    return f"No node can take this session now: {message}"


def explain_api_error(status: int, message: str) -> str | None:
    """A sentence for an API refusal of the pod or claim, or None if it is not the person's to know."""
    if status == 403 and "exceeded quota" in message:
        detail = message.split("exceeded quota:", 1)[-1].strip().rstrip('"}')
        return (f"The Kubernetes namespace's quota is used up ({detail}). Stop another session, ask for less, "
                f"or contact the admin.")
    if status == 422 or status == 400:
        return f"Kubernetes refused the session's pod as invalid ({message[:300]}). The admin must correct the settings."
    if status in (401, 403):
        return "The hub may not create session pods in its namespace (RBAC). The admin must grant it (see " + DOCS + ")."
    return None

