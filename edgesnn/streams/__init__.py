"""Live event streams: sources (aedat4, .bs2, network, camera, audio), transforms, the binner and the
real-time loop behind `edgesnn run`, `edgesnn replay` and `edgesnn demo` (docs/streams.md).

Names are imported lazily so that `edgesnn --help` stays fast."""
import importlib

_WHERE = {
    "runner": ["Binner", "Detection", "LatencyHistogram", "Metrics", "StreamRunner", "WindowDecider"],
    "sources": ["EVENT_DTYPE", "AedatSource", "ArraySource", "Bs2Source", "CameraSource", "EventSource",
                "NetworkSource", "PcmSource", "SoundDeviceSource", "SourceError", "WavSource", "open_source",
                "read_bs2"],
    "transforms": ["Crop", "Downsample", "DvFilter", "InputMap", "Refractory"],
}
_INDEX = {name: mod for mod, names in _WHERE.items() for name in names}
__all__ = sorted(_INDEX)


def __getattr__(name):
    if name in _INDEX:
        return getattr(importlib.import_module(f".{_INDEX[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
