//! The archive store's conditional rewrite, one set of checks for the S3 adapter (against the
//! emulator) and the in-memory twin: two erasures of two sessions sharing an archive object at the
//! same time must not undo each other (the later write would restore the other's lines).

use integration_tests::{LocalAws, archive};
use kyc_relay::archive::{ArchiveStore, KEEP_DAYS_TAG, MemoryArchive};

async fn two_writers_of_one_object_never_undo_each_other(store: impl ArchiveStore) {
    let object = "events/2026/12/07/21/shared.jsonl";
    store
        .put(object, b"alice\nbob\ncarol\n".to_vec())
        .await
        .unwrap();
    // Two erasures read the object at the same time...
    let first = store.get_tagged(object).await.unwrap().unwrap();
    let second = store.get_tagged(object).await.unwrap().unwrap();
    assert_eq!(first, second);
    // ...the first writes its filtered copy (without alice)...
    assert!(
        store
            .replace_if(object, b"bob\ncarol\n".to_vec(), &first.tag, None)
            .await
            .unwrap()
    );
    // ...and the second's copy (without bob, with alice) is refused: it would restore alice.
    assert!(
        !store
            .replace_if(object, b"alice\ncarol\n".to_vec(), &second.tag, None)
            .await
            .unwrap()
    );
    // Read again, it removes bob from what the object holds now.
    let again = store.get_tagged(object).await.unwrap().unwrap();
    assert_eq!(again.body, b"bob\ncarol\n");
    assert!(
        store
            .replace_if(object, b"carol\n".to_vec(), &again.tag, None)
            .await
            .unwrap()
    );
    assert_eq!(store.get(object).await.unwrap().unwrap(), b"carol\n");
    // An empty body deletes, on the same condition.
    let last = store.get_tagged(object).await.unwrap().unwrap();
    assert!(
        !store
            .replace_if(object, vec![], &again.tag, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .replace_if(object, vec![], &last.tag, None)
            .await
            .unwrap()
    );
    assert_eq!(store.get(object).await.unwrap(), None);
    // Gone meanwhile: a changed object, not an error.
    assert!(
        !store
            .replace_if(object, vec![], &last.tag, None)
            .await
            .unwrap()
    );
    assert_eq!(store.get_tagged(object).await.unwrap(), None);
    // A rewrite that keeps the object's expiry carries the keep-days tag (read by each test).
    store.put(TAGGED, b"dave\nerin\n".to_vec()).await.unwrap();
    let read = store.get_tagged(TAGGED).await.unwrap().unwrap();
    assert!(
        store
            .replace_if(TAGGED, b"erin\n".to_vec(), &read.tag, Some(14))
            .await
            .unwrap()
    );
}

const TAGGED: &str = "events/2026/12/07/21/tagged.jsonl";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_adapter_rewrites_only_what_it_read() {
    let aws = LocalAws::provision().await;
    two_writers_of_one_object_never_undo_each_other(archive(&aws)).await;
    let tags = aws_sdk_s3::Client::new(&aws.sdk)
        .get_object_tagging()
        .bucket(aws.get("ARCHIVE_BUCKET"))
        .key(TAGGED)
        .send()
        .await
        .unwrap();
    let tags: Vec<(&str, &str)> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key(), t.value()))
        .collect();
    assert_eq!(tags, [(KEEP_DAYS_TAG, "14")]);
}

#[tokio::test]
async fn the_in_memory_archive_passes_the_same_checks() {
    let store = std::sync::Arc::new(MemoryArchive::default());
    two_writers_of_one_object_never_undo_each_other(store.clone()).await;
    assert_eq!(store.keep_days_of(TAGGED), Some(14));
}
