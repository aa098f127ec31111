//! The dispatcher's work: make one delivery attempt per job and decide what follows, by the
//! destination's retry policy.
//!
//! For each job: if it arrived before its due time (a delay longer than SQS's 900 s), it is
//! re-enqueued with the remainder. Otherwise the delivery's state is read (strongly consistent): a
//! delivery already final, or an attempt already recorded, is acknowledged without sending (this
//! closes the consumer's crash window and stops duplicate job chains). Then the request is sent and:
//!
//! - delivered: the record says DELIVERED (the only write on the happy path);
//! - retry: the next job is enqueued first (with its delay and due time), then the attempt recorded;
//! - give up: the job goes to the delivery DLQ with its reason and attempt history, then the record
//!   says FAILED.
//!
//! Enqueue before record: a crash in between repeats an attempt (at-least-once towards the
//! destination, which deduplicates on `webhook-id`), never loses the delivery.

use crate::clock::Clock;
use crate::config::{ConfigError, SecretSource};
use crate::delivery::{
    AttemptLog, DeadLetterInfo, DeliveryJob, DeliveryQueue, Scheduled, is_due, sqs_delay_secs,
};
use crate::destination::{Auth, BodyFormat, ClientAuth, Destination, Destinations, Secret};
use crate::idempotency::{AttemptUpdate, DeliveryStatus, EventStore};
use crate::retry::{AttemptOutcome, Verdict, parse_retry_after};
use crate::signing::{Signer, SigningSecret};
use crate::telemetry::Counters;
use futures_util::future::join_all;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const WEBHOOK_ID: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// A destination's credentials, resolved at cold start.
struct Credentials {
    signer: Option<Signer>,
    oauth: Option<OAuthClient>,
}

struct OAuthClient {
    token_url: reqwest::Url,
    client_id: String,
    client_secret: String,
    scope: Option<String>,
    audience: Option<String>,
    client_auth: ClientAuth,
}

struct CachedToken {
    token: String,
    refresh_at_ms: u64,
}

pub struct Dispatcher<E, Q> {
    events: E,
    queue: Q,
    destinations: Destinations,
    credentials: HashMap<String, Credentials>,
    /// One lock per destination: a slow token endpoint holds up its own deliveries only.
    tokens: HashMap<String, tokio::sync::Mutex<Option<CachedToken>>>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

enum Step {
    Ack,
    Fail,
}

impl<E: EventStore, Q: DeliveryQueue> Dispatcher<E, Q> {
    /// Resolves the destinations' secrets (SSM names in one round trip) and validates them.
    pub async fn new(
        events: E,
        queue: Q,
        destinations: Destinations,
        ssm: Option<&impl SecretSource>,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        let names = destinations.ssm_secret_names();
        let fetched = match (names.is_empty(), ssm) {
            (true, _) => HashMap::new(),
            (false, Some(source)) => source.fetch(&names).await?,
            (false, None) => {
                return Err(ConfigError::new(
                    "destinations",
                    "secrets are named by SSM parameter but no SSM client is available",
                ));
            }
        };
        let secret = |id: &str, secret: &Secret| -> Result<String, ConfigError> {
            match secret {
                Secret::Plain(v) => Ok(v.clone()),
                Secret::Ssm(name) => fetched.get(name).cloned().ok_or_else(|| {
                    ConfigError::new(
                        format!("destinations[{id}].auth"),
                        format!("SSM parameter {name} not found"),
                    )
                }),
            }
        };
        let mut credentials = HashMap::new();
        for d in destinations.iter() {
            let creds = match &d.auth {
                None => Credentials {
                    signer: None,
                    oauth: None,
                },
                Some(Auth::StandardWebhooks { secrets }) => Credentials {
                    // One signature per secret during a rotation (current first).
                    signer: Some(Signer::new(
                        secrets
                            .iter()
                            .map(|s| {
                                SigningSecret::parse(&secret(&d.id, s)?).map_err(|m| {
                                    ConfigError::new(
                                        format!("destinations[{}].auth.secret", d.id),
                                        m,
                                    )
                                })
                            })
                            .collect::<Result<_, _>>()?,
                    )),
                    oauth: None,
                },
                Some(Auth::Oauth2ClientCredentials {
                    token_url,
                    client_id,
                    client_secret,
                    scope,
                    audience,
                    client_auth,
                }) => Credentials {
                    signer: None,
                    oauth: Some(OAuthClient {
                        token_url: token_url.clone(),
                        client_id: client_id.clone(),
                        client_secret: secret(&d.id, client_secret)?,
                        scope: scope.clone(),
                        audience: audience.clone(),
                        client_auth: *client_auth,
                    }),
                },
            };
            credentials.insert(d.id.clone(), creds);
        }
        let tokens = destinations
            .iter()
            .map(|d| (d.id.clone(), tokio::sync::Mutex::new(None)))
            .collect();
        Ok(Self {
            events,
            queue,
            destinations,
            credentials,
            tokens,
            http,
            clock,
        })
    }

