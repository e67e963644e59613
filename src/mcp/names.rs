//! The names the model sees for MCP tools: `<server>__<tool>`, in `a-zA-Z0-9_-`, at most 64
//! characters; a name that would collide or be cut gets a 6-hex hash suffix.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

/// Longest name offered to the model (the providers' limit).
pub const MAX_TOOL_NAME: usize = 64;
/// Characters of a hash suffix (after its `_`).
const HASH_LEN: usize = 6;

/// The offered names of one server's tools, in the order of `tools`.
///
/// Each is `<server>__<tool>` with every character outside `a-zA-Z0-9_-` replaced by `_`. A
/// name that is longer than [`MAX_TOOL_NAME`], or that two tools would share after the
/// replacement, ends in `_` and 6 hex characters of the SHA-256 of the unreplaced name instead
/// (cut to fit); a tool whose name needed no replacement keeps it even when another tool's
/// replaced name equals it. `None` marks a tool that cannot be offered: a duplicate of an
/// earlier tool's name (a server's mistake). The result does not depend on the order of
/// `tools` except for which of two duplicates is kept.
pub fn offered_names(server: &str, tools: &[&str]) -> Vec<Option<String>> {
    struct Candidate {
        raw: String,
        clean: String,
        exact: bool,
    }
    let candidates: Vec<Candidate> = tools
        .iter()
        .map(|tool| {
            let raw = format!("{server}__{tool}");
            let clean: String = raw
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let exact = clean == raw && clean.len() <= MAX_TOOL_NAME;
            Candidate { raw, clean, exact }
        })
        .collect();
    // How many distinct tools each replaced name would stand for.
    let mut sharing: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for c in &candidates {
        sharing.entry(&c.clean).or_default().insert(&c.raw);
    }
    // Names that need no hash first (exact, or replaced without a collision), then the hashed.
    let mut names: Vec<Option<String>> = candidates
        .iter()
        .map(|c| {
            let collides = sharing.get(c.clean.as_str()).is_some_and(|s| s.len() > 1);
            let plain = c.exact || (c.clean.len() <= MAX_TOOL_NAME && !collides);
            plain.then(|| c.clean.clone())
        })
        .collect();
    for (i, c) in candidates.iter().enumerate() {
        if names[i].is_none() {
            names[i] = Some(hashed(&c.raw, &c.clean));
        }
    }
    // A name already given (a duplicate tool, or a hash that lands on a plain name) is dropped.
    let mut taken = BTreeSet::new();
    names
        .into_iter()
        .map(|name| name.filter(|n| taken.insert(n.clone())))
        .collect()
}

/// `clean` cut to leave room for `_` and the hash of `raw`.
fn hashed(raw: &str, clean: &str) -> String {
    let hash = hex::encode(Sha256::digest(raw.as_bytes()));
    // `clean` is ASCII, so any byte index is a character boundary.
    let keep = clean.len().min(MAX_TOOL_NAME - HASH_LEN - 1);
    format!("{}_{}", &clean[..keep], &hash[..HASH_LEN])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(server: &str, tools: &[&str]) -> Vec<Option<String>> {
        offered_names(server, tools)
    }

    fn is_valid(name: &str) -> bool {
        name.len() <= MAX_TOOL_NAME
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn plain_names_are_server_and_tool_joined() {
        assert_eq!(
            names("files", &["read", "write-all", "list_dir"]),
            vec![
                Some("files__read".into()),
                Some("files__write-all".into()),
                Some("files__list_dir".into())
            ]
        );
    }

    #[test]
    fn other_characters_become_underscores_without_a_hash_when_nothing_collides() {
        assert_eq!(
            names("web", &["search.v2", "é"]),
            vec![Some("web__search_v2".into()), Some("web___".into())]
        );
    }

    #[test]
    fn a_collision_hashes_the_replaced_names_and_the_exact_one_keeps_its_name() {
        let out = names("s", &["a.b", "a_b", "a b"]);
        assert_eq!(out[1].as_deref(), Some("s__a_b"));
        let (first, third) = (
            out[0].clone().unwrap_or_default(),
            out[2].clone().unwrap_or_default(),
        );
        assert!(
            first.starts_with("s__a_b_") && first.len() == "s__a_b_".len() + 6,
            "{first}"
        );
        assert!(third.starts_with("s__a_b_") && third != first, "{third}");
        // The hash depends on the tool, not on the order.
        let reversed = names("s", &["a b", "a_b", "a.b"]);
        assert_eq!(reversed[0], out[2]);
        assert_eq!(reversed[2], out[0]);
        // The suffix is the SHA-256 of the unreplaced name.
        let sha = hex::encode(Sha256::digest(b"s__a.b"));
        assert_eq!(first, format!("s__a_b_{}", &sha[..6]));
    }

    #[test]
    fn a_long_name_is_cut_to_64_with_a_hash() {
        let long = "t".repeat(70);
        let longer = format!("{long}x");
        let out = names("server", &[&long, &longer]);
        let (a, b) = (
            out[0].clone().unwrap_or_default(),
            out[1].clone().unwrap_or_default(),
        );
        assert_eq!(a.len(), MAX_TOOL_NAME);
        assert_eq!(b.len(), MAX_TOOL_NAME);
        assert_ne!(a, b, "two long names sharing a prefix stay apart");
        assert!(a.starts_with("server__ttt") && is_valid(&a), "{a}");
        // Exactly 64 is not cut.
        let fits = "u".repeat(MAX_TOOL_NAME - "server__".len());
        assert_eq!(
            names("server", &[&fits])[0].as_deref(),
            Some(&*format!("server__{fits}"))
        );
    }

    #[test]
    fn a_duplicate_tool_is_not_offered_twice_and_every_name_is_valid() {
        assert_eq!(names("s", &["x", "x"]), vec![Some("s__x".into()), None]);
        let odd = ["", "日本語", "a/b/c", "__", "-", &"ü".repeat(40)];
        for name in names("s-1", &odd).into_iter().flatten() {
            assert!(is_valid(&name), "{name}");
        }
    }
}
