#!/usr/bin/env bash
# `sam deploy`, proven: the real `sam deploy` of the `sam build` output (.aws-sam/build) into an
# emulated CloudFormation (ministack, with the fixes of scripts/ministack_server.py) on a free
# 127.0.0.1 port, with dummy credentials and parameter overrides as a user gives them; then
# scripts/check_deploy.py compares every deployed resource with template.yaml (SAM transform of the
# template with the same parameter values) and prints one line per resource. No Docker, no network.
#
#   scripts/deploy-local.sh                  deploy, check, stop the emulator (exit 0 only if all match)
#   scripts/deploy-local.sh --keep           ... and leave the stack running (also after a failed check,
#                                            to inspect it): writes .local/deploy.env
#                                            (AWS_ENDPOINT_URL, DEPLOY_STACK_NAME, DEPLOY_API_URL, ...)
#   scripts/deploy-local.sh --stop           stop what --keep left running
#   scripts/deploy-local.sh --vpc            deploy into a company's estate: the dispatcher in a VPC
#                                            (creates a VPC, two subnets and a security group in the
#                                            emulator first and passes them as DispatcherSubnetIds/
#                                            DispatcherSecurityGroupIds) and granted AWS-native targets
#                                            (DestinationQueueArns/TopicArns/EventBusArns/TargetKmsKeyArns)
#   scripts/deploy-local.sh --self-test      also prove the check is no false green: deploy
#                                            tests/deploy/extra-resources.yaml (S3 archive with lifecycle,
#                                            dashboard, second queue, Mappings, a condition, ...) and check
#                                            it, then change deployed resources behind the stack's back
#                                            and require the check to fail on exactly those
# Options: --stack-name NAME                 (default kyc-relay-local)
#          --parameter-overrides 'K=V K=V'   instead of the defaults below (same syntax as sam deploy)
#          --build-dir DIR                   the `sam build` output (default .aws-sam/build)
# Needs: `sam build` first (CI: the sam-build step). Logs and state: .local/deploy/.
# Exit status: 0 ok; 1 deploy or check failed; 2 usage or missing build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

state=$root/.local/deploy
env_file=$root/.local/deploy.env
pid_file=$state/ministack.pid
region=eu-central-1
stack=kyc-relay-local
build_dir=.aws-sam/build
mode=check
keep=0
self_test=0
vpc=0
# A production-like set: both providers on, OAuth and a shared header for Incode, JWT for IDnow, an
# alarm e-mail (a conditional resource), non-default capacity and logging values; deletion protection
# off because the stack is thrown away (docs/deploy.md).
overrides=(
  IncodeAllowedIps=incode-production
  IncodeSharedHeaderName=X-Incode-Webhook-Secret
  IncodeSharedHeaderValueParameter=/kyc-relay-local/incode/shared-header
  OAuthClientId=incode-client
  OAuthClientSecretParameter=/kyc-relay-local/oauth/client-secret
  OAuthTokenSigningKeyParameter=/kyc-relay-local/oauth/signing-key
  IdnowEnabled=true
  IdnowAllowedIps=198.51.100.0/24
  IdnowJwksUrl=https://auth.idnow.test/oidc/.well-known/jwks.json
  IdnowJwtIssuer=https://auth.idnow.test
  IdnowJwtAudience=kyc-relay-local
  DestinationsConfigParameter=/kyc-relay-local/config/destinations
  ConsumerMaxConcurrency=5
  DispatcherMaxConcurrency=20
  AlarmEmail=ops@example.com
  LogLevel=debug
  LogRetentionInDays=14
  TableDeletionProtection=false
)

while (($#)); do
  case "$1" in
    --keep) keep=1 ;;
    --stop) mode=stop ;;
    --self-test) self_test=1 ;;
    --vpc) vpc=1 ;;
    --stack-name) stack=${2:?--stack-name needs a name}; shift ;;
    --parameter-overrides) read -r -a overrides <<<"${2?--parameter-overrides needs a value}"; shift ;;
    --build-dir) build_dir=${2:?--build-dir needs a directory}; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "deploy-local: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf 'deploy-local: %s\n' "$*"; }
t0=$SECONDS

# --- the emulator's lifetime ----------------------------------------------------------------------

