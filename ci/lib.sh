# Shared by ci/demo and ci/test. Sourced, not run.
#
# A machine that cannot boot guests stops the script here, within seconds, with the reason:
# nothing is installed or compiled first. A script that is useful without boots (ci/test) sets
# BOOTS_OPTIONAL=1 before sourcing this; then NETBOOT_HARNESS_SKIP_BOOTS=1 lets it go on, with
# BOOT_BLOCKER saying why there will be no boots (never under CI=true, where boots are required).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

me=ci/$(basename "$0")
BOOT_BLOCKER=

may_skip_boots() {
  [[ ${BOOTS_OPTIONAL:-} == 1 && ${NETBOOT_HARNESS_SKIP_BOOTS:-} == 1 && ${CI:-} != true ]]
}

# This machine cannot boot guests, for reason $1: the end of the script, unless boots may be
# skipped here, in which case BOOT_BLOCKER keeps the reason.
cannot_boot() {
  if may_skip_boots; then
    BOOT_BLOCKER=$1
    echo "$me: going on without boots (NETBOOT_HARNESS_SKIP_BOOTS=1): $1" >&2
    return
  fi
  echo "$me: this machine cannot boot guests: $1" >&2
  if [[ ${CI:-} == true ]]; then
    echo "$me: under CI=true the boots are required; NETBOOT_HARNESS_SKIP_BOOTS is not honoured" >&2
  elif [[ ${BOOTS_OPTIONAL:-} == 1 ]]; then
    echo "$me: to run the rest of the suite with the boots reported ignored, set NETBOOT_HARNESS_SKIP_BOOTS=1" >&2
  fi
  exit 2
}

# Why sudo cannot make this script root; nothing when it can. Asks for a password only on a
# terminal: without one sudo would fail, or wait, with a message that does not say why it ran.
sudo_blocker() {
  if ! command -v sudo >/dev/null; then
    echo "not root, and sudo is not installed: run $me as root"
  elif sudo -n true 2>/dev/null; then
    return 0
  elif [[ ! -t 0 ]]; then
    echo "not root, and sudo needs a password but stdin is not a terminal to ask on: run $me as root"
  elif ! sudo -v; then
    echo "not root, and sudo refused: run $me as root"
  fi
}

# The lab needs namespaces, bridges and taps: root. Keep the user's toolchain on PATH.
if [[ $(id -u) -ne 0 ]]; then
  why=$(sudo_blocker)
  if [[ -z $why ]]; then
    exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,CI,CARGO_TARGET_DIR,NETBOOT_HARNESS_CACHE,NETBOOT_HARNESS_SKIP_BOOTS,NETBOOT_HARNESS_TIER "$0" "$@"
  fi
  cannot_boot "$why"
elif ! why=$(bash ci/can-boot); then
  cannot_boot "$why"
fi

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found: install a Rust toolchain (https://rustup.rs) and run this again" >&2
  exit 2
fi

bash ci/setup
