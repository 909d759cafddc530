"""The chat server (``minillm.serve``) with dynamic batching vs one request at a time; batched decoding.

Two servers run in this process on free ports, each a uvicorn server in its own thread with the same
SmolLM2-135M-Instruct model: one with ``max_batch_size=8``, the other with ``max_batch_size=1``
(every request decoded alone — what a server without batching does). CLIENTS concurrent clients
send the same REQUESTS chat requests (greedy, at most NEW new tokens each) to one server; a run ends
when every answer is in. Before timing, both servers answer the request set once and their answers
(text and finish reason) are asserted equal: batching changes the speed, not the output. Then
alternating pairs (common.py): the requests/s and generated tokens/s of each side, medians.

The second group of rows is :func:`minillm.batching.throughput_vs_batch_size` without HTTP: greedy
tokens/s of :class:`~minillm.batching.BatchedGenerator` over the same prompts for several batch
sizes, every row making exactly NEW tokens (the figure chapter 16 plots); the median of PASSES
passes, the batch sizes in increasing order in one pass and decreasing in the next.

``MINILLM_BENCH_QUICK=1``: 8 requests, 6 new tokens, 2 pairs, one pass.

    python benchmarks/run.py serve
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time

from common import Row, assert_same_output, paired_timing, threads

# One torch thread: on a shared 2-core machine, two OpenMP threads made decoding in the main thread
# (the BatchedGenerator rows) up to 10x slower — a thread spin-waits for its descheduled partner —
# while the server's worker thread was hardly affected; with one thread both stand on equal footing.
REQUESTS, CLIENTS, NEW, PAIRS, THREADS = 16, 8, 12, 3, 1
BATCH_SIZES, PASSES = (1, 2, 4, 8, 16), 2
if os.environ.get("MINILLM_BENCH_QUICK") == "1":
    REQUESTS, NEW, PAIRS, BATCH_SIZES, PASSES = 8, 6, 2, (1, 4, 8), 1

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "Hi!",
             "Name three colours of the rainbow.", "How many legs does a spider have?",
             "Give me a synonym for happy.", "What is 12 times 7?", "Who wrote Hamlet?",
             "Explain gravity in one sentence.", "Suggest a name for a cat.",
             "What language is spoken in Brazil?", "Tell me a fun fact about octopuses.",
             "What is the boiling point of water?", "Translate 'thank you' into Spanish.",
             "What is a prime number?", "Recommend a book for a long flight."]


def start_server(app):
    """Run ``app`` with uvicorn in a daemon thread on a free port; return (server, base URL)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the benchmark server did not start")
        time.sleep(0.01)
    server.thread = thread
    return server, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


def ask_all(base: str, bodies: list[dict]) -> list[dict]:
    """Every request sent by CLIENTS concurrent clients (each takes the next request when its last
    one is answered); returns the responses in request order."""
    import httpx

    async def run() -> list[dict]:
        todo, out = list(enumerate(bodies)), [None] * len(bodies)
        async with httpx.AsyncClient(base_url=base, timeout=600) as client:
            async def one_client() -> None:
                while todo:
                    i, body = todo.pop(0)
                    r = await client.post("/v1/chat/completions", json=body)
                    r.raise_for_status()
                    out[i] = r.json()
            await asyncio.gather(*[one_client() for _ in range(CLIENTS)])
        return out

    return asyncio.run(run())


def run() -> list[Row]:
    from minillm.batching import throughput_vs_batch_size
    from minillm.gguf import smollm2_gguf_path, tokenizer_from_gguf
    from minillm.models.llama import LlamaForCausalLM
    from minillm.serve import ServeConfig, create_app

    print(f"  SmolLM2-135M server, {REQUESTS} chat requests x <= {NEW} tokens, {CLIENTS} clients, "
          f"max-batch-size 8 vs 1, {THREADS} threads", flush=True)
    rows = []
    with threads(THREADS):
        path = smollm2_gguf_path()
        model, tok = LlamaForCausalLM.from_gguf(path), tokenizer_from_gguf(path)
        bodies = [{"messages": [{"role": "user", "content": q}], "max_tokens": NEW, "temperature": 0}
                  for q in QUESTIONS[:REQUESTS]]
        servers = {}
        for batch in (8, 1):
            app = create_app(model, tok, ServeConfig(model_name="SmolLM2-135M-Instruct",
                                                     max_batch_size=batch))
            servers[batch] = start_server(app)
        try:
            answers = {b: ask_all(url, bodies) for b, (_, url) in servers.items()}
            for b in answers:  # also the warm-up of both servers
                answers[b] = [(a["choices"][0]["message"]["content"], a["choices"][0]["finish_reason"],
                               a["usage"]["completion_tokens"]) for a in answers[b]]
            assert_same_output(answers[8], answers[1], "server answers, max-batch-size 8 vs 1")
            tokens = sum(n for _, _, n in answers[8])
            p = paired_timing(lambda: ask_all(servers[8][1], bodies),
                              lambda: ask_all(servers[1][1], bodies), repeats=PAIRS, warmup=0)
            ref = "max-batch-size 1, same server and requests"
            rows.append(Row.timed(f"server requests/s, {CLIENTS} clients, max-batch-size 8", p,
                                  work=REQUESTS, unit="requests/s", reference_name=ref))
            rows.append(Row.timed(f"server generated tokens/s, {CLIENTS} clients, max-batch-size 8",
                                  p, work=tokens, unit="tokens/s", reference_name=ref))
            print("  server timed", flush=True)
        finally:
            for server, _ in servers.values():
                server.should_exit = True
                server.thread.join(timeout=60)

        prompts = [tok.apply_chat_template(b["messages"], tokenize=True) for b in bodies]
        passes = []  # the batch sizes in increasing, then decreasing order: drift hits all alike
        for i in range(PASSES):
            order = BATCH_SIZES if i % 2 == 0 else BATCH_SIZES[::-1]
            passes.append(throughput_vs_batch_size(model, prompts, order, NEW))
        rates = {b: statistics.median(p[b] for p in passes) for b in BATCH_SIZES}
        for b, rate in rates.items():
            rows.append(Row(f"BatchedGenerator greedy tokens/s, batch {b}, {NEW} new", rate,
                            rates[1] if b != 1 else None, "tokens/s",
                            reference_name="batch 1" if b != 1 else f"{len(prompts)} chat prompts, "
                                                                    f"median of {PASSES} passes"))
    return rows


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
