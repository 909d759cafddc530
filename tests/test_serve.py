"""The OpenAI-compatible server (minillm.serve), over real HTTP: a uvicorn server in a background
thread on a free port, a tiny random Llama with SmolLM2's tokenizer (a byte-level stand-in when
SmolLM2 is not installed). 50 concurrent requests are all answered, each with what ``generate``
gives for its prompt alone; a streamed answer adds up to the non-streamed one; bad requests get a
4xx with an OpenAI-style message, and the server keeps answering correctly after them."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import pytest
import torch

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from minillm.models.llama import LlamaConfig, LlamaForCausalLM  # noqa: E402
from minillm.serve import ServeConfig, TextStream, create_app  # noqa: E402

MAX_PROMPT = 96  # the server's max_prompt_tokens
CONTEXT = 160  # the tiny model's max_position_embeddings


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """torch on one thread here (restored after): the tiny model gains nothing from a second thread,
    and on a shared, oversubscribed CPU two OpenMP threads spin-waiting for a descheduled partner
    made decoding up to 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class ByteTokenizer:
    """A stand-in tokenizer: one token per UTF-8 byte, plus <|im_start|> (256) and <|im_end|> (257)."""

    vocab_size, eos_token_id = 258, 257
    specials = {"<|im_start|>": 256, "<|im_end|>": 257}

    def encode(self, text: str) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            for name, token in self.specials.items():
                if text.startswith(name, i):
                    ids.append(token)
                    i += len(name)
                    break
            else:
                ids.extend(text[i].encode("utf-8"))
                i += 1
        return ids

    def decode_bytes(self, ids) -> bytes:
        names = {v: k.encode() for k, v in self.specials.items()}
        return b"".join(names[i] if i in names else bytes([i]) for i in ids)

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        text += "<|im_start|>assistant\n" if add_generation_prompt else ""
        return self.encode(text) if tokenize else text


@pytest.fixture(scope="module")
def tokenizer():
    from minillm.gguf import smollm2_gguf_path, tokenizer_from_gguf

    try:
        return tokenizer_from_gguf(smollm2_gguf_path())
    except FileNotFoundError:
        return ByteTokenizer()


@pytest.fixture(scope="module")
def model(tokenizer) -> LlamaForCausalLM:
    """A tiny random Llama over the tokenizer's vocabulary, logits spread wide (no near-ties), and
    attention outputs scaled up so that answers depend on the prompt (at the default 0.02 init
    every answer starts alike: the chat template's last tokens decide)."""
    torch.manual_seed(0)
    config = LlamaConfig.tiny(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                              max_position_embeddings=CONTEXT)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
        for layer in model.model.layers:
            layer.self_attn.v_proj.weight.mul_(5)
            layer.self_attn.o_proj.weight.mul_(5)
    return model


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Question {i}: " + "more " * (i % 6)}]


def prompt_ids(tokenizer, msgs) -> list[int]:
    return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)


@pytest.fixture(scope="module")
def eos(model, tokenizer) -> int:
    """The server's end token: one that request 0's greedy answer makes at its third step, so some
    answers end with "stop" and others with "length"."""
    p = prompt_ids(tokenizer, messages(0))
    return model.generate(torch.tensor([p]), 3, eos_token_id=None)[0, len(p) + 2].item()


def expected(model, tokenizer, eos: int, msgs, max_tokens: int) -> tuple[str, str, int]:
    """(text, finish_reason, completion tokens) of ``generate`` on this prompt alone, greedy."""
    p = prompt_ids(tokenizer, msgs)
    new = model.generate(torch.tensor([p]), max_tokens, eos_token_id=eos)[0, len(p):].tolist()
    stopped = new[-1] == eos
    text = tokenizer.decode_bytes(new[:-1] if stopped else new).decode("utf-8", errors="replace")
    return text, "stop" if stopped else "length", len(new)


@pytest.fixture(scope="module")
def server(model, tokenizer, eos):
    """The base URL of a running server (uvicorn in a background thread, a free port)."""
    config = ServeConfig(model_name="tiny", max_prompt_tokens=MAX_PROMPT, max_batch_size=8,
                         eos_token_id=eos)
    app = create_app(model, tokenizer, config)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(timeout=30)


def post(base: str, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{base}/v1/chat/completions", content=content,
                      headers={"content-type": "application/json"}, timeout=60, **kwargs)


def test_models_and_health(server):
    base, _ = server
    models = httpx.get(f"{base}/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny"]
    assert httpx.get(f"{base}/health").json()["status"] == "ok"


