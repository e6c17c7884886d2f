#!/usr/bin/env bash
# The checks that need the GPU machine, in order, as one command (after gpu_check.sh, which
# measures bf16 / fp16 ARL and plain steps at the paper's sizes):
#   1. FSDP2 through accelerate, one process: ARLTrainer's sharded run against the unsharded one
#      (benchmarks/fsdp_check.py; target max |difference| <= 1e-5, resume included);
#   2. frames decoded on the GPU (torchvision.io.decode_jpeg(device="cuda")) against the CPU decoder.
# The device image has no `datasets`: neither check needs it.
#
#   bash benchmarks/device_checks.sh            # writes $OUT/fsdp_check*.json, $OUT/gpu_decode.json
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT_DIR"

echo "== FSDP2, one process, through accelerate"
for mode in plain fsdp; do
  timeout 150 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 \
    "$ROOT/benchmarks/fsdp_check.py" --mode "$mode" --out-dir "$OUT_DIR" > "$OUT_DIR/fsdp_check_$mode.log" 2>&1
  echo "fsdp_check $mode: exit $? (log: fsdp_check_$mode.log)"; tail -n 3 "$OUT_DIR/fsdp_check_$mode.log"
done
"$PY" "$ROOT/benchmarks/fsdp_check.py" --compare "$OUT_DIR"

echo "== frames decoded on the GPU"
timeout 60 "$PY" - "$OUT_DIR" <<'PYEOF'
import io, json, sys, time
import numpy as np, torch
from PIL import Image
from arl_hf.data.transforms import decode_jpeg_batch

rng = np.random.default_rng(0)
jpegs = []
for i in range(64):
    img = (rng.integers(0, 255, (360, 480, 3)) // 16 * 16).astype(np.uint8)
    buf = io.BytesIO(); Image.fromarray(img).save(buf, format="JPEG", quality=90); jpegs.append(buf.getvalue())
cpu = decode_jpeg_batch(jpegs, device="cpu")
decode_jpeg_batch(jpegs[:4], device="cuda")  # nvJPEG start-up, not timed
torch.cuda.synchronize(); t = time.perf_counter()
gpu = decode_jpeg_batch(jpegs, device="cuda"); torch.cuda.synchronize(); gpu_s = time.perf_counter() - t
t = time.perf_counter(); decode_jpeg_batch(jpegs, device="cpu"); cpu_s = time.perf_counter() - t
diff = torch.stack([(a.int() - b.cpu().int()).abs().float().mean() for a, b in zip(cpu, gpu)])
mx = max(int((a.int() - b.cpu().int()).abs().max()) for a, b in zip(cpu, gpu))
r = {"device": torch.cuda.get_device_name(0), "frames": len(jpegs), "size": "480x360",
     "mean_abs_diff": float(diff.mean()), "max_abs_diff": mx,
     "gpu_frames_per_s": len(jpegs) / gpu_s, "cpu_frames_per_s": len(jpegs) / cpu_s}
print(json.dumps(r))
json.dump(r, open(sys.argv[1] + "/gpu_decode.json", "w"))
PYEOF
echo "gpu decode: exit $?"
