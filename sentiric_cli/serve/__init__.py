"""`sentiric serve`: the OpenAI-compatible HTTP API over the scheduler.

    app.py          the FastAPI app: CORS, errors, health/models/tokenize; guard.py: body limit and key
    protocol.py     uvicorn's h11 protocol with a deadline for request heads
    schemas.py      request bodies
    messages.py     chat messages -> prompt tokens (template.py: the model's Jinja template)
    grammar.py      structured output -> GBNF;  tools.py: tool calls in and out
    completions.py  /v1/chat/completions, /v1/completions;  responses.py: /v1/responses
    embeddings.py   /v1/embeddings;  longdoc.py: the `sentiric` long-document field
    drive.py        one request through the scheduler;  shapes.py: OpenAI's response pieces
    command.py      the `sentiric serve` command
"""
