#!/usr/bin/env bash
# Posts sample webhooks to a running receiver the way the providers do, printing each status and body.
#
#   scripts/curl-webhook.sh [BASE_URL] [incode|idnow|all]
#   scripts/curl-webhook.sh all            # default base URL, both providers
#
# BASE_URL defaults to http://127.0.0.1:9000, where scripts/run-local.sh serves the template's HTTP API
# routes as API Gateway does (http://127.0.0.1:9000/lambda-url/receiver works too); the receiver's
# paths are appended (/oauth/token, /webhooks/...). For a stack kept by scripts/deploy-local.sh --keep:
# the DEPLOY_API_URL of .local/deploy.env.
#   incode (default)  POST /oauth/token (client credentials, HTTP Basic), then
#                     POST /webhooks/incode/onboarding-status with the shared header and the bearer token
#   idnow             POST /webhooks/idnow with the HS256-signed JWT body of
#                     events/receiver/idnow-jwt-body-hs256.json (Content-Type: application/jwt)
#   all               both
# Credentials come from config/local.env (TEST values) unless the same variables are set in the
# environment: OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, INCODE_SHARED_HEADER_NAME, INCODE_SHARED_HEADER_VALUE.
# The Incode body gets a new interviewId per run (a new event); set INTERVIEW_ID to repeat one
# (the same body yields the same event id: a duplicate). ONBOARDING_STATUS sets the status.
# Exit status: 0 when every request was answered 200, 1 otherwise. Needs curl and python3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
case "${1:-}" in incode | idnow | all) set -- "" "$1" ;; esac # the base URL may be left out
base=${1:-http://127.0.0.1:9000}
base=${base%/}
what=${2:-incode}
case "$what" in incode | idnow | all) ;; *)
  echo "usage: $0 [BASE_URL] [incode|idnow|all]" >&2
  exit 2
  ;;
esac

# A variable from the environment, else from config/local.env.
cfg() {
  if [[ -n "${!1:-}" ]]; then
    printf '%s' "${!1}"
  else
    sed -n "s/^$1=//p" "$root/config/local.env" | tail -n 1
  fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0

# post LABEL URL CURL-ARGS...: prints "LABEL -> STATUS" and the body; the body is kept in $tmp/body.
post() {
  local label=$1 url=$2 status
  shift 2
  rm -f "$tmp/body"
  status=$(curl -sS -m 30 -o "$tmp/body" -w '%{http_code}' -X POST "$url" "$@") || status="000 (no answer: is the receiver running at $base?)"
  printf '%s\nPOST %s -> %s\n' "== $label" "$url" "$status"
  if [[ -s "$tmp/body" ]]; then
    cat "$tmp/body"
    echo
  fi
  if [[ "$status" != 200 ]]; then
    failed=1
    return 1
  fi
}

incode() {
  local client_id client_secret header_name header_value token body
  client_id=$(cfg OAUTH_CLIENT_ID)
  client_secret=$(cfg OAUTH_CLIENT_SECRET)
  header_name=$(cfg INCODE_SHARED_HEADER_NAME)
  header_value=$(cfg INCODE_SHARED_HEADER_VALUE)

  # 1. The token, as Incode fetches it: client credentials in HTTP Basic, form-encoded grant.
  post "Incode: OAuth token" "$base/oauth/token" \
    -u "$client_id:$client_secret" \
    -H 'Content-Type: application/x-www-form-urlencoded' \
    --data 'grant_type=client_credentials' || return 0
  token=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])' <"$tmp/body")

  # 2. The webhook: shared header + bearer token, JSON body.
  body=$(printf '{"interviewId":"%s","externalId":"customer-42","onboardingStatus":"%s"}' \
    "${INTERVIEW_ID:-local-$(date +%s)-$$}" "${ONBOARDING_STATUS:-ONBOARDING_FINISHED}")
  post "Incode: onboarding status $body" "$base/webhooks/incode/onboarding-status" \
    -H 'Content-Type: application/json' \
    -H "$header_name: $header_value" \
    -H "Authorization: Bearer $token" \
    --data "$body" || true
}

idnow() {
  # The body of the sample event is a compact JWT signed (HS256) with IDNOW_JWT_SECRET of config/local.env.
  python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["body"])' \
    "$root/events/receiver/idnow-jwt-body-hs256.json" >"$tmp/idnow.jwt"
  post "IDnow: session.completed (JWT body, HS256)" "$base/webhooks/idnow" \
    -H 'Content-Type: application/jwt' \
    --data-binary "@$tmp/idnow.jwt" || true
}

case "$what" in
  incode) incode ;;
  idnow) idnow ;;
  all)
    incode
    idnow
    ;;
esac
exit "$failed"
