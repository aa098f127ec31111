#!/usr/bin/env python3
"""Local AWS for the relay: a moto server with the SQS queues, DynamoDB tables and S3 buckets of
template.yaml.

The resources are read from template.yaml (AWS::SQS::Queue, AWS::DynamoDB::Table, AWS::S3::Bucket;
their Conditions, and the Parameters and Mappings their properties reference, are evaluated with the
parameters' defaults or --parameter-overrides), so the local set-up cannot drift from the deployed
one. Each resource is exported under an environment variable named after its logical ID:
IngestQueue -> INGEST_QUEUE_URL, IngestDLQ -> INGEST_DLQ_URL, EventsTable -> EVENTS_TABLE,
ArchiveBucket -> ARCHIVE_BUCKET.

  up      start moto_server on a free port, create the resources, print `export` lines;
          stay in the foreground until SIGINT/SIGTERM (then stop moto), or --detach.
          With --endpoint URL: use that running emulator instead of starting one.
  create  create the resources in a running emulator (--endpoint; idempotent; --reset first wipes it)
  down    stop a moto started with `up --detach` (reads --pid-file)

Run with the project venv: .venv/bin/python scripts/local_aws.py up --env-file .local/aws.env
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cfn_s3  # noqa: E402  (same folder; CloudFormation's S3 shapes -> the S3 API's)

ROOT = Path(__file__).resolve().parent.parent
REGION = "eu-central-1"
ACCOUNT_ID = "123456789012"  # moto's default account
CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


def log(msg: str) -> None:
    print(f"local_aws: {msg}", file=sys.stderr, flush=True)


# --- template --------------------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags (!Sub, !Ref, !GetAtt, ...) into long form."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


class Template:
    def __init__(self, path: Path, stack_name: str, region: str, overrides: dict[str, str] | None = None):
        self.doc = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 (SafeLoader subclass)
        self.resources: dict = self.doc.get("Resources", {})
        self.mappings: dict = self.doc.get("Mappings") or {}
        self.conditions: dict = self.doc.get("Conditions") or {}
        defs = self.doc.get("Parameters") or {}
        unknown = sorted(set(overrides or {}) - set(defs))
        if unknown:
            raise KeyError(f"parameter overrides for parameters the template does not have: {unknown}")
        self.params = {k: (overrides or {}).get(k, v.get("Default")) for k, v in defs.items()}
        self.param_types = {k: v.get("Type", "String") for k, v in defs.items()}
        self.pseudo = {
            "AWS::StackName": stack_name,
            "AWS::Region": region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        self.attrs: dict[str, dict[str, str]] = {}  # logical id -> attributes of created resources
        self._conditions_seen: dict[str, bool] = {}

    def of_type(self, cfn_type: str) -> dict:
        """Properties of the resources of one type whose Condition (if any) holds."""
        return {
            k: v.get("Properties", {})
            for k, v in self.resources.items()
            if v.get("Type") == cfn_type and (not v.get("Condition") or self.condition(v["Condition"]))
        }

    def condition(self, name: str) -> bool:
        if name not in self._conditions_seen:
            self._conditions_seen[name] = self._truth(self.conditions[name])
        return self._conditions_seen[name]

    def _truth(self, node) -> bool:
        if isinstance(node, dict) and len(node) == 1:
            (key, arg), = node.items()
            if key == "Fn::Equals":
                return str(self.resolve(arg[0])) == str(self.resolve(arg[1]))
            if key == "Fn::Not":
                return not self._truth(arg[0])
            if key == "Fn::And":
                return all(self._truth(a) for a in arg)
            if key == "Fn::Or":
                return any(self._truth(a) for a in arg)
            # `!Condition Name` loads as Fn::Condition (the short-tag loader), `Condition: Name` not.
            if key in ("Condition", "Fn::Condition"):
                return self.condition(arg)
        return str(self.resolve(node)).lower() == "true"

    def _ref(self, name: str):
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            value = self.params[name]
            ptype = self.param_types.get(name, "")
            if ptype == "CommaDelimitedList" or ptype.startswith("List<"):
                return [v.strip() for v in str(value).split(",")] if value not in (None, "") else []
            return str(value)
        if name in self.attrs:
            return self.attrs[name]["Ref"]
        raise KeyError(f"cannot resolve Ref {name!r} (not created yet?)")

    def resolve(self, value):
        """Evaluates the intrinsics that resource properties use (Ref, GetAtt, Sub, Join, Select, Split,
        FindInMap, If with the template's Conditions); AWS::NoValue drops the key or list item."""
        if isinstance(value, list):
            return [v for v in (self.resolve(v) for v in value) if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return _NO_VALUE if arg == "AWS::NoValue" else self._ref(arg)
            if key == "Fn::GetAtt":
                return self.attrs[arg[0]][arg[1]]
            if key == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

                def sub(m: re.Match) -> str:
                    name = m.group(1)
                    if name in extra:
                        return str(extra[name])
                    if "." in name and not name.startswith("AWS::"):
                        return str(self.attrs[name.split(".")[0]][name.split(".", 1)[1]])
                    return str(self._ref(name))

                return re.sub(r"\$\{([^}!]+)\}", sub, text).replace("${!", "${")
            if key == "Fn::Join":
                return arg[0].join(str(v) for v in self.resolve(arg[1]))
            if key == "Fn::Select":
                index, items = self.resolve(arg)
                return items[int(index)]
            if key == "Fn::Split":
                sep, text = self.resolve(arg)
                return str(text).split(sep)
            if key == "Fn::FindInMap":
                args = self.resolve(arg)
                try:
                    return self.mappings[args[0]][str(args[1])][str(args[2])]
                except KeyError:
                    if len(args) > 3 and isinstance(args[3], dict) and "DefaultValue" in args[3]:
                        return args[3]["DefaultValue"]
                    raise
            if key.startswith("Fn::"):
                raise ValueError(f"unsupported intrinsic {key} in a resource property")
        out = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _NO_VALUE}


_NO_VALUE = object()


def snake(logical_id: str) -> str:
    """IngestDLQ -> INGEST_DLQ, EventsTable -> EVENTS_TABLE."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", logical_id).upper()


# --- resources -------------------------------------------------------------------------------------


def _attr_str(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def create_queues(tpl: Template, sqs) -> dict[str, str]:
    """Two passes: every queue first, then the attributes (a RedrivePolicy needs its DLQ's ARN)."""
    queues = tpl.of_type("AWS::SQS::Queue")
    env = {}
    for lid, props in queues.items():
        # Without a QueueName CloudFormation makes one up; a fixed one keeps re-runs idempotent.
        name = tpl.resolve(props.get("QueueName") or f"{tpl.pseudo['AWS::StackName']}-{lid}")
        create_attrs = {}
        if props.get("FifoQueue"):  # can only be set at creation
            create_attrs["FifoQueue"] = "true"
        url = sqs.create_queue(QueueName=name, Attributes=create_attrs)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        tpl.attrs[lid] = {"Ref": url, "QueueUrl": url, "Arn": arn, "QueueName": name}
        env[f"{snake(lid)}_URL"] = url
    for lid, props in queues.items():
        # CloudFormation's queue properties are the queue attributes under the same names
        # (VisibilityTimeout, MaximumMessageSize, RedrivePolicy, SqsManagedSseEnabled, ...), so a
        # property added to the template reaches the emulator without a change here.
        attrs = {
            k: _attr_str(v)
            for k, v in tpl.resolve(props).items()
            if k not in ("QueueName", "FifoQueue", "Tags")
        }
        # Setting every declared attribute (rather than passing them to CreateQueue) keeps a re-run
        # idempotent and converges a queue that an older template created differently.
        if attrs:
            sqs.set_queue_attributes(QueueUrl=tpl.attrs[lid]["QueueUrl"], Attributes=attrs)
        tags = tpl.resolve(props.get("Tags") or [])
        if tags:
            sqs.tag_queue(QueueUrl=tpl.attrs[lid]["QueueUrl"], Tags={t["Key"]: str(t["Value"]) for t in tags})
        log(f"queue {tpl.attrs[lid]['QueueName']}: {attrs}")
    return env


# Table properties with the same shape in CloudFormation and in the CreateTable API.
_TABLE_PASSTHROUGH = ("KeySchema", "AttributeDefinitions", "BillingMode", "ProvisionedThroughput",
                      "GlobalSecondaryIndexes", "LocalSecondaryIndexes", "StreamSpecification", "TableClass")


def create_tables(tpl: Template, ddb) -> dict[str, str]:
    env = {}
    for lid, props in tpl.of_type("AWS::DynamoDB::Table").items():
        name = tpl.resolve(props.get("TableName") or f"{tpl.pseudo['AWS::StackName']}-{lid}")
        spec = {k: tpl.resolve(props[k]) for k in _TABLE_PASSTHROUGH if k in props}
        try:
            ddb.create_table(TableName=name, **spec)
            ddb.get_waiter("table_exists").wait(TableName=name)
        except ddb.exceptions.ResourceInUseException:
            have = ddb.describe_table(TableName=name)["Table"]["KeySchema"]
            if have != spec["KeySchema"]:
                sys.exit(f"table {name} exists with key {have}, template says {spec['KeySchema']}; use --reset")
        ttl = props.get("TimeToLiveSpecification")
        if ttl and tpl.resolve(ttl.get("Enabled")) in (True, "true"):
            current = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                ddb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"AttributeName": tpl.resolve(ttl["AttributeName"]), "Enabled": True},
                )
        pitr = props.get("PointInTimeRecoverySpecification", {})
        if tpl.resolve(pitr.get("PointInTimeRecoveryEnabled")) in (True, "true"):
            ddb.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            )
        # Not mirrored: SSE (no meaning locally) and DeletionProtectionEnabled (would block tests
        # that drop tables; /moto-api/reset ignores it anyway).
        tpl.attrs[lid] = {"Ref": name, "Arn": f"arn:aws:dynamodb:{tpl.pseudo['AWS::Region']}:{ACCOUNT_ID}:table/{name}"}
        env[snake(lid)] = name
        log(f"table {name}: {spec['KeySchema']}, ttl={ttl and ttl.get('AttributeName')}")
    return env


