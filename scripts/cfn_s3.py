"""AWS::S3::Bucket properties (CloudFormation shape) -> the S3 API's shape, as CloudFormation converts
them when it creates a bucket. Standard library only: imported by scripts/local_aws.py (moto, .venv),
scripts/ministack_server.py (.venv-ministack) and scripts/check_deploy.py (.venv-sam).

CloudFormation and the S3 API name the same settings differently (`ExpirationInDays` vs
`Expiration.Days`, `TagFilters` vs `Filter.Tag`, `Id` vs `ID`, ...); one converter keeps the three
users consistent.
"""
from __future__ import annotations

from xml.sax.saxutils import escape


def _bool(value) -> bool:
    return value.strip().lower() == "true" if isinstance(value, str) else bool(value)


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def lifecycle_rule(rule: dict) -> dict:
    """One CloudFormation lifecycle Rule -> one S3 API LifecycleRule (PutBucketLifecycleConfiguration)."""
    out: dict = {"Status": rule.get("Status", "Enabled")}
    if rule.get("Id"):
        out["ID"] = rule["Id"]
    # Filter: prefix, tags and object size; several of them are combined with And, as in the API.
    parts: dict = {}
    if rule.get("Prefix") is not None:
        parts["Prefix"] = rule["Prefix"]
    tags = [{"Key": t["Key"], "Value": t["Value"]} for t in rule.get("TagFilters") or []]
    for key in ("ObjectSizeGreaterThan", "ObjectSizeLessThan"):
        if rule.get(key) is not None:
            parts[key] = _int(rule[key])
    if len(parts) + len(tags) > 1:
        out["Filter"] = {"And": {**parts, **({"Tags": tags} if tags else {})}}
    elif tags:
        out["Filter"] = {"Tag": tags[0]}
    elif parts:
        out["Filter"] = parts
    else:
        out["Filter"] = {"Prefix": ""}
    expiration: dict = {}
    if rule.get("ExpirationInDays") is not None:
        expiration["Days"] = _int(rule["ExpirationInDays"])
    if rule.get("ExpirationDate") is not None:
        expiration["Date"] = rule["ExpirationDate"]
    if rule.get("ExpiredObjectDeleteMarker") is not None:
        expiration["ExpiredObjectDeleteMarker"] = _bool(rule["ExpiredObjectDeleteMarker"])
    if expiration:
        out["Expiration"] = expiration
    transitions = list(rule.get("Transitions") or []) + ([rule["Transition"]] if rule.get("Transition") else [])
    if transitions:
        out["Transitions"] = []
        for t in transitions:
            item = {"StorageClass": t["StorageClass"]}
            if t.get("TransitionInDays") is not None:
                item["Days"] = _int(t["TransitionInDays"])
            if t.get("TransitionDate") is not None:
                item["Date"] = t["TransitionDate"]
            out["Transitions"].append(item)
    nc_transitions = list(rule.get("NoncurrentVersionTransitions") or []) + (
        [rule["NoncurrentVersionTransition"]] if rule.get("NoncurrentVersionTransition") else [])
    if nc_transitions:
        out["NoncurrentVersionTransitions"] = []
        for t in nc_transitions:
            item = {"StorageClass": t["StorageClass"], "NoncurrentDays": _int(t.get("TransitionInDays"))}
            if t.get("NewerNoncurrentVersions") is not None:
                item["NewerNoncurrentVersions"] = _int(t["NewerNoncurrentVersions"])
            out["NoncurrentVersionTransitions"].append(item)
    nce = dict(rule.get("NoncurrentVersionExpiration") or {})
    if rule.get("NoncurrentVersionExpirationInDays") is not None:
        nce.setdefault("NoncurrentDays", rule["NoncurrentVersionExpirationInDays"])
    if nce:
        out["NoncurrentVersionExpiration"] = {k: _int(v) for k, v in nce.items()}
    if rule.get("AbortIncompleteMultipartUpload"):
        out["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": _int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])}
    return out


def lifecycle(config: dict) -> dict:
    """LifecycleConfiguration -> {"Rules": [...]} for PutBucketLifecycleConfiguration."""
    return {"Rules": [lifecycle_rule(r) for r in (config or {}).get("Rules") or []]}


def encryption(config: dict) -> dict:
    """BucketEncryption -> ServerSideEncryptionConfiguration for PutBucketEncryption."""
    rules = []
    for r in (config or {}).get("ServerSideEncryptionConfiguration") or []:
        rule: dict = {}
        default = r.get("ServerSideEncryptionByDefault")
        if default:
            rule["ApplyServerSideEncryptionByDefault"] = {
                k: v for k, v in (("SSEAlgorithm", default.get("SSEAlgorithm")),
                                  ("KMSMasterKeyID", default.get("KMSMasterKeyID"))) if v is not None}
        if r.get("BucketKeyEnabled") is not None:
            rule["BucketKeyEnabled"] = _bool(r["BucketKeyEnabled"])
        rules.append(rule)
    return {"Rules": rules}


def tags(cfn_tags) -> list[dict]:
    return [{"Key": t["Key"], "Value": str(t["Value"])} for t in cfn_tags or []]


# --- XML bodies of the S3 REST API (for an emulator that is fed raw request bodies) ------------------

_NS = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def _xml(value, tag: str) -> str:
    if isinstance(value, dict):
        inner = "".join(_xml(v, k) for k, v in value.items())
    elif isinstance(value, list):
        return "".join(_xml(v, tag) for v in value)
    elif isinstance(value, bool):
        inner = "true" if value else "false"
    else:
        inner = escape(str(value))
    return f"<{tag}>{inner}</{tag}>"


def _xml_list(items, item_tag: str) -> str:
    return "".join(_xml(i, item_tag) for i in items)


def lifecycle_xml(config: dict) -> bytes:
    rules = lifecycle(config)["Rules"]
    body = ""
    for r in rules:
        r = dict(r)
        flt = r.pop("Filter", None)
        inner = ""
        if "ID" in r:
            inner += _xml(r.pop("ID"), "ID")
        if flt is not None:
            if "And" in flt:
                a = dict(flt["And"])
                tag_list = a.pop("Tags", [])
                inner += "<Filter><And>" + "".join(_xml(v, k) for k, v in a.items()) + _xml_list(tag_list, "Tag") + "</And></Filter>"
            else:
                inner += _xml(flt, "Filter")
        for key, item_tag in (("Transitions", "Transition"), ("NoncurrentVersionTransitions", "NoncurrentVersionTransition")):
            if key in r:
                inner += _xml_list(r.pop(key), item_tag)
        inner += "".join(_xml(v, k) for k, v in r.items())
        body += f"<Rule>{inner}</Rule>"
    return f"<LifecycleConfiguration{_NS}>{body}</LifecycleConfiguration>".encode()


def encryption_xml(config: dict) -> bytes:
    rules = "".join(_xml(r, "Rule") for r in encryption(config)["Rules"])
    return f"<ServerSideEncryptionConfiguration{_NS}>{rules}</ServerSideEncryptionConfiguration>".encode()


def tagging_xml(cfn_tags) -> bytes:
    return f"<Tagging{_NS}><TagSet>{_xml_list(tags(cfn_tags), 'Tag')}</TagSet></Tagging>".encode()