def test_fifty_concurrent_requests_each_equal_generate_alone(server, model, tokenizer, eos):
    base, app = server
    bodies = [{"model": "tiny", "messages": messages(i), "max_tokens": 4 + i % 9, "temperature": 0}
              for i in range(50)]

    async def ask_all():
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            return await asyncio.gather(*[client.post("/v1/chat/completions", json=b) for b in bodies])

    answers = asyncio.run(ask_all())
    reasons = []
    for i, (body, r) in enumerate(zip(bodies, answers)):
        assert r.status_code == 200, r.text
        out = r.json()
        text, reason, n = expected(model, tokenizer, eos, body["messages"], body["max_tokens"])
        choice = out["choices"][0]
        assert out["object"] == "chat.completion" and out["model"] == "tiny"
        assert choice["message"] == {"role": "assistant", "content": text}, f"request {i}"
        assert choice["finish_reason"] == reason, f"request {i}"
        P = len(prompt_ids(tokenizer, body["messages"]))
        assert out["usage"] == {"prompt_tokens": P, "completion_tokens": n, "total_tokens": P + n}
        reasons.append(reason)
    assert {"stop", "length"} <= set(reasons)
    assert app.state.worker.largest_batch > 1  # the requests really were decoded together


def read_stream(base: str, body: dict) -> list[str]:
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode("utf-8")
    events = text.split("\n\n")
    assert events[-1] == "" and all(e.startswith("data: ") for e in events[:-1]), text[:200]
    return [e[len("data: "):] for e in events[:-1]]


@pytest.mark.parametrize("i", [0, 3])
def test_streamed_deltas_add_up_to_the_answer(server, i):
    base, _ = server
    body = {"messages": messages(i), "max_tokens": 12, "temperature": 0}
    whole = post(base, body).json()
    assert i > 0 or whole["choices"][0]["finish_reason"] == "stop"  # the end token is not streamed
    events = read_stream(base, {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    with_choice = [c for c in chunks if c["choices"]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in with_choice)
    assert text == whole["choices"][0]["message"]["content"]
    assert with_choice[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_text_stream_holds_back_split_characters(tokenizer):
    text = "naïve café 🙂 日本語"
    ids = tokenizer.encode(text)
    stream = TextStream(tokenizer)
    pieces = [stream.push(t) for t in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)  # no half character ever shown


@pytest.mark.parametrize("body, match", [
    (b'{"messages": [', "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    ({"model": "tiny"}, "'messages' is required"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, r"messages\[0\] must be an object with a 'role'"),
    ({"messages": [{"role": "user", "content": 3}]}, r"messages\[0\].content must be a string"),
    ({"messages": messages(1), "max_tokens": 0}, "'max_tokens' must be an integer >= 1, got 0"),
    ({"messages": messages(1), "temperature": "hot"}, r"'temperature' must be a number in \[0, 2\]"),
    ({"messages": messages(1), "stream": "yes"}, "'stream' must be true or false"),
    ({"messages": messages(1), "seed": -3}, "'seed' must be an integer >= 0"),
    ({"messages": [{"role": "user", "content": "word " * 200}]},
     rf"the prompt has \d+ tokens .* more than this server's max_prompt_tokens={MAX_PROMPT}"),
    ({"messages": messages(1), "max_tokens": 1000},
     rf"max_tokens=1000 does not fit: the prompt has \d+ tokens and the model's context is {CONTEXT}"),
])
def test_bad_requests_get_a_4xx_with_a_message(server, model, tokenizer, eos, body, match):
    base, _ = server
    r = post(base, body)
    assert 400 <= r.status_code < 500
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert re.search(match, error["message"]), error["message"]
    # ... and the server still answers correctly afterwards
    good = post(base, {"messages": messages(7), "max_tokens": 5, "temperature": 0}).json()
    assert good["choices"][0]["message"]["content"] == expected(model, tokenizer, eos, messages(7), 5)[0]


def test_unknown_route_answers_in_openai_shape(server):
    base, _ = server
    r = httpx.get(f"{base}/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["message"]


def test_seeded_sampling_reproduces(server):
    base, _ = server
    body = {"messages": messages(2), "max_tokens": 10, "temperature": 1.0, "seed": 42}
    first, second = post(base, body).json(), post(base, body).json()
    assert first["choices"][0]["message"] == second["choices"][0]["message"]


def test_a_failing_model_answers_500_and_the_server_recovers(server, model, tokenizer, eos,
                                                             monkeypatch):
    base, _ = server

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(model, "hidden_states", broken)
    r = post(base, {"messages": messages(4), "max_tokens": 3, "temperature": 0})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error"
    assert "simulated failure" in r.json()["error"]["message"]
    monkeypatch.undo()
    good = post(base, {"messages": messages(4), "max_tokens": 3, "temperature": 0}).json()
    assert good["choices"][0]["message"]["content"] == expected(model, tokenizer, eos, messages(4), 3)[0]
