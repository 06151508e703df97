"""Hypothesis settings shared by the property tests (tests/test_properties_*).

The default profile is bounded so that all of them together stay well
under a minute in ``make test``; ``LOOPCORE_PROPERTIES=long`` (``make
props-long``) runs :data:`LONG_FACTOR` times as many examples of each.
No example database: nothing is written into the repository.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["examples", "PROFILE", "LONG_FACTOR"]

PROFILE = os.environ.get("LOOPCORE_PROPERTIES", "default")
LONG_FACTOR = 50

_COMMON = dict(database=None, deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.function_scoped_fixture,
                                      HealthCheck.filter_too_much])
settings.register_profile("default", **_COMMON)
settings.register_profile("long", **_COMMON)
if PROFILE not in ("default", "long"):
    raise RuntimeError(f"LOOPCORE_PROPERTIES={PROFILE!r}: use 'default' or 'long'")
settings.load_profile(PROFILE)


def examples(count: int) -> settings:
    """Settings for a property with ``count`` examples (times
    :data:`LONG_FACTOR` in the long profile)."""
    return settings(max_examples=count * (LONG_FACTOR if PROFILE == "long" else 1))
