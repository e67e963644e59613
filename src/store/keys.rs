//! Names the store makes up (keys of new sessions, of forks, of recovered transcripts) and the
//! file names it accepts as session ids.

/// A fresh key for a session created without one: `s-` and 12 hex digits.
pub(super) fn new_session_key() -> String {
    format!("s-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A fresh key for a fork of `key` made without one: `<key>-fork-` and 8 hex digits, the key
/// cut to 100 characters so the result stays a valid key.
pub(super) fn fork_key(key: &str) -> String {
    format!(
        "{}-fork-{}",
        truncate_key(key, 100),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A fresh transcript id (also its file name, before `.jsonl`).
pub(super) fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The first `max` characters of `key`.
fn truncate_key(key: &str, max: usize) -> &str {
    match key.char_indices().nth(max) {
        Some((i, _)) => &key[..i],
        None => key,
    }
}

/// The key a transcript is kept under when its own is missing or invalid.
pub(super) fn recovered_key(id: &str) -> String {
    format!("recovered:{id}")
}

/// Whether `id` (a file name without `.jsonl`) can be a transcript id: 1 to 64 of
/// `A-Z a-z 0-9 - _`.
pub(super) fn valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::validate_session_key;

    #[test]
    fn made_up_keys_are_valid_keys() {
        let key = new_session_key();
        assert!(key.starts_with("s-") && key.len() == 14, "{key}");
        assert!(validate_session_key(&key).is_ok());
        let long = "k".repeat(128);
        let fork = fork_key(&long);
        assert!(
            fork.starts_with(&format!("{}-fork-", "k".repeat(100))),
            "{fork}"
        );
        assert_eq!(fork.len(), 100 + "-fork-".len() + 8);
        assert!(validate_session_key(&fork).is_ok(), "{fork}");
        assert!(fork_key("main").starts_with("main-fork-"));
        assert_ne!(fork_key("main"), fork_key("main"));
        assert!(validate_session_key(&recovered_key(&new_session_id())).is_ok());
        assert!(valid_session_id(&new_session_id()));
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate_key("abcdef", 3), "abc");
        assert_eq!(truncate_key("abc", 3), "abc");
        assert_eq!(truncate_key("ab", 3), "ab");
        assert_eq!(truncate_key("ééé", 2), "éé");
        assert_eq!(truncate_key("", 2), "");
    }

    #[test]
    fn session_ids_are_plain_names() {
        for ok in [
            "a",
            "0f8c2a6e4b5d4c3e9a1b2c3d4e5f6a7b",
            "a-b_c",
            &"x".repeat(64),
        ] {
            assert!(valid_session_id(ok), "{ok}");
        }
        for bad in ["", "a.b", "../x", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_session_id(bad), "{bad}");
        }
    }
}
