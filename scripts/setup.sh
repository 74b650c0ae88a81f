#!/usr/bin/env bash
# Install every system and Python dependency PlasmaCloud and its tests need (Debian 12, root).
# Idempotent: re-running installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  etcd-client etcd-server golang-etcd-server-dev  # real etcdctl/etcd 3.4 + etcd's protos
  nix-bin                                           # nix-instantiate --parse for rendered Nix
  dnsmasq-base                                      # DHCP/TFTP for netboot (dnsmasq --test)
  fdisk dosfstools e2fsprogs util-linux             # first-boot agent tests on loop devices
  iproute2 procps psmisc                            # lab networking and process inspection
  sqlite3
  python3-venv                                      # e2e: PyPI clients (and their own test suites) in venvs of their own
  curl                                              # FlareDB lab test drives the API with curl
  prometheus                                        # validate: a real Prometheus scrapes every target
  qemu-system-x86 ipxe-qemu vde2 zstd              # QEMU lab: VMs + iPXE ROM, VDE switch, initramfs
  binutils                                          # QEMU lab image: strip debug sections
  openssh-server                                    # ssh backend tests: an sshd in each netns lab node
  chromium chromium-driver                          # dashboard tests: a real headless browser (selenium)
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! python3 -c "import plasmacloud, grpc_tools, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .setup-stamp ]; then
  echo "setup: pip install -e .[dev]"
  python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
fi
touch .setup-stamp
