//! HMAC-SHA256 signatures of webhooks, both ways: `sha256=<lowercase hex>` header values.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of every signature header value.
pub const PREFIX: &str = "sha256=";

/// `sha256=<hex>` of the HMAC-SHA256 of the concatenated `parts` under `secret`.
pub fn signature(secret: &[u8], parts: &[&[u8]]) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return String::new();
    };
    for part in parts {
        mac.update(part);
    }
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// The signature of an outgoing delivery: over `"<timestamp>.<body>"`.
pub fn delivery_signature(secret: &[u8], timestamp_ms: u64, body: &[u8]) -> String {
    signature(secret, &[timestamp_ms.to_string().as_bytes(), b".", body])
}

/// Whether `header` (`sha256=<hex>`, hex in either case) is the HMAC-SHA256 of `body` under
/// `secret`; the comparison takes the same time wherever the bytes differ.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_part) = header.trim().strip_prefix(PREFIX) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_part) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_4231_vector_and_verifies_its_own() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = signature(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &sig));
        assert!(verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &sig.to_uppercase().replace("SHA256=", "sha256=")
        ));
        assert!(!verify(b"Jefe", b"what do ya want for nothing!", &sig));
        assert!(!verify(b"jefe", b"what do ya want for nothing?", &sig));
        assert!(!verify(b"Jefe", b"x", "sha1=00"));
        assert!(!verify(b"Jefe", b"x", "sha256=zz"));
        assert_eq!(
            delivery_signature(b"k", 12, b"{}"),
            signature(b"k", &[b"12.{}"])
        );
    }
}
