//! The two listeners and the path every connection takes:
//! accept -> TLS (ALPN decides the route) -> [WebSocket upgrade + SigV4] -> CONNECT ->
//! authenticate + authorize -> the embedded broker (or `--upstream`), or refuse as IoT Core does.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use crate::auth::{reason, Authenticator, Context, Outcome};
use crate::broker::{self, Broker};
use crate::config::{AccessKey, Config};
use crate::logsafe::escaped;
use crate::mqtt::{self, Version};
use crate::mtls::Registry;
use crate::tls::{route, server_configs, Listener, Route};
use crate::websocket::{self, NotAnUpgrade};
use crate::{custom_auth, renewal, sigv4};

/// Default deadline for each step a client must take: the TLS handshake, the WebSocket upgrade
/// request, and the CONNECT packet.
pub const STEP_DEADLINE: Duration = Duration::from_secs(10);

/// First pause after an accept fails for lack of resources (descriptors, buffers, memory); it
/// doubles with each failure in a row, up to [`ACCEPT_BACKOFF_MAX`].
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between accepts that fail.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per this interval for a repeated event (refusals over the cap, accept
/// failures), with the count since the previous line.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// How to run; what is not here comes from the account's configuration.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    pub bind: Option<IpAddr>,
    pub port_443: Option<u16>,
    pub port_8883: Option<u16>,
    /// Bridge to this external broker instead of the embedded one.
    pub upstream: Option<String>,
    /// Answer refused MQTT 3.1.1 clients with a CONNACK instead of closing.
    pub connack_on_v311_reject: Option<bool>,
    /// Deadline for each of the TLS handshake, the upgrade request and CONNECT
    /// [default: [`STEP_DEADLINE`]].
    pub step_deadline: Option<Duration>,
    /// Most connections accepted but not yet authenticated; more are closed as soon as they are
    /// accepted [default: from the account, `max_pending_connections`].
    pub max_pending: Option<usize>,
    /// PUBLISH per second per connection, inbound and outbound together; 0: no quota
    /// [default: [`broker::quota::DEFAULT_PUBLISH_QUOTA`]]. Not applied with `upstream`.
    pub publish_quota: Option<u32>,
    /// How long one second of a custom authorizer's `refreshAfterInSeconds` and
    /// `disconnectAfterInSeconds` lasts [default: 1 s]. Only tests shorten it, so that the
    /// 300 s minimum AWS enforces on both passes in well under a second.
    pub authorizer_second: Option<Duration>,
}

/// One authentication decision, as logged.
///
/// `client_id` and `detail` hold the client's text as it came (a client id, an authorizer name, a
/// path, an access key id); `Display` escapes their control characters (see [`crate::logsafe`]),
/// so a decision always logs as one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub peer: SocketAddr,
    pub listener: Listener,
    pub route: Option<Route>,
    pub client_id: Option<String>,
    pub allowed: bool,
    /// The principal when allowed, the reason when denied.
    pub detail: String,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let port = match self.listener {
            Listener::Port443 => "443",
            Listener::Port8883 => "8883",
        };
        write!(f, "{} [{port}", self.peer)?;
        if let Some(r) = self.route {
            write!(f, " {r}")?;
        }
        write!(f, "]")?;
        if let Some(id) = &self.client_id {
            write!(f, " client '{}'", escaped(id))?;
        }
        let verdict = if self.allowed { "allowed" } else { "denied" };
        write!(f, ": {verdict}: {}", escaped(&self.detail))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsSetupError),
    #[error("authorizer {name}: {reason}")]
    AuthorizerKeys {
        name: String,
        reason: custom_auth::KeyError,
    },
    #[error("cannot listen on {addr}: {source}{}", bind_hint(.addr, .source))]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("bind address '{0}' is not an IP address")]
    BadBind(String),
}

/// What to do about a listener that cannot be opened, after the OS error.
fn bind_hint(addr: &SocketAddr, error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "; another iot-core-local (or other program) is listening on {addr}: stop it, or pass \
             --port-443 0 --port-8883 0 to pick free ports"
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            "; no network interface of this machine has that address: check --bind".to_string()
        }
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            "; ports below 1024 need privileges: pick a port of 1024 or more".to_string()
        }
        _ => String::new(),
    }
}

