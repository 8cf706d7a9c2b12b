//! Where object-store URLs lead, for the `object_store` sink that writes objects and
//! the `replay` source that reads them back: from a `url` to an [`ObjectStore`] and the
//! prefix objects live under, and the event time both read from a payload field.
//!
//! `file://` and `memory://` are always there; `s3://`, `gs://` and `az://` need the
//! `object-store-cloud` feature (their HTTP and credential stack is what an edge build
//! leaves out). Cloud stores start from the usual environment (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`) and then take `options`, which use object_store's own key
//! names (`endpoint`, `region`, `access_key_id`, `allow_http`, ...), so every option the
//! crate documents is reachable without a field of ours.
//!
//! Objects are stored whole ([`put`]); [`compaction`] is how readers see a partition
//! while its small objects are merged.

pub mod compaction;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use url::Url;

/// Why a `url` (with its `options`) leads to no store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("`url` `{url}`: {source}")]
    Url {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("`options` do not apply to {scheme}:// URLs")]
    NoOptions { scheme: &'static str },
    #[error("`url` `{url}` is not an absolute file path")]
    NotAbsolute { url: String },
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown option `{key}` (see object_store's config keys)")]
    UnknownOption { key: String },
    #[error("{scheme}:// needs sluice built with the `object-store-cloud` feature")]
    NotBuilt { scheme: String },
    #[error("unsupported URL scheme `{scheme}`; use file://, memory://, s3://, gs:// or az://")]
    Unsupported { scheme: String },
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

/// A store and the prefix (possibly empty) every object name starts with.
#[derive(Debug)]
pub struct Target {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
}

pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<Target, StorageError> {
    let parsed = Url::parse(url).map_err(|source| StorageError::Url {
        url: url.to_owned(),
        source,
    })?;
    let prefix = || Path::from(parsed.path().trim_matches('/'));
    let no_options = |scheme: &'static str| {
        if options.is_empty() {
            Ok(())
        } else {
            Err(StorageError::NoOptions { scheme })
        }
    };
    match parsed.scheme() {
        "file" => {
            no_options("file")?;
            let dir = parsed
                .to_file_path()
                .map_err(|()| StorageError::NotAbsolute {
                    url: url.to_owned(),
                })?;
            std::fs::create_dir_all(&dir).map_err(|source| StorageError::CreateDir {
                dir: dir.clone(),
                source,
            })?;
            let store = LocalFileSystem::new_with_prefix(&dir)?
                // A failed upload leaves no partial file behind.
                .with_automatic_cleanup(true);
            Ok(Target {
                store: Arc::new(store),
                prefix: Path::default(),
            })
        }
        "memory" => {
            no_options("memory")?;
            Ok(Target {
                store: Arc::new(InMemory::new()),
                prefix: prefix(),
            })
        }
        scheme => Ok(Target {
            store: cloud(scheme, url, options)?,
            prefix: prefix(),
        }),
    }
}

#[cfg(feature = "object-store-cloud")]
fn cloud(
    scheme: &str,
    url: &str,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};

    fn configure<B, K: std::str::FromStr>(
        mut builder: B,
        options: &BTreeMap<String, String>,
        with: fn(B, K, String) -> B,
    ) -> Result<B, StorageError> {
        for (key, value) in options {
            let key = key
                .parse::<K>()
                .map_err(|_| StorageError::UnknownOption { key: key.clone() })?;
            builder = with(builder, key, value.clone());
        }
        Ok(builder)
    }
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" => Arc::new(
            configure(
                AmazonS3Builder::from_env().with_url(url),
                options,
                |b, k: AmazonS3ConfigKey, v| b.with_config(k, v),
            )?
            .build()?,
        ),
        "gs" => Arc::new(
            configure(
                GoogleCloudStorageBuilder::from_env().with_url(url),
                options,
                |b, k: GoogleConfigKey, v| b.with_config(k, v),
            )?
            .build()?,
        ),
        "az" | "abfs" | "abfss" => Arc::new(
            configure(
                MicrosoftAzureBuilder::from_env().with_url(url),
                options,
                |b, k: AzureConfigKey, v| b.with_config(k, v),
            )?
            .build()?,
        ),
        other => return Err(unsupported(other)),
    };
    Ok(store)
}

#[cfg(not(feature = "object-store-cloud"))]
fn cloud(
    scheme: &str,
    _url: &str,
    _options: &BTreeMap<String, String>,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    match scheme {
        "s3" | "gs" | "az" | "abfs" | "abfss" => Err(StorageError::NotBuilt {
            scheme: scheme.to_owned(),
        }),
        other => Err(unsupported(other)),
    }
}

/// Objects larger than this go up in parts of this size.
const MULTIPART_BYTES: usize = 16 << 20;

/// Store `data` at `path` in one piece: a single put, or a multipart upload that only
/// its completion makes visible. Either way a reader never sees part of an object.
pub async fn put(store: &dyn ObjectStore, path: &Path, data: Bytes) -> object_store::Result<()> {
    if data.len() <= MULTIPART_BYTES {
        store.put(path, data.into()).await?;
        return Ok(());
    }
    let mut upload =
        WriteMultipart::new_with_chunk_size(store.put_multipart(path).await?, MULTIPART_BYTES);
    upload.put(data);
    upload.finish().await?;
    Ok(())
}

/// `base/part` (`part` without its leading and trailing `/`), either of which may be
/// empty.
pub fn join(base: &Path, part: &str) -> Path {
    let part = part.trim_matches('/');
    match (base.as_ref(), part) {
        (_, "") => base.clone(),
        ("", _) => Path::from(part),
        (base, part) => Path::from(format!("{base}/{part}")),
    }
}

/// An event time as a payload field holds it: epoch milliseconds or RFC 3339 text.
pub fn time_ms(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(number) => number.as_i64(),
        serde_json::Value::String(text) => text_time_ms(text),
        _ => None,
    }
}

/// [`time_ms`] of a string value's contents.
pub fn text_time_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.timestamp_millis())
}

fn unsupported(scheme: &str) -> StorageError {
    StorageError::Unsupported {
        scheme: scheme.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_come_from_the_url_path_and_options_are_checked() {
        let target = open("memory://bucket/lake/raw/", &BTreeMap::new()).unwrap();
        assert_eq!(target.prefix.as_ref(), "lake/raw");
        let options = BTreeMap::from([("region".to_owned(), "x".to_owned())]);
        assert!(
            open("memory://", &options)
                .unwrap_err()
                .to_string()
                .contains("do not apply")
        );
        assert!(
            open("ftp://host/x", &BTreeMap::new())
                .unwrap_err()
                .to_string()
                .contains("ftp")
        );
    }

    #[cfg(feature = "object-store-cloud")]
    #[test]
    fn unknown_cloud_options_are_named() {
        let options = BTreeMap::from([("endpiont".to_owned(), "http://x".to_owned())]);
        let error = open("s3://bucket/p", &options).err().unwrap().to_string();
        assert!(error.contains("`endpiont`"), "{error}");
    }
}
