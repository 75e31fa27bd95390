"""A task from an installed package: its module, named under the ``attend.plugins`` entry points,
is imported when attend meets its name, so a fresh process (the command line, ``attend serve``)
loads, evaluates and serves its model directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: A package of one's own: a model, its task, its runtime and its routes, registered on import.
PLUGIN = '''
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from fastapi import APIRouter
from pydantic import BaseModel
from torch import nn

from attend.attention import AttentionPooling
from attend.models import ModelOutput, build, config_from_dict
from attend.models.base import ModelConfig, register_model
from attend.runtime import Runtime, register_runtime
from attend.serve import TASK_ROUTES, Routes
from attend.training import Task, register_task


@dataclass
class PointerConfig(ModelConfig):
    dim: int = 4


@register_model("plugin_pointer", PointerConfig)
class Pointer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.pool = AttentionPooling(config.dim)
        self.head = nn.Linear(config.dim, 1)

    def forward(self, batch):
        pooled, weights = self.pool(batch["x"])
        return ModelOutput(logits=self.head(pooled).squeeze(-1), pooling_weights=weights)


def rows(path):
    return torch.tensor(json.loads(Path(path).read_text()), dtype=torch.float32)


@register_task
class PointerTask(Task):
    name = "plugin_pointer_regression"
    selection = "neg_mse"

    def __init__(self, data):
        self.path = data

    def prepare(self, args, state):
        x = rows(self.path)
        self.data = {"train": x[:40], "dev": x[40:]}

    def save_state(self, directory):
        pass

    def identity(self):
        return {"data": str(self.path)}

    def model_config(self):
        return {"model_type": "plugin_pointer", "dim": 4}

    def default_lr(self):
        return 1e-2

    @property
    def train_size(self):
        return 40

    def splits(self):
        return ["dev"]

    def train_batch(self, indices):
        x = self.data["train"][list(indices)]
        return {"x": x, "y": x[:, 0, 0]}

    def loss(self, model, batch):
        return F.mse_loss(model(batch).logits, batch["y"])

    @torch.no_grad()
    def evaluate(self, model, split, batch_size):
        x = self.data[split]
        mse = float(self.loss(model.eval(), {"x": x, "y": x[:, 0, 0]}))
        return {"neg_mse": -mse, "loss": mse}

    def write(self, writer, model, metrics):
        writer.write_json("metrics.json", metrics)
        return {}


class PointerRuntime(Runtime):
    task = "plugin_pointer_regression"

    def __init__(self, config, path, model):
        super().__init__(config, path)
        self.model = model.eval()

    @property
    def backend(self):
        return "torch"

    @torch.no_grad()
    def predict(self, x):
        return self.model({"x": x}).logits.tolist()

    def evaluate(self, data, **options):
        x = rows(data)
        predicted = torch.tensor(self.predict(x))
        return {"mse": float(F.mse_loss(predicted, x[:, 0, 0])), "rows": len(x)}


@register_runtime("plugin_pointer_regression")
def load_pointer(artifact, options):
    model = build(config_from_dict(artifact.config["model"]))
    model.load_state_dict(artifact.tensors("model.safetensors"))
    return PointerRuntime(artifact.config, artifact.path, model)


class Rows(BaseModel):
    x: list[list[list[float]]]


def pointer_routes(runtime, settings, metrics):
    router = APIRouter()

    @router.post("/v1/point")
    def point(body: Rows):
        return {"y": runtime.predict(torch.tensor(body.x))}

    return Routes(router=router)


TASK_ROUTES["plugin_pointer_regression"] = pointer_routes
'''

TRAIN = '''
import sys
from attend.training import Trainer, TrainingArgs
from pointer_plugin import PointerTask
Trainer(PointerTask(sys.argv[1]), TrainingArgs(epochs=3, batch_size=10, progress=False)).fit(sys.argv[2])
'''

SERVE = '''
import sys
from fastapi.testclient import TestClient
from attend.serve import ServeSettings, create_app, load_for_serving
settings = ServeSettings()
app = create_app(load_for_serving(sys.argv[1], settings), settings)
with TestClient(app) as client:
    print(client.post("/v1/point", json={"x": [[[1.0, 0, 0, 0], [0, 0, 0, 0]]]}).status_code,
          client.get("/v1/model").json()["task"])
'''


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A site folder holding the plugin module and the dist-info that names it as an entry point."""
    site = tmp_path / "site"
    info = site / "pointer_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "pointer_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pointer-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[attend.plugins]\npointer = pointer_plugin\n")
    return site


