//! Percent-encoding of query values, shared by the custom-auth username, the SigV4 query and the
//! secret mask. A leaf module: it depends on nothing else in this crate.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encode every byte outside `A-Z a-z 0-9 - _ . ~` (RFC 3986 unreserved), as AWS
/// SigV4 and the custom-authorizer username expect.
pub fn url_encode(value: &str) -> String {
    utf8_percent_encode(value, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encode_keeps_only_unreserved() {
        assert_eq!(
            url_encode("aZ09-_.~ +/=%?&"),
            "aZ09-_.~%20%2B%2F%3D%25%3F%26"
        );
    }
}
