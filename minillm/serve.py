"""An OpenAI-compatible chat server with dynamic batching: ``python -m minillm.serve``.

The server speaks the protocol most LLM clients already know, OpenAI's chat completions:
``POST /v1/chat/completions`` with ``{"messages": [...], "max_tokens": 32, "temperature": 0,
"stream": false, "seed": 1}`` returns a ``chat.completion`` object; with ``"stream": true`` it
sends Server-Sent Events, one ``chat.completion.chunk`` per piece of text
(``data: {...}\\n\\n``), then ``data: [DONE]\\n\\n``. ``GET /v1/models`` and ``GET /health`` complete
it, so the ``openai`` Python package or ``curl`` can talk to a model of the course.

The design, in three parts:

1. **The event loop never runs the model.** FastAPI handles every HTTP request in one asyncio event
   loop. A forward pass takes milliseconds to seconds; run there, it would freeze every other
   connection. So a handler only checks the request, renders the chat template, tokenizes, and puts
   a :class:`_Job` into a thread-safe queue; then it ``await``\\ s the job's own asyncio queue, into
   which the model's tokens arrive one by one.
2. **One worker thread owns the model** (:class:`BatchWorker`). It waits for a job, then collects
   every other job that is waiting — up to ``max_batch_size``, for at most ``batch_wait_ms`` — and
   decodes them *together* with :class:`minillm.batching.BatchedGenerator`: one prefill over the
   left-padded prompts, then one forward per step for the whole batch. After each step it hands
   each job its new token through ``loop.call_soon_threadsafe`` (the only safe way for another
   thread to wake an asyncio queue). Requests that arrive meanwhile wait in the queue and form the
   next batch (*dynamic batching*; vLLM's *continuous* batching would let them join the running
   batch at the next step). Torch releases Python's GIL inside its kernels, so the event loop keeps
   serving while the worker computes.
3. **Text is streamed as valid UTF-8.** A token can end in the middle of a multi-byte character
   (an emoji is often 2-4 byte tokens), so each job decodes its token bytes with an *incremental*
   UTF-8 decoder that holds back an incomplete character until its last byte arrives; the streamed
   pieces then add up exactly to the non-streamed text.

Errors answer in OpenAI's shape, ``{"error": {"message": ..., "type": "invalid_request_error"}}``:
400 for malformed JSON, missing or invalid fields, a prompt longer than ``max_prompt_tokens`` or a
``max_tokens`` that does not fit the context. The end token is not part of the answer's text. One
server serves one model: the request's ``model`` field is accepted and not checked.

    python -m minillm.serve --port 8000                     # SmolLM2-135M-Instruct (GGUF)
    python -m minillm.serve --model path/to/checkpoint      # a minillm Llama checkpoint
    curl localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
         -d '{"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 20}'
"""


import argparse
import asyncio
import codecs
import json
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import torch

from .batching import BatchedGenerator
from .models.llama import LlamaForCausalLM
from .validation import check_float, check_int, check_str

ROLES = ("system", "user", "assistant")
DEFAULT_TEMPERATURE = 1.0  # OpenAI's default; send "temperature": 0 for greedy decoding


@dataclass
class ServeConfig:
    """Settings of the server built by :func:`create_app`."""

    model_name: str = "minillm"  # the id /v1/models lists and every response names
    max_prompt_tokens: int = 1024  # longer prompts (after the chat template) are refused with 400
    max_batch_size: int = 8  # the most requests decoded together
    default_max_tokens: int = 256  # when a request gives no max_tokens (cut to what the context allows)
    batch_wait_ms: float = 5.0  # how long the worker waits for more requests before starting a batch
    eos_token_id: int | None = None  # the end token; None = the tokenizer's

    def __post_init__(self) -> None:
        check_str("model_name", self.model_name, allow_empty=False)
        for name in ("max_prompt_tokens", "max_batch_size", "default_max_tokens"):
            setattr(self, name, check_int(name, getattr(self, name), low=1))
        self.batch_wait_ms = check_float("batch_wait_ms", self.batch_wait_ms, low=0)
        check_int("eos_token_id", self.eos_token_id, low=0, allow_none=True)


