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


# the flags the C runtime must compile cleanly with for the Cortex-M cores (tests of edgesnn.c, esnn_learn.c)
ARM_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-c")
ARM_CPUS = {
    "cortex-m4f": ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
    "cortex-m0plus": ("-mcpu=cortex-m0plus", "-mthumb"),
}
