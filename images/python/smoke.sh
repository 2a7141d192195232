#!/bin/sh
# run inside the image as an arbitrary uid by tests/test_images.py: the packages work
set -e
python -c "import scipy, matplotlib, silx; print(\"scipy\", scipy.__version__, \"silx\", silx.version)"
MPLBACKEND=Agg python -c "import matplotlib.pyplot as plt; plt.plot([1, 2]); plt.savefig(\"/tmp/smoke.png\")"
