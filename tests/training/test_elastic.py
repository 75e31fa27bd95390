"""Scale-out on torchrun: two "nodes" through the c10d rendezvous, and recovery from a lost worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from tests.conftest import planted_rows, write_csv

CONFIG = {
    "model": {"dim": 32, "num_layers": 1, "num_heads": 2},
    "training": {"lr": 0.003, "vocab_size": 500, "batch_size": 16, "checkpoint_every": 10},
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.processes  # several processes each: CI runs them after the default run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _setup(tmp_path: Path, rows: int, **model: Any) -> list[str]:
    data = write_csv(tmp_path / "planted.csv", planted_rows(rows))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**CONFIG, "model": {**CONFIG["model"], **model}}), encoding="utf-8")
    return ["-m", "attend", "train", str(data), "--model", "encoder", "--config", str(config), "--epochs", "3",
            "--no-progress"]


def _checkpoints(run: subprocess.Popen[str], state: Path) -> Iterator[dict[str, Any]]:
    """The run's saved training state, each time it is polled, while the run goes on (4 minutes at most)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and run.poll() is None:
        try:
            yield json.loads(state.read_text(encoding="utf-8"))["state"]
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)


def _train_losses(out: Path) -> list[float]:
    lines = (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["train_loss"] for line in lines]


def _metrics(out: Path) -> dict[str, object]:
    found = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    return {key: found[key] for key in ("accuracy", "macro_f1", "confusion_matrix", "best_epoch")}


def test_two_nodes_through_the_c10d_rendezvous_train_as_one_process_does(tmp_path: Path) -> None:
    # Without dropout (whose masks each process draws for its share of the batch), two processes
    # take one process's steps: the same weights but for the order of float sums.
    train = _setup(tmp_path, 400, dropout=0.0)
    single = subprocess.run([sys.executable, *train, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=ENV, timeout=300, check=False)  # fmt: skip
    assert single.returncode == 0, single.stderr
    port = _free_port()
    nodes = []
    for is_host in (1, 0):  # one machine plays both nodes; the first hosts the rendezvous store
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                    "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes",
                    "--rdzv-conf", f"is_host={is_host}"]  # fmt: skip
        nodes.append(subprocess.Popen([*launcher, *train, "--out", str(tmp_path / "two")], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=ENV))  # fmt: skip
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert sum(out.count("model written to") for out, _ in outputs) == 1  # only global rank 0 reports
    assert _metrics(tmp_path / "two") == _metrics(tmp_path / "one")
    one, two = (load_file(tmp_path / out / "model.safetensors") for out in ("one", "two"))
    assert max(float((one[name] - two[name]).abs().max()) for name in one) < 2e-3  # 4e-4 measured


