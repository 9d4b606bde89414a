"""Long-document strategies, above the shifting-window engine: `window`, `map` (map-reduce), `auto`.

chunks.py cuts a tokenized document into citable chunks that fit a window; mapreduce.py is the map-reduce
as data (requests out, records in); strategies.py drives it through the engine for `sentiric run`, and
the server drives the same MapJob through its scheduler.
"""

from .chunks import Chunk, split
from .mapreduce import NOT_FOUND, LongRecord, MapJob, Partial, Phase
from .strategies import STRATEGIES, PhaseProgress, answer, run_pool

__all__ = ["NOT_FOUND", "STRATEGIES", "Chunk", "LongRecord", "MapJob", "Partial", "Phase", "PhaseProgress", "answer",
           "run_pool", "split"]
