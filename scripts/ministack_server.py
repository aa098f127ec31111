#!/usr/bin/env python3
"""ministack 1.5.33 with the fixes `sam deploy` of template.yaml needs (scripts/deploy-local.sh).

ministack emulates CloudFormation with the SAM transform, so the real `sam deploy` runs against it; but
1.5.33 stores some resources differently from what AWS would create from the same template. Each fix
below wraps one of its CloudFormation provisioners (create and update), so the deployed state is what
AWS would hold and scripts/check_deploy.py can compare it with the template:

  1. AWS::ApiGatewayV2::Api: the OpenAPI `Body` SAM generates for an AWS::Serverless::HttpApi is
     ignored, so the API has no routes or integrations. Fixed: the Body's paths are imported as AWS
     ImportApi does (one AWS_PROXY integration and one route per path and method; `ANY` for
     x-amazon-apigateway-any-method; the API's name from info.title, its tags from the OpenAPI tags
     with x-amazon-apigateway-tag-value).
  2. AWS::ApiGatewayV2::Stage: DefaultRouteSettings / RouteSettings are stored with the template's
     casing and as strings. Fixed: the API's shape (throttlingBurstLimit int, throttlingRateLimit
     float, detailedMetricsEnabled bool, ...).
  3. AWS::Lambda::EventSourceMapping: ScalingConfig.MaximumConcurrency is stored as a string (its SQS
     poller then fails every second). Fixed: an int, like the other numeric properties.
  4. AWS::DynamoDB::Table: TimeToLiveSpecification, SSESpecification and
     PointInTimeRecoverySpecification are ignored and DeletionProtectionEnabled is stored as the
     string a parameter gives. Fixed: applied through ministack's own UpdateTimeToLive,
     UpdateContinuousBackups and SSE description; the flag a bool.
  5. AWS::Lambda::Function: RecursiveLoop and VpcConfig are ignored. Fixed: stored through
     PutFunctionRecursionConfig and UpdateFunctionConfiguration (scripts/deploy-local.sh --vpc).
  6. AWS::S3::Bucket: BucketEncryption, LifecycleConfiguration and Tags are ignored (the bucket reads
     back AES256, no lifecycle, no tags). Fixed: stored through ministack's own PutBucketEncryption,
     PutBucketLifecycleConfiguration and PutBucketTagging (bodies from scripts/cfn_s3.py).
  7. AWS::CloudWatch::Alarm: an alarm on a metric-math or Metrics Insights query (`Metrics`, which
     AWS has supported since 2022 and template.yaml's lag and paused alarms use) is refused. Fixed:
     stored as PutMetricAlarm stores it (Metrics, no MetricName/Namespace/Statistic/Period); the
     emulator never evaluates it, as it never evaluates a query.

Known and not fixed here (reported by the check or documented in docs/deploy.md): IAM is stored, not
enforced; a deploy without CAPABILITY_IAM is not refused; DeleteStack ignores deletion protection;
Architectures is ignored when ministack runs a function (arm64 bootstraps cannot run on this host).

Run with the ministack venv, like `ministack` itself (GATEWAY_PORT, BIND_HOST, MINISTACK_HOST,
MINISTACK_REGION from the environment):
  GATEWAY_PORT=4566 BIND_HOST=127.0.0.1 MINISTACK_HOST=127.0.0.1 .venv-ministack/bin/python scripts/ministack_server.py
"""
from __future__ import annotations

import functools
import json
import logging
import sys
from importlib.metadata import version
from pathlib import Path

TESTED_VERSION = "1.5.33"

log = logging.getLogger("ministack_server")


def _bool(value):
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _num(value, kind):
    try:
        return kind(value)
    except (TypeError, ValueError):
        return value  # leave it for the check to report


# --- 1. HTTP API: import the OpenAPI Body -------------------------------------------------------