def _run(args: list[str], site: Path | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_an_installed_packages_task_is_loaded_evaluated_and_served_by_a_fresh_process(
    installed: Path, tmp_path: Path
) -> None:
    data = tmp_path / "rows.json"
    rows = [[[(i % 7) / 7.0, 3.0, 0.0, 0.0], [0.5, 0.0, (i % 3) / 3.0, 1.0]] for i in range(60)]
    data.write_text(json.dumps(rows))
    model = tmp_path / "pointer"
    trained = _run([sys.executable, "-c", TRAIN, str(data), str(model)], installed, tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert json.loads((model / "config.json").read_text())["task"] == "plugin_pointer_regression"

    attend = str(Path(sys.executable).with_name("attend"))
    scored = _run([attend, "evaluate", str(model), str(data), "--json"], installed, tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["rows"] == 60 and json.loads(scored.stdout)["mse"] >= 0

    # The package's own code failing on data it cannot read (a TypeError): one line, not a traceback.
    (tmp_path / "odd.json").write_text('{"a": 1}')
    odd = _run([attend, "evaluate", str(model), str(tmp_path / "odd.json")], installed, tmp_path)
    assert odd.returncode == 2 and "Traceback" not in odd.stderr, odd.stderr
    assert "its runtime's evaluate() failed: TypeError: must be real number, not dict" in odd.stderr
    refused = _run([attend, "evaluate", str(model), str(data), "--label-col", "y"], installed, tmp_path)
    assert refused.returncode == 2 and "--label-col" in refused.stderr and "Traceback" not in refused.stderr
    classifier_verb = _run([attend, "predict", str(model), "some text"], installed, tmp_path)
    assert classifier_verb.returncode == 2 and "attend recommend" not in classifier_verb.stderr
    assert "not a text classifier" in classifier_verb.stderr and "comes from outside attend" in classifier_verb.stderr

    served = _run([sys.executable, "-c", SERVE, str(model)], installed, tmp_path)
    assert served.returncode == 0, served.stderr
    assert served.stdout.split() == ["200", "plugin_pointer_regression"]

    # Without the package, the directory is refused by name, with the way to add a task.
    missing = _run([attend, "evaluate", str(model), str(data)], None, tmp_path)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "'plugin_pointer_regression' has no runtime" in missing.stderr and "attend.plugins" in missing.stderr


def test_a_plugin_that_fails_to_import_is_named_and_attends_own_models_still_load(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = site / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "broken_plugin.py").write_text("raise ImportError('needs a library that is not installed')\n")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (site / "exiting_plugin.py").write_text("import sys\nsys.exit(0)\n")  # it had ended every command, exit 0
    (info / "entry_points.txt").write_text("[attend.plugins]\nbroken = broken_plugin\nexits = exiting_plugin\n")
    script = ("import warnings, attend.config as c\n"
              "with warnings.catch_warnings(record=True) as caught:\n"
              "    warnings.simplefilter('always')\n"
              "    print(c.load_plugins(), c.load_plugins())\n"
              "print(len(caught), caught[0].message)\n"
              "print(caught[1].message)\n")  # fmt: skip
    found = _run([sys.executable, "-c", script], site, tmp_path)
    assert found.returncode == 0, found.stderr
    first, second, third = found.stdout.splitlines()
    assert first == "[] []"  # searched once: the second call does not import (or warn) again
    assert second.startswith("2 attend plugin 'broken' (broken_plugin) failed to load: ImportError: needs a library")
    assert third == "attend plugin 'exits' (exiting_plugin) failed to load: SystemExit: 0"
    # The command line says it in one line of its own (it was Python's "file:line: RuntimeWarning:" and
    # the source line that warned).
    model = tmp_path / "theirs"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"task": "a_task_of_theirs", "attend_version": "0"}))
    attend = str(Path(sys.executable).with_name("attend"))
    said = _run([attend, "evaluate", str(model), str(tmp_path / "rows.json")], site, tmp_path)
    assert said.returncode == 2 and "RuntimeWarning" not in said.stderr and "Traceback" not in said.stderr
    assert "warning: attend plugin 'broken' (broken_plugin) failed to load: ImportError: needs a library that is " \
           "not installed\n" in said.stderr, said.stderr


