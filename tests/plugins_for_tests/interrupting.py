"""A method that stops the run the first time it is fitted, as Ctrl-C would: for the interruption and resume tests.

While the file named by DEBIASKIT_TEST_INTERRUPT exists, `fit` deletes it, then raises KeyboardInterrupt (file text
"raise") or waits for a real SIGINT (file text "wait"). Otherwise it changes nothing, like the baseline.
"""

import os
import time
from pathlib import Path

from debiaskit import Method, hookimpl

WAIT_SECONDS = 120  # a SIGINT ends the wait long before this


class InterruptsOnce(Method):
    name = "interrupts-once"
    description = "stops the run once (tests only)"

    def fit(self, context):
        marker = Path(os.environ.get("DEBIASKIT_TEST_INTERRUPT", "/nonexistent/marker"))
        if marker.is_file():
            mode = marker.read_text().strip()
            marker.unlink()
            if mode == "raise":
                raise KeyboardInterrupt
            time.sleep(WAIT_SECONDS)


@hookimpl
def register_methods(register):
    register(InterruptsOnce)
