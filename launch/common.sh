# Sourced by the launchers with their arguments: takes a leading --dry-run off them (then `run CMD`
# prints the command, shell-quoted on one line, instead of running it); `usage` prints the
# launcher's header comment and exits 2; `logs_of WORKDIR` is where its logs go; `config` is
# MUPPET_CONFIG or the RoBERTa default.
usage() {
  sed -n '/^# Pre-finetunes/,/^set -euo/{/^#/p}' "$0" >&2
  exit 2
}
DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY_RUN=1
  shift
fi
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}
logs_of() {  # A bucket can't take appends: logs of a gs:// run stay on this machine.
  case "$1" in gs://*) echo logs ;; *) echo "$1/logs" ;; esac
}
config="${MUPPET_CONFIG:-configs/prefinetune.py}"
