"""The Kubernetes backend: KubeSpawner, configured from a checked request.

Everything about the pod comes from :func:`daas_hub.kube.session_settings` (pure:
request in, KubeSpawner trait values out) and is set on KubeSpawner's own traits
(``image``, ``cpu_limit``, ``uid``, ``volumes``...) before KubeSpawner writes and
creates the pod. This class only does I/O (docs/backend-kubernetes.md):

- before the first session, it applies the namespace's NetworkPolicy
  (:func:`daas_hub.kube.network_policy`) unless ``network_policy.manage`` is false;
- while the pod is pending, progress shows the pod's events (scheduling, image pull)
  as sentences, and an image that cannot be pulled ends the start with a sentence;
- an API refusal (namespace quota, RBAC, invalid pod) becomes a sentence too.

Polling, stopping and finding pods after a hub restart are KubeSpawner's own
(its pod reflector; the pod name is kept in the state the wrapper nests).
"""

from __future__ import annotations

import asyncio
import secrets
import time

from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from kubespawner.clients import shared_client
from traitlets import Dict, Float, List, Unicode, default

from daas_hub.access import stale_notice
from daas_hub.errors import SettingsError
from daas_hub.kube import (
    START_ANNOTATION,
    KubeOrder,
    KubeRefusal,
    KubeSite,
    describe_event,
    events_of_pod,
    explain_api_error,
    explain_pod,
    network_policy,
    parse_kube_site,
    pod_of_start,
    session_settings,
    unschedulable_reason,
)
from daas_hub.mounts import plan_mounts
from daas_hub.vmgateway import SERVICE_ENV

from .common import SessionSetup, refuse

__all__ = ["KubeSessionSpawner"]


