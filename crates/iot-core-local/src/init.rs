//! `iot-core-local init`: create a local account, the equivalent of what you would set up in
//! AWS for each sample, and print the commands that use it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

use crate::config::{
    AccessKey, Authorizer, CaCertificate, Certificate, Config, Function, Rule, ServerConfig,
    Status, Thing, FILE_NAME,
};

/// What `init` creates, by file name (all in the account folder).
pub mod files {
    pub const SERVER_CA: &str = "server-ca.pem";
    pub const SERVER_CA_KEY: &str = "server-ca.key";
    pub const SERVER_CERT: &str = "server.pem";
    pub const SERVER_KEY: &str = "server.key";
    pub const DEVICE_CA: &str = "device-ca.pem";
    pub const DEVICE_CA_KEY: &str = "device-ca.key";
    pub const DEVICE_CERT: &str = "device.pem";
    pub const DEVICE_KEY: &str = "device.key";
    pub const AUTHORIZER_PRIVATE: &str = "authorizer-private.pem";
    pub const AUTHORIZER_PUBLIC: &str = "authorizer-public.pem";
    pub const AWS_CREDENTIALS: &str = "aws-credentials";
    pub const PASSWORD: &str = "custom-auth-password";
}

pub const REGION: &str = "us-east-1";
pub const ACCOUNT_ID: &str = "123456789012";
pub const PROFILE: &str = "iot-core-local";
pub const TEMPORARY_PROFILE: &str = "iot-core-local-temporary";
pub const SIGNED_AUTHORIZER: &str = "signed-authorizer";
pub const UNSIGNED_AUTHORIZER: &str = "unsigned-authorizer";
pub const TOKEN_KEY_NAME: &str = "token";
pub const ALLOWED_TOKEN: &str = "allow";
pub const USERNAME: &str = "demo-user";

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{} already holds an account; pass --force to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("RSA key generation failed: {0}")]
    RsaKey(#[from] rsa::Error),
    #[error("cannot encode the token-signing private key as PEM: {0}")]
    PrivateKeyPem(#[from] rsa::pkcs8::Error),
    #[error("cannot encode the token-signing public key as PEM: {0}")]
    PublicKeyPem(#[from] rsa::pkcs8::spki::Error),
    #[error("the operating system's random number generator failed")]
    Random,
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Options of `init`.
pub struct InitOptions {
    pub dir: PathBuf,
    pub force: bool,
    pub port_443: u16,
    pub port_8883: u16,
}

/// Create the account in `opts.dir`. Returns the configuration written.
pub fn init(opts: &InitOptions) -> Result<Config, InitError> {
    let dir = &opts.dir;
    if dir.join(FILE_NAME).exists() && !opts.force {
        return Err(InitError::Exists(dir.clone()));
    }
    std::fs::create_dir_all(dir).map_err(|source| InitError::Write {
        path: dir.clone(),
        source,
    })?;
    let write =
        |name: &str, contents: &str, secret: bool| write_file(&dir.join(name), contents, secret);

    // The server side: a CA clients trust with --ca-file, and a certificate for localhost.
    let (server_ca, server_ca_key) = ca("iot-core-local server CA")?;
    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    params.distinguished_name = name("iot-core-local endpoint");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_cert = params.signed_by(
        &server_key,
        &Issuer::new(server_ca.0.clone(), &server_ca_key),
    )?;
    write(files::SERVER_CA, &server_ca.1.pem(), false)?;
    write(files::SERVER_CA_KEY, &server_ca_key.serialize_pem(), true)?;
    write(files::SERVER_CERT, &server_cert.pem(), false)?;
    write(files::SERVER_KEY, &server_key.serialize_pem(), true)?;

    // The device side: a registered CA and one ACTIVE device certificate it signed.
    let (device_ca, device_ca_key) = ca("iot-core-local device CA")?;
    let device_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name("test-device");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let device_cert = params.signed_by(
        &device_key,
        &Issuer::new(device_ca.0.clone(), &device_ca_key),
    )?;
    write(files::DEVICE_CA, &device_ca.1.pem(), false)?;
    write(files::DEVICE_CA_KEY, &device_ca_key.serialize_pem(), true)?;
    write(files::DEVICE_CERT, &device_cert.pem(), false)?;
    write(files::DEVICE_KEY, &device_key.serialize_pem(), true)?;

    // The token-signing key pair of the signed authorizer.
    let mut rng = rsa::rand_core::OsRng;
    let rsa_key = rsa::RsaPrivateKey::new(&mut rng, 2048)?;
    let private_pem = rsa_key.to_pkcs8_pem(LineEnding::LF)?;
    let public_pem = rsa_key.to_public_key().to_public_key_pem(LineEnding::LF)?;
    write(files::AUTHORIZER_PRIVATE, &private_pem, true)?;
    write(files::AUTHORIZER_PUBLIC, &public_pem, false)?;

    // SigV4 access keys: one long-term, one temporary with a session token.
    let long_term = AccessKey {
        access_key_id: format!("AKIA{}", random(UPPER_DIGITS, 16)?),
        secret_access_key: random(BASE64ISH, 40)?,
        session_token: None,
        policies: vec!["sigv4-connect".into()],
    };
    let temporary = AccessKey {
        access_key_id: format!("ASIA{}", random(UPPER_DIGITS, 16)?),
        secret_access_key: random(BASE64ISH, 40)?,
        session_token: Some(format!("IQoJb3JpZ2luX2Vj{}==", random(BASE64ISH, 200)?)),
        policies: vec!["sigv4-connect".into()],
    };
    write(
        files::AWS_CREDENTIALS,
        &credentials_file(&long_term, &temporary),
        true,
    )?;

    let password = random(ALNUM, 24)?;
    write(files::PASSWORD, &password, true)?;

    let config = Config {
        region: REGION.into(),
        account_id: ACCOUNT_ID.into(),
        endpoint: "localhost".into(),
        server: ServerConfig {
            bind: "127.0.0.1".into(),
            port_443: opts.port_443,
            port_8883: opts.port_8883,
            certificate: files::SERVER_CERT.into(),
            private_key: files::SERVER_KEY.into(),
            ca_certificate: files::SERVER_CA.into(),
            clock_skew_seconds: 300,
            authorizer_timeout_ms: 5000,
            connack_on_v311_reject: false,
            max_pending_connections: crate::config::DEFAULT_MAX_PENDING,
        },
        ca_certificates: vec![CaCertificate {
            id: "device-ca".into(),
            certificate: files::DEVICE_CA.into(),
            status: Status::Active,
            auto_register_policies: Vec::new(),
        }],
        certificates: vec![Certificate {
            id: "test-device".into(),
            certificate: files::DEVICE_CERT.into(),
            status: Status::Active,
            policies: vec!["device-connect".into()],
            things: vec!["test-device".into()],
        }],
        things: vec![Thing {
            name: "test-device".into(),
            thing_type: None,
            attributes: BTreeMap::new(),
        }],
        credentials: vec![long_term, temporary],
        authorizers: vec![
            Authorizer {
                name: SIGNED_AUTHORIZER.into(),
                status: Status::Active,
                default: false,
                signing_disabled: false,
                token_key_name: Some(TOKEN_KEY_NAME.into()),
                token_signing_public_keys: BTreeMap::from([(
                    "key1".to_string(),
                    PathBuf::from(files::AUTHORIZER_PUBLIC),
                )]),
                function: Function::Rules {
                    rules: vec![Rule {
                        username: None,
                        password: None,
                        token: Some(ALLOWED_TOKEN.into()),
                        principal_id: "signedDevice".into(),
                        policies: vec!["custom-auth-connect".into()],
                        disconnect_after_seconds: 86400,
                        refresh_after_seconds: 300,
                    }],
                },
            },
            Authorizer {
                name: UNSIGNED_AUTHORIZER.into(),
                status: Status::Active,
                default: true,
                signing_disabled: true,
                token_key_name: None,
                token_signing_public_keys: BTreeMap::new(),
                function: Function::Rules {
                    rules: vec![Rule {
                        username: Some(USERNAME.into()),
                        password: Some(password),
                        token: None,
                        principal_id: "demoUser".into(),
                        policies: vec!["custom-auth-connect".into()],
                        disconnect_after_seconds: 86400,
                        refresh_after_seconds: 300,
                    }],
                },
            },
        ],
        policies: BTreeMap::from([
            ("device-connect".to_string(), connect_policy()),
            ("sigv4-connect".to_string(), connect_policy()),
            ("custom-auth-connect".to_string(), connect_policy()),
        ]),
    };
    let text = format!("{}{}", HEADER, config.to_toml()?);
    write(FILE_NAME, &text, true)?;
    Ok(config)
}

const HEADER: &str = "\
# iot-core-local account: what the local endpoint knows, as AWS IoT Core would.
# Edit it and restart `iot-core-local serve`. Paths are relative to this folder.
# An authorizer function may also be an external command that gets the Lambda request event
# on stdin and prints the response, e.g. the example in scripts/example_authorizer.py. The
# command runs in the folder `serve` was started from: give its files as absolute paths.
#   [authorizer.function.command]
#   argv = [\"python3\", \"/path/to/scripts/example_authorizer.py\"]

";

/// The sample policy: iot:Connect for client ids `test-*`, as in the samples' READMEs, and
/// publish, subscribe and receive on each client's own topics `test/<clientId>/...`.
fn connect_policy() -> String {
    let arn = format!("arn:aws:iot:{REGION}:{ACCOUNT_ID}");
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"iot:Connect","Resource":"{arn}:client/test-*"}},{{"Effect":"Allow","Action":["iot:Publish","iot:Receive","iot:RetainPublish"],"Resource":"{arn}:topic/test/${{iot:ClientId}}/*"}},{{"Effect":"Allow","Action":"iot:Subscribe","Resource":"{arn}:topicfilter/test/${{iot:ClientId}}/*"}}]}}"#
    )
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