def create_buckets(tpl: Template, s3) -> dict[str, str]:
    """AWS::S3::Bucket: the bucket with its encryption, lifecycle rules, public access block,
    versioning, ownership controls and tags, converted from CloudFormation's shape by cfn_s3 (the
    S3 API names them differently). Exported like a table: ArchiveBucket -> ARCHIVE_BUCKET=<name>."""
    env = {}
    for lid, props in tpl.of_type("AWS::S3::Bucket").items():
        props = tpl.resolve(props)
        # Without a BucketName CloudFormation makes one up; a fixed one keeps re-runs idempotent.
        name = props.get("BucketName") or re.sub(r"[^a-z0-9-]", "-", f"{tpl.pseudo['AWS::StackName']}-{lid}".lower())[:63]
        region = tpl.pseudo["AWS::Region"]
        try:
            s3.create_bucket(Bucket=name, **({} if region == "us-east-1" else
                                              {"CreateBucketConfiguration": {"LocationConstraint": region}}))
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        done = []
        if props.get("BucketEncryption"):
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration=cfn_s3.encryption(props["BucketEncryption"]))
            done.append("encryption")
        if props.get("LifecycleConfiguration"):
            s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration=cfn_s3.lifecycle(props["LifecycleConfiguration"]))
            done.append(f"{len(props['LifecycleConfiguration'].get('Rules', []))} lifecycle rules")
        if props.get("PublicAccessBlockConfiguration"):
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
                k: v in (True, "true") for k, v in props["PublicAccessBlockConfiguration"].items()})
            done.append("public access block")
        if (props.get("VersioningConfiguration") or {}).get("Status"):
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": props["VersioningConfiguration"]["Status"]})
            done.append(f"versioning {props['VersioningConfiguration']['Status']}")
        if props.get("OwnershipControls"):
            s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=props["OwnershipControls"])
        if props.get("Tags"):
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": cfn_s3.tags(props["Tags"])})
        # Not mirrored: notifications, logging, CORS, object lock, replication (no local meaning yet).
        tpl.attrs[lid] = {"Ref": name, "Arn": f"arn:aws:s3:::{name}", "DomainName": f"{name}.s3.amazonaws.com",
                          "RegionalDomainName": f"{name}.s3.{region}.amazonaws.com"}
        env[snake(lid)] = name
        log(f"bucket {name}: {', '.join(done) or 'no settings'}")
    return env