/// Where authenticated connections go.
enum Backend {
    Embedded(Broker),
    /// An external broker's `host:port`.
    Upstream(String),
}

struct State {
    step_deadline: Duration,
    /// See [`ServeOptions::authorizer_second`].
    authorizer_second: Duration,
    auth: Authenticator,
    acceptor_443: TlsAcceptor,
    acceptor_8883: TlsAcceptor,
    backend: Backend,
    connack_on_v311_reject: bool,
    decisions: broadcast::Sender<Decision>,
    /// One permit per connection accepted and not yet authenticated.
    pending: Arc<Semaphore>,
    max_pending: usize,
    /// Connections closed at accept because `pending` had no permit left.
    refused: Throttled,
    /// Accepts that failed for lack of resources.
    accept_failures: Throttled,
}

/// A running endpoint.
pub struct Running {
    pub addr_443: SocketAddr,
    pub addr_8883: SocketAddr,
    decisions: broadcast::Sender<Decision>,
    broker: Option<Broker>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Every decision from now on.
    pub fn decisions(&self) -> broadcast::Receiver<Decision> {
        self.decisions.subscribe()
    }

    /// The embedded broker (none with `--upstream`).
    pub fn broker(&self) -> Option<&Broker> {
        self.broker.as_ref()
    }

    /// Stop accepting connections.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Load the account in `dir` and start both listeners.
pub async fn start(dir: &Path, opts: &ServeOptions) -> Result<Running, ServeError> {
    let config = Config::load(dir)?;
    let (tls_443, tls_8883) = server_configs(
        &dir.join(&config.server.certificate),
        &dir.join(&config.server.private_key),
    )?;
    let registry = Registry::load(&config, dir)?;
    let mut keys = std::collections::BTreeMap::new();
    for a in &config.authorizers {
        let loaded =
            custom_auth::load_public_keys(a, dir).map_err(|reason| ServeError::AuthorizerKeys {
                name: a.name.clone(),
                reason,
            })?;
        keys.insert(a.name.clone(), loaded);
    }
    let backend = match &opts.upstream {
        Some(addr) => Backend::Upstream(addr.clone()),
        None => Backend::Embedded(Broker::start_with(broker::Settings {
            publish_quota: opts
                .publish_quota
                .unwrap_or(broker::quota::DEFAULT_PUBLISH_QUOTA),
        })),
    };
    let broker = match &backend {
        Backend::Embedded(b) => Some(b.clone()),
        Backend::Upstream(_) => None,
    };

    let bind: IpAddr = match opts.bind {
        Some(ip) => ip,
        None => config
            .server
            .bind
            .parse()
            .map_err(|_| ServeError::BadBind(config.server.bind.clone()))?,
    };
    let listen = |port: u16| async move {
        let addr = SocketAddr::new(bind, port);
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let l443 = listen(opts.port_443.unwrap_or(config.server.port_443)).await?;
    let l8883 = listen(opts.port_8883.unwrap_or(config.server.port_8883)).await?;
    let addr_443 = l443.local_addr().map_err(|source| ServeError::Bind {
        addr: SocketAddr::new(bind, 0),
        source,
    })?;
    let addr_8883 = l8883.local_addr().map_err(|source| ServeError::Bind {
        addr: SocketAddr::new(bind, 0),
        source,
    })?;

    let (decisions, _) = broadcast::channel(1024);
    let connack_on_v311_reject = opts
        .connack_on_v311_reject
        .unwrap_or(config.server.connack_on_v311_reject);
    let max_pending = opts
        .max_pending
        .unwrap_or(config.server.max_pending_connections);
    let state = Arc::new(State {
        step_deadline: opts.step_deadline.unwrap_or(STEP_DEADLINE),
        authorizer_second: opts.authorizer_second.unwrap_or(Duration::from_secs(1)),
        auth: Authenticator {
            config,
            registry,
            keys,
        },
        acceptor_443: TlsAcceptor::from(tls_443),
        acceptor_8883: TlsAcceptor::from(tls_8883),
        backend,
        connack_on_v311_reject,
        decisions: decisions.clone(),
        pending: Arc::new(Semaphore::new(max_pending)),
        max_pending,
        refused: Throttled::default(),
        accept_failures: Throttled::default(),
    });
    let (stop, stopped) = watch::channel(false);
    let tasks = vec![
        tokio::spawn(accept_loop(
            state.clone(),
            l443,
            Listener::Port443,
            stopped.clone(),
        )),
        tokio::spawn(accept_loop(
            state.clone(),
            l8883,
            Listener::Port8883,
            stopped.clone(),
        )),
        tokio::spawn(flush_counted_logs(state, stopped)),
    ];
    Ok(Running {
        addr_443,
        addr_8883,
        decisions,
        broker,
        stop,
        tasks,
    })
}

/// Accept connections until `stop`. Each one takes a permit of `state.pending` (closed at once
/// when none is left) and runs in its own task; accepts that fail for lack of resources back off.
async fn accept_loop(
    state: Arc<State>,
    listener: TcpListener,
    which: Listener,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff.reset();
                let Ok(permit) = state.pending.clone().try_acquire_owned() else {
                    // Closed before TLS: the client sees its connection end at once.
                    drop(tcp);
                    if let Some(n) = state.refused.note() {
                        state.log_refused(n);
                    }
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move { connection(state, tcp, peer, which, permit).await });
            }
            Err(e) if is_per_connection(&e) => {
                log::debug!("accept: a connection failed before it was accepted: {e}");
            }
            Err(e) => {
                let pause = backoff.next();
                if let Some(n) = state.accept_failures.note() {
                    log::warn!(
                        "accept failed {n} time(s) since the last line: {e}; \
                         retrying in {pause:?}"
                    );
                }
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// Once a second, log the events [`Throttled`] held back, so that the count of a burst that
/// ended is not left unsaid.
async fn flush_counted_logs(state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(LOG_EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        if let Some(n) = state.refused.held_at(now) {
            state.log_refused(n);
        }
        if let Some(n) = state.accept_failures.held_at(now) {
            log::warn!("accept failed {n} more time(s) since the last line");
        }
    }
}

/// An accept error that concerns only the connection being accepted (it was reset or aborted
/// while queued), not the listener: the next accept may succeed at once.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::Interrupted | K::WouldBlock
    )
}

/// The pause after each accept failure in a row: [`ACCEPT_BACKOFF_MIN`], doubling up to
/// [`ACCEPT_BACKOFF_MAX`].
#[derive(Default)]
struct Backoff {
    current: Option<Duration>,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let pause = match self.current {
            None => ACCEPT_BACKOFF_MIN,
            Some(d) => (d * 2).min(ACCEPT_BACKOFF_MAX),
        };
        self.current = Some(pause);
        pause
    }

