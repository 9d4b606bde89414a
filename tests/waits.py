"""How long a test waits for the model before it gives up.

A loaded 2-core machine runs the model several times slower than a quiet one (issue 22: a request that takes
22 s alone timed out at 120 s beside other processes), so waiting is bounded by CI's budget, not by a guess of
this machine's speed. A test that asserts speed or responsiveness keeps its own, tighter bound on purpose.
"""

from __future__ import annotations

import os

# seconds a request, a CLI run or a server start may take; SENTIRIC_TEST_WAIT overrides it
WAIT = float(os.environ.get("SENTIRIC_TEST_WAIT", "900"))