def provision(endpoint: str, args) -> dict[str, str]:
    overrides = dict(o.split("=", 1) for o in args.parameter_overrides)
    tpl = Template(Path(args.template), args.stack_name, args.region, overrides)
    session = boto3.session.Session(region_name=args.region, **CREDENTIALS)
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": args.region,
        "AWS_DEFAULT_REGION": args.region,
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
    }
    env |= create_queues(tpl, session.client("sqs", endpoint_url=endpoint))
    env |= create_tables(tpl, session.client("dynamodb", endpoint_url=endpoint))
    env |= create_buckets(tpl, session.client("s3", endpoint_url=endpoint))
    return env


# --- emulator --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(endpoint: str, proc: subprocess.Popen | None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            sys.exit(f"moto_server exited with {proc.returncode} before answering (see its log)")
        if time.monotonic() > deadline:
            sys.exit(f"no answer from {endpoint} within {timeout:.0f} s")
        time.sleep(0.1)


def reset(endpoint: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).close()
    log(f"reset {endpoint}")


def start_moto(log_file: Path) -> tuple[subprocess.Popen, str]:
    # scripts/moto_server.py: moto's server with atomic DynamoDB writes (see its docstring).
    server = ROOT / "scripts" / "moto_server.py"
    port = free_port()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        # Own session: a Ctrl-C in the terminal reaches only us, and we stop moto ourselves.
        proc = subprocess.Popen(
            [sys.executable, str(server), "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    log(f"moto_server pid {proc.pid} at {endpoint} (log: {log_file})")
    return proc, endpoint


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log(f"moto_server pid {proc.pid} stopped")


def emit(env: dict[str, str], env_file: str | None) -> None:
    text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    sys.stdout.write(text)
    sys.stdout.flush()
    if env_file:
        Path(env_file).parent.mkdir(parents=True, exist_ok=True)
        Path(env_file).write_text(text)
        log(f"wrote {env_file}")


# --- commands --------------------------------------------------------------------------------------


def cmd_up(args) -> int:
    if args.endpoint:  # attach: nothing of ours to keep running
        wait_ready(args.endpoint, None)
        if args.reset:
            reset(args.endpoint)
        emit(provision(args.endpoint, args), args.env_file)
        return 0
    proc, endpoint = start_moto(Path(args.log_file))
    try:
        wait_ready(endpoint, proc)
        emit(provision(endpoint, args), args.env_file)
    except BaseException:
        stop(proc)
        raise
    if args.detach:
        Path(args.pid_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.pid_file).write_text(f"{proc.pid}\n")
        log(f"detached; stop it with: {Path(sys.argv[0]).name} down --pid-file {args.pid_file}")
        return 0

    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    log("running; Ctrl-C (or SIGTERM) stops moto")
    while not stopping and proc.poll() is None:
        time.sleep(0.2)
    if proc.poll() is not None and not stopping:
        log(f"moto_server exited unexpectedly with {proc.returncode}")
        return 1
    stop(proc)
    return 0


def cmd_create(args) -> int:
    wait_ready(args.endpoint, None, timeout=5)
    if args.reset:
        reset(args.endpoint)
    emit(provision(args.endpoint, args), args.env_file)
    return 0


def cmd_down(args) -> int:
    pid_file = Path(args.pid_file)
    if not pid_file.exists():
        log(f"{pid_file} not found: nothing to stop")
        return 0
    pid = int(pid_file.read_text().strip())
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists() and b"moto_server" not in cmdline.read_bytes():
        sys.exit(f"pid {pid} is not a moto_server (stale {pid_file}?); not killing it")
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # raises once it is gone
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pid_file.unlink()
    log(f"moto_server pid {pid} stopped")
    return 0


def main() -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--template", default=str(ROOT / "template.yaml"))
    common.add_argument("--stack-name", default="kyc-relay", help="value of ${AWS::StackName} (default kyc-relay)")
    common.add_argument("--region", default=REGION)
    common.add_argument("--env-file", help="also write the export lines to this file")
    common.add_argument("--reset", action="store_true", help="POST /moto-api/reset before creating")
    common.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="template parameter values instead of their defaults (as for sam deploy)")

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="start moto (or attach) and create the resources")
    up.add_argument("--endpoint", help="attach to this running emulator instead of starting one")
    up.add_argument("--detach", action="store_true", help="leave moto running, write its pid to --pid-file")
    up.add_argument("--pid-file", default=str(ROOT / ".local" / "moto.pid"))
    up.add_argument("--log-file", default=str(ROOT / ".local" / "moto.log"))
    up.set_defaults(func=cmd_up)
    create = sub.add_parser("create", parents=[common], help="create the resources in a running emulator")
    create.add_argument("--endpoint", required=True)
    create.set_defaults(func=cmd_create)
    down = sub.add_parser("down", help="stop a moto started with up --detach")
    down.add_argument("--pid-file", default=str(ROOT / ".local" / "moto.pid"))
    down.set_defaults(func=cmd_down)

    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
