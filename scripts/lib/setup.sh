# Shared set-up of scripts/test and scripts/devnet (sourced, not run): checks
# for cargo, installs Node.js/npm with apt-get when run as root and missing,
# and brings the pinned Foundry and solc into node_modules/.bin with npm ci.

require_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: install the Rust toolchain (rustup) first" >&2
        exit 1
    fi
}

require_npm() {
    if ! command -v npm >/dev/null 2>&1; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            echo "installing nodejs and npm with apt-get"
            apt-get update -q && apt-get install -y -q nodejs npm
        else
            echo "npm not found: install Node.js and npm first" >&2
            exit 1
        fi
    fi
}

# npm ci when node_modules is missing or older than package-lock.json.
install_node_modules() {
    if [[ ! -x node_modules/.bin/forge ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
        npm ci --no-audit --no-fund
    fi
}

# The real mail programs the mail tests run on loopback, from Debian:
# aiosmtpd (a mail exchanger standing for a recipient's), dnsmasq (the DNS
# the exit asks for MX records) and INN (a news server). Installed with
# apt-get when missing and run as root; otherwise the tests that need them
# say so and are skipped (and fail under CI=true).
install_mail_tools() {
    local missing=()
    [[ -d /usr/lib/python3/dist-packages/aiosmtpd ]] || missing+=(python3-aiosmtpd)
    [[ -x /usr/sbin/dnsmasq ]] || missing+=(dnsmasq-base)
    [[ -x /usr/lib/news/bin/innd ]] || missing+=(inn2)
    if ((${#missing[@]} > 0)); then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            echo "installing ${missing[*]} with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q || true
            # INN's post-install refuses a host name without a domain (a
            # container's): it is configured below and again after.
            apt-get install -y -q --no-install-recommends "${missing[@]}" || true
        else
            echo "not root or no apt-get: ${missing[*]} not installed; the mail tests that need them are skipped" >&2
            return 0
        fi
    fi
    if [[ -f /etc/news/inn.conf ]] && ! grep -q '^domain:' /etc/news/inn.conf; then
        # A domain for the Message-IDs INN writes; the test machine's host
        # name has none.
        sed -i 's/^#domain:.*/domain:                      nox.test/' /etc/news/inn.conf
        grep -q '^domain:' /etc/news/inn.conf || echo 'domain:                      nox.test' >>/etc/news/inn.conf
        DEBIAN_FRONTEND=noninteractive dpkg --configure -a || true
    fi
}

# Starts INN on 127.0.0.1:119 for the news test when it is installed and
# not already running; sets INN_STARTED=1 when this call started it, so
# that stop_news_server stops only what it started.
INN_STARTED=0
start_news_server() {
    [[ -x /usr/lib/news/bin/innd ]] || return 0
    pgrep -x innd >/dev/null 2>&1 && return 0
    if [[ "$(id -u)" == 0 ]]; then
        /etc/init.d/inn2 start >/dev/null 2>&1 || true
        for _ in $(seq 1 50); do
            if (exec 3<>/dev/tcp/127.0.0.1/119) 2>/dev/null; then
                INN_STARTED=1
                return 0
            fi
            sleep 0.2
        done
        echo "INN did not start; the news test will say so" >&2
    fi
}

stop_news_server() {
    if [[ "$INN_STARTED" == 1 ]]; then
        /etc/init.d/inn2 stop >/dev/null 2>&1 || true
        INN_STARTED=0
    fi
}
