//! The published event schema (schemas/v1) against the envelope the code builds, checked by the
//! reference JSON Schema implementation: every field the envelope can carry is in the schema, and a
//! change that breaks it (a renamed, removed or unknown field, another type) fails here.

use integration_tests::{check_envelope_schema, idnow_envelope, incode_envelope};
use serde_json::{Value, json};

fn full_envelopes() -> Vec<Value> {
    let mut incode = incode_envelope("interview-1", "ONBOARDING_FINISHED");
    // Every optional field set.
    incode.type_hint = Some("future-type".into());
    incode.request_id = Some("req-1".into());
    incode.trace_id = Some("5759e988bd862e3fe1be46a994272793".into());
    let idnow = idnow_envelope("evt-1", "session.completed", "sess-1", "COMPLETED", 3);
    vec![
        serde_json::to_value(&incode).unwrap(),
        serde_json::to_value(&idnow).unwrap(),
    ]
}

#[test]
fn the_envelope_the_code_builds_matches_the_published_schema() {
    check_envelope_schema(&full_envelopes()).unwrap();
}

/// One change to an envelope, as a test applies it.
type Change = fn(&mut Value);

#[test]
fn a_breaking_change_to_the_envelope_fails_the_check() {
    let good = full_envelopes().remove(0);
    let breaking: [(&str, Change); 7] = [
        ("a renamed field", |e| {
            let id = e.as_object_mut().unwrap().remove("event_id").unwrap();
            e["eventId"] = id;
        }),
        ("a removed field", |e| {
            e.as_object_mut().unwrap().remove("received_at_ms");
        }),
        ("another type", |e| e["received_at_ms"] = json!("yesterday")),
        ("another version", |e| e["v"] = json!(2)),
        ("an unknown provider", |e| e["provider"] = json!("onfido")),
        ("an unpublished field", |e| e["internal"] = json!(true)),
        ("an event without its type's fields", |e| {
            e["event"].as_object_mut().unwrap().remove("interviewId");
        }),
    ];
    for (what, change) in breaking {
        let mut e = good.clone();
        change(&mut e);
        assert!(
            check_envelope_schema(&[e]).is_err(),
            "{what} passed the schema check"
        );
    }
}
