#!/usr/bin/env bash
# Install the Debian packages of optional data sets. dataset-fashion-mnist
# puts the Fashion-MNIST IDX files under /usr/share/datasets/fashion-mnist.
# Needs apt-get and root (or sudo). Does nothing when every package is
# already installed.
set -euo pipefail

PACKAGES=(dataset-fashion-mnist)

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null \
      | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not found: install ${missing[*]} with this system's package" \
       "manager, or load the data from a tensorflow_datasets data directory" \
       "(data_dir)." >&2
  exit 1
fi

sudo_command=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_command=(sudo)
fi

"${sudo_command[@]}" apt-get update
DEBIAN_FRONTEND=noninteractive "${sudo_command[@]}" \
  apt-get install -y --no-install-recommends "${missing[@]}"
