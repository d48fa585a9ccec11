//! The endpoint host name: checking what the user typed, and reading the region out of it.

use crate::error::Error;

/// Check an endpoint host name as typed by the user. Accepts a bare host name or IP address;
/// refuses URLs and `host:port`, saying what to type instead.
pub(crate) fn parse_host(input: &str) -> Result<String, Error> {
    let host = input.trim();
    if host.is_empty() {
        return Err(Error::Usage("the endpoint is empty".into()));
    }
    if host.contains("://") || host.contains('/') {
        return Err(Error::Usage(format!(
            "the endpoint must be a host name, not a URL: '{host}' (e.g. abc123-ats.iot.eu-west-1.amazonaws.com)"
        )));
    }
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(host.to_string());
    }
    if let Some((_, port)) = host.rsplit_once(':') {
        return Err(Error::Usage(format!(
            "the endpoint must be a host name without a port: pass --port {port} instead"
        )));
    }
    if host.contains(char::is_whitespace) {
        return Err(Error::Usage(format!(
            "the endpoint '{host}' contains a space"
        )));
    }
    Ok(host.to_ascii_lowercase())
}

/// The AWS region of an IoT data endpoint: the label after `iot` in
/// `<prefix>-ats.iot.<region>.amazonaws.com` (also `.amazonaws.com.cn`).
/// Returns `None` for names that are not AWS IoT endpoints, such as `localhost`.
#[cfg(feature = "sigv4")]
pub(crate) fn region_from_endpoint(host: &str) -> Option<String> {
    let labels: Vec<&str> = host.split('.').collect();
    let iot = labels
        .iter()
        .position(|l| *l == "iot" || *l == "iot-fips")?;
    let region = labels.get(iot + 1)?;
    let is_aws = labels.get(iot + 2) == Some(&"amazonaws");
    let looks_like_region = region.split('-').count() >= 3
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    (iot >= 1 && is_aws && looks_like_region).then(|| region.to_string())
}

/// The `Host` header, and so the signed host, for a WebSocket URL on `port`: the port is part of
/// it unless it is 443, exactly as a WebSocket client writes it.
pub(crate) fn host_header(host: &str, port: u16) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == 443 {
        host
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "sigv4")]
    #[test]
    fn region_is_the_label_after_iot() {
        assert_eq!(
            region_from_endpoint("abc123-ats.iot.eu-west-1.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_from_endpoint("a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com").as_deref(),
            Some("us-east-1")
        );
        assert_eq!(
            region_from_endpoint("abc-ats.iot.cn-north-1.amazonaws.com.cn").as_deref(),
            Some("cn-north-1")
        );
    }

    #[cfg(feature = "sigv4")]
    #[test]
    fn no_region_for_names_that_are_not_aws_iot_endpoints() {
        assert_eq!(region_from_endpoint("localhost"), None);
        assert_eq!(region_from_endpoint("127.0.0.1"), None);
        assert_eq!(region_from_endpoint("iot.example.com"), None);
        assert_eq!(region_from_endpoint("broker.iot.local"), None);
    }

    #[test]
    fn host_header_carries_the_port_unless_443() {
        assert_eq!(
            host_header("abc-ats.iot.us-east-1.amazonaws.com", 443),
            "abc-ats.iot.us-east-1.amazonaws.com"
        );
        assert_eq!(host_header("localhost", 8443), "localhost:8443");
        assert_eq!(host_header("::1", 8443), "[::1]:8443");
    }

    #[test]
    fn urls_and_ports_in_the_endpoint_are_refused_with_advice() {
        let e = parse_host("https://abc-ats.iot.us-east-1.amazonaws.com/").unwrap_err();
        assert!(e.cause().contains("not a URL"));
        let e = parse_host("localhost:8883").unwrap_err();
        assert!(e.cause().contains("--port 8883"));
        assert_eq!(
            parse_host("  ABC-ats.iot.us-east-1.amazonaws.com ").unwrap(),
            "abc-ats.iot.us-east-1.amazonaws.com"
        );
        assert_eq!(parse_host("::1").unwrap(), "::1");
    }
}
