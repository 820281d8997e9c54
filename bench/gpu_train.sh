#!/usr/bin/env bash
# The one-shot GPU check (issue 17): on one CUDA GPU, in under 5 minutes with the installs,
#   - builds 20,480 synthetic photo-like 224 px JPEGs as Parquet shards plus their webdataset tars
#     (bench/gpu_check_data.py, one process per CPU);
#   - trains ViT-B-32 in bf16 for the same fixed steps with open_clip_train (eager, --torchcompile)
#     and `trainer run` (eager, --compile, and each lever flag `trainer run --help` has:
#     --loss-chunk, --channels-last, --decode gpu, --accum-steps, --compile-mode reduce-overhead,
#     --precision fp8; a flag not there is skipped with that reason);
#   - runs `pipeline embed` with the trained checkpoint, the FAISS index on the GPU (faiss-gpu)
#     against the CPU on the same vectors, and the score stage's CLIP scoring on CUDA;
#   - prints ONE table: samples/s, data wait, peak GPU memory, MFU, loss after N steps, wall time.
# Every section is guarded (one failing or lacking faiss-gpu or a flag does not stop the others;
# no section needs Ray: the scoring is called directly) and runs in its own process. Order:
# trainer eager, open_clip_train eager, embed, FAISS, scoring, the two compiled baselines, then
# the levers; none starts once the 5-minute budget (--budget-s, counted from this script's start)
# is too short for it, and its row says so: a retry can pick the rest with --runs WORD,WORD.
# The runs share one inductor cache, so a later compile of the same model reuses earlier kernels
# (its "wall s" is then not a cold compile). The driver is bench/gpu_check.py.
#
# Usage
#   bash bench/gpu_train.sh --fetch-wheels   here, once, with the project's venv active: the
#                                            wheels the device image lacks, into bench/wheels/
#                                            (git-ignored, 48 MB with torchao), i.e.
#       python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#         --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
#         --platform manylinux2014_x86_64 -d bench/wheels $(python bench/gpu_check.py --wheel-specs)
#       (open_clip_torch ftfy wcwidth webdataset braceexpand duckdb faiss-cpu at the versions the
#       pyproject pins or this venv has, and torchao 0.17.0, the release for the image's torch 2.11)
#   bash bench/gpu_train.sh                  on the GPU machine; with the device tool:
#       run(command="bash bench/gpu_train.sh", carry=["bench/wheels"], timeout_s=420)
#       The table, results.json and a tarball of every run's log come back through $OUT.
#       A retry of what the budget skipped (each word picks the training runs whose name has it):
#       bash bench/gpu_train.sh --runs "decode,loss-chunk,channels-last,accum,reduce-overhead,fp8"
#   bash bench/gpu_train.sh --cpu-smoke      (or GPU_CHECK_CPU=1) the same sections on the CPU with
#                                            clip-nano, 320 images, 6 steps, fp32: what
#                                            tests/bench/test_gpu_train.py runs. No installs.
# Extra arguments go to bench/gpu_check.py (--work DIR, --budget-s S, --steps N, --batch N, ...).
# Environment: PYTHON (default python3), GPU_CHECK_WHEELS (default bench/wheels),
# GPU_CHECK_WORK (default a temporary folder), GPU_CHECK_SITE (default /tmp/gpu_check_site).
set -uo pipefail
started=$(date +%s.%N)
cd "$(dirname "$0")/.." || exit 2
repo=$PWD
python=${PYTHON:-python3}
wheels=${GPU_CHECK_WHEELS:-bench/wheels}
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    mkdir -p "$wheels"
    # shellcheck disable=SC2046
    exec "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$wheels" $("$python" bench/gpu_check.py --wheel-specs)
fi

cpu=${GPU_CHECK_CPU:-0}
if [[ "${1:-}" == "--cpu-smoke" ]]; then cpu=1; shift; fi
work=${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$work"

if [[ "$cpu" == 1 ]]; then
    "$python" bench/gpu_check.py --cpu-smoke --started "$started" --work "$work" \
        --json "$work/results.json" "$@"
    exit $?
fi

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
if [[ -z "$gpu" ]]; then
    echo "gpu_train.sh: no CUDA GPU here (nvidia-smi lists none); use --cpu-smoke" >&2
    exit 2
fi
missing=""
for name in open_clip_torch ftfy wcwidth webdataset braceexpand duckdb faiss_cpu; do
    compgen -G "$wheels/$name-*.whl" >/dev/null || missing="$missing $name"
done
if [[ -n "$missing" ]]; then
    echo "gpu_train.sh: missing wheels in $wheels:$missing" >&2
    echo "  build them on a machine with pip access: bash bench/gpu_train.sh --fetch-wheels" >&2
    echo "  and carry the folder: run(command=\"bash bench/gpu_train.sh\", carry=[\"$wheels\"])" >&2
    exit 2
fi
site=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$wheels"/*.whl || { echo "gpu_train.sh: wheel install failed" >&2; exit 2; }
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
# The project itself, as a user installs it (no dependencies: the image and the wheels have them).
# The driver still puts the checkout first on the path, so a failed install only prints.
"$python" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
    --target "$site" "$repo" || echo "gpu_train.sh: installing the project failed; using $repo"
"$python" -c 'import torch, torchvision, open_clip, webdataset, duckdb, faiss
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), torchvision {torchvision.__version__}, "
      f"open_clip {open_clip.__version__}, webdataset {webdataset.__version__}, "
      f"duckdb {duckdb.__version__}, faiss {faiss.__version__}")'
# DataLoader workers hand batches over through /dev/shm: a small one (containers) kills them.
shm_mb=$(df -Pm /dev/shm 2>/dev/null | awk 'NR == 2 {print $2}')
echo "CPUs $(nproc), /dev/shm ${shm_mb:-?} MB, disk free $(df -Pm "$work" | awk 'NR == 2 {print $4}') MB"
if [[ -n "$shm_mb" && "$shm_mb" -lt 2048 ]]; then
    echo "gpu_train.sh: warning: /dev/shm is only $shm_mb MB; loader workers may die (bus error)"
fi
echo "installs done in $(awk "BEGIN {printf \"%.0f\", $(date +%s.%N) - $started}") s on $gpu"

"$python" bench/gpu_check.py --started "$started" --gpu-name "$gpu" --work "$work" \
    --json "$work/results.json" "$@" 2>&1 | tee "$work/gpu_check.log"
status=${PIPESTATUS[0]}
if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
    cp "$work/gpu_check.log" "$work/results.json" "$OUT/" 2>/dev/null
    # every run's output and logs, no checkpoints or data: for the first GPU run's debugging
    (cd "$work" && find . \( -name '*.log' -o -name 'metrics.csv' -o -name '*.result.json' \) \
        -print0 | tar -czf "$OUT/logs.tar.gz" --null -T -)
fi
exit "$status"
