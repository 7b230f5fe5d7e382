# Sourced by the bench scripts: where things are, messages, the running dev stack required, and a
# side process of the bench's own (a release gateway or a second control beside the dev stack's)
# started, awaited and always stopped — on success, on failure and on Ctrl-C.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   need_stack http://127.0.0.1:8080/readyz
#   side_start gateway http://127.0.0.1:7890/readyz 10 -- env KOINOS_GATEWAY_LISTEN=… "$bin" --config …
#   scratch REPORT          # a temporary file in $REPORT, deleted on exit
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV=${KOINOS_DEV_DIR:-$ROOT/.dev}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[bench] %s\033[0m\n' "$*" >&2; exit 1; }
answers() { curl -fsS -o /dev/null --max-time "${2:-5}" "$1" 2>/dev/null; }

# need_stack URL...: each must answer, or the bench stops before building anything.
need_stack() {
  [ -f "$DEV/gateway.toml" ] || die "no $DEV/gateway.toml: start the dev stack first (dev/stack start)"
  for url in "$@"; do
    answers "$url" || die "$url does not answer: start the dev stack (dev/stack start; dev/stack status)"
  done
}

_SIDE_PIDS=()
_SIDE_LOGS=()
_SCRATCH=()
_bench_exit() {
  local status=$? i
  for i in "${!_SIDE_PIDS[@]}"; do
    kill -TERM "${_SIDE_PIDS[$i]}" 2>/dev/null || true
    wait "${_SIDE_PIDS[$i]}" 2>/dev/null || true
    if [ "$status" != 0 ]; then
      printf '\033[31m[bench] failed; the side process logged (kept in %s):\033[0m\n' "${_SIDE_LOGS[$i]}" >&2
      tail -n 60 "${_SIDE_LOGS[$i]}" >&2 || true
    else
      rm -f "${_SIDE_LOGS[$i]}"
    fi
  done
  [ ${#_SCRATCH[@]} = 0 ] || rm -rf "${_SCRATCH[@]}"
  exit "$status"
}
trap _bench_exit EXIT
trap 'exit 130' INT TERM

# scratch VAR [dir]: a temporary file (or directory) named in VAR, deleted when the bench exits.
scratch() {
  local path
  if [ "${2:-}" = dir ]; then path=$(mktemp -d "${TMPDIR:-/tmp}/koinos-bench.XXXXXX")
  else path=$(mktemp "${TMPDIR:-/tmp}/koinos-bench.XXXXXX"); fi
  _SCRATCH+=("$path")
  printf -v "$1" '%s' "$path"
}

# side_start NAME READY_URL TIMEOUT_S -- COMMAND...: runs COMMAND in the background with its
# output in a log of its own, until it answers READY_URL; dies (showing the log) if it exits or
# is not ready in time. Sets SIDE_PID. Stopped with SIGTERM when the bench exits.
side_start() {
  local name=$1 url=$2 timeout=$3 log deadline
  shift 3; [ "${1:-}" = -- ] && shift
  # Any HTTP answer at all, ready or not, means the port is someone else's.
  curl -s -o /dev/null --max-time 1 "$url" && die "something already answers $url (another bench running?)"
  log=$(mktemp "${TMPDIR:-/tmp}/koinos-bench-$name.XXXXXX")
  say "starting the bench's $name (log: $log)"
  "$@" >"$log" 2>&1 &
  SIDE_PID=$!
  _SIDE_PIDS+=("$SIDE_PID")
  _SIDE_LOGS+=("$log")
  deadline=$((SECONDS + timeout))
  until answers "$url" 1; do
    kill -0 "$SIDE_PID" 2>/dev/null || die "the bench's $name exited during start"
    [ $SECONDS -lt $deadline ] || die "the bench's $name was not ready within $timeout s"
    sleep 0.2
  done
  # The answer must have been ours: a process that lost the port to another exits.
  sleep 0.2
  kill -0 "$SIDE_PID" 2>/dev/null || die "the bench's $name exited during start"
}