class KubeSessionSpawner(SessionSetup, KubeSpawner):
    """Sessions as Kubernetes pods, one per start; see the module docstring."""

    session_images = Dict(
        Unicode(), config=True,
        help="""Per profile slug, the container image of its sessions, over the profile
        catalogue's ``kubernetes.image``. Example: ``{"python": "registry.example/daas/python:2026.11"}``

        .. versionadded:: 0.2
        """,
    )
    session_command = List(
        Unicode(), ["daas-hub-session", "jupyterhub-singleuser"], config=True,
        help="""The session container's command: ``daas-hub-session`` lays out ~/proposals, then
        runs the rest. Both must be on the image's PATH (``pip install daas-hub`` in the image).

        .. versionadded:: 0.2
        """,
    )
    home_path = Unicode(
        "/home/{username}", config=True,
        help="""The session's home inside the container (``{username}``: the facility account).

        .. versionadded:: 0.2
        """,
    )
    data_root = Unicode(
        "/daas-hub/proposals", config=True,
        help="""Where proposal data is mounted in the container (``<data_root>/<id>/raw`` read-only,
        ``.../processed`` read-write); ``~/proposals/<id>/raw`` links there.

        .. versionadded:: 0.2
        """,
    )
    guarantee_fraction = Float(
        1.0, config=True,
        help="""Requests as a fraction of the limits (CPU and memory). 1: the pod reserves what
        the person asked for (Guaranteed QoS); 0.5: half of it. GPUs are always request = limit.

        .. versionadded:: 0.2
        """,
    )
    storage = Dict(
        config=True,
        help="""Templates for the volumes: ``{"raw": {...}, "processed": {...}, "home": {...}}``, each
        ``{"kind": "nfs", "server": ..., "path": ...}``, ``{"kind": "cephfs", ...}``,
        ``{"kind": "pvc", "claim": ..., "sub_path": ...}`` or (home only) ``{"kind": "user-pvc",
        "size": "10Gi"}``. Paths may use {username} {proposal} {instrument} {facility} {path} {relpath}.
        See docs/backend-kubernetes.md#storage.

        .. versionadded:: 0.2
        """,
    )
    gpu = Dict(
        config=True,
        help="""GPUs: ``{"resource": "nvidia.com/gpu", "node_selector": {...}, "tolerations": [...]}``;
        the selector and tolerations are added to pods that ask for a GPU.

        .. versionadded:: 0.2
        """,
    )
    network_policy = Dict(
        config=True,
        help="""The sessions' NetworkPolicy: ``{"manage": true, "hub": {"pod_labels": {...}} or
        {"cidr": ...}, "proxy": {...}, "dns": true, "allow": [{"name", "cidr", "ports"}],
        "internet": false}``. Egress is closed but for the hub, DNS and ``allow``.
        See docs/backend-kubernetes.md#network-policy.

        .. versionadded:: 0.2
        """,
    )
    unschedulable_timeout = Float(
        120, config=True,
        help="""Seconds a pod may wait for a node (no node has the GPU, the memory...) before the
        start ends with the scheduler's reason. Example: ``600`` for a busy GPU pool.

        .. versionadded:: 0.2
        """,
    )

    @default("start_timeout")
    def _default_start_timeout(self):
        return 600  # image pulls of scientific stacks take minutes

    @default("pvc_name_template")
    def _default_pvc_name_template(self):
        return "home-{username}"  # one home per person, whichever named server mounts it

    @default("default_url")
    def _default_default_url(self):
        return "/lab"

    async def _make_create_pod_request(self, pod, request_timeout):
        """KubeSpawner's, without logging the pod on a refusal: its env holds the session's API token."""
        try:
            await asyncio.wait_for(self.api.create_namespaced_pod(self.namespace, pod), request_timeout)
            return True
        except TimeoutError:
            return False  # exponential_backoff tries again
        except ApiException as e:
            if e.status != 409:
                self.log.warning("Kubernetes refused pod %s/%s: %s %s", self.namespace, pod.metadata.name,
                                 e.status, _api_message(e))
                raise
            self.log.info("Found an old pod %s; deleting it before starting again", pod.metadata.name)
            await self.stop(True)
            return False

    async def load_user_options(self):
        """Nothing: the daas spawner checked the options; KubeSpawner's profile_list is not used."""

    _site_policy_applied: set = set()  # (namespace, policy) pairs this hub has applied

    def kube_site(self) -> KubeSite:
        """The traits, checked as the site file's section is (same errors)."""
        section = {
            "namespace": self.namespace, "images": dict(self.session_images),
            "image_pull_policy": self.image_pull_policy or "IfNotPresent",
            "command": list(self.session_command), "home_path": self.home_path, "data_root": self.data_root,
            "guarantee_fraction": self.guarantee_fraction, "storage": dict(self.storage), "gpu": dict(self.gpu),
            "network_policy": dict(self.network_policy),
        }
        return parse_kube_site(section, "jupyterhub_config.py", entry="KubeSessionSpawner")

    def session_order(self) -> KubeOrder:
        order = self._order
        plan = plan_mounts(order.account.username, list(order.proposals), root=self.proposals_root,
                           data_portal_url=self.data_portal_url or None)
        return KubeOrder(hub_user=self.user.name, account=order.account, request=order.request,
                         profile=order.profile, proposals=order.proposals, plan=plan, site=self.kube_site())

    _session_env: dict = {}

    def get_env(self):
        env = super().get_env()
        env.update(self._session_env)  # not through `environment`: KubeSpawner would expand its braces
        if self.vm_service:
            env[SERVICE_ENV] = self.vm_service  # the "Facility VMs" tile (docs/desktops.md)
        return env

    async def start(self):
        if self._order is None:
            raise refuse("The Kubernetes backend is started through the daas spawner's form.", reason="no-order")
        try:
            site = self.kube_site()
            session = session_settings(self.session_order())
        except KubeRefusal as e:
            raise refuse(str(e), reason=e.reason) from None
        except SettingsError as e:
            self.log.error("Kubernetes settings: %s", e)
            raise refuse(f"The hub's Kubernetes settings are wrong; contact {self.contact}.",
                         reason="settings") from None
        for name, value in session.traits.items():
            setattr(self, name, value)
        self._session_env = dict(session.env)
        self._start_id = secrets.token_hex(8)
        self.extra_annotations = {**self.extra_annotations, START_ANNOTATION: self._start_id}
        self._gpu_resource = site.gpu_resource
        try:
            if site.network.manage:
                await self._ensure_network_policy(site)
            started = super().start()
            guard = asyncio.ensure_future(self._guard(started))
            try:
                url = await started
            except asyncio.CancelledError:
                refusal = await guard  # ends within a second once the start is cancelled
                if refusal is not None:
                    raise refusal from None
                raise
            guard.cancel()
            return url
        except ApiException as e:
            message = explain_api_error(e.status, _api_message(e))
            if message is None:
                raise
            raise refuse(message, reason="kubernetes-api", status_code=503) from None

    async def _guard(self, started: asyncio.Future):
        """Watch the pending pod; end the start with a sentence when it can never run."""
        waited_for_node = None
        while not started.done():
            await asyncio.sleep(1)
            pod = self._pod_of_this_start()
            events = self.events
            refusal = explain_pod(pod, events)
            if refusal is None:
                reason = unschedulable_reason(events, gpu_resource=self._gpu_resource)
                scheduled = pod and any(c.get("type") == "PodScheduled" and c.get("status") == "True"
                                        for c in (pod.get("status") or {}).get("conditions") or [])
                if reason and not scheduled:
                    waited_for_node = waited_for_node or time.monotonic()
                    if time.monotonic() - waited_for_node > self.unschedulable_timeout:
                        refusal = KubeRefusal(f"{reason.rstrip('.')}. Try again later or ask for less.",
                                              reason="unschedulable")
                else:
                    waited_for_node = None
            if refusal is not None:
                self.log.warning("Ending the start of %s: %s", self._log_name, refusal)
                err = refuse(str(refusal), reason=refusal.reason, status_code=503)
                started.cancel()
                try:
                    await self.stop(now=True)
                except Exception:  # noqa: BLE001 - the refusal is what the person must read
                    self.log.exception("Could not delete the pod of %s", self._log_name)
                return err
        return None

    _start_id: str | None = None

    def _pod_of_this_start(self) -> dict | None:
        pod = self.pod_reflector.pods.get(f"{self.namespace}/{self.pod_name}") if self.pod_reflector else None
        return pod_of_start(pod, self._start_id)

    @property
    def events(self) -> list[dict]:
        """The events of the pod this start created (none before it exists), for the progress
        page and the refusals; see :func:`daas_hub.kube.events_of_pod`."""
        if not self.event_reflector:
            return []
        return events_of_pod(self._pod_of_this_start(), self.event_reflector.events)

    async def _ensure_network_policy(self, site: KubeSite) -> None:
        """Create (or bring up to date) the namespace's NetworkPolicy, once per hub."""
        policy = network_policy(site)
        key = (site.namespace, repr(policy))
        if key in self._site_policy_applied:
            return
        api = shared_client("NetworkingV1Api")
        name = policy["metadata"]["name"]
        try:
            await asyncio.wait_for(api.read_namespaced_network_policy(name, site.namespace),
                                   self.k8s_api_request_timeout)
            await asyncio.wait_for(api.replace_namespaced_network_policy(name, site.namespace, policy),
                                   self.k8s_api_request_timeout)
        except ApiException as e:
            if e.status != 404:
                raise
            await asyncio.wait_for(api.create_namespaced_network_policy(site.namespace, policy),
                                   self.k8s_api_request_timeout)
        self.log.info("NetworkPolicy %s/%s applied", site.namespace, name)
        self._site_policy_applied.add(key)

    async def progress(self):
        """KubeSpawner's event stream, as sentences (scheduling, image pull)."""
        notice = stale_notice(await self.user.get_auth_state(), facility=self.policy.facility_name)
        if notice:
            yield {"progress": 2, "message": notice}
        yield {"progress": 5, "message": f"Asking Kubernetes for a pod in namespace {self.namespace}"}
        async for event in super().progress():
            raw = event.get("raw_event")
            if raw is not None:
                event = {"progress": event.get("progress"), "message": describe_event(raw)}
            yield event


def _api_message(e: ApiException) -> str:
    import json

    try:
        return json.loads(e.body).get("message", "") if e.body else str(e.reason)
    except (ValueError, AttributeError):
        return str(e.body or e.reason)

