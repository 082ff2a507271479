# Shared by scripts/test.sh and scripts/demo.sh: installs Debian packages when missing.
# Foreman's tests and demo run stock Dovecot services against Foreman; the benchmarks
# (and their smoke test) count instructions with valgrind.

install_stock_dovecot() {
    install_debian_packages dovecot-core dovecot-imapd dovecot-pop3d
}

install_debian_packages() {
    local need=() pkg sudo=""
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
}
