#!/usr/bin/env python3
"""Checks a deployed stack against the template it was deployed from, resource by resource.

The expectations come from the template, not from a list in this file: the template is run through
the SAM transform (samtranslator, the version the SAM CLI uses) with the stack's parameter values,
conditions are evaluated, intrinsics are resolved (Ref / GetAtt / Sub / Join / Select / Split /
FindInMap / If ...; a Ref or GetAtt to another resource resolves to what that resource is in the
deployed stack), and every resulting resource's declared properties are compared with what the
emulator's service APIs (SQS, DynamoDB, Lambda, IAM, API Gateway v2, CloudWatch, Logs, SNS, S3, SSM)
report for the physical resource. So a resource added to the template is checked without editing
this file, as long as its type has an observer below; a type without one, a property an observer
cannot read and a value that cannot be resolved are reported as UNVERIFIED (and fail the check,
unless --allow-unverified names them), never passed silently.

Also checked: the stack's set of resources (nothing missing, nothing extra, every one *_COMPLETE),
its parameters and its outputs; and least privilege: no IAM role of the stack has a statement (inline
or in an attached managed policy) that allows an SQS, SNS, EventBridge, DynamoDB, S3 or KMS action on Resource "*".

Comparison rules: the template's properties must be present with equal values; the deployed side may
hold more (service defaults), except Environment.Variables, which must match exactly. Numbers and
booleans compare by value whatever their type ("180" = 180, "true" = True), JSON documents
(RedrivePolicy, policies, dashboard bodies) by content, lists in any order, Tags as a subset (AWS adds
aws:* tags).

  .venv-sam/bin/python scripts/check_deploy.py --endpoint http://127.0.0.1:PORT --stack-name NAME \\
      [--template template.yaml] [--parameter-overrides K=V ...] [--allow-unverified TYPE[.Prop]]

Exit status: 0 all verified and equal; 1 a mismatch; 2 something unverified (and not allowed); 3 usage
or connection error.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
from pathlib import Path
from urllib.parse import unquote

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cfn_s3  # noqa: E402  (same folder)

ROOT = Path(__file__).resolve().parent.parent
MISSING = object()
NOVALUE = object()


class Unresolvable:
    """A template value that cannot be computed here (e.g. Fn::GetAZs): compared as UNVERIFIED."""

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self):
        return f"<unresolvable: {self.reason}>"


class Issue:
    def __init__(self, kind: str, path: str, msg: str):
        self.kind, self.path, self.msg = kind, path, msg  # kind: mismatch | unverified

    def __str__(self):
        return f"{self.path}: {self.msg}" if self.path else self.msg


def fmt(value, limit: int = 120) -> str:
    text = json.dumps(value, default=str, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- template --------------------------------------------------------------------------------------


def load_template(path: Path) -> dict:
    from samcli.yamlhelper import yaml_parse  # the SAM CLI's own loader (short-form intrinsics)

    return yaml_parse(path.read_text())


def translate(tpl: dict, params: dict) -> dict:
    """SAM -> CloudFormation, as the AWS::Serverless transform does at deploy time."""
    if "AWS::Serverless-2016-10-31" not in json.dumps(tpl.get("Transform", "")):
        return copy.deepcopy(tpl)
    from samtranslator.translator.transform import transform

    tpl = copy.deepcopy(tpl)
    # Code locations are local paths before packaging; the transform wants S3 URIs. The code itself is
    # checked by size, not by location, so any placeholder does.
    placeholder = "s3://check-deploy/placeholder.zip"
    globals_fn = (tpl.get("Globals") or {}).get("Function") or {}
    for holder in [globals_fn] + [r.get("Properties") or {} for r in tpl.get("Resources", {}).values()
                                   if r.get("Type") in ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")]:
        for key in ("CodeUri", "ContentUri"):
            if isinstance(holder.get(key), str) and not holder[key].startswith("s3://"):
                holder[key] = placeholder

    class NoManagedPolicies:  # policies are given as ARNs or inline; the transform asks only for names
        def load(self):
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", params["AWS::Region"])
    return transform(tpl, dict(params), NoManagedPolicies())


class Resolver:
    def __init__(self, tpl: dict, params: dict, param_types: dict, stack: "Deployed"):
        self.tpl = tpl
        self.params = params
        self.param_types = param_types
        self.stack = stack
        self.conditions = tpl.get("Conditions") or {}
        self._cond_cache: dict[str, bool] = {}

    # conditions
    def condition(self, name: str) -> bool:
        if name not in self._cond_cache:
            if name not in self.conditions:
                raise KeyError(f"unknown condition {name}")
            self._cond_cache[name] = bool(self.cond_value(self.conditions[name]))
        return self._cond_cache[name]

    def cond_value(self, node):
        if isinstance(node, dict) and len(node) == 1:
            (key, arg), = node.items()
            if key == "Fn::Equals":
                a, b = (self.resolve(x) for x in arg)
                return str(a) == str(b)
            if key == "Fn::Not":
                return not self.cond_value(arg[0])
            if key == "Fn::And":
                return all(self.cond_value(x) for x in arg)
            if key == "Fn::Or":
                return any(self.cond_value(x) for x in arg)
            if key == "Condition":
                return self.condition(arg)
        value = self.resolve(node)
        return str(value).lower() == "true"

    # values
    def ref(self, name: str):
        if name == "AWS::NoValue":
            return NOVALUE
        if name in self.params:
            value = self.params[name]
            ptype = self.param_types.get(name, "")
            if ptype == "CommaDelimitedList" or ptype.startswith("List<"):
                return [v.strip() for v in str(value).split(",")] if value != "" else []
            return value
        if name.startswith("AWS::"):
            return Unresolvable(f"pseudo parameter {name}")
        return self.stack.ref(name)

    def resolve(self, node):
        if isinstance(node, list):
            out = [self.resolve(v) for v in node]
            return [v for v in out if v is not NOVALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self.function(key, arg)
        out = {k: self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not NOVALUE}

    def function(self, key: str, arg):
        if key == "Fn::GetAtt":
            logical, attr = arg.split(".", 1) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
            return self.stack.getatt(logical, attr)
        if key == "Fn::If":
            name, yes, no = arg
            return self.resolve(yes if self.condition(name) else no)
        if key == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
            blocked: list[Unresolvable] = []

            def sub(m: re.Match) -> str:
                name = m.group(1).strip()
                if name.startswith("!"):
                    return "${" + name[1:] + "}"
                if name in extra:
                    value = extra[name]
                elif "." in name and not name.startswith("AWS::"):
                    value = self.stack.getatt(*name.split(".", 1))
                else:
                    value = self.ref(name)
                if isinstance(value, Unresolvable):
                    blocked.append(value)
                    return ""
                return str(value)

            text = re.sub(r"\$\{([^}]+)\}", sub, text)
            return blocked[0] if blocked else text
        args = self.resolve(arg)
        if isinstance(args, Unresolvable) or (isinstance(args, list) and any(isinstance(a, Unresolvable) for a in args)):
            return args if isinstance(args, Unresolvable) else next(a for a in args if isinstance(a, Unresolvable))
        if key == "Fn::Join":
            sep, items = args
            if isinstance(items, Unresolvable):
                return items
            bad = [i for i in items if isinstance(i, Unresolvable)]
            return bad[0] if bad else sep.join(str(i) for i in items)
        if key == "Fn::Select":
            index, items = args
            # An empty list parameter is [] here; CloudFormation's Ref gives [""], whose first
            # member is "" (the template's Has* conditions select it).
            return items[int(index)] if int(index) < len(items) else ""
        if key == "Fn::Split":
            sep, text = args
            return str(text).split(sep)
        if key == "Fn::FindInMap":
            mapping = (self.tpl.get("Mappings") or {}).get(args[0], {})
            try:
                return mapping[str(args[1])][str(args[2])]
            except KeyError:
                if len(args) > 3 and isinstance(args[3], dict) and "DefaultValue" in args[3]:
                    return args[3]["DefaultValue"]
                raise
        if key == "Fn::Base64":
            import base64

            return base64.b64encode(str(args).encode()).decode()
        if key == "Fn::ToJsonString":
            return json.dumps(args, separators=(",", ":"))
        if key == "Fn::Length":
            return len(args)
        return Unresolvable(f"{key} is not evaluated by the check")


# --- the deployed side -------------------------------------------------------------------------------


class Deployed:
    """The stack's physical resources, and the attributes GetAtt needs, read from the emulator."""

    def __init__(self, session, endpoint: str, stack_name: str, region: str):
        cfg = Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30)
        self._clients: dict = {}
        self._make = lambda name: session.client(name, endpoint_url=endpoint, config=cfg)
        self.stack_name = stack_name
        self.region = region
        cf = self.client("cloudformation")
        self.stack = cf.describe_stacks(StackName=stack_name)["Stacks"][0]
        self.resources = {}
        paginator = cf.get_paginator("list_stack_resources")
        for page in paginator.paginate(StackName=stack_name):
            for r in page["StackResourceSummaries"]:
                self.resources[r["LogicalResourceId"]] = r
        self.account = self.client("sts").get_caller_identity()["Account"]
        self._attr_cache: dict = {}

    def client(self, name: str):
        if name not in self._clients:
            self._clients[name] = self._make(name)
        return self._clients[name]

    def physical(self, logical: str) -> str:
        return self.resources[logical]["PhysicalResourceId"]

    def rtype(self, logical: str) -> str:
        return self.resources[logical]["ResourceType"]

    def ref(self, logical: str):
        if logical not in self.resources:
            return Unresolvable(f"Ref {logical}: not in the stack")
        return self.physical(logical)

    def getatt(self, logical: str, attr: str):
        if logical not in self.resources:
            return Unresolvable(f"GetAtt {logical}.{attr}: not in the stack")
        key = (logical, attr)
        if key not in self._attr_cache:
            try:
                self._attr_cache[key] = self._getatt(self.rtype(logical), self.physical(logical), attr)
            except ClientError as e:
                self._attr_cache[key] = Unresolvable(f"GetAtt {logical}.{attr}: {e}")
        return self._attr_cache[key]

    def _getatt(self, rtype: str, pid: str, attr: str):
        region, account = self.region, self.account
        if rtype == "AWS::SQS::Queue":
            a = self.client("sqs").get_queue_attributes(QueueUrl=pid, AttributeNames=["QueueArn"])["Attributes"]
            return {"Arn": a["QueueArn"], "QueueName": pid.rstrip("/").rsplit("/", 1)[-1], "QueueUrl": pid}.get(attr, Unresolvable(f"{rtype}.{attr}"))
        if rtype == "AWS::DynamoDB::Table":
            t = self.client("dynamodb").describe_table(TableName=pid)["Table"]
            return {"Arn": t["TableArn"], "StreamArn": t.get("LatestStreamArn")}.get(attr, Unresolvable(f"{rtype}.{attr}"))
        if rtype == "AWS::Lambda::Function":
            if attr == "Arn":
                return self.client("lambda").get_function(FunctionName=pid)["Configuration"]["FunctionArn"]
        if rtype == "AWS::IAM::Role":
            role = self.client("iam").get_role(RoleName=pid)["Role"]
            return {"Arn": role["Arn"], "RoleId": role["RoleId"]}.get(attr, Unresolvable(f"{rtype}.{attr}"))
        if rtype == "AWS::Logs::LogGroup" and attr == "Arn":
            for g in self.client("logs").describe_log_groups(logGroupNamePrefix=pid).get("logGroups", []):
                if g["logGroupName"] == pid:
                    return g["arn"]
        if rtype == "AWS::SNS::Topic":
            return {"TopicArn": pid, "TopicName": pid.rsplit(":", 1)[-1]}.get(attr, Unresolvable(f"{rtype}.{attr}"))
        if rtype == "AWS::S3::Bucket":
            return {"Arn": f"arn:aws:s3:::{pid}", "DomainName": f"{pid}.s3.amazonaws.com",
                    "RegionalDomainName": f"{pid}.s3.{region}.amazonaws.com"}.get(attr, Unresolvable(f"{rtype}.{attr}"))
        if rtype == "AWS::ApiGatewayV2::Api":
            api = self.client("apigatewayv2").get_api(ApiId=pid)
            return {"ApiEndpoint": api.get("ApiEndpoint"), "ApiId": api["ApiId"]}.get(attr, Unresolvable(f"{rtype}.{attr}"))
        if rtype == "AWS::SSM::Parameter":
            p = self.client("ssm").get_parameter(Name=pid)["Parameter"]
            return {"Type": p["Type"], "Value": p["Value"]}.get(attr, Unresolvable(f"{rtype}.{attr}"))
        if rtype == "AWS::CloudWatch::Alarm" and attr == "Arn":
            return f"arn:aws:cloudwatch:{region}:{account}:alarm:{pid}"
        return Unresolvable(f"GetAtt {attr} of {rtype} is not read by the check")


