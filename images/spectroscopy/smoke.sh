#!/bin/sh
# run inside the image as an arbitrary uid by tests/test_images.py: the packages work
set -e
python -c "import PyMca5, fisx; from PyMca5.PyMcaPhysics.xrf import ClassMcaTheory; print(\"PyMca5\", PyMca5.version())"
