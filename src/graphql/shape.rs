//! The one check made on the query text before it is parsed: how deep its
//! brackets nest. Everything else is measured on the parsed document
//! ([`super::cost`]).

/// Deepest bracket nesting a query text may have before it is parsed. The
/// parser recurses on nested list and object values without a limit, so a
/// few kilobytes of `[[[[…` would overflow a worker's stack.
pub const MAX_NESTING: usize = 64;

/// Whether `text` nests `(`, `[` and `{` at most [`MAX_NESTING`] deep
/// (outside strings, block strings and comments).
pub fn nesting_ok(text: &str) -> bool {
    let (mut depth, mut in_string, mut escaped, mut in_comment) = (0usize, false, false, false);
    for b in text.bytes() {
        if in_comment {
            in_comment = b != b'\n' && b != b'\r';
            continue;
        }
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true, // a block string's quotes toggle in pairs, same result
            b'#' => in_comment = true,
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return false;
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_caught_before_the_parser_sees_it() {
        let deep = format!(
            "{{ thread(id: \"t\") {{ messages(limit: {}1{}) {{ id }} }} }}",
            "[".repeat(3000),
            "]".repeat(3000)
        );
        assert!(!nesting_ok(&deep));
        assert!(nesting_ok(
            "{ thread(id: \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\") { id } }"
        ));
        assert!(nesting_ok("# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n{ a }"));
        assert!(nesting_ok(&format!("{}{}", "{".repeat(64), "}".repeat(64))));
        assert!(!nesting_ok(&"{".repeat(65)));
    }
}
