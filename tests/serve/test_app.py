"""The HTTP service: routes, validation (never a 5xx), micro-batching, metrics, load and shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from attend.apps.monitor.cli import main as monitor_main
from attend.io import ModelDirError
from attend.runtime import load
from attend.serve import RouterSpec, Routes
from attend.serve.app import ServeSettings, create_app, load_for_serving
from attend.serve.batching import MicroBatcher
from tests.conftest import copy_model, planted_rows, start_server


@pytest.fixture(scope="module")
def model_dir(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_model(trained["encoder"], tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(model_dir: Path):
    app = create_app(load(model_dir), ServeSettings(max_batch=8, max_wait_ms=2, max_texts=5, max_chars=400))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_predict_explain_model_health_metrics(client: TestClient) -> None:
    one = client.post("/v1/predict", json={"text": "the film was wonderful"})
    assert one.status_code == 200
    body = one.json()
    assert body["model"] == "encoder" and len(body["predictions"]) == 1
    pred = body["predictions"][0]
    assert pred["label"] == "pos" and pred["top"][0] == {"label": "pos", "probability": pred["probability"]}
    assert len(pred["top"]) == 2 and not pred["truncated"]
    texts = ["a dreadful plot", "wonderful " + "a " * 190]  # 192 tokens: more than the model's 128
    many = client.post("/v1/predict", json={"texts": texts, "top_k": 1}).json()
    assert [p["label"] for p in many["predictions"]] == ["neg", "pos"]
    assert [p["truncated"] for p in many["predictions"]] == [False, True] and len(many["predictions"][0]["top"]) == 1

    explained = client.post("/v1/explain", json={"text": "the film was wonderful", "method": "grad_attention"})
    assert explained.status_code == 200
    exp = explained.json()["explanations"][0]
    assert exp["tokens"][1:-1] == ["the", "film", "was", "wonderful"] and len(exp["importance"]) == 6
    assert exp["label"] == "pos" and exp["method"] == "grad_attention" and abs(sum(exp["importance"]) - 1) < 1e-5

    info = client.get("/v1/model").json()
    assert info["labels"] == ["neg", "pos"] and info["runtime"] == "torch" and info["metrics"]["accuracy"] > 0.8
    assert info["config"]["model"]["model_type"] == "encoder" and info["version"]["weights_sha256"]
    assert "/" not in info["config"]["data"]["source"]  # the training file's name, not the server's folders
    assert info["limits"]["max_texts"] == 5 and "rollout" in info["explain_methods"]
    assert client.get("/healthz").json() == {"status": "ok"} and client.get("/readyz").status_code == 200
    assert client.head("/healthz").status_code == 200 and client.head("/readyz").status_code == 200  # were 405
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/predict" in paths
    # Each route's own error answers (every route had listed 413, 415 and 422, and none 500 or 503).
    answers = {(path, method): sorted(operation["responses"]) for path, operations in paths.items()
               for method, operation in operations.items()}  # fmt: skip
    assert answers[("/v1/predict", "post")] == ["200", "413", "415", "422", "500", "503"]
    assert answers[("/v1/explain", "post")] == ["200", "400", "413", "415", "422", "500", "503"]
    assert answers[("/readyz", "get")] == ["200", "503"]
    assert answers[("/healthz", "get")] == answers[("/metrics", "get")] == answers[("/v1/model", "get")] == ["200"]
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]  # it said JSON
    refused = paths["/v1/predict"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert refused["$ref"].endswith("/ErrorBody")  # the body the service answers, not FastAPI's own
    # A GET with a query: its 422 is ours too (FastAPI's HTTPValidationError had been listed for it).
    from fastapi import FastAPI

    from attend.serve.app import _document_errors

    queried = FastAPI()

    @queried.get("/digest")
    async def digest(limit: int = 10) -> dict:
        return {"limit": limit}

    _document_errors(queried.routes)
    listed = queried.openapi()["paths"]["/digest"]["get"]["responses"]
    assert listed["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    metrics = client.get("/metrics").text
    assert 'attend_requests_total{method="POST",route="/v1/predict",status="200"}' in metrics
    assert "attend_batch_size_count" in metrics and "attend_inference_seconds_bucket" in metrics
    assert 'attend_request_seconds_bucket{le="0.001",method="GET",route="/healthz",status="200"}' in metrics
    # Which worker answered (under --workers N a scrape reads one): nothing had told them apart.
    assert f'attend_worker_start_time_seconds{{pid="{os.getpid()}"}}' in metrics


def test_a_value_is_named_only_where_it_was_refused(client: TestClient) -> None:
    said = client.post("/v1/predict", json={"text": "a", "topk": 3}).json()["error"]["message"]
    assert said == "topk: Extra inputs are not permitted"  # a misspelt key: it had said ", not 3"


@pytest.mark.parametrize(
    ("body", "status", "message", "field"),
    [
        ({"texts": []}, 422, "give at least one text", "texts"),
        ({"texts": ["a"] * 6}, 422, "6 texts, more than the limit of 5", "texts"),
        ({"text": "   "}, 422, "text is an empty text", "text"),  # named as sent (was "texts[0]")
        ({"texts": ["ok", ""]}, 422, "texts[1] is an empty text", "texts.1"),
        ({"texts": ["ok", "\u200b\ufeff\x00"]}, 422, "texts[1] is an empty text (only invisible characters)",
         "texts.1"),
        ({"text": "x" * 401}, 422, "text: 401 characters, over the limit of 400", "text"),
        ({"texts": [1, 2]}, 422, "texts.0: Input should be a valid string, not 1", "texts.0"),  # the value, too
        ({"text": ["a text"]}, 422, "text: Input should be a valid string, not a list", "text"),
        ({"text": "a", "top_k": 2, "threshold": "x" * 5}, 422, "threshold: Input should be a valid number, not a "
         "string", "threshold"),
        ({"texts": "one string"}, 422, "texts: Input should be a valid list", "texts"),
        ({}, 422, 'exactly one of "text" or "texts"', "body"),
        ({"text": "a", "texts": ["b"]}, 422, 'exactly one of "text" or "texts"', "body"),
        ({"text": "a", "top_k": 0}, 422, "top_k", "top_k"),
        ({"text": "a", "top_k": "2"}, 422, "top_k: Input should be a valid integer, not a string", "top_k"),
        ({"text": "a", "top_k": 2.5}, 422, "top_k: Input should be a valid integer, not 2.5", "top_k"),
        ({"text": "a", "top_k": True}, 422, "top_k: Input should be a valid integer", "top_k"),
        ({"text": "a", "colour": "red"}, 422, "colour: Extra inputs are not permitted", "colour"),
        ([1, 2], 422, "Input should be a valid dictionary", "body"),
    ],
)
def test_bad_requests_are_clear_4xx(client: TestClient, body: object, status: int, message: str, field: str) -> None:
    response = client.post("/v1/predict", json=body)
    assert response.status_code == status and message in response.json()["error"]["message"], response.json()
    # Every 422 names its field in details, the schema's or the route's own check alike, in one syntax.
    detail = response.json()["error"]["details"][0]
    assert detail["field"] == field and detail["message"] and detail["message"] in response.json()["error"]["message"]


@pytest.mark.parametrize("route", ["/v1/predict", "/v1/explain"])
def test_a_lone_surrogate_is_a_422_naming_the_text(client: TestClient, route: str) -> None:
    body = b'{"texts": ["fine", "\\ud800 x"]}'  # valid JSON, but not Unicode text
    response = client.post(route, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "texts[1] contains an unpaired surrogate '\\ud800'" in response.json()["error"]["message"]


def test_a_text_the_model_cannot_read_is_answered_with_a_warning(client: TestClient) -> None:
    body = client.post("/v1/predict", json={"texts": ["😀👍🎉", "a wonderful film", "a 😀 👍 🎉 film"]}).json()
    first, second, third = body["predictions"]
    assert "all [UNK]" in first["warning"] and second["warning"] is None
    # Mostly unreadable: said too (only a text the model could read none of was, and 3 of 5 went unsaid).
    assert third["warning"].startswith("60% of this text's pieces are not in the model's vocabulary ([UNK])")


def test_a_body_nested_too_deeply_is_a_422(client: TestClient) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    response = client.post("/v1/predict", content=deep, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "malformed JSON body" in response.json()["error"]["message"]


def test_a_body_that_is_not_utf8_is_a_422(client: TestClient) -> None:
    response = client.post("/v1/predict", content=b'{"text": "caf\xe9"}', headers={"content-type": "application/json"})
    assert response.status_code == 422 and "not UTF-8 (byte 0xe9 at offset 13)" in response.json()["error"]["message"]


def test_malformed_json_content_type_size_and_explain_errors(client: TestClient) -> None:
    bad = client.post("/v1/predict", content=b'{"text": ', headers={"content-type": "application/json"})
    assert bad.status_code == 422 and bad.json()["error"]["message"] == "malformed JSON body"
    assert {d["field"] for d in bad.json()["error"]["details"]} == {"body"}  # not a character offset
    form = client.post("/v1/predict", content=b"text=hi", headers={"content-type": "text/plain"})
    assert form.status_code == 415 and "application/json" in form.json()["error"]["message"]
    # A coding the service does not read: a gzip body had been a 422 "not UTF-8", a plain body labelled gzip read.
    import gzip

    for body in (gzip.compress(b'{"text": "hi"}'), b'{"text": "hi"}'):
        coded = client.post("/v1/predict", content=body, headers={"content-type": "application/json",
                                                                   "content-encoding": "gzip"})  # fmt: skip
        assert coded.status_code == 415 and "Content-Encoding 'gzip'" in coded.json()["error"]["message"]
    plain = client.post("/v1/predict", content=b'{"text": "hi"}', headers={"content-type": "application/json",
                                                                           "content-encoding": "identity"})  # fmt: skip
    assert plain.status_code == 200
    huge = client.post("/v1/predict", content=b"{}", headers={"content-type": "application/json",
                                                              "content-length": "999999999"})  # fmt: skip
    assert huge.status_code == 413 and huge.json()["error"]["limit"] == "max_body_bytes"  # it had named none
    assert "(max_body_bytes, --max-body-bytes)" in huge.json()["error"]["message"]
    # A browser's POST from another site's page is refused (a bodiless no-cors fetch had stopped a focus
    # session); the service's own origin, and clients that are no browser, are served.
    for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}, {"origin": "null"}):
        refused = client.post("/v1/predict", json={"text": "hi"}, headers=headers)
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden", headers
    assert client.post("/v1/predict", json={"text": "hi"}, headers={"origin": "http://testserver"}).status_code == 200
    # Behind a proxy that rewrites Host, the browser's own word (same-origin), or X-Forwarded-Host, decides; a
    # default port written out is the same place.
    for headers in ({"origin": "https://app.example", "host": "127.0.0.1:8000", "sec-fetch-site": "same-origin"},
                    {"origin": "https://app.example", "host": "127.0.0.1:8000", "x-forwarded-host": "app.example"},
                    {"origin": "https://app.example", "host": "app.example:443"}):  # fmt: skip
        assert client.post("/v1/predict", json={"text": "hi"}, headers=headers).status_code == 200, headers
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404  # a CDN's scripts
    assert client.get("/openapi.json").status_code == 200
    # An emoji newer than Python's Unicode tables (U+1FA77) is a text: it had been "only invisible characters".
    newer = client.post("/v1/predict", json={"texts": ["love it \U0001fa77", "\U0001fa77\U0001fa77"]})
    assert newer.status_code == 200, newer.text
    assert client.post("/v1/explain", json={"text": "a", "method": "magic"}).status_code == 422
    pooling = client.post("/v1/explain", json={"text": "a", "method": "pooling"})
    assert pooling.status_code == 200  # the encoder has attention pooling
    other = client.post("/v1/explain", json={"text": "a", "method": "pooling", "target": "pos"})  # it reads no label
    assert other.status_code == 422 and "does not depend on the label" in other.json()["error"]["message"]
    assert other.json()["error"]["details"][0]["field"] == "target"  # it had been "body"
    target = client.post("/v1/explain", json={"text": "a", "target": "maybe"})
    assert target.status_code == 422 and "not a label" in target.json()["error"]["message"]
    for field in ("method", "target"):  # a long value is not repeated whole (10 kB of it had come back, twice)
        long = client.post("/v1/explain", json={"text": "a", field: "x" * 5000})
        assert long.status_code == 422 and len(long.text) < 600, len(long.text)
    assert client.get("/nowhere").status_code == 404
    # A POST where no route takes one is the router's answer, not a complaint about its content type.
    assert client.post("/metrics").status_code == 405 and client.post("/nowhere", content=b"x").status_code == 404
    assert client.post("/v1/predict", json={"text": "still serving"}).status_code == 200
    # Refused before routing, yet counted under their route (an included router does not list its paths).
    counted = client.get("/metrics").text
    for status in ("413", "415"):
        assert f'attend_requests_total{{method="POST",route="/v1/predict",status="{status}"}}' in counted, counted


def test_a_body_cut_short_by_its_client_going_away_is_counted_as_abandoned(client: TestClient) -> None:
    """Its cut JSON had been parsed, a 422 counted against the client's data."""
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "http.request", "body": b'{"te', "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"",
             "root_path": "", "scheme": "http", "server": ("test", 80), "client": ("test", 1), "http_version": "1.1",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")]}  # fmt: skip
    asyncio.run(client.app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 499
    counted = client.get("/metrics").text
    assert 'attend_requests_total{method="POST",route="/v1/predict",status="499"} 1.0' in counted, counted


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
BODIES = JSON | st.fixed_dictionaries(
    {},
    optional={
        "text": JSON | st.text(max_size=500),
        "texts": st.lists(st.text(max_size=30) | JSON, max_size=7) | JSON,
        "top_k": st.integers(-3, 2000) | JSON,
        "method": st.sampled_from(["rollout", "attention", "flow", "pooling", "nope"]) | JSON,
        "target": st.sampled_from(["pos", "neg", "x"]) | JSON,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, route=st.sampled_from(["/v1/predict", "/v1/explain"]))
def test_fuzzed_bodies_never_get_a_5xx(client: TestClient, body: object, route: str) -> None:
    response = client.post(route, json=body)
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        assert response.json()["error"]["message"]


# --- micro-batching --------------------------------------------------------------------------


class _HeldModel:
    """A model whose first call holds until ``release`` is set, so that requests queue behind it
    whatever the timing; ``answer`` maps each call's texts to its results."""

    def __init__(self, answer: Callable[[list[str]], list[str]] = list) -> None:
        self.calls: list[list[str]] = []
        self.busy, self.release, self.answer = threading.Event(), threading.Event(), answer

    def __call__(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.busy.set()
            self.release.wait(30)
        return self.answer(texts)

    async def held(self, **options: Any) -> tuple[MicroBatcher, asyncio.Task[list[str] | None]]:
        """A started batcher on this model, busy with a first request ``["warm"]`` (its task)."""
        batcher = MicroBatcher(self, **options)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(["warm"]))
        await asyncio.to_thread(self.busy.wait, 30)  # the model is now busy with the first request
        return batcher, first


def test_micro_batcher_groups_concurrent_requests_and_keeps_order() -> None:
    """Requests that queue while the model is busy share the next calls: batches of up to max_batch
    texts, in arrival order, a request never split unless it alone exceeds max_batch. The model's
    first call holds until every request is queued, so the grouping does not depend on timing."""
    run = _HeldModel(lambda texts: [t.upper() for t in texts])
    calls, release = run.calls, run.release

    async def scenario(max_batch: int) -> None:
        batcher, first = await run.held(max_batch=max_batch, max_wait_ms=50)
        requests = [[f"r{i}a", f"r{i}b"] for i in range(10)] + [[f"big{j}" for j in range(7)]]
        pending = [asyncio.create_task(batcher.submit(r)) for r in requests]
        while batcher.queued() < len(requests):
            await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(first, *pending)
        await batcher.stop()
        assert results == [["WARM"], *[[t.upper() for t in r] for r in requests]]

    asyncio.run(scenario(max_batch=8))
    texts = [t for i in range(10) for t in (f"r{i}a", f"r{i}b")]
    assert calls == [["warm"], texts[:8], texts[8:16], texts[16:], [f"big{j}" for j in range(7)]]
    calls.clear()
    run.busy.clear()
    release.clear()
    asyncio.run(scenario(max_batch=1))  # no batching: one text per call, a request split into single texts
    assert len(calls) == 28 and all(len(c) == 1 for c in calls)


def test_the_queued_gauge_counts_requests_and_a_gone_callers_parts_are_not_run(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """queued() had been the queue's length: parts of at most max_batch texts (1,845 for 30 requests),
    and none for a request held while its batch filled. A request whose client went away had still
    been run, and counted as answered."""
    from attend.serve import batching

    monkeypatch.setattr(batching, "WATCH_SECONDS", 0.01)
    run = _HeldModel()
    calls, release = run.calls, run.release

    async def scenario() -> None:
        batcher, first = await run.held(max_batch=2, max_wait_ms=0)
        assert batcher.queued() == 0  # running, not waiting
        left = asyncio.Event()

        async def gone() -> bool:
            return left.is_set()

        kept = asyncio.create_task(batcher.submit([f"k{i}" for i in range(5)]))  # three parts: one request
        dropped = asyncio.create_task(batcher.submit(["d0", "d1", "d2"], gone=gone))
        while batcher.queued() < 2:
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert batcher.queued() == 2
        left.set()
        assert await dropped is None
        release.set()
        assert await first == ["warm"] and await kept == [f"k{i}" for i in range(5)]
        await batcher.stop()
        assert batcher.queued() == 0

    asyncio.run(scenario())
    assert calls == [["warm"], ["k0", "k1"], ["k2", "k3"], ["k4"]]  # d0-d2 never ran


def test_a_request_cancelled_while_it_watches_its_client_drops_its_parts() -> None:
    """The shutdown grace ending cancels the routes' handlers: with a client watcher, asyncio.wait had
    cancelled nothing, so their parts still ran and stop() waited for them. An empty request had been
    counted as waiting for good."""
    run = _HeldModel()

    async def scenario() -> None:
        batcher, first = await run.held(max_batch=1, max_wait_ms=0)

        async def here() -> bool:
            return False

        assert await batcher.submit([], gone=here) == [] and batcher.queued() == 0
        waiting = asyncio.create_task(batcher.submit(["y"], gone=here))
        while batcher.queued() < 1:
            await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        run.release.set()
        await first
        await batcher.stop()
        assert batcher.queued() == 0

    asyncio.run(scenario())
    assert run.calls == [["warm"]]  # "y" never ran


def test_micro_batcher_fails_only_the_faulty_request_and_drains_on_stop() -> None:
    """A batch that raises is run again request by request: only the request at fault gets the error."""

    def answer(texts: list[str]) -> list[str]:
        if "boom" in texts:
            raise ValueError("bad text")
        return texts

    run = _HeldModel(answer)
    calls, release = run.calls, run.release

    async def scenario() -> None:
        batcher, first = await run.held(max_batch=8, max_wait_ms=50)
        requests = [["t0"], ["t1", "boom"], ["t2"], ["t3"]]
        pending = [asyncio.create_task(batcher.submit(r)) for r in requests]
        while batcher.queued() < len(requests):
            await asyncio.sleep(0)
        release.set()
        await first
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert results[0] == ["t0"] and results[2] == ["t2"] and results[3] == ["t3"]
        assert isinstance(results[1], ValueError) and "bad text" in str(results[1])
        late = [asyncio.create_task(batcher.submit([f"late{i}"])) for i in range(6)]
        await asyncio.sleep(0)
        await batcher.stop()  # queued requests still finish
        assert [await p for p in late] == [[f"late{i}"] for i in range(6)]

    asyncio.run(scenario())
    assert calls[1] == ["t0", "t1", "boom", "t2", "t3"]  # they shared one batch, which failed


def test_a_failed_batchs_requests_fail_each_on_its_own_and_every_part_is_read() -> None:
    """Each request of a failed batch is run again alone, outside the batch's except block: its
    error had carried the batch's (another client's exception and text) as its cause. A request
    split into parts reads every part's outcome: a failed first part had left the others'
    exceptions unread ("Future exception was never retrieved")."""
    import gc

    def run(texts: list[str]) -> list[str]:
        bad = [t for t in texts if t.startswith("boom")]
        if bad:
            raise ValueError(f"bad text {bad[0]}")
        return texts

    unread: list[dict[str, Any]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unread.append(context))
        batcher = MicroBatcher(run, max_batch=2, max_wait_ms=200)
        await batcher.start()
        a, b = (asyncio.create_task(batcher.submit([t])) for t in ("boom-a", "boom-b"))
        failed = await asyncio.gather(a, b, return_exceptions=True)
        assert [str(e) for e in failed] == ["bad text boom-a", "bad text boom-b"]
        assert all(e.__context__ is None and e.__cause__ is None for e in failed)  # not chained to the batch's
        with pytest.raises(ValueError, match="bad text boom1"):
            await batcher.submit(["boom1", "x", "y", "boom2"])  # two parts of max_batch=2, both failing
        await batcher.stop()
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert not unread


def test_a_model_that_fails_is_a_500_without_its_words_and_is_logged(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PyTorch raises RuntimeError for a failing model (out of memory, a shape error): the route had
    caught it as the batcher's "not running" and answered a 503 "unavailable" with its words (which
    quoted the request's text), logging nothing."""
    runtime = load(model_dir)
    predictions = runtime.predictions

    def failing(texts: list[str], **options: Any) -> Any:
        if any("poison" in t for t in texts):
            raise RuntimeError(f"out of memory on {texts}")
        return predictions(texts, **options)

    runtime.predictions = failing  # type: ignore[method-assign]
    app = create_app(runtime, ServeSettings(max_batch=8, max_wait_ms=2))
    # The error is answered where it is logged: it no longer goes on to the server, which logged it
    # again (TestClient raises what reaches it).
    with caplog.at_level(logging.ERROR), TestClient(app) as client:
        bad = client.post("/v1/predict", json={"text": "poison my private words"})
        good = client.post("/v1/predict", json={"text": "a good text"})
    assert bad.status_code == 500 and "private" not in bad.text, bad.text
    assert bad.json()["error"]["type"] == "internal"
    assert good.status_code == 200
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == ["POST /v1/predict failed"]


@pytest.mark.parametrize("drain", [True, False])
def test_connections_queued_on_the_port_are_accepted_before_it_closes(drain: bool) -> None:
    """A client whose handshake the kernel completed and whose request was sent is answered at
    shutdown: closing the listening socket with it still queued reset it (SIGTERM under load: 25 of 30
    sent requests reset with one worker). Without accept_backlog, the same clients are reset: the
    test sees the failure it guards against."""
    from attend.serve.servers import accept_backlog

    class Answer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(b"answer to " + data)  # type: ignore[attr-defined]
            self.transport.close()

    async def scenario() -> list[bytes | str]:
        server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0, backlog=64)
        port = server.sockets[0].getsockname()[1]
        # The event loop does not run meanwhile: the kernel completes each handshake and queues it.
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
        for i, client in enumerate(clients):
            client.sendall(f"request {i}".encode())
        if drain:
            await accept_backlog([server])
        server.close()  # what uvicorn's shutdown does first
        await server.wait_closed()
        got: list[bytes | str] = []
        for client in clients:
            try:
                got.append(await asyncio.to_thread(client.recv, 100))
            except ConnectionResetError:
                got.append("reset")
            client.close()
        return got

    got = asyncio.run(scenario())
    if drain:
        assert got == [f"answer to request {i}".encode() for i in range(20)]
    else:
        assert got == ["reset"] * 20


def test_every_worker_process_takes_its_ports_queue_before_closing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """With --workers, uvicorn builds each worker's Server in its own Process class: the draining
    server had been used by a single process only, and the workers reset their queued connections."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess, multiprocess

    from attend.serve import app as app_module
    from attend.serve.servers import DrainingServer, DrainingWorker

    config = uvicorn.Config("attend.serve.app:app_from_env", factory=True, workers=2)
    worker = DrainingWorker(config, sockets=[])
    assert isinstance(worker.server, DrainingServer)
    seen: list[type] = []
    monkeypatch.setattr(Multiprocess, "run", lambda self: seen.append(multiprocess.Process))
    monkeypatch.setattr(uvicorn.Config, "bind_socket", lambda self: socket.socket())
    made = multiprocess.Process
    app_module._run_workers(config)
    assert seen == [DrainingWorker] and multiprocess.Process is made  # for the run only


def test_a_body_that_stops_arriving_is_a_408_not_a_connection_held_for_good(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers saying 100 bytes and 8 of them sent: the request had waited, its connection open, for ever."""
    from attend.serve import app as app_module

    monkeypatch.setattr(app_module, "BODY_SECONDS", 0.2)
    app = create_app(load(model_dir), ServeSettings())
    sent: list[dict[str, Any]] = []
    parts = [{"type": "http.request", "body": b'{"text":', "more_body": True}]

    async def receive() -> dict[str, Any]:
        if parts:
            return parts.pop()
        await asyncio.sleep(3600)  # the rest never comes
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
             "root_path": ""}  # fmt: skip

    async def scenario() -> None:
        await asyncio.wait_for(app(scope, receive, send), 30)

    asyncio.run(scenario())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    assert start["status"] == 408 and body["error"]["type"] == "request_timeout"
    assert "did not arrive whole within 0.2 s (8 bytes came)" in body["error"]["message"]


def test_a_drained_batcher_runs_the_batch_waiting_to_fill_at_once() -> None:
    """Shutdown has begun: no request can join, so the batch must not wait out max_wait_ms (an hour here)."""
    calls: list[list[str]] = []

    async def scenario() -> list[list[str]]:
        batcher = MicroBatcher(lambda texts: calls.append(list(texts)) or texts, max_batch=8, max_wait_ms=3_600_000)
        await batcher.start()
        waiting = [asyncio.create_task(batcher.submit([f"t{i}"])) for i in range(3)]
        while batcher.queued():
            await asyncio.sleep(0.01)  # the worker takes them into its batch and waits for more

        assert not calls and not any(task.done() for task in waiting)
        batcher.drain()
        answers = await asyncio.wait_for(asyncio.gather(*waiting), timeout=30)
        await batcher.stop()
        return answers

    assert asyncio.run(scenario()) == [["t0"], ["t1"], ["t2"]]
    assert calls == [["t0", "t1", "t2"]]  # one batch, run when drained


def test_micro_batcher_answers_callers_on_another_event_loop() -> None:
    """A server's loop starts the batcher; a client on its own loop submits (TestClient + httpx do).

    Each answer must wake the loop that waits for it: resolved on the batcher's loop instead, the
    caller's loop slept on in select() and the request hung (a CI run timed out on it).
    """
    server = asyncio.new_event_loop()
    thread = threading.Thread(target=server.run_forever, daemon=True)
    thread.start()
    batcher = MicroBatcher(lambda texts: [t[::-1] for t in texts], max_batch=4, max_wait_ms=20)
    asyncio.run_coroutine_threadsafe(batcher.start(), server).result(10)

    async def client() -> list[list[str]]:
        return await asyncio.gather(*[batcher.submit([f"text {i}", "ab"]) for i in range(6)])

    answers: list[list[list[str]]] = []
    # No timer on the client's loop (it would wake the loop and hide the bug): watch from outside.
    caller = threading.Thread(target=lambda: answers.append(asyncio.run(client())), daemon=True)
    try:
        caller.start()
        caller.join(30)
        assert answers == [[[f"{i} txet", "ba"] for i in range(6)]], "the caller's loop was never woken"
    finally:
        asyncio.run_coroutine_threadsafe(batcher.stop(), server).result(10)
        server.call_soon_threadsafe(server.stop)
        thread.join(10)
        server.close()


def test_settings_and_pickle_directory_are_refused(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_batch=0"):
        ServeSettings(max_batch=0)
    with pytest.raises(ValueError, match="runtime='tf'"):
        ServeSettings(runtime="tf")
    for wait in (-1.0, float("nan"), float("inf"), 1e13):  # inf and 1e13 overflowed the batch thread's timeout
        with pytest.raises(ValueError, match=r"max_wait_ms=.*: a wait in milliseconds from 0 to 60,000"):
            ServeSettings(max_wait_ms=wait)
    with pytest.raises(ValueError, match="--bf16 goes with neither --runtime onnx nor --int8"):
        ServeSettings(bf16=True, quantized=True)
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "extra.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelDirError, match="pickle"):
        load_for_serving(bad, ServeSettings())
    result = subprocess.run([sys.executable, "-m", "attend", "serve", str(bad), "--port", "1"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and "pickle" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "attend", "serve", str(model_dir), "--bf16", "--runtime", "onnx"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and "--bf16" in result.stderr and "Traceback" not in result.stderr


def test_bf16_service_predicts_like_fp32_and_explains(model_dir: Path) -> None:
    settings = ServeSettings(bf16=True)
    predictor = load_for_serving(model_dir, settings)
    assert next(predictor.model.parameters()).dtype == torch.bfloat16
    texts = ["the film was wonderful", "a dreadful plot"]
    reference = load(model_dir).predict_proba(texts)
    with TestClient(create_app(predictor, settings)) as bf16:
        body = bf16.post("/v1/predict", json={"texts": texts}).json()
        probs = [p["top"][0]["probability"] for p in body["predictions"]]
        assert [p["label"] for p in body["predictions"]] == ["pos", "neg"]
        assert max(abs(p - reference[i].max()) for i, p in enumerate(probs)) < 0.02
        assert bf16.get("/v1/model").json()["runtime"] == "torch-bf16"
        explained = bf16.post("/v1/explain", json={"text": texts[0], "method": "rollout"})
        assert explained.status_code == 200 and len(explained.json()["explanations"][0]["importance"]) == 6


# --- a real server on 127.0.0.1 ------------------------------------------------------------------


def _start(model_dir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    return start_server([str(model_dir), *extra])


def test_load_on_loopback_has_zero_errors_and_batches(model_dir: Path) -> None:
    proc, url = _start(model_dir, "--max-batch", "16", "--max-wait-ms", "20")
    try:
        texts = [row["text"] for row in planted_rows(200, seed=3)]

        async def load_test() -> list[int]:
            limits = httpx.Limits(max_connections=32)
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
                semaphore = asyncio.Semaphore(32)

                async def one(text: str) -> int:
                    async with semaphore:
                        response = await http.post("/v1/predict", json={"text": text})
                        return response.status_code

                return await asyncio.gather(*(one(t) for t in texts))

        statuses = asyncio.run(load_test())
        assert statuses == [200] * len(texts)
        metrics = httpx.get(f"{url}/metrics").text
        batches = next(float(line.split()[-1]) for line in metrics.splitlines()
                       if line.startswith("attend_batch_size_count"))  # fmt: skip
        assert batches < len(texts), "no request was batched with another"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _gauge(response: httpx.Response, name: str) -> float:
    return next(float(line.split()[-1]) for line in response.text.splitlines() if line.startswith(name + " "))


def test_graceful_shutdown_finishes_requests_in_flight(model_dir: Path) -> None:
    # The batch waits a minute for more (longer than the 30 s shutdown grace): it runs when SIGTERM
    # comes, as no request can join it then. It had waited the minute out, and was cut off with a 503.
    proc, url = _start(model_dir, "--max-batch", "64", "--max-wait-ms", "60000")
    try:

        async def in_flight() -> list[int]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                tasks = [asyncio.create_task(http.post("/v1/predict", json={"text": f"wonderful {i}"}))
                         for i in range(5)]  # fmt: skip
                deadline = time.monotonic() + 30
                while (seen := _gauge(await http.get("/metrics"), "attend_in_flight_requests")) < 6:  # 5 + this one
                    assert time.monotonic() < deadline, f"only {seen} requests in flight after 30 s"
                    await asyncio.sleep(0.05)  # the requests now wait in the batcher
                proc.send_signal(signal.SIGTERM)
                return [(await t).status_code for t in tasks]

        assert asyncio.run(in_flight()) == [200] * 5
        assert proc.wait(timeout=60) == 0  # a requested, graceful shutdown is a success
        log = proc.stdout.read() if proc.stdout else ""
        assert "Waiting for application shutdown" in log and "Finished server process" in log, log
    finally:
        if proc.poll() is None:
            proc.kill()


def test_workers_refuse_new_connections_once_they_stop_accepting(model_dir: Path) -> None:
    # uvicorn's parent held the listening socket open through its workers' graceful shutdown, so new
    # connections were accepted by the kernel, never read, and reset when it exited (about 90 requests
    # under load); a refused connection tells the client its request never arrived.
    proc, url = _start(model_dir, "--workers", "2")
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        while sum("Application startup complete" in line for line in list(lines)) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, lines
            time.sleep(0.1)
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"text": "wonderful"}).encode()
        head = f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        with socket.create_connection((host, int(port)), timeout=60) as held:
            held.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[:5])
            time.sleep(1)  # the worker reads the headers: this request is in flight, its body still to come
            proc.send_signal(signal.SIGTERM)
            refused, deadline = False, time.monotonic() + 20
            while not refused and time.monotonic() < deadline:
                try:
                    socket.create_connection((host, int(port)), timeout=1).close()
                    time.sleep(0.1)
                except ConnectionRefusedError:
                    refused = True
            held.sendall(body[5:])
            answer = b""
            while chunk := held.recv(65536):
                answer += chunk
        assert refused, "new connections were still accepted after the workers stopped accepting"
        assert answer.startswith(b"HTTP/1.1 200") and b'"predictions"' in answer, answer[:300]
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def slow_router(runtime: object, seconds: float) -> object:
    """A router whose one route outlasts a short shutdown grace (for the test below)."""
    from fastapi import APIRouter

    router = APIRouter()

    @router.post("/v1/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(seconds)
        return {"done": "yes"}

    return router


def test_a_request_cut_off_by_the_shutdown_grace_gets_a_503(caplog: pytest.LogCaptureFixture) -> None:
    """It got uvicorn's plain-text 500, and the log a traceback ("Exception in ASGI application")."""
    import uvicorn

    app = create_app(None, ServeSettings(), routers=[RouterSpec("tests.serve.test_app:slow_router", {"seconds": 60})])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, timeout_graceful_shutdown=1,
                                           log_level="info"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        answers: list[httpx.Response] = []
        client = threading.Thread(target=lambda: answers.append(
            httpx.post(f"http://127.0.0.1:{port}/v1/slow", json={}, timeout=30)))  # fmt: skip
        client.start()
        deadline = time.monotonic() + 30
        while _gauge(httpx.get(f"http://127.0.0.1:{port}/metrics"), "attend_in_flight_requests") < 2:  # + this one
            assert time.monotonic() < deadline, "the request never arrived"
            time.sleep(0.05)
        server.should_exit = True  # what SIGTERM sets
        client.join(timeout=30)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    (answer,) = answers
    assert answer.status_code == 503 and answer.json()["error"]["type"] == "shutting_down", answer.text
    assert "Exception in ASGI application" not in caplog.text


def shadowing_router(runtime: object) -> object:
    """A plugin that serves a path the model's routes serve already."""
    from fastapi import APIRouter

    router = APIRouter()

    @router.post("/v1/predict")
    async def mine() -> dict[str, str]:
        return {"mine": "yes"}

    return router


def failing_router(runtime: object, result: str = "raise") -> object:
    if result == "raise":
        raise RuntimeError("the plugin's own failure")
    return None


def broken_router(runtime: object) -> object:
    raise RuntimeError("secret-token-123")


def unstartable_router(runtime: object) -> object:
    """Routes whose start hook fails (a database it cannot reach, say)."""
    from fastapi import APIRouter

    from attend.serve import Routes

    async def start() -> None:
        raise RuntimeError("the queue is unreachable")

    return Routes(router=APIRouter(), start=start)


def test_a_start_hook_that_fails_is_one_line_and_exit_2(
    model_dir: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """uvicorn printed its 26-line traceback, "Application startup failed", and exited 3."""
    from attend.cli import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sigterm = signal.getsignal(signal.SIGTERM)  # serve() sets its own
    try:
        code = main(["serve", str(model_dir), "--router", "tests.serve.test_app:unstartable_router",
                     "--port", str(port)])  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines()[-1] == ("error: router factory 'tests.serve.test_app:unstartable_router' "
                                                  "failed to start: RuntimeError: the queue is unreachable")
    assert "Traceback" not in caplog.text + err and "Application startup failed" not in caplog.text + err


def test_a_tasks_own_info_is_shown_and_one_the_service_sets_is_refused(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task's info entry other than the schema's was dropped from GET /v1/model; one it sets itself
    made every GET /v1/model a 500 ("got multiple values for keyword argument 'name'")."""
    from attend.serve import app as app_module

    own = app_module.TASK_ROUTES["classification"]

    def with_info(extra: dict[str, object]) -> object:
        def routes(runtime: object, settings: ServeSettings, metrics: object) -> object:
            made = own(runtime, settings, metrics)
            made.info.update(extra)
            return made

        return routes

    runtime = load(model_dir)
    monkeypatch.setitem(app_module.TASK_ROUTES, "classification", with_info({"feature_count": 12}))
    with TestClient(create_app(runtime, ServeSettings())) as client:
        assert client.get("/v1/model").json()["feature_count"] == 12
    monkeypatch.setitem(app_module.TASK_ROUTES, "classification", with_info({"name": "mine"}))
    with pytest.raises(ValueError, match=r"routes' info sets \['name'\], which GET /v1/model gives itself"):
        create_app(runtime, ServeSettings())


def test_a_tasks_routes_that_fail_or_take_a_service_path_are_refused_in_one_line(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin's routes factory that raised had ended `attend serve` in a traceback; one serving GET /metrics
    had answered in the service's place (no Prometheus output, without a word)."""
    from fastapi import APIRouter

    from attend.serve import Routes
    from attend.serve import app as app_module

    runtime = load(model_dir)

    def exploding(runtime: object, settings: ServeSettings, metrics: object) -> Routes:
        raise RuntimeError("routes factory exploded")

    monkeypatch.setitem(app_module.TASK_ROUTES, "classification", exploding)
    with pytest.raises(ValueError, match=r"the 'classification' routes \(tests\.serve\.test_app\..*exploding\) failed: "
                                         r"RuntimeError: routes factory exploded"):  # fmt: skip
        create_app(runtime, ServeSettings())

    def with_metrics(runtime: object, settings: ServeSettings, metrics: object) -> Routes:
        router = APIRouter()

        @router.get("/metrics")
        def mine() -> dict[str, int]:
            return {"mine": 1}

        return Routes(router=router)

    monkeypatch.setitem(app_module.TASK_ROUTES, "classification", with_metrics)
    with pytest.raises(ValueError, match=r"the 'classification' routes: GET /metrics is the service's own"):
        create_app(runtime, ServeSettings())


def test_your_own_routers_are_mounted_listed_and_refused_clearly(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`attend serve` had no way to mount a router of one's own; a bad one failed with its import's or
    call's own traceback (a None only later, in FastAPI); one serving a taken path was shadowed in
    silence; a plain APIRouter was missing from /v1/model; and a 500 sent the exception's words."""
    from attend.cli import main

    runtime = load(model_dir)
    app = create_app(runtime, ServeSettings(), routers=[RouterSpec("tests.serve.test_app:slow_router",
                                                                   {"seconds": 0})])  # fmt: skip
    with TestClient(app) as client:
        assert client.post("/v1/slow", json={}).json() == {"done": "yes"}
        assert client.get("/v1/model").json()["apps"] == {"tests.serve.test_app:slow_router": {"paths": ["/v1/slow"]}}
    for spec, said in (("tests.serve.nowhere:make", "cannot import 'tests.serve.nowhere' (ModuleNotFoundError"),
                       ("tests.serve.test_app:nope", "module 'tests.serve.test_app' has no function 'nope'"),
                       ("tests.serve.test_app:TestClient", "returned TestClient, not a FastAPI APIRouter"),
                       ("tests.serve.test_app:failing_router", "failed: RuntimeError: the plugin's own failure"),
                       ("tests.serve.test_app:shadowing_router", "POST /v1/predict is served already")):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(f"{spec}") + ".*" + re.escape(said)):
            create_app(runtime, ServeSettings(), routers=[RouterSpec(spec)])
    with pytest.raises(ValueError, match=r"returned NoneType"):
        create_app(runtime, ServeSettings(), routers=[RouterSpec("tests.serve.test_app:failing_router",
                                                                 {"result": "none"})])  # fmt: skip
    # From the command line: mounted from the folder serve runs in; refused before the port is bound.
    (tmp_path / "myroutes.py").write_text("def make(runtime):\n    raise ValueError('no routes today')\n")
    monkeypatch.chdir(tmp_path)
    assert main(["serve", str(model_dir), "--router", "myroutes:make", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "router factory 'myroutes:make' failed: ValueError: no routes today" in err and "Traceback" not in err
    # attend's own apps name their bad input themselves (it was wrapped in their factory's name).
    assert main(["serve", "--support-index", str(tmp_path / "nope"), "--port", "1"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'nope'}: no such support index")
    # An error inside a route: the client is told there was one, not its words (they are in the log).
    app = create_app(None, ServeSettings(), routers=[RouterSpec("tests.serve.test_app:error_router")])
    with TestClient(app, raise_server_exceptions=False) as client:
        failed = client.get("/v1/fails")
    assert failed.status_code == 500 and "secret-token-123" not in failed.text
    assert failed.json()["error"] == {"type": "internal", "message": "an internal error (RuntimeError); the "
                                                                    "server's log has it"}  # fmt: skip


def info_router(runtime: object, info: dict, mount: str = "") -> object:
    """A router that says something of itself in ``info`` (and mounts an app at ``mount``)."""
    from fastapi import APIRouter, FastAPI

    router = APIRouter()

    @router.get("/v1/mine")
    async def mine() -> dict[str, str]:
        return {"mine": "yes"}

    if mount:
        router.mount(mount, FastAPI())
    return Routes(router=router, info=info)


def prefixed_router(runtime: object, prefix: str) -> object:
    """A plain router whose route's path starts with ``prefix``."""
    from fastapi import APIRouter

    router = APIRouter(prefix=prefix)

    @router.get("/ping")
    async def ping() -> dict[str, str]:
        return {"at": prefix}

    return router


def exiting_router(runtime: object) -> object:
    raise SystemExit(0)


def test_a_routers_info_is_shown_and_one_it_cannot_show_is_refused(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --router's info other than 'apps' had been dropped in silence, a second router's 'apps' entry had
    replaced the first's, a mount at "/" had been FastAPI's traceback, and a sys.exit() in a factory or
    at a module's import had ended `attend serve` with exit 0 and no word."""
    from attend.cli import main

    runtime = load(model_dir)
    spec = "tests.serve.test_app:info_router"
    app = create_app(runtime, ServeSettings(), routers=[
        RouterSpec(spec, {"info": {"custom": 1, "limits": {"max_rows": 5}}, "mount": "/sub"}),
        RouterSpec(spec.replace("info_router", "slow_router"), {"seconds": 0})])  # fmt: skip
    with TestClient(app) as client:
        shown = client.get("/v1/model").json()["apps"]
    assert shown[spec] == {"paths": ["/sub", "/v1/mine"], "custom": 1, "limits": {"max_rows": 5}}
    assert shown["tests.serve.test_app:slow_router"] == {"paths": ["/v1/slow"]}
    for info, said in (({"apps": {spec: {}}}, f"its apps entry {spec!r} is {spec}'s already"),
                       ({"apps": [1]}, "its info's 'apps' is a list"),
                       ({"apps": {"x": {}}, "name": "evil"}, "its info has 'apps' and ['name'], which would not")):
        with pytest.raises(ValueError, match=re.escape(said)):
            create_app(runtime, ServeSettings(),
                       routers=[RouterSpec(spec, {"info": {}}), RouterSpec(spec, {"info": info})])
    # One factory given twice with other options is two routers, each listed (the second had been refused).
    twice = "tests.serve.test_app:prefixed_router"
    app = create_app(runtime, ServeSettings(), routers=[RouterSpec(twice, {"prefix": "/a"}),
                                                        RouterSpec(twice, {"prefix": "/b"})])  # fmt: skip
    with TestClient(app) as client:
        assert client.get("/b/ping").json() == {"at": "/b"}
        assert client.get("/v1/model").json()["apps"] == {twice: {"paths": ["/a/ping"]},
                                                          f"{twice} #2": {"paths": ["/b/ping"]}}  # fmt: skip
    with pytest.raises(ValueError, match=re.escape(f"{spec}: its router cannot be served: FastAPIError: Prefix")):
        create_app(runtime, ServeSettings(), routers=[RouterSpec(spec, {"info": {}, "mount": "/"})])
    with pytest.raises(ValueError, match=r"exiting_router' failed: SystemExit: 0"):
        create_app(runtime, ServeSettings(), routers=[RouterSpec("tests.serve.test_app:exiting_router")])
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(0)\n")
    monkeypatch.chdir(tmp_path)
    assert main(["serve", str(model_dir), "--router", "exits:make", "--port", "1"]) == 2
    assert "error: router factory 'exits:make': cannot import 'exits' (SystemExit: 0)" in capsys.readouterr().err


def error_router(runtime: object) -> object:
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/v1/fails")
    async def fails() -> dict[str, str]:
        raise RuntimeError("secret-token-123")

    @router.get("/v1/locked")
    async def locked() -> dict[str, str]:  # what an app's store raises past SQLite's busy timeout
        import sqlite3

        from sqlalchemy.exc import OperationalError

        raise OperationalError("INSERT INTO m VALUES (?)", ("a secret text",), sqlite3.OperationalError(
            "database is locked"))

    return router


def test_a_database_held_locked_by_another_process_is_a_503_to_send_again(caplog: pytest.LogCaptureFixture) -> None:
    """The focus and monitor routes had answered a 500 "internal" for a lock another process held."""
    app = create_app(None, ServeSettings(), routers=[RouterSpec("tests.serve.test_app:error_router")])
    with caplog.at_level(logging.WARNING), TestClient(app) as client:
        busy = client.get("/v1/locked")
        failed = client.get("/v1/fails")
    assert busy.status_code == 503 and busy.json()["error"]["type"] == "unavailable"
    assert "send the request again" in busy.json()["error"]["message"] and failed.status_code == 500
    assert "a secret text" not in caplog.text and "the database stayed locked" in caplog.text


def test_service_mounts_the_monitor_route(model_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "monitor.db"
    spec = RouterSpec("attend.apps.monitor.router:served_monitor_router", {"db": str(db)})  # what --monitor-db mounts
    app = create_app(load(model_dir), ServeSettings(), routers=[spec])
    events = [{"id": i, "time": f"2024-05-01T0{i}:00:00Z", "text": "a dreadful boring film"} for i in range(3)]
    with TestClient(app) as test_client:
        first = test_client.post("/v1/monitor/events", json=events)
        again = test_client.post("/v1/monitor/events", json=events)
        bad = test_client.post("/v1/monitor/events", json=[{"id": 9, "text": "no time"}])
        assert "/v1/monitor/events" in test_client.get("/openapi.json").json()["paths"]
        info = test_client.get("/v1/model").json()
        # A run with another window while the service runs: GET /v1/model shows it at once (it had
        # shown the old one until the next POST).
        (tmp_path / "e.jsonl").write_text(json.dumps(events[0] | {"id": "run-1"}) + "\n")
        run = ["run", "--events", str(tmp_path / "e.jsonl"), "--model", str(model_dir), "--db", str(db)]
        assert monitor_main([*run, "--window", "15m"]) == 0
        assert test_client.get("/v1/model").json()["apps"]["monitor"]["detection"]["window"] == 900
    # The app and its own limits are listed (the service's --max-texts/--max-chars bound the model's routes).
    # the database's name alone: the server's folders are no client's business (the full path had been given)
    assert info["apps"]["monitor"] | {"detection": None} == {"db": db.name, "detection": None,
                                                             "limits": {"max_events": 1000, "max_chars": 20_000},
                                                             "explain_method": "grad_attention"}  # fmt: skip
    assert info["apps"]["monitor"]["detection"]["window"] == 3600  # what its alerts are judged with
    assert first.status_code == 200 and first.json()["stored"] == 3
    assert again.json()["stored"] == 0 and again.json()["duplicates"] == 3
    assert bad.status_code == 422 and db.is_file()


def test_service_mounts_the_support_route(model_dir: Path, tmp_path: Path) -> None:
    from attend.apps.support import build_index

    faq = Path(__file__).parents[1] / "apps" / "data" / "debian_faq_sample.csv"
    build_index(faq, tmp_path / "index", intents=False)
    spec = RouterSpec("attend.apps.support.router:served_support_router", {"index": str(tmp_path / "index")})
    app = create_app(load(model_dir), ServeSettings(), routers=[spec])
    with TestClient(app) as test_client:
        answer = test_client.post("/v1/support/ask", json={"question": "how do I install a package?"})
        bad = test_client.post("/v1/support/ask", json={"question": "  "})
        info = test_client.get("/v1/model").json()
    assert answer.status_code == 200 and answer.json()["answers"] and "handoff" in answer.json()
    assert answer.json()["retrieval"]["mode"] == "hybrid" and "answer_words" in answer.json()
    assert bad.status_code == 422
    assert info["apps"]["support"]["retrieval"] == "hybrid" and info["apps"]["support"]["entries"] == 15
    assert info["apps"]["support"]["limits"] == {"max_chars": 4000, "max_k": 50}


def test_bf16_without_hardware_support_warns(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from attend.runtime import classifier

    monkeypatch.setattr(classifier, "native_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="attend.serve"):
        predictor = load(model_dir, runtime="torch", bf16=True)
    assert "no AMX tiles" in caplog.text and "serve without --bf16" in caplog.text
    assert next(predictor.model.parameters()).dtype == torch.bfloat16  # still served, as asked


def test_a_busy_port_is_a_one_line_error(model_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "attend", "serve", str(model_dir), "--port", str(port)],
                                capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "choose another --port" in result.stderr and "Traceback" not in result.stderr


def test_an_address_not_of_this_machine_is_blamed_on_host_not_on_the_port() -> None:
    from attend.serve.app import check_port

    with pytest.raises(ValueError, match=r"192\.0\.2\.1 is not an address of this machine; choose another --host"):
        check_port("192.0.2.1", 18440)  # TEST-NET-1: documentation only, never a machine's own


def test_serve_takes_the_monitor_options_and_a_bad_label_leaves_no_database(model_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "monitor.db"
    result = subprocess.run([sys.executable, "-m", "attend", "serve", str(model_dir), "--monitor-db", str(db),
                             "--negative-label", "nope", "--port", "1"], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 2 and "--negative-label 'nope' is not a label" in result.stderr
    assert "Traceback" not in result.stderr and not db.exists()


def test_explanations_run_one_at_a_time_and_stay_out_of_the_batch_size_metric(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: concurrent explanations ran side by side in the thread pool, each slowing all the
    others (eight took 7.3 s each where one took 1.3 s), and each was counted as a micro-batch."""
    import attend.serve.classification as classification

    running, most = [0], [0]
    real = classification.explain

    def watched(*args: object, **kwargs: object) -> object:
        running[0] += 1
        most[0] = max(most[0], running[0])
        time.sleep(0.05)
        try:
            return real(*args, **kwargs)
        finally:
            running[0] -= 1

    monkeypatch.setattr(classification, "explain", watched)
    app = create_app(load(model_dir), ServeSettings())

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            replies = await asyncio.gather(*(http.post("/v1/explain", json={"text": f"wonderful film {i}"})
                                             for i in range(6)))  # fmt: skip
            return [reply.status_code for reply in replies]

    with TestClient(app) as test_client:  # runs the app's start-up (the batcher) for the burst
        assert asyncio.run(burst()) == [200] * 6
        assert most[0] == 1
        metrics = test_client.get("/metrics").text
    assert 'attend_inference_seconds_count{route="/v1/explain"} 6.0' in metrics
    assert "attend_batch_size_count 0.0" in metrics


def test_the_model_route_names_the_graph_served_and_the_whole_directory(
    model_dir: Path, trained: dict[str, Path], tmp_path: Path
) -> None:
    """ONNX, ONNX int8 and ensemble servers reported weights_sha256: null."""
    from attend.deploy.export import export_onnx
    from attend.deploy.quantization import quantize
    from attend.io import sha256_file
    from attend.runtime.ensemble import make_ensemble

    onnx_dir = tmp_path / "onnx"
    export_onnx(model_dir, onnx_dir, texts=["a fine film", "a dreadful plot"])
    quantize(onnx_dir)  # on the model's own test split
    for directory, int8, expected in ((onnx_dir, False, sha256_file(onnx_dir / "model.onnx")),
                                      (onnx_dir, True, sha256_file(onnx_dir / "model.int8.onnx"))):  # fmt: skip
        app = create_app(load(directory, int8=int8), ServeSettings(max_batch=8, max_wait_ms=50))
        with TestClient(app) as client:
            info = client.get("/v1/model").json()
            version = info["version"]
        # The batching applied: int8 answers each text alone (the settings given had been shown)
        assert (info["limits"]["max_batch"], info["limits"]["max_wait_ms"]) == ((1, 0.0) if int8 else (8, 50.0))
        assert version["weights_sha256"] == expected and version["config_sha256"] == sha256_file(
            directory / "config.json")
    ensemble = make_ensemble([trained["encoder_cls"], onnx_dir], tmp_path / "ens")["out_dir"]
    with TestClient(create_app(load(ensemble), ServeSettings())) as client:
        version = client.get("/v1/model").json()["version"]
    assert version["config_sha256"] == sha256_file(Path(ensemble) / "config.json")


def test_an_int8_ensemble_says_why_it_cannot_explain(trained: dict[str, Path], tmp_path: Path) -> None:
    """It said the members 'share none' of their methods, not that --int8 was the cause."""
    from attend.runtime.ensemble import make_ensemble

    ensemble = make_ensemble([trained["encoder"], trained["encoder_cls"]], tmp_path / "ens")["out_dir"]
    with TestClient(create_app(load(ensemble, int8=True), ServeSettings())) as client:
        answer = client.post("/v1/explain", json={"text": "a fine film"})
    assert answer.status_code >= 400 and "serve without --int8" in answer.text


def test_the_model_route_keeps_the_servers_folders_to_itself() -> None:
    """A translator's origin, a recommender's log and features, an ensemble member's source were paths."""
    from attend.serve.app import _public

    recommender = {"source": {"data": "/srv/secret/log.csv", "item_features": "/srv/secret/items.csv",
                              "user_col": "user"}, "notes": ["dropped 1 row"], "interactions": 75}  # fmt: skip
    assert _public("data", recommender) == {"source": {"data": "log.csv", "item_features": "items.csv",
                                                       "user_col": "user"}, "notes": ["dropped 1 row"],
                                            "interactions": 75}  # fmt: skip
    assert _public("data", {"origin": "/srv/secret/pairs.csv", "path": "/srv/x.csv", "sha256": "ab"}) == {
        "origin": "pairs.csv", "sha256": "ab"}
    assert _public("data", {"source": "dataset:wordnet_topics"}) == {"source": "dataset:wordnet_topics"}
    assert _public("data", {"source": "corpus v2/3 (cleaned)"}) == {"source": "corpus v2/3 (cleaned)"}  # no path
    members = {"members": [{"path": "members/00", "source": "/srv/secret/m", "weight": 1.0}]}
    assert _public("ensemble", members) == {"members": [{"path": "members/00", "source": "m", "weight": 1.0}]}


def test_the_config_hash_is_the_served_models(model_dir: Path, tmp_path: Path) -> None:
    """Read on every request, it named a folder replaced under the server, or failed with a 500 once deleted.
    So were the test metrics: a model retrained into the folder showed its figures beside the old weights."""
    from attend.io import sha256_file

    served = copy_model(model_dir, tmp_path)
    expected = sha256_file(served / "config.json")
    metrics = json.loads((served / "metrics.json").read_text())
    with TestClient(create_app(load(served), ServeSettings())) as client:
        (served / "metrics.json").write_text(json.dumps({**metrics, "accuracy": 0.123}))
        assert client.get("/v1/model").json()["metrics"]["accuracy"] == metrics["accuracy"]
        shutil.rmtree(served)
        answer = client.get("/v1/model")
    assert answer.status_code == 200 and answer.json()["version"]["config_sha256"] == expected
    assert answer.json()["metrics"] == json.loads(json.dumps(metrics))


def test_model_info_gives_the_figures_of_the_precision_served() -> None:
    from attend.serve.app import _served_metrics

    stored = {"accuracy": 0.8, "quantized": {
        "onnx": {"fp32": {"accuracy": 0.79}, "int8": {"accuracy": 0.82}, "accuracy_change": 0.03,
                 "data": "test split of /srv/private/reviews.csv (30 examples)"},
        "torch": {"fp32": {"accuracy": 0.8}, "int8": {"accuracy": 0.88}, "accuracy_change": 0.08, "data": "t"},
        "bf16": {"fp32": {"accuracy": 0.8}, "bf16": {"accuracy": 0.81}, "accuracy_change": 0.01, "data": "b"}}}
    assert _served_metrics(stored, "torch") is stored and _served_metrics(stored, "onnx") is stored
    for backend, expected, same in (("onnx-int8", 0.82, 0.79), ("torch-int8", 0.88, 0.8), ("torch-bf16", 0.81, 0.8)):
        served = _served_metrics(stored, backend)
        assert served is not None and served["accuracy"] == expected and served["runtime"] == backend
        assert served["fp32_same_data"] == {"accuracy": same} and served["fp32"] is stored
    # The data quantize measured on, named by its file as config is (its folders had been shown).
    assert _served_metrics(stored, "onnx-int8")["data"] == "test split of reviews.csv (30 examples)"  # type: ignore[index]
    stored["quantized"]["onnx"]["data"] = "test split of data/private/r.csv (3 examples)"  # relative: the same
    assert _served_metrics(stored, "onnx-int8")["data"] == "test split of r.csv (3 examples)"  # type: ignore[index]
    unscored = _served_metrics({"accuracy": 0.8}, "torch-int8")
    assert unscored is not None and unscored["accuracy"] == 0.8 and "was not scored" in unscored["note"]
    members = _served_metrics(stored, "ensemble:torch-int8,torch-int8")
    assert members is not None and members["note"] == "the fp32 ensemble's figures: its members are served in int8"


def test_model_info_names_files_not_the_servers_folders_at_any_depth() -> None:
    """quantize's nested records (under fp32.quantized, and accuracy_budget.dev_data) and prune's
    had shown the server's folders in /v1/model."""
    from attend.serve.app import _paths_named

    stored = {"accuracy": 0.8, "per_class": {"a/b": {"f1": 1.0}}, "labels": ["a/b"], "quantized": {"onnx": {
        "onnx_dir": "/srv/models/m/onnx", "data": "test split of /srv/private/reviews.csv (30 examples)",
        "accuracy_budget": {"dev_data": "dev split of /srv/private/reviews.csv (30 examples)", "search": []}}},
        "pruning": {"model_dir": "/srv/models/m", "out_dir": "runs/pruned", "importance_data": "dev split of x/y.csv"}}
    shown = _paths_named({"accuracy": 0.82, "fp32": stored})
    assert "/srv" not in json.dumps(shown) and "runs/" not in json.dumps(shown) and "x/y" not in json.dumps(shown)
    onnx = shown["fp32"]["quantized"]["onnx"]
    assert onnx["onnx_dir"] == "onnx"
    assert onnx["accuracy_budget"]["dev_data"] == "dev split of reviews.csv (30 examples)"
    pruning = shown["fp32"]["pruning"]
    assert pruning["model_dir"] == "m" and pruning["importance_data"] == "dev split of y.csv"
    # a label holding "/" is a label, not a path; nor is a translator's sample sentence (it had been cut there)
    assert shown["fp32"]["per_class"] == {"a/b": {"f1": 1.0}} and shown["fp32"]["labels"] == ["a/b"]
    samples = [{"source": "Er kam um 10/11 Uhr, ja/nein?", "reference": "a/b", "translation": "c/d"}]
    assert _paths_named({"test": {"samples": samples}}) == {"test": {"samples": samples}}


def test_only_a_union_members_errors_are_merged_and_other_locations_stay_whole() -> None:
    """Every location ending in a part with '-' had lost it: a header's x-token, a dict key."""
    from attend.serve.app import _union_merged

    def err(*loc: object, msg: str = "Field required") -> dict[str, object]:
        return {"loc": loc, "msg": msg, "type": "missing"}

    kept = [err("header", "x-token"), err("header", "x-other"), err("body", "tags", "a-b"), err("body", "n", "int")]
    assert [e["loc"] for e in _union_merged(kept)] == [e["loc"] for e in kept]  # a lone "int" too
    union = [err("body", "history", 0, "str", msg="Input should be a valid string"),
             err("body", "history", 0, "int", msg="Input should be a valid integer"),
             err("body", "user", "constrained-str", msg="String should have at least 1 character"),
             err("body", "user", "function-after[check(), int]", msg="Input should be a valid integer")]  # fmt: skip
    assert [(e["loc"], e["msg"]) for e in _union_merged(union)] == [
        (("body", "history", 0), "Input should be a valid string or a valid integer"),
        (("body", "user"), "String should have at least 1 character or a valid integer"),
    ]


class StopOptions(BaseModel):
    forget: bool = False


def optional_body_router(runtime: object) -> object:
    """A route whose body may be left out (as POST /v1/focus/stop's)."""
    from fastapi import APIRouter

    router = APIRouter()

    @router.post("/v1/stop")
    async def stop(body: StopOptions | None = None) -> dict[str, bool]:
        return {"forget": bool(body and body.forget)}

    return router


def test_a_post_without_a_body_is_not_refused_for_its_content_type() -> None:
    """`curl -X POST URL` sends no body and no Content-Type: it was a 415 "send JSON"."""
    app = create_app(None, ServeSettings(), routers=[RouterSpec("tests.serve.test_app:optional_body_router")])
    with TestClient(app) as client:
        bare = client.build_request("POST", "/v1/stop")
        del bare.headers["content-length"]  # as curl sends it
        assert client.send(bare).json() == {"forget": False}
        assert client.post("/v1/stop").json() == {"forget": False}  # Content-Length: 0
        assert client.post("/v1/stop", json={"forget": True}).json() == {"forget": True}
        text = client.post("/v1/stop", content=b"forget", headers={"content-type": "text/plain"})
        untyped = client.post("/v1/stop", content=b'{"forget": true}')  # a body: its type must be JSON
    assert text.status_code == untyped.status_code == 415
    # A chunked body is a body whatever Content-Length says (Transfer-Encoding overrides it).
    from attend.serve.app import _GuardAndMeasure

    guard = object.__new__(_GuardAndMeasure)
    guard.settings = ServeSettings()
    chunked = guard._refusal({"headers": [(b"content-length", b"0"), (b"transfer-encoding", b"chunked")]})
    assert chunked is not None and chunked.status_code == 415


@pytest.mark.parametrize(("message", "field"), [
    ("texts[1] is an empty text", "texts.1"),
    ("messages[0] has a time that is not an ISO 8601 date", "messages.0.time"),  # it had been messages.0
    ("messages[0]: field 'id' contains an unpaired surrogate", "messages.0.id"),
    ("messages[2] has an id of 301 characters, over 300", "messages.2.id"),
    ("messages[1] has the id 'z' of messages[0]", "messages.1.id"),
    ("messages[0]: the text contains an unpaired surrogate", "messages.0.text"),
    ("allow entry '@' is no address: give name@domain", "allow"),  # it had been body
    ("until 'tomorrow' is not an ISO time", "until"),
    ("give a user, a history of item ids, or both", "body"),
])  # fmt: skip
def test_a_routes_own_error_names_its_field(message: str, field: str) -> None:
    from attend.serve.routes import _field_of

    assert _field_of(message)[0] == field


def test_a_name_value_error_is_said_whole() -> None:
    from attend.serve.routes import _field_of

    message = "target='pos': method rollout does not read a label"
    assert _field_of(message) == ("target", message)  # the words had begun "='pos': method ..."


async def _asgi_post(app, path: str, body: dict, gone: asyncio.Event) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    """POST as a client that may hang up: once ``gone`` is set, the server's next look finds it gone."""
    raw, sent, answer = json.dumps(body).encode(), False, {"status": 0, "body": b""}

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}  # fmt: skip
    await app(scope, receive, send)
    return answer["status"], answer["body"]


def test_an_explanation_whose_client_went_away_is_dropped_and_counted_so(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Explanations run one at a time: a queue of them whose clients had timed out still ran, ahead of
    every request behind them, each counted a 200; one running went on to its last text."""
    import attend.serve.classification as classification

    real, explained, gate = classification.explain, [], threading.Event()

    def held(runtime, texts, method, **options):  # type: ignore[no-untyped-def]
        explained.append(list(texts))
        if texts[0].startswith("held"):
            assert gate.wait(30)
        return real(runtime, texts, method, **options)

    monkeypatch.setattr(classification, "explain", held)
    monkeypatch.setattr(classification, "WATCH_SECONDS", 0.01)
    app = create_app(load(model_dir), ServeSettings())

    async def scenario() -> list[tuple[int, bytes]]:
        stays, left, leaves = asyncio.Event(), asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(_asgi_post(app, "/v1/explain", {"texts": ["held one"]}, stays))
        while not explained:
            await asyncio.sleep(0.01)
        queued = asyncio.create_task(_asgi_post(app, "/v1/explain", {"texts": ["queued"]}, left))
        await asyncio.sleep(0.05)
        left.set()  # its client hangs up while it waits its turn
        gate.set()
        answers = [await first, await queued]
        gate.clear()
        long = asyncio.create_task(_asgi_post(app, "/v1/explain", {"texts": [f"held {i}" for i in range(20)]},
                                              leaves))  # fmt: skip
        while len(explained) < 2:
            await asyncio.sleep(0.01)
        leaves.set()  # hangs up during its first chunk of 8
        await asyncio.sleep(0.3)
        gate.set()
        answers.append(await long)
        return answers

    answers = asyncio.run(scenario())
    assert [status for status, _ in answers] == [200, 499, 499]
    assert json.loads(answers[1][1])["error"]["type"] == "client_closed"
    assert explained == [["held one"], [f"held {i}" for i in range(8)]]  # neither the queued one nor the rest
    with TestClient(app) as client:
        counted = client.get("/metrics").text
    assert 'attend_requests_total{method="POST",route="/v1/explain",status="499"} 2.0' in counted, counted
    assert 'attend_requests_total{method="POST",route="/v1/explain",status="200"} 1.0' in counted, counted


def test_workers_load_the_model_the_server_started_with_whatever_the_folder_holds_later(
    trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --workers, uvicorn starts a worker again after a crash, which loaded the directory as it
    then was: a model trained over it since answered beside the others under the same name, and a
    removed one failed each restart with a traceback."""
    import os

    import attend.serve.app as app_module

    model = copy_model(trained["encoder"], tmp_path)
    seen: list[Path] = []

    def workers(config: Any) -> None:  # what each worker would load, checked while "serving"
        loaded = Path(json.loads(os.environ[app_module.ENV_CONFIG])["model_dir"])
        seen.append(loaded)
        assert loaded.name == model.name and loaded.parent.name.startswith(f".{model.name}.serving")
        assert loaded.parent.parent == model.parent
        assert os.stat(loaded / "config.json").st_ino == os.stat(model / "config.json").st_ino  # linked, not copied
        before = load(loaded).predict_proba(["a wonderful film"])
        shutil.rmtree(model)  # trained over while serving
        shutil.copytree(trained["encoder_cls"], model)
        assert load(loaded).predict_proba(["a wonderful film"]).tolist() == before.tolist()
        assert load(model).predict_proba(["a wonderful film"]).tolist() != before.tolist()

    monkeypatch.setattr(app_module, "_run_workers", workers)
    monkeypatch.setattr(app_module, "check_port", lambda host, port: None)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)
    app_module.serve(model, workers=2)
    assert len(seen) == 1 and not seen[0].parent.exists()  # gone with the server
    # Where links cannot be made (another file system), a copy in the temporary folder.
    monkeypatch.setattr(os, "link", lambda *args, **kwargs: (_ for _ in ()).throw(OSError(18, "cross-device")))
    copy = app_module.served_snapshot(model)
    assert copy.name == model.name and not copy.parent.name.startswith(".") and (copy / "config.json").is_file()
    shutil.rmtree(copy.parent)
    assert sorted(p.name for p in tmp_path.iterdir()) == [model.name]  # nothing left beside the model
    monkeypatch.undo()


def test_a_served_snapshot_is_made_only_of_a_directory_and_keeps_its_name_and_its_links_targets(
    trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review of the snapshot: a mistyped MODEL_DIR had had its parent folder removed as the
    snapshot's; a relative link inside the model was linked as a link, dangling; a link to the
    model named it by its target; MODEL/onnx's snapshot sat inside MODEL, for its train --overwrite
    to take."""

    import attend.serve.app as app_module

    keep = tmp_path / "models"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine\n")
    monkeypatch.chdir(keep)
    monkeypatch.setattr(app_module, "check_port", lambda host, port: None)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)
    with pytest.raises(ModelDirError, match="no such model directory"):
        app_module.serve("typo_model", workers=2)
    assert (keep / "notes.txt").read_text() == "mine\n" and app_module.served_snapshot("typo_model") is None
    model = copy_model(trained["encoder"], keep)
    shared = tmp_path / "shared"
    shared.mkdir()
    (model / "tokenizer.json").rename(shared / "tokenizer.json")
    (model / "tokenizer.json").symlink_to(Path("..") / ".." / "shared" / "tokenizer.json")
    (keep / "current").symlink_to(model.name)
    snap = app_module.served_snapshot(keep / "current")
    assert snap is not None and snap.name == "current" and snap.parent.parent == keep
    assert not (snap / "tokenizer.json").is_symlink() and load(snap).predict(["a wonderful film"])
    shutil.rmtree(snap.parent)
    (model / "onnx").mkdir()
    shutil.copy(model / "config.json", model / "onnx" / "config.json")
    inner = app_module.served_snapshot(model / "onnx")
    assert inner is not None and inner.parent.parent == keep
    assert not any(p.name.startswith(".") for p in model.iterdir())
    shutil.rmtree(inner.parent)
    # Beside the outermost (an ensemble's member's onnx/ is inside the member and the ensemble), and `..`
    # named as its folder (it had failed on a copy named '..').
    (model / "members" / "00").mkdir(parents=True)
    shutil.copytree(model / "onnx", model / "members" / "00" / "onnx")
    shutil.copy(model / "config.json", model / "members" / "00" / "config.json")
    deep = app_module.served_snapshot(model / "members" / "00" / "onnx")
    assert deep is not None and deep.parent.parent == keep
    shutil.rmtree(deep.parent)
    monkeypatch.chdir(model / "onnx")
    up = app_module.served_snapshot("..")
    assert up is not None and up.name == model.name and up.parent.parent == keep
    shutil.rmtree(up.parent)


def test_the_access_log_keeps_no_query_string(caplog: pytest.LogCaptureFixture) -> None:
    """`GET /v1/translate?text=...` (a 405) had written the user's text into uvicorn's access log."""
    import logging

    from attend.serve.app import _hide_query_strings

    _hide_query_strings()
    _hide_query_strings()  # once per process: a second app adds no second filter
    access = logging.getLogger("uvicorn.access")
    assert sum(type(f).__name__ == "_NoQueryString" for f in access.filters) == 1
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/v1/translate?text=MY+SECRET", "1.1", 405)
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "POST", "/v1/translate", "1.1", 200)
    assert [r.getMessage() for r in caplog.records] == ['127.0.0.1:5 - "GET /v1/translate?… HTTP/1.1" 405',
                                                        '127.0.0.1:5 - "POST /v1/translate HTTP/1.1" 200']


def test_an_allowed_origin_may_post_and_a_bad_one_is_refused_at_start(model_dir: Path) -> None:
    """A site the operator allows (a web app on another origin, CORS) was refused with every other."""
    settings = ServeSettings(allowed_origins=("http://localhost:3000",))
    with TestClient(create_app(load(model_dir), settings)) as client:
        allowed = client.post("/v1/predict", json={"text": "hi"},
                              headers={"origin": "http://localhost:3000", "sec-fetch-site": "cross-site"})  # fmt: skip
        assert allowed.status_code == 200
        other = client.post("/v1/predict", json={"text": "hi"},
                            headers={"origin": "http://localhost:3001", "sec-fetch-site": "cross-site"})  # fmt: skip
        assert other.status_code == 403 and "--allow-origin URL" in other.json()["error"]["message"]
    for bad in ("localhost:3000", "https://app.example/path", "ftp://x.example"):
        with pytest.raises(ValueError, match=r"allowed origin .*: give a web origin, scheme and host"):
            ServeSettings(allowed_origins=(bad,))
