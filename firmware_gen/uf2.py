#!/usr/bin/env python3
"""UF2 images (Microsoft's USB flashing format, github.com/microsoft/uf2): binary -> .uf2.

    python3 uf2.py firmware.bin firmware.uf2 --base 0x10000000 --family 0xE48BFF56

Every 512-byte block: magic 0x0A324655, magic 0x9E5D5157, flags (0x2000: the family ID field is set),
target address, payload size (256), block number, number of blocks, family ID, 476 bytes of data (the
payload, zero padded), magic 0x0AB16F30; all little-endian. Standard library only: exported projects
carry a copy (tools/uf2conv.py) so that their Makefile needs nothing but Python 3.
"""
import argparse
import struct
import sys

MAGIC_START0 = 0x0A324655
MAGIC_START1 = 0x9E5D5157
MAGIC_END = 0x0AB16F30
FLAG_FAMILY_ID = 0x00002000
PAYLOAD = 256
BLOCK = 512
FAMILY_RP2040 = 0xE48BFF56


def convert(data: bytes, base: int, family: int, payload: int = PAYLOAD) -> bytes:
    """The UF2 image of ``data`` to be written at ``base`` (a multiple of ``payload``)."""
    if base % payload:
        raise ValueError(f"base address {base:#x} is not a multiple of the {payload}-byte payload")
    if not data:
        raise ValueError("nothing to convert: the binary is empty")
    n = (len(data) + payload - 1) // payload
    out = bytearray()
    for i in range(n):
        chunk = data[i * payload:(i + 1) * payload].ljust(payload, b"\0")
        head = struct.pack("<8I", MAGIC_START0, MAGIC_START1, FLAG_FAMILY_ID, base + i * payload, payload,
                           i, n, family)
        block = head + chunk.ljust(BLOCK - 32 - 4, b"\0") + struct.pack("<I", MAGIC_END)
        assert len(block) == BLOCK
        out += block
    return bytes(out)


def parse(image: bytes):
    """Blocks of a UF2 image as (address, payload bytes, block number, number of blocks, family);
    raises ValueError on a malformed block."""
    if len(image) % BLOCK:
        raise ValueError(f"a UF2 image is a whole number of {BLOCK}-byte blocks, got {len(image)} bytes")
    blocks = []
    for off in range(0, len(image), BLOCK):
        m0, m1, flags, addr, size, no, total, family = struct.unpack_from("<8I", image, off)
        (end,) = struct.unpack_from("<I", image, off + BLOCK - 4)
        if (m0, m1, end) != (MAGIC_START0, MAGIC_START1, MAGIC_END):
            raise ValueError(f"block {off // BLOCK}: bad magic numbers")
        if size > BLOCK - 32 - 4:
            raise ValueError(f"block {off // BLOCK}: payload size {size} too large")
        blocks.append((addr, image[off + 32:off + 32 + size], no, total,
                       family if flags & FLAG_FAMILY_ID else None))
    return blocks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Convert a flat binary into a UF2 image.")
    ap.add_argument("binary")
    ap.add_argument("output")
    ap.add_argument("--base", type=lambda s: int(s, 0), required=True, help="flash address of the binary")
    ap.add_argument("--family", type=lambda s: int(s, 0), default=FAMILY_RP2040,
                    help="UF2 family ID (default 0xE48BFF56, RP2040)")
    args = ap.parse_args(argv)
    with open(args.binary, "rb") as f:
        data = f.read()
    out = convert(data, args.base, args.family)
    with open(args.output, "wb") as f:
        f.write(out)
    print(f"{args.output}: {len(out) // BLOCK} blocks, {len(data)} bytes at {args.base:#x}, "
          f"family {args.family:#x}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
