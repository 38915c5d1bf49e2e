#!/usr/bin/env bash
# One-call GPU check (bench/gpu_check.py): train-step samples/s and MFU per preset, FSDP2, compile on/off,
# log-mel front end device vs CPU, embed_audio throughput. Under 8 minutes on one H200.
#
#   bash bench/gpu_check.sh                  # needs nvidia-smi and a CUDA build of torch
#   bash bench/gpu_check.sh --cpu-smoke      # tiny debug model on the CPU (or GPU_CHECK_CPU_SMOKE=1)
#   bash bench/gpu_check.sh --help           # the flags (presets, parts, budget, timeouts, --out)
#
# Summary: $OUT/gpu_check.txt when OUT is set, else runs/gpu_check.txt in the current directory (with .json and
# .log beside it).
# Python: $PYTHON, else python on PATH (an activated venv), else python3.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || exit 2
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's clap_train, not an installed copy
threads="${OMP_NUM_THREADS:-$(nproc)}"
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
export TOKENIZERS_PARALLELISM=false
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"

smoke="${GPU_CHECK_CPU_SMOKE:-0}"
for arg in "$@"; do
    [ "$arg" = "--cpu-smoke" ] && smoke=1
done
if [ "$smoke" != 1 ]; then
    if ! command -v nvidia-smi >/dev/null; then
        echo "gpu_check: nvidia-smi not found: no NVIDIA GPU here (bash bench/gpu_check.sh --cpu-smoke runs on the CPU)"
        exit 2
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version,utilization.gpu --format=csv,noheader || {
        echo "gpu_check: nvidia-smi failed: the GPU or its driver is not usable"; exit 2; }
fi

"$PYTHON" "$root/bench/gpu_check.py" "$@"
rc=$?
if [ "$rc" -ne 0 ]; then
    out="${OUT:+$OUT/gpu_check.txt}"
    for ((i = 1; i <= $#; i++)); do  # --out FILE moves the log beside it
        case "${!i}" in
            --out) j=$((i + 1)); out="${!j:-}" ;;
            --out=*) out="${!i#--out=}" ;;
        esac
    done
    log="${out:-runs/gpu_check.txt}"
    base="${log##*/}"
    if [[ "$base" == *.* ]]; then log="${log%.*}.log"; else log="$log.log"; fi
    if [ -f "$log" ]; then
        echo "--- last lines of $log ---"
        tail -n 25 "$log"
    fi
fi
exit "$rc"
