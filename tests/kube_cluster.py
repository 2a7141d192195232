"""A real Kubernetes API server on loopback, and a small test kubelet, for tests.

Real: Debian's etcd 3.4 and kube-apiserver v1.20.2 built from Debian's ``kubernetes``
source package (requirements/build-kube-apiserver.sh; `make test` builds it once),
with token authentication, RBAC, the default admission plugins (ServiceAccount,
ResourceQuota...), TLS on a free loopback port. The hub talks to it with its own
token, bound to a namespaced Role (docs/backend-kubernetes.md, "RBAC for the hub").

Not real: there is no scheduler, controller-manager or container runtime.
:class:`TestKubelet` plays scheduler and kubelet for one node, honestly but small:

- it reads each new pod in the namespace; a pod asking for more GPUs than the node
  has gets a FailedScheduling event (the scheduler's wording) and stays Pending; an
  image outside ``images`` gets ErrImagePull, as a kubelet that cannot pull it would;
- otherwise it posts the usual events (Scheduled, Pulling, Pulled, Created, Started),
  runs the init containers, then the container's command as a local process: in a
  private mount namespace (``unshare -m``) where each volumeMount is a bind mount
  (emptyDir: a fresh folder; a persistentVolumeClaim bound to a hostPath volume, with
  its subPath; ``readOnly`` honoured), as the pod's runAsUser/runAsGroup/
  supplementalGroups via ``setpriv`` (it refuses uid 0 and pods without
  runAsNonRoot), with the pod's environment and the image's PATH (here: the test
  venv), and gives the pod its own loopback address (127.0.0.x), as a pod network
  namespace would;
- it marks the pod Running with that podIP, reports a process that exits as
  terminated, and kills the process when the pod is deleted.
Container images are not run: the "image" is this machine's file system.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests
import urllib3

CACHE_DIR = Path(os.environ.get("KUBE_CACHE_DIR", "/var/cache/daas-hub"))
NAMESPACE = "daas-sessions"
HUB_USER = "daas-hub"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def apiserver_binary() -> Path | None:
    found = sorted(CACHE_DIR.glob("kube-apiserver-*"))
    found = [p for p in found if os.access(p, os.X_OK) and not p.name.endswith(".tmp")]
    return found[-1] if found else None


def available() -> str | None:
    """None if the API server can run here, else why not."""
    if os.geteuid() != 0:
        return "the test kubelet needs root (mount namespaces, setpriv)"
    if apiserver_binary() is None:
        return f"no kube-apiserver in {CACHE_DIR} (`make kube-apiserver` builds it, ~12 min)"
    for tool in ("etcd", "openssl", "unshare", "setpriv"):
        if not shutil.which(tool):
            return f"{tool} is not installed (requirements/apt-kube.txt)"
    return None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"{what} not reached in {timeout} s (last error: {last!r})")


HUB_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "create", "update"]},
]


@dataclass
class ApiServer:
    folder: Path
    url: str
    admin_token: str
    hub_token: str
    ca_file: Path
    procs: dict = field(default_factory=dict)

    def __post_init__(self):
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.admin_token}"

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        # verify= per request: REQUESTS_CA_BUNDLE in the environment would win over Session.verify
        return self.session.request(method, f"{self.url}{path}", timeout=30, verify=str(self.ca_file), **kwargs)

    def create(self, path: str, body: dict) -> dict:
        r = self.request("POST", path, json=body)
        if r.status_code not in (200, 201, 409):
            raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def pods(self, namespace: str = NAMESPACE) -> list[dict]:
        r = self.request("GET", f"/api/v1/namespaces/{namespace}/pods")
        r.raise_for_status()
        return r.json()["items"]

    def delete_pod(self, name: str, namespace: str = NAMESPACE) -> None:
        self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", json={"gracePeriodSeconds": 0})

    def kubeconfig(self, path: Path, token: str) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(self.ca_file.read_bytes()).decode()}}],
            "users": [{"name": "hub", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "hub", "namespace": NAMESPACE}}],
        }))
        path.chmod(0o600)
        return path

    def log(self, name: str) -> str:
        p = self.folder / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        for name in ("kube-apiserver", "etcd"):
            proc = self.procs.pop(name, None)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def apiserver_fixture(prefix: str):
    """A module fixture's body: an API server in a folder of its own, stopped and removed after.

    Skips the module, with the reason, where no API server can run here."""
    import pytest

    from conftest import make_world_dir

    why = available()
    if why:
        pytest.skip(f"no Kubernetes API server: {why}")
    folder = make_world_dir(prefix)
    api = start_apiserver(folder)
    try:
        yield api
    finally:
        api.stop()
        shutil.rmtree(folder, ignore_errors=True)


def start_apiserver(folder: Path) -> ApiServer:
    """etcd + kube-apiserver on free loopback ports; the namespace, the hub's Role and token."""
    folder.mkdir(parents=True, exist_ok=True)
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    admin_token, hub_token = os.urandom(16).hex(), os.urandom(16).hex()
    (folder / "tokens.csv").write_text(f"{admin_token},admin,admin,system:masters\n{hub_token},{HUB_USER},hub-1\n")
    subprocess.run(["openssl", "genrsa", "-out", str(folder / "sa.key"), "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(folder / "sa.key"), "-pubout", "-out", str(folder / "sa.pub")],
                   check=True, capture_output=True)
    # a CA and a serving certificate for 127.0.0.1, so clients verify TLS
    certs = folder / "certs"
    certs.mkdir(exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
                    "-keyout", str(certs / "ca.key"), "-out", str(certs / "ca.crt")], check=True, capture_output=True)
    (certs / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
                    "-keyout", str(certs / "server.key"), "-out", str(certs / "server.csr")], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(certs / "server.csr"), "-CA", str(certs / "ca.crt"),
                    "-CAkey", str(certs / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile",
                    str(certs / "ext.cnf"), "-out", str(certs / "server.crt")], check=True, capture_output=True)
    procs = {}
    procs["etcd"] = _spawn([
        "etcd", "--data-dir", str(folder / "etcd"), "--name", "test",
        "--listen-client-urls", f"http://127.0.0.1:{etcd_port}", "--advertise-client-urls",
        f"http://127.0.0.1:{etcd_port}", "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-cluster", f"test=http://127.0.0.1:{peer_port}",
    ], folder / "etcd.log")
    procs["kube-apiserver"] = _spawn([
        str(apiserver_binary()), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
        "--insecure-port=0", f"--token-auth-file={folder / 'tokens.csv'}", "--authorization-mode=RBAC",
        f"--tls-cert-file={certs / 'server.crt'}", f"--tls-private-key-file={certs / 'server.key'}",
        f"--service-account-key-file={folder / 'sa.pub'}",
        f"--service-account-signing-key-file={folder / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc", "--service-cluster-ip-range=10.96.0.0/24",
        f"--cert-dir={certs}", "--anonymous-auth=false",
    ], folder / "kube-apiserver.log")
    api = ApiServer(folder, f"https://127.0.0.1:{api_port}", admin_token, hub_token, certs / "ca.crt", procs)
    try:
        def ready():
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: {api.log(name)[-2000:]}")
            return api.request("GET", "/readyz").ok

        _wait(ready, 90, "kube-apiserver /readyz")
        api.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        # no controller-manager: the namespace's default ServiceAccount is made by hand
        api.create(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts", {"metadata": {"name": "default"}})
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}"
        api.create(f"{rbac}/roles", {"metadata": {"name": "daas-hub"}, "rules": HUB_RULES})
        api.create(f"{rbac}/rolebindings", {
            "metadata": {"name": "daas-hub"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "daas-hub"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": HUB_USER}],
        })
    except BaseException:
        api.stop()
        raise
    return api


def host_path_claim(api: ApiServer, name: str, path: str, *, read_only_pv: bool = False) -> None:
    """A hostPath PersistentVolume and a claim bound to it (the binding a PV controller would make)."""
    api.create("/api/v1/persistentvolumes", {
        "metadata": {"name": f"{NAMESPACE}-{name}"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "hostPath": {"path": path},
                 "claimRef": {"namespace": NAMESPACE, "name": name}, "persistentVolumeReclaimPolicy": "Retain"},
    })
    api.create(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims", {
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}},
                 "volumeName": f"{NAMESPACE}-{name}", "storageClassName": ""},
    })


