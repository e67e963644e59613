//! Which events a subscriber wants: exact names, `prefix.*` patterns, one session or all.

use super::envelope::Envelope;

/// Which events a subscriber wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    exact: Vec<String>,
    prefixes: Vec<String>,
    all: bool,
    session_key: Option<String>,
}

impl Filter {
    /// Builds a filter from exact names or `prefix.*` patterns (`None` is every event).
    pub fn new(events: Option<&[String]>, session_key: Option<String>) -> Result<Self, String> {
        let mut filter = Filter {
            session_key,
            ..Default::default()
        };
        match events {
            None => filter.all = true,
            Some(names) => {
                for (i, name) in names.iter().enumerate() {
                    if name == "*" {
                        filter.all = true;
                    } else if let Some(prefix) = name.strip_suffix(".*") {
                        if prefix.is_empty() || prefix.contains('*') {
                            return Err(format!("events[{i}]"));
                        }
                        filter.prefixes.push(format!("{prefix}."));
                    } else if name.is_empty() || name.contains('*') {
                        return Err(format!("events[{i}]"));
                    } else {
                        filter.exact.push(name.clone());
                    }
                }
            }
        }
        Ok(filter)
    }

    /// A filter that passes every event.
    pub fn default_all() -> Self {
        Filter {
            all: true,
            ..Default::default()
        }
    }

    /// Whether an ordinary event passes.
    pub fn matches(&self, env: &Envelope) -> bool {
        if let Some(key) = &self.session_key
            && env.session_key.as_deref() != Some(key.as_str())
        {
            return false;
        }
        self.all
            || self.exact.contains(&env.event)
            || self
                .prefixes
                .iter()
                .any(|p| env.event.starts_with(p.as_str()))
    }

    /// The one session this filter keeps to, if any: the hub indexes subscribers by it.
    pub(super) fn session_key(&self) -> Option<&str> {
        self.session_key.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(event: &str, session_key: Option<&str>) -> Envelope {
        Envelope {
            seq: 1,
            event: event.into(),
            session_key: session_key.map(str::to_string),
            json: "{}".into(),
            control: false,
            run_id: None,
            ends_run: false,
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_names_and_prefixes() {
        let f = Filter::new(Some(&names(&["chat", "sessions.*"])), None).expect("valid");
        assert!(f.matches(&env("chat", None)));
        assert!(f.matches(&env("sessions.changed", Some("k"))));
        assert!(
            !f.matches(&env("chat.delta", None)),
            "an exact name is not a prefix"
        );
        assert!(
            !f.matches(&env("sessions", None)),
            "`sessions.*` needs the dot and something after it"
        );
        assert!(!f.matches(&env("sessionsX", None)));
        assert!(!f.matches(&env("presence", None)));
    }

    #[test]
    fn every_event_by_none_star_or_default_all() {
        for f in [
            Filter::new(None, None).expect("valid"),
            Filter::new(Some(&names(&["chat", "*"])), None).expect("valid"),
            Filter::default_all(),
        ] {
            assert!(f.matches(&env("anything", None)));
            assert!(f.matches(&env("x.y", Some("k"))));
        }
        let none = Filter::new(Some(&[][..]), None).expect("valid");
        assert!(
            !none.matches(&env("chat", None)),
            "an empty list passes nothing"
        );
    }

    #[test]
    fn a_session_filter_passes_only_that_session() {
        let f = Filter::new(None, Some("a".into())).expect("valid");
        assert_eq!(f.session_key(), Some("a"));
        assert!(f.matches(&env("chat", Some("a"))));
        assert!(!f.matches(&env("chat", Some("b"))));
        assert!(
            !f.matches(&env("chat", None)),
            "an event of no session is not `a`'s"
        );
        assert_eq!(Filter::default_all().session_key(), None);
    }

    #[test]
    fn malformed_patterns_name_their_index() {
        for (list, at) in [
            (&["chat", "a*"][..], "events[1]"),
            (&[""][..], "events[0]"),
            (&[".*"][..], "events[0]"),
            (&["ok", "x", "a*.*"][..], "events[2]"),
            (&["*.*"][..], "events[0]"),
        ] {
            let err = Filter::new(Some(&names(list)), None).expect_err("refused");
            assert_eq!(err, at, "{list:?}");
        }
    }
}
