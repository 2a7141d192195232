"""Spawners for daas-hub (``daas_hub.spawners``)."""
