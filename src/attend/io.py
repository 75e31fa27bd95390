"""Files on disk: atomic writes, hashes, and the one reader and writer of model directories.

A model directory holds ``config.json`` and the files its task needs (for a classifier:
``model.safetensors`` and ``tokenizer.json``; for an exported one: ``model.onnx``). The config
names its ``task`` and records the SHA-256 of every such file under ``files``, so a directory
whose files do not belong together is refused instead of loaded (directories written before the
``files`` entry existed are checked by their ``weights_sha256`` / ``onnx.sha256`` entries).

:class:`ArtifactWriter` builds a directory in a hidden sibling and publishes it whole at the end:
an interrupted writer never leaves a mix of old and new files where a loader could find them.
:class:`ArtifactDir` reads one: it refuses any pickle-format file (loading never executes code
from the directory) and verifies each file's hash as it is read.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from attend.jsonout import dumps_json, finite_json

__all__ = [
    "ENSEMBLE_MEMBERS_DIR",
    "PICKLE_SUFFIXES",
    "ArtifactDir",
    "ArtifactWriter",
    "EnsembleMember",
    "ModelDirError",
    "OutputLock",
    "atomic_write_json",
    "atomic_write_text",
    "check_page_path",
    "check_picture_folder",
    "dumps_json",
    "enclosing_ensemble",
    "enclosing_model_directory",
    "file_in_the_way",
    "finite_json",
    "link_target",
    "lock_path",
    "locked_target",
    "member_sources",
    "output_path",
    "refuse_ensemble",
    "save_tensors",
    "save_weights",
    "sha256_file",
    "update_metrics",
    "weights_mismatch",
    "write_ensemble",
    "write_page",
]

#: Files that could execute code when loaded; a model directory holding one is refused.
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib"}
#: The task of a directory written before config.json named one.
LEGACY_TASK = "classification"


class ModelDirError(ValueError):
    """A model directory is missing, incomplete, unsafe or corrupt.

    ``replaceable``: what stands in the way is a model that ``--overwrite`` replaces.
    """

    replaceable: bool = False


def _mode(path: Path) -> None:
    """Give a new file the permissions the umask allows (writers that make private files: safetensors)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    path = Path(path)
    if path.is_dir():  # else the error would name the temporary file beside it
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(path))
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder for it", str(path))
    tmp = _temporary(path)
    try:
        tmp.write_text(text, encoding="utf-8")
    except OSError as exc:  # a full disk: the half-written file had stayed, and the error named no file
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.replace(tmp, path)
    return path


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")




def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> str:
    """Write tensors as safetensors, atomically and with the umask's permissions; return the SHA-256."""
    path = Path(path)
    tmp = _temporary(path)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    try:
        save_file(state, str(tmp), metadata={"format": "pt"})
    except SafetensorError as exc:  # e.g. no space left on device: an OSError, said in one line, no half file
        tmp.unlink(missing_ok=True)
        raise OSError(f"cannot write {path}: {exc}") from None
    _mode(tmp)
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    return digest


#: Fingerprints of the training split's texts (a translator's: its sources), so that ``evaluate``
#: can say how many of the examples it scores the model learned from. 8-byte BLAKE2b hashes of the
#: whitespace-normalised text: the texts themselves are not kept.
TRAINING_TEXTS = "training_texts.safetensors"


def text_fingerprints(texts: Sequence[str]) -> torch.Tensor:
    """``(N,)`` int64: each text's fingerprint (its words, whatever the spacing between them)."""
    digests = (hashlib.blake2b(" ".join(t.split()).encode("utf-8"), digest_size=8).digest() for t in texts)
    return torch.tensor([int.from_bytes(d, "little", signed=True) for d in digests], dtype=torch.int64)


def count_seen(texts: Sequence[str], fingerprints: set[int]) -> int:
    """How many of ``texts`` have one of ``fingerprints`` (:func:`text_fingerprints`)."""
    return sum(value in fingerprints for value in text_fingerprints(texts).tolist())


def save_weights(model: nn.Module, path: str | os.PathLike[str]) -> str:
    """Write the model's state dict as safetensors, atomically; return its SHA-256."""
    return save_tensors(dict(model.state_dict()), path)


def weights_mismatch(path: Path, exc: Exception, shown: int = 3) -> ModelDirError:
    """The error for weights that do not fit ``config.json``: PyTorch's first ``shown`` problems and
    a count of the rest (it listed every tensor: about 90 lines for a hand-edited ``dim``)."""
    problems = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()] or [str(exc)]
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return ModelDirError(f"{path / 'model.safetensors'} does not fit the model in config.json "
                         f"({'; '.join(problems[:shown])}{more})")  # fmt: skip


