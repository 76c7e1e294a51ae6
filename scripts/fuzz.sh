#!/usr/bin/env bash
# Long random fuzzing, for developers before resolving API or unit-format work; CI runs the same
# tests derandomized with few examples (tests/conftest.py), so a landing never waits on luck.
#   scripts/fuzz.sh            the control API (schemathesis, 2000 examples per operation) and
#                              the unit loader's properties (hypothesis, 5000 examples each)
#   scripts/fuzz.sh api|units  one of the two
# Random: each run draws new inputs. A failure prints the request or unit that broke it and is
# kept in .hypothesis/ so the next run replays it first; turn it into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/pytest ]] || ./scripts/setup.sh --no-next

targets=()
case ${1:-all} in
    api) targets=(tests/unit/api/test_fuzz.py) ;;
    units) targets=(tests/unit/unit/test_unit_properties.py) ;;
    all) targets=(tests/unit/api/test_fuzz.py tests/unit/unit/test_unit_properties.py) ;;
    *) echo "usage: $0 [api|units|all]" >&2; exit 2 ;;
esac
start=$(date +%s)
HYPOTHESIS_PROFILE=fuzz .venv/bin/pytest -q --timeout 0 \
    --hypothesis-show-statistics "${targets[@]}"
echo "fuzz: ${targets[*]}: passed in $(( $(date +%s) - start )) s"
