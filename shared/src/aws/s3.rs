//! S3 adapter of the archive ports (`crate::archive`). The bucket's default encryption and
//! lifecycle rule (template.yaml) apply to every object; nothing here sets per-object options.

use crate::archive::{Archive, ArchiveError, ArchiveStore, Tagged};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_smithy_runtime_api::http::Response as HttpResponse;

#[derive(Clone)]
pub struct S3Archive {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Archive {
    pub fn new(aws: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        // A local emulator (AWS_ENDPOINT_URL) serves buckets by path, not by virtual host.
        let config = aws_sdk_s3::config::Builder::from(aws)
            .force_path_style(aws.endpoint_url().is_some())
            .build();
        Self::from_client(aws_sdk_s3::Client::from_conf(config), bucket)
    }

    pub fn from_client(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

fn archive_error<E, R>(e: SdkError<E, R>) -> ArchiveError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    ArchiveError(DisplayErrorContext(e).to_string())
}

impl Archive for S3Archive {
    async fn put(&self, object: &str, body: Vec<u8>) -> Result<(), ArchiveError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(object)
            .content_type("application/x-ndjson")
            .body(body.into())
            .send()
            .await
            .map_err(archive_error)?;
        Ok(())
    }
}

impl ArchiveStore for S3Archive {
    async fn get(&self, object: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        Ok(self.get_tagged(object).await?.map(|t| t.body))
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<String>, ArchiveError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_start_after(start_after.map(str::to_string))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(archive_error)?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(keys),
            }
        }
    }

    async fn get_tagged(&self, object: &str) -> Result<Option<Tagged>, ArchiveError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(object)
            .send()
            .await
        {
            Ok(out) => {
                let tag = out
                    .e_tag()
                    .ok_or_else(|| ArchiveError(format!("{object}: no ETag")))?
                    .to_string();
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| ArchiveError(e.to_string()))?;
                Ok(Some(Tagged {
                    body: bytes.into_bytes().to_vec(),
                    tag,
                }))
            }
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
            Err(e) => Err(archive_error(e)),
        }
    }

    async fn replace_if(
        &self,
        object: &str,
        body: Vec<u8>,
        tag: &str,
        keep_days: Option<u32>,
    ) -> Result<bool, ArchiveError> {
        if body.is_empty() {
            let result = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(object)
                .if_match(tag)
                .send()
                .await;
            applied(result)
        } else {
            let result = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(object)
                .content_type("application/x-ndjson")
                .if_match(tag)
                .set_tagging(keep_days.map(|d| format!("{}={d}", crate::archive::KEEP_DAYS_TAG)))
                .body(body.into())
                .send()
                .await;
            applied(result)
        }
    }
}

/// The outcome of a conditional write: `Ok(false)` when the object changed since it was read: `412
/// Precondition Failed`, `409 ConditionalRequestConflict` (a concurrent conditional write), or `404`
/// (deleted meanwhile).
fn applied<T, E>(result: Result<T, SdkError<E, HttpResponse>>) -> Result<bool, ArchiveError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.raw_response().map(|r| r.status().as_u16()),
                Some(412 | 409 | 404)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(archive_error(e)),
    }
}

/// The archive as configured: on (a bucket is named) or off. The S3 client is only built when on.
pub enum ConfiguredArchive {
    On(S3Archive),
    Off,
}

impl ConfiguredArchive {
    pub fn new(aws: &aws_config::SdkConfig, bucket: Option<&str>) -> Self {
        match bucket {
            Some(b) => ConfiguredArchive::On(S3Archive::new(aws, b)),
            None => ConfiguredArchive::Off,
        }
    }
}

impl Archive for ConfiguredArchive {
    fn enabled(&self) -> bool {
        matches!(self, ConfiguredArchive::On(_))
    }

    async fn put(&self, object: &str, body: Vec<u8>) -> Result<(), ArchiveError> {
        match self {
            ConfiguredArchive::On(a) => a.put(object, body).await,
            ConfiguredArchive::Off => Ok(()),
        }
    }
}
