#!/bin/sh
# run inside the image as an arbitrary uid by tests/test_images.py: the packages work
set -e
python -c "import nabu, tomoscan; from nabu.reconstruction.fbp_base import BackprojectorBase; print(\"nabu\", nabu.__version__)"
command -v nabu >/dev/null
