"""Front-ends: spike encoders (signals -> Events) and decoders (output spikes / membranes -> classes).

The rules are stated for the C port in docs/encoding.md.
"""
from .decoders import (Decision, DecisionBatch, decode_count, decode_count_batch, decode_first_spike,
                       decode_first_spike_batch, decode_membrane, decode_membrane_batch, decode_population,
                       decode_population_batch, softmax_confidence)
from .encoders import (Q16_ONE, STREAM_RATE, DeltaEncoder, LatencyLaw, RateEncoder, delta_encode,
                       delta_encode_fixed, events_from_raster, latency_encode, latency_encode_fixed,
                       latency_table, rate_encode, rate_encode_fixed, rate_stream, to_raster)

__all__ = [
    "Q16_ONE", "STREAM_RATE", "rate_stream", "RateEncoder", "rate_encode", "rate_encode_fixed",
    "LatencyLaw", "latency_table", "latency_encode", "latency_encode_fixed",
    "DeltaEncoder", "delta_encode", "delta_encode_fixed", "to_raster", "events_from_raster",
    "Decision", "DecisionBatch", "decode_count", "decode_count_batch", "decode_population",
    "decode_population_batch", "decode_first_spike", "decode_first_spike_batch", "decode_membrane",
    "decode_membrane_batch", "softmax_confidence",
]
