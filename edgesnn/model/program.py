"""Lay a network out as a flat program (kernels/layout.py): tables, weight pools and a state size.

``build_fixed`` takes the integer form (FixedModel) and gives int8/int16 weights and integer constants;
``build_float`` takes the float description and gives float32 weights and exact decays exp(-dt/tau).
Weights are stored input-major (each input's fan-out contiguous), which event-driven execution wants:
dense (n_out, n_in) -> (n_in, n_out); conv (c_out, c_in, kh, kw) -> (c_in, kh, kw, c_out).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from ..kernels import layout as K
from ..kernels.arith import FORM_MULTIPLY, FORM_SHIFT, q24_multiplier
from .quantize import FixedModel
from .spec import Conv2d, Dense, Flatten, Network, Recurrent, SumPool2d, layer_kind

MAX_FAN_IN_INT16 = 65535  # int16 weights: 65535 * 32767 < 2^31, so a sum of one step cannot overflow
MAX_EVENTS_PER_STEP = K.MAX_EVENTS_PER_STEP


@dataclass(eq=False)
class Program:
    ltab: np.ndarray   # int64[L, NL]
    ptab: np.ndarray   # int64[L, NP] (fixed) or float32[L, NP] (float)
    wa: np.ndarray     # int8 or float32
    wb: np.ndarray     # int16 or float32 (empty)
    n_vs: int          # numeric state words (int32 or float32)
    n_ist: int         # int32 state words
    fixed: bool

    @property
    def state_dtype(self):
        return np.int32 if self.fixed else np.float32

    def new_state(self):
        return np.zeros(self.n_vs, self.state_dtype), np.zeros(self.n_ist, np.int32)

    @property
    def n_layers(self) -> int:
        return self.ltab.shape[0]

    def layer_sizes(self) -> list[int]:
        return [int(n) for n in self.ltab[:, K.L_N_OUT]]


def _in_major(layer, w):
    if isinstance(layer, Conv2d):
        return np.ascontiguousarray(np.transpose(w, (1, 2, 3, 0)))
    return np.ascontiguousarray(w.T)


def _as_chw(shape):
    """Any shape as (c, h, w): leading sizes fold into c, missing ones are 1 (used by conv and pool)."""
    shape = (1, 1, 1) + tuple(int(x) for x in shape)
    return (int(np.prod(shape[:-2])),) + shape[-2:]


def _fan_in(layer, n_in):
    if isinstance(layer, Conv2d):
        return int(np.prod(layer.weight.shape[1:]))
    if isinstance(layer, Recurrent):
        return n_in + layer.weight.shape[0]
    return n_in


def _build(net: Network, qlayers, fixed: bool) -> Program:
    shapes = [net.input_shape] + net.shapes()
    n_layers = len(net.layers)
    ltab = np.full((n_layers, K.NL), -1, np.int64)
    ptab = np.zeros((n_layers, K.NP), np.int64 if fixed else np.float32)
    pools = ([], [])          # arrays per pool
    pool_len = [0, 0]
    n_vs = 0
    n_ist = 0

    def put(pool, arr):
        off = pool_len[pool]
        pools[pool].append(arr.ravel())
        pool_len[pool] += arr.size
        return off

    for l, layer in enumerate(net.layers):
        in_shape, out_shape = shapes[l], shapes[l + 1]
        in3, out3 = _as_chw(in_shape), _as_chw(out_shape)
        row = ltab[l]
        n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
        row[K.L_KIND] = K.LAYER_CODES[layer_kind(layer)]
        row[K.L_N_IN], row[K.L_N_OUT] = n_in, n_out
        row[K.L_IN_C], row[K.L_IN_H], row[K.L_IN_W] = in3[-3:]
        row[K.L_OUT_C], row[K.L_OUT_H], row[K.L_OUT_W] = out3[-3:]
        row[K.L_S_OFF] = n_ist
        n_ist += n_out
        if isinstance(layer, Flatten):
            row[K.L_NEURON] = K.NONE
            continue
        q = qlayers[l] if fixed else None
        neuron = layer.neuron
        row[K.L_NEURON] = K.NEURON_CODES[neuron.kind]
        row[K.L_RESET] = K.RESET_SUBTRACT if neuron.reset == "subtract" else K.RESET_ZERO
        row[K.L_REF_STEPS] = q.ref_steps if fixed else neuron.refractory_steps(net.dt)
        row[K.L_DECAY_FORM] = FORM_MULTIPLY if neuron.decay_form == "multiply" or not fixed else FORM_SHIFT
        row[K.L_V_OFF] = n_vs
        n_vs += n_out
        if neuron.kind == "cuba":
            row[K.L_I_OFF] = n_vs
            n_vs += n_out
        if neuron.kind == "alif":
            row[K.L_A_OFF] = n_vs
            n_vs += n_out
        if row[K.L_REF_STEPS] > 0 and neuron.spiking:
            row[K.L_R_OFF] = n_ist
            n_ist += n_out
        if isinstance(layer, Conv2d):
            _, _, kh, kw = layer.weight.shape
            row[K.L_KH], row[K.L_KW] = kh, kw
            row[K.L_STRIDE], row[K.L_PAD] = layer.stride, layer.padding
        if isinstance(layer, SumPool2d):
            row[K.L_KH] = row[K.L_KW] = layer.kernel
            row[K.L_STRIDE], row[K.L_PAD] = layer.stride, 0

        if fixed:
            pool = 1 if q.bits == 16 else 0
            if pool == 1 and _fan_in(layer, n_in) > MAX_FAN_IN_INT16:
                raise ModelError(f"layer {l} ({layer_kind(layer)}): fan-in {_fan_in(layer, n_in)} exceeds "
                                 f"{MAX_FAN_IN_INT16} for int16 (plastic) weights; split the layer")
            form = row[K.L_DECAY_FORM]
            ptab[l, K.P_DV], ptab[l, K.P_DI], ptab[l, K.P_DA] = (q24_multiplier(d, form) for d in (q.dv, q.di, q.da))
            ptab[l, K.P_THETA], ptab[l, K.P_A_INC], ptab[l, K.P_POOL_W] = q.theta, q.a_inc, q.pool_weight
            w, w_rec = q.weight, q.weight_rec
        else:
            pool = 0
            betas = neuron.betas(net.dt)
            ptab[l, K.P_DV], ptab[l, K.P_DI], ptab[l, K.P_DA] = betas["v"], betas.get("i", 0), betas.get("a", 0)
            ptab[l, K.P_THETA] = neuron.threshold if neuron.spiking else 0
            ptab[l, K.P_A_INC] = neuron.adapt_step if neuron.kind == "alif" else 0
            ptab[l, K.P_POOL_W] = layer.weight if isinstance(layer, SumPool2d) else 0
            w = getattr(layer, "weight", None)
            w_rec = getattr(layer, "weight_rec", None)
        row[K.L_W_POOL] = pool
        if isinstance(layer, (Dense, Recurrent, Conv2d)):
            row[K.L_W_OFF] = put(pool, _in_major(layer, w))
        if isinstance(layer, Recurrent):
            row[K.L_WREC_OFF] = put(pool, np.ascontiguousarray(w_rec.T))

    n_ist += n_layers  # one spike count per layer
    if fixed:
        wa = np.concatenate(pools[0]).astype(np.int8) if pools[0] else np.zeros(0, np.int8)
        wb = np.concatenate(pools[1]).astype(np.int16) if pools[1] else np.zeros(0, np.int16)
    else:
        wa = np.concatenate(pools[0]).astype(np.float32) if pools[0] else np.zeros(0, np.float32)
        wb = np.zeros(0, np.float32)
    return Program(ltab, ptab, wa, wb, n_vs, n_ist, fixed)


def build_fixed(model: FixedModel) -> Program:
    return _build(model.network, model.layers, fixed=True)


def build_float(net: Network) -> Program:
    return _build(net, None, fixed=False)