def refuse_pickles(path: Path, *, shown_as: Path | None = None, doing: str = "load") -> None:
    """Raise if ``path`` (or a folder in it) holds a file format that can run code when loaded; the
    error names ``shown_as`` (a directory being written: the one it will be) and what is refused."""
    unsafe = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if unsafe:
        more = f" and {len(unsafe) - 5} more" if len(unsafe) > 5 else ""
        raise ModelDirError(
            f"{shown_as or path} contains pickle-format file(s) {unsafe[:5]}{more}: refusing to {doing} a model "
            "directory that could run code; attend models are safetensors, ONNX and JSON only"
        )


def _recorded_hashes(config: dict[str, Any]) -> dict[str, str]:
    """File name -> SHA-256, from ``files`` or, for older directories, the entries that held them."""
    files = dict(config.get("files") or {})
    if isinstance(config.get("sha256"), dict):  # support indexes before the files entry
        files = {**config["sha256"], **files}
    if config.get("weights_sha256"):
        files.setdefault("model.safetensors", config["weights_sha256"])
    onnx = config.get("onnx")
    if isinstance(onnx, dict):
        if onnx.get("sha256"):
            files.setdefault(str(onnx.get("file", "model.onnx")), onnx["sha256"])
        int8 = onnx.get("int8")
        if isinstance(int8, dict) and int8.get("sha256"):
            files.setdefault(str(int8.get("file", "model.int8.onnx")), int8["sha256"])
    return files


class ArtifactDir:
    """A model directory opened for reading.

    Attributes:
        path: The directory.
        config: Its parsed ``config.json``.
        task: The task that wrote it (``config["task"]``; older directories are classifiers).
    """

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.config = config
        task = config.get("task", LEGACY_TASK)  # only a missing key is an older classifier's
        if not isinstance(task, str) or not task.strip():  # null had been read as a classifier, 5 as task '5'
            raise ModelDirError(f"{path / 'config.json'}: \"task\" is {json.dumps(task)}; it names the task that "
                                "wrote the directory (e.g. \"classification\")")  # fmt: skip
        self.task = task
        self._hashes = _recorded_hashes(config)
        self._verified: set[str] = set()

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, require: tuple[str, ...] = ()) -> ArtifactDir:
        """Read ``config.json`` of the directory at ``path``, refusing anything unsafe.

        Args:
            path: The directory.
            require: Config entries it must have (e.g. ``("model", "labels")``).

        Raises:
            ModelDirError: no such directory, a pickle-format file in it, config.json missing,
                unreadable or lacking a required entry.
        """
        path = Path(path)
        if path.is_file():
            raise ModelDirError(f"{path} is a file, not a model directory (the folder `attend train --out` wrote)")
        if not path.is_dir():
            raise ModelDirError(f"{path}: no such model directory")
        file = path / "config.json"
        if not file.is_file():  # before the pickle scan: `attend predict /usr` walked all of /usr
            raise ModelDirError(f"{path} is not a model directory: config.json is missing")
        refuse_pickles(path)
        try:
            config = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelDirError(f"{file} is not valid JSON ({exc})") from None
        except RecursionError:  # lists nested thousands deep: a traceback had been all it said
            raise ModelDirError(f"{file} is not the config of an attend model: its JSON is nested too deeply to "
                                "read") from None  # fmt: skip
        if not isinstance(config, dict):
            raise ModelDirError(f"{file} does not hold a JSON object")
        if config.get("files") is not None and not isinstance(config["files"], dict):  # "files": 5 had been a TypeError
            raise ModelDirError(f"{file}: its files entry is a {type(config['files']).__name__}, not the mapping of "
                                "file names to SHA-256 hashes attend writes")  # fmt: skip
        missing = [key for key in require if key not in config]
        task = config.get("task")
        if missing and "labels" in require and isinstance(task, str) and task != LEGACY_TASK:
            raise ModelDirError(f"{path} holds a {task} model; this needs a text classifier")
        if missing:
            raise ModelDirError(f"{file} lacks the {' and '.join(map(repr, missing))} entries of an attend model")
        return cls(path, config)

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def file(self, name: str) -> Path:
        """The path of file ``name``, after checking it against the hash config.json records for it.

        Raises:
            ModelDirError: the file is missing, or its contents are not the ones recorded.
        """
        path = self.path / name
        if not path.is_file() and name == "model.safetensors" and "onnx" in self.config:
            why = " (a translator runs on PyTorch)" if self.config.get("task") == "translation" else ""
            raise ModelDirError(f"{self.path} is an `attend export` directory (ONNX graphs, no PyTorch weights); this "
                                f"needs the model directory it was exported from{why}")  # fmt: skip
        if not path.is_file():
            raise ModelDirError(f"{self.path} is not a complete model directory: {name} is missing")
        expected = self._hashes.get(name)
        if expected and name not in self._verified:
            if sha256_file(path) != expected:
                raise ModelDirError(
                    f"{path} does not match the hash in config.json: the directory is corrupt or its files come "
                    "from different runs"
                )
            self._verified.add(name)
        return path

    def tensors(self, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
        """A verified safetensors file's tensors."""
        path = self.file(name)
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelDirError(f"{path} is corrupt ({exc})") from None

    def training_fingerprints(self) -> set[int] | None:
        """The fingerprints of the model's training-split texts, or None where the directory does not
        keep them (written before it did, or not a trained model's)."""
        if not self.has(TRAINING_TEXTS):
            return None
        return set(self.tensors(TRAINING_TEXTS)["fingerprints"].tolist())

    def training_overlap(self, texts: Sequence[str]) -> int | None:
        """How many of ``texts`` are texts of the model's training split (None: the directory does not say)."""
        seen = self.training_fingerprints()
        return None if seen is None else count_seen(texts, seen)

    def read_json(self, name: str) -> Any:
        """A JSON file of the directory, or None when it is absent or unreadable (reports, not the model)."""
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.path / name).read_text(encoding="utf-8"))
        return None


