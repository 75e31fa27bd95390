"""Shared fixtures: small synthetic labelled data whose label is decided by one planted word."""

from __future__ import annotations

import contextlib
import csv
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

POSITIVE = ["great", "excellent", "wonderful", "superb", "delightful"]
NEGATIVE = ["awful", "terrible", "boring", "dreadful", "tedious"]
FILLER = "the movie plot actor scene film story music camera time one it was is and a of with".split()


def planted_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Texts of filler words with one sentiment word planted; the label follows that word."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.choices(FILLER, k=rng.randint(4, 12))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def planted_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "planted.csv", planted_rows(400))


#: Small configs of every registered model, by model name: the registry-wide tests build each
#: (and fail for a registered model that has none here).
SMALL_MODELS = {
    "encoder": {"dim": 32, "num_layers": 2, "num_heads": 2, "pooling": "attention"},
    "bilstm_attention": {"embed_dim": 16, "hidden_dim": 16},
    "minilm": {"pretrained": False, "bert": {"num_layers": 2}},
    "e5": {"pretrained": False, "bert": {"num_layers": 2, "vocab_size": 30522}},
    "m3e": {"pretrained": False, "bert": {"num_layers": 2, "vocab_size": 30522}},
}

#: Small configs of the registered recommenders (their batches are not text): the registry-wide
#: tests build each with a batch of its own (tests/models/test_registry.py).
SMALL_RECOMMENDERS = {
    "sasrec": {"num_items": 20, "dim": 16, "num_heads": 2, "max_length": 8,
               "items": {"categorical": {"genres": [4, 2]}, "numeric": ["year"], "text_dim": 6}},
    "din": {"num_items": 20, "num_users": 4, "dim": 8, "items": {"categorical": {"genres": [4, 2]},
                                                                "fusion": "attention"}},
}  # fmt: skip

#: Small configs of the registered translators (their batches carry decoder inputs): tests/models/test_seq2seq.py.
SMALL_SEQ2SEQ = {
    "seq2seq": {"vocab_size": 40, "dim": 16, "encoder_layers": 2, "decoder_layers": 2, "num_heads": 2,
                "max_length": 32, "dropout": 0.0},
}  # fmt: skip

#: The models :func:`trained` trains once per session: (registered model, options, learning rate).
TRAINED = {
    "encoder": ("encoder", {"dim": 32, "num_layers": 2, "num_heads": 4, "pooling": "attention"}, 3e-3),
    "encoder_cls": ("encoder", {"dim": 32, "num_layers": 1, "num_heads": 2, "pooling": "cls"}, 3e-3),
    "bilstm_attention": ("bilstm_attention", {"embed_dim": 32, "hidden_dim": 32}, 1e-2),
}


#: Test modules whose tests share module fixtures that take many seconds to build (a fitted focus
#: assistant, exported graphs, trained recommenders): xdist sends each whole to one worker, which
#: builds them once. Split between the two workers, each had built them.
WHOLE_MODULES = frozenset(f"tests/{m}.py" for m in (
    "apps/test_focus", "apps/test_monitor", "apps/test_recommend", "deploy/test_compress", "deploy/test_export",
    "deploy/test_export_seq2seq", "models/test_e5", "models/test_m3e", "models/test_minilm"))  # fmt: skip


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's load scheduling, a test at a time, except that each of :data:`WHOLE_MODULES` goes
    to one worker (xdist's own ``--dist loadgroup`` marks no group under pytest 9.2: it renames
    tests by an attribute pytest no longer reads). Another ``--dist`` mode, asked for, is xdist's."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    if missing := sorted(m for m in WHOLE_MODULES if not (config.rootpath / m).is_file()):
        raise pytest.UsageError(f"WHOLE_MODULES names no such test module: {missing} (renamed?)")

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in WHOLE_MODULES else nodeid

    return Scheduling(config, log)


def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every xdist worker of this run shares (the run's own base folder without xdist)."""
    import os

    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """The folder ``name`` that ``build(folder)`` fills once for the whole run: the first worker to
    ask builds it, one asking meanwhile waits for it, and later ones find it built. For a session
    fixture's training, which each worker had repeated."""
    import shutil

    from filelock import FileLock

    root = shared_folder(tmp_path_factory) / name
    with FileLock(f"{root}.lock"):
        if not (root / ".built").is_file():
            shutil.rmtree(root, ignore_errors=True)  # a build that failed part-way
            root.mkdir(parents=True)
            build(root)
            (root / ".built").touch()
    return root


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Model directories trained once per test run on the planted-word task, by :data:`TRAINED`
    name, and ``"data"``: the CSV they learned from (600 rows: 480 train, 60 dev, 60 test).

    Shared: a test that changes a directory works on a copy (:func:`copy_model`).
    """

    def build(root: Path) -> None:
        from attend.training import TrainingArgs, train

        data = write_csv(root / "planted.csv", planted_rows(600, seed=1))
        for name, (model, options, lr) in TRAINED.items():
            # Random batches, as when the explanation tests' figures were measured: on 480 texts the
            # batch order decides how a model routes the planted word, and length-grouped batches give
            # other models (raw last-layer attention of the 2-layer encoder hit 0.08, 0.65 and 0.68 of
            # the texts over seeds 0-2 against 0.48, 0.52 and 0.45; rollout 0.97, 0.70 and 1.0 against
            # 0.97, 0.88 and 1.0). These tests check the explanation methods, not the batching.
            args = TrainingArgs(epochs=5, batch_size=16, lr=lr, progress=False, vocab_size=500, seed=0,
                                group_by_length=False)  # fmt: skip
            result = train(data, root / name, model=model, model_options=options, args=args)
            assert result.metrics["accuracy"] > 0.9, (name, result.report)

    root = built_once(tmp_path_factory, "trained", build)
    return {"data": root / "planted.csv", **{name: root / name for name in TRAINED}}


def run_cli(*args: str, stdin: str | bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``attend ARGS`` run by :func:`attend.cli.main` in this process, answered as ``subprocess.run``
    answers (``returncode``, ``stdout``, ``stderr``; argparse's refusals exit 2 as they do), without
    the seconds a fresh Python takes to import torch again. Standard input and output are pipes,
    not terminals, and the process's thread count is restored after. Tests of the process itself
    (signals, plugin warnings, a closed pipe, arguments that are not UTF-8) start a real one."""
    import io
    import os

    import torch

    from attend.cli import main

    def stream(data: bytes = b"") -> io.TextIOWrapper:
        return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="", write_through=True)

    raw = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
    streams = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = stream(raw), stream(), stream()
    threads, here = torch.get_num_threads(), Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        try:
            code = main(list(args))
        except SystemExit as stop:  # argparse's refusal, or --help; a message is said as Python says it
            code = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
            if not isinstance(stop.code, int | None):
                print(stop.code, file=sys.stderr)
        out, err = (s.buffer.getvalue().decode("utf-8", "replace") for s in (sys.stdout, sys.stderr))  # type: ignore[attr-defined]
    finally:
        sys.stdin, sys.stdout, sys.stderr = streams
        os.chdir(here)
        torch.set_num_threads(threads)

    def text(s: str) -> str:  # universal newlines, as subprocess.run(text=True) reads them
        return s.replace("\r\n", "\n").replace("\r", "\n")

    return subprocess.CompletedProcess(["attend", *args], code, text(out), text(err))


