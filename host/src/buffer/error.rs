use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("an entry of {size} bytes cannot fit a buffer of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error("{dir} is not a buffer: it holds no segment, cursor or lock file")]
    NotABuffer { dir: PathBuf },
    #[error("buffer {dir} is in use: a running sluice holds its lock (stop it first)")]
    InUse { dir: PathBuf },
}

impl BufferError {
    /// The same error again, for each push of a failed group commit: every one of them
    /// learns why (the OS error number kept, so a full disk still reads as one).
    pub(super) fn for_another_waiter(&self) -> BufferError {
        match self {
            BufferError::Io { dir, source } => BufferError::Io {
                dir: dir.clone(),
                source: match source.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            BufferError::TooLarge { size, max } => BufferError::TooLarge {
                size: *size,
                max: *max,
            },
            BufferError::NotABuffer { dir } => BufferError::NotABuffer { dir: dir.clone() },
            BufferError::InUse { dir } => BufferError::InUse { dir: dir.clone() },
        }
    }

    /// An I/O error on the buffer in `dir`.
    pub fn io(dir: &std::path::Path) -> impl Fn(std::io::Error) -> BufferError + '_ {
        move |source| BufferError::Io {
            dir: dir.to_owned(),
            source,
        }
    }
}
