//! Building the [`ConnectionSpec`] for each kind of authentication from parsed options.
//!
//! These are what the samples' `main` functions call; each one applies the rules of the
//! reference for its mode (port, ALPN, where the credentials travel).

use std::path::Path;

use crate::args::{ConnectionArgs, CustomAuthArgs, TokenArgs};
use crate::connect::{Carrier, ConnectionSpec};
use crate::custom_auth::{build_username, TokenSigner, UsernameParts};
use crate::error::{AuthMode, Error};
use crate::secrets;
use crate::tls::{client_config, TlsOptions, ALPN_MQTT, ALPN_MQTT_CA};

/// mTLS: port 8883 without ALPN; on 443 (or any other port, such as a local endpoint's stand-in
/// for 443) offering ALPN `x-amzn-mqtt-ca`.
pub fn mtls(conn: &ConnectionArgs, cert: &Path, key: &Path) -> Result<ConnectionSpec, Error> {
    let port = conn.port_or(8883);
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
    let port = conn.port_or(443);
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
                    Some(signer.sign(value))
                }
                (None, sig) => sig.clone(),
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
        conn.port_or(443),
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
    tls: std::sync::Arc<rustls::ClientConfig>,
    carrier: Carrier,
    username: Option<String>,
    password: Option<String>,
) -> Result<ConnectionSpec, Error> {
    Ok(ConnectionSpec {
        mode,
        host: conn.host()?,
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