def test_a_model_whose_task_has_no_routes_is_served_by_the_router_given() -> None:
    from fastapi import APIRouter
    from fastapi.testclient import TestClient

    from attend.runtime import Runtime
    from attend.serve import ServeSettings, create_app

    class Echo(Runtime):
        task = "echo_of_ones_own"

        @property
        def backend(self) -> str:
            return "torch"

    runtime = Echo({"task": "echo_of_ones_own"})
    with pytest.raises(ValueError, match=r"no routes for 'echo_of_ones_own'.*--router MODULE:FUNCTION"):
        create_app(runtime, ServeSettings())
    router = APIRouter()
    router.add_api_route("/v1/echo", lambda: {"task": runtime.task})
    with TestClient(create_app(runtime, ServeSettings(), routers=[router])) as client:
        assert client.get("/v1/echo").json() == {"task": "echo_of_ones_own"}
        assert client.get("/v1/model").json()["task"] == "echo_of_ones_own"
    # A task's routes factory returning a plain APIRouter is served as one (it had been an AttributeError
    # traceback), and one returning anything else is named; so are routers given wrongly from Python.
    from attend.serve import TASK_ROUTES
    from attend.serve.routes import RouterSpec

    TASK_ROUTES["echo_of_ones_own"] = lambda rt, settings, metrics: router
    try:
        with TestClient(create_app(runtime, ServeSettings())) as client:
            assert client.get("/v1/echo").json() == {"task": "echo_of_ones_own"}
        TASK_ROUTES["echo_of_ones_own"] = lambda rt, settings, metrics: None
        with pytest.raises(ValueError, match=r"the 'echo_of_ones_own' routes \(.*\) returned NoneType, not a FastAPI "
                                             r"APIRouter or attend\.serve\.Routes"):  # fmt: skip
            create_app(runtime, ServeSettings())
    finally:
        TASK_ROUTES.pop("echo_of_ones_own")
    with pytest.raises(TypeError, match=r"routers='mod:fn': give a list of APIRouter, RouterSpec"):
        create_app(runtime, ServeSettings(), routers="mod:fn")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"RouterSpec factory=None: give 'package\.module:function'"):
        RouterSpec(None)  # type: ignore[arg-type]


