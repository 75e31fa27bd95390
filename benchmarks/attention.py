"""Attention benchmarks: our kernels and modules against PyTorch's, measured side by side in one run.

Every number is a median over interleaved rounds (each round runs every contender once, in a
rotating order) after a warm-up, timed by the benchmarks' shared harness (``benchmarks/harness.py``),
in fp32, under ``torch.inference_mode``, with the process's ``torch.get_num_threads()`` threads.
Ratios are medians of per-round ratios, so slow drift and bursts of load from other processes hit
both sides of a comparison alike. Sections:

1. Matmul peak: fp32 GEMM / bmm FLOP/s; the GEMM is the reference for "% of peak" below and is
   timed again inside every group of sections 2 and 3, so efficiency is judged against the rate
   the machine gave in those very rounds.
2. Fast-path core: our ``sdpa`` backend (mask handling included) vs bare
   :func:`torch.nn.functional.scaled_dot_product_attention` on the same ``q, k, v``.
3. Full module: :class:`attend.attention.MultiHeadAttention` vs ``nn.MultiheadAttention``.
4. With weights: per-head weights from ours (``need_weights=True``, ``capture_attention``,
   ``backend="eager"``) vs ``nn.MultiheadAttention(need_weights=True, average_attn_weights=False)``.
5. Efficient attention scaling: time and peak memory vs sequence length for full, local, linear
   and performer attention. Memory is the peak resident-set growth during one forward, taken in
   a separate worker process (``VmHWM`` reset through ``/proc/self/clear_refs``) under an
   address-space cap, so a case that would not fit is reported instead of crashing the run.

Usage::

    python benchmarks/attention.py            # full run, a few minutes on 2 cores (see the README)
    python benchmarks/attention.py --quick    # smoke run, under 30 s on an idle 2-core machine
    python benchmarks/attention.py --threads 1 --sections 5   # scaling, robust to a busy machine
    python benchmarks/attention.py --json results.json --sections 2,3
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:
    import attend  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/harness.py, a sibling module

import harness
from attend.attention import MultiHeadAttention, capture_attention
from attend.attention.backends import sdpa_attention
from attend.attention.masks import MaskSpec

GIB = 1024**3
MIB = 1024**2


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    quick: bool
    core_lengths: tuple[int, ...]
    scaling_lengths: tuple[int, ...]
    batch: int = 8
    heads: int = 8
    head_dim: int = 64
    scaling_batch: int = 1
    window: int = 64
    gemm_n: int = 2048
    bmm_len: int = 512
    warmup: int = 2  # extra warm-up calls after the first, until a function's warm-up calls total `slow_call`
    slow_call: float = 0.5  # seconds; a function this slow gets a single warm-up call
    round_time: float = 0.25  # target seconds per function per round
    min_rounds: int = 5
    min_rounds_slow: int = 3  # when one round of the whole group takes longer than `slow_round`
    slow_round: float = 4.0
    max_rounds: int = 25
    group_time: float = 6.0  # keep adding rounds (up to max_rounds) until this much time is spent
    mem_cap_gb: float = 10.0
    threads: int = field(default_factory=torch.get_num_threads)

    @property
    def embed_dim(self) -> int:
        return self.heads * self.head_dim


def make_config(args: argparse.Namespace) -> Config:
    if args.quick:
        cfg = Config(
            quick=True,
            core_lengths=(64, 128),
            scaling_lengths=(256, 512),
            batch=2,
            gemm_n=1024,
            bmm_len=256,
            warmup=0,  # the first call still runs untimed
            round_time=0.02,
            min_rounds=2,
            min_rounds_slow=1,
            slow_round=0.5,
            max_rounds=3,
            group_time=0.2,
            mem_cap_gb=args.mem_cap_gb,
        )
    else:
        cfg = Config(
            quick=False,
            core_lengths=(128, 512, 2048),
            scaling_lengths=(1024, 2048, 4096, 8192, 16384),
            mem_cap_gb=args.mem_cap_gb,
        )
    return cfg


# ----------------------------------------------------------------------------------------------
# Timing (benchmarks/harness.py) and output helpers
# ----------------------------------------------------------------------------------------------

#: A contender that raises one of these is reported (e.g. "OOM") and left out; the others go on.
FAILURES = (RuntimeError, MemoryError)


def _describe_failure(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, MemoryError) or "memory" in text.lower() or "alloc" in text.lower():
        size = re.search(r"allocate (\d+) bytes", text)
        return f"OOM (allocating {int(size.group(1)) / MIB:.0f} MiB)" if size else "OOM"
    return f"{type(exc).__name__}: {text[:80]}"


def bench(fns: dict[str, Callable[[], object]], cfg: Config) -> dict[str, harness.Timing]:
    """Time every function of ``fns`` in interleaved rounds; failures are recorded, not raised.

    The harness warms each function up (fewer calls for slow ones), sizes its calls per round from
    the warm-up to about ``cfg.round_time``, runs fewer minimum rounds when one round of the group
    is slow, and adds rounds until ``cfg.group_time`` is spent.
    """
    with torch.inference_mode():
        measured = harness.interleave(
            fns,
            warmup=1 + cfg.warmup,
            warmup_s=cfg.slow_call,
            round_time=cfg.round_time,
            min_rounds=lambda round_s: cfg.min_rounds_slow if round_s > cfg.slow_round else cfg.min_rounds,
            max_rounds=cfg.max_rounds,
            budget_s=cfg.group_time,
            catch=FAILURES,
            describe=_describe_failure,
        )
    gc.collect()
    return measured


def fmt_time(m: harness.Timing) -> str:
    return harness.format_seconds(m.median) if m.ok else (m.error or "n/a")


def fmt_rate(flops: float, m: harness.Timing) -> str:
    return f"{flops / m.median / 1e9:.1f}" if m.ok else "-"


def fmt_frac(flops: float, m: harness.Timing, peak: float) -> str:
    return f"{100 * flops / m.median / peak:.0f}%" if m.ok and peak > 0 else "-"


def goal_mark(value: float, goal: float, higher_is_better: bool) -> str:
    if math.isnan(value):
        return "?"
    met = value >= goal if higher_is_better else value <= goal
    return "ok" if met else "MISS"


def max_diff(a: Tensor, b: Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def padding_mask(batch: int, length: int) -> Tensor:
    """Bool ``(B, L)``, True = padding: sequence ``b`` keeps ``L * (1 - b / (2B))`` keys (never empty)."""
    valid = [max(1, round(length * (1 - b / (2 * batch)))) for b in range(batch)]
    positions = torch.arange(length)[None, :]
    return positions >= torch.tensor(valid)[:, None]


def additive_mask(kpm: Tensor) -> Tensor:
    """The ``(B, 1, 1, L)`` float mask equivalent to a key padding mask."""
    return torch.zeros(kpm.shape, dtype=torch.float32).masked_fill(kpm, float("-inf"))[:, None, None, :]


# ----------------------------------------------------------------------------------------------
# 1. Matmul peak
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeakRef:
    """The reference GEMM: timed in section 1 and again inside every group of sections 2 and 3."""

    fn: Callable[[], object]
    flops: int
    name: str

    KEY = "__peak_gemm__"

    def add_to(self, fns: dict[str, Callable[[], object]]) -> dict[str, Callable[[], object]]:
        return {**fns, self.KEY: self.fn}

    def rate(self, measured: dict[str, harness.Timing]) -> float:
        m = measured.get(self.KEY)
        return self.flops / m.median if m is not None and m.ok else math.nan


def section_matmul(cfg: Config) -> tuple[PeakRef, dict[str, Any]]:
    torch.manual_seed(0)
    n, bh, length, d = cfg.gemm_n, cfg.batch * cfg.heads, cfg.bmm_len, cfg.head_dim
    a, b = torch.randn(n, n), torch.randn(n, n)
    q, kt = torch.randn(bh, length, d), torch.randn(bh, d, length)
    p, v = torch.randn(bh, length, length), torch.randn(bh, length, d)
    tokens = cfg.batch * length
    x, w = torch.randn(tokens, cfg.embed_dim), torch.randn(cfg.embed_dim, cfg.embed_dim)
    ref = PeakRef(lambda: a @ b, 2 * n**3, f"GEMM {n}x{n} @ {n}x{n}")
    cases = {
        ref.name: (ref.fn, ref.flops),
        f"bmm QK^T ({bh},{length},{d}) @ ({bh},{d},{length})": (lambda: torch.bmm(q, kt), 2 * bh * length**2 * d),
        f"bmm PV ({bh},{length},{length}) @ ({bh},{length},{d})": (lambda: torch.bmm(p, v), 2 * bh * length**2 * d),
        f"linear ({tokens},{cfg.embed_dim}) @ ({cfg.embed_dim},{cfg.embed_dim})": (
            lambda: x @ w,
            2 * tokens * cfg.embed_dim**2,
        ),
    }
    measured = bench({name: fn for name, (fn, _) in cases.items()}, cfg)
    peak = cases[ref.name][1] / measured[ref.name].median if measured[ref.name].ok else math.nan
    rows = [
        [name, fmt_time(m), fmt_rate(cases[name][1], m), fmt_frac(cases[name][1], m, peak)]
        for name, m in measured.items()
    ]
    harness.print_table(
        "1. Matmul peak (fp32)",
        ["kernel", "time", "GFLOP/s", "% of GEMM"],
        rows,
        [
            f"peak = the {ref.name} rate, {peak / 1e9:.1f} GFLOP/s here; sections 2 and 3 time this GEMM again in "
            "every group, interleaved with the contenders, and report efficiency against that in-group rate",
        ],
    )
    return ref, {
        "peak_flops": peak,
        "cases": {name: {**m.to_json(), "flops": cases[name][1]} for name, m in measured.items()},
    }


# ----------------------------------------------------------------------------------------------
# 2. Fast-path core
# ----------------------------------------------------------------------------------------------


def section_core(cfg: Config, ref: PeakRef) -> dict[str, Any]:
    batch, heads, d = cfg.batch, cfg.heads, cfg.head_dim
    module = MultiHeadAttention(cfg.embed_dim, heads).eval()  # supplies .score (scaled dot) and .span
    rows, out, peaks = [], {}, []
    for length in cfg.core_lengths:
        torch.manual_seed(length)
        q, k, v = (torch.randn(batch, heads, length, d) for _ in range(3))
        kpm = padding_mask(batch, length)
        bias = additive_mask(kpm)

        def ours(mask: Tensor | None, q=q, k=k, v=v, length=length) -> Tensor:
            spec = MaskSpec.validate(
                batch_size=batch, num_heads=heads, q_len=length, k_len=length, key_padding_mask=mask
            )
            return sdpa_attention(module, q, k, v, spec, dropout_p=0.0, need_weights=False, weights_grad=False)[0]

        fns: dict[str, Callable[[], object]] = {
            "ours": lambda ours=ours: ours(None),
            "sdpa": lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v),
            "ours+pad": lambda ours=ours, kpm=kpm: ours(kpm),
            "sdpa+pad": lambda q=q, k=k, v=v, bias=bias: F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
        }
        with torch.inference_mode():
            diff = {
                "none": max_diff(fns["ours"](), fns["sdpa"]()),  # type: ignore[arg-type]
                "pad": max_diff(fns["ours+pad"](), fns["sdpa+pad"]()),  # type: ignore[arg-type]
            }
        measured = bench(ref.add_to(fns), cfg)
        peak = ref.rate(measured)
        peaks.append(f"L={length}: {peak / 1e9:.1f}")
        flops = 4 * batch * heads * length * length * d
        for mask_name, a, b in (("none", "ours", "sdpa"), ("key_padding", "ours+pad", "sdpa+pad")):
            ratio = harness.paired_ratio(measured[b], measured[a])  # throughput ours/sdpa = t_sdpa / t_ours
            rows.append(
                [
                    f"L={length} {mask_name}",
                    fmt_time(measured[a]),
                    fmt_time(measured[b]),
                    fmt_rate(flops, measured[a]),
                    fmt_rate(flops, measured[b]),
                    fmt_frac(flops, measured[a], peak),
                    fmt_frac(flops, measured[b], peak),
                    ratio.fmt(),
                    goal_mark(ratio.median, 0.9, True),
                    f"{diff['none' if mask_name == 'none' else 'pad']:.1e}",
                ]
            )
            out[f"L={length}/{mask_name}"] = {
                "ours": measured[a].to_json(),
                "sdpa": measured[b].to_json(),
                "flops": flops,
                "peak_flops_in_group": peak,
                "throughput_ratio": ratio.to_json(),
                "max_abs_diff": diff["none" if mask_name == "none" else "pad"],
            }
    harness.print_table(
        f"2. Fast-path core: sdpa_attention (ours) vs F.scaled_dot_product_attention  "
        f"[B={batch}, H={heads}, d={d}, fp32]",
        [
            "case",
            "ours",
            "SDPA",
            "ours GF/s",
            "SDPA GF/s",
            "ours %pk",
            "SDPA %pk",
            "ours/SDPA thr.",
            "goal>=0.9",
            "max|diff|",
        ],
        rows,
        [
            "ours = MaskSpec.validate + sdpa_attention (score.as_dot, mask resolution, SDPA call, empty-row handling)",
            "SDPA gets the same q, k, v and, padded, the same additive (B,1,1,L) float mask (built outside the timing)",
            "FLOPs = 4*B*H*L^2*d (QK^T and PV, dense even where padded); ratio = median [IQR] over interleaved rounds",
            f"%pk = share of the {ref.name} rate timed in the same rounds (GFLOP/s {', '.join(peaks)})",
        ],
    )
    return out


# ----------------------------------------------------------------------------------------------
# 3. Full module and 4. with weights
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ start/stop log lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _torch_mha_path(mha: nn.MultiheadAttention, x: Tensor, **kwargs: Any) -> str:
    """Which implementation ``nn.MultiheadAttention`` ran: its native fast path or the Python one."""
    with _quiet_stderr(), torch.inference_mode():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            mha(x, x, x, **kwargs)
        names = {event.name for event in prof.events()}
    native = "aten::_native_multi_head_attention" in names
    path = "native fast path" if native else "python path (multi_head_attention_forward)"
    if any("scaled_dot_product" in name for name in names):
        kernel = "fused SDPA kernel"
    else:
        softmax = [name.removeprefix("aten::") for name in names if name.endswith("softmax")]
        kernel = "explicit bmm + " + "/".join(sorted(softmax)) + ", L x L scores materialised"
    return f"{path}, {kernel}"


def section_module(cfg: Config, ref: PeakRef) -> dict[str, Any]:
    batch, heads, embed = cfg.batch, cfg.heads, cfg.embed_dim
    rows, out, notes, peaks = [], {}, [], []
    for length in cfg.core_lengths:
        torch.manual_seed(length)
        mha = nn.MultiheadAttention(embed, heads, batch_first=True).eval()
        ours = MultiHeadAttention.from_torch(mha).eval()
        x = torch.randn(batch, length, embed)
        kpm = padding_mask(batch, length)
        fns: dict[str, Callable[[], object]] = {
            "ours": lambda ours=ours, x=x: ours(x, need_weights=False),
            "torch": lambda mha=mha, x=x: mha(x, x, x, need_weights=False),
            "ours+pad": lambda ours=ours, x=x, kpm=kpm: ours(x, key_padding_mask=kpm, need_weights=False),
            "torch+pad": lambda mha=mha, x=x, kpm=kpm: mha(x, x, x, key_padding_mask=kpm, need_weights=False),
        }
        with torch.inference_mode():
            diff = {
                "none": max_diff(fns["ours"]()[0], fns["torch"]()[0]),  # type: ignore[index]
                # torch's fast path returns zeros at padded query positions; compare the valid ones.
                "pad": max_diff(
                    fns["ours+pad"]()[0][~kpm],  # type: ignore[index]
                    fns["torch+pad"]()[0][~kpm],  # type: ignore[index]
                ),
            }
        if length == cfg.core_lengths[0]:
            notes.append(f"torch, no mask: {_torch_mha_path(mha, x, need_weights=False)}")
            notes.append(f"torch, padding: {_torch_mha_path(mha, x, key_padding_mask=kpm, need_weights=False)}")
        measured = bench(ref.add_to(fns), cfg)
        peak = ref.rate(measured)
        peaks.append(f"L={length}: {peak / 1e9:.1f}")
        flops = 4 * batch * heads * length * length * cfg.head_dim + 8 * batch * length * embed * embed
        for mask_name, a, b in (("none", "ours", "torch"), ("key_padding", "ours+pad", "torch+pad")):
            ratio = harness.paired_ratio(measured[b], measured[a])
            key = "none" if mask_name == "none" else "pad"
            rows.append(
                [
                    f"L={length} {mask_name}",
                    fmt_time(measured[a]),
                    fmt_time(measured[b]),
                    fmt_rate(flops, measured[a]),
                    fmt_frac(flops, measured[a], peak),
                    fmt_frac(flops, measured[b], peak),
                    ratio.fmt(),
                    goal_mark(ratio.median, 0.9, True),
                    f"{diff[key]:.1e}",
                ]
            )
            out[f"L={length}/{mask_name}"] = {
                "ours": measured[a].to_json(),
                "torch": measured[b].to_json(),
                "flops": flops,
                "peak_flops_in_group": peak,
                "throughput_ratio": ratio.to_json(),
                "max_abs_diff": diff[key],
            }
    notes += [
        "ours = MultiHeadAttention.from_torch(mha) in eval, need_weights=False; torch = nn.MultiheadAttention"
        "(batch_first=True) in eval, self-attention (x, x, x), need_weights=False",
        "FLOPs = attention 4*B*H*L^2*d + projections 8*B*L*E^2; max|diff| over non-padded query positions",
        f"%pk = share of the {ref.name} rate timed in the same rounds (GFLOP/s {', '.join(peaks)})",
    ]
    harness.print_table(
        f"3. Full module: MultiHeadAttention vs nn.MultiheadAttention  [B={batch}, E={embed}, H={heads}, fp32]",
        ["case", "ours", "torch", "ours GF/s", "ours %pk", "torch %pk", "ours/torch thr.", "goal>=0.9", "max|diff|"],
        rows,
        notes,
    )
    return out


def section_weights(cfg: Config) -> dict[str, Any]:
    batch, heads, embed = cfg.batch, cfg.heads, cfg.embed_dim
    rows, out, torch_path = [], {}, []
    for length in cfg.core_lengths:
        torch.manual_seed(length)
        mha = nn.MultiheadAttention(embed, heads, batch_first=True).eval()
        ours = MultiHeadAttention.from_torch(mha).eval()
        eager = MultiHeadAttention.from_torch(mha, backend="eager").eval()
        x = torch.randn(batch, length, embed)
        if not torch_path:
            torch_path.append(_torch_mha_path(mha, x, need_weights=True, average_attn_weights=False))

        def captured(ours=ours, x=x) -> tuple[Tensor, Tensor]:
            with capture_attention(ours) as cap:
                result, _ = ours(x)
            return result, cap.weights[0]

        fns: dict[str, Callable[[], object]] = {
            "torch": lambda mha=mha, x=x: mha(x, x, x, need_weights=True, average_attn_weights=False),
            "ours": lambda ours=ours, x=x: ours(x, need_weights=True),
            "capture": captured,
            "eager": lambda eager=eager, x=x: eager(x, need_weights=True),
        }
        with torch.inference_mode():
            ref_out, ref_w = fns["torch"]()  # type: ignore[misc]
            diff = {}
            for name in ("ours", "capture", "eager"):
                got_out, got_w = fns[name]()  # type: ignore[misc]
                diff[name] = max(max_diff(got_out, ref_out), max_diff(got_w, ref_w))
            del ref_out, ref_w, got_out, got_w
        measured = bench(fns, cfg)
        for name in ("ours", "capture", "eager"):
            ratio = harness.paired_ratio(measured[name], measured["torch"])  # time ratio ours/torch
            label = {"ours": "ours need_weights", "capture": "ours capture_attention", "eager": "ours eager (ref.)"}
            rows.append(
                [
                    f"L={length} {label[name]}",
                    fmt_time(measured[name]),
                    fmt_time(measured["torch"]),
                    ratio.fmt(),
                    goal_mark(ratio.median, 1.0, False) if name != "eager" else "",
                    f"{diff[name]:.1e}",
                ]
            )
            out[f"L={length}/{name}"] = {
                "ours": measured[name].to_json(),
                "torch": measured["torch"].to_json(),
                "time_ratio": ratio.to_json(),
                "max_abs_diff": diff[name],
            }
    harness.print_table(
        f"4. With per-head weights: ours vs nn.MultiheadAttention(need_weights=True, average_attn_weights=False)"
        f"  [B={batch}, E={embed}, H={heads}]",
        ["case", "ours", "torch", "ours/torch time", "goal<=1.0", "max|diff|"],
        rows,
        [
            "ours need_weights / capture: output from SDPA, weights recomputed from the same q', k' (sdpa backend)",
            "eager: backend='eager' (explicit softmax(QK^T) @ V), the reference for a weights-first path",
            "max|diff| = max over output and (B, H, L, L) weights against torch",
            f"torch: {torch_path[0] if torch_path else '?'}",
        ],
    )
    return out


# ----------------------------------------------------------------------------------------------
# 5. Efficient attention scaling
# ----------------------------------------------------------------------------------------------

#: name -> (MultiHeadAttention options, is_causal, materialises the L x L scores)
SCALING_VARIANTS: dict[str, tuple[dict[str, Any], bool, bool]] = {
    "full sdpa": ({}, False, False),
    "full eager": ({"backend": "eager"}, False, True),
    "local w=64": ({"attention": "local"}, False, False),
    "linear": ({"attention": "linear"}, False, False),
    "linear causal": ({"attention": "linear"}, True, False),
    "performer": ({"attention": "performer"}, False, False),
}


def build_scaling_model(name: str, embed: int, heads: int, window: int) -> tuple[MultiHeadAttention, bool]:
    options, causal, _ = SCALING_VARIANTS[name]
    if options.get("attention") == "local":
        options = {**options, "window": window}
    torch.manual_seed(0)
    return MultiHeadAttention(embed, heads, **options).eval(), causal


def estimated_bytes(name: str, batch: int, heads: int, length: int, embed: int) -> int:
    """Rough peak of one forward: used only to skip cases that cannot fit under the cap."""
    linear_part = 12 * batch * length * embed * 4
    if SCALING_VARIANTS[name][2]:
        return 2 * batch * heads * length * length * 4 + linear_part  # scores and softmax
    return linear_part


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise KeyError(field_name)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM (and ru_maxrss) to the current RSS
        return True
    except OSError:
        return False


def memory_worker(spec: dict[str, Any]) -> None:
    """Child process: for each case, peak RSS growth of one forward; one JSON line per case."""
    torch.set_num_threads(spec["threads"])
    embed, heads, batch, window = spec["embed"], spec["heads"], spec["batch"], spec["window"]
    torch.randn(256, embed) @ torch.randn(embed, embed)  # start the thread pool before capping memory
    cap = int(spec["cap_bytes"])
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = _status_kib("VmSize") * 1024 + cap
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    warmed: set[str] = set()
    for case in spec["cases"]:
        name, length = case["name"], case["length"]
        result: dict[str, Any] = {"name": name, "length": length}
        try:
            model, causal = build_scaling_model(name, embed, heads, window)
            if name not in warmed:  # first use of a variant: lazy initialisation at a small size
                with torch.inference_mode():
                    model(torch.randn(batch, 256, embed), is_causal=causal)
                warmed.add(name)
            x = torch.randn(batch, length, embed)
            gc.collect()
            result["reset"] = _reset_peak_rss()
            before_hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            before = _status_kib("VmRSS") if result["reset"] else before_hwm
            with harness.Stopwatch() as watch, torch.inference_mode():
                output, _ = model(x, is_causal=causal)
            result["seconds"] = watch.seconds
            peak = _status_kib("VmHWM") if result["reset"] else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            result["peak_bytes"] = max(0, peak - before) * 1024
            result["status"] = "ok"
            del output, x, model
        except (RuntimeError, MemoryError) as exc:
            result["status"] = _describe_failure(exc)
        except Exception as exc:  # report it as this case's result; the other cases still run
            result["status"] = f"{type(exc).__name__}: {exc}"[:80]
        gc.collect()
        print(json.dumps(result), flush=True)


def measure_memory(cases: list[dict[str, Any]], cfg: Config) -> dict[tuple[str, int], dict[str, Any]]:
    """Run the memory cases in worker processes; a worker that dies is restarted after its case."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MKL_DISABLE_FAST_MM": "1"}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else src
    results: dict[tuple[str, int], dict[str, Any]] = {}
    pending = list(cases)
    one_per_process = False
    while pending:
        batch_cases = pending[:1] if one_per_process else pending
        spec = {
            "threads": cfg.threads,
            "embed": cfg.embed_dim,
            "heads": cfg.heads,
            "batch": cfg.scaling_batch,
            "window": cfg.window,
            "cap_bytes": int(cfg.mem_cap_gb * GIB),
            "cases": batch_cases,
        }
        proc = subprocess.Popen(
            [sys.executable, __file__, "--memory-worker", json.dumps(spec)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            results[(record["name"], record["length"])] = record
            if record.get("status") == "ok" and not record.get("reset", True):
                one_per_process = True  # ru_maxrss cannot be reset: a fresh process per case
        code = proc.wait()
        done = [c for c in batch_cases if (c["name"], c["length"]) in results]
        remaining = [c for c in pending if (c["name"], c["length"]) not in results]
        if remaining and len(done) < len(batch_cases):
            failed = remaining[0]
            reason = f"killed (signal {-code})" if code < 0 else f"worker exited with {code}"
            results[(failed["name"], failed["length"])] = {**failed, "status": reason}
            remaining = remaining[1:]
        pending = remaining
    return results


def time_growth_per_doubling(by_length: Mapping[int, harness.Timing]) -> float:
    """Time's geometric-mean growth per doubling of L, from the shortest to the longest L measured (timings
    by L, taken in the same rounds): the median of the per-round ratios (longest / shortest), as every time
    growth of table 5, to the power 1 / doublings. NaN with fewer than two L measured. The ratio of the
    medians had disagreed with "last doubling" over a single doubling (x2.39 vs x2.61)."""
    measured = sorted(length for length, timing in by_length.items() if timing.ok)
    if len(measured) < 2:
        return math.nan
    first, last = measured[0], measured[-1]
    return harness.paired_ratio(by_length[last], by_length[first]).median ** (1 / math.log2(last / first))


def section_scaling(cfg: Config) -> dict[str, Any]:
    batch, heads, embed, cap = cfg.scaling_batch, cfg.heads, cfg.embed_dim, cfg.mem_cap_gb * GIB
    names = list(SCALING_VARIANTS)
    skipped: dict[tuple[str, int], str] = {}
    cases = []
    for length in cfg.scaling_lengths:
        for name in names:
            need = estimated_bytes(name, batch, heads, length, embed)
            if need > cap:
                skipped[(name, length)] = f"skipped: needs ~{need / GIB:.1f} GiB > cap {cfg.mem_cap_gb:g} GiB"
            else:
                cases.append({"name": name, "length": length})
    memory = measure_memory(cases, cfg)
    for key, reason in skipped.items():
        memory[key] = {"name": key[0], "length": key[1], "status": reason}

    # One interleaved group over every (variant, L): each round visits all sizes, so a burst of load
    # from elsewhere lands on all of them alike and the per-round growth ratios stay meaningful.
    timings: dict[tuple[str, int], harness.Timing] = {}
    models = {name: build_scaling_model(name, embed, heads, cfg.window) for name in names}
    fns: dict[str, Callable[[], object]] = {}
    for length in cfg.scaling_lengths:
        torch.manual_seed(length)
        x = torch.randn(batch, length, embed)
        for name in names:
            if memory[(name, length)].get("status") != "ok":
                timings[(name, length)] = harness.Timing(f"{name}@{length}", error=memory[(name, length)]["status"])
                continue
            model, causal = models[name]
            fns[f"{name}@{length}"] = lambda model=model, causal=causal, x=x: model(x, is_causal=causal)
    for key, m in bench(fns, cfg).items():
        name, length = key.rsplit("@", 1)
        timings[(name, int(length))] = m

    def time_growth(name: str, length: int) -> harness.Ratio | None:
        prev = (name, length // 2)
        if prev not in timings or not (timings[prev].ok and timings[(name, length)].ok):
            return None
        return harness.paired_ratio(timings[(name, length)], timings[prev])

    def mem_growth(name: str, length: int) -> float | None:
        prev, cur = memory.get((name, length // 2), {}), memory[(name, length)]
        if prev.get("status") == "ok" and cur.get("status") == "ok" and prev["peak_bytes"] > 0:
            return cur["peak_bytes"] / prev["peak_bytes"]
        return None

    def per_doubling(values: dict[int, float]) -> str:
        """Geometric-mean growth factor per doubling of L over the measured range (memory: one sample each)."""
        if len(values) < 2:
            return "-"
        first, last = min(values), max(values)
        return f"x{(values[last] / values[first]) ** (1 / math.log2(last / first)):.2f}"

    def time_per_doubling(name: str) -> str:
        growth = time_growth_per_doubling({length: timings[(name, length)] for length in cfg.scaling_lengths})
        return "-" if math.isnan(growth) else f"x{growth:.2f}"

    def short(status: str) -> str:
        return "skipped (> cap)" if status.startswith("skipped") else status[:40]

    rows, summary = [], []
    for name in names:
        mems: dict[int, float] = {}
        last_time, last_mem = "-", "-"
        for length in cfg.scaling_lengths:
            row = [name, str(length)]
            m = timings[(name, length)]
            if not m.ok:
                row += [short(m.error or "n/a"), "", ""]
            else:
                g = time_growth(name, length)
                row += [f"{m.median * 1e3:.1f} ms", f"{m.median / length * 1e6:.2f}", f"x{g.median:.2f}" if g else ""]
                last_time = f"x{g.median:.2f}" if g else last_time
            record = memory[(name, length)]
            if record.get("status") != "ok":
                row += [short(record.get("status", "n/a")), "", ""]
            else:
                mems[length] = float(record["peak_bytes"])
                mg = mem_growth(name, length)
                row += [
                    f"{mems[length] / MIB:.1f} MiB",
                    f"{mems[length] / length / 1024:.2f}",
                    f"x{mg:.2f}" if mg else "",
                ]
                last_mem = f"x{mg:.2f}" if mg else last_mem
            rows.append(row)
        summary.append([name, time_per_doubling(name), last_time, per_doubling(mems), last_mem])
    harness.print_table(
        f"5. Efficient attention scaling  [B={batch}, E={embed}, H={heads}, d={cfg.head_dim}, window={cfg.window}]",
        ["variant", "L", "time", "us/token", "growth", "peak memory", "KiB/token", "growth"],
        rows,
        [
            "growth = factor against L/2: linear cost doubles (x2), quadratic cost quadruples (x4); time growth is "
            "the median of per-round ratios (all sizes are timed in every round)",
            "peak memory = peak RSS growth during one forward (output and q/k/v projections included), measured "
            "in a worker process",
            f"workers run under an address-space cap of {cfg.mem_cap_gb:g} GiB above their baseline (--mem-cap-gb); "
            "cases whose estimate exceeds it are skipped",
            "full sdpa uses SDPA's fused (flash) CPU kernel, which streams over keys: O(L) memory, O(L^2) time",
        ],
    )
    first, last = cfg.scaling_lengths[0], cfg.scaling_lengths[-1]
    harness.print_table(
        "5s. Growth per doubling of L",
        ["variant", f"time (mean {first}->{last})", "time (last doubling)", "memory (mean)", "memory (last)"],
        summary,
        ["time: medians of per-round ratios (mean: last L over first L, per doubling), as in table 5",
         "fixed costs (projections, per-call overhead) pull small-L growth below the asymptotic x2 / x4"],
    )
    out: dict[str, Any] = {}
    for name in names:
        for length in cfg.scaling_lengths:
            g = time_growth(name, length)
            out[f"{name}/L={length}"] = {
                "time": timings[(name, length)].to_json(),
                "time_growth_vs_half": g.to_json() if g else None,
                "memory": memory[(name, length)],
                "memory_growth_vs_half": mem_growth(name, length),
            }
    return out


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def parallel_latency_us(threads: int, calls: int = 25) -> float:
    """Median time of a tiny parallel op with ``threads`` threads: a probe for CPU contention.

    On an idle machine it takes tens of microseconds. When another process keeps a core busy,
    every OpenMP parallel region waits for a descheduled worker thread, often a whole scheduler
    tick (milliseconds), and workloads made of many small ops slow down by an order of magnitude.
    """
    with harness.torch_threads(threads):
        data = torch.zeros(1 << 18)
        return harness.interleave({"add": lambda: data.add_(1.0)}, rounds=calls)["add"].median * 1e6


def _finite(value: Any) -> Any:
    """The results with NaN/inf replaced by None, so the JSON file is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run, < 30 s)")
    parser.add_argument("--json", type=harness.output_file, metavar="PATH",
                        help="also write every measurement to this JSON file")  # fmt: skip
    parser.add_argument("--sections", type=harness.comma_choices("12345"), default="1,2,3,4,5",
                        help="comma-separated sections to run (default: all)")  # fmt: skip
    parser.add_argument(
        "--mem-cap-gb", type=harness.positive_float, default=10.0,
        help="memory cap per scaling case in GiB (default 10)",
    )
    parser.add_argument(
        "--threads", type=harness.positive_int, default=None,
        help="torch threads (default: torch.get_num_threads(), unchanged)",
    )
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        memory_worker(json.loads(args.memory_worker))
        return 0

    sections = {int(s) for s in args.sections}
    cfg = make_config(args)
    load_start = os.getloadavg()
    started = time.perf_counter()
    print(
        f"attend attention benchmark ({'quick' if cfg.quick else 'full'} run)\n"
        f"torch {torch.__version__}, threads={cfg.threads} (cpu_count={os.cpu_count()}), "
        f"CPU: {_cpu_model()}, capability {torch.backends.cpu.get_cpu_capability()}, fp32, inference_mode\n"
        f"load average at start: {load_start[0]:.2f} (1 min)"
    )
    probe_single, probe_all = parallel_latency_us(1), parallel_latency_us(cfg.threads)
    probe_text = f"contention probe (1 MiB in-place add): {probe_single:.0f} us with 1 thread"
    if cfg.threads > 1:
        probe_text += f", {probe_all:.0f} us with {cfg.threads} threads (idle machine: both well under 1 ms)"
    print(probe_text)
    if cfg.threads > 1 and probe_all > max(1000.0, 10 * probe_single):
        print(
            "  WARNING: the CPU is shared with other busy processes: every OpenMP parallel region stalls on a"
            " descheduled thread (about a scheduler tick). Absolute times, small ops most, are inflated and noisy;"
            " paired ratios less so. Rerun on an idle machine, or compare with --threads 1."
        )
    elif load_start[0] > 0.5:
        print("  note: other processes are using the CPU; absolute times may be noisy, paired ratios less so")
    results: dict[str, Any] = {
        "meta": {
            "torch": torch.__version__,
            "threads": cfg.threads,
            "cpu_count": os.cpu_count(),
            "cpu": _cpu_model(),
            "quick": cfg.quick,
            "argv": sys.argv,
            "loadavg_start": load_start,
            "probe_us_start": {"1": probe_single, str(cfg.threads): probe_all},
        }
    }
    section_seconds: dict[str, float] = {}
    section_load: dict[str, float] = {}
    section_probe: dict[str, float] = {}

    def run(key: str, fn: Callable[[], Any]) -> Any:
        with harness.Stopwatch() as watch:
            value = fn()
        section_seconds[key] = watch.seconds
        section_load[key] = os.getloadavg()[0]
        section_probe[key] = parallel_latency_us(cfg.threads)
        print(
            f"  [{key}: {section_seconds[key]:.0f} s; 1-min load average {section_load[key]:.2f}; "
            f"contention probe {section_probe[key]:.0f} us]"
        )
        return value

    if sections & {1, 2, 3}:
        ref, results["matmul"] = run("matmul", lambda: section_matmul(cfg))
    if 2 in sections:
        results["core"] = run("core", lambda: section_core(cfg, ref))
    if 3 in sections:
        results["module"] = run("module", lambda: section_module(cfg, ref))
    if 4 in sections:
        results["weights"] = run("weights", lambda: section_weights(cfg))
    if 5 in sections:
        results["scaling"] = run("scaling", lambda: section_scaling(cfg))
    elapsed = time.perf_counter() - started
    load_end = os.getloadavg()
    results["meta"].update(
        loadavg_end=load_end,
        elapsed_s=elapsed,
        section_seconds=section_seconds,
        section_loadavg=section_load,
        section_probe_us=section_probe,
    )
    per_section = ", ".join(f"{key} {seconds:.0f} s" for key, seconds in section_seconds.items())
    print(f"\ndone in {elapsed:.0f} s ({per_section}); load average at end: {load_end[0]:.2f} (1 min)")
    if args.json:
        Path(args.json).write_text(json.dumps(_finite(results), indent=2, allow_nan=False))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
