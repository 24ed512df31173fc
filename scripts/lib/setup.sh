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
