#!/bin/sh
# Install dlmsd on a server: a venv with the wheel under $PREFIX, the systemd
# unit, sysusers.d/tmpfiles.d files, the dlmsd user, /etc/dlmsd with a sample
# config and an empty key store (owners and modes as the daemon needs them).
#
#   make install PREFIX=/opt/dlmsd              # builds the wheel, then runs this
#   WHEEL=dist/dlmsd-0.2.0-py3-none-any.whl deploy/install.sh
#
# DESTDIR=/some/root stages everything under that root instead (packaging, CI):
# the user goes into the root's /etc/passwd, files get its numeric ids, and the
# venv's scripts name $PREFIX, not $DESTDIR$PREFIX. Re-running upgrades the
# venv and the unit; an existing config or key store is never overwritten.
#
# Variables: PREFIX (/opt/dlmsd), DESTDIR (empty), SYSCONFDIR (/etc),
# UNITDIR (/usr/local/lib/systemd/system), SYSUSERSDIR (/usr/local/lib/sysusers.d),
# TMPFILESDIR (/usr/local/lib/tmpfiles.d), PYTHON (python3, >= 3.11),
# WHEEL (newest dist/dlmsd-*.whl), EXTRAS (e.g. "postgres"), PIP_ARGS (extra pip options).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
PREFIX=${PREFIX:-/opt/dlmsd}
DESTDIR=${DESTDIR:-}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UNITDIR=${UNITDIR:-/usr/local/lib/systemd/system}
SYSUSERSDIR=${SYSUSERSDIR:-/usr/local/lib/sysusers.d}
TMPFILESDIR=${TMPFILESDIR:-/usr/local/lib/tmpfiles.d}
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-}
PIP_ARGS=${PIP_ARGS:-}
if [ -z "${WHEEL:-}" ]; then
    WHEEL=$(ls -t "$top"/dist/dlmsd-*-py3-none-any.whl 2>/dev/null | head -n 1 || true)
fi
[ -n "$WHEEL" ] && [ -f "$WHEEL" ] || { echo "install.sh: no wheel (run make dist or set WHEEL)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (it creates a user and chowns files)" >&2; exit 1; }

say() { printf 'install: %s\n' "$*"; }

# --- the venv -------------------------------------------------------------------
venv="$DESTDIR$PREFIX/.venv"
say "venv $venv from $(basename "$WHEEL")"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "install.sh: $PYTHON is older than 3.11" >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
spec="$WHEEL"
[ -z "$EXTRAS" ] || spec="$WHEEL[$EXTRAS]"
# shellcheck disable=SC2086 # PIP_ARGS holds several options
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check $PIP_ARGS "$spec"
# The same version again (a rebuilt wheel) must replace the installed files too.
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --force-reinstall $PIP_ARGS "$WHEEL"
if [ -n "$DESTDIR" ]; then
    # Scripts and activate files name the staging path; the server runs them from $PREFIX.
    grep -rlI -- "$DESTDIR$PREFIX" "$venv/bin" "$venv/pyvenv.cfg" 2>/dev/null | while read -r file; do
        sed -i "s#$DESTDIR$PREFIX#$PREFIX#g" "$file"
    done
fi

# --- systemd files ----------------------------------------------------------------
say "unit $UNITDIR/dlmsd.service, sysusers.d and tmpfiles.d files"
install -d -m 0755 "$DESTDIR$UNITDIR" "$DESTDIR$SYSUSERSDIR" "$DESTDIR$TMPFILESDIR"
sed "s#/opt/dlmsd#$PREFIX#g; s#/etc/dlmsd#$SYSCONFDIR/dlmsd#g" "$top/systemd/dlmsd.service" \
    > "$DESTDIR$UNITDIR/dlmsd.service"
chmod 0644 "$DESTDIR$UNITDIR/dlmsd.service"
install -m 0644 "$here/dlmsd.sysusers" "$DESTDIR$SYSUSERSDIR/dlmsd.conf"
sed "s#/etc/dlmsd#$SYSCONFDIR/dlmsd#g" "$here/dlmsd.tmpfiles" > "$DESTDIR$TMPFILESDIR/dlmsd.conf"
chmod 0644 "$DESTDIR$TMPFILESDIR/dlmsd.conf"

# --- the user ----------------------------------------------------------------------
if command -v systemd-sysusers >/dev/null 2>&1; then
    if [ -n "$DESTDIR" ]; then
        install -d -m 0755 "$DESTDIR/etc"
        systemd-sysusers --root="$DESTDIR" "$DESTDIR$SYSUSERSDIR/dlmsd.conf"
    else
        systemd-sysusers "$SYSUSERSDIR/dlmsd.conf"
    fi
elif [ -z "$DESTDIR" ] && ! getent passwd dlmsd >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/dlmsd --no-create-home \
        --shell /usr/sbin/nologin --comment "dlmsd DLMS/COSEM head-end" dlmsd
fi
# Numeric ids from the target's own databases (the host may not know the user).
id_of() { awk -F: -v name="$2" '$1 == name { print $3 }' "$DESTDIR/etc/$1"; }
uid=$(id_of passwd dlmsd)
gid=$(id_of group dlmsd)
[ -n "$uid" ] && [ -n "$gid" ] || { echo "install.sh: user dlmsd was not created" >&2; exit 1; }

# --- directories, config, key store ---------------------------------------------------
conf="$DESTDIR$SYSCONFDIR/dlmsd"
state="$DESTDIR/var/lib/dlmsd"
say "$SYSCONFDIR/dlmsd (root:dlmsd 0750), /var/lib/dlmsd (dlmsd 0700)"
install -d -m 0750 -o 0 -g "$gid" "$conf"
install -d -m 0700 -o "$uid" -g "$gid" "$state"
if [ ! -e "$conf/dlmsd.toml" ]; then
    sed "s#/etc/dlmsd#$SYSCONFDIR/dlmsd#g" "$here/dlmsd.toml" > "$conf/dlmsd.toml"
    say "sample config $SYSCONFDIR/dlmsd/dlmsd.toml"
fi
chown 0:"$gid" "$conf/dlmsd.toml"
chmod 0640 "$conf/dlmsd.toml"
if [ ! -e "$conf/keys.toml" ]; then
    install -m 0600 -o "$uid" -g "$gid" "$here/keys.toml" "$conf/keys.toml"
    say "empty key store $SYSCONFDIR/dlmsd/keys.toml"
fi

if [ -z "$DESTDIR" ]; then
    command -v systemd-tmpfiles >/dev/null 2>&1 \
        && systemd-tmpfiles --create "$TMPFILESDIR/dlmsd.conf" || true
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
    say "done. Next: add meters (sudo -u dlmsd $PREFIX/.venv/bin/dlmsd keys add ...),"
    say "edit $SYSCONFDIR/dlmsd/dlmsd.toml, then: systemctl enable --now dlmsd"
else
    say "staged under $DESTDIR"
fi
