#!/bin/sh
# run inside the image as an arbitrary uid by tests/test_images.py: the packages work
set -e
python -c "import pyFAI, fabio; from pyFAI.integrator.azimuthal import AzimuthalIntegrator; print(\"pyFAI\", pyFAI.version, \"fabio\", fabio.version)"
command -v pyFAI-integrate >/dev/null