# --- observers: what a resource of each type is, in CloudFormation's property names -----------------
# Each returns (actual, expected): `actual` maps property names to deployed values; `expected` is the
# template's properties, converted where CloudFormation's shape differs from the API's. A property of
# `expected` missing from `actual` is UNVERIFIED. NOT_STATE lists properties that are instructions to
# CloudFormation, not state a service can report.

NOT_STATE = {
    ("AWS::ApiGatewayV2::Api", "FailOnWarnings"): "an import option, not stored",
    ("AWS::ApiGatewayV2::Api", "BasePath"): "an import option, not stored",
}


# Maps whose keys are data (tag keys, variable names, route keys), not field names.
_DATA_KEYS = {"tags", "stageVariables", "requestParameters", "requestTemplates", "responseParameters",
              "requestModels", "routeSettings", "Tags", "StageVariables"}


def _pascal(obj, data_keys: bool = False):
    """API camelCase keys -> CloudFormation PascalCase (API Gateway v2, Logs); the keys of data maps
    stay as they are (their values, e.g. one route's settings, are converted)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            name = k if data_keys else k[:1].upper() + k[1:]
            if k in _DATA_KEYS and not data_keys:
                out[name] = {kk: (_pascal(vv) if k == "routeSettings" else vv) for kk, vv in v.items()} if isinstance(v, dict) else v
            else:
                out[name] = _pascal(v)
        return out
    if isinstance(obj, list):
        return [_pascal(v) for v in obj]
    return obj


def _tag_list(mapping: dict) -> list:
    return [{"Key": k, "Value": v} for k, v in (mapping or {}).items()]


def _ignore_missing(fn, *args, codes=(), **kwargs):
    try:
        return fn(*args, **kwargs)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in codes:
            return None
        raise


def observe_sqs_queue(d: Deployed, pid: str, exp: dict):
    sqs = d.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=pid, AttributeNames=["All"])["Attributes"]
    # CloudFormation's queue properties are the queue attributes under the same names.
    actual = dict(attrs)
    actual["QueueName"] = pid.rstrip("/").rsplit("/", 1)[-1]
    actual["Tags"] = _tag_list(sqs.list_queue_tags(QueueUrl=pid).get("Tags"))
    actual.setdefault("FifoQueue", "false")
    return actual, exp


def observe_dynamodb_table(d: Deployed, pid: str, exp: dict):
    ddb = d.client("dynamodb")
    t = ddb.describe_table(TableName=pid)["Table"]
    ttl = ddb.describe_time_to_live(TableName=pid)["TimeToLiveDescription"]
    pitr = ddb.describe_continuous_backups(TableName=pid)["ContinuousBackupsDescription"].get(
        "PointInTimeRecoveryDescription", {})
    sse = t.get("SSEDescription") or {}
    actual = {
        "TableName": t["TableName"],
        "KeySchema": t["KeySchema"],
        "AttributeDefinitions": t["AttributeDefinitions"],
        "BillingMode": (t.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED"),
        "TimeToLiveSpecification": {
            "Enabled": ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"),
            **({"AttributeName": ttl["AttributeName"]} if "AttributeName" in ttl else {}),
        },
        "PointInTimeRecoverySpecification": {
            "PointInTimeRecoveryEnabled": pitr.get("PointInTimeRecoveryStatus") == "ENABLED",
            **({"RecoveryPeriodInDays": pitr["RecoveryPeriodInDays"]} if "RecoveryPeriodInDays" in pitr else {}),
        },
        "SSESpecification": {
            "SSEEnabled": sse.get("Status") in ("ENABLED", "ENABLING", "UPDATING"),
            **({"SSEType": sse["SSEType"]} if "SSEType" in sse else {}),
            **({"KMSMasterKeyId": sse["KMSMasterKeyArn"]} if "KMSMasterKeyArn" in sse else {}),
        },
        "DeletionProtectionEnabled": t.get("DeletionProtectionEnabled", False),
        "TableClass": (t.get("TableClassSummary") or {}).get("TableClass", "STANDARD"),
        "Tags": ddb.list_tags_of_resource(ResourceArn=t["TableArn"]).get("Tags", []),
    }
    if "ProvisionedThroughput" in t and actual["BillingMode"] == "PROVISIONED":
        pt = t["ProvisionedThroughput"]
        actual["ProvisionedThroughput"] = {"ReadCapacityUnits": pt.get("ReadCapacityUnits"),
                                           "WriteCapacityUnits": pt.get("WriteCapacityUnits")}
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        actual[key] = [{k: v for k, v in ix.items() if k in ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")}
                       for ix in t.get(key) or []]
    if t.get("StreamSpecification"):
        actual["StreamSpecification"] = {"StreamViewType": t["StreamSpecification"].get("StreamViewType")}
    if "OnDemandThroughput" in t:
        actual["OnDemandThroughput"] = t["OnDemandThroughput"]
    # "KMS" with the AWS managed key is what SSEEnabled: true means; an expected SSEType is compared as given.
    return actual, exp


def observe_lambda_function(d: Deployed, pid: str, exp: dict):
    lam = d.client("lambda")
    fn = lam.get_function(FunctionName=pid)
    c = fn["Configuration"]
    actual = {k: c[k] for k in ("FunctionName", "Runtime", "Handler", "MemorySize", "Timeout", "Role",
                                "Description", "Architectures", "PackageType", "KMSKeyArn") if k in c}
    if "KMSKeyArn" in actual:
        actual["KmsKeyArn"] = actual.pop("KMSKeyArn")
    actual.setdefault("Description", "")
    actual["Environment"] = {"Variables": (c.get("Environment") or {}).get("Variables") or {}}
    actual["Layers"] = [layer["Arn"] for layer in c.get("Layers") or []]
    if c.get("TracingConfig"):
        actual["TracingConfig"] = c["TracingConfig"]
    if c.get("EphemeralStorage"):
        actual["EphemeralStorage"] = c["EphemeralStorage"]
    if c.get("LoggingConfig"):
        actual["LoggingConfig"] = c["LoggingConfig"]
    if c.get("DeadLetterConfig"):
        actual["DeadLetterConfig"] = c["DeadLetterConfig"]
    if c.get("VpcConfig"):
        actual["VpcConfig"] = {k: v for k, v in c["VpcConfig"].items() if k in ("SubnetIds", "SecurityGroupIds", "Ipv6AllowedForDualStack")}
    if c.get("SnapStart"):
        actual["SnapStart"] = {"ApplyOn": c["SnapStart"].get("ApplyOn")}
    actual["Tags"] = _tag_list(fn.get("Tags"))
    if "ReservedConcurrentExecutions" in exp:
        conc = lam.get_function_concurrency(FunctionName=pid).get("ReservedConcurrentExecutions")
        actual["ReservedConcurrentExecutions"] = conc if conc is not None else MISSING
    actual["RecursiveLoop"] = lam.get_function_recursion_config(FunctionName=pid).get("RecursiveLoop", "Terminate")
    # Code: `sam deploy` uploaded the package and the template names its S3 location; what the
    # function reports is its size, so the check is that a package is there.
    if "Code" in exp:
        size = c.get("CodeSize", 0)
        exp = dict(exp)
        exp["Code"] = "a non-empty package"
        actual["Code"] = "a non-empty package" if size and int(size) > 0 else f"CodeSize {size}"
    return actual, exp


def _function_name(value: str) -> str:
    """A function ARN (possibly qualified) -> its name; a name stays as it is."""
    m = re.match(r"^arn:[^:]+:lambda:[^:]+:[^:]+:function:([^:]+)", str(value))
    return m.group(1) if m else str(value)


def observe_lambda_esm(d: Deployed, pid: str, exp: dict):
    m = d.client("lambda").get_event_source_mapping(UUID=pid)
    actual = {k: m[k] for k in ("BatchSize", "EventSourceArn", "MaximumBatchingWindowInSeconds", "FunctionResponseTypes",
                                "ScalingConfig", "FilterCriteria", "StartingPosition", "ParallelizationFactor",
                                "MaximumRetryAttempts", "BisectBatchOnFunctionError", "MaximumRecordAgeInSeconds",
                                "DestinationConfig", "TumblingWindowInSeconds", "Queues") if k in m}
    actual["Enabled"] = m.get("State") in ("Enabled", "Enabling", "Creating", "Updating")
    actual["FunctionName"] = _function_name(m.get("FunctionArn", ""))
    actual.setdefault("FunctionResponseTypes", [])
    exp = dict(exp)
    if "FunctionName" in exp and isinstance(exp["FunctionName"], str):
        exp["FunctionName"] = _function_name(exp["FunctionName"])
    return actual, exp


def observe_lambda_permission(d: Deployed, pid: str, exp: dict):
    fn = _function_name(exp.get("FunctionName", "")) if isinstance(exp.get("FunctionName"), str) else None
    if not fn:
        return {}, exp
    policy = _ignore_missing(d.client("lambda").get_policy, FunctionName=fn, codes=("ResourceNotFoundException",))
    statements = json.loads(policy["Policy"]).get("Statement", []) if policy else []
    sid = pid.rsplit("/", 1)[-1].rsplit("|", 1)[-1]
    match = [s for s in statements if s.get("Sid") in (pid, sid)]
    if not match and exp.get("SourceArn"):  # some emulators name the statement differently: find it by source
        match = [s for s in statements
                 if (s.get("Condition") or {}).get("ArnLike", {}).get("AWS:SourceArn") == exp["SourceArn"]]
    if not match:
        return {"FunctionName": MISSING}, exp
    s = match[0]
    principal = s.get("Principal")
    if isinstance(principal, dict):
        principal = principal.get("Service") or principal.get("AWS")
    cond = s.get("Condition") or {}
    actual = {
        "FunctionName": _function_name(s.get("Resource", "")),
        "Action": s.get("Action"),
        "Principal": principal,
    }
    if "AWS:SourceArn" in cond.get("ArnLike", {}):
        actual["SourceArn"] = cond["ArnLike"]["AWS:SourceArn"]
    if "AWS:SourceAccount" in cond.get("StringEquals", {}):
        actual["SourceAccount"] = cond["StringEquals"]["AWS:SourceAccount"]
    exp = dict(exp)
    exp["FunctionName"] = fn
    return actual, exp


def _policy_doc(doc):
    if isinstance(doc, str):
        return json.loads(unquote(doc))
    return doc


def observe_iam_role(d: Deployed, pid: str, exp: dict):
    iam = d.client("iam")
    role = iam.get_role(RoleName=pid)["Role"]
    actual = {
        "RoleName": role["RoleName"],
        "Path": role.get("Path", "/"),
        "AssumeRolePolicyDocument": _policy_doc(role.get("AssumeRolePolicyDocument")),
        "Description": role.get("Description", ""),
        "MaxSessionDuration": role.get("MaxSessionDuration", 3600),
        "ManagedPolicyArns": [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=pid).get("AttachedPolicies", [])],
        "Policies": [
            {"PolicyName": name, "PolicyDocument": _policy_doc(iam.get_role_policy(RoleName=pid, PolicyName=name)["PolicyDocument"])}
            for name in iam.list_role_policies(RoleName=pid).get("PolicyNames", [])
        ],
        "Tags": iam.list_role_tags(RoleName=pid).get("Tags", []),
    }
    if role.get("PermissionsBoundary"):
        actual["PermissionsBoundary"] = role["PermissionsBoundary"].get("PermissionsBoundaryArn")
    return actual, exp


def observe_log_group(d: Deployed, pid: str, exp: dict):
    logs = d.client("logs")
    group = next((g for g in logs.describe_log_groups(logGroupNamePrefix=pid).get("logGroups", [])
                  if g["logGroupName"] == pid), None)
    if group is None:
        return {"LogGroupName": MISSING}, exp
    actual = {"LogGroupName": group["logGroupName"]}
    if "retentionInDays" in group:
        actual["RetentionInDays"] = group["retentionInDays"]
    if "kmsKeyId" in group:
        actual["KmsKeyId"] = group["kmsKeyId"]
    actual["LogGroupClass"] = group.get("logGroupClass", "STANDARD")
    tags = _ignore_missing(logs.list_tags_log_group, logGroupName=pid, codes=("ResourceNotFoundException",)) or {}
    actual["Tags"] = _tag_list(tags.get("tags"))
    return actual, exp


def observe_metric_filter(d: Deployed, pid: str, exp: dict):
    logs = d.client("logs")
    group = exp.get("LogGroupName")
    filters = logs.describe_metric_filters(logGroupName=group).get("metricFilters", []) if isinstance(group, str) else []
    f = next((x for x in filters if x.get("filterName") in (pid, exp.get("FilterName"))), None)
    if f is None:
        return {"LogGroupName": MISSING}, exp
    return _pascal({k: v for k, v in f.items() if k != "creationTime"}), exp


def observe_http_api(d: Deployed, pid: str, exp: dict):
    gw = d.client("apigatewayv2")
    api = gw.get_api(ApiId=pid)
    actual = {k: v for k, v in _pascal(api).items() if k not in ("ResponseMetadata", "CreatedDate", "ApiEndpoint", "ApiId")}
    actual.setdefault("Tags", {})
    exp = dict(exp)
    body = exp.get("Body")
    if body is not None:
        # The OpenAPI body is an instruction to import routes and integrations: compare those.
        routes = gw.get_routes(ApiId=pid).get("Items", [])
        integrations = {i["IntegrationId"]: i for i in gw.get_integrations(ApiId=pid).get("Items", [])}
        deployed = {}
        for r in routes:
            integ = integrations.get(str(r.get("Target", "")).split("/")[-1], {})
            deployed[r["RouteKey"]] = {"type": integ.get("IntegrationType"), "uri": integ.get("IntegrationUri"),
                                       "payloadFormatVersion": integ.get("PayloadFormatVersion")}
        wanted = {}
        if isinstance(body, dict):
            for path, item in (body.get("paths") or {}).items():
                for key, op in (item or {}).items():
                    method = "ANY" if key == "x-amazon-apigateway-any-method" else key.upper()
                    if method not in ("ANY", "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH"):
                        continue
                    integ = (op or {}).get("x-amazon-apigateway-integration") or {}
                    wanted[f"{method} {path}"] = {"type": str(integ.get("type", "")).upper(), "uri": integ.get("uri"),
                                                  "payloadFormatVersion": str(integ.get("payloadFormatVersion", "2.0"))}
            title = (body.get("info") or {}).get("title")
            if title and "Name" not in exp:
                exp["Name"] = title
            # OpenAPI tags with x-amazon-apigateway-tag-value become the API's tags on import.
            body_tags = {t["name"]: t["x-amazon-apigateway-tag-value"] for t in body.get("tags") or []
                         if isinstance(t, dict) and "x-amazon-apigateway-tag-value" in t}
            if body_tags:
                exp["Tags"] = {**body_tags, **(exp.get("Tags") or {})}
        exp["Body"] = {"routes": wanted}
        actual["Body"] = {"routes": deployed}
    return actual, exp


def observe_http_stage(d: Deployed, pid: str, exp: dict):
    api_id = exp.get("ApiId")
    stage_name = exp.get("StageName", pid)
    s = d.client("apigatewayv2").get_stage(ApiId=api_id, StageName=stage_name)
    actual = {k: v for k, v in _pascal(s).items() if k not in ("ResponseMetadata", "CreatedDate", "LastUpdatedDate")}
    actual["ApiId"] = api_id
    actual.setdefault("Tags", {})
    return actual, exp


def observe_http_route(d: Deployed, pid: str, exp: dict):
    api_id = exp.get("ApiId")
    r = d.client("apigatewayv2").get_route(ApiId=api_id, RouteId=pid.split("/")[-1])
    actual = {k: v for k, v in _pascal(r).items() if k != "ResponseMetadata"}
    actual["ApiId"] = api_id
    return actual, exp


def observe_http_integration(d: Deployed, pid: str, exp: dict):
    api_id = exp.get("ApiId")
    i = d.client("apigatewayv2").get_integration(ApiId=api_id, IntegrationId=pid.split("/")[-1])
    actual = {k: v for k, v in _pascal(i).items() if k != "ResponseMetadata"}
    actual["ApiId"] = api_id
    return actual, exp


def observe_alarm(d: Deployed, pid: str, exp: dict):
    cw = d.client("cloudwatch")
    alarms = cw.describe_alarms(AlarmNames=[pid]).get("MetricAlarms", [])
    if not alarms:
        return {"AlarmName": MISSING}, exp
    a = alarms[0]
    # CloudFormation's alarm properties are the API's fields under the same names.
    actual = {k: v for k, v in a.items() if not k.startswith(("State", "AlarmArn", "AlarmConfigurationUpdated"))}
    tags = _ignore_missing(cw.list_tags_for_resource, ResourceARN=a["AlarmArn"], codes=("ResourceNotFound",)) or {}
    actual["Tags"] = tags.get("Tags", [])
    return actual, exp


def observe_dashboard(d: Deployed, pid: str, exp: dict):
    dash = d.client("cloudwatch").get_dashboard(DashboardName=pid)
    return {"DashboardName": dash["DashboardName"], "DashboardBody": dash["DashboardBody"]}, exp


def observe_sns_topic(d: Deployed, pid: str, exp: dict):
    sns = d.client("sns")
    attrs = sns.get_topic_attributes(TopicArn=pid)["Attributes"]
    actual = {k: v for k, v in attrs.items() if k in ("DisplayName", "KmsMasterKeyId", "FifoTopic", "ContentBasedDeduplication",
                                                      "SignatureVersion", "TracingConfig", "ArchivePolicy", "DeliveryPolicy")}
    actual.setdefault("DisplayName", "")
    actual["TopicName"] = pid.rsplit(":", 1)[-1]
    actual["Tags"] = sns.list_tags_for_resource(ResourceArn=pid).get("Tags", [])
    actual["Subscription"] = [{"Endpoint": s["Endpoint"], "Protocol": s["Protocol"]}
                              for s in sns.list_subscriptions_by_topic(TopicArn=pid).get("Subscriptions", [])]
    return actual, exp


def observe_sns_subscription(d: Deployed, pid: str, exp: dict):
    sns = d.client("sns")
    if not pid.startswith("arn:"):
        return {"TopicArn": MISSING}, exp
    attrs = dict(sns.get_subscription_attributes(SubscriptionArn=pid)["Attributes"])
    if "TopicArn" not in attrs:  # some emulators leave these out of the attributes: take the listing's
        for page in sns.get_paginator("list_subscriptions").paginate():
            listed = next((s for s in page.get("Subscriptions", []) if s["SubscriptionArn"] == pid), None)
            if listed:
                attrs.update({k: listed[k] for k in ("TopicArn", "Protocol", "Endpoint") if k in listed})
                break
    actual = {k: v for k, v in attrs.items() if k in ("TopicArn", "Protocol", "Endpoint", "FilterPolicy", "FilterPolicyScope",
                                                      "RawMessageDelivery", "RedrivePolicy", "DeliveryPolicy", "SubscriptionRoleArn",
                                                      "ReplayPolicy")}
    return actual, exp


def observe_s3_bucket(d: Deployed, pid: str, exp: dict):
    s3 = d.client("s3")
    s3.head_bucket(Bucket=pid)
    absent = ("NoSuchLifecycleConfiguration", "ServerSideEncryptionConfigurationNotFoundError", "NoSuchTagSet",
              "NoSuchPublicAccessBlockConfiguration", "OwnershipControlsNotFoundError", "NoSuchCORSConfiguration",
              "ObjectLockConfigurationNotFoundError", "NoSuchBucketPolicy")
    actual: dict = {"BucketName": pid}
    exp = dict(exp)
    enc = _ignore_missing(s3.get_bucket_encryption, Bucket=pid, codes=absent)
    if enc:
        actual["BucketEncryption"] = enc["ServerSideEncryptionConfiguration"]
    if "BucketEncryption" in exp:
        exp["BucketEncryption"] = cfn_s3.encryption(exp["BucketEncryption"])
    lc = _ignore_missing(s3.get_bucket_lifecycle_configuration, Bucket=pid, codes=absent)
    actual["LifecycleConfiguration"] = {"Rules": (lc or {}).get("Rules", [])}
    if "LifecycleConfiguration" in exp:
        exp["LifecycleConfiguration"] = cfn_s3.lifecycle(exp["LifecycleConfiguration"])
    pab = _ignore_missing(s3.get_public_access_block, Bucket=pid, codes=absent)
    if pab:
        actual["PublicAccessBlockConfiguration"] = pab["PublicAccessBlockConfiguration"]
    ver = s3.get_bucket_versioning(Bucket=pid)
    actual["VersioningConfiguration"] = {"Status": ver.get("Status", "Suspended")}
    own = _ignore_missing(s3.get_bucket_ownership_controls, Bucket=pid, codes=absent)
    if own:
        actual["OwnershipControls"] = own["OwnershipControls"]
    tagging = _ignore_missing(s3.get_bucket_tagging, Bucket=pid, codes=absent)
    actual["Tags"] = (tagging or {}).get("TagSet", [])
    logging_ = s3.get_bucket_logging(Bucket=pid).get("LoggingEnabled")
    if logging_:
        actual["LoggingConfiguration"] = {"DestinationBucketName": logging_.get("TargetBucket"),
                                          "LogFilePrefix": logging_.get("TargetPrefix")}
    cors = _ignore_missing(s3.get_bucket_cors, Bucket=pid, codes=absent)
    if cors:
        actual["CorsConfiguration"] = {"CorsRules": [
            {("Id" if k == "ID" else "MaxAge" if k == "MaxAgeSeconds" else k): v for k, v in r.items()}
            for r in cors.get("CORSRules", [])]}
    lock = _ignore_missing(s3.get_object_lock_configuration, Bucket=pid, codes=absent)
    if lock:
        actual["ObjectLockEnabled"] = lock["ObjectLockConfiguration"].get("ObjectLockEnabled") == "Enabled"
    return actual, exp


def observe_s3_bucket_policy(d: Deployed, pid: str, exp: dict):
    bucket = exp.get("Bucket")
    if not isinstance(bucket, str):
        return {}, exp
    policy = _ignore_missing(d.client("s3").get_bucket_policy, Bucket=bucket, codes=("NoSuchBucketPolicy",))
    return {"Bucket": bucket, "PolicyDocument": json.loads(policy["Policy"]) if policy else MISSING}, exp


def observe_sqs_queue_policy(d: Deployed, pid: str, exp: dict):
    queues = exp.get("Queues") or []
    docs = []
    for url in queues:
        if isinstance(url, str):
            p = d.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"].get("Policy")
            docs.append(json.loads(p) if p else MISSING)
    if not docs:
        return {}, exp
    # Every queue must carry the policy: report the first that differs.
    differing = next((doc for doc in docs if doc is MISSING or doc != docs[0]), docs[0])
    return {"Queues": queues, "PolicyDocument": differing}, exp


def observe_ssm_parameter(d: Deployed, pid: str, exp: dict):
    ssm = d.client("ssm")
    p = ssm.get_parameter(Name=pid, WithDecryption=True)["Parameter"]
    meta = next(iter(ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [pid]}]).get("Parameters", [])), {})
    actual = {"Name": p["Name"], "Type": p["Type"], "Value": p["Value"], "DataType": p.get("DataType", "text"),
              "Description": meta.get("Description", ""), "Tier": meta.get("Tier", "Standard")}
    if meta.get("AllowedPattern"):
        actual["AllowedPattern"] = meta["AllowedPattern"]
    tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=pid).get("TagList", [])
    actual["Tags"] = {t["Key"]: t["Value"] for t in tags}
    return actual, exp


def observe_kms_key(d: Deployed, pid: str, exp: dict):
    kms = d.client("kms")
    meta = kms.describe_key(KeyId=pid)["KeyMetadata"]
    actual = {"Description": meta.get("Description", ""), "Enabled": meta.get("Enabled"),
              "KeyUsage": meta.get("KeyUsage"), "KeySpec": meta.get("KeySpec") or meta.get("CustomerMasterKeySpec"),
              "MultiRegion": meta.get("MultiRegion", False), "Origin": meta.get("Origin")}
    actual["EnableKeyRotation"] = kms.get_key_rotation_status(KeyId=pid).get("KeyRotationEnabled", False)
    actual["KeyPolicy"] = json.loads(kms.get_key_policy(KeyId=pid, PolicyName="default")["Policy"])
    actual["Tags"] = [{"Key": t["TagKey"], "Value": t["TagValue"]} for t in kms.list_resource_tags(KeyId=pid).get("Tags", [])]
    return actual, exp


def observe_kms_alias(d: Deployed, pid: str, exp: dict):
    alias = next((a for a in d.client("kms").list_aliases().get("Aliases", []) if a["AliasName"] == pid), None)
    if alias is None:
        return {"AliasName": MISSING}, exp
    exp = dict(exp)
    target = exp.get("TargetKeyId")
    if isinstance(target, str) and target.startswith("arn:"):
        exp["TargetKeyId"] = target.rsplit("/", 1)[-1]  # an alias names its key by id
    return {"AliasName": alias["AliasName"], "TargetKeyId": alias.get("TargetKeyId")}, exp


def observe_events_rule(d: Deployed, pid: str, exp: dict):
    ev = d.client("events")
    name = pid.split("|")[-1].rsplit("/", 1)[-1]
    bus = exp.get("EventBusName") if isinstance(exp.get("EventBusName"), str) else None
    rule = ev.describe_rule(Name=name, **({"EventBusName": bus} if bus else {}))
    actual = {k: rule[k] for k in ("Name", "Description", "ScheduleExpression", "EventPattern", "State",
                                   "RoleArn", "EventBusName") if k in rule}
    targets = ev.list_targets_by_rule(Rule=name, **({"EventBusName": bus} if bus else {})).get("Targets", [])
    actual["Targets"] = [{k: v for k, v in t.items() if k in ("Id", "Arn", "Input", "InputPath", "RoleArn",
                                                               "SqsParameters", "DeadLetterConfig", "RetryPolicy")}
                         for t in targets]
    return actual, exp


def observe_managed_policy(d: Deployed, pid: str, exp: dict):
    iam = d.client("iam")
    pol = iam.get_policy(PolicyArn=pid)["Policy"]
    doc = iam.get_policy_version(PolicyArn=pid, VersionId=pol["DefaultVersionId"])["PolicyVersion"]["Document"]
    ents = iam.list_entities_for_policy(PolicyArn=pid)
    actual = {"ManagedPolicyName": pol["PolicyName"], "Path": pol.get("Path", "/"), "Description": pol.get("Description", ""),
              "PolicyDocument": _policy_doc(doc), "Roles": [r["RoleName"] for r in ents.get("PolicyRoles", [])],
              "Users": [u["UserName"] for u in ents.get("PolicyUsers", [])],
              "Groups": [g["GroupName"] for g in ents.get("PolicyGroups", [])]}
    return actual, exp


def observe_inline_policy(d: Deployed, pid: str, exp: dict):
    iam = d.client("iam")
    name = exp.get("PolicyName")
    actual: dict = {"PolicyName": name}
    docs = [_policy_doc(iam.get_role_policy(RoleName=r, PolicyName=name)["PolicyDocument"])
            for r in exp.get("Roles") or [] if isinstance(r, str)]
    if docs:
        actual["Roles"] = exp.get("Roles")
        actual["PolicyDocument"] = next((doc for doc in docs if doc != docs[0]), docs[0])
    return actual, exp


OBSERVERS = {
    "AWS::KMS::Key": observe_kms_key,
    "AWS::KMS::Alias": observe_kms_alias,
    "AWS::Events::Rule": observe_events_rule,
    "AWS::IAM::ManagedPolicy": observe_managed_policy,
    "AWS::IAM::Policy": observe_inline_policy,
    "AWS::SQS::Queue": observe_sqs_queue,
    "AWS::SQS::QueuePolicy": observe_sqs_queue_policy,
    "AWS::DynamoDB::Table": observe_dynamodb_table,
    "AWS::Lambda::Function": observe_lambda_function,
    "AWS::Lambda::EventSourceMapping": observe_lambda_esm,
    "AWS::Lambda::Permission": observe_lambda_permission,
    "AWS::IAM::Role": observe_iam_role,
    "AWS::Logs::LogGroup": observe_log_group,
    "AWS::Logs::MetricFilter": observe_metric_filter,
    "AWS::ApiGatewayV2::Api": observe_http_api,
    "AWS::ApiGatewayV2::Stage": observe_http_stage,
    "AWS::ApiGatewayV2::Route": observe_http_route,
    "AWS::ApiGatewayV2::Integration": observe_http_integration,
    "AWS::CloudWatch::Alarm": observe_alarm,
    "AWS::CloudWatch::Dashboard": observe_dashboard,
    "AWS::SNS::Topic": observe_sns_topic,
    "AWS::SNS::Subscription": observe_sns_subscription,
    "AWS::S3::Bucket": observe_s3_bucket,
    "AWS::S3::BucketPolicy": observe_s3_bucket_policy,
    "AWS::SSM::Parameter": observe_ssm_parameter,
}

# Paths (below a resource) where the deployed dict must not hold more keys than the template.
EXACT_DICTS = {("AWS::Lambda::Function", "Environment.Variables")}

# Types read through JSON APIs whose numbers and booleans are typed: there a deployed string "5" or
# "true" is a fault of the emulator or the provisioner (a client expecting an int breaks), although
# the template's side may well be a string (parameters are strings). Not under data maps.
TYPED = {"AWS::Lambda::Function", "AWS::Lambda::EventSourceMapping", "AWS::DynamoDB::Table",
         "AWS::ApiGatewayV2::Stage", "AWS::ApiGatewayV2::Route", "AWS::ApiGatewayV2::Integration",
         "AWS::CloudWatch::Alarm", "AWS::Logs::LogGroup"}
UNTYPED_PATHS = ("Environment", "Tags", "StageVariables", "Dimensions", "Body", "RequestParameters",
                 "Metrics", "FilterCriteria")


# --- comparison --------------------------------------------------------------------------------------


# --- least privilege -------------------------------------------------------------------------------

# Data-plane services whose permissions must name their resources: a statement that allows any of
# their actions on Resource "*" reaches other applications' queues, tables, buckets and keys.
SCOPED_SERVICES = ("sqs:", "dynamodb:", "s3:", "kms:", "sns:", "events:")
# AWS managed policies that grant such actions on "*" (their documents are AWS's and an emulator may
# not hold them), and those known to grant none (logs, X-Ray, VPC network interfaces).
AWS_MANAGED_WIDE = {"AWSLambdaSQSQueueExecutionRole", "AWSLambdaDynamoDBExecutionRole", "AmazonSQSFullAccess",
                    "AmazonSQSReadOnlyAccess", "AmazonDynamoDBFullAccess", "AmazonDynamoDBReadOnlyAccess",
                    "AmazonS3FullAccess", "AmazonS3ReadOnlyAccess", "AWSKeyManagementServicePowerUser",
                    "AmazonSNSFullAccess", "AmazonEventBridgeFullAccess",
                    "AWSLambdaExecute", "PowerUserAccess", "AdministratorAccess"}
AWS_MANAGED_NARROW = {"AWSLambdaBasicExecutionRole", "AWSXRayDaemonWriteAccess", "AWSXrayWriteOnlyAccess", "AWSLambdaVPCAccessExecutionRole",
                      "AWSLambdaENIManagementAccess"}


def _as_list(v) -> list:
    return v if isinstance(v, list) else [] if v is None else [v]


# A resource that names every resource of its kind: "*", or an ARN whose resource part is a wildcard
# (every queue, table, bucket or key of an account or region).
WIDE_ARN = re.compile(
    r"^arn:[^:]+:(sqs|dynamodb|kms|sns|events):[^:]*:[^:]*:(\*|table/\*|key/\*|alias/\*)$"
    r"|^arn:[^:]+:events:[^:]*:[^:]*:event-bus/\*$|^arn:[^:]+:s3:::\*"
)


def wide_statements(doc) -> list[str]:
    """Allow statements of a policy document that grant an SQS, SNS, EventBridge, DynamoDB, S3 or KMS action (or "*",
    or everything but some actions: NotAction) on every resource ("*" or a wildcard ARN, or
    NotResource)."""
    out = []
    for i, st in enumerate(_as_list((doc or {}).get("Statement"))):
        if st.get("Effect") != "Allow":
            continue
        if "NotAction" in st:
            scoped = [f"NotAction {', '.join(map(str, _as_list(st['NotAction'])))}"]
        else:
            actions = [a for a in _as_list(st.get("Action")) if isinstance(a, str)]
            scoped = [a for a in actions if a == "*" or a.lower().startswith(SCOPED_SERVICES)]
        resources = [r for r in _as_list(st.get("Resource")) if isinstance(r, str)]
        wide = [r for r in resources if r == "*" or WIDE_ARN.match(r)]
        if "NotResource" in st:
            wide.append(f"NotResource {st['NotResource']}")
        if scoped and wide:
            out.append(f"statement {st.get('Sid') or i}: {', '.join(scoped)} on Resource \"{wide[0]}\"")
    return out


def least_privilege_issues(d: "Deployed", role: str) -> list[Issue]:
    iam = d.client("iam")
    issues = []
    for name in iam.list_role_policies(RoleName=role).get("PolicyNames", []):
        doc = _policy_doc(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
        issues += [Issue("mismatch", f"Policies.{name}", w) for w in wide_statements(doc)]
    for p in iam.list_attached_role_policies(RoleName=role).get("AttachedPolicies", []):
        arn, name = p["PolicyArn"], p["PolicyArn"].rsplit("/", 1)[-1]
        if ":aws:policy/" in arn and name in AWS_MANAGED_WIDE:
            issues.append(Issue("mismatch", f"ManagedPolicyArns.{name}", "an AWS managed policy that grants "
                                "SQS/SNS/EventBridge/DynamoDB/S3/KMS actions on Resource \"*\""))
            continue
        if ":aws:policy/" in arn and name in AWS_MANAGED_NARROW:
            continue
        try:
            version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
            doc = _policy_doc(iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"])
        except ClientError as e:
            issues.append(Issue("unverified", f"ManagedPolicyArns.{name}", f"cannot read the policy: {e}"))
            continue
        issues += [Issue("mismatch", f"ManagedPolicyArns.{name}", w) for w in wide_statements(doc)]
    return issues


def _as_bool(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return None


def _as_num(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _as_json(v):
    if isinstance(v, str) and v.strip()[:1] in ("{", "["):
        try:
            return json.loads(v)
        except ValueError:
            return None
    return None


def scalar_equal(e, a) -> bool:
    if e == a:
        return True
    be, ba = _as_bool(e), _as_bool(a)
    if be is not None and ba is not None:
        return be == ba
    ne, na = _as_num(e), _as_num(a)
    if ne is not None and na is not None:
        return ne == na
    return str(e) == str(a)


def compare(exp, act, path: str, rtype: str) -> list[Issue]:
    if isinstance(exp, Unresolvable):
        return [Issue("unverified", path, f"template value not computable ({exp.reason})")]
    if act is MISSING:
        return [Issue("mismatch", path, f"expected {fmt(exp)}, not set in the deployed resource")]
    if isinstance(exp, (dict, list)) and isinstance(act, str) and _as_json(act) is not None:
        act = _as_json(act)
    if isinstance(act, (dict, list)) and isinstance(exp, str) and _as_json(exp) is not None:
        exp = _as_json(exp)
    if isinstance(exp, str) and isinstance(act, str) and _as_json(exp) is not None and _as_json(act) is not None:
        exp, act = _as_json(exp), _as_json(act)
    leaf = path.rsplit(".", 1)[-1]
    if isinstance(exp, dict):
        if not isinstance(act, dict):
            return [Issue("mismatch", path, f"expected {fmt(exp)}, deployed {fmt(act)}")]
        issues = []
        for k, v in exp.items():
            issues += compare(v, act.get(k, MISSING), f"{path}.{k}" if path else k, rtype)
        if (rtype, path) in EXACT_DICTS:
            extra = sorted(set(act) - set(exp))
            if extra:
                issues.append(Issue("mismatch", path, f"deployed has keys the template does not declare: {extra}"))
        return issues
    if isinstance(exp, list):
        if not isinstance(act, list):
            if len(exp) == 1:  # IAM and friends accept "x" for ["x"]
                return compare(exp[0], act, path, rtype)
            return [Issue("mismatch", path, f"expected {fmt(exp)}, deployed {fmt(act)}")]
        subset = leaf == "Tags"
        if not subset and len(exp) != len(act):
            return [Issue("mismatch", path, f"expected {len(exp)} items {fmt(exp)}, deployed {len(act)} {fmt(act)}")]
        ordered = [] if subset else [i for n, (e, a) in enumerate(zip(exp, act)) for i in compare(e, a, f"{path}[{n}]", rtype)]
        if not subset and not ordered:
            return []
        # In any order: each expected item needs a deployed item that matches it exactly.
        free = list(range(len(act)))
        issues = []
        for n, e in enumerate(exp):
            hit = next((j for j in free if not [i for i in compare(e, act[j], "", rtype) if i.kind == "mismatch"]), None)
            if hit is None:
                issues.append(Issue("mismatch", f"{path}[{n}]", f"expected {fmt(e)}, no deployed item matches (deployed: {fmt(act)})"))
            else:
                issues += [Issue(i.kind, f"{path}[{n}]{i.path}", i.msg) for i in compare(e, act[hit], "", rtype)]
                free.remove(hit)
        return issues
    if isinstance(act, list) and len(act) == 1 and not isinstance(act[0], (dict, list)):
        act = act[0]
    if isinstance(act, (dict, list)) or not scalar_equal(exp, act):
        return [Issue("mismatch", path, f"expected {fmt(exp)}, deployed {fmt(act)}")]
    if (rtype in TYPED and isinstance(act, str) and not path.startswith(UNTYPED_PATHS)
            and (_as_num(act) is not None or _as_bool(act) is not None)):
        return [Issue("mismatch", path, f"deployed as the string {act!r}; the API's type is a number or boolean")]
    return []


# --- main --------------------------------------------------------------------------------------------


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        # sam's syntax: Key=Value pairs, or ParameterKey=K,ParameterValue=V
        m = re.fullmatch(r"ParameterKey=([^,]+),ParameterValue=(.*)", item)
        key, sep, value = (m.group(1), "=", m.group(2)) if m else item.partition("=")
        if not sep:
            raise SystemExit(f"check_deploy: bad parameter override {item!r} (want Key=Value)")
        out[key] = value
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True, help="the emulator's endpoint (AWS_ENDPOINT_URL)")
    p.add_argument("--stack-name", required=True)
    p.add_argument("--template", default=str(ROOT / "template.yaml"), help="the source template (before sam build)")
    p.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "eu-central-1")
    p.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="the overrides given to sam deploy (the stack's parameters must equal defaults + these)")
    p.add_argument("--allow-unverified", action="append", default=[], metavar="TYPE[.Property]",
                   help="do not fail on what cannot be verified for this resource type (or property)")
    p.add_argument("--quiet", action="store_true", help="print only problems and the summary")
    p.add_argument("--verbose", action="store_true", help="name the properties compared for each resource")
    args = p.parse_args()

    session = boto3.session.Session(region_name=args.region,
                                    aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
                                    aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"))
    try:
        deployed = Deployed(session, args.endpoint, args.stack_name, args.region)
    except Exception as e:  # noqa: BLE001 - one clear line for any connection or lookup failure
        print(f"check_deploy: cannot read stack {args.stack_name} at {args.endpoint}: {e}", file=sys.stderr)
        return 3

    source = load_template(Path(args.template))
    param_defs = source.get("Parameters") or {}
    overrides = parse_overrides(args.parameter_overrides)
    unknown = sorted(set(overrides) - set(param_defs))
    if unknown:
        print(f"check_deploy: overrides for parameters the template does not have: {unknown}", file=sys.stderr)
        return 3
    params = {k: str(overrides.get(k, v.get("Default", ""))) for k, v in param_defs.items()}
    pseudo = {"AWS::Region": args.region, "AWS::AccountId": deployed.account, "AWS::StackName": args.stack_name,
              "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com",
              "AWS::StackId": deployed.stack["StackId"]}
    cfn = translate(source, {**params, **pseudo})
    resolver = Resolver(cfn, {**params, **pseudo}, {k: v.get("Type", "String") for k, v in param_defs.items()}, deployed)

    mismatches = unverified = ok = 0
    lines: list[str] = []
    allowed = set(args.allow_unverified)

    def report(status: str, rtype: str, logical: str, detail: str, issues: list[Issue] = ()):
        nonlocal mismatches, unverified, ok
        if status == "FAIL":
            mismatches += 1
        elif status == "UNVERIFIED":
            unverified += 1
        else:
            ok += 1
        if args.quiet and status == "ok":
            return
        lines.append(f"  {status:<10} {rtype:<34} {logical:<40} {detail}")
        for i in issues:
            lines.append(f"  {'':<10} {'':<34} {'':<40}   {i.kind}: {i}")

    # the stack itself
    status = deployed.stack.get("StackStatus")
    stack_issues = []
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        stack_issues.append(Issue("mismatch", "StackStatus", f"{status}"))
    have_params = {x["ParameterKey"]: x.get("ParameterValue") for x in deployed.stack.get("Parameters", [])}
    for k, v in params.items():
        if param_defs[k].get("NoEcho") in (True, "true"):
            continue
        if k not in have_params or not scalar_equal(v, have_params[k]):
            stack_issues.append(Issue("mismatch", f"Parameters.{k}", f"expected {fmt(v)}, deployed {fmt(have_params.get(k, '(absent)'))}"))
    report("FAIL" if stack_issues else "ok", "AWS::CloudFormation::Stack", args.stack_name,
           f"{status}, {len(params)} parameters", stack_issues)

    # resources
    expected = {}
    for logical, res in (cfn.get("Resources") or {}).items():
        cond = res.get("Condition")
        if cond and not resolver.condition(cond):
            continue
        expected[logical] = res
    for logical in sorted(set(deployed.resources) - set(expected)):
        r = deployed.resources[logical]
        report("FAIL", r["ResourceType"], logical, "in the stack but not in the template (after conditions)")
    order = sorted(expected, key=lambda k: (expected[k]["Type"], k))
    for logical in order:
        rtype = expected[logical]["Type"]
        r = deployed.resources.get(logical)
        if r is None:
            report("FAIL", rtype, logical, "missing from the stack")
            continue
        if r["ResourceType"] != rtype:
            report("FAIL", rtype, logical, f"deployed as {r['ResourceType']}")
            continue
        if not r.get("ResourceStatus", "").endswith("_COMPLETE") or "DELETE" in r.get("ResourceStatus", ""):
            report("FAIL", rtype, logical, f"status {r.get('ResourceStatus')}")
            continue
        observer = OBSERVERS.get(rtype)
        if observer is None:
            status_ = "UNVERIFIED" if rtype not in allowed else "allowed"
            report(status_ if status_ == "UNVERIFIED" else "ok", rtype, logical,
                   f"exists ({r['ResourceStatus']}); no observer for this type: properties NOT verified")
            continue
        props = resolver.resolve(expected[logical].get("Properties") or {})
        try:
            actual, exp = observer(deployed, r["PhysicalResourceId"], props)
        except ClientError as e:
            report("FAIL", rtype, logical, f"cannot be read from the emulator: {e}")
            continue
        issues: list[Issue] = []
        notes = []
        for key, value in exp.items():
            if (rtype, key) in NOT_STATE:
                notes.append(f"{key}: {NOT_STATE[(rtype, key)]}")
                continue
            if key not in actual:
                issues.append(Issue("unverified", key, "the check cannot read this property from the emulator"))
                continue
            issues += compare(value, actual[key], key, rtype)
        for i in issues:
            if i.kind == "unverified" and (rtype in allowed or f"{rtype}.{i.path.split('.')[0].split('[')[0]}" in allowed):
                i.kind = "allowed"
        kinds = {i.kind for i in issues}
        verdict = "FAIL" if "mismatch" in kinds else "UNVERIFIED" if "unverified" in kinds else "ok"
        compared = [k for k in exp if (rtype, k) not in NOT_STATE]
        detail = f"{len(compared)} properties" + (f": {', '.join(compared)}" if args.verbose else "")
        if notes:
            detail += f" (not state: {'; '.join(notes)})"
        report(verdict, rtype, logical, detail, [i for i in issues if i.kind != "ok"])

    # least privilege: no role of the stack may reach SQS, SNS, EventBridge, DynamoDB, S3 or KMS resources beyond its own
    for logical in sorted(k for k, r in deployed.resources.items() if r["ResourceType"] == "AWS::IAM::Role"):
        try:
            issues = least_privilege_issues(deployed, deployed.physical(logical))
        except ClientError as e:
            issues = [Issue("unverified", "Policies", f"cannot be read from the emulator: {e}")]
        kinds = {i.kind for i in issues}
        report("FAIL" if "mismatch" in kinds else "UNVERIFIED" if "unverified" in kinds else "ok",
               "least privilege", logical, "no SQS/SNS/EventBridge/DynamoDB/S3/KMS action on Resource \"*\"", issues)

    # outputs
    have_outputs = {o["OutputKey"]: o.get("OutputValue") for o in deployed.stack.get("Outputs", [])}
    out_issues = []
    n_outputs = 0
    for key, out in (cfn.get("Outputs") or {}).items():
        if out.get("Condition") and not resolver.condition(out["Condition"]):
            continue
        n_outputs += 1
        value = resolver.resolve(out.get("Value"))
        out_issues += compare(value, have_outputs.get(key, MISSING), f"Outputs.{key}", "Outputs")
    kinds = {i.kind for i in out_issues}
    report("FAIL" if "mismatch" in kinds else "UNVERIFIED" if "unverified" in kinds else "ok",
           "Outputs", args.stack_name, f"{n_outputs} outputs", out_issues)

    print(f"check_deploy: stack {args.stack_name} at {args.endpoint} against {Path(args.template).name} "
          f"(SAM transform, {len(params)} parameters, {len(overrides)} overridden): {len(expected)} resources")
    print("\n".join(lines))
    types = sorted({expected[k]["Type"] for k in expected} - set(OBSERVERS))
    print(f"check_deploy: {ok} ok, {mismatches} FAILED, {unverified} UNVERIFIED"
          + (f" (types without an observer: {', '.join(types)})" if types else ""))
    if mismatches:
        return 1
    if unverified:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
