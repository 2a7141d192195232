"""Register the VM gateway with the hub (docs/desktops.md#the-vm-gateway).

``jupyterhub_config.py``, after ``configure_hub(c)``::

    from daas_hub.vmgateway import configure_vm_gateway
    configure_vm_gateway(c, config_file="/etc/daas-hub/vm_gateway_config.py")

The hub then starts the gateway (:mod:`daas_hub.proxies.gateway`) as the service
``vm`` under its own account (or, with ``url=``, registers a gateway that runs
elsewhere: its own pod on Kubernetes, kubernetes/vm-gateway.yaml), routes
``/services/vm/`` to it, lets it read the
users' ``auth_state`` (account and proposals, no provider tokens), lets every user
reach it (the ``user`` role gains ``access:services!service=vm``), and tells
sessions where it is (a launcher tile and ``<server>/vm/``). Nothing here imports
JupyterHub: the builders are pure and :func:`configure_vm_gateway` only sets traitlets.
"""

from __future__ import annotations

import sys

#: the service's name: the gateway is at ``<hub base>/services/<name>/``
SERVICE_NAME = "vm"
#: the account the gateway runs as (created by the admin; docs/desktops.md)
DEFAULT_ACCOUNT = "daas-vmgw"
#: the session learns the gateway's service name from this variable (no address, no secret)
SERVICE_ENV = "DAAS_HUB_VM_SERVICE"


def gateway_service(*, config_file: str, account: str, port: int, name: str = SERVICE_NAME,
                    python: str = sys.executable, extra_args: tuple[str, ...] = ()) -> dict:
    """The ``c.JupyterHub.services`` entry of the gateway the hub starts; pure."""
    return {
        "name": name,
        "url": f"http://127.0.0.1:{port}",
        "command": [python, "-m", "daas_hub.proxies.gateway", f"--config={config_file}", *extra_args],
        "user": account,
        "cwd": "/",
        "oauth_no_confirm": True,
        "display": False,
    }


def external_gateway_service(*, url: str, api_token: str, name: str = SERVICE_NAME) -> dict:
    """The ``c.JupyterHub.services`` entry of a gateway the hub does not start (its own pod); pure.

    ``api_token`` is the token both sides share (the gateway reads it as
    ``JUPYTERHUB_API_TOKEN``); raises ValueError when it is missing.
    """
    if not api_token:
        raise ValueError(f"the VM gateway at {url} needs the API token it shares with the hub "
                         "(configure_vm_gateway(c, url=..., api_token=...); on Kubernetes the secret "
                         "daas-vm-gateway, key api-token: docs/desktops.md#kubernetes)")
    return {"name": name, "url": url, "api_token": api_token, "oauth_no_confirm": True, "display": False}


def gateway_role(name: str = SERVICE_NAME) -> dict:
    """The gateway's hub role: read users and their ``auth_state`` (account, proposals); pure."""
    return {
        "name": f"daas-{name}-gateway",
        "description": "The VM gateway reads each user's account and proposals to compute their machines.",
        "scopes": ["read:users", "admin:auth_state"],
        "services": [name],
    }


def users_role(name: str = SERVICE_NAME) -> dict:
    """JupyterHub's ``user`` role plus access to the gateway (the default ``user`` role is ``self`` only); pure."""
    return {"name": "user", "description": "Every user: their own resources, and the VM gateway.",
            "scopes": ["self", f"access:services!service={name}"]}


def _append(config_section, trait: str, value) -> None:
    current = config_section.get(trait) if trait in config_section else None
    if isinstance(current, list):
        config_section[trait] = [*current, value]
    else:  # unset so far: a lazy value that extends the hub's default
        getattr(config_section, trait).append(value)


def configure_vm_gateway(c, *, config_file: str = "", account: str = DEFAULT_ACCOUNT, port: int = 8091,
                         name: str = SERVICE_NAME, extra_args: tuple[str, ...] = (), url: str = "",
                         api_token: str = "") -> None:
    """Add the gateway service, its role, and the sessions' pointer to it to the config ``c``.

    Without ``url`` the hub starts the gateway with ``config_file`` as ``account``; with
    ``url`` (and ``api_token``) the gateway runs elsewhere and the hub only registers it.
    """
    if url:
        service = external_gateway_service(url=url, api_token=api_token, name=name)
    elif config_file:
        service = gateway_service(config_file=config_file, account=account, port=port, name=name,
                                  extra_args=extra_args)
    else:
        raise ValueError("configure_vm_gateway needs config_file= (the hub starts the gateway) or url= and "
                         "api_token= (a gateway running elsewhere): docs/desktops.md#turning-it-on")
    _append(c.JupyterHub, "services", service)
    _append(c.JupyterHub, "load_roles", gateway_role(name))
    _append(c.JupyterHub, "load_roles", users_role(name))
    c.LocalSpawner.vm_service = name
    c.SlurmSpawner.vm_service = name
    c.KubeSessionSpawner.vm_service = name
