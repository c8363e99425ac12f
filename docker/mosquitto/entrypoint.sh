#!/bin/sh
# Write Mosquitto's password file from the environment, then run the broker.
#   MQTT_SERVICE_PASSWORD    user "smartpark" (collector, alert engine)
#   MQTT_SIMULATOR_PASSWORD  user "simulator" (optional: only the 'sim' profile needs it)
#   MQTT_DEVICE_PASSWORDS    "site:password site:password ...", one user per site (user name = site id)
# MOSQUITTO_AUTH_DIR and MOSQUITTO_CONF default to the container's paths (tests run it elsewhere).
set -eu
: "${MQTT_SERVICE_PASSWORD:?set MQTT_SERVICE_PASSWORD in .env}"
auth_dir=${MOSQUITTO_AUTH_DIR:-/mosquitto/auth}
conf=${MOSQUITTO_CONF:-/mosquitto/config/mosquitto.conf}
umask 077
mkdir -p "$auth_dir"
file=$auth_dir/passwd
: > "$file.new"
mosquitto_passwd -b "$file.new" smartpark "$MQTT_SERVICE_PASSWORD"
if [ -n "${MQTT_SIMULATOR_PASSWORD:-}" ]; then
  mosquitto_passwd -b "$file.new" simulator "$MQTT_SIMULATOR_PASSWORD"
fi
for pair in ${MQTT_DEVICE_PASSWORDS:-}; do
  user=${pair%%:*}
  pass=${pair#*:}
  case "$user" in
    smartpark|simulator|alarms|_sys|"") echo "entrypoint: refusing device user '$user'" >&2; exit 2 ;;
  esac
  if [ "$pass" = "$pair" ] || [ -z "$pass" ]; then
    echo "entrypoint: MQTT_DEVICE_PASSWORDS entry for '$user' has no password (site:password)" >&2; exit 2
  fi
  mosquitto_passwd -b "$file.new" "$user" "$pass"
done
mv "$file.new" "$file"
if [ "$(id -u)" = 0 ]; then chown -R mosquitto:mosquitto "$auth_dir" 2>/dev/null || true; fi
exec mosquitto -c "$conf"
