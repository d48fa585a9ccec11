//! MQTT over WebSocket with SigV4: presigning the upgrade request, and finding credentials.
//!
//! The upgrade is `GET /mqtt?X-Amz-...` presigned for service `iotdevicegateway` with only the
//! `host` header signed (reference §3). The session token is left out of the signature and
//! appears once in the query. The request is signed again on every connection attempt, with a
//! fresh date and the credentials provider asked again.
//!
//! The canonical request and string to sign are built here, by hand, and shared with nothing:
//! iot-core-local's SigV4 verifier has its own canonicalisation, written apart, and the tests
//! check each against the other and both against vectors from independent signers. Code shared
//! between them would let one mistake pass on both sides.
//!
//! When the credential chain finds nothing, the profile files are read again (with aws-config's
//! own loader) to say what the chain does not: that `AWS_PROFILE` names a profile no file
//! defines, or that a file named by `AWS_SHARED_CREDENTIALS_FILE`/`AWS_CONFIG_FILE` is missing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::Region;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_runtime::env_config::file::EnvConfigFiles;
use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use aws_types::os_shim_internal::{Env, Fs};

use crate::encoding::url_encode;
use crate::error::{CredentialsProblem, Error, ProfileFileKind};
use crate::secrets::{self, MASK};

/// The SigV4 service name of the AWS IoT data plane.
const SERVICE: &str = "iotdevicegateway";
/// The WebSocket path of the AWS IoT data plane.
const PATH: &str = "/mqtt";

/// SHA-256 of the empty payload, as hex.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The parts of a SigV4 presigned `GET /mqtt`, kept apart so that each can be checked.
/// `Debug` masks the signature and the query that carries it (and the session token).
pub struct Presigned {
    /// The sorted, encoded query without `X-Amz-Signature` and `X-Amz-Security-Token`.
    pub canonical_query: String,
    /// The SigV4 canonical request (method, path, query, the `host` header, payload hash).
    pub canonical_request: String,
    /// The SigV4 string to sign (algorithm, date, scope, hash of the canonical request).
    pub string_to_sign: String,
    /// The hex HMAC-SHA256 signature.
    pub signature: String,
    /// What to request: `/mqtt?<canonical query>[&X-Amz-Security-Token=..]&X-Amz-Signature=..`.
    pub path_and_query: String,
}

impl std::fmt::Debug for Presigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presigned")
            .field("canonical_query", &self.canonical_query)
            .field("canonical_request", &self.canonical_request)
            .field("string_to_sign", &self.string_to_sign)
            .field("signature", &MASK)
            .field("path_and_query", &MASK)
            .finish()
    }
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
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical_request.as_bytes()
        ))
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
                match provider.provide_credentials().await {
                    Ok(resolved) => (provider, resolved),
                    Err(e) => {
                        log::debug!("the credential chain found nothing: {e}");
                        // A provider that failed (a credential process, SSO, ...) says why
                        // itself; the profile files are looked at only when none had anything.
                        let diagnosis = match e {
                            CredentialsError::CredentialsNotLoaded(_) => {
                                diagnose_profiles(&Env::real()).await
                            }
                            _ => None,
                        };
                        let problem = diagnosis
                            .unwrap_or_else(|| CredentialsProblem::NoneFound(first_line(&e)));
                        return Err(Error::NoCredentials(problem));
                    }
                }
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

