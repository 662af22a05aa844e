#!/bin/sh
# Install this package into a virtualenv: `.ci/install.sh VENV EXTRAS`, e.g. `.ci/install.sh .venv test`.
# Uses uv (installed into the venv from the package index) when it can, plain pip otherwise or with USE_UV=0.
# uv does not read pip's configuration, so the constraints, find-links and extra indexes pip is set up with
# are passed on to it.
set -eu
venv=$1
extras=${2:-}
target=.
[ -n "$extras" ] && target=".[$extras]"
py="$venv/bin/python"

if [ "${USE_UV:-1}" = 1 ] && { [ -x "$venv/bin/uv" ] || "$py" -m pip install --quiet uv >/dev/null 2>&1; }; then
    set --
    constraint=$("$py" -m pip config get global.constraint 2>/dev/null || true)
    for c in $constraint; do set -- "$@" --constraint "$c"; done
    links=$("$py" -m pip config get global.find-links 2>/dev/null || true)
    for l in $links ${PIP_FIND_LINKS:-}; do [ -e "$l" ] && set -- "$@" --find-links "$l"; done
    # --index-strategy: pip's view (best match over every index), not uv's first-index-wins default.
    # --compile-bytecode: what pip does by default. Without it every process compiles each module it imports
    # wherever bytecode is not written (PYTHONDONTWRITEBYTECODE, as on CI): `import airflow.sdk` took ~5.5 s
    # instead of ~2.7 s, in every Airflow process a test starts.
    "$venv/bin/uv" pip install --quiet --python "$py" --index-strategy unsafe-best-match --compile-bytecode "$@" \
        -e "$target"
else
    "$py" -m pip install --quiet -e "$target"
fi
# Building the editable install leaves `airflow_batchwork.egg-info` beside the sources. The installed
# dist-info holds the metadata; a second copy in the project root (on sys.path for `python -m …` run
# there, as `make demo` does) makes Airflow load the plugin entry point twice and warn about it.
rm -rf airflow_batchwork.egg-info
# The project's own modules (an editable install is not compiled by pip or uv); a module edited later is
# recompiled in memory until this runs again.
env -u PYTHONDONTWRITEBYTECODE "$py" -m compileall -q airflow_batchwork dags_examples  # quiet unless one fails
