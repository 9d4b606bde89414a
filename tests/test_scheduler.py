"""The scheduler in-process (no HTTP): which free slot a request takes, and what of its prompt is not read again."""

from __future__ import annotations

import asyncio

from sentiric_cli.engine import Engine, Record, Request
from sentiric_cli.scheduler import Scheduler
from sentiric_cli.settings import Settings


def test_a_prompt_sent_again_finds_its_slot_after_other_prompts_and_is_not_read_again(synth):
    """A prompt that no free slot holds most of takes the slot idle longest, so a prompt sent again later (a
    system prompt, a returning conversation) still finds the slot it left. A continuation takes its slot too."""
    path = synth("llama", n_layer=1, n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_vocab=512)
    with Engine(Settings(context_size=512, threads=4), path) as e:
        m = e.model
        sched = Scheduler(e, 8)
        prompts = [[m.bos] + m.tokenize(f"Chapter {i}. The old lighthouse keeper climbed the stairs") for i in range(3)]

        async def ask(prompt: list[int]) -> Record:
            job = sched.submit(Request(head=prompt, max_tokens=4, temperature=0.0), stream=False)
            got = None
            while (ev := await job.events.get()) is not None:
                if isinstance(ev, Record):
                    got = ev
            return got

        async def main() -> list[Record]:
            return [await ask(p) for p in (*prompts, prompts[0], prompts[2], prompts[1] + m.tokenize(" again"))]

        try:
            records = asyncio.run(main())
        finally:
            sched.shutdown(5)
    first = records[:3]
    assert all(r.reused_tokens < len(prompts[0]) // 2 for r in first)  # only "<bos>Chapter " in common
    again0, again2, more1 = records[3:]
    assert again0.reused_tokens == len(prompts[0]) - 1  # all of it but the last token, read for its logits
    assert again2.reused_tokens == len(prompts[2]) - 1
    assert more1.reused_tokens >= len(prompts[1])  # a continuation: the whole earlier prompt