const DEVICE_CA_NAME: &str = "iot-core-local device CA";

/// A client certificate (PEM) and its key (PEM), signed by the device CA.
fn device_certificate(
    cn: &str,
    ca_params: &CertificateParams,
    ca_key: &KeyPair,
) -> Result<(String, String), InitError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &Issuer::new(ca_params.clone(), ca_key))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Issue another device certificate from the account's device CA, written to
/// `<dir>/<name>.pem` and `<dir>/<name>.key`. It still has to be registered in the account
/// (a `[[certificate]]` entry) to connect.
pub fn issue_device_certificate(dir: &Path, name: &str) -> Result<(), InitError> {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file)).map_err(|source| InitError::Write {
            path: dir.join(file),
            source,
        })
    };
    let ca_key = KeyPair::from_pem(&read(files::DEVICE_CA_KEY)?)?;
    let ca_params = ca_params(DEVICE_CA_NAME)?;
    let (cert, key) = device_certificate(name, &ca_params, &ca_key)?;
    write_file(&dir.join(format!("{name}.pem")), &cert, false)?;
    write_file(&dir.join(format!("{name}.key")), &key, true)
}

fn ca_params(cn: &str) -> Result<CertificateParams, InitError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

type Ca = ((CertificateParams, rcgen::Certificate), KeyPair);

