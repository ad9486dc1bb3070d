#!/usr/bin/env bash
# The GPU check: versions, every gpu-marked test, then short GPU benchmarks.
#
#   bash benchmarks/gpu_check.sh                         # on a machine with CUDA
#   GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh    # a dry run of this script on a CPU
#
# It runs from the repository root with PYTHONPATH set to it, so nothing needs installing
# beyond the package's own dependencies (torch, torchvision, numpy, pillow, pyyaml,
# safetensors, tqdm, matplotlib, transformers) and pytest for the tests; it fetches
# nothing. PYTHON names the interpreter (default: python3, else python).
#
# Parts, each under `timeout` (the limits add up to 9 minutes; the parts are sized to
# take a few minutes in all on one H200, an estimate not yet measured there):
#   versions      python, torch, CUDA, cuDNN, the GPU
#   gpu tests     pytest -m gpu over every test file holding gpu-marked tests:
#                 tests/test_gpu.py (each training loop a few steps on CUDA against
#                 the CPU, beam search, retrieval metrics) and the others
#   bench_*       benchmarks/bench_train.py (plain against optimised, then with
#                 --compile), bench_decoding.py, bench_caption_training.py and
#                 compare_methods.py, shortened, on CUDA
# A failed part does not stop the others. The summary at the end says which parts
# passed; the exit status is 0 when all did, 1 when one failed, 2 without CUDA.
#
# GPU_CHECK_DEVICE=cpu hides any GPU and runs the parts that have a short CPU form on
# tiny sizes: it checks this script, not the GPU paths (the gpu tests then skip).

set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export MPLBACKEND=Agg

DEVICE=${GPU_CHECK_DEVICE:-cuda}
if [ "$DEVICE" != cuda ] && [ "$DEVICE" != cpu ]; then
    echo "GPU_CHECK_DEVICE must be cuda (default) or cpu, got '$DEVICE'" >&2
    exit 2
fi
if [ "$DEVICE" = cpu ]; then
    export CUDA_VISIBLE_DEVICES=""
fi
if [ -z "${PYTHON:-}" ]; then
    PYTHON=$(command -v python3 || command -v python || true)
fi
if [ -z "$PYTHON" ]; then
    echo "no python3 or python on PATH; set PYTHON=/path/to/python" >&2
    exit 2
fi
if command -v timeout >/dev/null; then
    TIMEOUT=(timeout --kill-after=15)
else
    TIMEOUT=()
    echo "note: no 'timeout' command here; the parts run without time limits"
fi

RESULTS=()
FAILED=0
STARTED=$SECONDS

# part NAME LIMIT_SECONDS COMMAND...: run one part, record PASS or FAIL and its time.
part() {
    local name=$1 limit=$2 started=$SECONDS rc status
    shift 2
    echo
    echo "=== $name (at most ${limit} s): $*"
    if [ ${#TIMEOUT[@]} -gt 0 ]; then
        "${TIMEOUT[@]}" "$limit" "$@"
    else
        "$@"
    fi
    rc=$?
    case $rc in
        0) status=PASS ;;
        124 | 137) status="FAIL (stopped at its ${limit} s limit)" ;;
        *) status="FAIL (exit status $rc)" ;;
    esac
    [ "$rc" -eq 0 ] || FAILED=$((FAILED + 1))
    RESULTS+=("$(printf '%-24s %-40s %5d s' "$name" "$status" $((SECONDS - started)))")
}

# skip NAME REASON: record a part that did not run.
skip() {
    echo
    echo "=== $1: skipped, $2"
    RESULTS+=("$(printf '%-24s %s' "$1" "SKIP ($2)")")
}

# fail NAME REASON: record a part that could not run at all.
fail() {
    echo
    echo "=== $1: FAILED, $2"
    FAILED=$((FAILED + 1))
    RESULTS+=("$(printf '%-24s %s' "$1" "FAIL ($2)")")
}

summary() {
    echo
    echo "=== summary ($DEVICE, $((SECONDS - STARTED)) s in all)"
    printf '%s\n' "${RESULTS[@]}"
    if [ "$FAILED" -eq 0 ]; then
        echo "all parts passed"
    else
        echo "$FAILED part(s) failed"
    fi
}

