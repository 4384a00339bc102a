//! The crate's one error type.

/// Everything that can fail in this crate. Enrichment itself never fails: a user agent, URL or
/// referrer that cannot be read gives "unknown" values, never an error. Errors come only from
/// building the parsers and from decoding stored sketches.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The vendored uap-core rules (`data/regexes.json`) are not valid JSON for `ua-parser`.
    #[error("cannot read the vendored user agent rules")]
    UserAgentRules(#[source] serde_json::Error),
    /// A uap-core rule did not compile (a regex `ua-parser` cannot handle).
    #[error("cannot compile the user agent rules")]
    UserAgentCompile(#[source] ua_parser::Error),
    /// Stored sketch bytes are not a DataSketches HLL sketch (truncated, corrupt, other family).
    #[error("invalid visitor sketch bytes")]
    SketchBytes(#[source] datasketches::error::Error),
    /// A stored sketch was built with another `lg_k` than [`crate::sketch::LG_K`]; its error
    /// bound differs, so it is refused rather than silently downsampled.
    #[error("visitor sketch has lg_k {found}, expected {expected}")]
    SketchLgK {
        /// `lg_k` read from the bytes.
        found: u8,
        /// `lg_k` this build uses.
        expected: u8,
    },
}
