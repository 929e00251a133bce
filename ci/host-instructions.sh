#!/usr/bin/env bash
# Deterministic host instruction counts: installs valgrind and the gungraun-runner that matches the `gungraun`
# dev-dependency (if missing), then runs `cargo bench --bench instructions`, whose output
# `python3 ci/figures.py` turns into BENCHMARKS.md's instruction tables. Called by `.ci/run` through
# `ci/figures.py --check`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq valgrind >&2
fi
want=$(sed -n 's/^gungraun = "=\(.*\)"$/\1/p' Cargo.toml)
if [ "$(gungraun-runner --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
  cargo install gungraun-runner --version "$want" --locked --quiet >&2
fi
cargo bench --bench instructions
