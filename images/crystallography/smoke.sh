#!/bin/sh
# run inside the image as an arbitrary uid by tests/test_images.py: the packages work
set -e
python -c "import gemmi; print(\"gemmi\", gemmi.__version__)"
dials.version