def _workers(parent: int) -> list[int]:
    """Pids of the processes whose parent is ``parent`` (the torchrun agent's workers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                children.append(int(entry.name))
    return children


def test_a_lost_worker_restarts_the_group_which_resumes_to_the_same_metrics(tmp_path: Path) -> None:
    train = _setup(tmp_path, 1600)  # 80 steps an epoch: time to strike mid-epoch

    def torchrun(out: Path, *entry: str) -> subprocess.Popen[str]:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    "--max-restarts", "3", "--monitor-interval", "0.5"]  # fmt: skip
        return subprocess.Popen([*launcher, *(entry or train[:2]), *train[2:], "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip

    whole = torchrun(tmp_path / "whole")
    _, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err[-2000:]

    # The first worker group stops dead after rank 0's checkpoint 20 steps into epoch 2 (tests/paused.py),
    # rank 1 waiting for it, and rank 0 is killed there: no timing involved.
    out, flag = tmp_path / "struck", tmp_path / "paused"
    run = torchrun(out, str(Path(__file__).parents[1] / "paused.py"), "checkpoint:1:20", str(flag))
    deadline = time.monotonic() + 240
    while not (flag.exists() and flag.read_text(encoding="utf-8")) and run.poll() is None:
        assert time.monotonic() < deadline, "the run did not reach the checkpoint in 4 minutes"
        time.sleep(0.05)
    assert flag.exists(), "the run ended before it reached the checkpoint"
    workers = _workers(run.pid)
    paused = int(flag.read_text(encoding="utf-8"))
    assert len(workers) == 2 and paused in workers, (workers, paused)
    os.kill(paused, signal.SIGKILL)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-3000:]
    assert "of the worker group: resuming" in err and "resuming from epoch 2" in err, err[-3000:]
    assert _metrics(out) == _metrics(tmp_path / "whole")
    # The epoch cut by the loss reports every step of both ranks (before: rank 0's steps twice over).
    assert _train_losses(out) == pytest.approx(_train_losses(tmp_path / "whole"), rel=1e-6)


def test_a_worker_lost_on_one_of_two_nodes_restarts_both_which_resume_to_the_same_metrics(tmp_path: Path) -> None:
    """Each node's agent counts its own restarts: the node that lost its worker 1, the other 0. Their
    workers had met under different store prefixes (and one read the lost worker's address), and
    waited for good; the group count is agreed in the store now."""
    train = _setup(tmp_path, 1600, dropout=0.0)  # no dropout: two processes take one process's steps
    single = subprocess.run([sys.executable, *train, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=ENV, timeout=300, check=False)  # fmt: skip
    assert single.returncode == 0, single.stderr
    port, out, flag = _free_port(), tmp_path / "two", tmp_path / "paused"
    entry = [str(Path(__file__).parents[1] / "paused.py"), "checkpoint:1:20", str(flag)]
    nodes = []
    for is_host in (1, 0):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                    "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "lost-node",
                    "--rdzv-conf", f"is_host={is_host}", "--max-restarts", "1", "--monitor-interval", "0.5"]
        nodes.append(subprocess.Popen([*launcher, *entry, *train[2:], "--out", str(out)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=ENV))  # fmt: skip
    deadline = time.monotonic() + 240
    while not (flag.exists() and flag.read_text(encoding="utf-8")) and all(n.poll() is None for n in nodes):
        assert time.monotonic() < deadline, "the run did not reach the checkpoint in 4 minutes"
        time.sleep(0.05)
    assert flag.exists(), "the run ended before it reached the checkpoint"
    os.kill(int(flag.read_text(encoding="utf-8")), signal.SIGKILL)  # rank 0, on the node that hosts the store
    try:
        outputs = [node.communicate(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [node.returncode for node in nodes] == [0, 0], [err[-3000:] for _, err in outputs]
    said = "".join(err for _, err in outputs)
    assert "of the worker group: resuming" in said and "resuming from epoch 2" in said, said[-3000:]
    assert _metrics(out) == _metrics(tmp_path / "one")


def test_ctrl_c_under_torchrun_stops_every_rank_at_one_step_with_the_state_saved(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the launcher and every worker, and the launcher forwards it once
    more. Every rank stops after the same step, the state of that step is saved, one line says so,
    and --resume finishes the run. Before, rank 1 died on the signal and rank 0 crashed or hung."""
    train = _setup(tmp_path, 1600)
    out = tmp_path / "stopped"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    run = subprocess.Popen([*launcher, *train, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=ENV, start_new_session=True)  # fmt: skip
    state = out.with_name(f".{out.name}.training") / "checkpoint" / "state.json"
    sent = False
    for progress in _checkpoints(run, state):
        if progress["global_step"] >= 20:
            os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
            sent = True
            break
    assert sent, "the run ended before it could be interrupted"
    _, err = run.communicate(timeout=120)
    stopped = [line for line in err.splitlines() if line.startswith("stopped: interrupted at step")]
    assert len(stopped) == 1, err[-3000:]
    step = int(stopped[0].split("at step ")[1].split(";")[0])
    assert json.loads(state.read_text(encoding="utf-8"))["state"]["global_step"] == step
    assert "Traceback" not in err.split("stopped: interrupted")[0], err[-3000:]  # no rank crashed before it
    resumed = subprocess.run([*launcher, *train, "--out", str(out), "--resume"], capture_output=True, text=True,
                             env=ENV, timeout=300, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "metrics.json").is_file()


def test_a_loss_that_turns_nan_on_one_rank_stops_every_rank_with_one_message(tmp_path: Path) -> None:
    """The ranks agree on the loss being finite before backward: before, the rank with the NaN exited
    quietly and the other died in the gradient all-reduce ("Connection closed by peer")."""
    train = _setup(tmp_path, 400)
    script = Path(__file__).with_name("nan_on_one_rank.py")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
    env = {**ENV, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([*launcher, *train[2:], "--out", str(tmp_path / "nan")], capture_output=True, text=True,
                          env=env, timeout=300, check=False)  # fmt: skip
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: the loss became non-finite")]
    assert len(errors) == 1 and "at step 5 " in errors[0], done.stderr[-3000:]
    assert "Connection closed by peer" not in done.stderr and not (tmp_path / "nan").exists()


def test_an_error_one_rank_meets_alone_is_said_by_that_rank(tmp_path: Path) -> None:
    """Rank-local errors in the training loop: before, every rank but 0 kept quiet, so the cause was
    never printed and rank 0 only said that its peer had closed the connection."""
    train = _setup(tmp_path, 400)
    script = Path(__file__).with_name("nan_on_one_rank.py")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
    env = {**ENV, "PYTHONPATH": str(Path(__file__).parents[2]), "ATTEND_TEST_FAULT": "error"}
    done = subprocess.run([*launcher, *train[2:], "--out", str(tmp_path / "fault")], capture_output=True, text=True,
                          env=env, timeout=300, check=False)  # fmt: skip
    assert done.returncode != 0
    assert "[rank 1] error: a fault planted in rank 1's fifth batch" in done.stderr.splitlines(), done.stderr[-3000:]
    assert not (tmp_path / "fault").exists()


def test_a_lost_peer_is_said_in_one_line_with_the_resume_that_then_continues(tmp_path: Path) -> None:
    """Without --max-restarts, the process left waiting on a killed peer had printed gloo's traceback."""
    train = _setup(tmp_path, 400)
    out, flag = tmp_path / "lost", tmp_path / "paused"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "--monitor-interval", "5"]  # the agent stops rank 1 only after it has met the loss  # fmt: skip
    paused = str(Path(__file__).parents[1] / "paused.py")
    run = subprocess.Popen([*launcher, paused, "checkpoint:1:10", str(flag), *train[2:], "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    deadline = time.monotonic() + 240
    while not (flag.exists() and flag.read_text(encoding="utf-8")) and run.poll() is None:
        assert time.monotonic() < deadline, "the run did not reach the checkpoint in 4 minutes"
        time.sleep(0.05)
    os.kill(int(flag.read_text(encoding="utf-8")), signal.SIGKILL)  # rank 0, rank 1 waiting for it
    _, err = run.communicate(timeout=300)
    assert run.returncode != 0
    said = [line for line in err.splitlines() if line.startswith("[rank 1] error: ")]
    assert len(said) == 1 and "exchange with the other torchrun processes failed" in said[0], err[-3000:]
    assert "run the same torchrun command with --resume" in said[0] and ".lost.training" in said[0], said
    assert "[rank1]: Traceback" not in err, err[-3000:]
    resumed = subprocess.run([*launcher, *train, "--out", str(out), "--resume"], capture_output=True, text=True,
                             env=ENV, timeout=300, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from epoch 2" in resumed.stderr and (out / "metrics.json").is_file(), resumed.stderr[-3000:]


def test_sigterm_finishes_the_step_saves_it_and_resume_continues(tmp_path: Path) -> None:
    """What a scheduler sends before it reclaims a machine, and torchrun's launcher its workers when
    it stops: the run stopped at once with nothing of the epoch saved since the last checkpoint."""
    train = _setup(tmp_path, 1600)
    out = tmp_path / "termed"
    run = subprocess.Popen([sys.executable, *train, "--out", str(out)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    state = out.with_name(f".{out.name}.training") / "checkpoint" / "state.json"
    sent = False
    for progress in _checkpoints(run, state):
        if progress["global_step"] >= 20:
            run.send_signal(signal.SIGTERM)
            sent = True
            break
    assert sent, "the run ended before it could be terminated"
    _, err = run.communicate(timeout=120)
    stopped = [line for line in err.splitlines() if line.startswith("stopped: interrupted at step")]
    assert run.returncode == 130 and len(stopped) == 1, err[-3000:]
    step = int(stopped[0].split("at step ")[1].split(";")[0])
    assert json.loads(state.read_text(encoding="utf-8"))["state"]["global_step"] == step
    resumed = subprocess.run([sys.executable, *train, "--out", str(out), "--resume"], capture_output=True, text=True,
                             env=ENV, timeout=300, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "metrics.json").is_file()
