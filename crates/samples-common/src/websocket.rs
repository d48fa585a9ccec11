//! MQTT over WebSocket with SigV4: presigning the upgrade request, and finding credentials.
//!
//! The upgrade is `GET /mqtt?X-Amz-...` presigned for service `iotdevicegateway` with only the
//! `host` header signed (reference §3). The session token is left out of the signature and
//! appears once in the query. The request is signed again on every connection attempt, with a
//! fresh date and the credentials provider asked again.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use aws_config::BehaviorVersion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SessionTokenMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4::SigningParams;

use crate::custom_auth::url_encode;
use crate::error::Error;
use crate::secrets;

/// The SigV4 service name of the AWS IoT data plane.
pub const SERVICE: &str = "iotdevicegateway";
/// The WebSocket path of the AWS IoT data plane.
pub const PATH: &str = "/mqtt";

/// Presign `GET /mqtt` for `host_header` (exactly the `Host` header that will be sent) and return
/// the path and query to request. Pure: the time is an argument.
pub fn presign(
    host_header: &str,
    region: &str,
    credentials: &Credentials,
    time: SystemTime,
) -> Result<String, Error> {
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.session_token_mode = SessionTokenMode::Exclude;
    settings.expires_in = None;

    let identity = credentials.clone().into();
    let params = SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| Error::Other(format!("SigV4 signing parameters: {e}")))?;

    let request = SignableRequest::new(
        "GET",
        PATH,
        std::iter::once(("host", host_header)),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| Error::Other(format!("SigV4 request: {e}")))?;
    let (instructions, _signature) = sign(request, &params.into())
        .map_err(|e| Error::Other(format!("SigV4 signing failed: {e}")))?
        .into_parts();

    let mut query: Vec<(&str, Cow<'_, str>)> = instructions.params().to_vec();
    // aws-sigv4 in Exclude mode already lists the token, unsigned; only add it if a version does
    // not, so that it appears exactly once either way.
    if let Some(token) = credentials.session_token() {
        if !query.iter().any(|(k, _)| *k == "X-Amz-Security-Token") {
            query.push(("X-Amz-Security-Token", Cow::Owned(token.to_string())));
        }
    }
    let query = query
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    Ok(format!("{PATH}?{query}"))
}

/// Credentials from the standard AWS chain (environment, profiles, SSO, web identity, ECS, IMDS),
/// with the provider kept so that each connection attempt can ask again.
#[derive(Clone)]
pub struct CredentialSource {
    provider: SharedCredentialsProvider,
    resolved: Credentials,
}

impl CredentialSource {
    /// Resolve credentials now, failing fast with a clear error when the chain finds none.
    pub async fn load_default_chain() -> Result<Self, Error> {
        let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
        let provider = config.credentials_provider().ok_or_else(|| {
            Error::NoCredentials("the AWS configuration has no credentials provider".into())
        })?;
        let resolved = provider
            .provide_credentials()
            .await
            .map_err(|e| Error::NoCredentials(first_line(&e)))?;
        register_credentials(&resolved);
        log::info!(
            "using AWS access key {} ({}session token)",
            resolved.access_key_id(),
            if resolved.session_token().is_some() {
                "with "
            } else {
                "no "
            }
        );
        Ok(CredentialSource { provider, resolved })
    }

    /// Fresh credentials for a new attempt; the ones resolved at start if the provider fails now.
    pub async fn current(&self) -> Credentials {
        match self.provider.provide_credentials().await {
            Ok(c) => {
                register_credentials(&c);
                c
            }
            Err(e) => {
                log::warn!("refreshing AWS credentials failed, using the previous ones: {e}");
                self.resolved.clone()
            }
        }
    }
}

fn register_credentials(c: &Credentials) {
    secrets::register(c.secret_access_key());
    if let Some(token) = c.session_token() {
        secrets::register(token);
    }
}

fn first_line(e: &dyn std::error::Error) -> String {
    // The chain's error explains every provider it tried; its top line and innermost cause are
    // what a person needs.
    let mut innermost = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        innermost = s.to_string();
        source = s.source();
    }
    let top = e.to_string();
    if innermost == top {
        top
    } else {
        format!("{top} ({innermost})")
    }
}

/// Signs each WebSocket upgrade request just before it is sent.
pub struct RequestSigner {
    credentials: CredentialSource,
    region: String,
}

impl RequestSigner {
    pub fn new(credentials: CredentialSource, region: String) -> Arc<Self> {
        Arc::new(RequestSigner {
            credentials,
            region,
        })
    }

    /// Replace the request's path and query with a fresh presigned one for its own Host header.
    pub async fn sign(&self, mut request: http::Request<()>) -> http::Request<()> {
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let credentials = self.credentials.current().await;
        match presign(&host, &self.region, &credentials, SystemTime::now()) {
            Ok(path_and_query) => {
                let uri = format!("wss://{host}{path_and_query}");
                match uri.parse() {
                    Ok(uri) => *request.uri_mut() = uri,
                    Err(e) => log::error!("presigned URI does not parse: {e}"),
                }
            }
            Err(e) => log::error!("{}", e.cause()),
        }
        log::debug!(
            "signed the WebSocket upgrade for host {host} in {}",
            self.region
        );
        request
    }
}
