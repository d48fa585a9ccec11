//! iot-core-local: a local stand-in for an AWS IoT Core data endpoint.
//!
//! It enforces what AWS IoT Core enforces on connection (the project's reference notes on
//! AWS IoT Core connections), so that a sample refused by AWS is refused here
//! with the same symptom, and one accepted here is accepted there. Read it in the order a
//! connection travels:
//!
//! - [`tls`]: the two listeners' TLS, and the ALPN route (mTLS, custom auth, WebSocket);
//! - [`websocket`]: the `GET /mqtt` upgrade, with [`sigv4`] verification;
//! - [`mqtt`]: the MQTT 3.1.1 and 5 codec: CONNECT, the CONNACKs, every packet after it;
//! - [`auth`]: authentication ([`mtls`] registry, SigV4 key, [`custom_auth`] authorizers) and
//!   authorization ([`policy`], `iot:Connect` on `client/<clientId>`; [`x509`] reads the
//!   certificate names its variables use); [`renewal`] asks a custom authorizer again while
//!   its connection is up;
//! - [`broker`]: the MQTT broker, in process, with IoT Core's semantics (QoS 0/1, retained on
//!   the exact filter only, `a/#` not matching `a`, takeover, sessions up to 1 h), and a policy
//!   check at every PUBLISH, SUBSCRIBE and delivery against the same policies; or `--upstream`,
//!   a bridge to an external broker (which checks nothing after `iot:Connect`);
//! - [`server`]: the listeners and the per-connection pipeline; [`init`]: the local account;
//!   [`config`]: its TOML file.
//!
//! The SigV4 verifier ([`sigv4`]) is written independently of the presigner the samples use
//! (`samples-common`): the two share no canonicalisation code, so that the tests, which check
//! each against the other, can catch a mistake in either. Do not make one call the other.
//!
//! Not for: production use, policies beyond what [`policy`] evaluates (a document using anything
//! else is refused, not partly applied), or anything other than loopback by default.

#![forbid(unsafe_code)]

pub mod auth;
pub mod broker;
pub mod config;
pub mod custom_auth;
pub mod init;
pub mod logsafe;
pub mod mqtt;
pub mod mtls;
pub mod policy;
pub mod renewal;
pub mod server;
pub mod sigv4;
pub mod tls;
pub mod websocket;
pub mod x509;
