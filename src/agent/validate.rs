//! Checks of `chat.send` and `chat.inject` params that types alone cannot express (to be
//! replaced by the validating newtypes of `protocol`).

use crate::error::Error;
use crate::protocol::MAX_CONTENT_BYTES;

/// Checks message text: not blank, at most `MAX_CONTENT_BYTES`; errors name `field`.
pub fn validate_content(field: &str, text: &str) -> Result<(), Error> {
    if text.trim().is_empty() {
        return Err(Error::invalid_params(
            field,
            "expected non-empty text, found only whitespace",
        ));
    }
    if text.len() > MAX_CONTENT_BYTES {
        return Err(Error::invalid_params(
            field,
            format!(
                "expected at most {MAX_CONTENT_BYTES} bytes, found {}",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// Checks `chat.send` params that types alone cannot.
pub fn validate_send(
    message: &str,
    idempotency_key: Option<&str>,
    model: Option<&str>,
) -> Result<(), Error> {
    validate_content("message", message)?;
    if let Some(k) = idempotency_key
        && crate::protocol::validate_session_key(k).is_err()
    {
        return Err(Error::invalid_params(
            "idempotencyKey",
            "expected 1 to 128 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
    if let Some(m) = model
        && (m.trim().is_empty() || m.len() > 256)
    {
        return Err(Error::invalid_params(
            "model",
            "expected a model name of 1 to 256 characters",
        ));
    }
    Ok(())
}
