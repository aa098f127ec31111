//! `--stack NAME` discovery against a stack deployed with the real `sam deploy` into an emulated
//! CloudFormation (ministack): `scripts/deploy-local.sh --keep` leaves it running and writes
//! `.local/deploy.env` (endpoint, dummy credentials, `DEPLOY_STACK_NAME`).
//!
//! Ignored in the plain test run, which has no such stack; `.ci/run`'s deploy step runs it after the
//! deployment: `cargo test -p kyc-relay-cli --test stack -- --ignored` (`KYC_RELAY_DEPLOY_ENV` may
//! name another env file). It fails, rather than skips, when the stack is not there.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn deploy_env() -> (PathBuf, String) {
    let path = std::env::var_os("KYC_RELAY_DEPLOY_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.local/deploy.env"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: deploy a stack first with scripts/deploy-local.sh --keep",
            path.display()
        )
    });
    let stack = text
        .lines()
        .find_map(|l| l.strip_prefix("DEPLOY_STACK_NAME="))
        .expect("DEPLOY_STACK_NAME in the deploy env file")
        .trim()
        .to_string();
    (path, stack)
}

fn kyc(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kyc-relay"))
        .args(args)
        .arg("--json")
        .env_remove("KYC_RELAY_STACK")
        .output()
        .expect("run kyc-relay");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Logical IDs of a type in the deployed template (a plain scan of the `Type:` lines of top-level
/// resources): template.yaml, or `KYC_RELAY_DEPLOY_TEMPLATE` when another one was deployed.
fn template_resources(of_type: &str) -> Vec<String> {
    let path = std::env::var_os("KYC_RELAY_DEPLOY_TEMPLATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(id) = line
            .strip_prefix("  ")
            .filter(|l| !l.starts_with(' ') && l.ends_with(':'))
        {
            current = Some(id.trim_end_matches(':').to_string());
        } else if line.trim() == format!("Type: {of_type}")
            && line.starts_with("    Type:")
            && let Some(id) = current.take()
        {
            out.push(id);
        }
    }
    out
}

#[test]
#[ignore = "needs a stack deployed by scripts/deploy-local.sh --keep (CI: the deploy step)"]
fn the_stack_name_is_enough_to_find_every_resource() {
    let (env, stack) = deploy_env();
    let env = env.to_str().unwrap();
    let (code, r, err) = kyc(&["--env-file", env, "--stack", &stack, "resources"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["source"], format!("stack:{stack}"));
    for (queue, suffix) in [
        ("ingest", "-ingest"),
        ("ingest_dlq", "-ingest-dlq"),
        ("delivery", "-delivery"),
        ("retry", "-delivery-retry"),
        ("delivery_dlq", "-delivery-dlq"),
    ] {
        let url = r["queues"][queue]
            .as_str()
            .unwrap_or_else(|| panic!("{queue}: {r}"));
        assert!(
            url.contains("://") && url.ends_with(&format!("{stack}{suffix}")),
            "{queue}: {url}"
        );
    }
    assert_eq!(r["records_table"], format!("{stack}-records"));
    assert!(
        r["archive_bucket"].as_str().is_some_and(|b| !b.is_empty()),
        "{r}"
    );
    assert_eq!(r["dashboard"], stack.as_str());
    let mut alarms: Vec<String> = r["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    alarms.sort();
    let in_template = template_resources("AWS::CloudWatch::Alarm");
    assert!(in_template.len() >= 10, "{in_template:?}");
    assert_eq!(
        alarms.len(),
        in_template.len(),
        "{alarms:?} vs {in_template:?}"
    );
    // From the stack's parameters (deploy-local.sh's overrides).
    assert_eq!(
        r["destinations_document"]["ssm"],
        "/kyc-relay-local/config/destinations"
    );
    assert!(r["record_ttl_secs"].as_u64().is_some(), "{r}");

    // The discovered queues, table and alarms answer.
    let (code, s, err) = kyc(&["--env-file", env, "--stack", &stack, "status"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["queues"].as_array().unwrap().len(), 5, "{s}");
    assert_eq!(s["alarms_checked"], in_template.len());

    let (code, e, _) = kyc(&["--env-file", env, "--stack", "no-such-stack", "status"]);
    assert_eq!(code, 3);
    assert_eq!(e["error"]["kind"], "not_found");
}
