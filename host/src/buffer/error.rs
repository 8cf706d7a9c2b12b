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
    /// An I/O error on the buffer in `dir`.
    pub fn io(dir: &std::path::Path) -> impl Fn(std::io::Error) -> BufferError + '_ {
        move |source| BufferError::Io {
            dir: dir.to_owned(),
            source,
        }
    }
}
