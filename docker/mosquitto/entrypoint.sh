#!/bin/sh
# Write Mosquitto's password file (and, with TLS, its configuration) from the environment, then run the broker.
#   MQTT_SERVICE_PASSWORD    user "smartpark" (collector, alert engine)
#   MQTT_SIMULATOR_PASSWORD  user "simulator" (optional: only the 'sim' profile needs it)
#   MQTT_DEVICE_PASSWORDS    "site:password site:password ...", one user per site (user name = site id)
#   MQTT_TLS                 non-empty: also listen with TLS (MQTT_TLS_LISTENER, default "8883") using
#                            MQTT_TLS_CERTFILE and MQTT_TLS_KEYFILE (PEM), and MQTT_TLS_CAFILE when set
# MOSQUITTO_AUTH_DIR and MOSQUITTO_CONF default to the container's paths (tests run it elsewhere).
#
# A device user name is a site id (CONTRACT §1: ^[a-z][a-z0-9_]{0,31}$) and no reserved name: the ACL
# substitutes it into "park/%u/+", so a name with "/", "+" or "#" would let a device publish alarm states
# (park/alarms/...) or another site's readings. Anything else is refused before the broker starts (exit 2).
set -euf
: "${MQTT_SERVICE_PASSWORD:?set MQTT_SERVICE_PASSWORD in .env}"
auth_dir=${MOSQUITTO_AUTH_DIR:-/mosquitto/auth}
conf=${MOSQUITTO_CONF:-/mosquitto/config/mosquitto.conf}

refuse() { echo "entrypoint: $*" >&2; exit 2; }

is_site_id() {
  case "$1" in
    "" | [!a-z]* | *[!a-z0-9_]*) return 1 ;;
  esac
  [ "${#1}" -le 32 ]
}

umask 077
mkdir -p "$auth_dir"
file=$auth_dir/passwd
seen=" "
for pair in ${MQTT_DEVICE_PASSWORDS:-}; do
  user=${pair%%:*}
  pass=${pair#*:}
  if [ "$pass" = "$pair" ] || [ -z "$pass" ]; then
    refuse "MQTT_DEVICE_PASSWORDS entry for '$user' has no password (site:password)"
  fi
  is_site_id "$user" || refuse "refusing device user '$user': a device user is a site id (a-z, then a-z 0-9 _, at most 32)"
  case "$user" in
    smartpark | simulator | alarms) refuse "refusing device user '$user': the name is reserved" ;;
  esac
  case "$seen" in
    *" $user "*) refuse "device user '$user' appears twice in MQTT_DEVICE_PASSWORDS" ;;
  esac
  seen="$seen$user "
done

: > "$file.new"
mosquitto_passwd -b "$file.new" smartpark "$MQTT_SERVICE_PASSWORD"
if [ -n "${MQTT_SIMULATOR_PASSWORD:-}" ]; then
  mosquitto_passwd -b "$file.new" simulator "$MQTT_SIMULATOR_PASSWORD"
fi
for pair in ${MQTT_DEVICE_PASSWORDS:-}; do
  mosquitto_passwd -b "$file.new" "${pair%%:*}" "${pair#*:}"
done
mv "$file.new" "$file"

if [ -n "${MQTT_TLS:-}" ]; then
  : "${MQTT_TLS_CERTFILE:?MQTT_TLS is set: set MQTT_TLS_CERTFILE (PEM certificate chain)}"
  : "${MQTT_TLS_KEYFILE:?MQTT_TLS is set: set MQTT_TLS_KEYFILE (PEM private key)}"
  for f in "$MQTT_TLS_CERTFILE" "$MQTT_TLS_KEYFILE" ${MQTT_TLS_CAFILE:-}; do
    [ -r "$f" ] || refuse "MQTT_TLS is set but $f is not a readable file"
  done
  tls_conf=$auth_dir/mosquitto.conf
  {
    cat "$conf"
    printf '\n# added by entrypoint.sh (MQTT_TLS): the same users and ACL over TLS\n'
    printf 'listener %s\ncertfile %s\nkeyfile %s\ntls_version tlsv1.2\n' \
      "${MQTT_TLS_LISTENER:-8883}" "$MQTT_TLS_CERTFILE" "$MQTT_TLS_KEYFILE"
    if [ -n "${MQTT_TLS_CAFILE:-}" ]; then printf 'cafile %s\n' "$MQTT_TLS_CAFILE"; fi
  } > "$tls_conf.new"
  mv "$tls_conf.new" "$tls_conf"
  conf=$tls_conf
fi
if [ "$(id -u)" = 0 ]; then chown -R mosquitto:mosquitto "$auth_dir" 2>/dev/null || true; fi
exec mosquitto -c "$conf"
