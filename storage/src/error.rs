/// The one error type at the storage seam; backend detail is kept as text
/// because callers can only report it, never recover from it selectively.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage backend error: {0}")]
    Backend(String),
    #[error("cannot open store at {path}: {reason}")]
    Open { path: String, reason: String },
}
