//! Which events a subscriber wants: exact names, `prefix.*` patterns, `<event>.<state>` for
//! the payloads of one state (`chat.final`), one session or all.
//!
//! States are tagged on the envelope when it is published ([`Envelope::state`]), so matching
//! compares short strings and never reads a payload's JSON, however many subscribers there are.

use super::envelope::Envelope;

/// The chat payload state that only filters naming it (`chat.delta`) pass, when the filter is
/// [`Filter::named_deltas_only`] (webhooks: deltas are many and small).
const DELTA: &str = "delta";
/// The event whose deltas [`Filter::named_deltas_only`] holds back.
const CHAT: &str = "chat";

/// Which events a subscriber wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    exact: Vec<String>,
    prefixes: Vec<String>,
    /// `(event, state)` of each name with a dot: `chat.final` passes `chat` payloads whose
    /// state is `final`.
    states: Vec<(String, String)>,
    all: bool,
    /// `chat` deltas pass only when `chat.delta` is named.
    named_deltas_only: bool,
    session_key: Option<String>,
}

impl Filter {
    /// Builds a filter from exact names, `prefix.*` patterns or `<event>.<state>` names (`None`
    /// is every event). `chat.*` passes every `chat` payload, `chat.final` those of state
    /// `final`.
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
                        if let Some((event, state)) = name.rsplit_once('.')
                            && !event.is_empty()
                            && !state.is_empty()
                        {
                            filter.states.push((event.to_string(), state.to_string()));
                        }
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

    /// This filter, passing `chat` deltas only when `chat.delta` is named (not for `chat`,
    /// `chat.*` or `*`).
    pub fn named_deltas_only(mut self) -> Self {
        self.named_deltas_only = true;
        self
    }

    /// Whether an ordinary event passes.
    pub fn matches(&self, env: &Envelope) -> bool {
        if let Some(key) = &self.session_key
            && env.session_key.as_deref() != Some(key.as_str())
        {
            return false;
        }
        if let Some(state) = env.state.as_deref() {
            if self
                .states
                .iter()
                .any(|(event, s)| *event == env.event && s == state)
            {
                return true;
            }
            if self.named_deltas_only && state == DELTA && env.event == CHAT {
                return false;
            }
            // `chat.*`: every payload of `chat`, whatever its state.
            if self
                .prefixes
                .iter()
                .any(|p| p.strip_suffix('.') == Some(env.event.as_str()))
            {
                return true;
            }
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
            state: None,
        }
    }

    fn chat(state: &str) -> Envelope {
        Envelope {
            state: Some(state.into()),
            ..env("chat", Some("k"))
        }
    }

    #[test]
    fn chat_states_select_payloads_of_one_state() {
        let f = Filter::new(Some(&names(&["chat.final", "chat.error"])), None).expect("valid");
        assert!(f.matches(&chat("final")));
        assert!(f.matches(&chat("error")));
        assert!(!f.matches(&chat("delta")));
        assert!(!f.matches(&chat("started")));
        assert!(
            !f.matches(&env("chat", None)),
            "an untagged chat event has no state"
        );
        let every = Filter::new(Some(&names(&["chat.*"])), None).expect("valid");
        for state in ["delta", "final", "approval_requested", "injected"] {
            assert!(every.matches(&chat(state)), "{state}");
        }
        assert!(!every.matches(&env("sessions.changed", None)));
        // A state filter of another event does not pass chat payloads.
        let other = Filter::new(Some(&names(&["sessions.final"])), None).expect("valid");
        assert!(!other.matches(&chat("final")));
    }

    #[test]
    fn named_deltas_only_holds_back_deltas_unless_named() {
        for list in [&["chat"][..], &["chat.*"][..], &["*"][..]] {
            let f = Filter::new(Some(&names(list)), None)
                .expect("valid")
                .named_deltas_only();
            assert!(f.matches(&chat("final")), "{list:?}");
            assert!(!f.matches(&chat("delta")), "{list:?}");
        }
        let f = Filter::new(Some(&names(&["chat", "chat.delta"])), None)
            .expect("valid")
            .named_deltas_only();
        assert!(f.matches(&chat("delta")));
        assert!(f.matches(&chat("final")));
        // Without the option, `chat` passes deltas as it always did.
        let plain = Filter::new(Some(&names(&["chat"])), None).expect("valid");
        assert!(plain.matches(&chat("delta")));
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
