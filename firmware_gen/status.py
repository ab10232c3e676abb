"""Status codes of the C runtime (runtime/edgesnn.h; a test checks the two agree).

OK and ERR_INPUT_INDEX are the numbers of edgesnn/kernels/layout.py, so the emulator and the device
report a refused step the same way.
"""
from edgesnn.kernels import layout as K

OK = K.OK                      # 0
ERR_INPUT_INDEX = K.ERR_INPUT_INDEX   # -1: an input index outside the network's inputs; step not applied
ERR_INPUT_COUNT = K.ERR_INPUT_COUNT   # -2: too many events for one step (or for a first Flatten layer); not applied
ERR_ARG = -3                   # NULL, buffer too small or misaligned, bad layer, state of another model
ERR_MODEL = -4                 # the tables are inconsistent
ERR_BLOB_SIZE = -5             # blob truncated or of the wrong length
ERR_BLOB_MAGIC = -6            # not a weight blob
ERR_BLOB_VERSION = -7          # a format version the runtime does not read
ERR_BLOB_CRC = -8              # CRC32 mismatch
ERR_BLOB_FORMAT = -9           # header fields inconsistent
ERR_STATE = -10                # the state holds values no step produces

NAMES = {v: k for k, v in dict(globals()).items() if k == "OK" or k.startswith("ERR_")}


def name(status: int) -> str:
    return NAMES.get(int(status), f"unknown status {int(status)}")
