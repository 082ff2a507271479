# Shared by scripts/test.sh and scripts/demo.sh: installs Debian's stock Dovecot 2.3 packages
# when missing. Foreman's tests and demo run stock Dovecot services against Foreman.

install_stock_dovecot() {
    local need=() pkg sudo=""
    for pkg in dovecot-core dovecot-imapd dovecot-pop3d; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${need[*]} (stock Dovecot, needed by the tests and the demo)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
}
