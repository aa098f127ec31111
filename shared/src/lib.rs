//! Library of the KYC webhook relay.
//!
//! The domain modules (providers, verification, envelope, intake, idempotency, sessions, destinations,
//! retry policies, delivery) know nothing about AWS; they talk to ports (small traits). The `aws`
//! module holds the adapters (SQS, DynamoDB, SSM, API Gateway) and is the only place AWS types appear.
//! The Lambda `main.rs` files only wire the two together.

pub mod archive;
#[cfg(feature = "aws")]
pub mod aws;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod destination;
pub mod dispatch;
pub mod envelope;
pub mod http_client;
pub mod idempotency;
pub mod intake;
pub mod processing;
pub mod provider;
pub mod queue;
pub mod rate;
pub mod records;
pub mod retry;
pub mod signing;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod verification;
