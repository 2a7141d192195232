"""Opt-in: the Kubernetes backend's objects against a real cluster.

Runs only when ``KUBECONFIG`` is set (the skip reason says "not run" otherwise).
Real: the cluster named by KUBECONFIG, its API server's validation and admission
(Pod Security, quotas), its scheduler and kubelet, the image.
Settings: ``DAAS_HUB_TEST_NAMESPACE`` (default ``daas-hub-test``, must exist; the
kubeconfig's user needs the hub's Role there, docs/backend-kubernetes.md),
``DAAS_HUB_TEST_IMAGE`` (default ``quay.io/jupyter/base-notebook:latest``; the
identity step needs only ``sh`` and ``awk``).

What it does: server-side dry-runs the NetworkPolicy and a session pod built by
KubeSpawner from :func:`daas_hub.kube.session_settings`, then creates the pod with
the command ``sleep 300`` (no hub to talk to), waits until it is Running (so the
init container wrote the passwd entry, and the uid and volumes were accepted),
and deletes it.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from daas_hub.kube import network_policy, parse_kube_site, session_settings

pytestmark = pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="not run: KUBECONFIG is not set")

NAMESPACE = os.environ.get("DAAS_HUB_TEST_NAMESPACE", "daas-hub-test")
IMAGE = os.environ.get("DAAS_HUB_TEST_IMAGE", "quay.io/jupyter/base-notebook:latest")


async def test_session_pod_runs_on_the_cluster():
    import dataclasses
    from types import SimpleNamespace

    from kubernetes_asyncio.client import ApiClient, CoreV1Api, NetworkingV1Api
    from test_kube_objects import order

    from daas_hub.spawners.kubernetes import KubeSessionSpawner

    site = parse_kube_site({"namespace": NAMESPACE, "command": ["sleep", "300"]}, "opt-in")
    o = order("python", "none", cpu=1, memory=1)
    o = dataclasses.replace(o, site=site, profile=dataclasses.replace(o.profile, image=IMAGE))
    user = SimpleNamespace(name="daas-optin", id=1, url="/user/daas-optin/", escaped_name="daas-optin")
    hub = SimpleNamespace(public_host="", url="http://hub:8081/hub/", base_url="/hub/",
                          api_url="http://hub:8081/hub/api")
    spawner = KubeSessionSpawner(user=user, hub=hub, api_token="unused", namespace=NAMESPACE)
    session = session_settings(o)
    for name, value in session.traits.items():
        setattr(spawner, name, value)
    spawner._session_env = session.env
    async with ApiClient() as api:
        pod = api.sanitize_for_serialization(await spawner.get_pod_manifest())
        core, net = CoreV1Api(api), NetworkingV1Api(api)
        await net.create_namespaced_network_policy(NAMESPACE, network_policy(site), dry_run="All")
        await core.create_namespaced_pod(NAMESPACE, pod, dry_run="All")
        name = pod["metadata"]["name"]
        await core.create_namespaced_pod(NAMESPACE, pod)
        try:
            deadline = time.monotonic() + 300
            phase = None
            while time.monotonic() < deadline:
                phase = (await core.read_namespaced_pod(name, NAMESPACE)).status.phase
                if phase in ("Running", "Failed", "Succeeded"):
                    break
                await asyncio.sleep(2)
            assert phase == "Running", f"pod {name} is {phase}"
        finally:
            await core.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)
    await spawner.api.api_client.close()
