//! What every command works with: the SDK configuration, the resources found, the library's
//! adapters on them, and the operator's output preferences.

use crate::args::Global;
use crate::aws;
use crate::error::{CliError, Result};
use crate::target::{DocumentSource, Resources, read_env_file};
use crate::ui::Ui;
use kyc_relay::aws::dynamodb::DynamoRecords;
use kyc_relay::aws::s3::S3Archive;
use kyc_relay::clock::{Clock, SystemClock};
use kyc_relay::config::{OutboundPolicy, SecretSource};
use kyc_relay::destination::Destinations;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The local pipeline's env file (scripts/run-local.sh) and destinations document.
pub const LOCAL_ENV_FILE: &str = ".local/aws.env";
pub const LOCAL_DESTINATIONS: &str = "config/destinations.local.json";

pub struct Ctx {
    pub ui: Ui,
    pub sdk: aws_config::SdkConfig,
    pub res: Resources,
    pub clock: Arc<dyn Clock>,
    destinations_file: Option<PathBuf>,
    local: bool,
    /// The functions' outbound policy, so the document is judged as they judge it: plain `http` to
    /// loopback only for the local pipeline, or an env file whose functions allow it.
    outbound: OutboundPolicy,
    json_printed: Cell<bool>,
}

impl Ctx {
    pub async fn load(g: &Global) -> Result<Self> {
        let env_path = match (&g.env_file, g.local) {
            (Some(p), _) => Some(p.clone()),
            (None, true) => Some(PathBuf::from(LOCAL_ENV_FILE)),
            (None, false) => None,
        };
        if g.stack.is_none() && env_path.is_none() {
            return Err(CliError::usage(
                "which relay? pass --stack NAME (or set KYC_RELAY_STACK), --local, or --env-file PATH",
            ));
        }
        let vars = env_path.as_deref().map(read_env_file).transpose()?;
        let allow_http_loopback = g.local
            || vars.as_ref().is_some_and(|v| {
                v.get(OutboundPolicy::LOCAL_SWITCH)
                    .is_some_and(|x| x.eq_ignore_ascii_case("true"))
            });
        let sdk = aws::sdk_config(&aws::Connection {
            profile: g.profile.as_deref(),
            region: g.region.as_deref(),
            env_file: vars.as_ref(),
        })
        .await?;
        let res = match (&g.stack, &env_path, &vars) {
            (Some(name), _, _) => Resources::from_stack(&aws::stack::discover(&sdk, name).await?),
            (None, Some(path), Some(vars)) => Resources::from_env_file(path, vars),
            _ => unreachable!("checked above"),
        };
        Ok(Self {
            ui: Ui::new(g.json, g.yes),
            sdk,
            res,
            clock: Arc::new(SystemClock),
            destinations_file: g.destinations_file.clone(),
            local: g.local,
            outbound: OutboundPolicy {
                allow_http_loopback,
            },
            json_printed: Cell::new(false),
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// One SSM SecureString (decrypted), e.g. the erasure audit key.
    pub async fn secret(&self, name: &str) -> Result<String> {
        let ssm = kyc_relay::aws::ssm::SsmSecrets::new(&self.sdk);
        let mut values = ssm
            .fetch(&[name.to_string()])
            .await
            .map_err(|e| CliError::failed(format!("cannot read SSM parameter {name}: {e}")))?;
        values
            .remove(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| CliError::not_found(format!("SSM parameter {name} is missing or empty")))
    }

    /// The caller's AWS identity (ARN), for audit records; says why when it cannot be read.
    pub async fn caller(&self) -> String {
        match aws_sdk_sts::Client::new(&self.sdk)
            .get_caller_identity()
            .send()
            .await
        {
            Ok(out) => out.arn().unwrap_or("unknown").to_string(),
            Err(e) => format!(
                "unknown (sts:GetCallerIdentity failed: {})",
                aws_sdk_sts::error::DisplayErrorContext(&e)
            ),
        }
    }

    pub fn records(&self) -> Result<DynamoRecords> {
        Ok(DynamoRecords::new(
            &self.sdk,
            self.res.table()?,
            self.clock.clone(),
        ))
    }

    pub fn archive(&self) -> Result<S3Archive> {
        Ok(S3Archive::new(&self.sdk, self.res.bucket()?))
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    pub fn ddb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    /// Prints the command's JSON document (at most one per run).
    pub fn json(&self, value: serde_json::Value) {
        self.json_printed.set(true);
        crate::ui::print_json(&value);
    }

    pub fn json_printed(&self) -> bool {
        self.json_printed.get()
    }

    /// Where the destinations document is: `--destinations-file`, else what the stack or env file
    /// names (the SSM parameter `DestinationsConfigParameter`), else with `--local` the local
    /// pipeline's file.
    pub fn document_source(&self) -> Option<DocumentSource> {
        if let Some(f) = &self.destinations_file {
            return Some(DocumentSource::File(f.clone()));
        }
        if let Some(s) = &self.res.destinations {
            return Some(s.clone());
        }
        (self.local && Path::new(LOCAL_DESTINATIONS).exists())
            .then(|| DocumentSource::File(PathBuf::from(LOCAL_DESTINATIONS)))
    }

    /// The destinations document, validated as the functions validate it; `None` when nothing
    /// names one.
    pub async fn destinations(&self) -> Result<Option<(Destinations, String)>> {
        let Some(source) = self.document_source() else {
            return Ok(None);
        };
        let (text, from) = match &source {
            DocumentSource::File(path) => (
                std::fs::read_to_string(path).map_err(|e| {
                    CliError::usage(format!(
                        "cannot read the destinations document {}: {e}",
                        path.display()
                    ))
                })?,
                path.display().to_string(),
            ),
            DocumentSource::Ssm(name) => {
                let ssm = kyc_relay::aws::ssm::SsmSecrets::new(&self.sdk);
                let mut values = ssm.fetch(std::slice::from_ref(name)).await.map_err(|e| {
                    CliError::failed(format!("destinations document: {}", e.message))
                })?;
                let text = values.remove(name).ok_or_else(|| {
                    CliError::not_found(format!(
                        "the destinations document's SSM parameter {name} does not exist"
                    ))
                })?;
                (text, format!("ssm:{name}"))
            }
        };
        let parsed = Destinations::parse_with(&text, self.outbound).map_err(|e| {
            CliError::usage(format!(
                "destinations document {from}: {}: {}",
                e.var, e.message
            ))
        })?;
        Ok(Some((parsed, from)))
    }
}