fn ca(cn: &str) -> Result<Ca, InitError> {
    let key = KeyPair::generate()?;
    let params = ca_params(cn)?;
    let cert = params.self_signed(&key)?;
    Ok(((params, cert), key))
}

fn credentials_file(long_term: &AccessKey, temporary: &AccessKey) -> String {
    format!(
        "# AWS shared credentials for iot-core-local (use with AWS_SHARED_CREDENTIALS_FILE).\n\
         [{PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n\
         [{TEMPORARY_PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {}\naws_session_token = {}\n",
        long_term.access_key_id,
        long_term.secret_access_key,
        temporary.access_key_id,
        temporary.secret_access_key,
        temporary.session_token.as_deref().unwrap_or_default(),
    )
}

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE64ISH: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A random string from a CSPRNG.
fn random(alphabet: &[u8], len: usize) -> Result<String, InitError> {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; len];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| InitError::Random)?;
    Ok(bytes
        .iter()
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect())
}

/// Write `contents` to `path`. A secret file (private key, credentials, password, the account
/// file) is created with mode 0600 from the start: an existing file is removed first, since the
/// mode only applies to a file being created.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), InitError> {
    use std::io::Write;
    let failed = |source| InitError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
            _ => {}
        }
        // create_new: if something appears at `path` meanwhile, fail rather than write into it.
        options.create_new(true).mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(contents.as_bytes()).map_err(failed)
}

