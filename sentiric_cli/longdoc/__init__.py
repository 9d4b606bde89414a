"""Long-document strategies, above the shifting-window engine (issue 9, in progress).

So far: chunks.py splits a tokenized document into citable chunks that fit a window. The `map`
strategy (chunks read in parallel sequences, then reduced) builds on it.
"""

from .chunks import Chunk, split

__all__ = ["Chunk", "split"]