    /// Processes a batch of jobs concurrently; returns the message ids to report as failures.
    pub async fn dispatch_batch(&self, records: &[(String, String)]) -> Vec<String> {
        let counters = &Counters::default();
        let steps = join_all(
            records
                .iter()
                .map(|(id, body)| self.dispatch(id, body, counters)),
        )
        .await;
        let failed: Vec<String> = records
            .iter()
            .zip(steps)
            .filter(|(_, s)| matches!(s, Step::Fail))
            .map(|((id, _), _)| id.clone())
            .collect();
        counters.add("RecordsFailed", failed.len() as u64);
        counters.emit("dispatcher");
        failed
    }

    async fn dispatch(&self, message_id: &str, body: &str, counters: &Counters) -> Step {
        let mut job: DeliveryJob = match serde_json::from_str(body) {
            Ok(j) => j,
            Err(e) => {
                // Left to SQS: after maxReceiveCount receives it lands in the delivery DLQ. serde's
                // message may quote the offending value: log only where and what kind.
                tracing::error!(message_id, error = ?e.classify(), line = e.line(), column = e.column(), "malformed delivery job");
                counters.add("MalformedJobs", 1);
                return Step::Fail;
            }
        };
        let now = self.clock.now_ms();
        if job.dead_letter.take().is_some() {
            // An operator moved the job back from the DLQ: a new retry cycle, numbered on.
            job.attempt += 1;
            job.cycle_start = job.attempt;
            job.due_at_ms = now;
            tracing::info!(
                delivery_id = job.delivery_id,
                attempt = job.attempt,
                "redriven job: new retry cycle"
            );
        }
        // Jobs of a redriven cycle may move a delivery that an earlier cycle left FAILED.
        let redrive = job.cycle_start > 1;
        if !is_due(job.due_at_ms, now) {
            let delay_secs = sqs_delay_secs(job.due_at_ms, now);
            counters.add("DelaysChained", 1);
            return self.enqueue(job, delay_secs).await;
        }
        let Some(destination) = self.destinations.get(&job.destination_id) else {
            let reason = format!(
                "destination {:?} is no longer configured",
                job.destination_id
            );
            // Recorded FAILED, so a later duplicate of the event finds nothing pending to repair.
            let update = AttemptUpdate {
                attempt: job.attempt,
                at_ms: now,
                status: DeliveryStatus::Failed,
                outcome: "destination_removed".into(),
                status_code: None,
                latency_ms: 0,
                redrive: job.cycle_start > 1,
            };
            return self.give_up(job, reason, Some(update), now, counters).await;
        };

        match self
            .events
            .delivery(&job.event_key, &job.destination_id)
            .await
        {
            Err(e) => {
                tracing::error!(delivery_id = job.delivery_id, error = %e, "cannot read delivery state");
                return Step::Fail;
            }
            Ok(Some(state))
                if state.status.is_final()
                    && !(redrive
                        && state.status == DeliveryStatus::Failed
                        && state.attempts < job.cycle_start) =>
            {
                counters.add("AlreadyFinal", 1);
                tracing::info!(
                    delivery_id = job.delivery_id,
                    status = state.status.as_str(),
                    "delivery already final; not sent again"
                );
                return Step::Ack;
            }
            Ok(Some(state)) if state.attempts >= job.attempt => {
                counters.add("DuplicateJobs", 1);
                tracing::info!(
                    delivery_id = job.delivery_id,
                    attempt = job.attempt,
                    recorded = state.attempts,
                    "attempt already made by another job; dropped"
                );
                return Step::Ack;
            }
            Ok(None) => {
                tracing::warn!(
                    delivery_id = job.delivery_id,
                    "no delivery record (expired?): delivering without a record"
                );
            }
            Ok(Some(_)) => {}
        }

        let started = Instant::now();
        let outcome = self.attempt(destination, &job).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let at_ms = self.clock.now_ms();
        job.history.push(AttemptLog {
            attempt: job.attempt,
            at_ms,
            outcome: outcome.describe(),
            status_code: outcome.status(),
            latency_ms,
        });
        let update = |status: DeliveryStatus| AttemptUpdate {
            attempt: job.attempt,
            at_ms,
            status,
            outcome: outcome.describe(),
            status_code: outcome.status(),
            latency_ms,
            redrive,
        };
        let verdict = destination.retry.verdict(job.policy_attempt(), &outcome);
        tracing::info!(
            delivery_id = job.delivery_id,
            destination = job.destination_id,
            attempt = job.attempt,
            outcome = outcome.describe(),
            latency_ms,
            verdict = ?verdict,
            "delivery attempt"
        );
        match verdict {
            Verdict::Delivered => {
                counters.add("Delivered", 1);
                match self
                    .events
                    .record_attempt(
                        &job.event_key,
                        &job.destination_id,
                        &update(DeliveryStatus::Delivered),
                    )
                    .await
                {
                    Ok(_) => Step::Ack,
                    // Without the record a later duplicate job would send again: let SQS retry
                    // (the destination deduplicates the repeat on webhook-id).
                    Err(e) => {
                        tracing::error!(delivery_id = job.delivery_id, error = %e, "cannot record delivery");
                        Step::Fail
                    }
                }
            }
            Verdict::RetryAfter(delay) => {
                counters.add("Retries", 1);
                let recorded = update(DeliveryStatus::Retrying);
                let mut next = job.clone();
                next.attempt += 1;
                next.due_at_ms = at_ms + delay.as_millis() as u64;
                let delay_secs = sqs_delay_secs(next.due_at_ms, at_ms);
                if let Step::Fail = self.enqueue(next, delay_secs).await {
                    return Step::Fail;
                }
                if let Err(e) = self
                    .events
                    .record_attempt(&job.event_key, &job.destination_id, &recorded)
                    .await
                {
                    // The next attempt is scheduled; only the record lags behind.
                    tracing::error!(delivery_id = job.delivery_id, error = %e, "cannot record attempt");
                }
                Step::Ack
            }
            Verdict::GiveUp(reason) => {
                let recorded = update(DeliveryStatus::Failed);
                self.give_up(job, reason, Some(recorded), at_ms, counters)
                    .await
            }
        }
    }