/// What the profile files say about a chain that found nothing, when they say more than the
/// chain: a file its environment variable names that does not exist, or an `AWS_PROFILE` that no
/// file defines. `None` when the files explain nothing. Reads the files only, never the network.
async fn diagnose_profiles(env: &Env) -> Option<CredentialsProblem> {
    let home = env.get("HOME").or_else(|_| env.get("USERPROFILE")).ok();
    let mut missing = Vec::new();
    let mut searched = Vec::new();
    let mut absent = Vec::new();
    for kind in [ProfileFileKind::Credentials, ProfileFileKind::Config] {
        let (path, overridden) = match env.get(kind.variable()) {
            Ok(path) => (expand_home(&path, home.as_deref()), true),
            Err(_) => (default_profile_path(kind, home.as_deref()), false),
        };
        match (path.exists(), overridden) {
            (true, _) => searched.push(path),
            (false, true) => missing.push((kind, path)),
            (false, false) => absent.push(path),
        }
    }
    if !missing.is_empty() {
        return Some(CredentialsProblem::MissingFiles(missing));
    }

    let profile = env.get("AWS_PROFILE").ok().filter(|p| !p.is_empty())?;
    let profiles = aws_config::profile::load(&Fs::real(), env, &EnvConfigFiles::default(), None)
        .await
        .map_err(|e| log::debug!("the profile files do not load: {e}"))
        .ok()?;
    if profiles.get_profile(&profile).is_some() {
        return None;
    }
    let mut defined: Vec<String> = profiles.profiles().map(str::to_string).collect();
    defined.sort();
    Some(CredentialsProblem::ProfileNotFound {
        profile,
        searched,
        absent,
        defined,
    })
}

/// `~/.aws/credentials` or `~/.aws/config`.
fn default_profile_path(kind: ProfileFileKind, home: Option<&str>) -> PathBuf {
    let name = match kind {
        ProfileFileKind::Credentials => "credentials",
        ProfileFileKind::Config => "config",
    };
    expand_home(&format!("~/.aws/{name}"), home)
}

