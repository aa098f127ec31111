//! The delivery queues in memory: what was scheduled (lane, delay, job) and dead-lettered, for fast
//! unit tests of the consumer and dispatcher. `fail_sends` makes every send fail, as an SQS outage
//! would. The SQS adapter is tested against the emulator (`tests/`).

use super::{DeliveryJob, DeliveryQueue, Lane, Scheduled};
use crate::queue::QueueError;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Default)]
pub struct MemoryDeliveryQueue {
    scheduled: Mutex<Vec<Scheduled>>,
    dead: Mutex<Vec<DeliveryJob>>,
    pub fail_sends: AtomicBool,
    /// Requests made (a batch of up to 10 counts once, as `SendMessageBatch` would).
    pub requests: AtomicU64,
}

impl MemoryDeliveryQueue {
    /// Removes and returns everything scheduled so far.
    pub fn take(&self) -> Vec<Scheduled> {
        std::mem::take(&mut *self.scheduled.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Removes and returns the jobs scheduled on one lane.
    pub fn take_lane(&self, lane: Lane) -> Vec<Scheduled> {
        let mut all = self.scheduled.lock().unwrap_or_else(|p| p.into_inner());
        let (taken, kept) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|s| s.lane == lane);
        *all = kept;
        taken
    }

    pub fn take_dead(&self) -> Vec<DeliveryJob> {
        std::mem::take(&mut *self.dead.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn len(&self) -> usize {
        self.scheduled.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DeliveryQueue for MemoryDeliveryQueue {
    async fn schedule(&self, jobs: Vec<Scheduled>) -> Vec<Result<(), QueueError>> {
        self.requests
            .fetch_add(jobs.len().div_ceil(10) as u64, Ordering::Relaxed);
        if self.fail_sends.load(Ordering::SeqCst) {
            return jobs
                .iter()
                .map(|_| Err(QueueError("queue unavailable (test)".into())))
                .collect();
        }
        let n = jobs.len();
        self.scheduled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(jobs);
        (0..n).map(|_| Ok(())).collect()
    }

    async fn dead_letter(&self, job: &DeliveryJob) -> Result<(), QueueError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if self.fail_sends.load(Ordering::SeqCst) {
            return Err(QueueError("queue unavailable (test)".into()));
        }
        self.dead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(job.clone());
        Ok(())
    }
}
