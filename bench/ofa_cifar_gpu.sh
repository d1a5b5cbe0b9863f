#!/usr/bin/env bash
# bench/ofa_cifar.py on one GPU with its independent stages side by side: the progressive-shrinking and the
# joint supernet, and the from-scratch subnets (in SCRATCH_SHARDS processes) train at once; once the PS
# supernet is done, its accuracy pairs are measured (in PAIR_SHARDS processes); then one plain run gathers
# everything (specialisation is left to a CPU run on the same work folder: it measures CPU latency).
#
#   EDGENAS_DATA=DATA bench/ofa_cifar_gpu.sh WORK [bench/ofa_cifar.py options shared by every stage]
#
# Each stage logs to WORK/logs/ and caches what it computes in WORK, so re-running resumes.
set -u
work=$1
shift
py=${PYTHON:-python3}
scratch_shards=${SCRATCH_SHARDS:-5}
pair_shards=${PAIR_SHARDS:-4}
common=(--device "${DEVICE:-cuda}" --work "$work" "$@")
mkdir -p "$work/logs"
stage() {  # stage NAME [options]: one bench process in the background, logged
  local name=$1
  shift
  PYTHONUNBUFFERED=1 "$py" bench/ofa_cifar.py "${common[@]}" "$@" >"$work/logs/$name.log" 2>&1 &
}
stage ps --stage ps
ps_pid=$!
stage joint --stage joint
for ((i = 0; i < scratch_shards; i++)); do stage "scratch$i" --stage scratch --shard "$i/$scratch_shards"; done
wait "$ps_pid" || { echo "the PS supernet failed: see $work/logs/ps.log" >&2; exit 1; }
for ((i = 0; i < pair_shards; i++)); do stage "pairs$i" --stage pairs --shard "$i/$pair_shards"; done
wait
PYTHONUNBUFFERED=1 "$py" bench/ofa_cifar.py "${common[@]}" --no-specialize 2>&1 | tee "$work/logs/all.log"
