#!/bin/sh
# First start of the influxdb image (/docker-entrypoint-initdb.d, run as its admin): the retention policies of
# CONTRACT §10, since the services' own user may not create them. Durations from the same variables as smartpark.
set -eu
db="${INFLUXDB_DB:-smartpark}"
influx -username "$INFLUXDB_ADMIN_USER" -password "$INFLUXDB_ADMIN_PASSWORD" -execute \
  "CREATE RETENTION POLICY \"raw\" ON \"$db\" DURATION ${SMARTPARK_RAW_RETENTION:-400d} REPLICATION 1 DEFAULT;
   CREATE RETENTION POLICY \"rollup\" ON \"$db\" DURATION ${SMARTPARK_ROLLUP_RETENTION:-INF} REPLICATION 1"