@dataclass
class _Running:
    uid: str
    name: str
    proc: subprocess.Popen | None
    ip: str
    folder: Path


class TestKubelet:
    """Scheduler and kubelet for one node; see the module docstring for what it does."""

    __test__ = False  # not a pytest class

    def __init__(self, api: ApiServer, folder: Path, *, images: set[str], path: str, gpus: int = 0,
                 namespace: str = NAMESPACE):
        self.api = api
        self.folder = folder
        self.images = set(images)
        self.path = path
        self.gpus = gpus
        self.namespace = namespace
        self.running: dict[str, _Running] = {}
        self.seen: set[str] = set()
        self.made_dirs: list[Path] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="test-kubelet", daemon=True)
        self._next_ip = 2
        self.errors: list[str] = []
        urllib3.disable_warnings()

    def start(self) -> TestKubelet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(20)
        for run in list(self.running.values()):
            self._kill(run)
        for d in reversed(self.made_dirs):
            try:
                d.rmdir()
            except OSError:
                pass

    # -- the loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as e:  # noqa: BLE001 - a kubelet keeps going; the test reads .errors
                self.errors.append(repr(e))
            self._stop.wait(0.3)

    def _sync(self) -> None:
        pods = {p["metadata"]["uid"]: p for p in self.api.pods(self.namespace)}
        for uid, run in list(self.running.items()):
            pod = pods.get(uid)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                self._kill(run)
                if pod is not None:
                    self.api.delete_pod(run.name, self.namespace)
            elif run.proc is not None and run.proc.poll() is not None:
                self._terminated(pod, run.proc.returncode)
                run.proc = None
        for uid, pod in pods.items():
            if uid in self.seen or pod["metadata"].get("deletionTimestamp"):
                continue
            self.seen.add(uid)
            self._admit(pod)

    # -- API writes
    def _event(self, pod: dict, reason: str, message: str, kind: str = "Normal") -> None:
        meta = pod["metadata"]
        self.api.create(f"/api/v1/namespaces/{self.namespace}/events", {
            "metadata": {"generateName": f"{meta['name']}."},
            "involvedObject": {"kind": "Pod", "name": meta["name"], "namespace": self.namespace, "uid": meta["uid"]},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": _now(), "lastTimestamp": _now(), "source": {"component": "test-kubelet"},
        })

    def _status(self, pod: dict, status: dict) -> None:
        r = self.api.request("PATCH", f"/api/v1/namespaces/{self.namespace}/pods/{pod['metadata']['name']}/status",
                             data=json.dumps({"status": status}),
                             headers={"Content-Type": "application/merge-patch+json"})
        if r.status_code == 404:
            return
        r.raise_for_status()

    # -- one pod
    def _admit(self, pod: dict) -> None:
        name = pod["metadata"]["name"]
        spec = pod["spec"]
        (container,) = spec["containers"]
        gpus = int((container.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu", 0))
        if gpus > self.gpus:
            self._event(pod, "FailedScheduling",
                        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.", "Warning")
            self._status(pod, {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]})
            return
        self._event(pod, "Scheduled", f"Successfully assigned {self.namespace}/{name} to test-node")
        image = container["image"]
        self._event(pod, "Pulling", f'Pulling image "{image}"')
        if image not in self.images:
            message = f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": not found'
            self._event(pod, "Failed", f'Failed to pull image "{image}": {message}', "Warning")
            self._status(pod, {"phase": "Pending", "containerStatuses": [{
                "name": container["name"], "image": image, "imageID": "", "ready": False, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImagePull", "message": message}}}]})
            return
        self._event(pod, "Pulled", f'Container image "{image}" already present on machine')
        folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.folder))
        ip = f"127.0.0.{self._next_ip}"
        self._next_ip += 1
        run = _Running(pod["metadata"]["uid"], name, None, ip, folder)
        self.running[run.uid] = run
        for init in spec.get("initContainers", []):
            proc = self._run(pod, init, run, wait=True)
            if proc.returncode != 0:
                self._event(pod, "Failed", f"init container {init['name']} exited with {proc.returncode}", "Warning")
                self._status(pod, {"phase": "Failed"})
                return
        self._event(pod, "Created", f"Created container {container['name']}")
        run.proc = self._run(pod, container, run, wait=False)
        self._event(pod, "Started", f"Started container {container['name']}")
        self._status(pod, {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1", "startTime": _now(),
            "conditions": [{"type": t, "status": "True"} for t in ("PodScheduled", "Initialized", "ContainersReady",
                                                                  "Ready")],
            "containerStatuses": [{"name": container["name"], "image": image, "imageID": "", "ready": True,
                                   "restartCount": 0, "started": True, "state": {"running": {"startedAt": _now()}}}],
        })

    def _terminated(self, pod: dict, code: int) -> None:
        (container,) = pod["spec"]["containers"]
        self._status(pod, {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [{
            "name": container["name"], "image": container["image"], "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}}]})

    def _kill(self, run: _Running) -> None:
        self.running.pop(run.uid, None)
        if run.proc is not None and run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGTERM)
            try:
                run.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(run.proc.pid, signal.SIGKILL)
                run.proc.wait(5)
        shutil.rmtree(run.folder, ignore_errors=True)

    def _source(self, pod: dict, volume: dict, run: _Running) -> str:
        if "emptyDir" in volume:
            path = run.folder / "volumes" / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)  # as a kubelet makes emptyDirs: writable by the pod's user
            return str(path)
        if "persistentVolumeClaim" in volume:
            claim = self.api.request(
                "GET", f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/"
                f"{volume['persistentVolumeClaim']['claimName']}").json()
            pv = self.api.request("GET", f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}").json()
            return pv["spec"]["hostPath"]["path"]
        raise RuntimeError(f"the test kubelet cannot mount volume {volume['name']} ({sorted(volume)})")

    def _mkdirs(self, target: Path) -> None:
        missing = []
        for p in [target, *target.parents]:
            if p.exists():
                break
            missing.append(p)
        for p in reversed(missing):
            p.mkdir()
            self.made_dirs.append(p)

    def _run(self, pod: dict, container: dict, run: _Running, *, wait: bool) -> subprocess.Popen:
        spec = pod["spec"]
        csc = {**(spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
        uid, gid = csc.get("runAsUser"), csc.get("runAsGroup")
        if not csc.get("runAsNonRoot") or not isinstance(uid, int) or uid == 0:
            raise RuntimeError(f"pod {run.name}: the test kubelet runs nothing as root or without runAsNonRoot")
        groups = [str(g) for g in (spec.get("securityContext") or {}).get("supplementalGroups", [])]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        lines = ["set -e"]
        for m in container.get("volumeMounts", []):
            source = Path(self._source(pod, volumes[m["name"]], run)) / m.get("subPath", "")
            target = Path(m["mountPath"])
            if source.is_dir() or not source.exists():
                source.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    self._mkdirs(target)
            lines.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(target))}")
            if m.get("readOnly"):
                lines.append(f"mount -o remount,bind,ro {shlex.quote(str(target))}")
        priv = ["setpriv", f"--reuid={uid}", f"--regid={gid if gid is not None else uid}",
                f"--groups={','.join(groups)}" if groups else "--clear-groups", "--inh-caps=-all", "--no-new-privs"]
        lines.append(f'exec {shlex.join(priv)} -- "$@"')
        env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
        env["PATH"] = self.path  # the "image's" PATH
        env["DAAS_HUB_BIND_ADDRESS"] = run.ip  # what binding 0.0.0.0 means in the pod's own network namespace
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        argv[0] = shutil.which(argv[0], path=self.path) or argv[0]
        cwd = container.get("workingDir") or "/"
        log = (self.folder / f"{run.name}-{container['name']}.log").open("ab")
        # into the working directory after the mounts (it may be one), then drop to the pod's user
        script = "\n".join(lines[:-1] + [f"cd {shlex.quote(cwd)} || cd /", lines[-1]])
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
        if wait:
            proc.wait(60)
        return proc
