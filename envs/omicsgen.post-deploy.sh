#!/usr/bin/env bash
# Run by Snakemake inside the new conda environment, from the folder snakemake runs in (the
# repository root, unless you pass --directory: then set OMICSGEN_SOURCE to the repository).
set -euo pipefail
source="${OMICSGEN_SOURCE:-$PWD}"
if [ ! -f "$source/pyproject.toml" ]; then
    echo "omicsgen post-deploy: no pyproject.toml in $source; set OMICSGEN_SOURCE to the omicsgen repository" >&2
    exit 1
fi
pip install --quiet -e "$source"