/// A leading `~/` is the home directory, as the AWS CLI and SDKs read these paths.
fn expand_home(path: &str, home: Option<&str>) -> PathBuf {
    match (path.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Signs each WebSocket upgrade request just before it is sent.
pub(crate) struct RequestSigner {
    credentials: CredentialSource,
    region: String,
}

impl RequestSigner {
    pub(crate) fn new(credentials: CredentialSource, region: String) -> Arc<Self> {
        Arc::new(RequestSigner {
            credentials,
            region,
        })
    }

    /// Replace the request's path and query with a fresh presigned one for its own Host header.
    pub(crate) async fn sign(&self, mut request: http::Request<()>) -> http::Request<()> {
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

    #[test]
    fn presigned_debug_masks_the_signature_and_the_session_token() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "secret-access-key",
            Some("session-token-value".into()),
            None,
            "test",
        );
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_346_930);
        let presigned = presign("h.example", "us-east-1", &creds, t);
        let debug = format!("{presigned:?}");
        assert!(!debug.contains(&presigned.signature), "{debug}");
        assert!(!debug.contains("session-token-value"), "{debug}");
        assert!(!debug.contains("secret-access-key"), "{debug}");
        assert!(debug.contains(r#"signature: "****""#), "{debug}");
        assert!(debug.contains("X-Amz-Credential=AKIDEXAMPLE"), "{debug}");
    }

    /// A scratch HOME with the given files; `~/.aws` exists only if a file goes there.
    fn scratch_home(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let home = std::env::temp_dir().join(format!(
            "samples-common-profiles-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        for (path, contents) in files {
            let path = home.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        home
    }

    const CREDENTIALS: &str = "[default]\naws_access_key_id = AKIDDEFAULT\n\
        aws_secret_access_key = s1\n\n[dev]\naws_access_key_id = AKIDDEV\n\
        aws_secret_access_key = s2\n";

    async fn diagnose(vars: &[(&str, &str)]) -> Option<CredentialsProblem> {
        diagnose_profiles(&Env::from_slice(vars)).await
    }

    fn no_credentials(problem: CredentialsProblem) -> (String, String) {
        let e = Error::NoCredentials(problem);
        (e.cause(), e.hint(crate::AuthMode::SigV4WebSocket))
    }

    #[tokio::test]
    async fn a_mistyped_aws_profile_names_the_files_and_the_profiles_they_define() {
        let home = scratch_home("typo", &[(".aws/credentials", CREDENTIALS)]);
        let h = home.to_str().unwrap();
        let problem = diagnose(&[("HOME", h), ("AWS_PROFILE", "deev")])
            .await
            .unwrap();
        let (cause, hint) = no_credentials(problem);
        assert_eq!(
            cause,
            format!(
                "no AWS credentials found: profile 'deev' (AWS_PROFILE) not found in \
                 {h}/.aws/credentials"
            )
        );
        assert_eq!(
            hint,
            "check the spelling of AWS_PROFILE; the profiles defined are 'default', 'dev' \
             (`aws configure list-profiles`)"
        );
        // The same profile name, spelt right, explains nothing: the chain's own message stands.
        assert_eq!(diagnose(&[("HOME", h), ("AWS_PROFILE", "dev")]).await, None);
    }

    #[tokio::test]
    async fn a_profile_in_the_config_file_counts_and_a_missing_one_is_named() {
        let home = scratch_home(
            "config",
            &[(".aws/config", "[profile sso-user]\nregion = eu-west-1\n")],
        );
        let h = home.to_str().unwrap();
        assert_eq!(
            diagnose(&[("HOME", h), ("AWS_PROFILE", "sso-user")]).await,
            None
        );
        let (cause, hint) = no_credentials(
            diagnose(&[("HOME", h), ("AWS_PROFILE", "other")])
                .await
                .unwrap(),
        );
        assert_eq!(
            cause,
            format!(
                "no AWS credentials found: profile 'other' (AWS_PROFILE) not found in \
                 {h}/.aws/config"
            )
        );
        assert_eq!(
            hint,
            "check the spelling of AWS_PROFILE; the profiles defined are 'sso-user' \
             (`aws configure list-profiles`)"
        );
    }

    #[tokio::test]
    async fn a_profile_with_no_profile_files_at_all_says_so() {
        let home = scratch_home("empty", &[]);
        let h = home.to_str().unwrap();
        let (cause, hint) = no_credentials(
            diagnose(&[("HOME", h), ("AWS_PROFILE", "work")])
                .await
                .unwrap(),
        );
        assert_eq!(
            cause,
            format!(
                "no AWS credentials found: profile 'work' (AWS_PROFILE) not found: there is no \
                 {h}/.aws/credentials and no {h}/.aws/config"
            )
        );
        assert_eq!(
            hint,
            "no profile is defined: create it with `aws configure --profile work`, \
             or unset AWS_PROFILE"
        );
    }

    #[tokio::test]
    async fn a_credentials_file_that_does_not_exist_is_named_with_its_variable() {
        let home = scratch_home("missing", &[(".aws/credentials", CREDENTIALS)]);
        let h = home.to_str().unwrap();
        let wrong = format!("{h}/.aws/credentails");
        let (cause, hint) = no_credentials(
            diagnose(&[("HOME", h), ("AWS_SHARED_CREDENTIALS_FILE", &wrong)])
                .await
                .unwrap(),
        );
        assert_eq!(
            cause,
            format!(
                "no AWS credentials found: the credentials file {wrong} \
                 (AWS_SHARED_CREDENTIALS_FILE) does not exist"
            )
        );
        assert_eq!(
            hint,
            "point AWS_SHARED_CREDENTIALS_FILE at an existing file or unset it, \
             or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        );
        let (cause, hint) = no_credentials(
            diagnose(&[
                ("HOME", h),
                ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
                ("AWS_CONFIG_FILE", "~/nope/config"),
                ("AWS_PROFILE", "dev"),
            ])
            .await
            .unwrap(),
        );
        assert_eq!(
            cause,
            format!(
                "no AWS credentials found: the credentials file /nonexistent/credentials \
                 (AWS_SHARED_CREDENTIALS_FILE) and the config file {h}/nope/config \
                 (AWS_CONFIG_FILE) do not exist"
            )
        );
        assert_eq!(
            hint,
            "point AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE at existing files or unset \
             them, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        );
    }

    #[tokio::test]
    async fn no_profile_and_no_overrides_leave_the_chain_message() {
        let home = scratch_home("nothing", &[]);
        assert_eq!(diagnose(&[("HOME", home.to_str().unwrap())]).await, None);
    }
}
