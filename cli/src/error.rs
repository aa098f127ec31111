//! Errors and the exit codes scripts rely on (docs/operations.md, "Exit codes").

use std::fmt;

/// Exit codes. Stable: scripts branch on them.
pub mod exit {
    pub const OK: i32 = 0;
    /// An AWS call or an operation failed (partly or wholly); the message says which.
    pub const FAILED: i32 = 1;
    /// Bad arguments or configuration (clap's own errors use 2 as well): nothing was done.
    pub const USAGE: i32 = 2;
    /// The event, session, message, destination or stack does not exist.
    pub const NOT_FOUND: i32 = 3;
    /// A destructive command was not confirmed (answered no, or no terminal and no `--yes`).
    pub const NOT_CONFIRMED: i32 = 4;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Failed,
    Usage,
    NotFound,
    NotConfirmed,
}

impl Kind {
    pub fn code(self) -> i32 {
        match self {
            Kind::Failed => exit::FAILED,
            Kind::Usage => exit::USAGE,
            Kind::NotFound => exit::NOT_FOUND,
            Kind::NotConfirmed => exit::NOT_CONFIRMED,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Failed => "failed",
            Kind::Usage => "usage",
            Kind::NotFound => "not_found",
            Kind::NotConfirmed => "not_confirmed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CliError {
    pub kind: Kind,
    pub message: String,
}

impl CliError {
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Failed,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Usage,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::NotFound,
            message: message.into(),
        }
    }

    pub fn not_confirmed(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::NotConfirmed,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<kyc_relay::records::StoreError> for CliError {
    fn from(e: kyc_relay::records::StoreError) -> Self {
        Self::failed(format!("records table: {}", e.0))
    }
}

impl From<kyc_relay::archive::ArchiveError> for CliError {
    fn from(e: kyc_relay::archive::ArchiveError) -> Self {
        Self::failed(format!("archive: {}", e.0))
    }
}

impl From<kyc_relay::queue::QueueError> for CliError {
    fn from(e: kyc_relay::queue::QueueError) -> Self {
        Self::failed(format!("queue: {}", e.0))
    }
}

/// An AWS SDK error with its full context (service code, message, request id).
pub fn sdk<E>(what: &str, e: E) -> CliError
where
    E: std::error::Error + 'static,
{
    CliError::failed(format!(
        "{what}: {}",
        aws_sdk_sqs::error::DisplayErrorContext(e)
    ))
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;
