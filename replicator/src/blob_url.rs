//! Opening an object-store backend from `blob_url` and `[blob_options]`.
//!
//! Not `object_store::parse_url_opts`: it drops option keys it does not
//! know without a word (a misspelt `endpiont` left the store pointed at
//! AWS) and does not read the backend's environment variables. Here each
//! backend's builder starts from its environment (`AWS_*`, `GOOGLE_*`,
//! `AZURE_*`), the options override it, and an option the backend does
//! not know is an error naming it.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::path::Path;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreScheme, RetryConfig};

/// Why a backend cannot be opened, phrased for the operator (the caller
/// makes it a `BlobError`).
pub type OpenError = String;

/// How long one request may keep being retried: a store that does not
/// answer fails a write in seconds (the client retries it, or another
/// site takes the shard) instead of object_store's default three minutes.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(15);
/// Retries of one request within that time.
pub const MAX_RETRIES: usize = 3;

fn retry() -> RetryConfig {
    RetryConfig { max_retries: MAX_RETRIES, retry_timeout: RETRY_TIMEOUT, ..RetryConfig::default() }
}

/// The backend named by `url`, and the prefix (the URL's path) under which
/// this site's objects live.
pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<(Arc<dyn ObjectStore>, Path), OpenError> {
    let parsed = url::Url::parse(url).map_err(|e| format!("blob_url {url:?}: {e}"))?;
    let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|e| format!("blob_url {url:?}: {e}"))?;
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::AmazonS3 => Arc::new(s3_builder(url, options)?.build().map_err(|e| e.to_string())?),
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(url).with_retry(retry());
            for (k, v) in options {
                b = b.with_config(key::<GoogleConfigKey>(k, "gs://")?, v);
            }
            Arc::new(b.build().map_err(|e| e.to_string())?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(url).with_retry(retry());
            for (k, v) in options {
                b = b.with_config(key::<AzureConfigKey>(k, "az://")?, v);
            }
            Arc::new(b.build().map_err(|e| e.to_string())?)
        }
        ObjectStoreScheme::Http => {
            let mut b = HttpBuilder::new().with_url(url).with_retry(retry());
            for (k, v) in options {
                b = b.with_config(key::<ClientConfigKey>(k, "http(s)://")?, v);
            }
            // The whole URL is the store's root.
            return Ok((Arc::new(b.build().map_err(|e| e.to_string())?), Path::default()));
        }
        ObjectStoreScheme::Memory => {
            if let Some(k) = options.keys().next() {
                return Err(format!("blob_options: a memory:// store takes no options (got {k:?})"));
            }
            Arc::new(object_store::memory::InMemory::new())
        }
        other => return Err(format!("blob_url {url:?}: {other:?} stores are not supported here")),
    };
    Ok((store, prefix))
}

/// The S3 builder `open` uses (public so the deploy samples' options can
/// be checked without a network).
pub fn s3_builder(url: &str, options: &BTreeMap<String, String>) -> Result<AmazonS3Builder, OpenError> {
    let mut b = AmazonS3Builder::from_env().with_url(url).with_retry(retry());
    for (k, v) in options {
        b = b.with_config(key::<AmazonS3ConfigKey>(k, "s3://")?, v);
    }
    Ok(b)
}

fn key<K: FromStr>(name: &str, store: &str) -> Result<K, OpenError> {
    K::from_str(name).map_err(|_| {
        format!("blob_options: unknown key {name:?} for a {store} store (see object_store's config keys for it, e.g. region, endpoint, allow_http, timeout)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn err(r: Result<(Arc<dyn ObjectStore>, Path), OpenError>) -> String {
        match r {
            Ok(_) => panic!("opened"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_misspelt_option_is_an_error_naming_it() {
        let e = err(open("s3://bucket/pre", &opts(&[("region", "cn-north-1"), ("endpiont", "http://127.0.0.1:9")])));
        assert!(e.contains("\"endpiont\""), "{e}");
        assert!(e.contains("s3://"), "{e}");
        let e = err(open("memory:///", &opts(&[("region", "x")])));
        assert!(e.contains("\"region\""), "{e}");
        let e = err(open("gs://bucket", &opts(&[("regoin", "x")])));
        assert!(e.contains("\"regoin\""), "{e}");
    }

    #[test]
    fn known_options_and_the_prefix_are_kept() {
        let (_, prefix) = open("s3://bucket/site-a/blobs", &opts(&[("region", "cn-north-1"), ("endpoint", "http://127.0.0.1:9"), ("allow_http", "true")]))
            .expect("valid options open");
        assert_eq!(prefix.as_ref(), "site-a/blobs");
        let b = s3_builder("s3://bucket", &opts(&[("endpoint", "http://127.0.0.1:9"), ("timeout", "5s")])).unwrap();
        assert_eq!(b.get_config_value(&AmazonS3ConfigKey::Endpoint).as_deref(), Some("http://127.0.0.1:9"));
    }
}
