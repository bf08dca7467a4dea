"""Time to first token and tokens per second of a streamed generative model, against the same model in-process.

    python -m bench.streaming                                # c=1 and c=16, 5 ms a token, 64 tokens
    python -m bench.streaming --concurrency 1,4,16 --token-ms 2 --tokens 128 --transports grpc
    python -m bench.streaming --continuous-batching          # requests join running generations

The model is the test suite's character-level model (``tests/fixtures/char_model.py``), each character one
token, made ``--token-ms`` apart (a sleep standing in for a model's step, so that the figures are those of a
model that takes time per token, not of a character lookup). It is served twice, each with batch size 16 and
one worker: with its generator handler and ``generative: true``, read through OpenAI's streamed chat
completions (``openai``: server-sent events over HTTP/1.1, by httpx in threads); and with its decoupled tensor
handler, read through gRPC ``ModelStreamInfer`` by ``tritonclient``'s streaming API (``grpc``: one client and
stream per thread, a response per token). The in-process loop advances the same generators, with the same
sleep, in turn in one thread, a token each, as one worker runs a batch of them. Reported per concurrency:
median and p90 time to first token, tokens per second per stream (after the first), and in all.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.harness.servers import Server
from bench.harness.setups import dms_serving

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
PROMPT = "Alice was"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def in_process(streams: int, tokens: int, token_s: float) -> list[tuple[float, float, int]]:
    """(time to first token, time to last, tokens) of ``streams`` generators advanced in turn in one thread, a
    token each, as one worker runs a batch of them."""
    sys.path.insert(0, str(FIXTURES))
    from char_generator_handler import _generate  # type: ignore[import-not-found]
    from char_model import CharModel, train  # type: ignore[import-not-found]

    model = CharModel(train())
    began = time.perf_counter()
    running = {}
    for seed in range(streams):
        request = {"prompt": PROMPT, "max_tokens": tokens, "temperature": 0.8, "seed": seed, "pause_s": token_s}
        running[seed] = _generate(model, request)
    first: dict[int, float] = {}
    counts = dict.fromkeys(running, 0)
    out: list[tuple[float, float, int]] = []
    while running:
        for seed, generator in list(running.items()):
            if next(generator, None) is None:
                out.append((first[seed], time.perf_counter() - began, counts[seed]))
                del running[seed]
                continue
            counts[seed] += 1
            first.setdefault(seed, time.perf_counter() - began)
    return out


def served(url: str, streams: int, tokens: int, token_s: float) -> list[tuple[float, float, int]]:
    out: list[tuple[float, float, int]] = []
    # Each request in one write: without TCP_NODELAY the client's second small write waits on a delayed ACK.
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    client = httpx.Client(transport=transport, timeout=120)

    def one(seed: int) -> None:
        request = {
            "model": "writer",
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": tokens,
            "temperature": 0.8,
            "seed": seed,
            "stream": True,
            "pause_s": token_s,
        }
        began = time.perf_counter()
        first, count = 0.0, 0
        with client.stream("POST", f"{url}/v1/chat/completions", json=request, timeout=120) as response:
            for line in response.iter_lines():
                if not line.startswith("data: {"):
                    continue
                if json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    count += 1
                    if count == 1:
                        first = time.perf_counter() - began
        out.append((first, time.perf_counter() - began, count))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    return out


def served_grpc(address: str, streams: int, tokens: int, token_s: float) -> list[tuple[float, float, int]]:
    """The same generation through gRPC ``ModelStreamInfer``, a decoupled model's response per token."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    out: list[tuple[float, float, int]] = []

    def tensor(name: str, datatype: str, value: object) -> grpcclient.InferInput:
        made = grpcclient.InferInput(name, [1], datatype)
        made.set_data_from_numpy(np.array([value], dtype=object if datatype == "BYTES" else np.float32))
        return made

    def one(seed: int) -> None:
        client = grpcclient.InferenceServerClient(address)
        done = threading.Event()
        first, count = 0.0, 0

        def on_response(result: object, error: object) -> None:
            nonlocal first, count
            response = result.get_response() if result is not None else None  # type: ignore[attr-defined]
            if response is None or response.parameters["triton_final_response"].bool_param:
                done.set()
                return
            count += 1
            if count == 1:
                first = time.perf_counter() - began

        client.start_stream(callback=on_response)
        inputs = [tensor("text_input", "BYTES", PROMPT.encode())]
        settings = {"temperature": 0.8, "seed": seed, "pause_s": token_s}
        inputs += [tensor(name, "FP32", value) for name, value in settings.items()]
        max_tokens = grpcclient.InferInput("max_tokens", [1], "INT32")
        max_tokens.set_data_from_numpy(np.array([tokens], dtype=np.int32))
        began = time.perf_counter()
        client.async_stream_infer("decoupled", [*inputs, max_tokens], enable_empty_final_response=True)
        done.wait(120)
        out.append((first, time.perf_counter() - began, count))
        client.stop_stream()
        client.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def summary(runs: list[tuple[float, float, int]]) -> str:
    firsts = [first * 1000 for first, _, _ in runs]
    rates = [(count - 1) / (last - first) for first, last, count in runs if count > 1 and last > first]
    span = max(last for _, last, _ in runs)
    total = sum(count for _, _, count in runs) / span
    return (
        f"first token p50 {statistics.median(firsts):7.2f} ms  p90 {percentile(firsts, 0.9):7.2f} ms   "
        f"tokens/s per stream {statistics.median(rates):7.1f}   in all {total:8.1f}"
    )


