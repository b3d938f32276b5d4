#!/usr/bin/env bash
# The mutation score of the core modules: a periodic check (tens of minutes on 2 cores), not
# part of CI. mutmut (configured in pyproject.toml, [tool.mutmut]) copies the modules into
# mutants/, makes one small change at a time (an operator, a constant, a dropped call) and
# runs the fast unit tests that touch the changed function. A mutant that no test fails on
# "survived": either a test is missing, or the change cannot alter any result (an equivalent
# mutant, listed with its reason in tests/MUTANTS.md).
#   bash scripts/mutation.sh            # run (resumes an interrupted run), then the scores
#   bash scripts/mutation.sh --report   # only the scores of the last run
#   bash scripts/mutation.sh --only 'trainers.losses.spo.*'   # a subset (mutmut name globs)
#   mutmut show <name>                  # one survivor's diff
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one thread per mutant process
MUTMUT=${MUTMUT:-.venv/bin/mutmut}
if [ "${1:-}" != "--report" ]; then
  # only the mutants in scope (scripts/mutation_scope.txt), or the globs given after --only
  if [ "${1:-}" = "--only" ]; then shift; globs=("$@"); else
    mapfile -t globs < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/mutation_scope.txt); fi
  "$MUTMUT" run --max-children "${MUTATION_JOBS:-$(nproc)}" "${globs[@]}" > mutants-run.log 2>&1 || {
    tail -20 mutants-run.log; echo "mutmut run failed (log: mutants-run.log)" >&2; exit 1; }
fi
.venv/bin/python scripts/mutation_score.py mutants
