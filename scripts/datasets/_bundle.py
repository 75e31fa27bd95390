"""Helpers shared by the scripts that rebuild the bundled datasets.

The bundled files must be byte-for-byte reproducible, so that a rebuild that changes nothing shows
no diff in git: gzip stores a timestamp and a file name in its header, and both are pinned here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "src" / "attend" / "data" / "bundled"

# Let the scripts run from a checkout without installing the package first.
sys.path.insert(0, str(ROOT / "src"))


def write_gz_text(path: Path, text: str) -> str:
    """Write ``text`` (UTF-8) as a reproducible gzip file, replaced atomically; return its SHA-256.

    mtime=0 and an empty file name make the bytes depend on the content only, so a rebuild from
    the same package gives the same file; a failed write never leaves half a file.
    """
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as handle:
        handle.write(text.encode("utf-8"))
    data = raw.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; a packaged data file is readable by all.
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def write_tsv_gz(path: Path, labels: Sequence[str], texts: Sequence[str]) -> str:
    """Write ``label<TAB>text`` lines under a header as a reproducible gzip file.

    Args:
        path: Where to write; replaced atomically so a failed build never leaves half a file.
        labels: One label per example.
        texts: One text per example; must hold no tab or newline (the caller normalises whitespace).

    Returns:
        The SHA-256 of the written file, so the caller can print it for the record.
    """
    if len(labels) != len(texts):
        raise ValueError(f"{len(labels)} labels but {len(texts)} texts")
    body = io.StringIO()
    body.write("label\ttext\n")
    for label, text in zip(labels, texts, strict=True):
        if "\t" in text or "\n" in text or "\t" in label or "\n" in label:
            raise ValueError(f"tab or newline in example {label!r}: {text[:80]!r}")
        body.write(f"{label}\t{text}\n")
    return write_gz_text(path, body.getvalue())


def summarise(name: str, labels: Sequence[str], path: Path, digest: str) -> None:
    """Print what was built, so the numbers can be copied into DATASETS and checked in review."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    print(f"{name}: {len(labels)} examples, {len(counts)} labels -> {path.relative_to(ROOT)}")
    print(f"  size {path.stat().st_size} bytes, sha256 {digest}")
    for label, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {count:7d}  {label}")
