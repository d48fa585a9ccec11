//! MQTT over WebSocket with SigV4: presigning the upgrade request, and finding credentials.
//!
//! The upgrade is `GET /mqtt?X-Amz-...` presigned for service `iotdevicegateway` with only the
//! `host` header signed (reference §3). The session token is left out of the signature and
//! appears once in the query. The request is signed again on every connection attempt, with a
//! fresh date and the credentials provider asked again.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::Region;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};

use crate::custom_auth::url_encode;
use crate::error::Error;
use crate::secrets;

/// The SigV4 service name of the AWS IoT data plane.
pub const SERVICE: &str = "iotdevicegateway";
/// The WebSocket path of the AWS IoT data plane.
pub const PATH: &str = "/mqtt";

/// SHA-256 of the empty payload, as hex.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The parts of a SigV4 presigned `GET /mqtt`, kept apart so that each can be checked.
#[derive(Debug)]
pub struct Presigned {
    /// The sorted, encoded query without `X-Amz-Signature` and `X-Amz-Security-Token`.
    pub canonical_query: String,
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signature: String,
    /// What to request: `/mqtt?<canonical query>[&X-Amz-Security-Token=..]&X-Amz-Signature=..`.
    pub path_and_query: String,
}

/// Presign `GET /mqtt` for `host_header` (exactly the `Host` header that will be sent). Only `host`
/// is signed; no `X-Amz-Expires` is needed; the session token is appended after signing, once.
/// Pure: the time is an argument.
pub fn presign(
    host_header: &str,
    region: &str,
    credentials: &Credentials,
    time: SystemTime,
) -> Presigned {
    let (date, date_time) = amz_date(time);
    let scope = format!("{date}/{region}/{SERVICE}/aws4_request");
    // Already in canonical (byte-wise sorted) order.
    let params = [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_string()),
        (
            "X-Amz-Credential",
            format!("{}/{scope}", credentials.access_key_id()),
        ),
        ("X-Amz-Date", date_time.clone()),
        ("X-Amz-SignedHeaders", "host".to_string()),
    ];
    let canonical_query = params
        .iter()
        .map(|(k, v)| format!("{k}={}", url_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_request = format!(
        "GET\n{PATH}\n{canonical_query}\nhost:{}\n\nhost\n{EMPTY_SHA256}",
        host_header.trim()
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
        hex(ring::digest::digest(&ring::digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let key = generate_signing_key(credentials.secret_access_key(), time, region, SERVICE);
    let signature = calculate_signature(key, string_to_sign.as_bytes());

    let mut path_and_query = format!("{PATH}?{canonical_query}");
    if let Some(token) = credentials.session_token() {
        path_and_query.push_str("&X-Amz-Security-Token=");
        path_and_query.push_str(&url_encode(token));
    }
    path_and_query.push_str("&X-Amz-Signature=");
    path_and_query.push_str(&signature);
    Presigned {
        canonical_query,
        canonical_request,
        string_to_sign,
        signature,
        path_and_query,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `(yyyymmdd, yyyymmddTHHMMSSZ)` in UTC.
fn amz_date(time: SystemTime) -> (String, String) {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = format!("{year:04}{month:02}{day:02}");
    let date_time = format!(
        "{date}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    (date, date_time)
}

/// Credentials from the standard AWS chain (environment, profiles, SSO, web identity, ECS, IMDS),
/// with the provider kept so that an attempt made after they expire can ask again.
#[derive(Clone)]
pub struct CredentialSource {
    provider: SharedCredentialsProvider,
    resolved: Credentials,
}

/// Credentials that expire within this margin are fetched again before signing.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

impl CredentialSource {
    /// Resolve credentials now, failing fast with a clear error when the chain finds none.
    /// `region` is the signing region; the chain needs one for SSO and web identity, and given
    /// it here it does not go looking for one (in IMDS, among others).
    ///
    /// The environment variables come first, as in the default chain; when they hold a key the
    /// rest of the chain (profile parsing, the HTTPS client, IMDS) is never built.
    pub async fn load_default_chain(region: &str) -> Result<Self, Error> {
        let from_env = EnvironmentVariableCredentialsProvider::new();
        let (provider, resolved) = match from_env.provide_credentials().await {
            Ok(credentials) => (SharedCredentialsProvider::new(from_env), credentials),
            Err(_) => {
                let chain = DefaultCredentialsChain::builder()
                    .configure(chain_config())
                    .region(Region::new(region.to_string()))
                    .build()
                    .await;
                let provider = SharedCredentialsProvider::new(chain);
                let resolved = provider
                    .provide_credentials()
                    .await
                    .map_err(|e| Error::NoCredentials(first_line(&e)))?;
                (provider, resolved)
            }
        };
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

    /// Credentials for an attempt: the ones resolved at start while they are valid for at least
    /// another minute, otherwise fresh ones from the provider (the old ones if that fails).
    pub async fn current(&self) -> Credentials {
        let fresh_enough = match self.resolved.expiry() {
            None => true,
            Some(expiry) => expiry
                .duration_since(SystemTime::now())
                .is_ok_and(|left| left > EXPIRY_MARGIN),
        };
        if fresh_enough {
            return self.resolved.clone();
        }
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

/// What the rest of the chain runs on. Its HTTPS client (for SSO, STS, ECS, IMDS) is rustls with
/// ring, trusting the system's roots as the SDK's default client does; not aws-config's default
/// client, which would bring in a second crypto library (aws-lc-rs).
fn chain_config() -> ProviderConfig {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    ProviderConfig::without_region().with_http_client(https)
}

fn register_credentials(c: &Credentials) {
    secrets::register(c.secret_access_key());
    if let Some(token) = c.session_token() {
        secrets::register(token);
    }
}

/// The credential chain's error, on one line: which providers it tried, or its innermost cause.
fn first_line(e: &dyn std::error::Error) -> String {
    let mut innermost = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        innermost = s.to_string();
        source = s.source();
    }
    if let Some((_, attempted)) = innermost.split_once("Attempted:") {
        let tried: Vec<&str> = attempted
            .lines()
            .filter_map(|l| l.trim().split_once(':').map(|(name, _)| name))
            .filter(|name| !name.is_empty())
            .collect();
        return format!("none of the providers had any (tried {})", tried.join(", "));
    }
    innermost
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
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
        let presigned = presign(&host, &self.region, &credentials, SystemTime::now());
        secrets::register(&presigned.signature);
        match format!("wss://{host}{}", presigned.path_and_query).parse() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(e) => log::error!("presigned URI does not parse: {e}"),
        }
        log::debug!(
            "signed the WebSocket upgrade for host {host} in {}",
            self.region
        );
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_date_formats_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_346_930); // 2026-11-22T11:28:50Z
        assert_eq!(amz_date(t), ("20261122".into(), "20261122T112850Z".into()));
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29T00:00:00Z
        assert_eq!(amz_date(leap).1, "20000229T000000Z");
    }
}