    fn reset(&mut self) {
        self.current = None;
    }
}

/// Counts a repeated event and lets a log line through at most once per [`LOG_EVERY`].
#[derive(Default)]
struct Throttled {
    /// Events since the last line, and when that line was written.
    inner: Mutex<(u64, Option<Instant>)>,
}

impl Throttled {
    /// Count one event. When a line is due, returns how many events it reports (this one and
    /// those held back since the previous line).
    fn note(&self) -> Option<u64> {
        self.note_at(Instant::now())
    }

    /// The events held back, if there are any and a line is due.
    fn held_at(&self, now: Instant) -> Option<u64> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (count, last) = &mut *inner;
        if *count == 0 || last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(count))
    }

    fn note_at(&self, now: Instant) -> Option<u64> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (count, last) = &mut *inner;
        *count += 1;
        if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(count))
    }
}

impl State {
    fn log_refused(&self, n: u64) {
        log::warn!(
            "refused {n} connection(s) since the last line: {} connections are already waiting \
             to authenticate (--max-pending)",
            self.max_pending
        );
    }

    fn decide(&self, d: Decision) {
        log::info!("{d}");
        let _ = self.decisions.send(d);
    }
}

/// One connection, from accept to the end. `permit` counts it as pending until it is decided
/// (see [`Conn::decide`]); it goes back when this function returns, whatever the path.
async fn connection(
    state: Arc<State>,
    tcp: TcpStream,
    peer: SocketAddr,
    which: Listener,
    permit: OwnedSemaphorePermit,
) {
    let pending = Pending(Mutex::new(Some(permit)));
    let _ = tcp.set_nodelay(true);
    let acceptor = match which {
        Listener::Port443 => &state.acceptor_443,
        Listener::Port8883 => &state.acceptor_8883,
    };
    // A refusal before the route is known: logged, and the connection dropped.
    let deny_before_route = |detail: String| {
        state.decide(Decision {
            peer,
            listener: which,
            route: None,
            client_id: None,
            allowed: false,
            detail,
        });
    };
    // Boxed as soon as it exists: the TLS stream (1.2 KB) is otherwise moved by value through
    // each layer of nested futures down to the broker's connection, and the compiler keeps a
    // copy of it at several of those layers (this one included) for as long as the connection
    // lives.
    let tls = match timeout(state.step_deadline, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Box::new(tls),
        Ok(Err(e)) => return deny_before_route(format!("TLS handshake failed: {e}")),
        Err(_) => {
            let detail = format!("no TLS handshake within {:?}", state.step_deadline);
            return deny_before_route(detail);
        }
    };
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let server_name = session.server_name().map(str::to_string);
    let peer_certs = session.peer_certificates().map(<[_]>::to_vec);
    let Some(route) = route(which, alpn.as_deref()) else {
        let alpn = String::from_utf8_lossy(alpn.as_deref().unwrap_or_default());
        return deny_before_route(format!("ALPN '{alpn}' is not served on this listener"));
    };
    let base = Conn {
        state: &state,
        peer,
        listener: which,
        route,
        server_name: server_name.as_deref(),
        pending: &pending,
    };
    match route {
        Route::Mtls | Route::CustomAuth => {
            base.mqtt(tls, peer_certs.as_deref(), None, None).await;
        }
        // Boxed: the WebSocket path's state (its stream, the upgrade request, and the MQTT
        // session over them) is several times the mTLS path's, and an unboxed branch would make
        // every connection's task that large, idle mTLS ones included.
        Route::WebSocket => Box::pin(base.websocket(tls)).await,
    }
}

