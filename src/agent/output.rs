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
