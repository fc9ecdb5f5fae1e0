#!/usr/bin/env bash
# The GPU acceptance check in one command, for a machine that has torch but not the rest of
# facegan's runtime (no internet there): `bash bench/device_check.sh wheels` here fetches the
# missing packages as Python 3.12 wheels into .whl/ (git-ignored through .git/info/exclude);
# `bash bench/device_check.sh run` there installs them and runs `python -m bench.smoke --device
# cuda`, the log also under $OUT. Versions come from constraints.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
MISSING="boto3 botocore s3transfer jmespath simplejpeg tensorboardX"  # on the device image (its KINDS.md list)

case "${1:-}" in
wheels)
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  pins=$(for p in $MISSING; do grep -i "^$p==" constraints.txt || { echo "constraints.txt pins no $p" >&2; exit 2; }; done) || exit 2
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $pins || exit 1
  ls .whl ;;
run)
  if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || exit 1
    export PYTHONPATH=/tmp/site
  fi
  export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
  rm -rf /tmp/facegan-smoke  # a rerun on a warm machine starts fresh, not from the last run's finished runs
  python3 -m bench.smoke --device "${DEVICE:-cuda}" --work /tmp/facegan-smoke 2>&1 | tee "${OUT:-/tmp}/smoke.log" ;;
*)
  echo "usage: bash bench/device_check.sh wheels|run" >&2; exit 2 ;;
esac
