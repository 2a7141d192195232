"""daas-hub: Data Analysis as a Service for photon and neutron facilities.

The core shared by the authenticators, spawners and proxies: proposals and their
sources, technique profiles, data-mount plans, site settings, the demo and the CLI.
Nothing in this package imports :mod:`daas_hub.spawners`,
:mod:`daas_hub.authenticators` or :mod:`daas_hub.proxies`.
"""

__version__ = "0.1.0"
