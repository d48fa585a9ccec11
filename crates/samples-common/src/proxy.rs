//! HTTP proxies: which one a sample uses, with which credentials, and the rumqttc setting for it.
//!
//! The proxy comes from `--proxy-host`/`--proxy-port`, or else from `https_proxy`/`HTTPS_PROXY`
//! as curl reads them (lower case first; `http://` unless the URL says `https://`; port 1080
//! unless it says otherwise). `no_proxy`/`NO_PROXY` lists the hosts that go direct, also as curl
//! reads it; it applies to the environment's proxy only, since flags win over the environment.
//! The password is never taken from the command line: it comes from `--proxy-password-file` or
//! `PROXY_PASSWORD` (or the userinfo of `HTTPS_PROXY`), and is registered as a secret at once.
//!
//! The tunnel itself is rumqttc's `proxy` feature (HTTP CONNECT to the endpoint's host and port,
//! then the endpoint's TLS, SNI and ALPN, and for WebSockets its `Host`, inside the tunnel);
//! `connect` turns its errors into ones that name the proxy.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use crate::error::{Error, FileProblem};
use crate::secrets;

/// The environment variable the proxy password is read from when `--proxy-user` is given
/// without `--proxy-password-file`.
pub(crate) const PASSWORD_VARIABLE: &str = "PROXY_PASSWORD";

/// Curl's default port for a proxy URL that names none (`http://`).
const DEFAULT_HTTP_PROXY_PORT: u16 = 1080;

/// Where the sample finds an HTTP proxy. Every sample has these (inside `ConnectionArgs`).
#[derive(Args, Debug, Clone, Default)]
pub struct ProxyArgs {
    /// Connect through this HTTP proxy (HTTP CONNECT); `https://HOST` for TLS to the proxy.
    /// Without it, HTTPS_PROXY / https_proxy is used, minus the hosts in NO_PROXY.
    #[arg(
        long,
        visible_alias = "proxy_host",
        value_name = "HOST",
        requires = "proxy_port"
    )]
    pub(crate) proxy_host: Option<String>,

    /// The proxy's TCP port.
    #[arg(
        long,
        visible_alias = "proxy_port",
        value_name = "PORT",
        requires = "proxy_host"
    )]
    pub(crate) proxy_port: Option<u16>,

    /// User name for the proxy (basic auth). The password comes from PROXY_PASSWORD or
    /// --proxy-password-file, never from the command line.
    #[arg(long, visible_alias = "proxy_user", value_name = "USER")]
    pub(crate) proxy_user: Option<String>,

    /// Read the proxy password from this file (its first line) instead of PROXY_PASSWORD.
    #[arg(long, value_name = "FILE", requires = "proxy_user")]
    pub(crate) proxy_password_file: Option<PathBuf>,

    /// Trust the CA certificates in this PEM file for an https:// proxy, instead of the
    /// built-in roots.
    #[arg(long, value_name = "PEM")]
    pub(crate) proxy_ca_file: Option<PathBuf>,
}

/// Where the proxy setting came from: it names what the user should change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxySource {
    /// `--proxy-host` and `--proxy-port`.
    Flags,
    /// An environment variable (`https_proxy` or `HTTPS_PROXY`).
    Environment(&'static str),
}

/// The proxy a failure is about, as the user named it: `host:port` and where that came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyName {
    /// `http://host:port` or `https://host:port`, without credentials.
    pub url: String,
    /// Where it was set.
    pub source: ProxySource,
    /// The user name sent to it, if any.
    pub user: Option<String>,
}

impl std::fmt::Display for ProxyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.source {
            ProxySource::Flags => write!(f, "{}", self.url),
            ProxySource::Environment(var) => write!(f, "{} (from {var})", self.url),
        }
    }
}

impl ProxyName {
    /// The settings that name this proxy, for a hint.
    pub(crate) fn settings(&self) -> &'static str {
        match self.source {
            ProxySource::Flags => "--proxy-host and --proxy-port",
            ProxySource::Environment("https_proxy") => "https_proxy",
            ProxySource::Environment(_) => "HTTPS_PROXY",
        }
    }

    /// Where the credentials are set, for a hint.
    pub(crate) fn credential_settings(&self) -> String {
        match self.source {
            ProxySource::Flags => format!("--proxy-user and {PASSWORD_VARIABLE} (or --proxy-password-file)"),
            ProxySource::Environment(var) => format!(
                "--proxy-user and {PASSWORD_VARIABLE} (or --proxy-password-file), or user:password@ in {var}"
            ),
        }
    }
}

/// Plain HTTP to the proxy, or TLS to the proxy first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

