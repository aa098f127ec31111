#!/usr/bin/env bash
# Local SQS + DynamoDB + S3 (moto) with the queues, tables and buckets of template.yaml; see scripts/local_aws.py.
#   scripts/local-aws.sh up --env-file .local/aws.env            # foreground, Ctrl-C stops it
#   scripts/local-aws.sh up --env-file .local/aws.env --detach   # background; `down` stops it
#   scripts/local-aws.sh create --endpoint http://127.0.0.1:PORT --reset
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/bootstrap.sh" dev
exec "$root/.venv/bin/python" "$root/scripts/local_aws.py" "$@"
