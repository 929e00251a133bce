#!/usr/bin/env bash
# Mutation testing of the core's numeric modules against the tests that cover them (cargo-mutants, installed
# here if missing). Runs outside CI.
#
#   bash ci/mutants.sh [MODULE...] [--shard K/N | --re REGEX] [--iterate]
#
# MODULE: fixed round scalar scale flags float16 matrix loss clip optim activation layer (default: all of them).
# Each module is mutated against its own test targets in the suite package (which does not depend on the lab,
# so a mutant rebuilds only the core and those tests), with the oracles' proptest cases lowered through
# GRADSCOPE_ORACLE_CASES (2000). Modules sharing a test selection share one run. Per-module counts are appended
# to ci/mutants-results.md (commit it); the mutants themselves are listed under target/mutants/. --iterate
# retests only the mutants that earlier runs of the same modules (and shard) did not catch (after adding tests),
# and its line counts every mutant: the earlier runs' caught and unviable ones plus this run's. --re takes only
# the mutants whose names (as `cargo mutants --list` shows them) match REGEX, e.g. the functions a change touched.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked

# cargo-mutants builds each job in a copy of the tree under the temporary directory, and a killed run leaves
# its copies (with their build directories) behind: keep them under target/, cleared here.
export TMPDIR="$PWD/target/mutants-tmp"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"

modules=() shard=() iterate=() only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --shard) shard=(--shard "$2"); shift 2 ;;
    --iterate) iterate=(--iterate); shift ;;
    --re) only=(--re "$2"); shift 2 ;;
    *) modules+=("$1"); shift ;;
  esac
done
[ ${#modules[@]} -gt 0 ] || modules=(fixed round scalar scale flags float16 matrix loss clip optim activation layer)

# The test targets that cover each module (the core's unit tests always run too).
tests_for() {
  case "$1" in
    fixed|round|scalar|flags) echo "fixed_oracle float_oracle" ;;
    scale) echo "fixed_oracle loss_scaling" ;;
    matrix) echo "fixed_oracle float_oracle backprop loss_scaling tiled" ;;
    loss) echo "golden loss_scaling" ;;
    clip) echo "clip" ;;
    optim) echo "optim" ;;
    float16) echo "half_oracle loss_scaling" ;;
    activation) echo "golden activation" ;;
    layer) echo "golden backprop rnn gated batchnorm residual conv layer_scaling tiled" ;;
    *) echo "unknown module $1" >&2; exit 2 ;;
  esac
}

files_for() {
  case "$1" in
    activation|layer) echo "crates/gradscope-core/src/$1/*.rs" ;;
    *) echo "crates/gradscope-core/src/$1.rs" ;;
  esac
}

export GRADSCOPE_ORACLE_CASES=${GRADSCOPE_ORACLE_CASES:-2000}
# A failing proptest need not shrink its input here: the verdict is all that counts.
export PROPTEST_MAX_SHRINK_ITERS=${PROPTEST_MAX_SHRINK_ITERS:-0}
results=ci/mutants-results.md
[ -f "$results" ] || printf '%s\n\n%s\n%s\n' \
  "Mutation testing of the core (\`bash ci/mutants.sh\`): one line per module and run." \
  "| date | module | run | caught | missed | unviable | timeout | minutes | test targets |" \
  "|---|---|---|---|---|---|---|---|---|" >"$results"

label=all
[ ${#shard[@]} -eq 0 ] || label=${shard[1]}
[ ${#only[@]} -eq 0 ] || label="re \`${only[1]//|/\\|}\`"
[ ${#shard[@]} -eq 0 ] || [ ${#only[@]} -eq 0 ] || { echo "--shard and --re do not combine" >&2; exit 2; }
if [ ${#iterate[@]} -gt 0 ]; then [ "$label" = all ] && label=iterate || label="iterate $label"; fi

declare -A groups=()
for m in "${modules[@]}"; do
  key=$(tests_for "$m")
  groups[$key]="${groups[$key]:-} $m"
done

for key in "${!groups[@]}"; do
  read -r -a mods <<<"${groups[$key]}"
  args=() files=()
  for t in $key; do args+=(--cargo-test-arg=--test="$t"); done
  for m in "${mods[@]}"; do files+=(--file "$(files_for "$m")"); done
  # One directory per module group and shard, so that an --iterate run sees its own shard's verdicts.
  out="target/mutants/$(IFS=-; echo "${mods[*]}")${shard[1]:+-shard-${shard[1]/\//-of-}}${only[1]:+-re}"
  mkdir -p "$out"
  # Earlier runs' verdicts, for --iterate (each run rewrites mutants.out).
  for kind in caught unviable; do
    if [ ${#iterate[@]} -gt 0 ]; then
      cat "$out/mutants.out/$kind.txt" "$out/seen-$kind.txt" 2>/dev/null | sort -u >"$out/seen.tmp" || true
      mv "$out/seen.tmp" "$out/seen-$kind.txt"
    else
      : >"$out/seen-$kind.txt"
    fi
  done
  select=("${shard[@]}" "${only[@]}")
  if [ ${#iterate[@]} -gt 0 ]; then
    # cargo-mutants' own --iterate shards what is left after skipping, which is another set of mutants than the
    # shard's: name the shard's mutants not yet caught or unviable instead, each as an anchored literal regex.
    select=()
    while IFS= read -r name; do
      select+=(--re "^$(printf '%s' "$name" | sed 's/[][\\.*^$()+?{}|]/\\&/g')\$")
    done < <(cargo mutants --package gradscope-core "${files[@]}" "${shard[@]}" "${only[@]}" --list |
      sort -u | comm -23 - <(cat "$out/seen-caught.txt" "$out/seen-unviable.txt" | sort -u))
    if [ ${#select[@]} -eq 0 ]; then
      echo "== ${mods[*]}: every mutant of this selection is caught or unviable already"
      rm -rf "$out/mutants.out"
    fi
  fi
  started=$(date +%s)
  # cargo-mutants exits non-zero when a mutant survives: that is a result, not a failure of this script.
  # The timeout covers the baseline's test phase too, which first compiles the suite's dependencies in the
  # scratch copy (over 300 s on a busy machine).
  [ ${#iterate[@]} -gt 0 ] && [ ${#select[@]} -eq 0 ] ||
    cargo mutants --package gradscope-core "${files[@]}" \
      --cargo-test-arg=--lib --cargo-test-arg=--package=gradscope-suite "${args[@]}" \
      --profile mutants --timeout 600 --jobs 2 --output "$out" "${select[@]}" || true
  minutes=$(( ($(date +%s) - started + 30) / 60 ))
  for m in "${mods[@]}"; do
    prefix=$(files_for "$m" | sed 's/\*\.rs$//')
    count() {
      { cat "$out/mutants.out/$1.txt" 2>/dev/null
        case $1 in caught | unviable) cat "$out/seen-$1.txt" ;; esac; } | sort -u | grep -c "^$prefix" || true
    }
    c=$(count caught) x=$(count missed) u=$(count unviable) t=$(count timeout)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(date -u +%F)" "$m" "$label" \
      "${c:-0}" "${x:-0}" "${u:-0}" "${t:-0}" "$minutes (${mods[*]})" "$key" >>"$results"
    echo "== $m: ${c:-0} caught, ${x:-0} missed, ${u:-0} unviable, ${t:-0} timeouts"
    if [ -f "$out/mutants.out/missed.txt" ]; then
      grep "^$prefix" "$out/mutants.out/missed.txt" | sed 's/^/   missed: /' || true
    fi
  done
done
