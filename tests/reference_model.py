"""A plain pure-Python transcription of docs/numerics.md, for checking the emulator exactly.

Python integers, lists, the weights in their description layout ((n_out, n_in), (o, c, kh, kw)); none of
edgesnn's kernels, program layout or arithmetic helpers is used, so a mistake in either one shows.
"""
import math

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def sat(x):
    return min(max(x, I32_MIN), I32_MAX)


def decay(x, const, form):
    m = abs(x)
    if form == "multiply":
        m = (m * const) >> 12
    elif const > 0:
        m = m - ((m + (1 << const) - 1) >> const)
    return -m if x < 0 else m


class ReferenceNet:
    def __init__(self, model):
        self.net = model.network
        self.q = model.layers
        shapes = [self.net.input_shape] + self.net.shapes()
        self.in_shapes = shapes[:-1]
        self.out_shapes = shapes[1:]
        self.state = []
        for layer, shape in zip(self.net.layers, self.out_shapes):
            n = math.prod(shape)
            self.state.append({"v": [0] * n, "i": [0] * n, "a": [0] * n, "r": [0] * n, "prev": []})

    def step(self, inp):
        """inp: list of input indices. Returns per layer (spike list, v list, i list, a list)."""
        spikes = list(inp)
        out = []
        for l, layer in enumerate(self.net.layers):
            kind = type(layer).__name__
            st = self.state[l]
            if kind == "Flatten":
                out.append((list(spikes), [], [], []))
                continue
            q = self.q[l]
            n_out = math.prod(self.out_shapes[l])
            acc = [0] * n_out
            if kind in ("Dense", "Recurrent"):
                W = q.weight.tolist()
                for j in spikes:
                    for n in range(n_out):
                        acc[n] += W[n][j]
                if kind == "Recurrent":
                    R = q.weight_rec.tolist()
                    for m in st["prev"]:
                        for n in range(n_out):
                            acc[n] += R[n][m]
            elif kind == "Conv2d":
                W = q.weight.tolist()
                C, H, Wd = self.in_shapes[l]
                O, OH, OW = self.out_shapes[l]
                KH, KW = len(W[0][0]), len(W[0][0][0])
                S, P = layer.stride, layer.padding
                for e in spikes:
                    c, y, x = e // (H * Wd), (e // Wd) % H, e % Wd
                    for ky in range(KH):
                        for kx in range(KW):
                            ny, nx = y + P - ky, x + P - kx
                            if ny < 0 or nx < 0 or ny % S or nx % S:
                                continue
                            oy, ox = ny // S, nx // S
                            if oy < OH and ox < OW:
                                for o in range(O):
                                    acc[(o * OH + oy) * OW + ox] += W[o][c][ky][kx]
            elif kind == "SumPool2d":
                C, H, Wd = self.in_shapes[l]
                _, OH, OW = self.out_shapes[l]
                K, S = layer.kernel, layer.stride
                for e in spikes:
                    c, y, x = e // (H * Wd), (e // Wd) % H, e % Wd
                    for oy in range(OH):
                        for ox in range(OW):
                            if oy * S <= y < oy * S + K and ox * S <= x < ox * S + K:
                                acc[(c * OH + oy) * OW + ox] += q.pool_weight
            else:
                raise AssertionError(kind)

            nrn = layer.neuron
            form = nrn.decay_form
            new_spikes = []
            for n in range(n_out):
                x = acc[n]
                if nrn.kind == "li":
                    st["v"][n] = sat(decay(st["v"][n], q.dv, form) + x)
                    continue
                if nrn.kind == "cuba":
                    st["i"][n] = sat(decay(st["i"][n], q.di, form) + x)
                    x = st["i"][n]
                v = decay(st["v"][n], q.dv, form)
                if q.ref_steps > 0 and st["r"][n] > 0:
                    st["r"][n] -= 1
                    refractory = True
                else:
                    v = sat(v + x)
                    refractory = False
                th = q.theta + (st["a"][n] if nrn.kind == "alif" else 0)
                spike = (not refractory) and v >= th
                if spike:
                    v = v - q.theta if nrn.reset == "subtract" else 0
                    st["r"][n] = q.ref_steps
                    new_spikes.append(n)
                if nrn.kind == "alif":
                    st["a"][n] = sat(decay(st["a"][n], q.da, form) + q.a_inc * int(spike))
                st["v"][n] = v
            st["prev"] = new_spikes
            spikes = new_spikes
            out.append((new_spikes, list(st["v"]), list(st["i"]), list(st["a"])))
        return out