def _config_json(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """A directory's ``config.json`` as a dict; ``{}`` where there is none, or none readable as one
    (the checks that read it without loading the model)."""
    try:
        config = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return config if isinstance(config, dict) else {}


def _ensemble_of(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``ensemble`` entry of a directory's ``config.json``: None where it is no ensemble."""
    spec = _config_json(directory).get("ensemble")
    return spec if isinstance(spec, dict) else None


def _is_model_directory(path: Path) -> bool:
    """Whether ``path`` holds something attend wrote (its config.json says so)."""
    config = _config_json(path)
    return "attend_version" in config or {"model", "labels"} <= set(config)


#: The hidden names attend gives the files and folders it works in while it writes an output
#: (``.NAME.tmp<pid>``, ``.NAME.staging<pid>``, ``.model.prepared<pid>.onnx``, ``.int8-search<pid>.onnx``):
#: a crash can leave one behind; they are attend's, not the user's.
WORKING_NAME = re.compile(r"\.[^/]*?(?:\.(?:tmp|prepared|staging|old|training)|int8-search)\d+(?:\.onnx)?")

#: The file an :class:`ArtifactWriter` marks its staging directory with (this machine's name and its
#: process id), removed as the directory is published: what :func:`remove_orphans` may remove.
STAGING_MARK = ".attend-staging"


def _staging_owner() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def remove_orphans(out: Path) -> list[Path]:
    """Remove the staging directories (``.NAME.staging<pid>``) that writing ``out`` left beside it
    when its process was killed (a ``kill -9`` while a model was written had left a whole copy
    there for good); return them. Only a directory marked as a writer's of this machine
    (:data:`STAGING_MARK`) whose process is no more: not a live writer's, another machine's on a
    shared folder, nor a folder of the user's that happens to be named so."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.staging(\d+)")
    here = socket.gethostname()
    removed = []
    with contextlib.suppress(OSError):
        for sibling in out.parent.iterdir():
            found = pattern.fullmatch(sibling.name)
            if found is None or int(found.group(1)) == os.getpid():
                continue
            try:
                owner = (sibling / STAGING_MARK).read_text(encoding="utf-8").split()
            except (OSError, UnicodeDecodeError):
                continue
            if owner == [here, found.group(1)] and not _alive(int(found.group(1))):
                shutil.rmtree(sibling, ignore_errors=True)
                removed.append(sibling)
    return removed


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's (PermissionError), or no pid at all: left alone
        return True
    return True


def lock_path(target: Path) -> Path:
    """The lock file attend takes to write ``target`` (a model directory, a data set's archive):
    ``.NAME.lock`` beside it."""
    return target.with_name(f".{target.name}.lock")


def acquire_or_wait(lock: Any, waiting: str, timeout: float) -> None:
    """Take ``lock`` (a ``filelock.FileLock``), saying ``waiting`` on stderr first when another process
    holds it, then waiting up to ``timeout`` seconds (``filelock.Timeout`` after): processes started
    together (torchrun's workers, serve's) wait for the first's work, and say so, rather than seem hung."""
    import sys

    from filelock import Timeout

    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(waiting, file=sys.stderr, flush=True)
        lock.acquire(timeout=timeout)


def locked_target(path: Path) -> Path | None:
    """What the lock file ``path`` guards (:func:`lock_path`'s inverse), or None if it is none."""
    found = re.fullmatch(r"\.(.+)\.lock", path.name)
    return path.with_name(found.group(1)) if found else None


#: What attend writes into a model directory beside the files its ``config.json`` lists: the run's
#: log, TensorBoard events and figures, a recommender's ids, an int8 graph (``attend quantize``),
#: the ONNX copy ``quantize --runtime both`` makes, an ensemble's members, ``attend demo``'s page.
#: The folder of a model directory where ``attend quantize`` exports its ONNX model directory.
ONNX_FOLDER = "onnx"
MODEL_DIRECTORY_EXTRAS = frozenset({
    "config.json", "metrics.json", "train_log.jsonl", "runs", "confusion_matrix.png", "items.json",
    "model.int8.onnx", "onnx", "members", "explanation.html",
})  # fmt: skip
#: The one page attend writes into a model directory (``attend demo``'s; in the set above).
DEMO_PAGE = "explanation.html"


def not_the_models(path: Path) -> list[str]:
    """The entries of model directory ``path`` that attend did not write there (a user's notes, a
    model exported into it): replacing the model replaces the whole directory, and them with it."""
    # The files recorded, as a directory of any version records them (an older one: weights_sha256, and
    # its tokenizer unrecorded); a files entry that is no mapping records nothing.
    config = _config_json(path)
    listed = config.get("files")
    if listed is not None and not isinstance(listed, dict):
        config = {key: value for key, value in config.items() if key != "files"}
    legacy = {"tokenizer.json", TRAINING_TEXTS} if listed is None else set()
    known = MODEL_DIRECTORY_EXTRAS | set(_recorded_hashes(config)) | legacy
    found: list[str] = []
    for entry in sorted(path.iterdir()):
        if WORKING_NAME.fullmatch(entry.name):
            continue
        if entry.name not in known:
            found.append(entry.name + ("/" if entry.is_dir() else ""))
        elif entry.is_dir() and not entry.is_symlink():  # attend's folder, with what a user put inside it:
            # "onnx/notes.txt" had gone too (a link is removed, not what it points to: nothing to look into)
            found += [f"{entry.name}/{inner}" for inner in _not_attends_inside(entry)]
    return found


def _not_attends_inside(folder: Path) -> list[str]:
    """The entries of one of attend's folders in a model directory that attend did not write: an
    ``onnx/`` or ``members/NN/`` model directory's (as :func:`not_the_models` finds them), and in
    ``runs/`` whatever is no TensorBoard event file."""
    def marked(entry: Path) -> str:
        return entry.name + ("/" if entry.is_dir() else "")

    if folder.name == "runs":
        return sorted(marked(entry) for entry in folder.iterdir()
                      if not (entry.is_file() and entry.name.startswith("events.out.tfevents.")))  # fmt: skip
    if folder.name == "members":
        found: list[str] = []
        for member in sorted(folder.iterdir()):
            if member.is_symlink():  # removed with the directory, not what it points to; never followed
                continue
            if member.is_dir() and _is_model_directory(member):
                found += [f"{member.name}/{inner}" for inner in not_the_models(member)]
            elif not WORKING_NAME.fullmatch(member.name):
                found.append(marked(member))
        return found
    if _is_model_directory(folder):  # onnx/: an export's directory
        return not_the_models(folder)
    return sorted(marked(entry) for entry in folder.iterdir() if not WORKING_NAME.fullmatch(entry.name))


def file_in_the_way(folder: Path) -> Path | None:
    """``folder`` or the nearest of its parents that exists and is no directory (a file, where a
    folder to write in is wanted), or None."""
    return next((path for path in (folder, *folder.parents) if path.exists() and not path.is_dir()), None)


def _inside(path: Path, folder: str | os.PathLike[str] | None) -> bool:
    if folder is None:
        return False
    folder = Path(folder).resolve()
    return path.resolve() == folder or folder in path.resolve().parents


def _is_html_page(path: Path) -> bool:
    """Whether a file starts as an HTML page does (``<!doctype html`` or ``<html``, after a BOM or spaces)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return False
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith((b"<!doctype html", b"<html"))


def check_page_path(flag: str, path: str | os.PathLike[str], *,
                    model_dir: str | os.PathLike[str] | None = None) -> Path:  # fmt: skip
    """Where an HTML report (``--html FILE``) may be written, checked before any work: not in the
    model directory (``explain DIR --html DIR/model.safetensors`` replaced the weights), and over
    an existing file only if that is an HTML page (a report written before; an input file named by
    mistake was replaced). Missing folders above it are made when it is written.

    Raises:
        ValueError: naming ``flag`` and the path.
    """
    page = Path(path)
    if _inside(page, model_dir):
        raise ValueError(f"{flag} {path}: that is in the model directory {model_dir}, whose files it could replace; "
                         "write the page elsewhere")  # fmt: skip
    if page.is_dir():
        raise ValueError(f"{flag} {path}: is a folder; give a file name for the page")
    blocking = file_in_the_way(page.parent)
    if blocking is not None:
        raise ValueError(f"{flag} {path}: {blocking} is a file, not a folder")
    if page.is_file() and page.stat().st_size and not _is_html_page(page):  # an empty one: made for it (mktemp)
        raise ValueError(f"{flag} {path}: exists and is no HTML page; a report replaces only an earlier page, so "
                         "remove the file or choose another name")  # fmt: skip
    return page


def write_page(path: str | os.PathLike[str], page: str) -> Path:
    """Write an HTML page atomically, making missing folders; refused over a file that is no HTML
    page (a model's weights or config.json, a user's notes), as :func:`check_page_path` refuses it.
    The library's renderers write through it: only the command line had checked. Nor into a model
    directory, but for ``attend demo``'s own page there: a page beside the model stopped ``attend
    train --overwrite`` from replacing it (``attend explain --html`` refuses it too)."""
    target = Path(path)
    owner = enclosing_model_directory(target.parent)
    ours = owner is not None and target.name == DEMO_PAGE and target.resolve().parent == owner
    where = check_page_path("path", path, model_dir=None if ours else owner)
    where.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(where, page)


def enclosing_model_directory(path: str | os.PathLike[str]) -> Path | None:
    """The model directory ``path`` is, or is inside, or None."""
    here = Path(path).resolve()
    return next((folder for folder in (here, *here.parents) if folder.is_dir() and _is_model_directory(folder)), None)


def check_picture_folder(flag: str, folder: str | os.PathLike[str], *,
                         model_dir: str | os.PathLike[str] | None = None) -> Path:  # fmt: skip
    """Where PNG files (``--png DIR``) may be written, checked before any work: a folder (or one to
    make) outside the model directory, below no file.

    Raises:
        ValueError: naming ``flag`` and the folder.
    """
    where = Path(folder)
    if _inside(where, model_dir):
        raise ValueError(f"{flag} {folder}: that is in the model directory {model_dir}; write the pictures elsewhere")
    blocking = file_in_the_way(where)
    if blocking is not None:
        raise ValueError(f"{flag} {folder}: {blocking} is a file; give a directory for the PNG files")
    return where


def _refuse_a_file_above(out: Path) -> None:
    """Refuse an output directory below a regular file, naming the file."""
    blocking = file_in_the_way(out.parent)
    if blocking is not None:
        raise ModelDirError(f"{blocking} is a file, so the output directory {out} cannot be made in it")


#: The most bytes a hidden sibling's name adds to the output directory's: the staging directory
#: ``.NAME.staging<pid>``, with a process id of up to 7 digits (Linux's largest ``pid_max``).
_SIBLING_EXTRA_BYTES = len("..staging") + 7


def _refuse_a_long_name(out: Path) -> None:
    """Refuse an output directory whose name leaves no room for the hidden names written beside it
    (so a run fails before its work, not when it publishes)."""
    parent = next((p for p in out.absolute().parents if p.is_dir()), None)
    try:
        limit = os.pathconf(parent, "PC_NAME_MAX") if parent is not None else 255
    except (OSError, ValueError, AttributeError):  # AttributeError: no pathconf (Windows)
        limit = 255
    size = len(os.fsencode(out.name))
    if size + _SIBLING_EXTRA_BYTES > limit:
        raise ModelDirError(f"output directory name {out.name[:40]}... is {size} bytes; attend writes beside it under "
                            f"names up to {_SIBLING_EXTRA_BYTES} bytes longer, and this file system allows {limit}: "
                            f"choose a name of at most {limit - _SIBLING_EXTRA_BYTES} bytes")  # fmt: skip


def check_output_directory(out: Path, *, source: Path | None = None, overwrite: bool = True,
                           onnx_folder: bool = False) -> None:  # fmt: skip
    """Refuse an output that would overwrite its source, an existing model without ``overwrite``,
    anything that is not a model directory, one inside another model directory (but its ``onnx/``
    for an export, ``onnx_folder``: where `attend quantize` exports, replacing what is there), or a
    name too long for the hidden names beside it."""
    _refuse_a_long_name(out)
    if source is not None:
        out_abs, source_abs = out.resolve(), source.resolve()
        if out_abs == source_abs or out_abs in source_abs.parents:
            raise ModelDirError(
                f"output directory {out} would overwrite the model it is made from ({source}); choose another"
            )
    ensemble = enclosing_ensemble(out) if out.is_dir() else None
    if ensemble is not None:
        raise ModelDirError(f"{out} is a member of the ensemble {ensemble}, whose recorded hashes writing into it "
                            "would break; choose another output directory")  # fmt: skip
    target = out.resolve()  # where a link leads: the folder written (a link's own place had met a bare ValueError)
    owner = enclosing_model_directory(target.parent)
    if owner is not None and target.relative_to(owner).parts == (ONNX_FOLDER,) and not onnx_folder:
        # Only an export: a pruned or trained model put there had been replaced by the next quantize.
        raise ModelDirError(f"{out} is the model directory {owner}'s {ONNX_FOLDER}/ folder, where its ONNX export "
                            "goes (attend quantize replaces what it holds); choose a directory outside the model")
    if owner is not None and target.relative_to(owner).parts != (ONNX_FOLDER,):
        # A folder attend did not write there stops `attend train --overwrite` from replacing that model;
        # `onnx/` is attend's own (where `attend quantize` exports).
        raise ModelDirError(f"{out} is inside the model directory {owner}, where it would stop `attend train "
                            "--overwrite` from replacing that model; choose a directory outside it")  # fmt: skip
    if not out.exists():
        _refuse_a_file_above(out)
        return
    if not out.is_dir():
        raise ModelDirError(f"{out} exists and is not a directory; choose another output directory")
    if os.path.ismount(out):  # found only once the model was trained: "Device or resource busy", and debris
        raise ModelDirError(f"{out} is a mount point: a model is built beside its directory and swapped in "
                            f"whole, which a mount point cannot be; give a folder inside it (e.g. {out / 'model'})")
    if not any(out.iterdir()):
        return
    if not _is_model_directory(out):
        raise ModelDirError(f"{out} exists, is not empty and is not a model directory; choose another output directory")
    if not overwrite:
        error = ModelDirError(f"{out} already holds a model; pass --overwrite (overwrite=True from Python) to "
                              "replace it, or choose another directory")  # fmt: skip
        error.replaceable = True  # what --overwrite replaces (nothing else in the way is ever replaced)
        raise error
    if others := not_the_models(out):  # they had gone with the model, in silence
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ModelDirError(
            f"{out} holds {shown} beside its model, which attend did not write there: replacing the model replaces "
            "the whole directory; move them out, or choose another directory"
        )


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swap two directories in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    return result == 0


def publish_directory(staging: Path, out: Path) -> None:
    """Put the complete directory ``staging`` at ``out``, replacing what was there.

    Where the system can swap two directories atomically, a reader sees the old directory or the
    new one, never neither; elsewhere the old one is moved aside first, and removed last.
    """
    if out.exists():
        if _exchange(staging, out):
            # it now holds the old directory: marked as a writer's, a kill while it is removed leaves it
            # to the next writer (remove_orphans), as one before the swap is
            with contextlib.suppress(OSError):
                (staging / STAGING_MARK).write_text(_staging_owner() + "\n", encoding="utf-8")
            shutil.rmtree(staging, ignore_errors=True)
            return
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(staging, out)


class ArtifactWriter:
    """Build a model directory beside ``out`` and publish it whole (a context manager).

    Files go into :attr:`path`, a hidden staging directory next to ``out``; :meth:`publish`
    records the SHA-256 of every file the model needs in ``config.json`` (written last), then
    swaps the directory into place. Leaving the block without publishing (an error, Ctrl-C)
    removes the staging directory and leaves ``out`` as it was.

    Args:
        out: The model directory to write.
        source: A model it is derived from (export, pruning), which it must not overwrite.
        overwrite: Replace a model directory already at ``out`` (else that is an error).
        onnx_folder: ``out`` may be a model directory's ``onnx/`` (an export's place).
    """

    def __init__(self, out: str | os.PathLike[str], *, source: Path | None = None, overwrite: bool = True,
                 onnx_folder: bool = False) -> None:  # fmt: skip
        self.out = output_path(out)
        check_output_directory(self.out, source=source, overwrite=overwrite, onnx_folder=onnx_folder)
        self.path = self.out.with_name(f".{self.out.name}.staging{os.getpid()}")
        self.files: dict[str, str] = {}
        self._staged: int | None = None  # the staging directory's inode, which the swap into place keeps

    def __enter__(self) -> ArtifactWriter:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.path, ignore_errors=True)
        remove_orphans(self.out)
        self.path.mkdir()
        (self.path / STAGING_MARK).write_text(_staging_owner() + "\n", encoding="utf-8")
        self._staged = self.path.stat().st_ino
        return self

    def in_place(self) -> bool:
        """Whether what was staged is now at ``out``: :meth:`publish` swapped it in, even where it was
        then cut short removing the directory it replaced (which :attr:`path` then holds)."""
        try:
            return self._staged is not None and self.out.stat().st_ino == self._staged
        except OSError:
            return False

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def save_weights(self, model: nn.Module, name: str = "model.safetensors") -> str:
        """Write the model's weights and record their hash; return it."""
        self.files[name] = save_weights(model, self.path / name)
        return self.files[name]

    def save_training_texts(self, texts: Sequence[str]) -> str:
        """Keep the training split's text fingerprints (:data:`TRAINING_TEXTS`); return their hash."""
        tensors = {"fingerprints": text_fingerprints(texts)}
        self.files[TRAINING_TEXTS] = save_tensors(tensors, self.path / TRAINING_TEXTS)
        return self.files[TRAINING_TEXTS]

    def copy_training_texts(self, source: Path | None) -> None:
        """Keep ``source``'s training-text fingerprints (:data:`TRAINING_TEXTS`), where it has them:
        a model made from another (pruned, exported) was trained on the same texts."""
        if source is not None and (Path(source) / TRAINING_TEXTS).is_file():
            shutil.copyfile(Path(source) / TRAINING_TEXTS, self.path / TRAINING_TEXTS)
            self.record(TRAINING_TEXTS)

    def record(self, name: str) -> str:
        """Record the hash of a file the caller wrote into :attr:`path` (the model needs it to load)."""
        self.files[name] = sha256_file(self.path / name)
        return self.files[name]

    def write_json(self, name: str, data: Any) -> Path:
        """Write a JSON file (strict: an undefined figure is null, not a bare NaN that parsers refuse);
        its hash is not recorded unless the caller records it (:meth:`record`)."""
        return atomic_write_json(self.path / name, finite_json(data))

    def publish(self, config: dict[str, Any]) -> Path:
        """Write ``config.json`` (with ``files``) last, then swap the directory into place. A pickle-format
        file written into it (a Task's ``write``) is refused first: ``attend.load`` would refuse the
        published model, and its training state was gone."""
        refuse_pickles(self.path, shown_as=self.out, doing="publish")
        config = dict(config)
        config["files"] = {**dict(config.get("files") or {}), **self.files}
        if "model.safetensors" in self.files:
            config["weights_sha256"] = self.files["model.safetensors"]
        atomic_write_json(self.path / "config.json", config)
        (self.path / STAGING_MARK).unlink(missing_ok=True)  # the model's folder is no staging one
        publish_directory(self.path, self.out)
        return self.out


def link_target(out: str | os.PathLike[str]) -> Path:
    """``out`` as given, or, where it is a symbolic link, the directory it points to: a model written
    to a link replaces the link's target (it had replaced the link, the target keeping the old model)."""
    path = Path(out)
    return path.resolve() if path.is_symlink() else path


def output_path(out: str | os.PathLike[str]) -> Path:
    """The directory a model is written to: :func:`link_target`, made absolute (``--out .`` has a
    parent to build beside)."""
    return link_target(out).absolute()


class OutputLock:
    """An exclusive lock on writing the model directory ``out``: ``.NAME.lock`` beside it, held with
    ``flock`` while a run writes ``out`` and removed by :meth:`release`. A second run writing the
    same directory is refused at once; before, two collided in the training state, and the later
    replaced the earlier's model. The lock dies with its process (a crash, torchrun's restart).

    Raises:
        ModelDirError: another process holds it.
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        out = output_path(out)
        self.path = lock_path(out)
        self.fd: int | None = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not a POSIX system: no lock
            return
        _refuse_a_file_above(out)  # as check_output_directory says them, for a run that locks first
        _refuse_a_long_name(out)  # (the lock's own name had been blamed: "File name too long")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                shown = f" (process {holder})" if holder.isdigit() else ""
                raise ModelDirError(f"{out}: another attend run is writing it{shown}; wait for it to end, or choose "
                                    "another output directory") from None  # fmt: skip
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the run that held it removed it as this one opened it: take the new one
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:  # a full disk: the empty lock file had stayed, and the error named no file
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(fd)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None
        self.fd = fd

    def release(self) -> None:
        """Remove the lock file and let go of it (removed first: a run that opens it after finds it gone)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


#: Where an ensemble's member directories live inside its own.
ENSEMBLE_MEMBERS_DIR = "members"


def enclosing_ensemble(path: str | os.PathLike[str]) -> Path | None:
    """The ensemble directory that ``path`` is a member of (``ENSEMBLE/members/NN``), or None.

    A member is covered by the hash its ensemble recorded: writing into it breaks the ensemble.
    """
    members = Path(os.path.normpath(Path(path).absolute())).parent  # ens/members/00/../00 is the member too
    if members.name != ENSEMBLE_MEMBERS_DIR:
        return None
    return members.parent if _ensemble_of(members.parent) is not None else None


def member_sources(ensemble: str | os.PathLike[str], member: str | os.PathLike[str] | None = None, *,
                   verb: str | None = None) -> str:  # fmt: skip
    """How to reach the networks of an ensemble's members (or of one ``member``) to export, quantise
    or prune them: each member's recorded source directory where it still holds a model, else a
    copy of the member itself (``--model auto`` records ``auto:NAME``: its sources are gone). For
    ``verb="export"``, a member that is an ONNX directory already is said to be one (it had been
    listed among those to export, which refuse an ONNX directory)."""
    ensemble = Path(ensemble)
    listed = (_ensemble_of(ensemble) or {}).get("members")
    entries = [e for e in listed if isinstance(e, dict) and isinstance(e.get("path"), str)] if isinstance(
        listed, list) else []  # fmt: skip
    if member is not None:
        name = Path(member).absolute().name
        entries = [e for e in entries if Path(e["path"]).name == name]
    sources, copies, exported = [], [], []
    for entry in entries:
        source = entry.get("source")
        if verb == "export" and isinstance(_config_json(ensemble / entry["path"]).get("onnx"), dict):
            exported.append(source if isinstance(source, str) else str(ensemble / entry["path"]))
        elif isinstance(source, str) and (Path(source) / "config.json").is_file():
            sources.append(source)
        else:
            copies.append(str(ensemble / entry["path"]))
    parts = [f"the source director{'y' if len(sources) == 1 else 'ies'} {', '.join(sources)}"] if sources else []
    if copies:
        parts.append(f"a copy of {'each of ' if len(copies) > 1 else ''}{', '.join(copies)}, whose source is gone "
                     f"(cp -r {copies[0]} DIR)")  # fmt: skip
    where = " and ".join(parts) or f"the members' source directories (see {ensemble / 'config.json'})"
    if exported:
        already = f"{', '.join(exported)} {'is an ONNX directory' if len(exported) == 1 else 'are ONNX directories'}"
        if not parts:
            return f"none of them: {already} already, which the ensemble runs with ONNX Runtime as it is"
        where = f"{where} ({already} already: keep as is)"
    return f"{where}; then build the ensemble again from the results (attend ensemble ... --overwrite)"


def refuse_ensemble(path: str | os.PathLike[str], verb: str) -> None:
    """Raise :class:`ModelDirError` where ``path`` is an ensemble, which has no network of its own to
    ``verb`` (export, quantise, prune): the message says which directories to run the verb on."""
    spec = _ensemble_of(path)  # None for a bad directory too: the verb's own loading reports it
    if spec is not None:
        members = spec.get("members")
        count = f" of {len(members)} models" if isinstance(members, list) else ""
        raise ModelDirError(f"{path} is an ensemble{count}: it has no network of its own to {verb}; {verb} "
                            f"{member_sources(path, verb=verb)}")  # fmt: skip


@dataclass(frozen=True)
class EnsembleMember:
    """A plain classifier directory going into an ensemble, and what the ensemble records of it."""

    path: Path
    weight: float
    labels: list[str]
    model_type: str
    source: str


def write_ensemble(
    members: Sequence[EnsembleMember],
    out: str | os.PathLike[str],
    *,
    multi_label: bool,
    overwrite: bool = False,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    logs: bool = False,
) -> tuple[Path, list[dict[str, Any]]]:
    """Write an ensemble model directory (the one format ``attend ensemble`` and ``--model auto`` write):
    each member copied whole to ``members/00``, ``members/01``, ... and a ``config.json`` with
    ``task: classification`` and an ``ensemble`` entry listing them; the labels are the first member's.

    ``config`` adds entries to ``config.json`` (the writer's ``attend_version`` among them),
    ``metrics`` is written as ``metrics.json``; ``logs``: each member keeps its TensorBoard ``runs/``
    (``--model auto``'s members, trained by this run; ``attend ensemble`` leaves them with the models
    it was given). The caller checks that the members belong together. Returns the directory and the member entries.
    """
    labels = members[0].labels
    entries = []
    with ArtifactWriter(out, overwrite=overwrite) as writer:
        (writer.path / ENSEMBLE_MEMBERS_DIR).mkdir()
        for index, member in enumerate(members):
            name = f"{ENSEMBLE_MEMBERS_DIR}/{index:02d}"
            ignored = (".*",) if logs else (".*", "runs")
            # attend's files alone: a user's notes beside a member's model had been copied in, and the
            # ensemble's --overwrite then refused them as not attend's
            theirs = {member.path / found.rstrip("/") for found in not_the_models(member.path)}
            hidden = shutil.ignore_patterns(*ignored)

            def left_out(folder: str, names: list[str], theirs: set[Path] = theirs, hidden: Any = hidden) -> set[str]:
                return set(hidden(folder, names)) | {n for n in names if Path(folder) / n in theirs}

            shutil.copytree(member.path, writer.path / name, ignore=left_out)
            writer.record(f"{name}/config.json")
            entries.append({"path": name, "source": member.source, "model_type": member.model_type,
                            "weight": member.weight, "labels": member.labels})  # fmt: skip
        if metrics is not None:
            writer.write_json("metrics.json", metrics)
        published = writer.publish({
            "task": "classification",
            "labels": labels,
            "model": {"model_type": "ensemble", "num_labels": len(labels), "multi_label": multi_label},
            "ensemble": {"members": entries, "labels": labels},
            **(config or {}),
        })  # fmt: skip
    return published, entries


def update_metrics(path: Path, key: str, value: Any) -> dict[str, Any]:
    """Set ``metrics.json[key]`` of a model directory (merging into a dict already there), atomically."""
    file = path / "metrics.json"
    metrics: dict[str, Any] = {}
    if file.is_file():
        try:
            metrics = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelDirError(f"{file} is not valid JSON ({exc}); fix or remove it") from None
        if not isinstance(metrics, dict):
            raise ModelDirError(f"{file} does not hold a JSON object; fix or remove it")
    if isinstance(metrics.get(key), dict) and isinstance(value, dict):
        metrics[key] = {**metrics[key], **value}
    else:
        metrics[key] = value
    atomic_write_json(file, finite_json(metrics))
    return metrics