/// The proxy one connection goes through.
#[derive(Clone)]
pub(crate) struct Proxy {
    pub(crate) scheme: Scheme,
    /// Host name or IP address (an IPv6 address without brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) source: ProxySource,
    pub(crate) credentials: Option<(String, String)>,
    /// Trust roots for an https:// proxy.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("source", &self.source)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, secrets::MASK)),
            )
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// How failures name this proxy.
    pub(crate) fn name(&self) -> ProxyName {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        ProxyName {
            url: format!("{scheme}://{}:{}", bracketed(&self.host), self.port),
            source: self.source,
            user: self.credentials.as_ref().map(|(u, _)| u.clone()),
        }
    }

    /// rumqttc's setting for this proxy.
    pub(crate) fn to_rumqttc(&self) -> rumqttc::Proxy {
        let ty = match (&self.scheme, &self.tls) {
            (Scheme::Https, Some(config)) => {
                rumqttc::ProxyType::Https(rumqttc::TlsConfiguration::Rustls(config.clone()))
            }
            _ => rumqttc::ProxyType::Http,
        };
        let auth = match &self.credentials {
            Some((username, password)) => rumqttc::ProxyAuth::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            None => rumqttc::ProxyAuth::None,
        };
        rumqttc::Proxy {
            ty,
            auth,
            addr: bracketed(&self.host),
            port: self.port,
        }
    }
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The proxy for a connection to `endpoint`, if any: the flags, else the environment (`env`
/// reads a variable) unless `NO_PROXY` names the endpoint. Reads the password file and
/// registers the password as a secret.
pub(crate) fn choose(
    args: &ProxyArgs,
    endpoint: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, Error> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut proxy = match (&args.proxy_host, args.proxy_port) {
        (Some(host), Some(port)) => {
            let (scheme, host) = flag_host(host)?;
            Proxy {
                scheme,
                host,
                port,
                source: ProxySource::Flags,
                credentials: None,
                tls: None,
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::Usage(
                "--proxy-host and --proxy-port go together: give both".into(),
            ))
        }
        (None, None) => {
            let found = ["https_proxy", "HTTPS_PROXY"]
                .into_iter()
                .find_map(|name| var(name).map(|value| (name, value)));
            let Some((name, value)) = found else {
                if args.proxy_user.is_some() {
                    return Err(Error::Usage(
                        "--proxy-user is given but no proxy is: pass --proxy-host and \
                         --proxy-port, or set HTTPS_PROXY"
                            .into(),
                    ));
                }
                return Ok(None);
            };
            let no_proxy = ["no_proxy", "NO_PROXY"].into_iter().find_map(var);
            if let Some(list) = no_proxy {
                if no_proxy_matches(&list, endpoint) {
                    log::info!(
                        "NO_PROXY names {endpoint}: connecting directly, not through {name}"
                    );
                    return Ok(None);
                }
            }
            parse_proxy_url(&value, name)?
        }
    };
    if let Some(user) = &args.proxy_user {
        let password = match &args.proxy_password_file {
            Some(path) => read_password_file(path)?,
            None => var(PASSWORD_VARIABLE).ok_or_else(|| {
                Error::Usage(format!(
                    "--proxy-user needs a password: set {PASSWORD_VARIABLE} or pass \
                     --proxy-password-file (never on the command line)"
                ))
            })?,
        };
        proxy.credentials = Some((user.clone(), password));
    }
    if let Some((user, password)) = &proxy.credentials {
        register_credentials(user, password);
    }
    if proxy.scheme == Scheme::Https {
        proxy.tls = Some(crate::tls::proxy_config(args.proxy_ca_file.as_deref())?);
    } else if args.proxy_ca_file.is_some() {
        return Err(Error::Usage(
            "--proxy-ca-file is for an https:// proxy; this proxy is http://".into(),
        ));
    }
    log::info!("connecting through the proxy {}", proxy.name());
    Ok(Some(proxy))
}

/// Mask the password, and the `Proxy-Authorization` value made from it, in every output.
fn register_credentials(user: &str, password: &str) {
    use base64::Engine as _;
    secrets::register(password);
    secrets::register(
        &base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")),
    );
}

/// `--proxy-host`: a host name or IP address, optionally `http://` or `https://` before it.
fn flag_host(given: &str) -> Result<(Scheme, String), Error> {
    let given = given.trim();
    let (scheme, rest) = split_scheme(given).map_err(|scheme| {
        Error::Usage(format!(
            "--proxy-host: the samples speak HTTP CONNECT to http:// or https:// proxies, \
             not {scheme}://"
        ))
    })?;
    let host = rest.trim_end_matches('/');
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let is_v6 = bare.parse::<std::net::Ipv6Addr>().is_ok();
    if host.is_empty() || host.contains(['/', '@', ' ']) || (host.contains(':') && !is_v6) {
        return Err(Error::Usage(format!(
            "--proxy-host must be a host name or IP address (the port goes in --proxy-port), \
             not '{}'",
            secrets::redact(given)
        )));
    }
    Ok((scheme, bare.to_ascii_lowercase()))
}

/// The scheme of a URL (`http` if none), and the rest; `Err(scheme)` for one we do not speak.
fn split_scheme(url: &str) -> Result<(Scheme, &str), String> {
    match url.split_once("://") {
        None => Ok((Scheme::Http, url)),
        Some((s, rest)) if s.eq_ignore_ascii_case("http") => Ok((Scheme::Http, rest)),
        Some((s, rest)) if s.eq_ignore_ascii_case("https") => Ok((Scheme::Https, rest)),
        Some((s, _)) => Err(s.to_ascii_lowercase()),
    }
}

/// A proxy URL as curl reads `HTTPS_PROXY`: `[http[s]://][user[:password]@]host[:port][/]`.
fn parse_proxy_url(value: &str, variable: &'static str) -> Result<Proxy, Error> {
    let bad = |why: &str| {
        Error::Usage(format!(
            "{variable} is not a proxy URL ({why}): '{}'",
            secrets::redact(value.trim())
        ))
    };
    let (scheme, rest) = split_scheme(value.trim()).map_err(|scheme| {
        Error::Usage(format!(
            "{variable} names a {scheme}:// proxy; the samples speak HTTP CONNECT to http:// \
             or https:// proxies only"
        ))
    })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let credentials = match userinfo {
        Some(info) => {
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            let user = percent_decode(user).ok_or_else(|| bad("bad %-encoding"))?;
            let password = percent_decode(password).ok_or_else(|| bad("bad %-encoding"))?;
            // Mask it before anything can print the URL.
            secrets::register(password.as_str());
            Some((user, password))
        }
        None => None,
    };
    let default_port = match scheme {
        Scheme::Http => DEFAULT_HTTP_PROXY_PORT,
        Scheme::Https => 443,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("no ']'"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(bad("bad port")),
        };
        (host.to_string(), port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
            None => (hostport.to_string(), default_port),
        }
    };
    if host.is_empty() || port == 0 {
        return Err(bad("no host"));
    }
    Ok(Proxy {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
        source: ProxySource::Environment(variable),
        credentials,
        tls: None,
    })
}

fn percent_decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn read_password_file(path: &Path) -> Result<String, Error> {
    let file_error = |problem| Error::ProxyPasswordFile {
        path: path.to_path_buf(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        file_error(if e.kind() == std::io::ErrorKind::NotFound {
            FileProblem::Missing
        } else {
            FileProblem::Unreadable(e)
        })
    })?;
    let password = text.lines().next().unwrap_or_default().to_string();
    if password.is_empty() {
        return Err(file_error(FileProblem::NothingUsable(
            "password on its first line",
        )));
    }
    Ok(password)
}

/// Whether curl would connect to `host` directly with this `NO_PROXY` list: `*` matches every
/// host; a name matches itself and its subdomains (a leading `.` is ignored); an IP address
/// matches itself, or a `/prefix` range of addresses. Case and a trailing `.` do not matter.
pub(crate) fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    list.split([',', ' ', '\t'])
        .map(|entry| entry.trim())
        .filter(|entry| !entry.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry
                .trim_start_matches('.')
                .trim_end_matches('.')
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase();
            match host_ip {
                Some(ip) => ip_matches(ip, &entry),
                None => host == entry || host.ends_with(&format!(".{entry}")),
            }
        })
}

