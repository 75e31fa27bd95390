"""Served throughput and latency, with and without micro-batching, under concurrent load.

Starts ``attend serve MODEL_DIR`` twice on 127.0.0.1 (``--max-batch 1``: every request alone;
``--max-batch N``: micro-batching), and for each runs a load generator in a *second process*
(this script re-invoked with ``--client``): C concurrent clients, each sending one text per
``POST /v1/predict`` as soon as its previous answer arrives, for a fixed duration after a
warm-up. The client is bare asyncio HTTP/1.1 (keep-alive, requests pre-encoded), so the load
generator takes little of the CPU it shares with the server. It prints requests/s, p50/p99
latency (every request's latency kept as a sample of the benchmarks' shared harness,
``benchmarks/harness.py``), errors, and the ratio batched / unbatched. The two settings run one
after the other, not in interleaved rounds: two servers under load at once would share the cores.

The server gets ``--threads`` intra-op threads (default 1) and the client runs in its own
process, so on a 2-core machine they do not share a core. Texts are real: WordNet glosses
(bundled) unless ``--texts-from`` names another dataset.

Usage::

    python benchmarks/serve_load.py                          # MiniLM, 32 clients, 20 s per setting
    python benchmarks/serve_load.py MODEL_DIR                # any model directory
    python benchmarks/serve_load.py MODEL_DIR --clients 32 --seconds 30 --max-batch 32 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/harness.py, a sibling module

import harness


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def minilm_dir(out: Path, labels: tuple[str, ...] = ("negative", "positive")) -> Path:
    """A servable model directory: pretrained all-MiniLM-L6-v2 + an untrained linear head.

    Throughput does not depend on the head's weights, and MiniLM is the size users serve.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import shutil

    from attend import __version__
    from attend.io import atomic_write_json, save_weights
    from attend.models import build
    from attend.models.minilm import tokenizer_path

    model = build({"model_type": "minilm", "num_labels": len(labels), "pretrained": True})
    out.mkdir(parents=True, exist_ok=True)
    digest = save_weights(model, out / "model.safetensors")
    config = {"attend_version": __version__, "model": {**model.config.to_dict(), "pretrained": False},
              "tokenizer": {"max_length": 128}, "labels": list(labels), "weights_sha256": digest}  # fmt: skip
    atomic_write_json(out / "config.json", config)
    shutil.copyfile(tokenizer_path(), out / "tokenizer.json")
    return out


def _texts(dataset: str, n: int = 2000, seed: int = 0) -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from attend.data.datasets import load_dataset

    texts = load_dataset(dataset).texts
    return random.Random(seed).sample(texts, min(n, len(texts)))


