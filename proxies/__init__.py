"""Server-proxy entries for the single-user session (``daas_hub.proxies``).

Registered through the ``jupyter_serverproxy_servers`` entry point; installed in
the single-user environment (the ``singleuser`` extra).
"""