def test_registrations_that_would_half_work_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """One config class under two names (the first name's directories had built the second builder's
    network), a task that is no Task or names no selection metric (it failed after an epoch), a runtime
    for no task name: each is refused when registered."""
    from dataclasses import InitVar, dataclass

    from torch import nn

    from attend.models.base import MODELS, ModelConfig, register_model
    from attend.runtime import register_runtime
    from attend.training import ClassificationTask, Task, register_task

    @dataclass
    class OwnConfig(ModelConfig):
        dim: int = 2

    register_model("half_work_first", OwnConfig)(lambda config: nn.Linear(config.dim, 1))
    try:
        with pytest.raises(ValueError, match=r"model 'half_work_alias': its config class OwnConfig is model "
                                             r"'half_work_first''s already"):  # fmt: skip
            register_model("half_work_alias", OwnConfig)(lambda config: nn.Linear(1, 1))
        assert OwnConfig.model_type == "half_work_first" and "half_work_alias" not in MODELS
    finally:
        MODELS.pop("half_work_first", None)
    with pytest.raises(TypeError, match=r"register_task takes a subclass of attend\.training\.Task"):
        register_task(dict)  # type: ignore[type-var]

    class NoSelection(Task):  # type: ignore[misc]
        name = "half_work_task"

    with pytest.raises(ValueError, match="task 'half_work_task': name its selection metric"):
        register_task(NoSelection)

    class Unfinished(Task):  # type: ignore[misc]
        name, selection = "half_work_task", "accuracy"

    # it had claimed the name, and failed only when created
    with pytest.raises(TypeError, match=r"task 'half_work_task' \(.*Unfinished\) does not define default_lr, "
                                        r".*write: a Task"):  # fmt: skip
        register_task(Unfinished)
    # train_size written without @property had failed in the Trainer: a method divided by the batch size
    methods = {name: getattr(ClassificationTask, name) for name in Task.__abstractmethods__ if name != "train_size"}
    with pytest.raises(TypeError, match=r"task 'half_work_task' \(Sized\) defines train_size as a method; Task's "
                                        r"train_size is a property: decorate it with @property"):  # fmt: skip
        register_task(type("Sized", (Task,), {**methods, "name": "half_work_task", "selection": "accuracy",
                                              "train_size": lambda self: 160}))  # fmt: skip
    from attend.training.tasks.base import TASKS as registered

    assert "half_work_task" not in registered
    # a recommender's name, taken before its module registered it, had broken attend's own recommender
    from attend.training.tasks.base import TASKS

    monkeypatch.delitem(TASKS, "sequential_recommendation", raising=False)  # as before its module is imported
    with pytest.raises(ValueError, match=r"task name 'sequential_recommendation' is attend's own \(attend\.training"):
        register_task(type("Hijack", (ClassificationTask,), {"name": "sequential_recommendation"}))
    with pytest.raises(ValueError, match=r"task name 'classification' is registered already, by attend\.training\."
                                         r"tasks\.classification\.ClassificationTask"):  # fmt: skip
        register_task(type("Mine", (ClassificationTask,), {"name": "classification"}))
    with pytest.raises(ValueError, match=r"register_runtime\(None\): name the task"):
        register_runtime(None)  # type: ignore[arg-type]
    # Each of these had been taken, and failed only when a model was built or loaded, naming no model.
    with pytest.raises(TypeError, match=r"register_runtime\('half_work_task'\) decorates the function that loads"):
        register_runtime("half_work_task")(5)  # type: ignore[arg-type]
    for name in ("", 5):
        with pytest.raises(ValueError, match=r"register_model\(.*, \.\.\.\): name the model, a non-empty string"):
            register_model(name, OwnConfig)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"the config must be a subclass of attend\.models\.ModelConfig"):
        register_model("half_work_dict", dict)  # type: ignore[type-var]

    class Undecorated(ModelConfig):  # a dataclass's subclass without @dataclass: "known: []" at build
        dim: int = 2

    with pytest.raises(TypeError, match=r"register_model\('half_work_plain', Undecorated\): its fields \['dim'\] are "
                                        r"no dataclass fields: decorate the config class with @dataclass"):  # fmt: skip
        register_model("half_work_plain", Undecorated)

    @dataclass
    class Other(ModelConfig):
        dim: int = 2

    @dataclass
    class WithInit(ModelConfig):  # an InitVar is no field, rightly: taken (it had been refused)
        dim: int = 2
        scale: InitVar[float] = 1.0

    register_model("half_work_initvar", WithInit)(lambda config: nn.Linear(config.dim, 1))
    MODELS.pop("half_work_initvar")

    with pytest.raises(TypeError, match=r"decorates the function that builds the model from its config, not 5"):
        register_model("half_work_builder", Other)(5)  # type: ignore[arg-type]
    assert not {"half_work_plain", "half_work_builder", "half_work_dict"} & set(MODELS)


