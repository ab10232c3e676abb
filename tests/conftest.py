"""Shared test helpers: tests needing the toolchain skip without it, and fail under EDGESNN_REQUIRE_TOOLCHAIN."""
import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager

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


@contextmanager
def emulate_cli(model_path, *extra):
    """`edgesnn emulate MODEL --listen tcp://127.0.0.1:0 EXTRA...` in another process: yields the URL it
    prints; on leaving, Ctrl-C must stop it with exit status 0."""
    proc = subprocess.Popen([sys.executable, "-m", "edgesnn", "emulate", str(model_path), "--listen",
                             "tcp://127.0.0.1:0", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("socket://127.0.0.1:"), proc.stderr.read()
        yield url
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