ministack_alive() { # pid -> 0 if it is our wrapper and still running (not a zombie)
  local pid=$1
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  [[ $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'ministack_server.py'
}

stop_ministack() {
  [[ -f $pid_file ]] || return 0
  local pid i
  pid=$(cat "$pid_file")
  if ministack_alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do # 5 s
      ministack_alive "$pid" || break
      sleep 0.1
    done
    if ministack_alive "$pid"; then
      say "ministack (pid $pid) did not stop on SIGTERM: SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pid_file" "$env_file"
}

if [[ $mode == stop ]]; then
  if [[ ! -f $pid_file ]]; then
    say "nothing to stop"
  else
    stop_ministack
    say "stopped"
  fi
  exit 0
fi

if [[ -f $pid_file ]] && ministack_alive "$(cat "$pid_file")"; then
  say "an emulator from an earlier --keep is running (pid $(cat "$pid_file")): stop it with scripts/deploy-local.sh --stop" >&2
  exit 2
fi
rm -f "$pid_file" "$env_file"

if [[ ! -f $build_dir/template.yaml ]]; then
  say "no $build_dir/template.yaml: run \`sam build\` first (see docs/deploy.md §3; CI runs it in the sam-build step)" >&2
  exit 2
fi

scripts/bootstrap.sh sam
scripts/bootstrap.sh ministack
mkdir -p "$state/tmp"

keep_running=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  ((keep_running)) || stop_ministack
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port=$(.venv-ministack/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endpoint=http://127.0.0.1:$port
say "starting ministack (scripts/ministack_server.py) at $endpoint (log: .local/deploy/ministack.log) ..."
# Own session (killed as a group); only loopback; ministack's pid file and temp files in our state dir.
# No function runs here: ministack would start a bootstrap only for an event, and nothing sends one
# (the arm64 bootstraps could not run on this host anyway; this run checks the deployment, not the code).
GATEWAY_PORT=$port BIND_HOST=127.0.0.1 MINISTACK_HOST=127.0.0.1 MINISTACK_REGION=$region TMPDIR=$state/tmp \
  setsid .venv-ministack/bin/python scripts/ministack_server.py </dev/null >"$state/ministack.log" 2>&1 &
echo $! >"$pid_file"
for ((i = 0; i < 300; i++)); do # 30 s
  curl -sf -m 2 "$endpoint/_ministack/health" >/dev/null 2>&1 && break
  ministack_alive "$(cat "$pid_file")" || { tail -n 20 "$state/ministack.log" >&2; say "ministack exited before answering" >&2; exit 1; }
  sleep 0.1
done
curl -sf -m 2 "$endpoint/_ministack/health" >/dev/null || { say "ministack not answering at $endpoint after 30 s" >&2; exit 1; }
say "  up in $((SECONDS - t0))s"

export AWS_ENDPOINT_URL=$endpoint AWS_REGION=$region AWS_DEFAULT_REGION=$region
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test SAM_CLI_TELEMETRY=0
unset AWS_PROFILE AWS_SESSION_TOKEN

sam_deploy() { # template stack log overrides...
  local template=$1 name=$2 log=$3
  shift 3
  local args=(deploy)
  # As a user runs it: from the project root, where `sam deploy` finds .aws-sam/build/template.yaml
  # and samconfig.toml by itself. Another template needs both named (sam looks for the config file
  # beside the template).
  [[ $template == .aws-sam/build/template.yaml ]] || args+=(--template-file "$template" --config-file "$root/samconfig.toml")
  args+=(--stack-name "$name" --region "$region"
    --no-confirm-changeset --no-progressbar --capabilities CAPABILITY_IAM CAPABILITY_NAMED_IAM)
  (($#)) && args+=(--parameter-overrides "$@")
  # samconfig.toml's [default.deploy.parameters] apply as for a user (resolve_s3, s3_prefix, ...);
  # --no-confirm-changeset because confirm_changeset = true would wait for a TTY.
  printf '$ sam %s\n' "${args[*]}" >"$log"
  local t=$SECONDS
  if ! .venv-sam/bin/sam "${args[@]}" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    say "sam deploy of $template failed (log: ${log#"$root"/})" >&2
    return 1
  fi
  say "  sam deploy $name: $(grep -c 'CREATE_COMPLETE' "$log") CREATE_COMPLETE events in $((SECONDS - t))s"
}

check() { # template stack overrides...
  local template=$1 name=$2
  shift 2
  .venv-sam/bin/python scripts/check_deploy.py --endpoint "$endpoint" --stack-name "$name" \
    --template "$template" --region "$region" ${1+--parameter-overrides "$@"}
}

if ((vpc)); then
  # What a deployer brings: private subnets and a security group for the dispatcher's interfaces.
  read -r subnets sg < <(.venv-sam/bin/python - <<'PY'
import boto3

ec2 = boto3.client("ec2")
vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
sg = ec2.create_security_group(VpcId=vpc, GroupName="kyc-relay-dispatcher",
                               Description="dispatcher egress")["GroupId"]
print(",".join(subnets), sg)
PY
  )
  overrides+=("DispatcherSubnetIds=$subnets" "DispatcherSecurityGroupIds=$sg")
  say "VPC: dispatcher in subnets $subnets, security group $sg"
  # AWS-native destinations, one another account's: the grants are checked against the template,
  # the targets need not exist.
  account=123456789012 other=210987654321
  overrides+=(
    "DestinationQueueArns=arn:aws:sqs:$region:$account:kyc-events.fifo,arn:aws:sqs:$region:$other:kyc-audit"
    "DestinationTopicArns=arn:aws:sns:$region:$account:kyc-fanout"
    "DestinationEventBusArns=arn:aws:events:$region:$account:event-bus/kyc"
    "DestinationTargetKmsKeyArns=arn:aws:kms:$region:$account:key/1234abcd-12ab-34cd-56ef-1234567890ab"
  )
  say "AWS-native destinations: a FIFO and a cross-account queue, a topic, a bus, a KMS key"
fi

say "sam deploy of $build_dir (stack $stack, ${#overrides[@]} parameter overrides) ..."
sam_deploy "$build_dir/template.yaml" "$stack" "$state/sam-deploy.log" "${overrides[@]}"
set +e
check template.yaml "$stack" "${overrides[@]}"
rc=$?
set -e

if ((self_test)); then
  say "self-test: tests/deploy/extra-resources.yaml (resource types template.yaml does not have yet) ..."
  fx=$stack-fixture
  sam_deploy tests/deploy/extra-resources.yaml "$fx" "$state/sam-deploy-fixture.log" Tier=large
  set +e
  check tests/deploy/extra-resources.yaml "$fx" Tier=large
  fx_rc=$?
  set -e
  ((fx_rc == 0)) || { say "self-test: the fixture stack does not check clean (exit $fx_rc)"; rc=1; }
  say "self-test: changing five deployed settings behind the stack's back; the check must fail on each ..."
  .venv-sam/bin/python - "$fx" <<'PY'
import json
import sys

import boto3

stack = sys.argv[1]
sqs, s3, ddb = boto3.client("sqs"), boto3.client("s3"), boto3.client("dynamodb")
sqs.set_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=f"{stack}-delivery-slow")["QueueUrl"],
                         Attributes={"VisibilityTimeout": "301"})
ddb.update_time_to_live(TableName=f"{stack}-state",
                        TimeToLiveSpecification={"AttributeName": "expires_at", "Enabled": False})
bucket = next(b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(f"{stack}-archive-"))
s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
    {"ID": "expire-envelopes", "Status": "Enabled", "Filter": {"Prefix": "envelopes/"}, "Expiration": {"Days": 31}}]})