def test_a_runtime_of_another_task_is_refused_and_own_tasks_evaluate_by_their_runtime(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A loader returning another task's runtime had been accepted (errors then named the wrong task);
    a package's task named "..._recommendation" had been sent to attend's own paths by `evaluate`."""
    import types

    import attend.cli as cli
    from attend.io import ModelDirError
    from attend.runtime import load
    from attend.runtime.base import RUNTIMES

    monkeypatch.setitem(RUNTIMES, "classification", lambda artifact, options: types.SimpleNamespace(task="other"))
    with pytest.raises(ModelDirError, match="a 'classification' model, but the runtime registered for that task "
                                            "returned a SimpleNamespace of task 'other'"):  # fmt: skip
        load(trained["encoder"])
    # A loader that returns no runtime, or fails on its own: one line naming it (None had been returned
    # as the model; a KeyError had been a traceback on the command line).
    monkeypatch.setitem(RUNTIMES, "classification", lambda artifact, options: None)
    with pytest.raises(ModelDirError, match=r"the runtime registered for task 'classification' \(.*<lambda>\) "
                                            r"returned NoneType, not an attend.runtime.Runtime"):  # fmt: skip
        load(trained["encoder"])

    def failing(artifact: object, options: object) -> object:
        return {}["model"]

    monkeypatch.setitem(RUNTIMES, "classification", failing)
    with pytest.raises(ModelDirError, match=r"\(tests.runtime.test_plugins.*failing\) failed to load it: KeyError: "
                                            r"'model'"):  # fmt: skip
        load(trained["encoder"])
    capsys.readouterr()
    assert cli.main(["predict", str(trained["encoder"]), "a text"]) == 2
    assert "failed to load it: KeyError: 'model'" in capsys.readouterr().err
    called = []
    monkeypatch.setattr(cli, "_task_of", lambda model_dir: "session_recommendation")
    monkeypatch.setattr(cli, "_evaluate_own_task", lambda args: called.append(args.model_dir) or 0)
    assert cli.main(["evaluate", "own_model", "data.csv"]) == 0 and called == ["own_model"]


def test_a_plugin_runtimes_numpy_and_tensor_metrics_are_printed_as_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Trainer takes a task's numpy or tensor numbers; `attend evaluate --json` had refused them
    ("mean is a numpy.float32, which JSON cannot hold") where the plain report printed them."""
    import json

    import numpy as np
    import torch

    import attend.cli as cli
    import attend.runtime

    class Own:
        task = "own_metrics"

        def evaluate(self, data: str) -> dict[str, object]:
            return {"mean": np.float32(0.5), "count": np.int64(3), "loss": torch.tensor(0.25),
                    "per_class": np.array([1.0, 0.0]), "name": "x"}  # fmt: skip

    monkeypatch.setattr(cli, "_task_of", lambda model_dir: "own_metrics")
    monkeypatch.setattr(attend.runtime, "load", lambda path: Own())
    assert cli.main(["evaluate", "own_model", "data.csv", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"mean": 0.5, "count": 3, "loss": 0.25, "per_class": [1.0, 0.0],
                                                   "name": "x"}  # fmt: skip
    assert cli.main(["evaluate", "own_model", "data.csv"]) == 0
    assert "  mean: 0.5000\n  count: 3\n  loss: 0.2500\n" in capsys.readouterr().out


def test_an_installed_packages_text_model_trains_by_name(
    planted_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training looked the model's name up before any plugin was imported: `attend train --model
    theirs` was "unknown model" (and an interrupted run of it could not resume), where `attend.load`
    of the same directory imported the plugin and worked."""
    from dataclasses import dataclass

    import attend.training.auto as auto
    import attend.training.tasks.classification as classification
    from attend.models import MODELS
    from attend.models.base import register_model
    from attend.models.encoder import EncoderClassifier, EncoderConfig

    @dataclass
    class TheirsConfig(EncoderConfig):
        pass

    imported: list[str] = []

    def plugins() -> list[str]:  # what importing the package's module does: register its model
        if "plugin_theirs" not in MODELS:
            register_model("plugin_theirs", TheirsConfig)(EncoderClassifier)
        imported.append("theirs")
        return ["theirs"]

    monkeypatch.setattr(classification, "load_plugins", plugins)
    monkeypatch.setattr(auto, "load_plugins", plugins)
    try:
        task = classification.ClassificationTask(planted_csv, model="plugin_theirs")
        assert task.model == "plugin_theirs" and imported
        before = len(imported)
        auto.candidate_models()  # a package's pretrained text model is a candidate: its module is imported first
        assert len(imported) == before + 1
    finally:
        MODELS.pop("plugin_theirs", None)
