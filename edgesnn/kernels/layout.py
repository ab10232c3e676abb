"""The flat program the kernels execute: field numbers of the layer table and the parameter table.

A program is
  ltab  int64[L, NL]   one row per layer: kinds, sizes, offsets into the pools below
  ptab  num[L, NP]     one row per layer: decay constants, threshold, adaptation step, pool weight
                       (int64 in fixed point, float32 in the float twin)
  wa    weight pool 0  int8 (fixed) or float32 (float)
  wb    weight pool 1  int16 (fixed, plastic layers) or an empty float32 array
and its state is
  vs    num[NV]        membrane v, synaptic current i, adaptation a of every layer (int32 or float32)
  ist   int32[NI]      refractory counters, the spike lists of every layer, then one spike count per layer
The C runtime (firmware_gen) uses the same table layout, so a weight blob can carry it to a device.
"""

# layer kinds
DENSE, CONV2D, SUMPOOL2D, FLATTEN, RECURRENT = 0, 1, 2, 3, 4
LAYER_CODES = {"dense": DENSE, "conv2d": CONV2D, "sumpool2d": SUMPOOL2D, "flatten": FLATTEN,
               "recurrent": RECURRENT}

# neuron kinds (NONE for Flatten)
LIF, IF, CUBA, ALIF, LI, NONE = 0, 1, 2, 3, 4, -1
NEURON_CODES = {"lif": LIF, "if": IF, "cuba": CUBA, "alif": ALIF, "li": LI}

RESET_SUBTRACT, RESET_ZERO = 0, 1

# ltab fields
(L_KIND, L_NEURON, L_N_IN, L_N_OUT,
 L_IN_C, L_IN_H, L_IN_W, L_OUT_C, L_OUT_H, L_OUT_W,
 L_KH, L_KW, L_STRIDE, L_PAD,
 L_W_POOL, L_W_OFF, L_WREC_OFF,
 L_V_OFF, L_I_OFF, L_A_OFF, L_R_OFF, L_S_OFF,
 L_RESET, L_REF_STEPS, L_DECAY_FORM) = range(25)
NL = 25

# ptab fields
P_DV, P_DI, P_DA, P_THETA, P_A_INC, P_POOL_W = range(6)
NP = 6

LTAB_NAMES = ("kind", "neuron", "n_in", "n_out", "in_c", "in_h", "in_w", "out_c", "out_h", "out_w",
              "kh", "kw", "stride", "pad", "w_pool", "w_off", "wrec_off", "v_off", "i_off", "a_off",
              "r_off", "s_off", "reset", "ref_steps", "decay_form")
PTAB_NAMES = ("dv", "di", "da", "theta", "a_inc", "pool_w")

# status codes returned by the step kernels (the C runtime returns the same numbers)
OK = 0
ERR_INPUT_INDEX = -1
ERR_INPUT_COUNT = -2
MAX_EVENTS_PER_STEP = 65535