echo "=== versions"
echo "repository: $PWD ($(git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
echo "interpreter: $PYTHON"
if ! "$PYTHON" - "$DEVICE" <<'EOF'; then
import platform
import sys

try:
    import torch
except ImportError as err:
    print(f"torch cannot be imported by {sys.executable}: {err}")
    sys.exit(2)
print(f"python {platform.python_version()}, torch {torch.__version__}, "
      f"built for CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        print(f"GPU {index}: {props.name}, compute capability {props.major}.{props.minor}, "
              f"{props.total_memory / 2**30:.0f} GiB, "
              f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
elif sys.argv[1] == "cuda":
    print(f"CUDA is not available to torch {torch.__version__} here (built for CUDA "
          f"{torch.version.cuda}). This script checks the GPU paths and needs a CUDA "
          "device; GPU_CHECK_DEVICE=cpu runs it on the CPU as a dry run.")
    sys.exit(2)
else:
    print("no GPU used (GPU_CHECK_DEVICE=cpu): a dry run of this script")
EOF
    echo "stopping: nothing can be checked without torch and CUDA"
    exit 2
fi
if [ "$DEVICE" = cuda ] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi
"$PYTHON" - <<'EOF'
import importlib.util

modules = {
    "torchvision": "torchvision", "numpy": "numpy", "PIL": "pillow", "yaml": "pyyaml",
    "safetensors": "safetensors", "tqdm": "tqdm", "matplotlib": "matplotlib",
    "transformers": "transformers", "pytest": "pytest",
}
missing = [package for module, package in modules.items()
           if importlib.util.find_spec(module) is None]
if missing:
    print("MISSING for this check: " + ", ".join(missing) + " (the parts that import "
          "them will fail; pip install them, or carry them as wheels)")
else:
    print("the package's dependencies and pytest are importable")
EOF

if ! "$PYTHON" -c "import pytest" 2>/dev/null; then
    echo "pytest is not installed for $PYTHON: the gpu tests cannot run"
    echo "(pip install pytest, or bring its wheel with iniconfig and pluggy)"
    fail "gpu tests" "pytest is not installed"
else
    # Only the files holding gpu-marked tests are collected: collecting the whole
    # suite imports the dev extras' modules (pycocoevalcap, nbformat), and one
    # collection error would stop every test.
    mapfile -t GPU_FILES < <(grep -l 'mark\.gpu' tests/test_*.py)
    part "gpu tests" 210 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider \
        "${GPU_FILES[@]}"
fi

if [ "$DEVICE" = cuda ]; then
    part "bench_train" 60 "$PYTHON" benchmarks/bench_train.py --device cuda \
        --steps 20 --repeats 3 --batch-size 256
    part "bench_train --compile" 120 "$PYTHON" benchmarks/bench_train.py \
        --device cuda --steps 20 --repeats 1 --batch-size 256 --compile
    part "bench_decoding" 45 "$PYTHON" benchmarks/bench_decoding.py --device cuda \
        --batch-size 128 --beam-size 5 --repeats 3
    # Its cached and uncached runs must agree to 1e-4, rounding apart; TF32 (on by
    # default in cuDNN's convolutions) can round more than that, so it is switched off.
    part "bench_caption_training" 60 env NVIDIA_TF32_OVERRIDE=0 "$PYTHON" \
        benchmarks/bench_caption_training.py --steps 200 --train-size 2000
    # hard_negatives is left out: building its swapped captions takes a minute of CPU.
    part "compare_methods" 45 "$PYTHON" benchmarks/compare_methods.py --fast \
        --methods infonce,adversarial --device cuda
else
    part "bench_train" 120 "$PYTHON" benchmarks/bench_train.py --device cpu \
        --steps 2 --repeats 1 --batch-size 32
    skip "bench_train --compile" "compiling for the CPU takes minutes"
    part "bench_decoding" 60 "$PYTHON" benchmarks/bench_decoding.py --device cpu \
        --batch-size 8 --beam-size 3 --vocab-size 100 --hidden 32 --repeats 1
    part "bench_caption_training" 180 "$PYTHON" \
        benchmarks/bench_caption_training.py --steps 3 --train-size 64
    skip "compare_methods" "its fast setting is 1,200 steps a method"
fi

summary
[ "$FAILED" -eq 0 ]
