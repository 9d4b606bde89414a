"""Long-document strategies, above the shifting-window engine: `window`, `map` (map-reduce), `auto`.

chunks.py cuts a tokenized document into citable chunks that fit a window; mapreduce.py is the map-reduce
as a protocol without I/O (rounds of requests out, records in); strategies.py drives it through the engine's
slot loop for `sentiric run`, serve/longdoc.py through the server's scheduler.
"""

from sentiric_cli.longdoc.chunks import Chunk, split
from sentiric_cli.longdoc.mapreduce import NOT_FOUND, LongRecord, MapJob, Partial, Phase
from sentiric_cli.longdoc.strategies import STRATEGIES, PhaseProgress, answer

__all__ = ["NOT_FOUND", "STRATEGIES", "Chunk", "LongRecord", "MapJob", "Partial", "Phase", "PhaseProgress", "answer",
           "split"]