def copy_model(source: Path, parent: Path, name: str | None = None) -> Path:
    """A private copy of a model directory under ``parent``."""
    import shutil

    return Path(shutil.copytree(source, parent / (name or source.name)))


def start_server(args: list[str], *, merge_output: bool = True) -> tuple[subprocess.Popen, str]:
    """``attend serve ARGS`` on a free loopback port, once it answers ``/readyz``: the process and its URL.

    A port found free can be taken by another test before the server binds it; the server then exits
    saying so, and another port is tried (three in all).
    """
    import os
    import socket

    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "attend", "serve", *args, "--port", str(port)],
                                stdout=subprocess.PIPE if merge_output else subprocess.DEVNULL,
                                stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
                                env=env, text=True)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
            raise AssertionError("server did not become ready in 90 s")
        said = (proc.stdout or proc.stderr).read() if (proc.stdout or proc.stderr) else ""
        # Taken before attend's own check ("cannot listen"), or while the model loaded (uvicorn's bind).
        if not any(sign in said for sign in ("cannot listen", "already in use", "attempting to bind")):
            raise AssertionError(f"server exited: {said}")
    raise AssertionError(f"no free port after three tries: {said}")


def kill_at(tmp_path: Path, point: str, *args: str) -> None:
    """Run ``attend ARGS`` until it reaches ``point`` (see tests/paused.py), then SIGKILL it."""
    flag = tmp_path / f"paused-{point.replace(':', '-')}"
    driver = Path(__file__).parent / "paused.py"
    process = subprocess.Popen([sys.executable, str(driver), point, str(flag), *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not flag.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the run never reached {point}: {process.stderr.read() if process.stderr else ''}")
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


#: The toy translation task: reverse a short sequence of these words.
REVERSE_WORDS = "red green blue cat dog sun".split()


def reverse_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Rows ``{"source", "target"}``: 2-4 words, and the same words in reverse order."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(REVERSE_WORDS) for _ in range(rng.randint(2, 4))]
        rows.append({"source": " ".join(words), "target": " ".join(reversed(words))})
    return rows


#: A translator small enough to train in seconds, and the options that teach it the reversal.
TOY_TRANSLATOR = {"dim": 32, "encoder_layers": 2, "decoder_layers": 2, "num_heads": 2, "dropout": 0.0,
                  "attention_dropout": 0.0}
TOY_TRANSLATION_ARGS = {"epochs": 15, "batch_size": 32, "vocab_size": 60, "max_length": 16, "label_smoothing": 0.0,
                        "patience": 0, "lr": 3e-3, "progress": False, "seed": 0}  # fmt: skip


@pytest.fixture(scope="session")
def translator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A translator trained once per run on :func:`reverse_pairs` (2,000 rows, from ``pairs.csv`` beside it)."""

    def build(root: Path) -> None:
        from attend.training import TrainingArgs, train_translation

        data = write_csv(root / "pairs.csv", reverse_pairs(2000))
        train_translation(data, root / "model", model_options=dict(TOY_TRANSLATOR),
                          args=TrainingArgs(**TOY_TRANSLATION_ARGS))  # fmt: skip

    return built_once(tmp_path_factory, "translator", build) / "model"


def chromium_page(url: str, png: Path) -> str:
    """Open ``url`` in headless Debian Chromium: write a 1100x900 screenshot to ``png``, return the DOM."""
    import shutil
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian chromium is needed for this test (make install installs it)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={png.parent / 'chromium-profile'}", "--window-size=1100,900"]  # fmt: skip
    subprocess.run([chromium, *flags, f"--screenshot={png}", url], check=True, capture_output=True, timeout=120)
    return subprocess.run([chromium, *flags, "--dump-dom", url], check=True, capture_output=True, text=True,
                          timeout=120).stdout  # fmt: skip


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """Run an ASGI ``app`` with uvicorn in a thread on a free port; yield its base URL, then stop it."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
