"""Event transforms: noise filtering (dv-processing), crop / ROI, spatial downsampling, refractory
filtering, and the map from (x, y, p) to the model's input index.

Every transform takes and returns an EVENT_DTYPE array (``sources.EVENT_DTYPE``) and keeps time order.
``InputMap`` is the last stage: it fits the sensor to a model input shape (2, H, W) and gives the
flat input index ``p * H * W + y * W + x`` (C order, polarity first, as ``docs/numerics.md`` flattens).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..errors import InputError
from .sources import from_dv, to_dv


class Crop:
    """Keep events inside the region x0 <= x < x0 + w, y0 <= y < y0 + h, shifted to the origin."""

    def __init__(self, x0: int, y0: int, w: int, h: int):
        if w < 1 or h < 1 or x0 < 0 or y0 < 0:
            raise InputError(f"crop region must have x0, y0 >= 0 and w, h >= 1, got {(x0, y0, w, h)}")
        self.x0, self.y0, self.w, self.h = int(x0), int(y0), int(w), int(h)

    def out_resolution(self, res):
        return (self.w, self.h)

    def __call__(self, ev):
        x = ev["x"].astype(np.int32) - self.x0
        y = ev["y"].astype(np.int32) - self.y0
        keep = (x >= 0) & (x < self.w) & (y >= 0) & (y < self.h)
        out = ev[keep]
        out["x"] = x[keep]
        out["y"] = y[keep]
        return out


class Downsample:
    """Integer spatial downsampling: (x, y) -> (x // f, y // f); every event is kept (the model input
    then counts how many fell in the block)."""

    def __init__(self, factor: int):
        if factor < 1:
            raise InputError(f"downsampling factor must be >= 1, got {factor}")
        self.f = int(factor)

    def out_resolution(self, res):
        return (res[0] // self.f, res[1] // self.f)

    def __call__(self, ev):
        if self.f == 1:
            return ev
        out = ev.copy()
        out["x"] //= self.f
        out["y"] //= self.f
        return out


@njit(cache=True)
def _refractory(t, x, y, last, period, keep):
    for i in range(t.shape[0]):
        j = y[i] * last.shape[1] + x[i]
        if t[i] - last.flat[j] >= period:
            keep[i] = True
            last.flat[j] = t[i]
        else:
            keep[i] = False


class Refractory:
    """Drop an event when the same pixel (either polarity) fired less than ``period_us`` before."""

    def __init__(self, resolution, period_us: int):
        w, h = resolution
        self.period = int(period_us)
        self.last = np.full((h, w), np.iinfo(np.int64).min // 2, np.int64)

    def out_resolution(self, res):
        return res

    def __call__(self, ev):
        keep = np.empty(ev.shape[0], np.bool_)
        _refractory(np.ascontiguousarray(ev["t"]), np.ascontiguousarray(ev["x"]).astype(np.int64),
                    np.ascontiguousarray(ev["y"]).astype(np.int64), self.last, self.period, keep)
        return ev[keep]


class DvFilter:
    """A dv-processing event filter (dv.noise.BackgroundActivityNoiseFilter, FastDecayNoiseFilter,
    KNoiseFilter, dv.RefractoryPeriodFilter, ...) applied to numpy batches. The conversion into a
    dv.EventStore is a push_back loop (dv-processing 2.0.4 has no bulk constructor): 2-4 M events/s."""

    def __init__(self, dv_filter):
        self.filter = dv_filter

    @classmethod
    def background_activity(cls, resolution, window_us: int = 2000):
        import datetime

        import dv_processing as dv

        return cls(dv.noise.BackgroundActivityNoiseFilter(tuple(resolution),
                                                          datetime.timedelta(microseconds=window_us)))

    def out_resolution(self, res):
        return res

    def __call__(self, ev):
        if ev.shape[0] == 0:
            return ev
        self.filter.accept(to_dv(ev))
        return from_dv(self.filter.generateEvents()).copy()


class InputMap:
    """Fit a sensor of ``resolution`` (w, h) to a model input shape (2, H, W): crop the centre to
    (W * f, H * f) with f = min(w // W, h // H) and downsample by f. Refused when the input shape is not
    (2, H, W) or the sensor is smaller than (W, H)."""

    def __init__(self, resolution, input_shape):
        w, h = int(resolution[0]), int(resolution[1])
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or shape[0] != 2:
            raise InputError(f"an event-camera model needs input shape (2, H, W) (polarity, rows, columns); "
                             f"this model takes {shape}")
        _, H, W = shape
        f = min(w // W, h // H)
        if f < 1:
            raise InputError(f"the sensor is {w}x{h} but the model's input is {W}x{H}: it cannot be fitted "
                             f"(edgesnn crops and downsamples, it does not upsample)")
        self.H, self.W, self.factor = H, W, f
        self.x0, self.y0 = (w - W * f) // 2, (h - H * f) // 2
        self.resolution = (w, h)
        self.cropped = (self.x0, self.y0) != (0, 0) or w != W * f or h != H * f
        self.n_inputs = 2 * H * W

    def describe(self) -> str:
        s = f"{self.resolution[0]}x{self.resolution[1]}"
        if self.cropped:
            s += f" -> crop {self.W * self.factor}x{self.H * self.factor} at ({self.x0}, {self.y0})"
        if self.factor > 1:
            s += f" -> downsample by {self.factor}"
        return s + f" -> input (2, {self.H}, {self.W})"

    def __call__(self, ev):
        """Events -> (t int64, idx int32) of the events that fall inside the fitted region."""
        n = ev.shape[0]
        t_out = np.empty(n, np.int64)
        idx = np.empty(n, np.int32)
        k = _map_events(ev["t"], ev["x"], ev["y"], ev["p"], self.x0, self.y0, self.factor, self.W, self.H,
                        t_out, idx)
        return t_out[:k], idx[:k]


@njit(cache=True)
def _map_events(t, x, y, p, x0, y0, f, W, H, t_out, idx):
    """idx = p * H * W + ((y - y0) // f) * W + (x - x0) // f for events inside the region; returns the count."""
    k = 0
    for i in range(t.shape[0]):
        xx = np.int64(x[i]) - x0
        yy = np.int64(y[i]) - y0
        if xx < 0 or yy < 0 or xx >= W * f or yy >= H * f:
            continue
        idx[k] = (H * W if p[i] != 0 else 0) + (yy // f) * W + xx // f
        t_out[k] = t[i]
        k += 1
    return k
