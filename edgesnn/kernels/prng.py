"""The one PRNG of the numeric contract: xoshiro128** (Blackman and Vigna), seeded by splitmix32.

32-bit operations only, so the same sequence comes out of Numba, pure Python and the C runtime on a
Cortex-M0+. A generator is four uint32 words; ``seed_state(seed, stream)`` derives independent streams
from the model seed (stream = sample index, encoder channel group, learning rule, ...).
"""
import numpy as np
from numba import njit

MASK = 0xFFFFFFFF
GOLDEN = 0x9E3779B9
STREAM_MUL = 0x632BE5AB


@njit(cache=True)
def _rotl(x, k):
    return ((x << k) | (x >> (32 - k))) & MASK


@njit(cache=True)
def next_u32(s):
    """Advance the state ``s`` (uint32[4]) and return the next 32-bit output."""
    s0 = np.uint64(s[0]); s1 = np.uint64(s[1]); s2 = np.uint64(s[2]); s3 = np.uint64(s[3])
    result = (_rotl((s1 * 5) & MASK, 7) * 9) & MASK
    t = (s1 << 9) & MASK
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 11)
    s[0] = s0; s[1] = s1; s[2] = s2; s[3] = s3
    return np.uint32(result)


@njit(cache=True)
def seed_into(s, seed, stream):
    """Fill ``s`` from a 32-bit seed and a 32-bit stream id (splitmix32; an all-zero state becomes 1)."""
    x = (np.uint64(seed) ^ ((np.uint64(stream) * STREAM_MUL) & MASK)) & MASK
    for i in range(4):
        x = (x + GOLDEN) & MASK
        z = x
        z = ((z ^ (z >> 16)) * 0x85EBCA6B) & MASK
        z = ((z ^ (z >> 13)) * 0xC2B2AE35) & MASK
        s[i] = z ^ (z >> 16)
    if s[0] == 0 and s[1] == 0 and s[2] == 0 and s[3] == 0:
        s[0] = 1


def seed_state(seed: int, stream: int = 0) -> np.ndarray:
    s = np.zeros(4, np.uint32)
    seed_into(s, seed & MASK, stream & MASK)
    return s


@njit(cache=True)
def bernoulli_q16(s, p_q16):
    """True with probability p_q16 / 65536: the top 16 bits of the next output below p_q16."""
    return (next_u32(s) >> 16) < p_q16


class PyPrng:
    """Pure-Python transcription, for tests and for reading the contract."""

    def __init__(self, seed: int, stream: int = 0):
        x = (seed ^ ((stream * STREAM_MUL) & MASK)) & MASK
        self.s = []
        for _ in range(4):
            x = (x + GOLDEN) & MASK
            z = ((x ^ (x >> 16)) * 0x85EBCA6B) & MASK
            z = ((z ^ (z >> 13)) * 0xC2B2AE35) & MASK
            self.s.append(z ^ (z >> 16))
        if not any(self.s):
            self.s[0] = 1

    def next_u32(self) -> int:
        s0, s1, s2, s3 = self.s
        rotl = lambda x, k: ((x << k) | (x >> (32 - k))) & MASK
        result = (rotl((s1 * 5) & MASK, 7) * 9) & MASK
        t = (s1 << 9) & MASK
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t
        self.s = [s0, s1, s2, rotl(s3, 11)]
        return result
