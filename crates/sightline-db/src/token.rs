//! Generating keys and tokens, and hashing read tokens.

use rand::{Rng, distr::Alphanumeric};
use sha2::{Digest, Sha256};

/// Prefix of write keys.
pub const WRITE_KEY_PREFIX: &str = "wk_";
/// Prefix of read tokens.
pub const READ_TOKEN_PREFIX: &str = "slr_";

fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A new write key: public, 24 random alphanumerics.
pub fn new_write_key() -> String {
    format!("{WRITE_KEY_PREFIX}{}", random_alphanumeric(24))
}

/// A new read token: secret, 40 random alphanumerics (about 238 bits).
pub fn new_read_token() -> String {
    format!("{READ_TOKEN_PREFIX}{}", random_alphanumeric(40))
}

/// The stored form of a read token. Tokens are long and random, so a plain SHA-256 suffices
/// (a slow password hash protects low-entropy secrets, which these are not).
pub fn hash_read_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// What is shown of a token: its prefix and first characters.
pub fn display_prefix(token: &str) -> String {
    token.chars().take(READ_TOKEN_PREFIX.len() + 6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hashes_stable() {
        let a = new_read_token();
        let b = new_read_token();
        assert_ne!(a, b);
        assert!(a.starts_with(READ_TOKEN_PREFIX) && a.len() == READ_TOKEN_PREFIX.len() + 40);
        assert_eq!(hash_read_token(&a), hash_read_token(&a));
        assert_ne!(hash_read_token(&a), hash_read_token(&b));
        assert!(new_write_key().starts_with(WRITE_KEY_PREFIX));
        assert_eq!(display_prefix(&a).len(), READ_TOKEN_PREFIX.len() + 6);
    }
}
