#!/usr/bin/env bash
# Install the packages of a single-node SLURM test cluster (Debian 12: SLURM 22.05, MariaDB for accounting).
# Needs root. Idempotent: does nothing when everything is already installed. Then run scripts/slurm/start.sh.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install.sh: needs root" >&2; exit 1; }
packages=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
# the package's version: `sinfo -V` needs a slurm.conf, which start.sh writes later
echo "install.sh: SLURM $(dpkg-query -W -f='${Version}' slurm-client) and MariaDB $(mariadbd --version | awk '{print $3}') installed"
