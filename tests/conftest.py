"""Shared test helpers: tests needing the toolchain skip without it, and fail under EDGESNN_REQUIRE_TOOLCHAIN."""
import os
import shutil

import pytest

REQUIRE_TOOLCHAIN = os.environ.get("EDGESNN_REQUIRE_TOOLCHAIN", "") not in ("", "0")


def need(*tools):
    """Skip (or fail, when the toolchain is required) unless every tool is on PATH."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        msg = f"{', '.join(missing)} not installed"
        if REQUIRE_TOOLCHAIN:
            pytest.fail(f"{msg} and EDGESNN_REQUIRE_TOOLCHAIN is set")
        pytest.skip(f"{msg} (.ci/setup-toolchain.sh installs it; EDGESNN_REQUIRE_TOOLCHAIN=1 makes this a failure)")
