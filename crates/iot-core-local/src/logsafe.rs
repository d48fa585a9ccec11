//! Client-supplied text on its way to a log line.
//!
//! A client id, a username, an authorizer name or a header value can carry a newline or any other
//! control character; written as it is, it would forge log lines (`... allowed: FORGED`). Every
//! such string is written through [`escaped`], which keeps printable text and writes each control
//! character as a Rust-style escape (`\n`, `\r`, `\t`, `\u{1b}`, ...), and a backslash as `\\`
//! so that an escape sent by the client cannot pass for one written here.

use std::fmt;

/// `s`, displayed with its control characters and backslashes escaped.
pub fn escaped(s: &str) -> Escaped<'_> {
    Escaped(s)
}

/// See [`escaped`].
#[derive(Clone, Copy)]
pub struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(|c: char| c.is_control() || c == '\\') {
            f.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or_default();
            match c {
                '\\' => f.write_str("\\\\")?,
                c => write!(f, "{}", c.escape_default())?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{self}'")
    }
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn control_characters_cannot_start_a_new_line() {
        let forged = "dev\n127.0.0.1:1 [443 mtls] client 'x': allowed: FORGED";
        let out = escaped(forged).to_string();
        assert!(!out.contains('\n'));
        assert_eq!(
            out,
            "dev\\n127.0.0.1:1 [443 mtls] client 'x': allowed: FORGED"
        );
        assert_eq!(
            escaped("a\r\tb\u{1b}[31m\u{7f}").to_string(),
            "a\\r\\tb\\u{1b}[31m\\u{7f}"
        );
    }

    #[test]
    fn backslashes_are_doubled_and_printable_text_is_kept() {
        assert_eq!(escaped("a\\nb").to_string(), "a\\\\nb");
        assert_eq!(
            escaped("test-1 é ✓ $aws/x").to_string(),
            "test-1 é ✓ $aws/x"
        );
        assert_eq!(escaped("").to_string(), "");
        assert_eq!(format!("{:?}", escaped("a\nb")), "'a\\nb'");
    }
}
