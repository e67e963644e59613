//! The listing order of sessions and the cursor that resumes a listing after a given session.
//!
//! Sessions are listed most recently updated first, then by key. A cursor is the position of
//! the last session of a page (its `updated_at` and key), so a listing resumes right after it
//! even when that session was changed or deleted meanwhile. It is opaque to clients (hex of
//! `<updated_at>:<key>`) but carries no secret: it names a position, never grants anything.

use std::ops::Range;

use crate::protocol::validate_session_key;

/// A position in the listing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cursor {
    /// The `updated_at` of the last session listed.
    pub(super) updated_at: u64,
    /// Its key.
    pub(super) key: String,
}

impl Cursor {
    /// The position of the session `key` last updated at `updated_at`.
    pub(super) fn new(updated_at: u64, key: &str) -> Self {
        Self {
            updated_at,
            key: key.to_string(),
        }
    }

    /// The text handed to clients.
    pub(super) fn encode(&self) -> String {
        hex::encode(format!("{}:{}", self.updated_at, self.key))
    }

    /// The position `text` names; `None` unless it is what [`encode`](Self::encode) makes of a
    /// valid session key.
    pub(super) fn decode(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (ts, key) = text.split_once(':')?;
        let updated_at = ts.parse().ok()?;
        validate_session_key(key).ok()?;
        Some(Self {
            updated_at,
            key: key.to_string(),
        })
    }
}

/// One row to list: a session's `updated_at`, its key, and whatever the caller lists it by.
pub(super) type Row<'a, T> = (u64, &'a str, T);

/// Puts `rows` in listing order: most recently updated first, ties by key.
pub(super) fn sort<T>(rows: &mut [Row<'_, T>]) {
    rows.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
}

/// The rows of the page of at most `limit` rows after `after` (from the start without one) in
/// `rows` (in listing order), and whether rows remain after that page.
pub(super) fn page<T>(
    rows: &[Row<'_, T>],
    after: Option<&Cursor>,
    limit: usize,
) -> (Range<usize>, bool) {
    let start = match after {
        None => 0,
        Some(c) => rows.partition_point(|(t, k, _)| {
            *t > c.updated_at || (*t == c.updated_at && *k <= c.key.as_str())
        }),
    };
    let end = start + limit.min(rows.len() - start);
    (start..end, end < rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips() {
        for (ts, key) in [(0, "main"), (u64::MAX, "a:b.c_d-e"), (1767225600000, "k")] {
            let cursor = Cursor::new(ts, key);
            let text = cursor.encode();
            assert!(text.chars().all(|c| c.is_ascii_hexdigit()), "{text}");
            assert_eq!(Cursor::decode(&text), Some(cursor));
        }
        // The key may itself hold `:`; the time stamp is what comes before the first one.
        assert_eq!(
            Cursor::decode(&hex::encode("5:agent:main")),
            Some(Cursor::new(5, "agent:main"))
        );
    }

    #[test]
    fn a_tampered_or_foreign_cursor_is_refused() {
        let good = Cursor::new(42, "main").encode();
        let mut flipped = good.clone().into_bytes();
        flipped[0] = b'z';
        let refused = [
            "".to_string(),
            "not-a-cursor".into(),
            good[1..].to_string(),                          // odd length
            String::from_utf8(flipped).unwrap_or_default(), // not hex
            hex::encode([0xff, 0xfe, b':', b'k']),          // not UTF-8
            hex::encode("42"),                              // no key
            hex::encode("42:"),                             // empty key
            hex::encode(":main"),                           // no time stamp
            hex::encode("-1:main"),                         // negative
            hex::encode("4.2:main"),                        // not an integer
            hex::encode("99999999999999999999999:main"),    // past u64
            hex::encode("42:has space"),                    // not a session key
            hex::encode(format!("42:{}", "k".repeat(129))),
            "eyJvZmZzZXQiOjEwfQ==".into(), // another API's base64 cursor
            "00000000000000000000000000000000".into(),
        ];
        for text in refused {
            assert_eq!(Cursor::decode(&text), None, "{text:?}");
        }
    }

    fn rows<'a>(pairs: &[(u64, &'a str)]) -> Vec<Row<'a, ()>> {
        let mut rows: Vec<Row<'a, ()>> = pairs.iter().map(|&(t, k)| (t, k, ())).collect();
        sort(&mut rows);
        rows
    }

    fn keys<'a>(rows: &[Row<'a, ()>], range: Range<usize>) -> Vec<&'a str> {
        rows[range].iter().map(|r| r.1).collect()
    }

    #[test]
    fn newest_first_and_ties_by_key() {
        let rows = rows(&[(1, "b"), (3, "z"), (2, "c"), (3, "a"), (1, "a")]);
        let order: Vec<_> = rows.iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(order, [(3, "a"), (3, "z"), (2, "c"), (1, "a"), (1, "b")]);
    }

    #[test]
    fn paging_visits_every_row_once_and_stops_at_the_end() {
        let pairs: Vec<(u64, String)> = (0..7).map(|i| (i / 2, format!("k{i}"))).collect();
        let pairs: Vec<(u64, &str)> = pairs.iter().map(|(t, k)| (*t, k.as_str())).collect();
        let rows = rows(&pairs);
        for limit in 1..=8 {
            let mut seen = Vec::new();
            let mut after: Option<Cursor> = None;
            loop {
                let (range, more) = page(&rows, after.as_ref(), limit);
                assert!(range.len() <= limit);
                seen.extend(keys(&rows, range.clone()));
                if !more {
                    break;
                }
                let last = &rows[range.end - 1];
                after = Some(Cursor::new(last.0, last.1));
            }
            let all: Vec<&str> = rows.iter().map(|r| r.1).collect();
            assert_eq!(seen, all, "limit {limit}");
        }
    }

    #[test]
    fn page_boundaries() {
        let rows = rows(&[(3, "a"), (2, "b"), (1, "c")]);
        assert_eq!(page(&rows, None, 3), (0..3, false), "exactly the rest");
        assert_eq!(page(&rows, None, 2), (0..2, true));
        assert_eq!(page(&rows, None, 100), (0..3, false));
        assert_eq!(page(&rows, None, 0), (0..0, true));
        let after_last = Cursor::new(1, "c");
        assert_eq!(page(&rows, Some(&after_last), 5), (3..3, false));
        assert_eq!(page(&[] as &[Row<'_, ()>], None, 5), (0..0, false));
        // The session of the cursor is gone or was updated: resume after its old position.
        let gone = Cursor::new(2, "a");
        assert_eq!(keys(&rows, page(&rows, Some(&gone), 5).0), ["b", "c"]);
        let between = Cursor::new(2, "c");
        assert_eq!(keys(&rows, page(&rows, Some(&between), 5).0), ["c"]);
        // A cursor from before every row (newer than all) resumes at the start.
        let newest = Cursor::new(9, "z");
        assert_eq!(page(&rows, Some(&newest), 5), (0..3, false));
    }
}