class RequestError(ValueError):
    """A request the server refuses: answered with ``status`` and an OpenAI-style error body."""

    def __init__(self, message: str, status: int = 400, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.code, self.kind = status, code, kind


# ---------------------------------------------------------------------------------------------
# The worker thread: dynamic batching


@dataclass
class _Job:
    """One request on its way through the worker; events go back to its handler's event loop."""

    prompt: list[int]
    max_tokens: int
    temperature: float
    seed: int | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)  # ("token", id) ... ("done", reason)
    cancelled: bool = False  # set by the handler when its client disconnects

    def send(self, kind: str, value: Any) -> None:
        """Called from the worker thread: put an event into the handler's queue, thread-safely."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop has closed (server shutting down): nobody listens
            self.cancelled = True


class BatchWorker:
    """The one thread that runs the model: takes jobs from a queue and decodes them in batches."""

    def __init__(self, model: LlamaForCausalLM, eos_token_id: int | None, max_batch_size: int,
                 batch_wait_ms: float):
        self.model, self.eos_token_id = model, eos_token_id
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_ms / 1000
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.batches = 0  # batches run so far (the tests and /health read these)
        self.largest_batch = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="minillm-batch-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.jobs.put(None)  # wakes the worker, which then exits
            self._thread.join(timeout=60)
            self._thread = None

    def submit(self, job: _Job) -> None:
        self.jobs.put(job)

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """The first job plus those waiting or arriving within batch_wait_s, up to max_batch_size;
        and whether the stop signal was seen."""
        batch, deadline = [first], time.perf_counter() + self.batch_wait_s
        while len(batch) < self.max_batch_size:
            try:
                job = self.jobs.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self.jobs.get()
            if first is None:
                return
            batch, stopping = self._collect(first)
            batch = [job for job in batch if not job.cancelled]
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            gen = BatchedGenerator(self.model, [j.prompt for j in batch], [j.max_tokens for j in batch],
                                   eos_token_id=[self.eos_token_id] * len(batch),
                                   temperature=[j.temperature for j in batch],
                                   seed=[j.seed for j in batch])
            while not gen.done:
                for row, job in enumerate(batch):
                    if job.cancelled:
                        gen.cancel(row)
                if gen.done:
                    break
                for row, token in gen.step().items():
                    batch[row].send("token", token)
            for row, job in enumerate(batch):
                job.send("done", gen.finish_reasons[row])
        except Exception as err:  # noqa: BLE001 — every waiting client must hear about it
            for job in batch:
                job.send("error", f"generation failed: {type(err).__name__}: {err}")


# ---------------------------------------------------------------------------------------------
# Requests and responses


def _message_text(i: int, content: Any) -> str:
    """A message's text: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise RequestError(f"messages[{i}].content must be a string (or a list of text parts), got "
                       f"{json.dumps(content)[:80]}")


def parse_request(body: Any) -> dict[str, Any]:
    """Check a chat-completions body; return its fields (messages, max_tokens, temperature, stream,
    seed, include_usage) or raise :class:`RequestError` naming the bad field and what was expected."""
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(body).__name__}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' is required: a non-empty list of {\"role\": ..., \"content\": ...}"
                           f" objects, got {json.dumps(messages)[:80]}")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise RequestError(f"messages[{i}] must be an object with a 'role' in {list(ROLES)} and a "
                               f"'content', got {json.dumps(m)[:80]}")
        clean.append({"role": m["role"], "content": _message_text(i, m.get("content"))})
    if "model" in body and not isinstance(body["model"], str):
        raise RequestError(f"'model' must be a string, got {json.dumps(body['model'])[:40]}")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or max_tokens < 1):
        raise RequestError(f"'max_tokens' must be an integer >= 1, got {json.dumps(max_tokens)}")
    temperature = body.get("temperature")
    temperature = DEFAULT_TEMPERATURE if temperature is None else temperature
    number = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not number or not 0 <= temperature <= 2:  # NaN fails the comparison too
        raise RequestError(f"'temperature' must be a number in [0, 2] (0 = greedy), got "
                           f"{json.dumps(temperature)}")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"'stream' must be true or false, got {json.dumps(stream)}")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise RequestError(f"'seed' must be an integer >= 0, got {json.dumps(seed)}")
    if body.get("n", 1) != 1:
        raise RequestError(f"only n=1 is supported, got n={json.dumps(body.get('n'))}")
    if body.get("stop"):
        raise RequestError("'stop' sequences are not supported; the model stops at its end token")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError(f"'stream_options' must be an object, got {json.dumps(options)[:40]}")
    return dict(messages=clean, max_tokens=max_tokens, temperature=float(temperature),
                stream=stream, seed=seed, include_usage=bool(options.get("include_usage", False)))


