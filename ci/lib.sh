# Shared by ci/demo and ci/test. Sourced, not run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The lab needs namespaces, bridges and taps: root. Keep the user's toolchain on PATH.
if [[ $(id -u) -ne 0 ]]; then
  exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,CI,CARGO_TARGET_DIR,NETBOOT_HARNESS_CACHE "$0" "$@"
fi

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found: install a Rust toolchain (https://rustup.rs) and run this again" >&2
  exit 2
fi

bash ci/setup
