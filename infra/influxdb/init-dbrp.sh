#!/bin/bash
# Runs once, after the influxdb:2.x image's first-start setup (the influx CLI is configured with
# the admin token). Maps the v1 database $PROMPTPROF_INFLUX__DATABASE (retention policy autogen)
# onto the bucket, so that InfluxQL (Grafana's data source, `promptprof report`) reads what the
# worker writes through the v2 API. InfluxDB 2.4+ also has a virtual mapping per bucket; this one
# is explicit, survives a bucket rename, and is the one `influx v1 dbrp list` shows.
set -euo pipefail

influx v1 dbrp create \
    --org "${DOCKER_INFLUXDB_INIT_ORG}" \
    --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
    --db "${PROMPTPROF_INFLUX__DATABASE:-promptprof}" \
    --rp autogen \
    --default