/// The permit that counts a connection as not yet authenticated, until [`Pending::end`].
struct Pending(Mutex<Option<OwnedSemaphorePermit>>);

impl Pending {
    fn end(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

struct Conn<'a> {
    state: &'a State,
    peer: SocketAddr,
    listener: Listener,
    route: Route,
    server_name: Option<&'a str>,
    pending: &'a Pending,
}

impl Conn<'_> {
    /// Log a decision. The connection is no longer pending: allowed, the broker takes it;
    /// denied, it is about to close.
    fn decide(&self, client_id: Option<String>, allowed: bool, detail: String) {
        self.pending.end();
        self.state.decide(Decision {
            peer: self.peer,
            listener: self.listener,
            route: Some(self.route),
            client_id,
            allowed,
            detail,
        });
    }

    async fn websocket<S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static>(
        &self,
        mut stream: S,
    ) {
        let deadline = self.state.step_deadline;
        let (req, rest) = match timeout(deadline, websocket::read_head(&mut stream)).await {
            Ok(Ok(head)) => head,
            Ok(Err(e @ websocket::HeadError::NotHttp)) => {
                self.decide(None, false, e.to_string());
                return;
            }
            Ok(Err(e)) => {
                self.decide(None, false, format!("bad WebSocket upgrade request: {e}"));
                websocket::refuse(&mut stream, 400, "Bad Request").await;
                return;
            }
            Err(_) => {
                self.decide(
                    None,
                    false,
                    format!("no WebSocket upgrade request within {deadline:?}"),
                );
                return;
            }
        };
        let key = match websocket::check_upgrade(&req) {
            Ok(key) => key.to_string(),
            Err(NotAnUpgrade::WrongPath(path)) => {
                self.decide(None, false, format!("WebSocket path '{path}' is not /mqtt"));
                websocket::refuse(&mut stream, 404, "Not Found").await;
                return;
            }
            Err(NotAnUpgrade::NotWebSocket(why)) => {
                self.decide(None, false, format!("not a WebSocket upgrade: {why}"));
                websocket::refuse(&mut stream, 400, "Bad Request").await;
                return;
            }
        };

        let mut sigv4_key: Option<&AccessKey> = None;
        if sigv4::is_presigned(&req.raw_query) {
            let config = &self.state.auth.config;
            let request = sigv4::UpgradeRequest {
                method: &req.method,
                path: &req.path,
                raw_query: &req.raw_query,
                headers: &req.headers,
            };
            let rules = sigv4::Rules {
                region: &config.region,
                now: SystemTime::now(),
                max_skew: Duration::from_secs(config.server.clock_skew_seconds),
            };
            match sigv4::verify(&request, &rules, &config.credentials) {
                Ok((_, key)) => sigv4_key = Some(key),
                Err(denial) => {
                    self.decide(None, false, format!("SigV4: {denial}"));
                    websocket::refuse(&mut stream, 403, &http_message(&denial)).await;
                    return;
                }
            }
        }
        let ws = match websocket::accept(stream, &req, &key, rest).await {
            Ok(ws) => ws,
            Err(e) => {
                log::info!("{}: WebSocket upgrade failed: {e}", self.peer);
                return;
            }
        };
        self.mqtt(ws, None, Some(&req), sigv4_key).await;
    }

