"""How real model servers differ on the wire, one `Personality` each, for the fake to imitate.

Each fact names where it was read: a file in the server's own repository, or an issue. Where a
server has changed over time, the entry says which version it follows. `FakeLlm(like=...)` reads
these fields; the shapes are built in `fake_llm.py`, the wording of each server's errors here.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

ToolCallStream = Literal["pieces", "whole"]
StreamUsage = Literal["own_chunk", "last_chunk_with_choices", "never"]
Overflow = Literal["openai", "vllm", "litellm", "llamacpp", "truncate"]
ContextEndpoint = Literal["none", "models_field", "props", "api_show", "model_info"]


@dataclass(frozen=True, kw_only=True)
class Personality:
    """What one server does where servers disagree on chat; `FakeLlm` consults nothing else
    (its `/v1/embeddings` follows an `EmbeddingServer`, below)."""

    name: str
    imitates: str  # the server and version these facts were read from

    # Tool calls in a stream: in "pieces" (id and name, then the arguments a few characters at
    # a time) or "whole" (each call complete in one chunk).
    tool_call_stream: ToolCallStream = "pieces"
    first_delta_has_arguments: bool = True  # OpenAI opens a call with `"arguments": ""`
    id_on_every_delta: bool = False
    name_on_every_delta: bool = False
    legacy_function_call: bool = False  # also mirror the call as the old `function_call` field
    content_null_with_tools: bool = False  # a tool-call answer's content is null, not ""
    tool_call_id: str = "call_{cmpl}_{index}"  # cmpl, completion, index, name, hex8/16/24

    # Usage in a stream: "own_chunk" (after the finish chunk, `choices: []`, only when asked by
    # stream_options.include_usage), "last_chunk_with_choices" (likewise asked, but the chunk
    # keeps a placeholder choice) or "never" (stream_options ignored). Unstreamed: always.
    stream_usage: StreamUsage = "own_chunk"

    # tool_choice: what a missing one means, whether it is read at all, and whether a streamed
    # answer may choose a tool by itself.
    missing_tool_choice: Literal["auto", "none"] = "auto"
    reads_tool_choice: bool = True
    streams_chosen_tools: bool = True

    # The context window: its default size, how the server counts (None: tiktoken, as OpenAI
    # does; else characters per token, a deterministic stand-in for the model's own tokenizer),
    # what an overflow gets, and where the size can be asked for.
    context_tokens: int = 8192
    chars_per_token: float | None = None
    template_tokens_per_message: int = 3
    overflow: Overflow = "openai"
    context_endpoint: ContextEndpoint = "none"

    # Concurrency: None serves every request at once; 1 is one model behind one lock.
    slots: int | None = None
    interrupts_streams: bool = False  # a waiting request ends the running stream early

    # llama.cpp serves its one model whatever the request names; the others answer 404 to a
    # model they do not serve (vLLM: "The model `x` does not exist.", NotFoundError)
    answers_any_model: bool = False

    reasoning_models: bool = False  # o1/o3/o4/gpt-5 names refuse max_tokens and temperature
    usage_details: bool = False  # usage carries prompt_tokens_details (cached tokens)


PERSONALITIES: dict[str, Personality] = {
    # OpenAI's API. Its streaming docs for include_usage (quoted in BerriAI/litellm#8450): "an
    # additional chunk … before the data: [DONE] message … the choices field will always be an
    # empty array". Errors are {"error": {message, type, param, code}}; the reasoning models'
    # 400s ("unsupported_parameter", "unsupported_value") and the overflow's
    # "context_length_exceeded" are as clients quote the live API verbatim (not read from
    # OpenAI's own source, which is not public). No context-length endpoint exists.
    "openai": Personality(
        name="openai",
        imitates="api.openai.com /v1/chat/completions",
        content_null_with_tools=True,
        context_tokens=128_000,
        reasoning_models=True,
        usage_details=True,
    ),
    # vLLM (vllm/entrypoints/openai/chat_completion/serving.py, tool parsers): a call opens with
    # {"id": "chatcmpl-tool-…", "type", "index", "function": {"name"}} and no arguments key;
    # usage only with stream_options.include_usage. Overflow is a 400 before any streaming,
    # worded as vllm/entrypoints/openai/engine/serving.py (0.19) and renderers/params.py (0.2x)
    # do, body {"error": {message, "type": "BadRequestError", "param": "input_tokens",
    # "code": 400}} (engine/protocol.py ErrorInfo). `/v1/models` entries carry `max_model_len`.
    "vllm": Personality(
        name="vllm",
        imitates="vLLM 0.19+ OpenAI-compatible server",
        first_delta_has_arguments=False,
        content_null_with_tools=True,
        tool_call_id="chatcmpl-tool-{hex16}",  # entrypoints/chat_utils.py make_tool_call_id
        chars_per_token=3.6,
        overflow="vllm",
        context_endpoint="models_field",
    ),
    # Ollama (openai/openai.go, middleware/openai.go at 2026-08, after #17485): each tool call
    # arrives whole in one chunk with its `index` (added in v0.4.7, #7888; older versions sent
    # none); the usage chunk has `choices: []` (v0.5.2, #6784) after its own finish chunk.
    # `tool_choice` is not a field of its request (openai.go ChatCompletionRequest): ignored.
    # Overflow is silent: server/prompt.go chatPrompt and routes.go truncateNativeChatMessages
    # drop the oldest messages (keeping system messages and the newest one) until the prompt
    # fits num_ctx. The default num_ctx is 4096 (envconfig "4k/32k/256k based on VRAM").
    # `POST /api/show` reports the model's trained length, `GET /api/ps` the loaded one.
    "ollama": Personality(
        name="ollama",
        imitates="Ollama /v1 compatibility layer, 2026-08",
        tool_call_stream="whole",
        tool_call_id="call_{hex8}",  # the shape, not read from source: unconfirmed
        reads_tool_choice=False,
        context_tokens=4096,
        chars_per_token=2.7,
        overflow="truncate",
        context_endpoint="api_show",
    ),
    # LiteLLM proxy in front of an OpenAI-compatible upstream. Streamed tool calls repeat `id`
    # and `type` on every delta (BerriAI/litellm#20480). With include_usage, usage rides a last
    # chunk that keeps a placeholder choice {"index": 0, "delta": {}} (#8450, #28735, PR
    # #28736 unmerged). Errors are the upstream's, prefixed by the exception class:
    # {"error": {"message": "litellm.ContextWindowExceededError: ContextWindowExceededError:
    # OpenAIException - …", "type": null, "param": null, "code": "400"}}.
    # `GET /model/info` gives data[].model_info.max_input_tokens.
    "litellm": Personality(
        name="litellm",
        imitates="LiteLLM proxy 1.6x-1.9x over an OpenAI upstream",
        id_on_every_delta=True,
        content_null_with_tools=True,
        tool_call_id="call_{hex24}",
        stream_usage="last_chunk_with_choices",
        usage_details=True,
        overflow="litellm",
        context_endpoint="model_info",
    ),
    # llama-cpp-python 0.3.x server with chat_format="chatml-function-calling"
    # (llama_cpp/llama_chat_format.py, llama_cpp/server/app.py, errors.py, settings.py):
    # - a streamed forced call repeats name, id and the legacy function_call in every delta
    #   (_convert_completion_to_chat_function); ids are "call__0_<name>_<completion id>";
    # - no usage chunk: stream_options is not read (llama.py _create_completion);
    # - tool_choice missing or "none" renders no tools: the model answers in text; "auto" with
    #   stream=true raises "Automatic streaming tool choice is not supported" once the model
    #   picks a function, after the 200 and the SSE headers went out, so the stream ends with
    #   no event at all (get_event_publisher); unstreamed "auto" works;
    # - `len(prompt) >= n_ctx` raises "Requested tokens (N) exceed context window of M":
    #   unstreamed, errors.py turns it into a 400 context_length_exceeded; streamed, it is the
    #   same empty stream; n_ctx defaults to 2048 (settings.py);
    # - one model behind two locks (get_llama_proxy); with interrupt_requests (default True) a
    #   running stream that sees another request waiting sends `data: [DONE]` and stops, with
    #   no finish_reason. `/v1/models` takes the same lock.
    # `/props` (default_generation_settings.n_ctx) is llama.cpp's own llama-server's, served
    # here too for a doctor that asks; llama-cpp-python itself has none.
    "llamacpp": Personality(
        name="llamacpp",
        imitates="llama-cpp-python 0.3.x server, chatml-function-calling",
        id_on_every_delta=True,
        name_on_every_delta=True,
        legacy_function_call=True,
        content_null_with_tools=True,
        tool_call_id="call__{index}_{name}_{completion}",
        stream_usage="never",
        missing_tool_choice="none",
        streams_chosen_tools=False,
        context_tokens=2048,
        chars_per_token=2.7,
        template_tokens_per_message=5,
        overflow="llamacpp",
        context_endpoint="props",
        slots=1,
        interrupts_streams=True,
        answers_any_model=True,
    ),
}


def personality(like: str) -> Personality:
    """The named personality, or a ValueError that lists the names there are."""
    try:
        return PERSONALITIES[like]
    except KeyError:
        names = ", ".join(PERSONALITIES)
        raise ValueError(f"unknown server personality {like!r}; choose one of: {names}") from None


_REASONING = re.compile(r"^(o1|o3|o4|gpt-5)")


def is_reasoning_model(model: str) -> bool:
    """OpenAI's reasoning models; gpt-5-chat is the chat variant and takes what chat models do."""
    name = model.lower()
    return bool(_REASONING.match(name)) and not name.startswith("gpt-5-chat")


