//! Building the [`ConnectionSpec`] for each kind of authentication from parsed options.
//!
//! These are what the samples' `main` functions call; each one applies the rules of the
//! reference for its mode (port, ALPN, where the credentials travel). Which mode
//! websocket-connect runs in is decided here too, by [`websocket_mode`].

use std::path::Path;

use crate::args::{ConnectionArgs, CustomAuthArgs, TokenArgs};
use crate::connect::{Carrier, ConnectionSpec};
use crate::custom_auth::{build_username, check_signature, TokenSigner, UsernameParts};
use crate::error::Error;
use crate::mode::AuthMode;
use crate::secrets;
use crate::tls::{client_config, TlsClient, TlsOptions, ALPN_MQTT, ALPN_MQTT_CA};

/// mTLS: port 8883 without ALPN; on 443 (or any other port, such as a local endpoint's stand-in
/// for 443) offering ALPN `x-amzn-mqtt-ca`.
pub fn mtls(conn: &ConnectionArgs, cert: &Path, key: &Path) -> Result<ConnectionSpec, Error> {
    let port = conn.port_or(AuthMode::Mtls.default_port());
    let tls = client_config(&TlsOptions {
        ca_file: conn.ca_file.as_deref(),
        client_cert: Some((cert, key)),
        alpn: (port != 8883).then_some(ALPN_MQTT_CA),
    })?;
    base(conn, AuthMode::Mtls, port, tls, Carrier::Tls, None, None)
}

/// Custom authorizer: MQTT over TLS on 443 with ALPN `mqtt`, or MQTT over WebSocket; either way
/// the authorizer parameters travel in the MQTT username. With `token`, the token and its
/// signature (given, or made here from `--authorizer-private-key`) are added.
pub fn custom_auth(
    conn: &ConnectionArgs,
    auth: &CustomAuthArgs,
    token: Option<&TokenArgs>,
    websockets: bool,
) -> Result<ConnectionSpec, Error> {
    let mode = if token.is_some() {
        AuthMode::CustomAuthSigned
    } else {
        AuthMode::CustomAuthUnsigned
    };
    let port = conn.port_or(mode.default_port());
    let tls = client_config(&TlsOptions {
        ca_file: conn.ca_file.as_deref(),
        client_cert: None,
        alpn: (!websockets).then_some(ALPN_MQTT),
    })?;

    let signature = match token {
        Some(t) => {
            t.require_complete()?;
            match (&t.authorizer_private_key, &t.authorizer_signature) {
                (Some(key), _) => {
                    let signer = TokenSigner::from_pem_file(key)?;
                    let value = t.authorizer_token_key_value.as_deref().unwrap_or_default();
                    Some(signer.sign(value)?)
                }
                (None, Some(sig)) => {
                    check_signature(sig).map_err(Error::BadSignature)?;
                    Some(sig.clone())
                }
                (None, None) => None,
            }
        }
        None => None,
    };
    if let Some(sig) = &signature {
        secrets::register(sig);
    }
    if let Some(pw) = &auth.password {
        secrets::register(pw);
    }

    let username = build_username(&UsernameParts {
        username: auth.username.as_deref(),
        authorizer: auth.authorizer.as_deref(),
        signature: signature.as_deref(),
        token_key_name: token.and_then(|t| t.authorizer_token_key_name.as_deref()),
        token_value: token.and_then(|t| t.authorizer_token_key_value.as_deref()),
    });
    let carrier = if websockets {
        Carrier::WebSocket { sign: None }
    } else {
        Carrier::Tls
    };
    base(
        conn,
        mode,
        port,
        tls,
        carrier,
        username,
        auth.password.clone(),
    )
}

/// The mode websocket-connect runs in: SigV4 unless a custom-auth option is given, and then
/// signed if any token option is given.
pub fn websocket_mode(auth: &CustomAuthArgs, token: &TokenArgs) -> AuthMode {
    match (auth.is_empty(), token.is_empty()) {
        (true, true) => AuthMode::SigV4WebSocket,
        (_, true) => AuthMode::CustomAuthUnsigned,
        (_, false) => AuthMode::CustomAuthSigned,
    }
}

/// websocket-connect: MQTT over WebSocket in the mode [`websocket_mode`] picks, SigV4 (for
/// `region`, or the endpoint's) or a custom authorizer.
#[cfg(feature = "sigv4")]
pub async fn websocket(
    conn: &ConnectionArgs,
    auth: &CustomAuthArgs,
    token: &TokenArgs,
    region: Option<&str>,
) -> Result<ConnectionSpec, Error> {
    match websocket_mode(auth, token) {
        AuthMode::SigV4WebSocket => sigv4_websocket(conn, region).await,
        mode => {
            let signed = (mode == AuthMode::CustomAuthSigned).then_some(token);
            custom_auth(conn, auth, signed, true)
        }
    }
}

