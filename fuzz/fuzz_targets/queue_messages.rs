//! What the consumer and the dispatcher read from their queues: an envelope and a delivery job
//! (the library types, so fields added later are fuzzed too). Whatever deserialises serialises
//! back and reads the same.
#![no_main]

use kyc_relay::delivery::DeliveryJob;
use kyc_relay::envelope::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(data) {
        let text = serde_json::to_string(&envelope).unwrap();
        let again: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&again).unwrap(), text);
    }
    if let Ok(job) = serde_json::from_slice::<DeliveryJob>(data) {
        let text = serde_json::to_string(&job).unwrap();
        let again: DeliveryJob = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&again).unwrap(), text);
    }
});
