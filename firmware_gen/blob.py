"""The weight blob: a FixedModel's flat program as one little-endian, checksummed binary that the C
runtime uses in place (esnn_model_from_blob points its model into it; nothing is copied).

    0    8   magic b"ESNNBLOB"
    8    u16 format version (1)          10  u16 header bytes (96)
    12   u32 total bytes (the whole blob, CRC included)
    16   u32 layers L                    20  u32 fields per layer row (25)     24  u32 fields per parameter row (6)
    28   u32 int8 weights n_wa           32  u32 int16 weights n_wb
    36   u32 state words n_vs            40  u32 state words n_ist             44  u32 flags (0)
    48   32  model hash (SHA-256, edgesnn.model.modelfile.model_hash)
    80   16  reserved (0)
    96   i32 ltab[L][25]    then, each at the next multiple of 16 (zero padding):
         i32 ptab[L][6],  i8 wa[n_wa],  i16 wb[n_wb];   zero padding to a multiple of 4
    end  u32 CRC32 (zlib) of every byte before it

docs/c_runtime.md states the format and what the loader checks.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace

import numpy as np

from edgesnn.errors import ModelError
from edgesnn.kernels import layout as K
from edgesnn.model.program import Program, build_fixed

MAGIC = b"ESNNBLOB"
VERSION = 1
HEADER_BYTES = 96
ALIGN = 16
HASH_BYTES = 32
HEADER = struct.Struct("<8sHHIIIIIIIII32s16s")
assert HEADER.size == HEADER_BYTES
I32_MIN, I32_MAX = -(2**31), 2**31 - 1


@dataclass(eq=False)
class Tables:
    """What the runtime's esnn_model_t holds, as numpy arrays of the C types."""

    ltab: np.ndarray   # int32 [L, 25]
    ptab: np.ndarray   # int32 [L, 6]
    wa: np.ndarray     # int8
    wb: np.ndarray     # int16
    n_vs: int
    n_ist: int
    hash: bytes        # 32 bytes

    @property
    def n_layers(self) -> int:
        return int(self.ltab.shape[0])

    @property
    def width(self) -> int:
        """The widest layer: the size of the runtime's accumulators."""
        return max(1, int(self.ltab[:, K.L_N_OUT].max()))

    @property
    def state_words(self) -> int:
        """esnn_state_bytes / 4: vs, ist, then width uint32 accumulators and width int16 partial sums."""
        return self.n_vs + self.n_ist + self.width + (self.width + 1) // 2


def _int32(a, what) -> np.ndarray:
    a = np.asarray(a, np.int64)
    if a.size and (a.min() < I32_MIN or a.max() > I32_MAX):
        raise ModelError(f"the {what} holds a value outside int32, which the C runtime's tables use; "
                         f"this model cannot run on the device")
    return a.astype(np.int32)


def model_hash_bytes(model) -> bytes:
    """The 32-byte SHA-256 identifying the model (the model file's hash, also used by the device protocol)."""
    from edgesnn.model.modelfile import model_hash
    return bytes.fromhex(model_hash(model))


def tables(model, program: Program | None = None) -> Tables:
    """The C runtime's tables of a FixedModel (its program from build_fixed unless given)."""
    p = build_fixed(model) if program is None else program
    if not p.fixed:
        raise ModelError("the C runtime runs fixed-point programs only (build_fixed)")
    if p.wa.size > 2**32 - 1 or p.wb.size > 2**32 - 1:
        raise ModelError("a weight pool holds more than 2^32 - 1 weights; the blob counts them in 32 bits")
    return Tables(_int32(p.ltab, "layer table"), _int32(p.ptab, "parameter table"),
                  np.ascontiguousarray(p.wa, np.int8), np.ascontiguousarray(p.wb, np.int16),
                  int(p.n_vs), int(p.n_ist), model_hash_bytes(model))


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def layout(n_layers: int, n_wa: int, n_wb: int) -> dict:
    """Byte offsets of the sections and the total length."""
    ltab = HEADER_BYTES
    ptab = _align(ltab + 4 * n_layers * K.NL, ALIGN)
    wa = _align(ptab + 4 * n_layers * K.NP, ALIGN)
    wb = _align(wa + n_wa, ALIGN)
    crc = _align(wb + 2 * n_wb, 4)
    return {"ltab": ltab, "ptab": ptab, "wa": wa, "wb": wb, "crc": crc, "total": crc + 4}


def pack_tables(t: Tables, *, version: int = VERSION, flags: int = 0) -> bytes:
    """The blob of some tables, as they are (tests use this to write inconsistent ones with a valid CRC)."""
    ltab = np.ascontiguousarray(t.ltab, "<i4")
    ptab = np.ascontiguousarray(t.ptab, "<i4")
    n_layers = ltab.shape[0]
    if ltab.shape != (n_layers, K.NL) or ptab.shape != (n_layers, K.NP) or len(t.hash) != HASH_BYTES:
        raise ModelError(f"tables of the wrong shape: ltab {ltab.shape}, ptab {ptab.shape}, hash {len(t.hash)}")
    at = layout(n_layers, t.wa.size, t.wb.size)
    out = bytearray(at["total"])
    HEADER.pack_into(out, 0, MAGIC, version, HEADER_BYTES, at["total"], n_layers, K.NL, K.NP, t.wa.size,
                     t.wb.size, t.n_vs, t.n_ist, flags, bytes(t.hash), bytes(16))
    for name, arr in (("ltab", ltab), ("ptab", ptab), ("wa", np.ascontiguousarray(t.wa, "i1")),
                      ("wb", np.ascontiguousarray(t.wb, "<i2"))):
        raw = arr.tobytes()
        out[at[name]:at[name] + len(raw)] = raw
    return with_crc(bytes(out))


def pack(model, program: Program | None = None) -> bytes:
    """The weight blob of a FixedModel."""
    return pack_tables(tables(model, program))


def with_crc(data: bytes) -> bytes:
    """The same bytes with the CRC32 trailer recomputed."""
    body = bytes(data[:-4])
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def unpack(data: bytes) -> Tables:
    """Read the tables back (layout only: the C loader is the one that checks a blob completely)."""
    (magic, version, hbytes, total, n_layers, nl, np_, n_wa, n_wb, n_vs, n_ist, flags, digest,
     _reserved) = HEADER.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION or hbytes != HEADER_BYTES or total != len(data) \
            or (nl, np_) != (K.NL, K.NP):
        raise ModelError("not a version-1 weight blob, or truncated")
    at = layout(n_layers, n_wa, n_wb)

    def arr(name, dtype, count, shape=None):
        a = np.frombuffer(data, dtype, count, at[name]).copy()
        return a.reshape(shape) if shape else a

    return Tables(arr("ltab", "<i4", n_layers * K.NL, (n_layers, K.NL)).astype(np.int32),
                  arr("ptab", "<i4", n_layers * K.NP, (n_layers, K.NP)).astype(np.int32),
                  arr("wa", "i1", n_wa).astype(np.int8), arr("wb", "<i2", n_wb).astype(np.int16),
                  n_vs, n_ist, digest)


def modified(t: Tables, **changes) -> Tables:
    """A copy of the tables with fields replaced (arrays copied, so the original stays as it was)."""
    base = replace(t, ltab=t.ltab.copy(), ptab=t.ptab.copy(), wa=t.wa.copy(), wb=t.wb.copy())
    return replace(base, **changes)
