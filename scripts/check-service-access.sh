#!/usr/bin/env bash
# As root, Cove runs guest agents (and the tests their database servers) as the unprivileged
# service user, from this clone's virtualenv and source tree. A clone inside a private
# directory (mktemp -d, /root) is out of that user's reach, and everything fails later in ways
# that do not say why. This check says it first, in one line naming what to open up.
#
# Usage: check-service-access.sh [PROJECT_DIR [VENV]]   (defaults: this clone, .venv)
# Exits 0 when not root, when the service user does not exist yet, or when it can import the
# guest agent with the virtualenv's Python; 1 otherwise.
set -euo pipefail

project=$(cd "${1:-$(dirname "$0")/..}" && pwd -P)
venv=${2:-.venv}
case $venv in /*) ;; *) venv="$project/$venv" ;; esac
user=${COVE_SERVICE_USER:-cove}
python="$venv/bin/python"

[ "$(id -u)" -eq 0 ] || exit 0
id "$user" >/dev/null 2>&1 || exit 0
command -v runuser >/dev/null || exit 0

as_user() { (cd / && runuser -u "$user" -- "$@"); }

if errors=$(as_user "$python" -c 'import cove.guestagent.main' 2>&1); then
    exit 0
fi

# The first directory on the way that the user cannot enter: the virtualenv, the Python it
# links to, and the source tree the editable install points at.
for target in "$venv/bin" "$(dirname "$(readlink -f "$python")")" "$project/src/cove"; do
    path=/
    IFS=/ read -ra parts <<< "${target#/}"
    for part in "${parts[@]}"; do
        [ -n "$part" ] || continue
        path="${path%/}/$part"
        [ -d "$path" ] || break
        if ! as_user test -x "$path"; then
            mode=$(stat -c '%a %U' "$path")
            echo "error: the service user '$user' cannot enter $path (mode ${mode% *}, owner ${mode#* }), so it cannot run Cove from $project: run 'chmod o+x $path', or clone Cove into a directory every user can enter" >&2
            exit 1
        fi
    done
done

reason=$(printf '%s\n' "$errors" | tail -n 1)
echo "error: the service user '$user' cannot run $python ($reason): make $project readable by every user ('chmod -R o+rX $project'), or clone Cove elsewhere" >&2
exit 1
