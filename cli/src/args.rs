//! The command line (clap derive). Every command is documented in docs/operations.md.

use clap::{Args, Parser, Subcommand, ValueEnum};
use kyc_relay::provider::Provider;
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Where the relay is: --stack NAME (CloudFormation; or KYC_RELAY_STACK), --local (.local/aws.env of
scripts/run-local.sh) or --env-file PATH. Credentials, profile and region as the AWS CLI finds them.

Exit codes: 0 ok, 1 an AWS call or operation failed, 2 bad arguments or configuration,
3 not found, 4 not confirmed (a destructive command without a yes, or without --yes off a terminal).";

#[derive(Debug, Parser)]
#[command(
    name = "kyc-relay",
    version,
    about = "Operate a KYC webhook relay stack: queues, events, sessions, DLQs, replay, destinations, erasure",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// CloudFormation stack whose resources to use (its resources and outputs are listed).
    #[arg(long, global = true, env = "KYC_RELAY_STACK", value_name = "NAME")]
    pub stack: Option<String>,
    /// The local pipeline: read .local/aws.env (written by scripts/run-local.sh).
    #[arg(long, global = true, conflicts_with = "env_file")]
    pub local: bool,
    /// Read resources (INGEST_QUEUE_URL, RECORDS_TABLE, ...) and AWS settings (AWS_ENDPOINT_URL,
    /// AWS_REGION, keys) from this file of VAR=value lines; with --stack only its AWS settings.
    #[arg(long, global = true, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    /// AWS named profile (default: AWS_PROFILE, then "default").
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// AWS region (default: AWS_REGION, then the profile's).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// The destinations document as a file, instead of the stack's SSM parameter.
    #[arg(long, global = true, value_name = "PATH")]
    pub destinations_file: Option<PathBuf>,
    /// Print one JSON document on stdout (shapes in docs/operations.md); no progress bar.
    #[arg(long, global = true)]
    pub json: bool,
    /// Do not ask before destructive operations (needed when stdin is not a terminal).
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the resources the tool found (stack discovery or env file).
    Resources,
    /// Queue depths and ages, DLQ counts, paused destinations, alarms in ALARM.
    Status,
    /// One event: its record, each destination's delivery and attempts, whether it is archived.
    Event(EventArgs),
    /// A session's projected status and the timeline of its events and deliveries.
    Session(SessionArgs),
    /// The dead-letter queues: list, show, redrive.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Send archived events again (one event, a session or a time range), rate-limited, resumable.
    #[command(subcommand)]
    Replay(ReplayCommand),
    /// Configured destinations and their shared state (circuit breaker, operator pause).
    #[command(subcommand)]
    Destinations(DestinationsCommand),
    /// Erase a session (GDPR right to erasure): its archived payloads, DLQ copies and records.
    Erase(EraseArgs),
}

fn provider(s: &str) -> Result<Provider, String> {
    s.parse()
}

#[derive(Debug, Args)]
pub struct EventArgs {
    #[arg(value_parser = provider)]
    pub provider: Provider,
    /// The event id (IDnow eventId, Incode inc_...). Omit it with --body.
    pub event_id: Option<String>,
    /// The event's session (Incode interviewId, IDnow sessionId): one query instead of a search.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// Compute the id from a webhook body as the receiver does ("-" = stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "event_id")]
    pub body: Option<PathBuf>,
    /// Incode: the type segment of the URL the body was posted to (e.g. onboarding-status);
    /// without it the type is detected from the body, as on /webhooks/incode.
    #[arg(long = "type", value_name = "SLUG", requires = "body")]
    pub type_slug: Option<String>,
}

