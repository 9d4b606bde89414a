"""ggml's tensor types: id -> (name, elements per block, bytes per block).

A copy of gguf-py's GGML_QUANT_SIZES (ggml.h's type traits), so that reading a header needs neither the
gguf package nor numpy, which it imports: `sentiric plan` starts in a fraction of the time.
tests/test_gguf_header.py checks this table against the installed gguf package.
"""

from __future__ import annotations

GGUF_MAGIC = 0x46554747  # "GGUF", little-endian
DEFAULT_ALIGNMENT = 32

TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}
BY_NAME: dict[str, int] = {name: i for i, (name, _, _) in TYPES.items()}


def block(type_id: int) -> tuple[int, int]:
    """(elements per block, bytes per block); KeyError for a type this table does not know."""
    _, n, size = TYPES[type_id]
    return n, size


def named(name: str) -> tuple[int, int]:
    """A cache type's block by its name as settings write it (f16, q8_0 ...)."""
    return block(BY_NAME[name.upper()])
