"""The clock the operations hub tests set (``c.Operations.clock = "hub_clock.now"``).

It reads the time, in epoch seconds, from the file named by ``DAAS_TEST_CLOCK_FILE``:
lifetimes, announcements and usage records move only when a test writes it.
"""

import os
from pathlib import Path


def now() -> float:
    return float(Path(os.environ["DAAS_TEST_CLOCK_FILE"]).read_text())