def start_server(folder: Path, continuous: bool = False) -> tuple[Server, str, str]:
    """The server with both models (``continuous``: with continuous batching); its inference URL and its gRPC
    address."""
    for name in ("char_model.py", "char_generator_handler.py", "char_decoupled_handler.py"):
        shutil.copy(FIXTURES / name, folder / name)
    sys.path.insert(0, str(FIXTURES))
    from char_model import save  # type: ignore[import-not-found]

    save(folder / "char_model.npz")
    base = "batchSize: 16\nmaxBatchDelay: 5\nminWorkers: 1\nmaxWorkers: 1\n"
    if continuous:
        base += "continuous_batching: true\n"
    for name, handler, config in (
        ("writer", "char_generator_handler.py", "generative: true\n" + base),
        ("decoupled", "char_decoupled_handler.py", base),
    ):
        (folder / f"{name}.yaml").write_text(config)
        archive = ["archive", "--model-name", name, "--handler", handler, "--config-file", f"{name}.yaml"]
        archive += ["--extra-files", "char_model.py,char_model.npz", "--export-path", "store"]
        subprocess.run([sys.executable, "-m", "dms", *archive], cwd=folder, check=True, capture_output=True)
    probe = json.dumps({"prompt": PROMPT, "max_tokens": 1}).encode()
    server = dms_serving(folder, folder / "store", ["writer=writer.mar", "decoupled=decoupled.mar"], "writer", probe)
    server.launch()
    grpc_address = server.start[server.start.index("--grpc-address") + 1]
    return server, server.probe_url.rsplit("/predictions/", 1)[0], grpc_address


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--token-ms", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transports", default="openai,grpc", help="of openai (SSE), grpc (ModelStreamInfer)")
    parser.add_argument("--continuous-batching", action="store_true", help="requests join running generations")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="dms-bench-streaming-"))
    server, url, grpc_address = start_server(folder, args.continuous_batching)
    token_s = args.token_ms / 1000
    clients = {
        "openai": ("DMS (OpenAI SSE)  ", lambda c: served(url, c, args.tokens, token_s)),
        "grpc": ("DMS (gRPC stream) ", lambda c: served_grpc(grpc_address, c, args.tokens, token_s)),
    }
    chosen = [clients[name] for name in args.transports.split(",")]
    try:
        served(url, 2, 8, token_s)  # warm up
        served_grpc(grpc_address, 2, 8, token_s)
        for streams in (int(c) for c in args.concurrency.split(",")):
            loop_runs: list[tuple[float, float, int]] = []
            runs: dict[str, list[tuple[float, float, int]]] = {label: [] for label, _ in chosen}
            for _ in range(args.rounds):
                loop_runs += in_process(streams, args.tokens, token_s)
                for label, run in chosen:
                    runs[label] += run(streams)
            print(f"c={streams}, {args.tokens} tokens, {args.token_ms:g} ms a token, {args.rounds} rounds")
            print(f"  in-process loop   {summary(loop_runs)}")
            for label, measured in runs.items():
                print(f"  {label}{summary(measured)}")
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