#[derive(Debug, Args)]
pub struct SessionArgs {
    #[arg(value_parser = provider)]
    pub provider: Provider,
    pub session_id: String,
    /// Also list every attempt of every delivery.
    #[arg(long)]
    pub attempts: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DlqName {
    Ingest,
    Delivery,
}

impl DlqName {
    pub fn as_str(self) -> &'static str {
        match self {
            DlqName::Ingest => "ingest",
            DlqName::Delivery => "delivery",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DlqFilter {
    /// Which DLQ.
    #[arg(long, value_enum)]
    pub queue: DlqName,
    /// Only jobs for this destination (delivery DLQ).
    #[arg(long, value_name = "ID")]
    pub destination: Option<String>,
    /// Only jobs whose dead-letter reason contains this text, case-insensitive (delivery DLQ).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[arg(long, value_parser = provider)]
    pub provider: Option<Provider>,
    #[arg(long, value_name = "ID")]
    pub event_id: Option<String>,
    /// Dead-lettered (delivery DLQ) or received (ingest DLQ) at or after: RFC 3339
    /// (2026-12-01T10:00:00Z), a date, or an age (30m, 2h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// ... and before.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At most this many messages.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the messages (they stay in the DLQ).
    List(DlqFilter),
    /// One message in full.
    Show {
        #[arg(long, value_enum)]
        queue: DlqName,
        message_id: String,
        /// Also print the webhook body (personal data).
        #[arg(long)]
        body: bool,
    },
    /// Move the matching messages back: delivery DLQ -> retry lane, ingest DLQ -> ingest queue.
    Redrive {
        #[command(flatten)]
        filter: DlqFilter,
        /// Messages per second (N/s, N/m or N).
        #[arg(long, default_value = "10/s", value_name = "RATE")]
        rate: String,
        /// Show what would move; move nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ReplayOpts {
    /// Only events of this type (repeatable), e.g. onboarding_status, session.completed.
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,
    /// Send to this destination only (it must route the event); default: every destination the
    /// destinations document routes the event to.
    #[arg(long, value_name = "ID")]
    pub destination: Option<String>,
    /// A new webhook-id per replay (see docs/operations.md) instead of the original delivery's.
    #[arg(long)]
    pub new_id: bool,
    /// The replay's id (default: derived from the command); a re-run with the same id sends only
    /// what the earlier run did not.
    #[arg(long, value_name = "ID")]
    pub replay_id: Option<String>,
    /// Print what would be sent; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Jobs queued per second (N/s, N/m or N).
    #[arg(long, default_value = "10/s", value_name = "RATE")]
    pub rate: String,
    /// Queue at most this many jobs, then stop (re-run to continue).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum ReplayCommand {
    /// One event.
    Event {
        #[arg(value_parser = provider)]
        provider: Provider,
        event_id: String,
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        #[command(flatten)]
        opts: ReplayOpts,
    },
    /// Every event of a session.
    Session {
        #[arg(value_parser = provider)]
        provider: Provider,
        session_id: String,
        #[command(flatten)]
        opts: ReplayOpts,
    },
    /// Every archived event received in [--since, --until).
    Range {
        #[arg(long, value_name = "TIME")]
        since: String,
        #[arg(long, value_name = "TIME")]
        until: String,
        #[arg(long, value_parser = provider)]
        provider: Option<Provider>,
        #[command(flatten)]
        opts: ReplayOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// Configured destinations with their state.
    List,
    /// Hold a destination's deliveries until `resume` (never probed).
    Pause {
        id: String,
        /// Why (shown by `status` and `destinations list`).
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// End any pause (operator or circuit breaker) and the failure streak.
    Resume { id: String },
}

#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The session to erase.
    #[arg(long, num_args = 2, value_names = ["PROVIDER", "SESSION_ID"], required = true)]
    pub session: Vec<String>,
    /// Also search the archive hours from this time for copies the records no longer list.
    #[arg(long, value_name = "TIME", requires = "until")]
    pub since: Option<String>,
    #[arg(long, value_name = "TIME", requires = "since")]
    pub until: Option<String>,
    /// Report what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// SSM SecureString holding the audit key: the audit item then carries HMAC-SHA-256(key,
    /// provider, session id) as its subject, so the key's holder can show that a given session was
    /// erased. Without it the audit item names no subject at all.
    #[arg(long, value_name = "NAME", env = "KYC_RELAY_AUDIT_KEY_SSM")]
    pub audit_key_ssm: Option<String>,
}
