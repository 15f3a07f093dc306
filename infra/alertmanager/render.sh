#!/bin/sh
# Entrypoint of the alertmanager container (busybox sh and awk of prom/alertmanager):
# write alertmanager.yml with the environment's values to /tmp/alertmanager.yml, then
# exec Alertmanager with the given arguments.
#
#   render.sh [ALERTMANAGER ARGS...]
#
# ${NAME} becomes the value of NAME (empty when unset); a single quote in a value is
# doubled, as YAML's single-quoted strings want. SMTP_STARTTLS must be a boolean
# (true/false, 1/0, yes/no, on/off; empty: false).
# ALERTMANAGER_TEMPLATE, ALERTMANAGER_CONFIG and ALERTMANAGER_BIN override the paths
# (tests render the file outside the container).
set -eu

template="${ALERTMANAGER_TEMPLATE:-/etc/alertmanager/alertmanager.yml}"
output="${ALERTMANAGER_CONFIG:-/tmp/alertmanager.yml}"

# The spellings the worker's settings accept for a boolean, as YAML's true/false.
case "${SMTP_STARTTLS:-}" in
    [Tt][Rr][Uu][Ee] | 1 | [Yy][Ee][Ss] | [Oo][Nn]) SMTP_STARTTLS=true ;;
    [Ff][Aa][Ll][Ss][Ee] | 0 | [Nn][Oo] | [Oo][Ff][Ff] | "") SMTP_STARTTLS=false ;;
    *) echo "render.sh: SMTP_STARTTLS must be true or false, got '$SMTP_STARTTLS'" >&2; exit 2 ;;
esac
export SMTP_STARTTLS
for name in SMTP_HOST SMTP_PORT MAIL_FROM ALERT_EMAIL_TO; do
    eval "value=\${$name:-}"
    [ -n "$value" ] || { echo "render.sh: $name is not set" >&2; exit 2; }
done

umask 077
awk '{
    out = ""
    while (match($0, /\$\{[A-Z_][A-Z0-9_]*\}/)) {
        value = ENVIRON[substr($0, RSTART + 2, RLENGTH - 3)]
        gsub(/'\''/, "'\'''\''", value)
        out = out substr($0, 1, RSTART - 1) value
        $0 = substr($0, RSTART + RLENGTH)
    }
    print out $0
}' "$template" > "$output.tmp"
mv -f "$output.tmp" "$output"

exec "${ALERTMANAGER_BIN:-/bin/alertmanager}" "$@"
