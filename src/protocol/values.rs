//! Rules for wire values checked in several places: the limits and the session key check.

/// The most characters a label may have.
pub const MAX_LABEL_CHARS: usize = 128;
/// The most bytes a message or content may have.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;

/// The most characters an idempotency key may have.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// Checks a session key: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
pub fn validate_session_key(key: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if key.is_empty() || key.len() > 128 || !key.chars().all(ok_char) {
        return Err("expected 1 to 128 characters of A-Z a-z 0-9 . _ : -".into());
    }
    Ok(())
}
