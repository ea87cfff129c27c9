#!/bin/sh
# `make install`: `uv sync` of the whole workspace. The first time (no llama_cpp in the venv yet) it
# builds llama.cpp from source for the embedded local model, which takes minutes; say so, and show
# that it is alive, instead of sitting silent. Usage: tools/install.sh VENV UV-COMMAND...
set -u
venv="$1"
shift
if "$venv/bin/python" -c "import llama_cpp" >/dev/null 2>&1; then
    exec "$@" sync --quiet --all-packages
fi
echo "make install: first install: building llama.cpp from source for the embedded local model."
echo "              About 7 minutes on a quiet 2-core machine, 20 or more under load (less if uv"
echo "              has a build cached); once only. A line every 30 s says it is still going."
start=$(date +%s)
(
    while sleep 30; do
        now=$(( $(date +%s) - start ))
        echo "make install: ... still building llama.cpp ($(( now / 60 )) min $(( now % 60 )) s so far)"
    done
) &
ticker=$!
trap 'kill $ticker 2>/dev/null' EXIT INT TERM
"$@" sync --all-packages
status=$?
kill $ticker 2>/dev/null
echo "make install: done in $(( $(date +%s) - start )) s"
exit $status
