"""Decoders: from a run's outputs to a class, a confidence in [0, 1] and per-class scores.

    d = decode_count(rec.out_spikes)                  # Decision(label, confidence, scores)
    label, confidence, scores = decode_membrane(rec.out_v, shift=8)
    db = decode_count_batch(out_spikes)               # (B, T, n_out) -> DecisionBatch of arrays
    db.accuracy(targets)

Inputs are what ``Simulator.run`` (out_spikes int8 (T, n_out), out_v (T, n_out)) and ``Simulator.run_batch``
((B, T, n_out)) produce; a Record, or the (out_spikes, out_v) pair of run_batch, is accepted too. Fixed
(int32) and float (float32) runs are decoded by the same rules; docs/encoding.md states them.

Rules (scores are per class; the label is their argmax with the stated tie-breaks; -1 = no decision):
- count / population: score = spike count of the class (population: neurons c*group .. c*group+group-1
  summed). Ties: lowest index. No output spike at all: label -1, confidence 0. confidence = top count /
  all output spikes.
- first spike: score = n_steps - (first step the class spikes), 0 if it never spikes. Ties: more spikes
  in the run, then lowest index. No spike: -1, confidence 0. confidence = (winner's score - best other
  score) / n_steps, i.e. how many steps earlier than any other class it spiked, as a share of the run.
- membrane (leaky-integrator readout): score = max (or final, or mean) membrane over time. Ties: lowest
  index. confidence = softmax(score * 2^-shift / temperature)[label] (shift: the fraction bits of a fixed
  membrane; 0 for float).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

REDUCTIONS = ("max", "final", "mean")


@dataclass(frozen=True, eq=False)
class Decision:
    """The decision on one sample: label (-1: none), confidence in [0, 1], scores per class."""

    label: int
    confidence: float
    scores: np.ndarray

    def __iter__(self):
        return iter((self.label, self.confidence, self.scores))


@dataclass(frozen=True, eq=False)
class DecisionBatch:
    """Decisions on B samples: labels int64 (B,), confidence float64 (B,), scores (B, n_classes)."""

    labels: np.ndarray
    confidence: np.ndarray
    scores: np.ndarray

    def __len__(self):
        return self.labels.shape[0]

    def __getitem__(self, b) -> Decision:
        return Decision(int(self.labels[b]), float(self.confidence[b]), self.scores[b])

    def __iter__(self):
        return (self[b] for b in range(len(self)))

    def accuracy(self, targets) -> float:
        """Share of samples whose label equals the target (label -1 is always wrong)."""
        t = np.asarray(targets)
        if t.shape != self.labels.shape:
            raise InputError(f"targets must be ({len(self)},), got shape {t.shape}")
        return float(np.mean(self.labels == t)) if t.size else 0.0


# ============================================================== input checks

def _pick(x, attr, pos):
    if hasattr(x, attr):  # a Record
        x = getattr(x, attr)
    elif isinstance(x, tuple) and len(x) == 2:  # (out_spikes, out_v) of run_batch
        x = x[pos]
    if x is None:
        raise InputError(f"the run did not record {attr}")
    return np.asarray(x)


def _shape(a, ndim, what):
    if a.ndim != ndim:
        form = "(T, n_out)" if ndim == 2 else "(B, T, n_out)"
        raise InputError(f"{what} must be {form}, got shape {a.shape}"
                         + ("; use the _batch form for (B, T, n_out)" if ndim == 2 and a.ndim == 3 else "")
                         + ("; the single-sample form takes (T, n_out)" if ndim == 3 and a.ndim == 2 else ""))
    if a.shape[-1] < 1:
        raise InputError(f"{what} has no output neurons (shape {a.shape})")


def _spikes(x, ndim):
    a = _pick(x, "out_spikes", 0)
    _shape(a, ndim, "out_spikes")
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        raise InputError(f"out_spikes must hold integer spike counts, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise InputError("out_spikes holds negative values: pass spikes (0/1 or counts), not membranes")
    return a if ndim == 3 else a[None]


def _membrane(x, ndim):
    a = _pick(x, "out_v", 1)
    _shape(a, ndim, "out_v")
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.int64)
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)  # float32 -> float64 is exact
        if not np.all(np.isfinite(a)):
            raise InputError("out_v holds NaN or infinite values")
    else:
        raise InputError(f"out_v must be integer (fixed) or float, got dtype {a.dtype}")
    if a.shape[-2] < 1:
        raise InputError("out_v has no time steps: the membrane decoder needs at least one")
    return a if ndim == 3 else a[None]


def _group(n_out, group):
    if isinstance(group, (bool, np.bool_)) or not isinstance(group, (int, np.integer)) or group < 1:
        raise InputError(f"group must be an integer >= 1, got {group!r}")
    if n_out % group:
        raise InputError(f"group={group} does not divide the {n_out} output neurons: n_out must be "
                         f"n_classes * group")
    return int(group)


# ============================================================== count / population

def decode_population_batch(out_spikes, group: int) -> DecisionBatch:
    """Classes of `group` consecutive output neurons (class c: neurons c*group .. c*group+group-1);
    score = summed spike count; label = argmax (ties: lowest class; no spike: -1);
    confidence = top score / all output spikes (0 with no spike)."""
    s = _spikes(out_spikes, 3)
    B, _, n = s.shape
    g = _group(n, group)
    counts = s.sum(axis=1).reshape(B, n // g, g).sum(axis=2)
    total = counts.sum(axis=1)
    label = np.argmax(counts, axis=1)  # first maximum: the lowest index
    top = counts[np.arange(B), label]
    silent = total == 0
    conf = np.where(silent, 0.0, top / np.where(silent, 1, total))
    return DecisionBatch(np.where(silent, -1, label).astype(np.int64), conf.astype(np.float64), counts)


def decode_population(out_spikes, group: int) -> Decision:
    return decode_population_batch(_spikes(out_spikes, 2), group)[0]


def decode_count_batch(out_spikes) -> DecisionBatch:
    """One class per output neuron: label = argmax of spike counts (see decode_population_batch)."""
    return decode_population_batch(out_spikes, 1)


def decode_count(out_spikes) -> Decision:
    return decode_population_batch(_spikes(out_spikes, 2), 1)[0]


# ============================================================== first spike

def decode_first_spike_batch(out_spikes) -> DecisionBatch:
    """label = the neuron that spikes first; ties: more spikes, then lowest index; no spike: -1.
    scores = n_steps - first spike step (0: never); confidence = (top score - best other) / n_steps."""
    s = _spikes(out_spikes, 3)
    B, T, n = s.shape
    fired = s > 0
    if T:
        first = np.where(fired.any(axis=1), np.argmax(fired, axis=1), T)
    else:
        first = np.zeros((B, n), np.int64)
    score = (T - first).astype(np.int64)
    counts = s.sum(axis=1)
    best = score.max(axis=1)
    label = np.argmax(np.where(score == best[:, None], counts, -1), axis=1)  # lowest index of the max count
    others = np.where(np.arange(n)[None, :] == label[:, None], 0, score).max(axis=1)
    silent = best == 0
    conf = np.where(silent, 0.0, (best - others) / max(T, 1))
    return DecisionBatch(np.where(silent, -1, label).astype(np.int64), conf.astype(np.float64), score)


def decode_first_spike(out_spikes) -> Decision:
    return decode_first_spike_batch(_spikes(out_spikes, 2))[0]


# ============================================================== max membrane

def softmax_confidence(scores, label, shift: int = 0, temperature: float = 1.0) -> np.ndarray:
    """softmax(scores * 2^-shift / temperature)[label] per row, in float64 (max subtracted first)."""
    z = np.ldexp(np.asarray(scores, np.float64), -shift) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    return p[np.arange(z.shape[0]), label]


def decode_membrane_batch(out_v, reduce: str = "max", shift: int = 0, temperature: float = 1.0) -> DecisionBatch:
    """Leaky-integrator readout: score = max (or final, or mean) membrane over time per neuron; label =
    argmax (ties: lowest index); confidence = softmax(scores * 2^-shift / temperature)[label].
    Integer (fixed) membranes: pass shift = their fraction bits so the softmax sees real values."""
    if reduce not in REDUCTIONS:
        raise InputError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if isinstance(shift, (bool, np.bool_)) or not isinstance(shift, (int, np.integer)) or abs(shift) > 1000:
        raise InputError(f"shift must be an integer (the scale is 2^-shift), got {shift!r}")
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, (int, float, np.integer, np.floating)) \
            or not math.isfinite(temperature) or not temperature > 0:
        raise InputError(f"temperature must be a finite number > 0, got {temperature!r}")
    v = _membrane(out_v, 3)
    T = v.shape[1]
    if reduce == "max":
        key = v.max(axis=1)
        scores = key.astype(np.float64)
    elif reduce == "final":
        key = v[:, -1]
        scores = key.astype(np.float64)
    else:
        key = v.sum(axis=1)  # exact in int64 for fixed runs; argmax on the sum, not the rounded mean
        scores = key.astype(np.float64) / T
    label = np.argmax(key, axis=1)
    conf = softmax_confidence(scores, label, int(shift), float(temperature))
    return DecisionBatch(label.astype(np.int64), conf, scores)


def decode_membrane(out_v, reduce: str = "max", shift: int = 0, temperature: float = 1.0) -> Decision:
    return decode_membrane_batch(_membrane(out_v, 2), reduce, shift, temperature)[0]
