//! Order of each provider's session statuses, for the session-state projection: a session only moves
//! to a status of a higher rank, so an event that arrives late never moves it backwards. Terminal
//! statuses share the top rank: the first one recorded stays.
//!
//! Statuses not listed here have no rank: the event is still processed and relayed, but does not
//! touch the session state.

use super::Provider;

pub const TERMINAL_RANK: u16 = 1000;

/// Incode: session webhooks and onboarding statuses describe one interview, in this order.
/// Manual review outcomes and session success/failure are final.
const INCODE: &[(&str, u16)] = &[
    ("UNKNOWN", 1),
    ("SESSION_STARTED", 10),
    ("SESSION_PROGRESS", 20),
    ("ID_VALIDATION_FINISHED", 30),
    ("ID_VALIDATION_FINISHED_SECOND_ID", 31),
    ("POST_PROCESSING_FINISHED", 40),
    ("FACE_VALIDATION_FINISHED", 50),
    ("GOVERNMENT_VALIDATION_FINISHED", 60),
    ("SESSION_IDENTITY_ENROLLED", 65),
    ("ONBOARDING_FINISHED", 70),
    ("SESSION_PENDING_REVIEW", 80),
    ("MANUAL_REVIEW_APPROVED", TERMINAL_RANK),
    ("MANUAL_REVIEW_REJECTED", TERMINAL_RANK),
    ("SESSION_SUCCEEDED", TERMINAL_RANK),
    ("SESSION_FAILED", TERMINAL_RANK),
];

/// IDnow `sessionStatus`: CREATED < RUNNING < terminal.
const IDNOW: &[(&str, u16)] = &[
    ("CREATED", 10),
    ("STARTED", 20),
    ("RUNNING", 20),
    ("COMPLETED", TERMINAL_RANK),
    ("ABORTED", TERMINAL_RANK),
    ("EXPIRED", TERMINAL_RANK),
    ("ERROR", TERMINAL_RANK),
    ("FAILED", TERMINAL_RANK),
];

pub fn rank(provider: Provider, status: &str) -> Option<u16> {
    let table = match provider {
        Provider::Incode => INCODE,
        Provider::Idnow => IDNOW,
    };
    table
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(status))
        .map(|(_, r)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incode_onboarding_order() {
        let order = [
            "UNKNOWN",
            "ID_VALIDATION_FINISHED",
            "ID_VALIDATION_FINISHED_SECOND_ID",
            "POST_PROCESSING_FINISHED",
            "FACE_VALIDATION_FINISHED",
            "GOVERNMENT_VALIDATION_FINISHED",
            "ONBOARDING_FINISHED",
            "MANUAL_REVIEW_APPROVED",
        ];
        let ranks: Vec<u16> = order
            .iter()
            .map(|s| rank(Provider::Incode, s).unwrap())
            .collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        assert_eq!(
            rank(Provider::Incode, "MANUAL_REVIEW_REJECTED"),
            Some(TERMINAL_RANK)
        );
    }

    #[test]
    fn idnow_order_and_unknowns() {
        assert!(rank(Provider::Idnow, "CREATED") < rank(Provider::Idnow, "RUNNING"));
        assert_eq!(rank(Provider::Idnow, "completed"), Some(TERMINAL_RANK));
        assert_eq!(rank(Provider::Idnow, "SOMETHING_NEW"), None);
    }
}