s3.delete_public_access_block(Bucket=bucket)
# A wildcard grant on a role (what SAM's SQS event source attaches): least privilege must catch it.
role = boto3.client("cloudformation").describe_stack_resource(
    StackName=stack, LogicalResourceId="ArchiveReaderRole")["StackResourceDetail"]["PhysicalResourceId"]
boto3.client("iam").put_role_policy(RoleName=role, PolicyName="wide", PolicyDocument=json.dumps({
    "Version": "2012-10-17", "Statement": [{"Sid": "AnyQueue", "Effect": "Allow",
                                            "Action": ["sqs:ReceiveMessage"], "Resource": "*"}]}))
PY
  set +e
  out=$(check tests/deploy/extra-resources.yaml "$fx" Tier=large 2>&1)
  broken_rc=$?
  set -e
  missing=()
  for want in 'VisibilityTimeout: expected 300' 'TimeToLiveSpecification.Enabled: expected true' \
    'LifecycleConfiguration.Rules' 'PublicAccessBlockConfiguration' \
    'statement AnyQueue: sqs:ReceiveMessage on Resource "*"'; do
    grep -q -- "$want" <<<"$out" || missing+=("$want")
  done
  if ((broken_rc == 1 && ${#missing[@]} == 0)); then
    say "self-test: ok (the check failed with exit 1 on all five changes)"
  else
    printf '%s\n' "$out"
    say "self-test: FAILED: exit $broken_rc, not reported: ${missing[*]:-none}"
    rc=1
  fi
fi

if ((keep)); then
  api_id=$(.venv-sam/bin/python - "$stack" <<'PY'
import sys

import boto3

r = boto3.client("cloudformation").describe_stack_resource(StackName=sys.argv[1], LogicalResourceId="HttpApi")
print(r["StackResourceDetail"]["PhysicalResourceId"])
PY
  )
  {
    echo "# Written by scripts/deploy-local.sh --keep; removed by --stop. Shell-sourceable. TEST credentials."
    echo "DEPLOY_STACK_NAME=$stack"
    echo "DEPLOY_MINISTACK_PID=$(cat "$pid_file")"
    echo "AWS_ENDPOINT_URL=$endpoint"
    echo "AWS_REGION=$region"
    echo "AWS_DEFAULT_REGION=$region"
    echo "AWS_ACCESS_KEY_ID=test"
    echo "AWS_SECRET_ACCESS_KEY=test"
    echo "DEPLOY_API_ID=$api_id"
    # ministack serves an HTTP API's routes under this path (the AWS URL is in the ApiBaseUrl output).
    echo "DEPLOY_API_URL=$endpoint/_aws/execute-api/$api_id"
  } >"$env_file"
  keep_running=1
  say "kept running: stack $stack at $endpoint (pid $(cat "$pid_file")); settings in .local/deploy.env;" \
    "stop with scripts/deploy-local.sh --stop"
fi
say "$( ((rc == 0)) && echo ok || echo FAILED) in $((SECONDS - t0))s"
exit "$rc"
