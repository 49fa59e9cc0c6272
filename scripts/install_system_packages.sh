#!/usr/bin/env bash
# Install the Debian packages of optional data sets. dataset-fashion-mnist
# puts the Fashion-MNIST IDX files under /usr/share/datasets/fashion-mnist.
# trans-de-en puts the German-English dictionary, whose example sentences
# are the NMT task's sentence pairs, at /usr/share/trans/de-en.
# Needs apt-get, and root or sudo. Does nothing when every package is
# already installed.
set -euo pipefail

PACKAGES=(dataset-fashion-mnist trans-de-en)

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

# Root runs apt-get directly, so the script also works where sudo is not
# installed (containers, CI images).
sudo_command=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "Installing ${missing[*]} needs root, and sudo was not found:" \
         "run this script as root." >&2
    exit 1
  fi
  sudo_command=(sudo)
fi

${sudo_command[@]+"${sudo_command[@]}"} apt-get update
${sudo_command[@]+"${sudo_command[@]}"} env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"
