#!/usr/bin/env bash
# Four progressive-shrinking recipes trained side by side on one GPU (one process each), each then evaluated
# on bench/ofa_cifar.py's 10 seeded subnets; compare with `bench/ofa_ps_variants.py gather`.
#
#   EDGENAS_DATA=DATA bench/ofa_ps_variants.sh WORKDIR
#   (variants: A/B/C/D = "KD SCHEDULE" in $VA..$VD; BUDGET seconds per training, default 430)
set -u
work=${1:-runs/ps_variants}
py=${PYTHON:-python3}
dev=${DEVICE:-cuda}
mkdir -p "$work"
common=(--device "$dev" --max-train "${MAXTRAIN:-8000}" --max-val 2000 --augment --batch-size 256 --recal 1000)
variant() {  # variant NAME KD SCHEDULE
  (PYTHONUNBUFFERED=1 timeout "${BUDGET:-430}" "$py" bench/ofa_cifar.py "${common[@]}" --work "$work/v_$1" \
      --stage ps --kd-ratio "$2" --ps "$3" >"$work/log_$1.txt" 2>&1
   "$py" bench/ofa_ps_variants.py eval "$work/v_$1" "$work/v_$1.json" --device "$dev" \
      --max-train "${MAXTRAIN:-8000}" >>"$work/log_$1.txt" 2>&1) &
}
# shellcheck disable=SC2086
variant A ${VA:-0 full:12,kernel:6,depth:6,expand:6}
# shellcheck disable=SC2086
variant B ${VB:-0 full:18,kernel:4,depth:4,expand:4}
# shellcheck disable=SC2086
variant C ${VC:-1 full:18,kernel:4,depth:4,expand:4}
# shellcheck disable=SC2086
variant D ${VD:-0 full:24,kernel:2,depth:2,expand:2}
wait
for v in A B C D; do echo "== $v"; tail -n 2 "$work/log_$v.txt"; done
