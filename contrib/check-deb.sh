#!/usr/bin/env bash
# Check a built netledger .deb: unpack it into a scratch root (dpkg -x, no installation on
# this machine) and verify every file the package must ship, and that the binary runs.
set -euo pipefail
deb=${1:?usage: contrib/check-deb.sh target/debian/netledger_*.deb}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# Outputs are captured before matching: `cmd | grep -q` can kill cmd with SIGPIPE when grep
# exits at the first match, which pipefail turns into a failure.
info=$(dpkg-deb --info "$deb")
grep -q 'Package: netledger' <<<"$info"
grep -q 'Depends:.*nftables' <<<"$info"
dpkg -x "$deb" "$root"
want=(
    usr/bin/netledger
    lib/systemd/system/netledger-snapshot.service
    lib/systemd/system/netledger-snapshot.timer
    lib/systemd/system/netledger.service
    usr/lib/sysctl.d/60-netledger.conf
    etc/netledger/netledger.toml
    usr/share/netledger/netledger.nft
    usr/share/netledger/grafana/netledger.json
    usr/share/netledger/prometheus/netledger.rules.yml
    usr/share/netledger/systemd/netledger-snapshot-textfile.conf
    usr/share/netledger/systemd/netledger-containers.conf
    usr/share/man/man1/netledger.1.gz
    usr/share/man/man1/netledger-snapshot.1.gz
    usr/share/bash-completion/completions/netledger
    usr/share/zsh/vendor-completions/_netledger
    usr/share/fish/vendor_completions.d/netledger.fish
    usr/share/doc/netledger/README.md
    usr/share/doc/netledger/CHANGELOG.md
    usr/share/doc/netledger/docs/guide.md
    usr/share/doc/netledger/docs/operations.md
    usr/share/doc/netledger/docs/how-it-works.md
    usr/share/doc/netledger/docs/security.md
    usr/share/doc/netledger/docs/performance.md
    usr/share/doc/netledger/docs/architecture.md
    usr/share/doc/netledger/examples/hooks/quota-mail
    usr/share/doc/netledger/examples/hooks/quota-throttle-nft
)
missing=0
for f in "${want[@]}"; do
    if [ ! -e "$root/$f" ] && [ ! -e "$root/${f%.gz}" ]; then
        echo "check-deb: missing $f" >&2
        missing=1
    fi
done
[ "$missing" -eq 0 ]
"$root/usr/bin/netledger" --version
defaults=$("$root/usr/bin/netledger" config --default)
grep -q '^db = "/var/lib/netledger/netledger.db"' <<<"$defaults"
echo "check-deb: $(dpkg-deb --contents "$deb" | wc -l) entries, all required files present"
