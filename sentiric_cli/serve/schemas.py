"""Request bodies of the OpenAI API (and llama.cpp's extensions to it), as pydantic models.

Unknown fields are ignored, as OpenAI's SDKs send fields this server has no use for (`user`, `store`, ...).
Shapes are checked here; meanings (a part type we cannot read, a schema we cannot compile) in conversions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

# stop strings are checked after every token of every request: a few, of a sane length (OpenAI takes 4)
MAX_STOPS, MAX_STOP_CHARS = 16, 256
Stop = Annotated[str, Field(max_length=MAX_STOP_CHARS)]


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Part(BaseModel):
    """One part of a message's content; only text parts are read (messages.py says which others are refused)."""
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class FunctionCall(_Loose):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCall(_Loose):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Loose):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[Part] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class Function(_Loose):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Loose):
    type: Literal["function"]
    function: Function


class NamedFunction(_Loose):
    name: str


class NamedToolChoice(_Loose):
    type: Literal["function"]
    function: NamedFunction


class LongDocument(BaseModel):
    """The `sentiric` extension: a document answered with a long-document strategy (docs/serve.md)."""
    model_config = ConfigDict(extra="forbid")
    document: str = Field(min_length=1)
    strategy: Literal["auto", "window", "map"] | None = None
    kind: Literal["lookup", "list", "overview", "yesno"] | None = None  # None: from the question's wording


class StreamOptions(_Loose):
    include_usage: StrictBool = False


class Sampling(_Loose):
    """What completions, chat and responses share: sampling, length, structured output."""
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=1_048_576)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, ge=0.0, le=10.0)
    # prompt-lookup drafting for this request (engine/draft.py): most tokens checked per step; 0 = off
    draft_tokens: int | None = Field(None, ge=0, le=64)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repeat_last_n: int | None = Field(None, ge=-1)  # llama.cpp's: the tokens the penalties look back over; -1: the context
    # OpenAI's {"token id": bias}; llama-server's also {"text": bias} and [[id or text, bias or false], ...]
    logit_bias: dict[str, float | bool] | list[tuple[int | str, float | bool]] | None = None
    seed: int | None = None
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = None
    stream: StrictBool = False  # "yes" is not a boolean
    stream_options: StreamOptions | None = None
    grammar: str | None = None  # llama.cpp: GBNF
    json_schema: dict[str, Any] | None = None  # llama.cpp: output follows this JSON schema
    # sampling fields other servers know and this one does not apply: a 400 naming them (drive.unsupported) when
    # set to anything but their neutral value, never silently dropped
    typical_p: float | None = None
    tfs_z: float | None = None
    mirostat: int | None = None
    dynatemp_range: float | None = None
    xtc_probability: float | None = None
    dry_multiplier: float | None = None
    top_n_sigma: float | None = None
    ignore_eos: bool | None = None
    best_of: int | None = None
    echo: bool | None = None
    suffix: str | None = None


class _Common(Sampling):
    n: int = Field(1, ge=1, le=128)
    sentiric: LongDocument | None = None


class CompletionBody(_Common):
    # a text, texts, token ids, lists of token ids (completions.prompts); llama-server's texts and ids mixed
    prompt: str | list[int | str | list[int | str]]
    logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    return_tokens_as_token_ids: bool | None = None  # vLLM's: logprobs name tokens `token_id:N`
    # sentiric's, with echo: the prompt's log-probabilities from this token on (those before it null), so scoring
    # a continuation does not pay for its context's (one vocabulary-wide row per scored token)
    logprobs_from: int | None = Field(None, ge=0)


class ChatBody(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_048_576)
    response_format: dict[str, Any] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool = True
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class ResponseInputItem(_Loose):
    type: Literal["message"] = "message"
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[Part]


class ResponseText(_Loose):
    format: dict[str, Any] | None = None


class ResponsesBody(Sampling):
    input: str | list[ResponseInputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=1_048_576)
    text: ResponseText | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None


class EmbeddingBody(_Loose):
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)


class TokenizeBody(_Loose):
    content: str
    add_special: StrictBool = False
    parse_special: StrictBool = True
    with_pieces: StrictBool = False


class DetokenizeBody(_Loose):
    tokens: list[int]
