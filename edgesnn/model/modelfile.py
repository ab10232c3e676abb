"""The model file: one self-describing, versioned, checksummed binary file per FixedModel.

    save(model, "kws.esnn")          model = load("kws.esnn")
    data = dumps(model)              model = loads(data)
    model_hash(model)                hex SHA-256 that identifies the model (used by the device protocol)

Layout (docs/formats.md states it byte by byte):

    0   magic b"ESNN\\r\\n\\x1a\\n"
    8   u16 format version (1)         10  u16 flags (0)
    12  u32 header length H            16  u64 data length D
    24  u32 CRC32 of bytes 0..23 (the prelude)
    28  header: H bytes of UTF-8 JSON (the network, its integer form and the array table)
        zero padding to a multiple of 16
    S   data: D bytes, the arrays (little-endian, each at a 16-byte aligned offset from S)
    S+D u32 CRC32 of bytes 0..S+D-1

Both the float weights and the integer weights are stored: the device runs the integer ones, which may
differ from round(float * 2^shift) after on-device learning. ``load`` checks everything (container,
header schema, array table, shapes, dtypes, ranges, values) before it builds anything, and refuses a bad
file with a ModelFileError saying what is wrong, where, and what to do. ``save`` runs the same content
checks, so it never writes a file that ``load`` would refuse.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import ModelError, ModelFileError
from ..kernels.arith import DECAY_ONE, INT32_MAX, Q24
from .quantize import MAX_SHIFT, QMAX, FixedModel, LayerQ
from .spec import (DECAY_FORMS, NEURON_KINDS, RESETS, Conv2d, Dense, Flatten, Network, Neuron,
                   Recurrent, SumPool2d, layer_kind)

MAGIC = b"ESNN\r\n\x1a\n"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
PRELUDE = struct.Struct("<8sHHIQ")   # magic, version, flags, header length, data length
U32 = struct.Struct("<I")
PRELUDE_CRC_OFFSET = PRELUDE.size    # 24
HEADER_OFFSET = PRELUDE.size + 4     # 28
ALIGN = 16
FORMAT_NAME = "edgesnn-model"

# dtype names in the array table -> little-endian numpy dtypes
DTYPES = {"float32": np.dtype("<f4"), "int8": np.dtype("i1"), "int16": np.dtype("<i2")}
INT_DTYPE_OF_BITS = {8: "int8", 16: "int16"}

NEURON_FLOATS = ("tau_mem", "threshold", "refractory", "tau_syn", "tau_adapt", "adapt_step")
NEURON_KEYS = {"kind", "reset", "decay_form", *NEURON_FLOATS}
QUANT_KEYS = {"shift", "bits", "theta", "a_inc", "dv", "di", "da", "ref_steps", "pool_weight"}
LAYER_KEYS = {
    "dense": {"kind", "n_out", "plastic", "out_shape", "neuron", "quant"},
    "recurrent": {"kind", "n_out", "plastic", "out_shape", "neuron", "quant"},
    "conv2d": {"kind", "c_out", "kernel", "stride", "padding", "plastic", "out_shape", "neuron", "quant"},
    "sumpool2d": {"kind", "kernel", "stride", "weight", "out_shape", "neuron", "quant"},
    "flatten": {"kind", "out_shape"},
}
NETWORK_KEYS = {"name", "input_shape", "dt", "seed"}
TOP_KEYS = {"format", "network", "layers", "arrays"}
ARRAY_KEYS = {"name", "dtype", "shape", "offset", "length"}

REEXPORT = "re-export the model with edgesnn.model.modelfile.save"
RECOPY = "the file was damaged in storage or transfer: copy it again, or " + REEXPORT


class _Bad(Exception):
    """A content problem found by the checks shared by save and load: (what, where)."""

    def __init__(self, what: str, where: str):
        super().__init__(what, where)
        self.what, self.where = what, where


def weight_arrays(index: int, layer) -> list[str]:
    """Names of the arrays a layer stores: float weights, then integer weights."""
    if isinstance(layer, str):
        kind = layer
    else:
        kind = layer_kind(layer)
    if kind in ("dense", "conv2d"):
        return [f"layer{index}.weight", f"layer{index}.qweight"]
    if kind == "recurrent":
        return [f"layer{index}.weight", f"layer{index}.weight_rec", f"layer{index}.qweight",
                f"layer{index}.qweight_rec"]
    return []


# ---------------------------------------------------------------- encoding

def _float(x, what):
    """A float for the JSON header: finite numbers as numbers, infinities as "inf" / "-inf"."""
    x = float(x)
    if math.isnan(x):
        raise _Bad(f"{what} is NaN", what)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _int(x, what):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise _Bad(f"{what} must be an integer, got {x!r}", what)
    return int(x)


def _int_array(a, bits):
    """An integer weight array in the dtype of its bit width when its values fit that dtype (the content
    checks then report values outside -qmax..qmax, or a dtype that does not match the bits)."""
    a = np.asarray(a)
    name = INT_DTYPE_OF_BITS.get(bits)
    if name is not None and a.dtype.kind in "iu" and a.dtype != DTYPES[name]:
        info = np.iinfo(DTYPES[name])
        if a.size == 0 or (a.min() >= info.min and a.max() <= info.max):
            return a.astype(DTYPES[name])
    return a


def _content(model: FixedModel):
    """The header object and the named arrays of a model (nothing checked yet)."""
    if not isinstance(model, FixedModel):
        raise ModelError(f"save/dumps take a FixedModel (quantize.quantize(network)), got "
                         f"{type(model).__name__}")
    net = model.network
    if len(model.layers) != len(net.layers):
        raise ModelError(f"the FixedModel has {len(model.layers)} integer layers for {len(net.layers)} "
                         f"network layers; quantize the network again")
    shapes = net.shapes()
    layers, arrays = [], []
    try:
        for i, (layer, q) in enumerate(zip(net.layers, model.layers)):
            kind = layer_kind(layer)
            d = {"kind": kind, "out_shape": [int(s) for s in shapes[i]]}
            if kind == "flatten":
                if q is not None:
                    raise _Bad("a Flatten layer has an integer form; it must be None", f"layer {i}")
                layers.append(d)
                continue
            if not isinstance(q, LayerQ):
                raise _Bad(f"the integer form is {type(q).__name__}, not a LayerQ", f"layer {i}")
            n = layer.neuron
            d["neuron"] = {"kind": n.kind, "reset": n.reset, "decay_form": n.decay_form,
                           **{k: _float(getattr(n, k), f"layer {i} neuron {k}") for k in NEURON_FLOATS}}
            d["quant"] = {k: _int(getattr(q, k), f"layer {i} {k}") for k in sorted(QUANT_KEYS)}
            if kind in ("dense", "recurrent"):
                d["n_out"] = int(layer.weight.shape[0])
            if kind == "conv2d":
                c_out, _, kh, kw = layer.weight.shape
                d.update(c_out=int(c_out), kernel=[int(kh), int(kw)], stride=_int(layer.stride, "stride"),
                         padding=_int(layer.padding, "padding"))
            if kind == "sumpool2d":
                d.update(kernel=_int(layer.kernel, "kernel"), stride=_int(layer.stride, "stride"),
                         weight=_float(layer.weight, f"layer {i} pool weight"))
            else:
                d["plastic"] = bool(layer.plastic)
                names = weight_arrays(i, kind)
                floats = [layer.weight] + ([layer.weight_rec] if kind == "recurrent" else [])
                ints = [q.weight] + ([q.weight_rec] if kind == "recurrent" else [])
                for name, a in zip(names, floats + [_int_array(w, q.bits) for w in ints]):
                    if a is None:
                        raise _Bad(f"array {name!r} is missing (None)", f"layer {i}")
                    a = np.asarray(a)
                    arrays.append((name, a.astype(a.dtype.newbyteorder("=")) if a.dtype.byteorder == ">"
                                   else a))
            layers.append(d)
        header = {"format": FORMAT_NAME,
                  "network": {"name": net.name, "input_shape": [int(s) for s in net.input_shape],
                              "dt": _float(net.dt, "dt"), "seed": _int(net.seed, "seed")},
                  "layers": layers, "arrays": []}
        _check_content(header, dict(arrays))
    except _Bad as e:
        raise ModelError(f"cannot save the model: {e.what} ({e.where}); fix the model first") from None
    return header, arrays


def _encode(model: FixedModel) -> tuple[bytes, bytes]:
    """(header bytes, data bytes) of a model, checked like a loaded file."""
    header, arrays = _content(model)
    data = bytearray()
    for name, a in arrays:
        dname = {np.dtype(np.float32): "float32", np.dtype(np.int8): "int8",
                 np.dtype(np.int16): "int16"}[a.dtype]  # the content checks guarantee one of these
        raw = np.ascontiguousarray(a, dtype=DTYPES[dname]).tobytes()
        data += bytes(-len(data) % ALIGN)
        header["arrays"].append({"name": name, "dtype": dname, "shape": [int(s) for s in a.shape],
                                 "offset": len(data), "length": len(raw)})
        data += raw
    try:
        hbytes = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                            allow_nan=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError) as e:
        raise ModelError(f"cannot save the model: its header cannot be written as UTF-8 JSON ({e}); "
                         f"check the network name") from None
    return hbytes, bytes(data)


def _container(hbytes: bytes, data: bytes, version: int = VERSION, flags: int = 0) -> bytes:
    prelude = PRELUDE.pack(MAGIC, version, flags, len(hbytes), len(data))
    head = prelude + U32.pack(zlib.crc32(prelude)) + hbytes
    body = head + bytes(-len(head) % ALIGN) + data
    return body + U32.pack(zlib.crc32(body))


def dumps(model: FixedModel) -> bytes:
    """The model file's bytes."""
    return _container(*_encode(model))