fn ip_matches(ip: IpAddr, entry: &str) -> bool {
    let (addr, bits) = match entry.split_once('/') {
        Some((a, b)) => match b.parse::<u32>() {
            Ok(bits) => (a, Some(bits)),
            Err(_) => return false,
        },
        None => (entry, None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => prefix_eq(&a.octets(), &n.octets(), bits.unwrap_or(32)),
        (IpAddr::V6(a), IpAddr::V6(n)) => prefix_eq(&a.octets(), &n.octets(), bits.unwrap_or(128)),
        _ => false,
    }
}

/// The first `bits` bits of `a` and `b` are equal (`bits` beyond their length: all of them).
fn prefix_eq(a: &[u8], b: &[u8], bits: u32) -> bool {
    let bits = (bits as usize).min(a.len() * 8);
    let (whole, rest) = (bits / 8, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[whole] & mask == b[whole] & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct TestArgs {
        #[command(flatten)]
        proxy: ProxyArgs,
    }

    fn args(list: &[&str]) -> ProxyArgs {
        TestArgs::try_parse_from(std::iter::once("test").chain(list.iter().copied()))
            .unwrap()
            .proxy
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn pick(list: &[&str], vars: &'static [(&'static str, &'static str)]) -> Option<Proxy> {
        choose(
            &args(list),
            "abc-ats.iot.eu-west-1.amazonaws.com",
            &env(vars),
        )
        .unwrap()
    }

    #[test]
    fn no_flag_and_no_variable_is_direct() {
        assert!(pick(&[], &[]).is_none());
        assert!(pick(&[], &[("HTTPS_PROXY", "  ")]).is_none());
        // http_proxy is for http:// URLs; the samples connect to TLS endpoints.
        assert!(pick(&[], &[("http_proxy", "http://p:1")]).is_none());
    }

    #[test]
    fn flags_and_the_official_aliases_name_the_proxy() {
        for list in [
            ["--proxy-host", "Proxy.example", "--proxy-port", "3128"],
            ["--proxy_host", "proxy.example", "--proxy_port", "3128"],
        ] {
            let p = pick(&list, &[]).unwrap();
            assert_eq!((p.host.as_str(), p.port), ("proxy.example", 3128));
            assert_eq!(p.scheme, Scheme::Http);
            assert_eq!(p.source, ProxySource::Flags);
            assert_eq!(p.name().to_string(), "http://proxy.example:3128");
        }
    }

    #[test]
    fn flags_win_over_the_environment_and_its_no_proxy() {
        let p = pick(
            &["--proxy-host", "flag.example", "--proxy-port", "8080"],
            &[
                ("HTTPS_PROXY", "http://env.example:3128"),
                ("NO_PROXY", "*"),
            ],
        )
        .unwrap();
        assert_eq!((p.host.as_str(), p.port), ("flag.example", 8080));
    }

    #[test]
    fn lower_case_https_proxy_wins_over_upper_case_as_in_curl() {
        let p = pick(
            &[],
            &[
                ("HTTPS_PROXY", "http://upper.example:1"),
                ("https_proxy", "http://lower.example:2"),
            ],
        )
        .unwrap();
        assert_eq!(p.host, "lower.example");
        assert_eq!(
            p.name().to_string(),
            "http://lower.example:2 (from https_proxy)"
        );
        let p = pick(&[], &[("HTTPS_PROXY", "upper.example")]).unwrap();
        assert_eq!((p.host.as_str(), p.port), ("upper.example", 1080));
        assert_eq!(p.source, ProxySource::Environment("HTTPS_PROXY"));
    }

    #[test]
    fn proxy_urls_are_read_as_curl_reads_them() {
        let url = |v: &str| parse_proxy_url(v, "HTTPS_PROXY");
        let p = url("http://[::1]:3128/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 3128));
        assert_eq!(p.to_rumqttc().addr, "[::1]");
        let p = url("https://proxy.example").unwrap();
        assert_eq!((p.scheme, p.port), (Scheme::Https, 443));
        let p = url("http://al%40ice:pa%3Ass-word1@proxy.example:8080").unwrap();
        let (user, password) = p.credentials.clone().unwrap();
        assert_eq!(
            (user.as_str(), password.as_str()),
            ("al@ice", "pa:ss-word1")
        );
        assert!(!format!("{p:?}").contains("pa:ss-word1"), "{p:?}");
        let e = url("socks5://proxy.example:1080").err().unwrap();
        assert_eq!(
            e.cause(),
            "HTTPS_PROXY names a socks5:// proxy; the samples speak HTTP CONNECT to http:// or \
             https:// proxies only"
        );
        let e = url("http://u:not-shown-secret@proxy.example:http")
            .err()
            .unwrap();
        assert_eq!(
            e.cause(),
            "HTTPS_PROXY is not a proxy URL (bad port): 'http://u:****@proxy.example:http'"
        );
    }

    #[test]
    fn no_proxy_matching_the_endpoint_goes_direct() {
        let vars: &'static [(&str, &str)] = &[
            ("HTTPS_PROXY", "http://proxy.example:3128"),
            ("NO_PROXY", "localhost, .amazonaws.com"),
        ];
        assert!(pick(&[], vars).is_none());
        let vars: &'static [(&str, &str)] = &[
            ("HTTPS_PROXY", "http://proxy.example:3128"),
            ("NO_PROXY", "amazonaws.com.evil"),
            ("no_proxy", "example.org"),
        ];
        // no_proxy (lower case) is read first; neither names the endpoint.
        assert!(pick(&[], vars).is_some());
    }

    #[test]
    fn no_proxy_matches_names_suffixes_ips_and_ranges() {
        let host = "abc-ats.iot.eu-west-1.amazonaws.com";
        for list in [
            "*",
            "amazonaws.com",
            ".amazonaws.com",
            "AMAZONAWS.COM.",
            "x, iot.eu-west-1.amazonaws.com",
        ] {
            assert!(no_proxy_matches(list, host), "{list}");
        }
        for list in [
            "",
            "zonaws.com",
            "eu-west-1",
            "ats.iot.eu-west-1.amazonaws.co",
            "*.example",
        ] {
            assert!(!no_proxy_matches(list, host), "{list}");
        }
        assert!(no_proxy_matches("localhost", "localhost"));
        assert!(no_proxy_matches("10.0.0.0/8", "10.1.2.3"));
        assert!(!no_proxy_matches("10.0.0.0/8", "11.1.2.3"));
        assert!(no_proxy_matches("192.168.1.7", "192.168.1.7"));
        assert!(!no_proxy_matches("192.168.1.7", "192.168.1.70"));
        assert!(no_proxy_matches("[::1]", "::1"));
        assert!(no_proxy_matches("fd00::/8", "fd12::1"));
        assert!(!no_proxy_matches("fd00::/8", "fe12::1"));
        // A name does not match an address, nor an address a name.
        assert!(!no_proxy_matches("localhost", "127.0.0.1"));
        assert!(!no_proxy_matches("127.0.0.1", "localhost"));
    }

    #[test]
    fn the_password_comes_from_the_environment_or_a_file_and_is_masked() {
        let list = [
            "--proxy-host",
            "p.example",
            "--proxy-port",
            "1",
            "--proxy-user",
            "alice",
        ];
        let p = pick(&list, &[("PROXY_PASSWORD", "env-secret-1")]).unwrap();
        assert_eq!(p.credentials, Some(("alice".into(), "env-secret-1".into())));
        assert_eq!(secrets::redact("x env-secret-1 y"), "x **** y");
        // base64("alice:env-secret-1"), the Proxy-Authorization value.
        assert_eq!(secrets::redact("YWxpY2U6ZW52LXNlY3JldC0x"), "****");
        let debug = format!("{p:?}");
        assert!(
            !debug.contains("env-secret-1") && debug.contains("****"),
            "{debug}"
        );

        let file = std::env::temp_dir().join(format!("proxy-pw-{}", std::process::id()));
        std::fs::write(&file, "file-secret-2\nsecond line\n").unwrap();
        let mut with_file: Vec<&str> = list.to_vec();
        let path = file.display().to_string();
        with_file.extend(["--proxy-password-file", &path]);
        let p = pick(&with_file, &[("PROXY_PASSWORD", "env-secret-1")]).unwrap();
        assert_eq!(
            p.credentials,
            Some(("alice".into(), "file-secret-2".into()))
        );

        let e = choose(&args(&list), "h", &env(&[])).err().unwrap();
        assert_eq!(
            e.cause(),
            "--proxy-user needs a password: set PROXY_PASSWORD or pass --proxy-password-file \
             (never on the command line)"
        );
        assert_eq!(e.exit_code(), 2);
        std::fs::write(&file, "\n").unwrap();
        let e = choose(&args(&with_file), "h", &env(&[])).err().unwrap();
        assert!(
            e.cause().ends_with("holds no password on its first line"),
            "{}",
            e.cause()
        );
        std::fs::remove_file(&file).unwrap();
        let e = choose(&args(&with_file), "h", &env(&[])).err().unwrap();
        assert!(e.cause().ends_with("does not exist"), "{}", e.cause());
    }

    #[test]
    fn there_is_no_password_flag() {
        let e = TestArgs::try_parse_from(["t", "--proxy-password", "x"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn half_a_proxy_is_a_usage_error() {
        let e = TestArgs::try_parse_from(["t", "--proxy-host", "p"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = choose(&args(&["--proxy-user", "u"]), "h", &env(&[]))
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e
            .cause()
            .starts_with("--proxy-user is given but no proxy is"));
        for bad in ["p:3128", "socks5://p", "u@p", "http://p/x"] {
            let e = choose(
                &args(&["--proxy-host", bad, "--proxy-port", "1"]),
                "h",
                &env(&[]),
            )
            .err()
            .unwrap_or_else(|| panic!("{bad}"));
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
    }
}
