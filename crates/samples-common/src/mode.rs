//! [`AuthMode`]: how a sample authenticates. The one place that says so.
//!
//! The mode decides the default port (and so the `--port` help line) and which hints a failure
//! gets. `spec` builds a connection for each mode; `error` reads it to word the hint.

/// How the sample authenticates. It decides the default port and which hints apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// X.509 client certificate (mutual TLS).
    Mtls,
    /// MQTT over WebSocket, the upgrade request presigned with SigV4.
    SigV4WebSocket,
    /// Custom authorizer without token signing (username and password only).
    CustomAuthUnsigned,
    /// Custom authorizer with a signed token.
    CustomAuthSigned,
}

impl AuthMode {
    /// The port used when `--port` is not given: 8883 for mTLS, 443 for everything else
    /// (custom authentication and WebSockets are served on 443 only).
    pub(crate) fn default_port(self) -> u16 {
        match self {
            AuthMode::Mtls => 8883,
            AuthMode::SigV4WebSocket
            | AuthMode::CustomAuthUnsigned
            | AuthMode::CustomAuthSigned => 443,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mtls_defaults_to_8883() {
        assert_eq!(AuthMode::Mtls.default_port(), 8883);
        // websocket-connect relies on this: its three modes share one `--port` default.
        for mode in [
            AuthMode::SigV4WebSocket,
            AuthMode::CustomAuthUnsigned,
            AuthMode::CustomAuthSigned,
        ] {
            assert_eq!(mode.default_port(), 443, "{mode:?}");
        }
    }
}
