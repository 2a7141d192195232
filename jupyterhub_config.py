"""daas-hub: the one file a facility admin edits.

The site's facts live in the settings file named by $DAAS_HUB_SETTINGS
(docs/settings.md). With none, the hub refuses to start; `daas-hub demo`
runs the embedded demo (docs/quickstart.md).

Anything below the call overrides what the settings file set: every daas-hub
setting is an ordinary JupyterHub traitlet, listed in docs/settings.md.
"""

from daas_hub.config import configure_hub

configure_hub(c)  # noqa: F821 - `c` is provided by JupyterHub

# Site-specific overrides, for example:
# c.JupyterHub.bind_url = "http://127.0.0.1:8000/daas/"
# c.ProposalMapping.contact = "the User Office (useroffice@example.org)"
# c.LocalSpawner.data_portal_url = "https://data.example.org"
