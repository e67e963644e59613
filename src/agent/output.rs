//! The cut applied to a tool's output before it is stored and shown: at most
//! [`MAX_TOOL_OUTPUT`] bytes, never splitting a UTF-8 character, with a marker saying so.

/// Stored tool output is cut at this many bytes, with a marker.
pub const MAX_TOOL_OUTPUT: usize = 256 * 1024;

/// Cuts stored tool output at [`MAX_TOOL_OUTPUT`] bytes, saying so.
pub fn cut_output(mut text: String) -> String {
    if text.len() <= MAX_TOOL_OUTPUT {
        return text;
    }
    let mut end = MAX_TOOL_OUTPUT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let total = text.len();
    text.truncate(end);
    text.push_str(&format!(
        "\n[output cut at {MAX_TOOL_OUTPUT} bytes of {total}]"
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(total: usize) -> String {
        format!("\n[output cut at {MAX_TOOL_OUTPUT} bytes of {total}]")
    }

    #[test]
    fn output_up_to_the_limit_is_kept_whole() {
        assert_eq!(cut_output(String::new()), "");
        assert_eq!(cut_output("short".into()), "short");
        let under = "a".repeat(MAX_TOOL_OUTPUT - 1);
        assert_eq!(cut_output(under.clone()), under);
        let at = "a".repeat(MAX_TOOL_OUTPUT);
        assert_eq!(cut_output(at.clone()), at, "exactly the limit is not cut");
    }

    #[test]
    fn output_over_the_limit_is_cut_at_the_limit_with_a_marker() {
        let over = "a".repeat(MAX_TOOL_OUTPUT + 1);
        let cut = cut_output(over);
        assert_eq!(
            cut,
            format!(
                "{}{}",
                "a".repeat(MAX_TOOL_OUTPUT),
                marker(MAX_TOOL_OUTPUT + 1)
            )
        );
        assert_eq!(
            marker(MAX_TOOL_OUTPUT + 1),
            "\n[output cut at 262144 bytes of 262145]"
        );
        let far = "b".repeat(3 * MAX_TOOL_OUTPUT);
        assert!(cut_output(far).ends_with(&marker(3 * MAX_TOOL_OUTPUT)));
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // A 4-byte character placed at every offset across the limit.
        for shift in 0..4 {
            let mut text = "a".repeat(MAX_TOOL_OUTPUT - 4 + shift);
            while text.len() <= MAX_TOOL_OUTPUT + 8 {
                text.push('😀');
            }
            let total = text.len();
            let cut = cut_output(text.clone());
            let kept = cut
                .strip_suffix(&marker(total))
                .expect("the marker ends the cut output");
            assert!(kept.len() <= MAX_TOOL_OUTPUT, "shift {shift}");
            assert!(
                kept.len() > MAX_TOOL_OUTPUT - 4,
                "shift {shift}: cut at most one character short"
            );
            assert!(text.is_char_boundary(kept.len()), "shift {shift}");
            assert!(text.starts_with(kept), "shift {shift}");
        }
        // A 2-byte character straddling the limit is left out whole.
        let mut text = "a".repeat(MAX_TOOL_OUTPUT - 1);
        text.push('é');
        text.push_str("tail");
        let total = text.len();
        assert_eq!(
            cut_output(text),
            format!("{}{}", "a".repeat(MAX_TOOL_OUTPUT - 1), marker(total))
        );
    }
}