    async fn mqtt<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        peer_certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
        http: Option<&websocket::Upgrade>,
        sigv4_key: Option<&AccessKey>,
    ) {
        let deadline = self.state.step_deadline;
        let (mut connect, raw) = match timeout(
            deadline,
            mqtt::read_connect(&mut stream, mqtt::MAX_CONNECT_SIZE),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.decide(None, false, format!("no valid CONNECT: {e}"));
                return;
            }
            Err(_) => {
                self.decide(None, false, format!("no CONNECT within {deadline:?}"));
                return;
            }
        };
        connect.assign_client_id();
        let ctx = Context {
            route: self.route,
            peer_ip: self.peer.ip(),
            server_name: self.server_name,
            peer_certs,
            http,
            sigv4_key,
        };
        // Boxed, as `keep` below: a connection's task is as large as its largest state, and
        // these are only alive for a moment (or only for custom authorizers with a refresh).
        let outcome = Box::pin(self.state.auth.decide(&ctx, &connect)).await;
        let id = Some(connect.client_id.clone());
        match outcome {
            Outcome::Allowed {
                principal,
                principal_id,
                policies,
                facts,
                renewal,
            } => {
                self.decide(id, true, principal);
                match &self.state.backend {
                    Backend::Embedded(b) => {
                        let who = format!("{} client '{}'", self.peer, escaped(&connect.client_id));
                        let origin = broker::Origin {
                            peer: self.peer.to_string(),
                            ip: Some(self.peer.ip()),
                            principal: Some(principal_id),
                        };
                        let plane = broker::Policies::new(policies, *facts);
                        let serve = b.serve(stream, connect, origin, &plane);
                        let Some(renewal) = renewal else {
                            return serve.await;
                        };
                        // The authorizer's timers run beside the connection and end with it; once
                        // they revoke it, the connection closes itself.
                        let keep = Box::pin(async {
                            renewal::keep_authorized(
                                &self.state.auth.config,
                                &renewal,
                                &plane,
                                &who,
                                self.state.authorizer_second,
                            )
                            .await;
                            std::future::pending::<()>().await
                        });
                        tokio::select! {
                            _ = serve => {}
                            _ = keep => {}
                        }
                    }
                    Backend::Upstream(addr) => {
                        let bridged = broker::upstream::bridge(
                            &mut stream,
                            &raw,
                            connect.version,
                            addr,
                            connect.keep_alive,
                        )
                        .await;
                        if let Err(e) = bridged {
                            log::warn!("{}: the broker is unreachable: {e}", self.peer);
                            self.refuse(
                                &mut stream,
                                connect.version,
                                reason::SERVER_UNAVAILABLE,
                                "Server unavailable",
                                false,
                            )
                            .await;
                        }
                    }
                }
            }
            Outcome::Denied { code, reason: why } => {
                // MQTT 3.1.1 allows refusing an empty id with CONNACK 2 (identifier rejected):
                // the choice made here, where IoT Core's answer is unknown (issue 9 choices).
                let empty_v311_id = connect.client_id.is_empty();
                self.decide(id, false, why);
                let text = match code {
                    reason::CLIENT_ID_NOT_VALID => "Client identifier not valid".to_string(),
                    _ => format!(
                        "Client is not authenticated/authorized to send the message:{}",
                        uuid::Uuid::new_v4()
                    ),
                };
                self.refuse(&mut stream, connect.version, code, &text, empty_v311_id)
                    .await;
            }
        }
    }

    /// MQTT 5: CONNACK with the reason code and string, then close. MQTT 3.1.1: close with no
    /// CONNACK, as IoT Core does (or CONNACK 2 / 5 with `connack_on_v311_reject`), except that
    /// `v311_connack` always answers (the empty client id).
    async fn refuse<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        version: Version,
        code: u8,
        text: &str,
        v311_connack: bool,
    ) {
        let bytes = match version {
            Version::V5 => Some(mqtt::connack_v5(code, Some(text))),
            Version::V311 if self.state.connack_on_v311_reject || v311_connack => {
                Some(mqtt::connack_v311(match code {
                    reason::CLIENT_ID_NOT_VALID => 2,
                    reason::BAD_USERNAME_OR_PASSWORD => 4,
                    reason::SERVER_UNAVAILABLE => 3,
                    _ => 5,
                }))
            }
            Version::V311 => None,
        };
        if let Some(bytes) = bytes {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.flush().await;
        }
        let _ = stream.shutdown().await;
    }
}