    async fn enqueue(&self, job: DeliveryJob, delay_secs: u32) -> Step {
        let id = job.delivery_id.clone();
        match self
            .queue
            .schedule(vec![Scheduled { job, delay_secs }])
            .await
            .pop()
        {
            Some(Ok(())) => Step::Ack,
            other => {
                tracing::error!(delivery_id = id, error = ?other, "cannot enqueue job; SQS will redeliver it");
                Step::Fail
            }
        }
    }

    async fn give_up(
        &self,
        mut job: DeliveryJob,
        reason: String,
        recorded: Option<AttemptUpdate>,
        at_ms: u64,
        counters: &Counters,
    ) -> Step {
        counters.add("DeadLettered", 1);
        tracing::warn!(
            delivery_id = job.delivery_id,
            destination = job.destination_id,
            reason,
            "delivery failed: to the DLQ"
        );
        job.dead_letter = Some(DeadLetterInfo {
            reason,
            at_ms,
            attempts: job.history.len() as u32,
        });
        if let Err(e) = self.queue.dead_letter(&job).await {
            tracing::error!(delivery_id = job.delivery_id, error = %e, "cannot dead-letter job");
            return Step::Fail;
        }
        if let Some(update) = recorded
            && let Err(e) = self
                .events
                .record_attempt(&job.event_key, &job.destination_id, &update)
                .await
        {
            tracing::error!(delivery_id = job.delivery_id, error = %e, "cannot record failure");
        }
        Step::Ack
    }

