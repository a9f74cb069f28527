# Sourced by the launchers: `run CMD...` runs a command, or with DRY_RUN=1 prints it (one line,
# shell-quoted) instead; `config` is MUPPET_CONFIG or the RoBERTa default.
run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}
config="${MUPPET_CONFIG:-configs/prefinetune.py}"