def _request(host: str, text: str) -> bytes:
    body = json.dumps({"text": text}).encode()
    head = (f"POST /v1/predict HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a kept-alive connection; read the whole response; return its status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0)
    await reader.readexactly(length)
    return status


async def _load(url: str, texts: list[str], clients: int, warmup: float, seconds: float) -> dict[str, Any]:
    """C closed-loop clients, each on its own kept-alive HTTP/1.1 connection.

    The client is plain asyncio streams with requests encoded up front: an HTTP library costs
    several ms of CPU per request (httpx measured about 5 ms), which on a small machine is taken
    from the server being measured. Responses are read whole; a non-200 status is an error.
    """
    latencies: list[float] = []
    errors = 0
    done = 0
    start_measure = time.perf_counter() + warmup
    stop = start_measure + seconds
    host, port = url.removeprefix("http://").split(":")
    bodies = [_request(f"{host}:{port}", text) for text in texts]

    async def client(i: int) -> None:
        nonlocal errors, done
        rng = random.Random(i)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    ok = await _exchange(reader, writer, rng.choice(bodies)) == 200
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    ok = False
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                t1 = time.perf_counter()
                # Every answer that arrives inside the window counts, one begun before it too: counting
                # only those begun inside had dropped each client's first one (up to one a client per
                # run), a larger share of the slower, unbatched server's answers.
                if start_measure <= t1 <= stop:
                    if ok:
                        latencies.append(t1 - t0)
                        done += 1
                    else:
                        errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    latency = harness.Timing("request", latencies)  # one sample per answered request
    return {
        "requests": done,
        "errors": errors,
        "throughput_rps": done / seconds,
        "p50_ms": latency.quantile(0.50) * 1000,
        "p99_ms": latency.quantile(0.99) * 1000,
        "mean_ms": latency.mean * 1000,
    }


def _run_client(args: argparse.Namespace) -> int:
    texts = _texts(args.texts_from)
    result = asyncio.run(_load(args.url, texts, args.clients, args.warmup, args.seconds))
    print(json.dumps(result))
    return 0


def _serve(
    model_dir: str, max_batch: int, max_wait_ms: float, threads: int, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "attend", "serve", model_dir, "--port", str(port), "--max-batch", str(max_batch),
               "--max-wait-ms", str(max_wait_ms), "--threads", str(threads), *extra]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not become ready")


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    from attend.data.datasets import DATASETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", nargs="?", type=harness.model_directory,
                        help="model directory (default: pretrained MiniLM, untrained head)")  # fmt: skip
    parser.add_argument("--clients", type=harness.positive_int, default=32)
    parser.add_argument("--seconds", type=harness.positive_float, default=20.0)
    parser.add_argument("--warmup", type=harness.non_negative_float, default=3.0)
    parser.add_argument("--max-batch", type=harness.positive_int, default=32)
    parser.add_argument("--max-wait-ms", type=harness.non_negative_float, default=5.0)
    parser.add_argument("--threads", type=harness.positive_int, default=1, help="server intra-op threads (default 1)")
    parser.add_argument("--bf16", action="store_true", help="serve the model in bfloat16 (attend serve --bf16)")
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                        help="attend serve --runtime (onnx: MODEL_DIR is an `attend export` directory)")
    parser.add_argument("--int8", action="store_true", help="serve the int8 model (attend serve --int8)")
    parser.add_argument("--texts-from", default="wordnet_topics", help="dataset of request texts",
                        choices=[name for name, info in DATASETS.items() if info.task == "classification"])
    parser.add_argument("--json", type=harness.output_file, help="write the results here")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return _run_client(args)
    # Conflicts `attend serve` would report only once the server starts (after a MiniLM copy was built).
    if args.runtime == "onnx" and not args.model_dir:
        parser.error("--runtime onnx needs MODEL_DIR, a directory made by `attend export` (the default model is "
                     "a PyTorch one)")  # fmt: skip
    if args.bf16 and (args.runtime == "onnx" or args.int8):
        parser.error("--bf16 goes with neither --runtime onnx nor --int8 (it serves the PyTorch model in bfloat16)")
    if not args.model_dir:
        args.model_dir = str(minilm_dir(harness.temp_dir("serve") / "minilm"))
    print(f"serve load test: {args.model_dir}, {args.clients} concurrent clients, {args.seconds:.0f} s measured "
          f"after {args.warmup:.0f} s warm-up, server threads {args.threads}, runtime {args.runtime}"
          f"{', bf16' if args.bf16 else ''}{', int8' if args.int8 else ''}, "
          "load from a second process")  # fmt: skip
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    results: dict[str, Any] = {}
    for label, max_batch in (("unbatched (--max-batch 1)", 1), (f"micro-batched (--max-batch {args.max_batch})",
                                                                 args.max_batch)):  # fmt: skip
        extra = ("--runtime", args.runtime, *(("--bf16",) if args.bf16 else ()), *(("--int8",) if args.int8 else ()))
        proc, url = _serve(args.model_dir, max_batch, args.max_wait_ms, args.threads, extra)
        try:
            client = subprocess.run(
                [sys.executable, __file__, "--client", "--url", url, "--clients", str(args.clients), "--seconds",
                 str(args.seconds), "--warmup", str(args.warmup), "--texts-from", args.texts_from],
                capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
            )  # fmt: skip
            row = json.loads(client.stdout.strip().splitlines()[-1])
            batches = _metric(url, "attend_batch_size_count")
            texts = _metric(url, "attend_batch_size_sum")
            row["mean_batch"] = texts / batches if batches else float("nan")
            # The service's own model timer: per model call, and as a share of the whole run (warm-up
            # included), i.e. whether the server is bound by the model or by everything around it.
            model_seconds = _metric(url, "attend_inference_seconds_sum")
            calls = _metric(url, "attend_inference_seconds_count")
            row["model_ms_per_call"] = 1000 * model_seconds / calls if calls else float("nan")
            row["model_busy"] = model_seconds / (args.seconds + args.warmup)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        results[label] = row
        print(f"  {label:<32} {row['throughput_rps']:8.1f} req/s   p50 {row['p50_ms']:7.1f} ms   "
              f"p99 {row['p99_ms']:7.1f} ms   errors {row['errors']}   mean batch {row['mean_batch']:.1f}   "
              f"model {row['model_ms_per_call']:.1f} ms/call, busy {row['model_busy']:.0%}")  # fmt: skip
    rows = list(results.values())
    ratio = rows[1]["throughput_rps"] / rows[0]["throughput_rps"]
    print(f"throughput ratio batched / unbatched: {ratio:.2f}x (goal >= 3x at 32 clients): "
          f"{'MET' if ratio >= 3 else 'NOT MET'}")  # fmt: skip
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "results": results, "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