/// The JSON message of a 403, in the words AWS services use for these SigV4 failures.
fn http_message(denial: &sigv4::Denial) -> String {
    use sigv4::Denial as D;
    match denial {
        D::SignatureMismatch { .. } => {
            "The request signature we calculated does not match the signature you provided.".into()
        }
        D::ClockSkew { .. } => {
            "Signature expired: X-Amz-Date is outside the allowed clock skew.".into()
        }
        D::UnknownAccessKey { .. } => {
            "The security token included in the request is invalid.".into()
        }
        D::SessionTokenMissing { .. }
        | D::SessionTokenMismatch { .. }
        | D::UnexpectedSessionToken { .. } => {
            "The security token included in the request is invalid.".into()
        }
        D::WrongRegion { .. } => "Credential should be scoped to a valid region.".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_second_and_starts_again_after_a_success() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..6).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), ACCEPT_BACKOFF_MIN);
    }

    #[test]
    fn a_repeated_event_is_logged_once_a_second_with_its_count() {
        let t = Throttled::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(t.note_at(at(0)), Some(1), "the first one at once");
        assert_eq!(t.note_at(at(10)), None);
        assert_eq!(t.note_at(at(999)), None);
        assert_eq!(t.note_at(at(1000)), Some(3), "the held-back ones counted");
        assert_eq!(t.note_at(at(1500)), None);
        assert_eq!(t.note_at(at(2600)), Some(2));
        assert_eq!(t.held_at(at(2700)), None, "nothing held");
        assert_eq!(t.note_at(at(2800)), None);
        assert_eq!(t.held_at(at(3000)), None, "not due yet");
        assert_eq!(
            t.held_at(at(3600)),
            Some(1),
            "the end of a burst is logged too"
        );
        assert_eq!(t.held_at(at(4700)), None);
    }

    #[test]
    fn per_connection_accept_errors_are_told_from_resource_errors() {
        use std::io::{Error, ErrorKind};
        assert!(is_per_connection(&Error::from(
            ErrorKind::ConnectionAborted
        )));
        assert!(!is_per_connection(&Error::from_raw_os_error(24))); // EMFILE
        assert!(!is_per_connection(&Error::from_raw_os_error(23))); // ENFILE
        assert!(!is_per_connection(&Error::from(ErrorKind::OutOfMemory)));
    }

    #[test]
    fn a_decision_logs_as_one_line_whatever_the_client_sent() {
        let d = Decision {
            peer: "127.0.0.1:1".parse().unwrap(),
            listener: Listener::Port443,
            route: Some(Route::CustomAuth),
            client_id: Some("test-a\nforged".into()),
            allowed: false,
            detail: "no authorizer named 'evil\r\nx: allowed: FORGED'".into(),
        };
        assert_eq!(
            d.to_string(),
            "127.0.0.1:1 [443 custom-auth] client 'test-a\\nforged': denied: \
             no authorizer named 'evil\\r\\nx: allowed: FORGED'"
        );
    }
}