def reasoning_refusal(body: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI's 400 body for a parameter a reasoning model refuses, or None if it takes them."""
    if "max_tokens" in body:
        return _openai_error(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            param="max_tokens",
            code="unsupported_parameter",
        )
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        return _openai_error(
            f"Unsupported value: 'temperature' does not support {json.dumps(temperature)} "
            "with this model. Only the default (1) value is supported.",
            param="temperature",
            code="unsupported_value",
        )
    return None


def unknown_model_refusal(model: str) -> dict[str, Any]:
    """vLLM's 404 (entrypoints/openai serving: _check_model), the shape the others share."""
    return {
        "error": {
            "message": f"The model `{model}` does not exist.",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        }
    }


ImageInput = Literal["accepted", "no-mmproj", "text-only"]


def image_refusal(kind: ImageInput) -> tuple[int, dict[str, Any]] | None:
    """A server's answer to an image for a model that cannot take one: llama.cpp's server
    started without --mmproj throws in oaicompat_chat_params_parse (tools/server/utils.cpp),
    which it answers 500; OpenAI answers a text-only model 400 (as clients quote the live API).
    None: the image is taken."""
    if kind == "no-mmproj":
        message = (
            "image input is not supported - hint: if this is unexpected, you may need to "
            "provide the mmproj"
        )
        return 500, {"error": {"code": 500, "message": message, "type": "server_error"}}
    if kind == "text-only":
        return 400, _openai_error(
            "Invalid content type. image_url is only supported by certain models.",
            param="messages.[1].content.[1].type",
            code="invalid_value",
        )
    return None


def effort_refusal() -> dict[str, Any]:
    """What a chat (not reasoning) model answers to `reasoning_effort`."""
    return _openai_error(
        "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
        param="reasoning_effort",
        code="unsupported_parameter",
    )


def auto_tool_choice_refusal() -> dict[str, Any]:
    """vLLM started without --enable-auto-tool-choice, asked to choose tools by itself."""
    return {
        "error": {
            "message": '"auto" tool choice requires --enable-auto-tool-choice and '
            "--tool-call-parser to be set",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    }


def overflow_error(
    kind: Overflow, *, context: int, prompt: int, output: int | None
) -> dict[str, Any]:
    """The 400 body a server sends for a prompt of `prompt` tokens in a `context` window."""
    if kind == "vllm":
        return _vllm_overflow(context, prompt, output)
    if kind == "llamacpp":  # llama_cpp/server/errors.py, max_tokens printed as Python would
        return _openai_error(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt + (output or 0)} tokens ({prompt} in the messages, {output} in the "
            "completion). Please reduce the length of the messages or completion.",
            param="messages",
            code="context_length_exceeded",
        )
    openai_message = (
        f"This model's maximum context length is {context} tokens. However, your messages "
        f"resulted in {prompt} tokens. Please reduce the length of the messages."
    )
    if kind == "litellm":
        return {
            "error": {
                "message": "litellm.ContextWindowExceededError: ContextWindowExceededError: "
                f"OpenAIException - {openai_message}",
                "type": None,
                "param": None,
                "code": "400",
            }
        }
    return _openai_error(openai_message, param="messages", code="context_length_exceeded")


def _vllm_overflow(context: int, prompt: int, output: int | None) -> dict[str, Any]:
    if output is None or prompt >= context:
        message = (
            f"This model's maximum context length is {context} tokens. However, your request "
            f"has {prompt} input tokens. Please reduce the length of the input messages."
        )
    else:
        message = (
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{output} output tokens and your prompt contains {prompt} input tokens, for a "
            f"total of {prompt + output} tokens. Please reduce the length of the input prompt "
            "or the number of requested output tokens."
        )
    message += f" (parameter=input_tokens, value={prompt})"
    return {
        "error": {
            "message": message,
            "type": "BadRequestError",
            "param": "input_tokens",
            "code": 400,
        }
    }


def _openai_error(message: str, *, param: str | None, code: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


def count_like(server: Personality, text: str, messages: int) -> int:
    """Tokens as a server with its own tokenizer would count `text` in `messages` messages:
    deterministic, and more than tiktoken counts (about 1.6x o200k for llama-family
    tokenizers), so a client's estimate and the server's figure disagree as they do."""
    assert server.chars_per_token is not None
    return math.ceil(len(text) / server.chars_per_token) + (
        server.template_tokens_per_message * messages + 3
    )


def overflows(kind: Overflow, *, context: int, prompt: int, output: int | None) -> bool:
    """Whether a server refuses (or, Ollama, truncates) a prompt: llama-cpp-python wants room
    for one token (llama.py: `len(prompt_tokens) >= n_ctx`), vLLM for the output asked for."""
    if kind == "llamacpp":
        return prompt >= context
    if kind == "vllm":
        return prompt >= context or (output is not None and prompt + output > context)
    return prompt > context


def model_card(server: Personality, model: str, context: int) -> dict[str, Any]:
    """One entry of `GET /v1/models` as the server writes it."""
    card: dict[str, Any] = {"id": model, "object": "model"}
    if server.name == "vllm":  # vllm/entrypoints/openai/models/protocol.py ModelCard
        card |= {"created": 0, "owned_by": "vllm", "root": model, "parent": None}
        card |= {"max_model_len": context, "permission": []}
    elif server.name == "ollama":  # openai/openai.go Model
        card |= {"created": 0, "owned_by": "library"}
    elif server.name == "litellm":
        card |= {"created": 1677610602, "owned_by": "openai"}
    elif server.name == "llamacpp":  # llama_cpp/server/app.py get_models
        card |= {"owned_by": "me", "permissions": []}
    return card


def llamacpp_props(context: int, slots: int, model: str) -> dict[str, Any]:
    """llama-server's `GET /props` (tools/server): the loaded context per slot, the slots."""
    return {
        "default_generation_settings": {"n_ctx": context, "model": model, "params": {}},
        "total_slots": slots,
        "model_path": f"/models/{model}.gguf",
        "chat_template": "",
    }


def ollama_show(model: str, trained_context: int) -> dict[str, Any]:
    """Ollama's `POST /api/show` (docs/api.md): `model_info` holds the length the model was
    trained for, not the num_ctx it runs with — that is in `GET /api/ps`."""
    return {
        "modelfile": f"FROM {model}\n",
        "parameters": 'stop                           "<|eot_id|>"',
        "template": "{{ .Prompt }}",
        "details": {"format": "gguf", "family": "llama", "families": ["llama"]},
        "model_info": {
            "general.architecture": "llama",
            "llama.context_length": trained_context,
        },
        "capabilities": ["completion", "tools"],
    }


def ollama_ps(models: tuple[str, ...], context: int) -> dict[str, Any]:
    """Ollama's `GET /api/ps` (api/types.go ProcessModelResponse): the num_ctx in use."""
    return {
        "models": [
            {"name": model, "model": model, "size": 0, "size_vram": 0, "context_length": context}
            for model in models
        ]
    }


def litellm_model_info(models: tuple[str, ...], context: int) -> dict[str, Any]:
    """LiteLLM's `GET /model/info`: each deployment's limits from its model map."""
    return {
        "data": [
            {
                "model_name": model,
                "litellm_params": {"model": f"openai/{model}"},
                "model_info": {
                    "key": model,
                    "max_tokens": context,
                    "max_input_tokens": context,
                    "max_output_tokens": 4096,
                    "mode": "chat",
                    "litellm_provider": "openai",
                    "supports_function_calling": True,
                },
            }
            for model in models
        ]
    }


# ---------------------------------------------------------------------------- /v1/embeddings

EmbeddingDimensions = Literal["any", "shorten", "ignored"]


@dataclass(frozen=True, kw_only=True)
class EmbeddingServer:
    """What one server's `/v1/embeddings` does where servers disagree. Kept apart from
    `Personality`: llama.cpp's own llama-server embeds unlike llama-cpp-python, whose chat the
    "llamacpp" personality imitates, so `FakeLlm(embeds_like=...)` may name either."""

    name: str
    imitates: str
    base64: bool = True  # honours encoding_format "base64"; False: floats whatever was asked
    # `dimensions`: "any" (text-embedding-3: the size asked for), "shorten" (cut the model's
    # vector to the size asked for when it is smaller, then normalise), "ignored"
    dimensions: EmbeddingDimensions = "any"
    input_tokens: int | None = 8192  # one input's limit; None: the server's context window
    too_long: Literal["refuse", "truncate"] = "refuse"  # an input over that limit
    max_inputs: int | None = None  # inputs one request may hold
    request_tokens: int | None = None  # tokens one request may hold, all inputs together
    chars_per_token: float | None = None  # None: tiktoken, as OpenAI counts
    response_id: bool = False  # the list carries an `id` and `created`


EMBEDDING_SERVERS: dict[str, EmbeddingServer] = {
    # OpenAI's API. Limits as the SDK documents `input` (openai/resources/embeddings.py): 8192
    # tokens an input, 2048 inputs, 300,000 tokens a request, no empty string; `dimensions`
    # only on text-embedding-3 models (the fake honours it for any). The refusals' words are
    # as clients quote the live API: pingcap/autoflow#265 and databendlabs-x/askbend#86 (an
    # input too long), embeddings-benchmark/mteb#1200 (over 2048 inputs), openai-python#576
    # and aryn-ai/sycamore#943 (an empty string), OpenDataBox/CrackSQL#27 and
    # assafelovic/gpt-researcher#1500 (over 300,000 tokens).
    "openai": EmbeddingServer(
        name="openai",
        imitates="api.openai.com /v1/embeddings",
        max_inputs=2048,
        request_tokens=300_000,
    ),
    # vLLM serving an embedding model (`--runner pooling`): the refusal of a long input as
    # vllm-project/vllm#19798 and later issues quote it (400, "... tokens in the input for
    # embedding generation"), the list with an `embd-` id (kserve/kserve#5399). A server of a
    # chat model registers no embeddings route at all (entrypoints/pooling/__init__.py
    # register_pooling_api_routers: only `if "embed" in supported_tasks`): FastAPI's 404
    # {"detail": "Not Found"}; versions before that answered "The model does not support
    # Embeddings API", with HTTP 200 (vllm-project/vllm#21704). Not modelled: a model without
    # Matryoshka weights refusing `dimensions` (mem0ai/mem0#3101).
    "vllm": EmbeddingServer(
        name="vllm",
        imitates="vLLM 0.19+ OpenAI-compatible server, pooling runner",
        input_tokens=None,
        chars_per_token=3.6,
        response_id=True,
    ),
    # Ollama's /v1 layer (openai/openai.go EmbedRequest and ToEmbeddingList,
    # middleware/openai.go EmbeddingsMiddleware, server/routes.go EmbedHandler, 2026-08):
    # base64 since v0.12.7 (#12715; before, floats whatever was asked); `dimensions` cuts the
    # vector and normalises it again, only when smaller; an input longer than the context is
    # cut to fit without a word (the /v1 layer never sets `truncate: false`); an empty list is
    # 400 "invalid input". A model that cannot embed: Ollama starts its llama-server with
    # `--embedding` only for embedding models (llm/llama_server.go, since #16031), and passes
    # that server's 501 on, re-wrapped as {"error": {"message", "type": "api_error"}}: its
    # advice to start with `--embeddings` is not what an Ollama user can do.
    "ollama": EmbeddingServer(
        name="ollama",
        imitates="Ollama /v1/embeddings, 2026-08",
        dimensions="shorten",
        input_tokens=None,
        too_long="truncate",
        chars_per_token=2.7,
    ),
    # A LiteLLM proxy passes its OpenAI upstream's answers on; not modelled apart from it.
    "litellm": EmbeddingServer(
        name="litellm",
        imitates="LiteLLM proxy over an OpenAI upstream (as OpenAI)",
        max_inputs=2048,
        request_tokens=300_000,
    ),
    # llama-cpp-python 0.3.x (llama_cpp/server/app.py create_embedding, types.py
    # CreateEmbeddingRequest, llama.py embed, errors.py, settings.py): the request model knows
    # only `input`, `model` and `user`, so `encoding_format` and `dimensions` are ignored
    # (floats, the model's size); inputs are cut to n_batch (512) tokens without a word
    # (embed(truncate=True)); the server's `embedding` setting is False by default, and then
    # every request is a 500 "Llama model must be created with embedding=True to call this
    # method" (RouteErrorHandler: internal_server_error).
    "llamacpp": EmbeddingServer(
        name="llamacpp",
        imitates="llama-cpp-python 0.3.x server",
        base64=False,
        dimensions="ignored",
        input_tokens=512,
        too_long="truncate",
        chars_per_token=2.7,
    ),
    # llama.cpp's own llama-server (tools/server/server-context.cpp handle_embeddings_impl,
    # server-common.cpp format_error_response): without `--embeddings`, 501
    # not_supported_error "This server does not support embeddings. Start it with
    # `--embeddings`"; an input longer than the physical batch (`--ubatch-size`, 512 by
    # default) fails the whole request with 500 server_error "input (N tokens) is too large
    # to process. increase the physical batch size (current batch size: 512)" (the same
    # file, as llama-server users quote it); base64 honoured; `dimensions` ignored; "Input
    # content cannot be empty" (400) for an input with no tokens.
    "llama-server": EmbeddingServer(
        name="llama-server",
        imitates="llama.cpp llama-server --embeddings",
        dimensions="ignored",
        input_tokens=512,
        chars_per_token=2.7,
    ),
}


def embedding_server(name: str) -> EmbeddingServer:
    """The named embedding behaviour, or a ValueError that lists the names there are."""
    try:
        return EMBEDDING_SERVERS[name]
    except KeyError:
        names = ", ".join(EMBEDDING_SERVERS)
        raise ValueError(f"unknown embeddings server {name!r}; choose one of: {names}") from None


def embeddings_unsupported(server: EmbeddingServer) -> tuple[int, dict[str, Any]] | None:
    """The status and body of a server (or served model) that cannot embed, as each words it;
    None where no such answer is on record (OpenAI, LiteLLM)."""
    if server.name == "llama-server":
        message = "This server does not support embeddings. Start it with `--embeddings`"
        return 501, {"error": {"code": 501, "message": message, "type": "not_supported_error"}}
    if server.name == "ollama":
        message = "This server does not support embeddings. Start it with `--embeddings`"
        return 501, _ollama_error(message, "api_error")
    if server.name == "llamacpp":
        message = "Llama model must be created with embedding=True to call this method"
        return 500, {
            "error": {
                "message": message,
                "type": "internal_server_error",
                "param": None,
                "code": None,
            }
        }
    if server.name == "vllm":
        return 404, {"detail": "Not Found"}
    return None


def embedding_input_refusal(
    server: EmbeddingServer, inputs: list[str], tokens: list[int]
) -> tuple[int, dict[str, Any]] | None:
    """The refusal of what a request holds before any input is measured: an empty list, an
    empty input, too many inputs."""
    if not inputs:
        if server.name == "ollama":
            return 400, _ollama_error("invalid input", "invalid_request_error")
        return 400, _invalid_input()
    if any(count == 0 for count in tokens):
        if server.name == "llama-server":
            message = "Input content cannot be empty"
            return 400, {
                "error": {"code": 400, "message": message, "type": "invalid_request_error"}
            }
        return 400, _invalid_input()
    if server.max_inputs is not None and len(inputs) > server.max_inputs:
        return 400, _invalid_input()
    return None


def embedding_too_long(
    server: EmbeddingServer, *, tokens: list[int], limit: int
) -> tuple[int, dict[str, Any]] | None:
    """The refusal of a request holding an input longer than `limit` tokens, or of more tokens
    than a request may hold; None when the server takes it (or cuts it without a word)."""
    longest = max(tokens, default=0)
    if longest > limit and server.too_long == "refuse":
        return _too_long(server, longest, limit)
    total = sum(min(count, limit) for count in tokens)
    if server.request_tokens is not None and total > server.request_tokens:
        message = f"Requested {total} tokens, max {server.request_tokens} tokens per request"
        error = {"message": message, "type": "max_tokens_per_request", "param": None}
        return 400, {"error": error | {"code": "max_tokens_per_request"}}
    return None


def _too_long(server: EmbeddingServer, tokens: int, limit: int) -> tuple[int, dict[str, Any]]:
    if server.name == "llama-server":
        message = (
            f"input ({tokens} tokens) is too large to process. increase the physical batch "
            f"size (current batch size: {limit})"
        )
        return 500, {"error": {"code": 500, "message": message, "type": "server_error"}}
    if server.name == "vllm":
        message = (
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{tokens} tokens in the input for embedding generation. Please reduce the length "
            "of the input."
        )
        error = {"message": message, "type": "BadRequestError", "param": None, "code": 400}
        return 400, {"error": error}
    message = (
        f"This model's maximum context length is {limit} tokens, however you requested "
        f"{tokens} tokens ({tokens} in your prompt; 0 for the completion). Please reduce your "
        "prompt; or completion length."
    )
    return 400, {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    }


def _invalid_input() -> dict[str, Any]:
    """OpenAI's words for an input it will not take: an empty string, over 2048 inputs."""
    message = (
        "'$.input' is invalid. Please check the API reference: "
        "https://platform.openai.com/docs/api-reference."
    )
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    }


def _ollama_error(message: str, kind: str) -> dict[str, Any]:
    """Ollama's /v1 error (openai/openai.go NewError): code is always null."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}