    /// One HTTP attempt, with one token refresh on a 401 when the destination uses OAuth.
    async fn attempt(&self, destination: &Destination, job: &DeliveryJob) -> AttemptOutcome {
        let (body, content_type) = match destination.body {
            BodyFormat::Raw => (
                job.envelope.raw_body.as_bytes().to_vec(),
                job.envelope.content_type.clone(),
            ),
            BodyFormat::Envelope => match serde_json::to_vec(&job.envelope) {
                Ok(b) => (b, "application/json".to_string()),
                Err(e) => {
                    return AttemptOutcome::Refused(format!("cannot serialise envelope: {e}"));
                }
            },
        };
        let creds = self.credentials.get(&destination.id);
        let oauth = creds.and_then(|c| c.oauth.as_ref());
        let mut refused: Option<String> = None;
        loop {
            let bearer = match oauth {
                None => None,
                Some(client) => match self
                    .token(&destination.id, client, refused.as_deref())
                    .await
                {
                    Ok(t) => Some(t),
                    Err(outcome) => return outcome,
                },
            };
            let timestamp = self.clock.now_secs();
            let mut request = self
                .http
                .post(destination.url.clone())
                .header(http::header::CONTENT_TYPE, &content_type)
                .header(WEBHOOK_ID, &job.delivery_id)
                .header(WEBHOOK_TIMESTAMP, timestamp.to_string());
            for (name, value) in &destination.headers {
                request = request.header(name, value);
            }
            if let Some(signer) = creds.and_then(|c| c.signer.as_ref()) {
                request = request.header(
                    WEBHOOK_SIGNATURE,
                    signer.sign(&job.delivery_id, timestamp, &body),
                );
            }
            if let Some(token) = &bearer {
                request = request.bearer_auth(token);
            }
            if let Some(ms) = destination.timeout_ms {
                request = request.timeout(Duration::from_millis(ms));
            }
            let outcome = match request.body(body.clone()).send().await {
                Ok(response) => {
                    let header = |name| {
                        response
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    AttemptOutcome::Response {
                        status: response.status().as_u16(),
                        content_type: header(http::header::CONTENT_TYPE),
                        retry_after: header(http::header::RETRY_AFTER)
                            .and_then(|v| parse_retry_after(&v, self.clock.now_secs())),
                    }
                }
                Err(e) => classify(&e),
            };
            if refused.is_none()
                && outcome.status() == Some(401)
                && let Some(token) = bearer
            {
                // The destination may have rotated or revoked the token before its expiry.
                refused = Some(token);
                continue;
            }
            return outcome;
        }
    }

    /// A cached bearer token, fetched (or refreshed) from the destination's token endpoint.
    /// `refused`: a token the destination just answered 401 to; it is replaced unless another
    /// delivery already did so while this one waited for the lock.
    async fn token(
        &self,
        destination: &str,
        client: &OAuthClient,
        refused: Option<&str>,
    ) -> Result<String, AttemptOutcome> {
        let Some(slot) = self.tokens.get(destination) else {
            return Err(AttemptOutcome::Refused(
                "no token slot for this destination".into(),
            ));
        };
        let mut cache = slot.lock().await;
        let now = self.clock.now_ms();
        if let Some(cached) = cache.as_ref()
            && cached.refresh_at_ms > now
            && refused != Some(cached.token.as_str())
        {
            return Ok(cached.token.clone());
        }
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &client.scope {
            form.push(("scope", scope));
        }
        if let Some(audience) = &client.audience {
            form.push(("audience", audience));
        }
        let mut request = self.http.post(client.token_url.clone());
        match client.client_auth {
            ClientAuth::Basic => {
                request = request.basic_auth(&client.client_id, Some(&client.client_secret))
            }
            ClientAuth::Body => {
                form.push(("client_id", &client.client_id));
                form.push(("client_secret", &client.client_secret));
            }
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| match classify(&e) {
                AttemptOutcome::Timeout => {
                    AttemptOutcome::TokenError("token endpoint timeout".into())
                }
                _ => AttemptOutcome::TokenError("token endpoint unreachable".into()),
            })?;
        if !response.status().is_success() {
            return Err(AttemptOutcome::TokenError(format!(
                "token endpoint answered {}",
                response.status().as_u16()
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let token: TokenResponse = response
            .json()
            .await
            .map_err(|_| AttemptOutcome::TokenError("token response is not valid JSON".into()))?;
        // Bounded: a token endpoint's expires_in is input, not trusted arithmetic.
        let lifetime_ms = token.expires_in.unwrap_or(300).min(86_400) * 1000;
        // Refresh a minute early (or at half-life for short-lived tokens).
        let margin = (lifetime_ms / 2).min(60_000);
        *cache = Some(CachedToken {
            token: token.access_token.clone(),
            refresh_at_ms: now.saturating_add(lifetime_ms - margin),
        });
        Ok(token.access_token)
    }
}

fn classify(e: &reqwest::Error) -> AttemptOutcome {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(forbidden) = err.downcast_ref::<crate::http_client::ForbiddenAddress>() {
            return AttemptOutcome::Refused(forbidden.to_string());
        }
        source = err.source();
    }
    if e.is_timeout() {
        AttemptOutcome::Timeout
    } else {
        AttemptOutcome::ConnectError
    }
}