/// The ready-to-paste commands for every sample against this account. No secret is printed:
/// credentials, password and signing key are read from the account's files.
pub fn commands(config: &Config, dir: &Path) -> String {
    let d = dir.display();
    let ca = format!("--ca-file {d}/{}", files::SERVER_CA);
    let host = &config.endpoint;
    let (p443, p8883) = (config.server.port_443, config.server.port_8883);
    let aws = |profile: &str| {
        format!(
            "AWS_SHARED_CREDENTIALS_FILE={d}/{} AWS_PROFILE={profile} ",
            files::AWS_CREDENTIALS
        )
    };
    format!(
        "\
# mTLS on the 8883 listener, and on the 443 listener (ALPN x-amzn-mqtt-ca)
cargo run -p mtls-connect -- --cert {d}/{cert} --key {d}/{key} {ca} --port {p8883} {host}
cargo run -p mtls-connect -- --cert {d}/{cert} --key {d}/{key} {ca} --port {p443} {host}

# MQTT over WebSocket signed with SigV4: long-term key, then temporary key with session token
# (unset AWS_ACCESS_KEY_ID and friends first if your shell has them: they take precedence)
{aws1}cargo run -p websocket-connect -- {ca} --port {p443} --signing-region {region} {host}
{aws2}cargo run -p websocket-connect -- {ca} --port {p443} --signing-region {region} {host}

# Custom authorizer, signing disabled ({unsigned}, the default authorizer)
cargo run -p custom-auth-unsigned -- --authorizer {unsigned} --username {user} --password \"$(cat {d}/{pw})\" {ca} --port {p443} {host}

# Custom authorizer with a signed token ({signed}); the sample signs with the private key
cargo run -p custom-auth-signed -- --authorizer {signed} --authorizer-token-key-name {tk} --authorizer-token-key-value {tv} --authorizer-private-key {d}/{apk} {ca} --port {p443} {host}

# The same over WebSocket: add --websockets to either custom-auth line; any line: --mqtt-version 3.1.1
",
        cert = files::DEVICE_CERT,
        key = files::DEVICE_KEY,
        aws1 = aws(PROFILE),
        aws2 = aws(TEMPORARY_PROFILE),
        region = config.region,
        unsigned = UNSIGNED_AUTHORIZER,
        signed = SIGNED_AUTHORIZER,
        user = USERNAME,
        pw = files::PASSWORD,
        tk = TOKEN_KEY_NAME,
        tv = ALLOWED_TOKEN,
        apk = files::AUTHORIZER_PRIVATE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_account(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("init-{name}-{}", uuid::Uuid::new_v4()))
    }

    const SECRET_FILES: [&str; 8] = [
        files::SERVER_CA_KEY,
        files::SERVER_KEY,
        files::DEVICE_CA_KEY,
        files::DEVICE_KEY,
        files::AUTHORIZER_PRIVATE,
        files::AWS_CREDENTIALS,
        files::PASSWORD,
        FILE_NAME,
    ];

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_are_created_owner_only_even_over_an_existing_file() {
        let dir = temp_account("modes");
        std::fs::create_dir_all(&dir).expect("temp dir");
        // A world-readable file where a secret goes: --force must not keep its mode.
        std::fs::write(dir.join(files::DEVICE_KEY), "old").expect("write");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                dir.join(files::DEVICE_KEY),
                std::fs::Permissions::from_mode(0o644),
            )
            .expect("chmod");
        }
        let opts = InitOptions {
            dir: dir.clone(),
            force: true,
            port_443: 0,
            port_8883: 0,
        };
        init(&opts).expect("init");
        issue_device_certificate(&dir, "second-device").expect("issue");
        for name in SECRET_FILES.iter().copied().chain(["second-device.key"]) {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        // The public files are not secret: readable by others unless the umask says otherwise.
        assert_ne!(mode(&dir.join(files::SERVER_CA)) & 0o600, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn init_refuses_an_existing_account_without_force() {
        let dir = temp_account("exists");
        let mut opts = InitOptions {
            dir: dir.clone(),
            force: false,
            port_443: 0,
            port_8883: 0,
        };
        init(&opts).expect("first init");
        let err = init(&opts).expect_err("second init");
        assert!(matches!(&err, InitError::Exists(d) if d == &dir), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "{} already holds an account; pass --force to overwrite it",
                dir.display()
            )
        );
        opts.force = true;
        let config = init(&opts).expect("forced init");
        assert_eq!(
            Config::load(&dir).expect("loads").credentials[0].access_key_id,
            config.credentials[0].access_key_id
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