def save(model: FixedModel, path) -> None:
    """Write the model file (atomically: a temporary file next to ``path`` is renamed over it)."""
    data = dumps(model)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def model_hash(model: FixedModel) -> str:
    """Hex SHA-256 of the canonical content: the header JSON bytes followed by the data bytes, exactly as
    ``dumps`` writes them (so it can also be computed from a file without parsing it; see formats.md).
    Everything that affects behaviour is covered: network, neuron parameters, integer form, float and
    integer weights (and the name and seed). Equal models give equal hashes."""
    hbytes, data = _encode(model)
    return hashlib.sha256(hbytes + data).hexdigest()


# ---------------------------------------------------------------- decoding

def load(path) -> FixedModel:
    """Read and check a model file; raises ModelFileError naming the problem and where it is."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read the model file ({e.strerror or e}); check the path") \
            from None
    return loads(data, source=str(path))


def loads(data: bytes, source: str = "<bytes>") -> FixedModel:
    """Check the bytes of a model file completely, then build the FixedModel."""
    data = bytes(data)
    try:
        hbytes, body, data_start = _open_container(data)
        header = _parse_header(hbytes)
        blobs = _read_arrays(header, body, data_start)
        checked = _check_content(header, blobs)
        return _build(header, blobs, checked)
    except _Bad as e:
        raise ModelFileError(f"{source}: {e.what} ({e.where}); {_advice(e)}") from None


def _advice(e: _Bad) -> str:
    return getattr(e, "advice", None) or f"the content is inconsistent: the file was not written by a " \
                                          f"working edgesnn; {REEXPORT}"


def _bad(what, where, advice=None):
    e = _Bad(what, where)
    e.advice = advice
    return e


def _open_container(data: bytes):
    n = len(data)
    if n < len(MAGIC):
        if data == MAGIC[:n]:
            raise _bad(f"truncated: the file has only {n} bytes, shorter than the {HEADER_OFFSET}-byte prelude",
                       f"end of file at byte offset {n}", RECOPY)
        raise _bad(f"not an edgesnn model file: it starts with {data!r}, not the magic {MAGIC!r}",
                   "byte offset 0", "pass a file written by edgesnn.model.modelfile.save")
    if data[:8] != MAGIC:
        raise _bad(f"not an edgesnn model file: it starts with {data[:8]!r}, not the magic {MAGIC!r}",
                   "byte offset 0", "pass a file written by edgesnn.model.modelfile.save")
    if n < 10:
        raise _bad(f"truncated: the file has only {n} bytes, shorter than the {HEADER_OFFSET}-byte prelude",
                   f"end of file at byte offset {n}", RECOPY)
    version = struct.unpack_from("<H", data, 8)[0]
    if version not in SUPPORTED_VERSIONS:
        # every version ends with the CRC32 of everything before it: tell a newer file from a damaged one
        intact = n >= 12 and zlib.crc32(data[:-4]) == U32.unpack_from(data, n - 4)[0]
        if intact:
            raise _bad(f"format version {version} is not supported; this edgesnn reads version "
                       f"{', '.join(map(str, SUPPORTED_VERSIONS))}", "byte offset 8",
                       "load it with the edgesnn that wrote it (a newer one if the version is higher), or "
                       "re-export the model with this one")
        raise _bad(f"format version {version} is not supported (this edgesnn reads version "
                   f"{', '.join(map(str, SUPPORTED_VERSIONS))}) and the file's final CRC32 does not match "
                   f"either, so the file is probably corrupted or truncated", "byte offset 8", RECOPY)
    if n < HEADER_OFFSET:
        raise _bad(f"truncated: the file has only {n} bytes, shorter than the {HEADER_OFFSET}-byte prelude",
                   f"end of file at byte offset {n}", RECOPY)
    _, _, flags, hlen, dlen = PRELUDE.unpack_from(data, 0)
    stored = U32.unpack_from(data, PRELUDE_CRC_OFFSET)[0]
    found = zlib.crc32(data[:PRELUDE_CRC_OFFSET])
    if stored != found:
        raise _bad(f"corrupted prelude: CRC32 mismatch, expected 0x{stored:08x} (stored at byte offset "
                   f"{PRELUDE_CRC_OFFSET}), found 0x{found:08x} (computed over bytes 0..{PRELUDE_CRC_OFFSET - 1})",
                   "a changed byte in byte offsets 8..27", RECOPY)
    data_start = HEADER_OFFSET + hlen + (-(HEADER_OFFSET + hlen) % ALIGN)
    crc_at = data_start + dlen
    total = crc_at + 4
    if n < total:
        raise _bad(f"truncated: the file has {n} bytes but its prelude announces {total} (header of {hlen} "
                   f"bytes at byte offset {HEADER_OFFSET}, data of {dlen} bytes at byte offset {data_start}, "
                   f"CRC32 at byte offset {crc_at})", f"end of file at byte offset {n}", RECOPY)
    if n > total:
        raise _bad(f"{n - total} unexpected bytes after the end of the model (the final CRC32 ends at byte "
                   f"offset {total})", f"byte offset {total}",
                   "the file was appended to or is not one model: copy it again or re-export it")
    stored = U32.unpack_from(data, crc_at)[0]
    found = zlib.crc32(data[:crc_at])
    if stored != found:
        raise _bad(f"corrupted: CRC32 mismatch, expected 0x{stored:08x} (stored at byte offset {crc_at}), "
                   f"found 0x{found:08x} (computed over bytes 0..{crc_at - 1})",
                   f"a changed byte somewhere in byte offsets 0..{crc_at + 3}", RECOPY)
    if flags != 0:
        raise _bad(f"unknown flags 0x{flags:04x}; format version 1 defines none", "byte offset 10",
                   "load it with the edgesnn that wrote it, or re-export the model with this one")
    return data[HEADER_OFFSET:HEADER_OFFSET + hlen], data[data_start:crc_at], data_start


def _no_constants(name):
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _parse_header(hbytes: bytes):
    try:
        text = hbytes.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Bad(f"the header is not valid UTF-8 ({e.reason})", f"byte offset {HEADER_OFFSET + e.start}")
    try:
        header = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        off = HEADER_OFFSET + len(text[:e.pos].encode("utf-8"))
        raise _Bad(f"the header is not valid JSON ({e.msg})", f"byte offset {off}")
    except ValueError as e:
        raise _Bad(f"the header is not valid JSON ({e})", f"header at byte offset {HEADER_OFFSET}")
    _keys(header, TOP_KEYS, "the header")
    if header["format"] != FORMAT_NAME:
        raise _Bad(f"the header's format is {header['format']!r}, not {FORMAT_NAME!r}", "header")
    _keys(header["network"], NETWORK_KEYS, "the header's network")
    if not isinstance(header["layers"], list) or not header["layers"]:
        raise _Bad("the header's layers must be a non-empty list", "header")
    for i, layer in enumerate(header["layers"]):
        if not isinstance(layer, dict) or "kind" not in layer:
            raise _Bad("a layer must be an object with a 'kind'", f"layer {i}")
        if layer["kind"] not in LAYER_KEYS:
            raise _Bad(f"unknown layer kind {layer['kind']!r}; this edgesnn knows "
                       f"{', '.join(LAYER_KEYS)}", f"layer {i}")
        _keys(layer, LAYER_KEYS[layer["kind"]], f"layer {i} ({layer['kind']})")
        if "neuron" in layer:
            _keys(layer["neuron"], NEURON_KEYS, f"layer {i} neuron")
            _keys(layer["quant"], QUANT_KEYS, f"layer {i} quant")
    if not isinstance(header["arrays"], list):
        raise _Bad("the header's arrays must be a list", "header")
    for k, a in enumerate(header["arrays"]):
        _keys(a, ARRAY_KEYS, f"array table entry {k}")
    return header


def _keys(obj, expected, what):
    if not isinstance(obj, dict):
        raise _Bad(f"{what} must be a JSON object, got {type(obj).__name__}", what)
    missing, extra = expected - obj.keys(), obj.keys() - expected
    if missing:
        raise _Bad(f"{what} lacks the field(s) {', '.join(sorted(missing))}", what)
    if extra:
        raise _Bad(f"{what} has unknown field(s) {', '.join(sorted(extra))}", what)


def _read_arrays(header, body: bytes, data_start: int) -> dict:
    """Check the array table against the data section and read every array (copies, native order)."""
    table = []
    names = set()
    for k, a in enumerate(header["arrays"]):
        name = a["name"]
        if not isinstance(name, str) or not name:
            raise _Bad(f"array table entry {k} has no name", f"array table entry {k}")
        where = f"array {name!r}"
        if name in names:
            raise _Bad(f"the array table lists {name!r} twice", where)
        names.add(name)
        if a["dtype"] not in DTYPES:
            raise _Bad(f"dtype {a['dtype']!r} is unknown; use {', '.join(DTYPES)}", where)
        shape = a["shape"]
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            raise _Bad(f"shape {shape!r} is not a list of sizes >= 0", where)
        off, length = a["offset"], a["length"]
        if type(off) is not int or type(length) is not int or off < 0 or length < 0:
            raise _Bad(f"offset {off!r} and length {length!r} must be integers >= 0", where)
        itemsize = DTYPES[a["dtype"]].itemsize
        if length != math.prod(shape) * itemsize:
            raise _Bad(f"length {length} bytes does not match dtype {a['dtype']} x shape {tuple(shape)} = "
                       f"{math.prod(shape) * itemsize} bytes", where)
        if off % ALIGN:
            raise _Bad(f"offset {off} is not a multiple of {ALIGN}", f"{where}, byte offset {data_start + off}")
        if off + length > len(body):
            raise _Bad(f"out of bounds: bytes {off}..{off + length - 1} of a data section of {len(body)} "
                       f"bytes", f"{where}, byte offset {data_start + off}")
        table.append((off, length, name, a["dtype"], tuple(shape)))
    prev = None
    for off, length, name, _, _ in sorted(t for t in table if t[1] > 0):
        if prev is not None and off < prev[0] + prev[1]:
            raise _Bad(f"arrays {prev[2]!r} (bytes {prev[0]}..{prev[0] + prev[1] - 1} of the data) and {name!r} "
                       f"(bytes {off}..{off + length - 1}) overlap", f"byte offset {data_start + off}")
        prev = (off, length, name)
    blobs = {}
    for off, length, name, dtype, shape in table:
        a = np.frombuffer(body, dtype=DTYPES[dtype], count=math.prod(shape), offset=off).reshape(shape)
        blobs[name] = a.astype(DTYPES[dtype].newbyteorder("="), copy=True)
    return blobs


# ---------------------------------------------------------------- content checks (save and load)

def _num(x, what, where):
    """A float field of the header: a JSON number or "inf" / "-inf"."""
    if isinstance(x, str) and x in ("inf", "-inf"):
        return math.inf if x == "inf" else -math.inf
    if type(x) not in (int, float) or math.isnan(x):
        raise _Bad(f"{what} must be a number (or \"inf\"), got {x!r}", where)
    return float(x)


def _intf(x, what, where, lo, hi):
    if type(x) is not int:
        raise _Bad(f"{what} must be an integer, got {x!r}", where)
    if not lo <= x <= hi:
        raise _Bad(f"{what} = {x} is out of range {lo}..{hi}", where)
    return x


def _neuron(d, where) -> Neuron:
    for k in ("kind", "reset", "decay_form"):
        if not isinstance(d[k], str):
            raise _Bad(f"neuron {k} must be a string, got {d[k]!r}", where)
    if d["kind"] not in NEURON_KINDS:
        raise _Bad(f"unknown neuron kind {d['kind']!r}; this edgesnn knows {', '.join(NEURON_KINDS)}", where)
    if d["reset"] not in RESETS:
        raise _Bad(f"unknown reset {d['reset']!r}; use {' or '.join(RESETS)}", where)
    if d["decay_form"] not in DECAY_FORMS:
        raise _Bad(f"unknown decay_form {d['decay_form']!r}; use {' or '.join(DECAY_FORMS)}", where)
    kw = {k: _num(d[k], f"neuron {k}", where) for k in NEURON_FLOATS}
    try:
        return Neuron(kind=d["kind"], reset=d["reset"], decay_form=d["decay_form"], **kw)
    except ModelError as e:
        raise _Bad(f"neuron parameters: {e}", where) from None


def _quant(d, neuron: Neuron, where) -> dict:
    q = {}
    q["bits"] = _intf(d["bits"], "bits", where, 8, 16)
    if q["bits"] not in QMAX:
        raise _Bad(f"bits = {q['bits']} is not 8 or 16", where)
    q["shift"] = _intf(d["shift"], "shift", where, -MAX_SHIFT, MAX_SHIFT)
    q["theta"] = _intf(d["theta"], "theta", where, 1 if neuron.spiking else 0, INT32_MAX)
    q["a_inc"] = _intf(d["a_inc"], "a_inc", where, 0, INT32_MAX)
    hi = DECAY_ONE if neuron.decay_form == "multiply" else Q24
    for k in ("dv", "di", "da"):
        q[k] = _intf(d[k], f"{k} ({neuron.decay_form}-form decay constant)", where, 0, hi)
    q["ref_steps"] = _intf(d["ref_steps"], "ref_steps", where, 0, INT32_MAX)
    q["pool_weight"] = _intf(d["pool_weight"], "pool_weight", where, -QMAX[16], QMAX[16])
    return q


def _shape(x, what, where, ndim=None):
    if not isinstance(x, list) or not x or not all(type(s) is int and s >= 1 for s in x) \
            or (ndim is not None and len(x) != ndim):
        raise _Bad(f"{what} must be a list of {ndim or 'one or more'} sizes >= 1, got {x!r}", where)
    return tuple(x)


def _conv_out(size, k, stride, pad, what, where):
    out = (size + 2 * pad - k) // stride + 1
    if out < 1:
        raise _Bad(f"{what}: kernel {k}, stride {stride}, padding {pad} leave no output from size {size}",
                   where)
    return out


def _check_array(blobs, used, name, shape, where):
    if name not in blobs:
        raise _Bad(f"the array table lacks {name!r}", where)
    a = blobs[name]
    used.add(name)
    if a.shape != tuple(shape):
        raise _Bad(f"array {name!r} has shape {a.shape}, the layer needs {tuple(shape)}", where)
    return a


def _check_float_weights(blobs, used, name, shape, where):
    a = _check_array(blobs, used, name, shape, where)
    if a.dtype != np.float32:
        raise _Bad(f"array {name!r} has dtype {a.dtype}, float weights are float32", where)
    if not np.all(np.isfinite(a)):
        bad = tuple(int(k) for k in np.argwhere(~np.isfinite(a))[0])
        raise _Bad(f"array {name!r} holds NaN or infinite weights (first at index {bad})", where)


def _check_int_weights(blobs, used, name, shape, bits, where):
    a = _check_array(blobs, used, name, shape, where)
    need = INT_DTYPE_OF_BITS[bits]
    if a.dtype.kind not in "iu":
        raise _Bad(f"array {name!r} has dtype {a.dtype}, {bits}-bit weights are {need}", where)
    qmax = QMAX[bits]
    if a.size and (a.min() < -qmax or a.max() > qmax):
        bad = tuple(int(k) for k in np.argwhere((a < -qmax) | (a > qmax))[0])
        raise _Bad(f"array {name!r} holds {int(a[bad])} at index {bad}, outside -{qmax}..{qmax} for "
                   f"{bits}-bit weights", where)
    if a.dtype != np.dtype(need):
        raise _Bad(f"array {name!r} has dtype {a.dtype}, {bits}-bit weights are {need}", where)


def _check_content(header, blobs) -> list:
    """Check a parsed header and its arrays; return per layer (kind, neuron, quant dict, in_shape)."""
    net = header["network"]
    if not isinstance(net["name"], str):
        raise _Bad(f"network name must be a string, got {net['name']!r}", "header network")
    in_shape = _shape(net["input_shape"], "input_shape", "header network")
    dt = _num(net["dt"], "dt", "header network")
    if not 0 < dt < math.inf:
        raise _Bad(f"dt = {dt} must be a finite number of seconds > 0", "header network")
    _intf(net["seed"], "seed", "header network", 0, 2**32 - 1)
    used = set()
    shape = in_shape
    n_layers = len(header["layers"])
    out = []
    for i, d in enumerate(header["layers"]):
        kind = d["kind"]
        where = f"layer {i} ({kind})"
        if kind not in LAYER_KEYS:
            raise _Bad(f"unknown layer kind {kind!r}; this edgesnn knows {', '.join(LAYER_KEYS)}", where)
        neuron = q = None
        if kind != "flatten":
            neuron = _neuron(d["neuron"], where + " neuron")
            if not neuron.spiking and i != n_layers - 1:
                raise _Bad("non-spiking 'li' neurons are only allowed in the last layer", where)
            q = _quant(d["quant"], neuron, where + " quant")
        elif i == n_layers - 1:
            raise _Bad("the last layer cannot be a Flatten", where)
        if "plastic" in d and not isinstance(d["plastic"], bool):
            raise _Bad(f"plastic must be true or false, got {d['plastic']!r}", where)
        n_in = math.prod(shape)
        if kind in ("dense", "recurrent"):
            n_out = _intf(d["n_out"], "n_out", where, 1, INT32_MAX)
            if kind == "recurrent" and not neuron.spiking:
                raise _Bad("recurrent layers need spiking neurons", where)
            expect = (n_out,)
            wshapes = [(n_out, n_in)] + ([(n_out, n_out)] if kind == "recurrent" else [])
        elif kind == "conv2d":
            c_out = _intf(d["c_out"], "c_out", where, 1, INT32_MAX)
            kh, kw = _shape(d["kernel"], "kernel", where, 2)
            stride = _intf(d["stride"], "stride", where, 1, INT32_MAX)
            pad = _intf(d["padding"], "padding", where, 0, INT32_MAX)
            if len(shape) != 3:
                raise _Bad(f"a conv2d layer needs a (c, h, w) input, gets {shape}", where)
            expect = (c_out, _conv_out(shape[1], kh, stride, pad, "height", where),
                      _conv_out(shape[2], kw, stride, pad, "width", where))
            wshapes = [(c_out, shape[0], kh, kw)]
        elif kind == "sumpool2d":
            k = _intf(d["kernel"], "kernel", where, 1, INT32_MAX)
            stride = _intf(d["stride"], "stride", where, 1, INT32_MAX)
            w = _num(d["weight"], "pool weight", where)
            if not math.isfinite(w) or float(np.float32(w)) != w:
                raise _Bad(f"pool weight {w!r} is not a finite float32 value", where)
            if len(shape) != 3:
                raise _Bad(f"a sumpool2d layer needs a (c, h, w) input, gets {shape}", where)
            expect = (shape[0], _conv_out(shape[1], k, stride, 0, "height", where),
                      _conv_out(shape[2], k, stride, 0, "width", where))
            wshapes = []
        else:
            expect = (n_in,)
            wshapes = []
        stated = _shape(d["out_shape"], "out_shape", where)
        if stated != expect:
            raise _Bad(f"out_shape {stated} does not follow from the layer and its input {shape}: it should "
                       f"be {expect}", where)
        names = weight_arrays(i, kind)
        n_w = len(wshapes)
        for name, ws in zip(names[:n_w], wshapes):
            _check_float_weights(blobs, used, name, ws, where)
        for name, ws in zip(names[n_w:], wshapes):
            _check_int_weights(blobs, used, name, ws, q["bits"], where)
        out.append((kind, neuron, q, shape))
        shape = expect
    extra = sorted(set(blobs) - used)
    if extra:
        raise _Bad(f"the array table lists {extra[0]!r}, which no layer uses", f"array {extra[0]!r}")
    return out


def _build(header, blobs, checked) -> FixedModel:
    """Build the model from checked content (the only place that makes objects for the caller)."""
    try:
        return _make(header, blobs, checked)
    except ModelError as e:
        raise _Bad(f"the network it describes is invalid: {e}", "header") from None


def _make(header, blobs, checked) -> FixedModel:
    layers, qlayers = [], []
    for i, (d, (kind, neuron, q, _)) in enumerate(zip(header["layers"], checked)):
        names = weight_arrays(i, kind)
        if kind == "dense":
            layer = Dense(weight=blobs[names[0]], neuron=neuron, plastic=d["plastic"])
        elif kind == "recurrent":
            layer = Recurrent(weight=blobs[names[0]], weight_rec=blobs[names[1]], neuron=neuron,
                              plastic=d["plastic"])
        elif kind == "conv2d":
            layer = Conv2d(weight=blobs[names[0]], stride=d["stride"], padding=d["padding"], neuron=neuron,
                           plastic=d["plastic"])
        elif kind == "sumpool2d":
            layer = SumPool2d(kernel=d["kernel"], stride=d["stride"], weight=_num(d["weight"], "", ""),
                              neuron=neuron)
        else:
            layer = Flatten()
        layers.append(layer)
        if kind == "flatten":
            qlayers.append(None)
            continue
        ints = names[len(names) // 2:]
        qlayers.append(LayerQ(
            shift=q["shift"], bits=q["bits"],
            weight=blobs[ints[0]] if ints else None,
            weight_rec=blobs[ints[1]] if len(ints) > 1 else None,
            pool_weight=q["pool_weight"], theta=q["theta"], a_inc=q["a_inc"], dv=q["dv"], di=q["di"],
            da=q["da"], ref_steps=q["ref_steps"]))
    net = header["network"]
    network = Network(tuple(net["input_shape"]), layers, dt=_num(net["dt"], "", ""), name=net["name"],
                      seed=net["seed"])
    return FixedModel(network, qlayers)
