//! The error type shared by every reader of this crate: [`ImageError`], and a shorthand for its
//! [`ImageError::Malformed`] variant.

/// Why an image could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Neither a fatbin, a CUDA ELF cubin nor PTX.
    #[error("not a CUDA module image (neither fatbin, CUDA ELF cubin nor PTX)")]
    NotAnImage,
    /// A structure is truncated or inconsistent.
    #[error("malformed CUDA module image: {0}")]
    Malformed(String),
    /// A compressed entry that could not be decompressed.
    #[error("cannot decompress fatbin entry (flags {flags:#x}): {what}")]
    Compressed { flags: u64, what: String },
    /// The image would expand past what one image may use, or an allocation failed.
    #[error("CUDA module image too large: {0}")]
    TooLarge(String),
    /// No cubin or PTX usable on the wanted sm.
    #[error("no binary for sm_{wanted} in image (available: {available:?})")]
    NoBinaryForArch { wanted: u32, available: Vec<u32> },
}

pub(crate) fn malformed(msg: impl Into<String>) -> ImageError {
    ImageError::Malformed(msg.into())
}
