"""``attend train --out DIR`` changes DIR in one switch: killed anywhere, DIR holds the old model intact
or the new one complete, never a mix; an existing model is replaced only with --overwrite."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from attend.runtime import load
from attend.training import state_directory
from tests.conftest import copy_model, kill_at, run_cli

TEXT = "the film was wonderful"



def _fingerprint(directory: Path) -> dict[str, str]:
    """Every file's SHA-256 (what 'unchanged' means)."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture
def run_args(tmp_path: Path, trained: dict[str, Path]) -> list[str]:
    """A run that writes a model unlike the old one (another architecture and seed)."""
    config = tmp_path / "new.json"
    config.write_text(json.dumps({"model": {"dim": 16, "num_layers": 1, "num_heads": 2},
                                  "training": {"lr": 0.003, "vocab_size": 300, "batch_size": 16,
                                               "checkpoint_every": 4}}))  # fmt: skip
    return ["train", str(trained["data"]), "--model", "encoder", "--config", str(config), "--epochs", "2",
            "--seed", "3", "--no-progress", "--threads", "1"]  # fmt: skip


@pytest.mark.processes
@pytest.mark.parametrize("point", ["checkpoint:0:4", "checkpoint:1:8", "staged", "published"])
def test_a_run_killed_at_any_stage_leaves_the_old_model_or_the_new_one(
    point: str, run_args: list[str], trained: dict[str, Path], tmp_path: Path
) -> None:
    out = copy_model(trained["encoder"], tmp_path, "model")
    before = _fingerprint(out)
    answer = load(out).predict_proba([TEXT])
    kill_at(tmp_path, point, *run_args, "--out", str(out), "--overwrite")
    model = load(out)  # every file it needs is checked against config.json
    if point == "published":  # the switch happened: the new model, whole
        config = json.loads((out / "config.json").read_text())
        assert config["model"]["dim"] == 16 and config["training"]["seed"] == 3
        assert model.predict([TEXT]) in (["pos"], ["neg"])
    else:  # killed before the switch: the old model, byte for byte
        assert _fingerprint(out) == before
        assert (model.predict_proba([TEXT]) == answer).all()
    rerun = run_cli(*run_args, "--out", str(out), "--overwrite")  # a stale run's leftovers never get in the way
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads((out / "config.json").read_text())["model"]["dim"] == 16
    assert not state_directory(out).exists()
    # nor a copy of a model the killed run was writing (".model.staging<pid>" had stayed for good)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.staging")]


def test_a_staging_copy_a_killed_writer_left_is_removed_by_the_next_and_nothing_else(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    from attend.io import STAGING_MARK, ArtifactWriter

    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()  # a process that is no more
    here = socket.gethostname()
    out = tmp_path / "model"
    folders = {  # name: what its mark says (None: no mark)
        f".model.staging{done.pid}": f"{here} {done.pid}",  # a killed writer's of this machine: removed
        f".model.staging{os.getppid()}": f"{here} {os.getppid()}",  # a live writer's
        f".model.staging{done.pid + 1}": f"elsewhere.example {done.pid + 1}",  # another machine's, shared folder
        ".model.staging20240101": None,  # the user's own, named alike
        f".model.old{done.pid}": None,  # a model moved aside (the only copy, where the swap was cut short)
        f".other.staging{done.pid}": f"{here} {done.pid}",  # another output's
    }
    for name, mark in folders.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"x" * 10)
        if mark is not None:
            (tmp_path / name / STAGING_MARK).write_text(mark + "\n", encoding="utf-8")
    with ArtifactWriter(out) as writer:
        writer.write_json("metrics.json", {})
        writer.publish({"model": {}, "labels": []})
    assert out.is_dir() and not (out / STAGING_MARK).exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name in folders) == sorted(list(folders)[1:])


def test_an_existing_model_needs_overwrite_and_other_folders_are_never_replaced(
    run_args: list[str], trained: dict[str, Path], tmp_path: Path
) -> None:
    out = copy_model(trained["encoder"], tmp_path, "model")
    before = _fingerprint(out)
    refused = run_cli(*run_args, "--out", str(out))
    assert refused.returncode == 2 and "already holds a model; pass --overwrite" in refused.stderr
    assert "Traceback" not in refused.stderr and _fingerprint(out) == before and not state_directory(out).exists()

    project = tmp_path / "project"  # `--out .` in a user's own folder, which has a config.json
    project.mkdir()
    (project / "config.json").write_text('{"name": "my app"}')
    (project / "notes.txt").write_text("mine")
    for args in (["--out", "."], ["--out", ".", "--overwrite"]):
        result = run_cli(*run_args, *args, cwd=project)
        assert result.returncode == 2 and "is not empty and is not a model directory" in result.stderr
    assert sorted(p.name for p in project.iterdir()) == ["config.json", "notes.txt"]
    assert (project / "config.json").read_text() == '{"name": "my app"}'

    # A model directory holding a user's own files: --overwrite had replaced them with the model, in silence.
    (out / "NOTES.md").write_text("mine")
    copy_model(trained["encoder"], out, "pruned")  # a model the user wrote into it (attend prune --out DIR/pruned)
    before = _fingerprint(out)
    refused = run_cli(*run_args, "--out", str(out), "--overwrite")
    assert refused.returncode == 2 and f"{out} holds NOTES.md, pruned/ beside its model" in refused.stderr
    assert _fingerprint(out) == before and not state_directory(out).exists()


def test_a_full_disk_while_saving_weights_is_an_os_error_and_leaves_no_half_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """safetensors' own error (not an OSError) reached the command line as a traceback."""
    import torch
    from safetensors import SafetensorError

    import attend.io

    def full(state: dict, path: str, metadata: dict) -> None:
        Path(path).write_bytes(b"half")
        raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")

    monkeypatch.setattr(attend.io, "save_file", full)
    with pytest.raises(OSError, match=r"cannot write .*w\.safetensors: .*No space left on device"):
        attend.io.save_tensors({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_a_writer_killed_while_it_removes_the_replaced_model_leaves_it_to_the_next(tmp_path: Path) -> None:
    """After the swap, the staging folder holds the old model: a kill while it was removed left it there
    for good (unmarked, no later writer took it for a leftover)."""
    import subprocess
    import sys

    from attend.io import ArtifactWriter

    child = (
        "import os, shutil, sys\n"
        "import attend.io as io\n"
        "real = shutil.rmtree\n"
        "def killed(path, *args, **kwargs):  # after the swap, while it removes the old model\n"
        "    if os.path.exists(os.path.join(path, 'config.json')):\n"
        "        os._exit(9)\n"
        "    real(path, *args, **kwargs)\n"
        "for version in (1, 2):\n"
        "    if version == 2:\n"
        "        shutil.rmtree = killed\n"
        "    with io.ArtifactWriter(sys.argv[1]) as w:\n"
        "        w.write_json('metrics.json', {'v': version})\n"
        "        w.publish({'model': {}, 'labels': []})\n"
    )
    out = tmp_path / "model"
    assert subprocess.run([sys.executable, "-c", child, str(out)], check=False).returncode == 9
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.staging")]
    assert len(left) == 1 and json.loads((out / "metrics.json").read_text()) == {"v": 2}
    with ArtifactWriter(out) as writer:
        writer.write_json("metrics.json", {"v": 3})
        writer.publish({"model": {}, "labels": []})
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".model.lock")) == ["model"]
