"""Generate C for a device from a FixedModel, and run that C on the host.

    runtime/        the C runtime (edgesnn.h, edgesnn.c): one step of the flat program, bit-exact with
                    the emulator (docs/numerics.md, docs/c_runtime.md)
    blob.py         the weight blob: the program as one checksummed little-endian binary
    codegen.py      model_data.h / model_data.c (const arrays, a ready esnn_model, the blob) and a project
    hostlib.py      build the C for the host (shared library or sanitizer driver) and run it from Python
    status.py       the runtime's status codes
    host/           host-only C: the record loop used by hostlib, the sanitizer test driver
"""
