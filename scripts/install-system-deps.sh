#!/usr/bin/env bash
# Installs the system packages Cove needs on Debian/Ubuntu, when they are missing.
# As root it uses apt-get, forbidding the packages' services from starting (Cove runs its own
# private servers and must not leave system databases listening by surprise). As another user
# it only says what is missing.
set -euo pipefail

missing=()
have_pg() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
have_pg || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
{ [ -x /usr/sbin/mariadbd ] && command -v mariadb-install-db >/dev/null; } || missing+=(mariadb-server)
{ command -v mariadb-backup >/dev/null && command -v mbstream >/dev/null; } || missing+=(mariadb-backup)
# Galera clusters of MariaDB: the provider library, and socat for the state transfer script.
[ -f /usr/lib/galera/libgalera_smm.so ] || missing+=(galera-4)
command -v socat >/dev/null || missing+=(socat)
# Instance volumes: XFS filesystems in image files, loop-mounted (grown while mounted).
{ command -v mkfs.xfs >/dev/null && command -v xfs_growfs >/dev/null; } || missing+=(xfsprogs)
command -v losetup >/dev/null || missing+=(mount)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
[ -x /usr/sbin/haproxy ] || missing+=(haproxy)
# Network access (allowed_cidrs): the host refuses other sources with an nftables table.
command -v nft >/dev/null || missing+=(nftables)
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
# The web console's tests run in a real headless browser: Debian's Chromium.
[ -x /usr/bin/chromium ] || missing+=(chromium)

# As root, Cove runs guest agents and database servers as this unprivileged user.
if [ "$(id -u)" -eq 0 ] && ! id cove >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cove
    echo "Created the service user 'cove'."
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "Cove needs these system packages: ${missing[*]}" >&2
    echo "Install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi

echo "Installing system packages: ${missing[*]}"
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    # Keep apt's post-install scripts from starting system services.
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Belt and braces: stop any system service that started despite the policy.
for svc in postgresql redis-server rabbitmq-server mariadb haproxy; do
    if command -v service >/dev/null && service "$svc" status >/dev/null 2>&1; then
        service "$svc" stop >/dev/null 2>&1 || true
    fi
done
echo "System packages installed."
