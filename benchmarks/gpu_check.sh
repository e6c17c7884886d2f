#!/usr/bin/env bash
# GPU check of issue 7 (target 6), for the device image as it is: Python 3.12, torch,
# transformers, timm, accelerate; no datasets / librosa / soundfile / scikit-learn, no
# network, the repository not pip-installed (so PYTHONPATH is set to its root here).
#
#   bash benchmarks/gpu_check.sh                # on the GPU machine; < 5 minutes, + 100 s for the hf entry
#   bash benchmarks/gpu_check.sh --device cpu --tiny --no-compile   # CPU smoke test
#
# Writes gpu_bench.json / gpu_bench.md (and env.txt) to $OUT when it is set.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"
LIMIT_S="${GPU_CHECK_LIMIT_S:-265}"   # hard stop for the benchmark (the whole check must stay < 5 min)
ENV_TXT=/dev/null
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; ENV_TXT="$OUT/env.txt"; fi

echo "== environment"
"$PY" - <<'PYEOF' | tee "$ENV_TXT"
import importlib, platform, sys
print("python", platform.python_version())
for name in ("torch", "transformers", "timm", "accelerate", "datasets", "librosa", "soundfile", "sklearn"):
    try:
        print(f"{name:13s}", importlib.import_module(name).__version__)
    except Exception as err:
        print(f"{name:13s} absent ({type(err).__name__})")
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
PYEOF

echo "== the core imports without datasets, librosa, soundfile, scikit-learn"
"$PY" - <<'PYEOF'
import sys
for name in ("datasets", "librosa", "soundfile", "sklearn"):
    sys.modules[name] = None  # make any import of them fail
import arl_hf, arl_hf.trainer, arl_hf.strategies  # noqa: E401,F401
print("ok: arl_hf", arl_hf.__version__, "from", arl_hf.__file__)
PYEOF

echo "== benchmark"
timeout --signal=INT --kill-after=10 "$LIMIT_S" "$PY" "$ROOT/benchmarks/gpu_bench.py" "$@"

# hf: encoders, ViT-base (224x224) + BERT-base (128 tokens) from the transformers default configs, random
# weights, no Hub: ARL / plain Trainer step time. Same --device as the benchmark; --tiny: a small config.
echo "== hf encoders: ViT-base + BERT-base"
HF_DEVICE=cuda
prev=""
for a in "$@"; do [ "$prev" = "--device" ] && HF_DEVICE="$a"; prev="$a"; done
HF_ARGS=(--hf-base --batch-size 32 --hf-text-length 128 --precision bf16 --pairs 3 --steps 5)
case " $* " in *" --tiny "*) HF_ARGS=(--hf --hf-hidden 32 --hf-layers 1 --hf-image-size 32 --hf-text-length 16
                                         --batch-size 4 --pairs 1 --steps 1) ;; esac
HF_JSON=()
if [ -n "${OUT:-}" ]; then HF_JSON=(--json "$OUT/hf_step_overhead.json"); fi
timeout --signal=INT --kill-after=10 "${GPU_CHECK_HF_LIMIT_S:-100}" "$PY" "$ROOT/benchmarks/step_overhead.py" \
    --device "$HF_DEVICE" "${HF_ARGS[@]}" "${HF_JSON[@]}"
