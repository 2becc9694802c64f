//! Pointing at a place in a text file, for configuration errors that must
//! name the line.

/// `message` about the byte at `offset` of `text` (if known), as
/// `line L, column C: message (in `that line`)`. The line is quoted because
/// the TOML parser's messages do not always name the key.
pub fn describe_parse_error(text: &str, message: &str, offset: Option<usize>) -> String {
    let message = message.trim_end();
    let Some(offset) = offset else {
        return message.to_owned();
    };
    let mut start = offset.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let line = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..start].chars().count() + 1;
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    match text[line_start..line_end].trim() {
        "" => format!("line {line}, column {column}: {message}"),
        source => format!("line {line}, column {column}: {message} (in `{source}`)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_line_column_and_quotes_the_line() {
        let text = "a = 1\nport = 70000\n";
        assert_eq!(
            describe_parse_error(text, "too big\n", Some(13)),
            "line 2, column 8: too big (in `port = 70000`)"
        );
        assert_eq!(describe_parse_error(text, "eh", None), "eh");
        assert_eq!(
            describe_parse_error(text, "end", Some(99)),
            "line 3, column 1: end"
        );
    }
}
