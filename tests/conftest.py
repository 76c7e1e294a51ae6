"""Settings shared by every test layer (keep this file small; layers have their own conftest).

Hypothesis profiles: "default" drops the per-example deadline, which flakes on busy 2-core
runners without finding bugs; HYPOTHESIS_PROFILE=fuzz runs many more examples for a deep run.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("default", deadline=None)
settings.register_profile("fuzz", deadline=None, max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