def _error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class TextStream:
    """Token ids → text pieces; bytes of an unfinished UTF-8 character wait for the next token."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return self.decoder.decode(self.tokenizer.decode_bytes([token]))

    def flush(self) -> str:
        return self.decoder.decode(b"", final=True)


# ---------------------------------------------------------------------------------------------
# The app


def create_app(model: LlamaForCausalLM, tokenizer: Any, config: ServeConfig | None = None):
    """A FastAPI app serving ``model`` (a minillm Llama) with ``tokenizer`` (``encode``,
    ``decode_bytes``, ``apply_chat_template``, ``eos_token_id``, e.g. a ByteLevelBPE from a GGUF).

    The worker thread starts when the app starts (uvicorn's lifespan) and stops with it.
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    config = config or ServeConfig()
    if not isinstance(model, LlamaForCausalLM):
        raise TypeError(f"model must be a minillm LlamaForCausalLM, got {type(model).__name__}")
    if not isinstance(config, ServeConfig):
        raise TypeError(f"config must be a ServeConfig, got {type(config).__name__}")
    for method in ("encode", "decode_bytes", "apply_chat_template"):
        if not callable(getattr(tokenizer, method, None)):
            raise TypeError(f"tokenizer must have a {method}() method (like minillm's ByteLevelBPE), "
                            f"got {type(tokenizer).__name__}")
    eos = config.eos_token_id if config.eos_token_id is not None else getattr(tokenizer, "eos_token_id", None)
    V, context = model.config.vocab_size, model.config.max_position_embeddings
    if eos is not None and not 0 <= eos < V:
        raise ValueError(f"the end token {eos} is outside the model's vocabulary [0, {V})")
    model.eval()
    worker = BatchWorker(model, eos, config.max_batch_size, config.batch_wait_ms)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        try:
            yield
        finally:
            worker.stop()

    app = FastAPI(title="minillm chat server", lifespan=lifespan)
    app.state.worker, app.state.config = worker, config

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError):
        return JSONResponse(_error_body(str(err), err.kind, err.code), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):  # 404, 405 ... in OpenAI's shape
        kind = "invalid_request_error" if err.status_code < 500 else "server_error"
        return JSONResponse(_error_body(str(err.detail), kind), status_code=err.status_code)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": config.model_name, "queued": worker.jobs.qsize(),
                "batches": worker.batches, "largest_batch": worker.largest_batch}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": config.model_name, "object": "model",
                                            "created": created, "owned_by": "minillm"}]}

    def prepare(fields: dict[str, Any]) -> tuple[list[int], int]:
        """The prompt's token ids and the number of tokens to generate, both checked."""
        try:
            prompt = tokenizer.apply_chat_template(fields["messages"], add_generation_prompt=True,
                                                   tokenize=True)
        except (ValueError, TypeError) as err:
            raise RequestError(f"the chat template refused the messages: {err}") from None
        P = len(prompt)
        if P > config.max_prompt_tokens:
            raise RequestError(f"the prompt has {P} tokens (chat template included), more than this "
                               f"server's max_prompt_tokens={config.max_prompt_tokens}",
                               code="context_length_exceeded")
        if P >= context:
            raise RequestError(f"the prompt has {P} tokens, which fills the model's context of "
                               f"{context} tokens", code="context_length_exceeded")
        max_tokens = fields["max_tokens"]
        if max_tokens is None:
            max_tokens = min(config.default_max_tokens, context - P)
        elif P + max_tokens > context:
            raise RequestError(f"max_tokens={max_tokens} does not fit: the prompt has {P} tokens and "
                               f"the model's context is {context}, so at most {context - P} new tokens",
                               code="context_length_exceeded")
        return prompt, max_tokens

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestError(f"the request body is not valid JSON: {err}") from None
        fields = parse_request(body)
        prompt, max_tokens = prepare(fields)
        seed = fields["seed"]
        if fields["temperature"] > 0 and seed is None:
            seed = random.randrange(2 ** 63)  # sampling needs a seed; a client may pass its own
        job = _Job(prompt, max_tokens, fields["temperature"], seed, asyncio.get_running_loop())
        worker.submit(job)
        ident, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if fields["stream"]:
            return StreamingResponse(_stream(job, ident, now, fields["include_usage"]),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            tokens, reason = await _collect(job)
        except asyncio.CancelledError:
            job.cancelled = True
            raise
        text = _text(tokens, reason)
        return {"id": ident, "object": "chat.completion", "created": now, "model": config.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": reason}],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(tokens),
                          "total_tokens": len(prompt) + len(tokens)}}

    def _text(tokens: list[int], reason: str) -> str:
        shown = tokens[:-1] if reason == "stop" else tokens  # the end token is not part of the text
        return tokenizer.decode_bytes(shown).decode("utf-8", errors="replace")

    async def _collect(job: _Job) -> tuple[list[int], str]:
        tokens = []
        while True:
            kind, value = await job.events.get()
            if kind == "token":
                tokens.append(value)
            elif kind == "done":
                return tokens, value
            else:
                raise RequestError(value, status=500, kind="server_error")

    async def _stream(job: _Job, ident: str, now: int, include_usage: bool) -> AsyncIterator[str]:
        def chunk(delta: dict | None, reason: str | None = None, **extra) -> str:
            """One Server-Sent Event holding a chat.completion.chunk (no choice when delta is None)."""
            choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                 "finish_reason": reason}]
            obj = {"id": ident, "object": "chat.completion.chunk", "created": now,
                   "model": config.model_name, "choices": choices, **extra}
            return f"data: {json.dumps(obj)}\n\n"

        text, n = TextStream(tokenizer), 0
        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                kind, value = await job.events.get()
                if kind == "error":
                    yield f"data: {json.dumps(_error_body(value, 'server_error'))}\n\n"
                    break
                if kind == "done":
                    piece = text.flush()
                    if piece:
                        yield chunk({"content": piece})
                    yield chunk({}, value)
                    if include_usage:  # OpenAI's last chunk: no choices, the token counts
                        P = len(job.prompt)
                        usage = {"prompt_tokens": P, "completion_tokens": n, "total_tokens": P + n}
                        yield chunk(None, usage=usage)
                    break
                n += 1
                if value == eos:  # a row ends with its end token, which is not part of the text
                    continue
                piece = text.push(value)
                if piece:  # empty while a UTF-8 character is incomplete
                    yield chunk({"content": piece})
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled = True  # a no-op when finished; stops the row if the client went away

    return app