# api id -> (route ids, integration ids) created from its Body, replaced on the next import.
_IMPORTED: dict[str, tuple[list[str], list[str]]] = {}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _import_body(api_id: str, body) -> None:
    from ministack.services import apigateway as apigw
    from ministack.services.cloudformation.provisioners import new_uuid

    if isinstance(body, str):
        body = json.loads(body)
    if not isinstance(body, dict):
        return
    title = (body.get("info") or {}).get("title")
    api = apigw._apis.get(api_id)
    if api is not None and title:
        api["name"] = title
    # OpenAPI tags carrying x-amazon-apigateway-tag-value are the API's tags (SAM: httpapi:createdBy).
    body_tags = {t["name"]: str(t["x-amazon-apigateway-tag-value"]) for t in body.get("tags") or []
                 if isinstance(t, dict) and "x-amazon-apigateway-tag-value" in t}
    if api is not None and body_tags:
        api.setdefault("tags", {}).update(body_tags)
    routes = apigw._routes.setdefault(api_id, {})
    integrations = apigw._integrations.setdefault(api_id, {})
    # A re-import (stack update) replaces what an earlier import created, as ReimportApi does.
    old_routes, old_integrations = _IMPORTED.pop(api_id, ((), ()))
    for rid in old_routes:
        routes.pop(rid, None)
    for iid in old_integrations:
        integrations.pop(iid, None)
    made = _IMPORTED[api_id] = ([], [])
    for path, item in (body.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        for key, op in item.items():
            if key == "x-amazon-apigateway-any-method":
                method = "ANY"
            elif key.lower() in _METHODS:
                method = key.upper()
            else:
                continue
            integ = (op or {}).get("x-amazon-apigateway-integration") or {}
            int_id = new_uuid()[:8]
            integrations[int_id] = {
                "integrationId": int_id,
                "integrationType": str(integ.get("type", "aws_proxy")).upper(),
                "integrationUri": integ.get("uri", ""),
                "integrationMethod": integ.get("httpMethod", "POST"),
                "payloadFormatVersion": str(integ.get("payloadFormatVersion", "2.0")),
                "timeoutInMillis": int(integ.get("timeoutInMillis", 30000)),
                "connectionType": integ.get("connectionType", "INTERNET"),
                "connectionId": "",
                "description": "",
                "requestParameters": integ.get("requestParameters", {}),
                "requestTemplates": {},
                "responseParameters": {},
                "contentHandlingStrategy": None,
            }
            made[1].append(int_id)
            route_id = new_uuid()[:8]
            routes[route_id] = {
                "routeId": route_id,
                "routeKey": f"{method} {path}",
                "target": f"integrations/{int_id}",
                "authorizationType": "NONE",
                "authorizerId": None,
                "authorizationScopes": [],
                "apiKeyRequired": False,
                "operationName": (op or {}).get("operationId", ""),
                "requestModels": {},
                "requestParameters": {},
                "modelSelectionExpression": None,
                "routeResponseSelectionExpression": None,
            }
            made[0].append(route_id)


def _api_fix(result, props):
    physical_id = result[0]
    if props.get("Body") is not None:
        _import_body(physical_id, props["Body"])
    return result


# --- 2. Stage route settings --------------------------------------------------------------------

_ROUTE_SETTING_TYPES = {
    "ThrottlingBurstLimit": ("throttlingBurstLimit", int),
    "ThrottlingRateLimit": ("throttlingRateLimit", float),
    "DetailedMetricsEnabled": ("detailedMetricsEnabled", _bool),
    "DataTraceEnabled": ("dataTraceEnabled", _bool),
    "LoggingLevel": ("loggingLevel", str),
}


def _route_settings(settings) -> dict:
    out = {}
    for key, value in (settings or {}).items():
        name, kind = _ROUTE_SETTING_TYPES.get(key, (key[:1].lower() + key[1:], lambda v: v))
        out[name] = kind(value) if kind in (_bool, str) else _num(value, kind)
    return out


def _stage_fix(result, props):
    from ministack.services import apigateway as apigw

    api_id = props.get("ApiId", "")
    stage = apigw._stages.get(api_id, {}).get(props.get("StageName", "$default"))
    if stage is not None:
        stage["defaultRouteSettings"] = _route_settings(props.get("DefaultRouteSettings"))
        stage["routeSettings"] = {k: _route_settings(v) for k, v in (props.get("RouteSettings") or {}).items()}
        if "AutoDeploy" in props:
            stage["autoDeploy"] = _bool(props["AutoDeploy"])
    return result


# --- 3. Event source mapping numbers -------------------------------------------------------------


def _esm_fix(result, props):
    from ministack.services import lambda_svc

    esm = lambda_svc._esms.get(result[0])
    if esm is not None:
        scaling = esm.get("ScalingConfig")
        if isinstance(scaling, dict) and "MaximumConcurrency" in scaling:
            scaling["MaximumConcurrency"] = _num(scaling["MaximumConcurrency"], int)
        for key in ("BatchSize", "MaximumBatchingWindowInSeconds", "MaximumRetryAttempts",
                    "MaximumRecordAgeInSeconds", "ParallelizationFactor"):
            if key in esm and esm[key] is not None:
                esm[key] = _num(esm[key], int)
        if "Enabled" in esm:
            esm["Enabled"] = _bool(esm["Enabled"])
            esm["State"] = "Enabled" if esm["Enabled"] else "Disabled"
    return result


# --- 4. DynamoDB table settings -------------------------------------------------------------------


def _table_fix(result, props):
    from ministack.services import dynamodb

    name = result[0]
    table = dynamodb._tables.get(name)
    if table is None:
        return result
    if "DeletionProtectionEnabled" in props:
        table["DeletionProtectionEnabled"] = _bool(props["DeletionProtectionEnabled"])
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        status, _, body = dynamodb._update_ttl({
            "TableName": name,
            "TimeToLiveSpecification": {"AttributeName": ttl.get("AttributeName", ""),
                                        "Enabled": _bool(ttl.get("Enabled", False))},
        })
        if status >= 400:
            raise ValueError(f"AWS::DynamoDB::Table {name}: TimeToLiveSpecification: {body!r}")
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr is not None:
        dynamodb._update_continuous_backups({
            "TableName": name,
            "PointInTimeRecoverySpecification": {
                "PointInTimeRecoveryEnabled": _bool(pitr.get("PointInTimeRecoveryEnabled", False))},
        })
    sse = props.get("SSESpecification")
    if sse is not None:
        # CloudFormation's SSEEnabled is the API's Enabled; disabled = the AWS owned key, no description.
        enabled = _bool(sse.get("SSEEnabled", False))
        table["SSEDescription"] = dynamodb._sse_description_from_spec(
            {"Enabled": True, **{k: v for k, v in sse.items() if k in ("SSEType", "KMSMasterKeyId")}}
        ) if enabled else None
    return result


# --- 6. S3 bucket encryption, lifecycle and tags -----------------------------------------------------


def _bucket_fix(result, props):
    from ministack.services import s3

    import cfn_s3

    name = result[0]
    for prop, put, body in (
        ("BucketEncryption", s3._put_bucket_encryption, cfn_s3.encryption_xml),
        ("LifecycleConfiguration", s3._put_bucket_lifecycle, cfn_s3.lifecycle_xml),
        ("Tags", s3._put_bucket_tagging, cfn_s3.tagging_xml),
    ):
        if props.get(prop):
            status, _, answer = put(name, body(props[prop]))
            if status >= 300:
                raise ValueError(f"AWS::S3::Bucket {name}: {prop}: {answer!r}")
    return result


# --- 5. Lambda RecursiveLoop and VpcConfig ------------------------------------------------------------


def _function_fix(result, props):
    from ministack.services import lambda_svc

    if props.get("RecursiveLoop"):
        status, _, body = lambda_svc._put_function_recursion_config(result[0], {"RecursiveLoop": props["RecursiveLoop"]})
        if status >= 400:
            raise ValueError(f"AWS::Lambda::Function {result[0]}: RecursiveLoop: {body!r}")
    if props.get("VpcConfig"):
        status, _, body = lambda_svc._update_config(result[0], {"VpcConfig": props["VpcConfig"]})
        if status >= 400:
            raise ValueError(f"AWS::Lambda::Function {result[0]}: VpcConfig: {body!r}")
    return result


# --- 7. CloudWatch alarms on a query (Metrics) -----------------------------------------------------

_QUERY_ONLY = ("MetricName", "Namespace", "Statistic", "ExtendedStatistic", "Period", "Unit", "Dimensions")


def _query(q: dict) -> dict:
    out = dict(q)
    if "Period" in out:
        out["Period"] = _num(out["Period"], int)
    if "ReturnData" in out:
        out["ReturnData"] = _bool(out["ReturnData"])
    return out


def _patch_query_alarms(provisioners) -> None:
    original = provisioners._cw_metric_alarm_record

    @functools.wraps(original)
    def record(name, props):
        if not props.get("Metrics"):
            return original(name, props)
        # ministack's record for everything but the metric (actions, threshold, state), then the
        # fields a query alarm has instead, as DescribeAlarms returns them on AWS.
        stand_in = {k: v for k, v in props.items() if k not in ("Metrics", *_QUERY_ONLY)}
        alarm = original(name, {**stand_in, "MetricName": "-", "Namespace": "-"})
        for key in _QUERY_ONLY:
            alarm.pop(key, None)
        alarm["Metrics"] = [_query(q) for q in props["Metrics"]]
        return alarm

    provisioners._cw_metric_alarm_record = record


# --- wiring -------------------------------------------------------------------------------------------

_FIXES = {
    "AWS::ApiGatewayV2::Api": _api_fix,
    "AWS::ApiGatewayV2::Stage": _stage_fix,
    "AWS::Lambda::EventSourceMapping": _esm_fix,
    "AWS::DynamoDB::Table": _table_fix,
    "AWS::Lambda::Function": _function_fix,
    "AWS::S3::Bucket": _bucket_fix,
}


def _wrap_create(original, fix):
    @functools.wraps(original)
    def create(logical_id, props, stack_name, *args, **kwargs):
        return fix(original(logical_id, props, stack_name, *args, **kwargs), props)
    return create


def _wrap_update(original, fix):
    @functools.wraps(original)
    def update(physical_id, old_props, new_props, *args, **kwargs):
        return fix(original(physical_id, old_props, new_props, *args, **kwargs), new_props)
    return update


def apply() -> None:
    have = version("ministack")
    if have != TESTED_VERSION:
        # The fixes reach into ministack's internals: another version may need other fixes, or none.
        sys.exit(f"ministack_server: ministack {have} installed, the fixes are for {TESTED_VERSION} "
                 "(scripts/requirements-ministack.txt pins it; run scripts/bootstrap.sh ministack)")
    from ministack.services.cloudformation import provisioners

    _patch_query_alarms(provisioners)
    for rtype, fix in _FIXES.items():
        handlers = provisioners._RESOURCE_HANDLERS[rtype]
        handlers["create"] = _wrap_create(handlers["create"], fix)
        if "update" in handlers:
            handlers["update"] = _wrap_update(handlers["update"], fix)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # cfn_s3
    apply()
    from ministack.app import main

    sys.exit(main())
