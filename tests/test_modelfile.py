"""The model file: exact round trips, and a refusal (with a useful message) for every kind of bad file.

The container helpers below are written from docs/formats.md, independently of modelfile.py, so the
tests also check that the file is what the document says.
"""
import hashlib
import json
import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edgesnn.errors import ModelError, ModelFileError
from edgesnn.model import modelfile as mf
from edgesnn.model.quantize import MAX_SHIFT, QMAX, FixedModel, quantize
from edgesnn.model.spec import Conv2d, Dense, Flatten, Network, Neuron, Recurrent, SumPool2d
from edgesnn.simulator import Simulator

MAGIC = b"ESNN\r\n\x1a\n"
DT = {"float32": "<f4", "int8": "i1", "int16": "<i2"}


# ---------------------------------------------------------------- independent container helpers

def split(data: bytes):
    """(header dict, {name: array}) of a file, following docs/formats.md."""
    magic, version, flags, hlen, dlen = struct.unpack_from("<8sHHIQ", data, 0)
    assert magic == MAGIC
    header = json.loads(data[28:28 + hlen].decode("utf-8"))
    start = -(-(28 + hlen) // 16) * 16
    body = data[start:start + dlen]
    arrays = {}
    for a in header["arrays"]:
        arrays[a["name"]] = np.frombuffer(body, DT[a["dtype"]], math.prod(a["shape"]),
                                          a["offset"]).reshape(a["shape"]).copy()
    return header, arrays


def signed(hbytes: bytes, body: bytes, version=1, flags=0) -> bytes:
    pre = struct.pack("<8sHHIQ", MAGIC, version, flags, len(hbytes), len(body))
    out = pre + struct.pack("<I", zlib.crc32(pre)) + hbytes
    out += bytes(-len(out) % 16) + body
    return out + struct.pack("<I", zlib.crc32(out))


def canonical(header) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def assemble(header, arrays, version=1, flags=0, relayout=True) -> bytes:
    """A valid, re-signed file from a header and arrays (the array table is rewritten if relayout)."""
    body = bytearray()
    if relayout:
        header["arrays"] = []
        for name, a in arrays.items():
            dname = {"f": "float32", "i": {1: "int8", 2: "int16"}.get(a.dtype.itemsize)}[a.dtype.kind]
            body += bytes(-len(body) % 16)
            raw = np.ascontiguousarray(a, DT[dname]).tobytes()
            header["arrays"].append({"name": name, "dtype": dname, "shape": list(a.shape),
                                     "offset": len(body), "length": len(raw)})
            body += raw
    else:
        end = max((e["offset"] + e["length"] for e in header["arrays"]), default=0)
        body = bytearray(end)
        for e in header["arrays"]:
            raw = np.ascontiguousarray(arrays[e["name"]], DT[e["dtype"]]).tobytes()
            body[e["offset"]:e["offset"] + len(raw)] = raw
    return signed(canonical(header), bytes(body), version, flags)


# ---------------------------------------------------------------- models

def small_model() -> FixedModel:
    rng = np.random.default_rng(1)
    net = Network((2, 5, 5), [
        Conv2d(rng.normal(0, .5, (3, 2, 3, 3)), stride=1, padding=1, neuron=Neuron("lif")),
        SumPool2d(2, neuron=Neuron("if", refractory=2e-3)),
        Flatten(),
        Recurrent(rng.normal(0, .3, (6, 12)), rng.normal(0, .3, (6, 6)), neuron=Neuron("alif"), plastic=True),
        Dense(rng.normal(0, .3, (4, 6)), neuron=Neuron("cuba", decay_form="shift", tau_mem=math.inf)),
        Dense(rng.normal(0, .3, (3, 4)), neuron=Neuron("li")),
    ], name="small", seed=7)
    return quantize(net)


@pytest.fixture(scope="module")
def small_bytes():
    return mf.dumps(small_model())


def same_array(x, y, what):
    assert isinstance(y, np.ndarray), what
    assert x.dtype == y.dtype and x.shape == y.shape, what
    assert x.tobytes() == y.tobytes(), what


def assert_identical(a: FixedModel, b: FixedModel):
    na, nb = a.network, b.network
    assert (na.input_shape, na.dt, na.name, na.seed) == (nb.input_shape, nb.dt, nb.name, nb.seed)
    assert type(na.dt) is float and type(nb.dt) is float
    assert len(na.layers) == len(nb.layers) == len(a.layers) == len(b.layers)
    for i, (la, lb, qa, qb) in enumerate(zip(na.layers, nb.layers, a.layers, b.layers)):
        assert type(la) is type(lb), i
        assert la.neuron == lb.neuron, i
        assert la.plastic == lb.plastic, i
        if isinstance(la, (Dense, Recurrent, Conv2d)):
            same_array(la.weight, lb.weight, f"layer {i} weight")
        if isinstance(la, Recurrent):
            same_array(la.weight_rec, lb.weight_rec, f"layer {i} weight_rec")
        if isinstance(la, Conv2d):
            assert (la.stride, la.padding) == (lb.stride, lb.padding)
        if isinstance(la, SumPool2d):
            assert (la.kernel, la.stride, la.weight) == (lb.kernel, lb.stride, lb.weight)
        if qa is None:
            assert qb is None
            continue
        for f in ("shift", "bits", "pool_weight", "theta", "a_inc", "dv", "di", "da", "ref_steps"):
            assert getattr(qa, f) == getattr(qb, f), (i, f)
            assert type(getattr(qb, f)) is int
        for f in ("weight", "weight_rec"):
            if getattr(qa, f) is None:
                assert getattr(qb, f) is None
            else:
                same_array(getattr(qa, f), getattr(qb, f), f"layer {i} q.{f}")
                assert getattr(qb, f).flags.writeable  # on-device learning updates them in place


# ---------------------------------------------------------------- random networks (hypothesis)

taus = st.one_of(st.floats(1e-3, 1.0), st.just(math.inf))


@st.composite
def neurons(draw, allow_li=False, threshold_scale=1.0):
    kinds = ["lif", "if", "cuba", "alif"] + (["li"] if allow_li else [])
    return Neuron(kind=draw(st.sampled_from(kinds)), tau_mem=draw(taus),
                  threshold=draw(st.floats(0.05, 5.0)) * threshold_scale,
                  reset=draw(st.sampled_from(["subtract", "zero"])),
                  refractory=draw(st.one_of(st.just(0.0), st.floats(0.0, 5e-3))),
                  tau_syn=draw(taus), tau_adapt=draw(taus), adapt_step=draw(st.floats(0.0, 1.0)),
                  decay_form=draw(st.sampled_from(["multiply", "shift"])))


@st.composite
def fixed_models(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.0, 0.01, 0.5, 3.0, 300.0]))  # 0: all-zero weights; 300: negative shift
    th = max(1.0, scale)

    def w(*shape):
        return rng.normal(0, scale, shape) if scale else np.zeros(shape)

    if draw(st.booleans()):  # (c, h, w) input with conv / pool blocks
        shape = (draw(st.integers(1, 3)), draw(st.integers(3, 7)), draw(st.integers(3, 7)))
        blocks = draw(st.lists(st.sampled_from(["conv", "pool"]), max_size=3))
        tail = draw(st.lists(st.sampled_from(["dense", "recurrent"]), max_size=2))
    else:
        shape = (draw(st.integers(1, 12)),)
        blocks = []
        tail = draw(st.lists(st.sampled_from(["dense", "recurrent"]), min_size=1, max_size=3))
    if not blocks and not tail:
        tail = ["dense"]
    plan = blocks + (["flatten"] if tail and len(shape) == 3 and draw(st.booleans()) else []) + tail
    layers, cur = [], shape
    for k, kind in enumerate(plan):
        last = k == len(plan) - 1
        nrn = draw(neurons(allow_li=last and kind != "recurrent", threshold_scale=th))
        plastic = draw(st.booleans())
        if kind == "conv":
            pad = draw(st.integers(0, 1))
            kh = draw(st.integers(1, min(3, cur[1] + 2 * pad)))
            kw = draw(st.integers(1, min(3, cur[2] + 2 * pad)))
            layer = Conv2d(w(draw(st.integers(1, 3)), cur[0], kh, kw), stride=draw(st.integers(1, 2)),
                           padding=pad, neuron=nrn, plastic=plastic)
        elif kind == "pool":
            k = draw(st.integers(1, min(2, cur[1], cur[2])))
            layer = SumPool2d(k, draw(st.sampled_from([None, 1, 2])), draw(st.floats(0.1, 2.0)) * th,
                              neuron=nrn)
        elif kind == "flatten":
            layer = Flatten()
        elif kind == "dense":
            layer = Dense(w(draw(st.integers(1, 8)), math.prod(cur)), neuron=nrn, plastic=plastic)
        else:
            n = draw(st.integers(1, 8))
            layer = Recurrent(w(n, math.prod(cur)), w(n, n), neuron=nrn, plastic=plastic)
        layers.append(layer)
        cur = layer.out_shape(cur)
    net = Network(shape, layers, dt=draw(st.floats(1e-5, 1e-2)), name=draw(st.text(max_size=12)),
                  seed=draw(st.integers(0, 2**32 - 1)))
    try:
        model = quantize(net)
    except ModelError:  # e.g. a threshold below one integer step: not a model anyone can save
        assume(False)
    if draw(st.booleans()):  # on-device learning moved the integer weights off round(w * 2^shift)
        for q in model.layers:
            for f in ("weight", "weight_rec"):
                a = getattr(q, f, None) if q is not None else None
                if a is not None and a.size:
                    qmax = QMAX[q.bits]
                    setattr(q, f, np.clip(a.astype(np.int64) + rng.integers(-3, 4, a.shape),
                                          -qmax, qmax).astype(a.dtype))
    return model


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fixed_models())
def test_round_trip_is_exact(model):
    data = mf.dumps(model)
    back = mf.loads(data)
    assert_identical(model, back)
    assert mf.dumps(back) == data  # canonical: writing the loaded model gives the same bytes
    assert mf.model_hash(back) == mf.model_hash(model)
    # the file is what docs/formats.md describes
    header, arrays = split(data)
    assert signed(canonical(header), data[-(-(28 + struct.unpack_from("<I", data, 12)[0]) // 16) * 16:-4]) \
        == data
    assert set(arrays) == {n for i, l in enumerate(model.network.layers) for n in mf.weight_arrays(i, l)}


def test_every_layer_and_neuron_kind_is_covered_by_the_strategy():
    """The strategy above reaches every layer kind and every neuron kind (else the round trip is weak)."""
    seen_layers, seen_neurons = set(), set()

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(fixed_models())
    def collect(model):
        for layer in model.network.layers:
            seen_layers.add(type(layer).__name__)
            if layer.neuron is not None:
                seen_neurons.add(layer.neuron.kind)

    collect()
    assert seen_layers == {"Conv2d", "SumPool2d", "Flatten", "Dense", "Recurrent"}
    assert seen_neurons == {"lif", "if", "cuba", "alif", "li"}


def test_round_trip_of_the_small_model_runs_identically(tmp_path):
    model = small_model()
    path = tmp_path / "small.esnn"
    mf.save(model, path)
    back = mf.load(path)
    assert_identical(model, back)
    rng = np.random.default_rng(3)
    x = (rng.random((60, 50)) < 0.2).astype(np.int8)
    ra = Simulator.fixed(model).run(x, record="all")
    rb = Simulator.fixed(back).run(x, record="all")
    assert ra.spikes.any()
    np.testing.assert_array_equal(ra.spikes, rb.spikes)
    np.testing.assert_array_equal(ra.state, rb.state)
    fa = Simulator.float(model.network).run(x, record="all")
    fb = Simulator.float(back.network).run(x, record="all")
    np.testing.assert_array_equal(fa.state, fb.state)


def test_layout_matches_the_document(small_bytes):
    data = small_bytes
    magic, version, flags, hlen, dlen = struct.unpack_from("<8sHHIQ", data, 0)
    assert (magic, version, flags) == (MAGIC, 1, 0)
    assert struct.unpack_from("<I", data, 24)[0] == zlib.crc32(data[:24])
    start = -(-(28 + hlen) // 16) * 16
    assert len(data) == start + dlen + 4
    assert data[28 + hlen:start] == bytes(start - 28 - hlen)
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])
    header, arrays = split(data)
    assert header["format"] == "edgesnn-model"
    assert header["network"] == {"name": "small", "input_shape": [2, 5, 5], "dt": 0.001, "seed": 7}
    assert [l["kind"] for l in header["layers"]] == ["conv2d", "sumpool2d", "flatten", "recurrent", "dense",
                                                     "dense"]
    assert header["layers"][4]["neuron"]["tau_mem"] == "inf"
    assert all(e["offset"] % 16 == 0 for e in header["arrays"])
    model = small_model()
    np.testing.assert_array_equal(arrays["layer3.qweight_rec"], model.layers[3].weight_rec)
    assert arrays["layer3.qweight_rec"].dtype == np.int16 and arrays["layer0.qweight"].dtype == np.int8
    np.testing.assert_array_equal(arrays["layer0.weight"], model.network.layers[0].weight)
    assert header["layers"][1]["quant"]["pool_weight"] == model.layers[1].pool_weight
    assert header["layers"][1]["quant"]["ref_steps"] == 2


# ---------------------------------------------------------------- hash

def test_model_hash_identifies_the_content(small_bytes):
    a, b = small_model(), small_model()
    h = mf.model_hash(a)
    assert len(h) == 64 and int(h, 16) >= 0
    assert mf.model_hash(b) == h  # equal models, separately built
    hlen, dlen = struct.unpack_from("<IQ", small_bytes, 12)
    start = -(-(28 + hlen) // 16) * 16
    assert hashlib.sha256(small_bytes[28:28 + hlen] + small_bytes[start:start + dlen]).hexdigest() == h
    b.layers[3].weight[0, 0] += 1  # one integer weight learned one step
    assert mf.model_hash(b) != h
    c = small_model()
    c.network.layers[4].weight[1, 1] = np.nextafter(c.network.layers[4].weight[1, 1], np.float32(9))
    assert mf.model_hash(c) != h
    d = small_model()
    d.layers[4].theta += 1
    assert mf.model_hash(d) != h


# ---------------------------------------------------------------- refusals: container

def test_not_a_model_file():
    for junk in (b"hello, this is not a model at all" * 3, b"\x89PNG\r\n\x1a\n" + bytes(100), b"ESNX" + bytes(60)):
        with pytest.raises(ModelFileError, match="not an edgesnn model file") as e:
            mf.loads(junk, source="junk.bin")
        assert str(e.value).startswith("junk.bin: ")
        assert "byte offset 0" in str(e.value)
        assert "save" in str(e.value)  # what to do


def test_every_truncation_is_refused(small_bytes):
    data = small_bytes
    for n in range(len(data)):
        with pytest.raises(ModelFileError, match="truncated") as e:
            mf.loads(data[:n], source="t.esnn")
        assert f"byte offset {n}" in str(e.value)
        assert "copy it again" in str(e.value)


def test_every_flipped_byte_is_refused(small_bytes):
    data = small_bytes
    for pos in range(len(data)):
        for mask in (0x01, 0xFF):
            bad = bytearray(data)
            bad[pos] ^= mask
            with pytest.raises(ModelFileError) as e:
                mf.loads(bytes(bad))
            msg = str(e.value)
            if pos < 8:
                assert "not an edgesnn model file" in msg
            elif pos < 10:
                assert "format version" in msg and "CRC32 does not match" in msg
            elif pos < 28:
                assert "corrupted prelude: CRC32 mismatch" in msg and "expected 0x" in msg and "found 0x" in msg
            else:
                assert "corrupted: CRC32 mismatch" in msg
                stored = struct.unpack_from("<I", bad, len(bad) - 4)[0]
                found = zlib.crc32(bytes(bad[:-4]))
                assert f"expected 0x{stored:08x}" in msg and f"found 0x{found:08x}" in msg


@pytest.mark.parametrize("version", [0, 2, 300])
def test_unsupported_version(small_bytes, version):
    header, arrays = split(small_bytes)
    data = assemble(header, arrays, version=version)
    with pytest.raises(ModelFileError, match=f"format version {version} is not supported") as e:
        mf.loads(data)
    assert "reads version 1" in str(e.value) and "byte offset 8" in str(e.value)
    assert "corrupted" not in str(e.value)


def test_unknown_flags_and_trailing_bytes(small_bytes):
    header, arrays = split(small_bytes)
    with pytest.raises(ModelFileError, match="unknown flags 0x0004.*byte offset 10"):
        mf.loads(assemble(header, arrays, flags=4))
    with pytest.raises(ModelFileError, match="3 unexpected bytes after the end"):
        mf.loads(small_bytes + b"abc")


def test_reassembled_file_loads(small_bytes):
    """The helpers that the refusal tests use produce a file the reader accepts: refusals below are
    caused by the one change each makes."""
    header, arrays = split(small_bytes)
    assert assemble(header, arrays) == small_bytes
    assert_identical(mf.loads(assemble(header, arrays)), small_model())


def test_load_names_the_path(tmp_path, small_bytes):
    path = tmp_path / "broken.esnn"
    path.write_bytes(small_bytes[:-1])
    with pytest.raises(ModelFileError, match="broken.esnn: truncated"):
        mf.load(path)
    with pytest.raises(ModelFileError, match="cannot read"):
        mf.load(tmp_path / "missing.esnn")


# ---------------------------------------------------------------- refusals: content (valid CRC)

def refuse(header, arrays, *patterns, relayout=True):
    with pytest.raises(ModelFileError) as e:
        mf.loads(assemble(header, arrays, relayout=relayout), source="m.esnn")
    msg = str(e.value)
    assert msg.startswith("m.esnn: ")
    for p in patterns:
        assert p in msg, (p, msg)
    assert "re-export" in msg  # what to do
    return msg


def test_array_out_of_bounds(small_bytes):
    header, arrays = split(small_bytes)
    entry = next(e for e in header["arrays"] if e["name"] == "layer4.qweight")
    end = max(e["offset"] + e["length"] for e in header["arrays"])
    data = assemble(header, arrays, relayout=False)
    entry["offset"] = -(-end // 16) * 16  # past the end of the data section
    h, body = canonical(header), split_body(data)
    with pytest.raises(ModelFileError, match="out of bounds") as e:
        mf.loads(signed(h, body))
    assert "'layer4.qweight'" in str(e.value) and "byte offset" in str(e.value)


def split_body(data):
    hlen, dlen = struct.unpack_from("<IQ", data, 12)
    start = -(-(28 + hlen) // 16) * 16
    return data[start:start + dlen]


def test_overlapping_arrays(small_bytes):
    header, arrays = split(small_bytes)
    a = next(e for e in header["arrays"] if e["name"] == "layer5.weight")
    b = next(e for e in header["arrays"] if e["name"] == "layer5.qweight")
    b["offset"] = a["offset"] + 16  # inside layer5.weight (48 bytes)
    msg = refuse(header, arrays, "overlap", "'layer5.weight'", "'layer5.qweight'", "byte offset",
                 relayout=False)
    assert "byte offset" in msg


def test_misaligned_or_wrong_length_array(small_bytes):
    header, arrays = split(small_bytes)
    e = next(e for e in header["arrays"] if e["name"] == "layer5.qweight")
    e["offset"] += 4
    refuse(header, arrays, "not a multiple of 16", "'layer5.qweight'", relayout=False)
    header, arrays = split(small_bytes)
    e = next(e for e in header["arrays"] if e["name"] == "layer5.qweight")
    e["length"] += 1
    refuse(header, arrays, "does not match dtype int8 x shape (3, 4)", "'layer5.qweight'", relayout=False)


def test_dense_weight_shape_mismatch(small_bytes):
    header, arrays = split(small_bytes)
    arrays["layer4.weight"] = np.zeros((4, 5), np.float32)
    refuse(header, arrays, "layer 4 (dense)", "'layer4.weight'", "(4, 5)", "needs (4, 6)")
    header, arrays = split(small_bytes)
    arrays["layer0.weight"] = np.zeros((3, 1, 3, 3), np.float32)  # conv c_in 1 but the input has 2 channels
    refuse(header, arrays, "layer 0 (conv2d)", "needs (3, 2, 3, 3)")
    header, arrays = split(small_bytes)
    arrays["layer3.qweight_rec"] = np.zeros((6, 5), np.int16)
    refuse(header, arrays, "layer 3 (recurrent)", "'layer3.qweight_rec'", "needs (6, 6)")


def test_integer_dtype_must_match_bits(small_bytes):
    header, arrays = split(small_bytes)
    arrays["layer4.qweight"] = arrays["layer4.qweight"].astype(np.int16)  # values fit int8, dtype does not
    refuse(header, arrays, "layer 4", "'layer4.qweight'", "dtype int16", "8-bit weights are int8")
    header, arrays = split(small_bytes)
    arrays["layer4.weight"] = arrays["layer4.qweight"].astype(np.int16)
    refuse(header, arrays, "'layer4.weight'", "dtype int16", "float32")


def test_missing_or_unused_array(small_bytes):
    header, arrays = split(small_bytes)
    del arrays["layer4.qweight"]
    refuse(header, arrays, "lacks 'layer4.qweight'", "layer 4")
    header, arrays = split(small_bytes)
    arrays["layer1.weight"] = np.zeros(3, np.float32)
    refuse(header, arrays, "'layer1.weight'", "no layer uses")


def test_unknown_layer_and_neuron_kind(small_bytes):
    header, arrays = split(small_bytes)
    header["layers"][4]["kind"] = "lstm"
    refuse(header, arrays, "unknown layer kind 'lstm'", "layer 4")
    header, arrays = split(small_bytes)
    header["layers"][4]["neuron"]["kind"] = "hodgkin-huxley"
    refuse(header, arrays, "unknown neuron kind 'hodgkin-huxley'", "layer 4")
    header, arrays = split(small_bytes)
    header["layers"][3]["neuron"]["reset"] = "bounce"
    refuse(header, arrays, "unknown reset 'bounce'", "layer 3")


@pytest.mark.parametrize("name,layer,value,bits", [
    ("layer0.qweight", 0, -128, 8),       # representable in int8 but outside the symmetric -127..127
    ("layer3.qweight", 3, -32768, 16),
    ("layer3.qweight_rec", 3, 32767, 16),  # at the limit: accepted
])
def test_integer_weights_outside_their_range(small_bytes, name, layer, value, bits):
    header, arrays = split(small_bytes)
    arrays[name].flat[5] = value
    if abs(value) <= QMAX[bits]:
        assert mf.loads(assemble(header, arrays)).layers[layer].weight_rec.flat[5] == value
        return
    idx = str(tuple(int(k) for k in np.unravel_index(5, arrays[name].shape)))
    refuse(header, arrays, f"layer {layer}", repr(name), str(value), idx, f"-{QMAX[bits]}..{QMAX[bits]}")


@pytest.mark.parametrize("layer,field,value,pattern", [
    (0, "dv", 4097, "dv (multiply-form decay constant) = 4097 is out of range 0..4096"),
    (0, "dv", -1, "out of range 0..4096"),
    (4, "di", 25, "di (shift-form decay constant) = 25 is out of range 0..24"),  # layer 4 decays by shifts
    (3, "da", 5000, "da (multiply-form decay constant) = 5000"),
    (3, "theta", 0, "theta = 0 is out of range 1..2147483647"),
    (1, "theta", -5, "theta = -5"),
    (5, "theta", -1, "theta = -1 is out of range 0.."),  # li: 0 allowed, negative not
    (3, "bits", 12, "bits = 12 is not 8 or 16"),
    (3, "bits", 32, "bits = 32 is out of range 8..16"),
    (4, "shift", MAX_SHIFT + 1, f"shift = {MAX_SHIFT + 1} is out of range -{MAX_SHIFT}..{MAX_SHIFT}"),
    (3, "a_inc", -1, "a_inc = -1"),
    (1, "ref_steps", -2, "ref_steps = -2"),
    (1, "pool_weight", 2**31, "pool_weight = 2147483648"),
    (4, "dv", 1.5, "must be an integer, got 1.5"),
    (4, "theta", True, "theta must be an integer, got True"),
])
def test_quantization_fields_out_of_range(small_bytes, layer, field, value, pattern):
    header, arrays = split(small_bytes)
    header["layers"][layer]["quant"][field] = value
    refuse(header, arrays, f"layer {layer}", pattern)


def test_in_range_quantization_edits_are_accepted(small_bytes):
    """The range checks are not stricter than the contract: the extreme legal values load."""
    header, arrays = split(small_bytes)
    header["layers"][0]["quant"]["dv"] = 4096
    header["layers"][4]["quant"]["dv"] = 24
    header["layers"][5]["quant"]["theta"] = 0
    header["layers"][3]["quant"]["shift"] = -MAX_SHIFT
    m = mf.loads(assemble(header, arrays))
    assert (m.layers[0].dv, m.layers[4].dv, m.layers[3].shift) == (4096, 24, -MAX_SHIFT)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_float_weights(small_bytes, value):
    header, arrays = split(small_bytes)
    arrays["layer3.weight_rec"][2, 3] = value
    refuse(header, arrays, "layer 3", "'layer3.weight_rec'", "NaN or infinite", "(2, 3)")


def test_header_problems(small_bytes):
    header, arrays = split(small_bytes)
    body = split_body(small_bytes)
    for hbytes, pattern in [(b"{not json", "not valid JSON"), (b"\xff\xfe{}", "not valid UTF-8"),
                            (b'{"a":1,"a":2}', "duplicate key"), (b"[1,2]", "must be a JSON object"),
                            (b'{"x": NaN}', "not valid JSON")]:
        with pytest.raises(ModelFileError, match=pattern) as e:
            mf.loads(signed(hbytes, body))
        assert "byte offset" in str(e.value) or "header" in str(e.value)
    with pytest.raises(ModelFileError, match="byte offset 38"):  # JSON error position -> file offset
        mf.loads(signed(b'{"format":}', body))
    h2 = dict(header, extra=1)
    refuse(h2, arrays, "unknown field(s) extra")
    h3 = json.loads(json.dumps(header))
    del h3["layers"][3]["quant"]["theta"]
    refuse(h3, arrays, "layer 3 quant lacks the field(s) theta")
    h4 = json.loads(json.dumps(header))
    h4["format"] = "something-else"
    refuse(h4, arrays, "format is 'something-else'")


def test_shape_chain_and_structure(small_bytes):
    header, arrays = split(small_bytes)
    header["layers"][1]["out_shape"] = [3, 3, 3]
    refuse(header, arrays, "layer 1 (sumpool2d)", "out_shape (3, 3, 3)", "should be (3, 2, 2)")
    header, arrays = split(small_bytes)
    header["layers"][3]["neuron"]["kind"] = "li"
    refuse(header, arrays, "layer 3", "only allowed in the last layer")
    header, arrays = split(small_bytes)
    header["layers"][1]["weight"] = 0.1  # not a float32 value
    refuse(header, arrays, "layer 1", "not a finite float32 value")
    header, arrays = split(small_bytes)
    header["network"]["input_shape"] = [2, 5]
    refuse(header, arrays, "layer 0 (conv2d)", "needs a (c, h, w) input")
    header, arrays = split(small_bytes)
    header["layers"][4]["neuron"]["threshold"] = -1.0
    refuse(header, arrays, "layer 4", "threshold must be > 0")
    header, arrays = split(small_bytes)
    header["network"]["dt"] = 0
    refuse(header, arrays, "dt = 0.0")


# ---------------------------------------------------------------- save

def test_save_refuses_a_model_the_reader_would_refuse(tmp_path):
    m = small_model()
    m.network.layers[4].weight[0, 0] = np.nan  # mutated after construction
    path = tmp_path / "bad.esnn"
    with pytest.raises(ModelError, match="cannot save the model.*'layer4.weight'.*NaN"):
        mf.save(m, path)
    assert not path.exists() and not list(tmp_path.iterdir())
    m = small_model()
    m.layers[0].weight = m.layers[0].weight.astype(np.int16)
    m.layers[0].weight.flat[0] = 200
    with pytest.raises(ModelError, match="'layer0.qweight' holds 200"):
        mf.dumps(m)
    m = small_model()
    m.layers[5].weight = m.layers[5].weight.astype(np.int32) * 3  # e.g. learning without clipping
    with pytest.raises(ModelError, match=r"'layer5.qweight' holds -?\d{3}.*outside -127..127"):
        mf.dumps(m)
    m = small_model()
    m.network.layers[5].weight = m.network.layers[5].weight.astype(np.float64)
    with pytest.raises(ModelError, match="'layer5.weight' has dtype float64, float weights are float32"):
        mf.dumps(m)
    m = small_model()
    m.layers[4].dv = 99  # shift form
    with pytest.raises(ModelError, match="dv .* = 99 is out of range 0..24"):
        mf.dumps(m)


def test_save_accepts_wider_integer_arrays_with_legal_values():
    m = small_model()
    ref = mf.dumps(m)
    m.layers[4].weight = m.layers[4].weight.astype(np.int64)  # e.g. after a learning step in int64
    assert mf.dumps(m) == ref