/// SigV4-signed MQTT over WebSocket on 443: the upgrade request is presigned on every attempt.
#[cfg(feature = "sigv4")]
pub async fn sigv4_websocket(
    conn: &ConnectionArgs,
    region: Option<&str>,
) -> Result<ConnectionSpec, Error> {
    use crate::websocket::{CredentialSource, RequestSigner};
    use std::sync::Arc;

    let host = conn.host()?;
    let region = match region {
        Some(r) => r.to_string(),
        None => crate::endpoint::region_from_endpoint(&host).ok_or_else(|| {
            Error::Usage(format!(
                "cannot tell the AWS region from the endpoint '{host}': pass --signing-region"
            ))
        })?,
    };
    let tls = client_config(&TlsOptions {
        ca_file: conn.ca_file.as_deref(),
        client_cert: None,
        alpn: None,
    })?;
    let credentials = CredentialSource::load_default_chain(&region).await?;
    log::info!("signing for region {region}");
    let signer = RequestSigner::new(credentials, region);
    let sign: crate::connect::RequestModifier = Arc::new(move |req| {
        let signer = signer.clone();
        Box::pin(async move { signer.sign(req).await })
    });
    base(
        conn,
        AuthMode::SigV4WebSocket,
        conn.port_or(AuthMode::SigV4WebSocket.default_port()),
        tls,
        Carrier::WebSocket { sign: Some(sign) },
        None,
        None,
    )
}

fn base(
    conn: &ConnectionArgs,
    mode: AuthMode,
    port: u16,
    tls: TlsClient,
    carrier: Carrier,
    username: Option<String>,
    password: Option<String>,
) -> Result<ConnectionSpec, Error> {
    let host = conn.host()?;
    Ok(ConnectionSpec {
        mode,
        proxy: conn.proxy(&host)?,
        host,
        port,
        tls,
        carrier,
        client_id: conn.client_id()?,
        mqtt_version: conn.mqtt_version,
        username,
        password,
        keep_alive: conn.keep_alive(),
        timeout: conn.timeout(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::tests::TestArgs;

    fn parse(args: &[&str]) -> TestArgs {
        crate::args::tests::parse(args).unwrap()
    }

    #[test]
    fn websocket_mode_is_sigv4_unless_custom_auth_options_are_given() {
        let mode = |args: &[&str]| {
            let a = parse(args);
            websocket_mode(&a.auth, &a.token)
        };
        assert_eq!(mode(&["h"]), AuthMode::SigV4WebSocket);
        assert_eq!(
            mode(&["--authorizer", "a", "h"]),
            AuthMode::CustomAuthUnsigned
        );
        assert_eq!(
            mode(&["--username", "u", "h"]),
            AuthMode::CustomAuthUnsigned
        );
        assert_eq!(
            mode(&["--authorizer", "a", "--authorizer-token-key-name", "t", "h"]),
            AuthMode::CustomAuthSigned
        );
        assert_eq!(
            mode(&["--authorizer-signature", "QUJD", "h"]),
            AuthMode::CustomAuthSigned
        );
    }

    const TOKEN: [&str; 4] = [
        "--authorizer-token-key-name",
        "token",
        "--authorizer-token-key-value",
        "allow",
    ];

    fn signed(signature: &str) -> Result<ConnectionSpec, Error> {
        let mut args = vec!["--authorizer", "auth"];
        args.extend(TOKEN);
        args.extend(["--authorizer-signature", signature, "localhost"]);
        let a = parse(&args);
        custom_auth(&a.conn, &a.auth, Some(&a.token), false)
    }

    #[test]
    fn a_signature_that_is_not_base64_is_a_usage_error_before_connecting() {
        let e = signed("0123456789abcdef-not_base64").err().unwrap();
        assert!(
            matches!(
                e,
                Error::BadSignature(crate::error::SignatureProblem::InvalidCharacter(17))
            ),
            "{e:?}"
        );
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.cause(),
            "--authorizer-signature is not base64: character 17 is not in the base64 alphabet \
             (A-Z a-z 0-9 + / =)"
        );
        assert_eq!(
            e.hint(AuthMode::CustomAuthSigned),
            "pass the signature as `openssl base64 -A` prints it (standard base64 on one line; \
             URL-encoded is fine too), or let the sample sign with --authorizer-private-key"
        );
    }

    #[test]
    fn a_base64_signature_raw_or_url_encoded_is_taken_as_given() {
        for given in ["ab+c/d==", "ab%2Bc%2Fd%3D%3D"] {
            let spec = signed(given).unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(
                spec.username.as_deref(),
                Some(
                    "?x-amz-customauthorizer-name=auth\
                     &x-amz-customauthorizer-signature=ab%2Bc%2Fd%3D%3D&token=allow"
                ),
                "{given}"
            );
            assert_eq!(spec.mode, AuthMode::CustomAuthSigned);
            assert_eq!(spec.port, 443);
        }
    }
}
