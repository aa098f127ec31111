//! Lambda's two SQS triggers played by a test: the real delivery queues with SQS's delays taken out
//! (the test's manual clock says when a job is due) and a loop that hands each job to the
//! dispatcher, as the event source mappings would.

use crate::{LocalAws, TestDispatcher, delivery_queue};
use kyc_relay::aws::sqs::SqsDeliveryQueue;
use kyc_relay::clock::{Clock, ManualClock};
use kyc_relay::delivery::{DeliveryJob, DeliveryQueue, Lane, Scheduled};
use kyc_relay::dispatch::JobRecord;
use kyc_relay::queue::QueueError;
use std::sync::{Arc, Mutex};

/// One job as the dispatcher scheduled it through an [`UndelayedQueue`].
#[derive(Debug, Clone)]
pub struct Sent {
    pub lane: Lane,
    pub attempt: u32,
    pub due_at_ms: u64,
    pub delay_secs: u32,
    /// When SQS would have shown it: the manual clock at the send plus the delay asked for.
    pub visible_at_ms: u64,
}

/// Both lanes and the delivery DLQ of this test's stack, with every delay dropped (a test cannot
/// wait out SQS's seconds) and every scheduled job recorded with the delay it asked for.
#[derive(Clone)]
pub struct UndelayedQueue {
    inner: SqsDeliveryQueue,
    clock: ManualClock,
    pub sent: Arc<Mutex<Vec<Sent>>>,
}

impl UndelayedQueue {
    pub fn new(aws: &LocalAws, clock: ManualClock) -> Self {
        Self {
            inner: delivery_queue(aws),
            clock,
            sent: Arc::default(),
        }
    }

    /// When SQS would have shown this job (its latest send through this queue), if it came this way.
    pub fn visible_at(&self, job: &DeliveryJob) -> Option<u64> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s.attempt == job.attempt && s.due_at_ms == job.due_at_ms)
            .map(|s| s.visible_at_ms)
    }
}

impl DeliveryQueue for UndelayedQueue {
    async fn schedule(&self, jobs: Vec<Scheduled>) -> Vec<Result<(), QueueError>> {
        let now = self.clock.now_ms();
        let mut immediate = Vec::new();
        for s in jobs {
            self.sent.lock().unwrap().push(Sent {
                lane: s.lane,
                attempt: s.job.attempt,
                due_at_ms: s.job.due_at_ms,
                delay_secs: s.delay_secs,
                visible_at_ms: now + s.delay_secs as u64 * 1000,
            });
            immediate.push(Scheduled { delay_secs: 0, ..s });
        }
        self.inner.schedule(immediate).await
    }

    async fn dead_letter(&self, job: &DeliveryJob) -> Result<(), QueueError> {
        self.inner.dead_letter(job).await
    }
}

/// Hands every job of either lane (fast lane first) to `dispatcher` as a one-record batch, after
/// moving `clock` to `when(job)` if that is later, and deletes it once handled. Returns how many
/// jobs were handled when both lanes are empty; panics at `cap` (a schedule that never ends).
pub async fn drive<Q: DeliveryQueue>(
    aws: &LocalAws,
    dispatcher: &TestDispatcher<Q>,
    clock: &ManualClock,
    cap: usize,
    when: impl Fn(&DeliveryJob) -> Option<u64>,
) -> usize {
    let lanes = [
        (Lane::Fast, aws.get("DELIVERY_QUEUE_URL").to_string()),
        (Lane::Retry, aws.get("RETRY_QUEUE_URL").to_string()),
    ];
    let mut handled = 0;
    loop {
        let mut got = None;
        for (lane, url) in &lanes {
            let out = aws
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(1)
                .send()
                .await
                .unwrap();
            if let Some(m) = out.messages.unwrap_or_default().into_iter().next() {
                got = Some((*lane, url, m));
                break;
            }
        }
        let Some((lane, url, m)) = got else {
            return handled;
        };
        let job: DeliveryJob = serde_json::from_str(m.body().unwrap()).unwrap();
        if let Some(at) = when(&job)
            && at > clock.now_ms()
        {
            clock.set_ms(at);
        }
        hand_over(aws, dispatcher, lane, url, &m, clock.now_ms() + 120_000).await;
        handled += 1;
        assert!(handled < cap, "runaway schedule");
    }
}

/// Hands one received message to `dispatcher` as a one-record batch, as the event source mapping of
/// `lane` would, checks that it was not reported as failed, and deletes it.
pub async fn hand_over<Q: DeliveryQueue>(
    aws: &LocalAws,
    dispatcher: &TestDispatcher<Q>,
    lane: Lane,
    queue_url: &str,
    m: &aws_sdk_sqs::types::Message,
    deadline_ms: u64,
) {
    let failed = dispatcher
        .dispatch_batch(
            &[JobRecord {
                message_id: m.message_id().unwrap().to_string(),
                body: m.body().unwrap().to_string(),
                lane,
            }],
            deadline_ms,
        )
        .await;
    assert!(failed.is_empty(), "dispatch failed: {failed:?}");
    aws.sqs
        .delete_message()
        .queue_url(queue_url)
        .receipt_handle(m.receipt_handle().unwrap())
        .send()
        .await
        .unwrap();
}