# ---------------------------------------------------------------------------------------------
# Command line


def load_model(name: str, tokenizer_path: str | None = None) -> tuple[LlamaForCausalLM, Any]:
    """``"smollm2"`` (the installed GGUF) or the path of a minillm checkpoint of a Llama; the
    tokenizer comes from ``tokenizer_path`` (a GGUF file) or SmolLM2's GGUF."""
    from .gguf import smollm2_gguf_path, tokenizer_from_gguf

    gguf = None
    if name == "smollm2":
        gguf = smollm2_gguf_path()
        model = LlamaForCausalLM.from_gguf(gguf)
    else:
        from .checkpoint import load_checkpoint

        model = load_checkpoint(name)
        if not isinstance(model, LlamaForCausalLM):
            raise ValueError(f"{name} holds a {type(model).__name__}; the server runs Llama-family "
                             f"models (LlamaForCausalLM)")
    tokenizer = tokenizer_from_gguf(tokenizer_path or gguf or smollm2_gguf_path())
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                         f"{model.config.vocab_size}: give the model's own tokenizer (--tokenizer)")
    return model.eval(), tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="An OpenAI-compatible chat server for a minillm model.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="smollm2",
                        help="'smollm2' (the installed GGUF) or the path of a minillm Llama checkpoint")
    parser.add_argument("--tokenizer", default=None, help="a GGUF file whose tokenizer to use "
                                                          "(default: SmolLM2's)")
    parser.add_argument("--max-prompt-tokens", type=int, default=ServeConfig.max_prompt_tokens)
    parser.add_argument("--max-batch-size", type=int, default=ServeConfig.max_batch_size)
    parser.add_argument("--batch-wait-ms", type=float, default=ServeConfig.batch_wait_ms)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    import uvicorn

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, args.tokenizer)
    name = "SmolLM2-135M-Instruct" if args.model == "smollm2" else str(args.model)
    config = ServeConfig(model_name=name, max_prompt_tokens=args.max_prompt_tokens,
                         max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms)
    uvicorn.run(create_app(model, tokenizer, config), host=args.host, port=args.port)


__all__ = ["ServeConfig", "RequestError", "BatchWorker", "TextStream", "create_app", "parse_request",
           "load_model", "main"]


if __name__ == "__main__":
    main()

