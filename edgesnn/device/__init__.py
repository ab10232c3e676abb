"""Talk to a board running edgesnn firmware, or to the emulated device, over the wire protocol
(docs/protocol.md).

    from edgesnn import device
    with device.connect("socket://127.0.0.1:5555") as dev:
        print(dev.hello())
        out = dev.run([[3, 17], [], [40]], readout=True)

Names are imported lazily so that `edgesnn.device.protocol` stays light (no numba compile).
"""
from importlib import import_module

_WHERE = {
    "connect": "client", "Device": "client",
    "EmulatedDevice": "emulated",
    "LinkError": "errors", "DeviceError": "errors",
}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
