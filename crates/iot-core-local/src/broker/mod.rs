//! The last step: the MQTT broker, in this process, written for AWS IoT Core's semantics
//! (`shared/reference/aws-iot-core-data-plane.md`).
//!
//! - [`router`]: what connections share: sessions by client id, subscriptions, retained
//!   messages, queued messages;
//! - [`connection`]: one task per connection, owning its socket, from CONNACK to the end;
//! - [`topic`]: topic names and filters, their size and depth limits, and which filter matches
//!   which topic;
//! - [`reserved`]: which `$` topics a client may publish or subscribe to (IoT Core's reserved
//!   topics, Basic Ingest);
//! - [`quota`]: the publish quota of one connection;
//! - [`dataplane`]: the policy hook called at each PUBLISH, SUBSCRIBE filter and delivery;
//! - [`lifecycle`]: the `$aws/events/...` presence and subscription events, and their
//!   per-client-id version numbers;
//! - [`upstream`]: `--upstream host:port`, a byte bridge to an external broker instead.
//!
//! Not here: authentication and `iot:Connect` (done before the broker sees the connection).
//!
//! Why a broker of our own (issue 8): the embedded rumqttd 0.20 panicked on ordinary client
//! sequences (two clients sharing a client id and alternating MQTT 5 and 3.1.1: a panic at its
//! `server/broker.rs:544` within a few rounds, then `PoisonError`, and every later MQTT 5
//! CONNECT got 0x88 until restart), kept memory per distinct client id forever, cost a second
//! TCP hop per connection, and could not do what IoT Core does after CONNECT (a policy check at
//! every PUBLISH, SUBSCRIBE and delivery, retained messages on the exact filter only, `a/#` not
//! matching `a`). Idle memory per mTLS connection (`scripts/idle-memory.sh`, 1,000 MQTT 3.1.1
//! connections, release build): 78.8 KiB with rumqttd behind the bridge, 26.7 KiB with this
//! broker when it replaced rumqttd (RSS 88.7 MB vs 33.7 MB after they closed); measured again
//! in a later session at 38.5 KiB, and 17.7 KiB (side by side) once the connection task stopped
//! carrying copies of the TLS stream and policies stopped storing one 40-byte piece per
//! character (Mosquitto on the same machine: 19.0 KiB). After they close, the router holds
//! nothing for them but the lifecycle events' `versionNumber` of their client id, for an hour
//! and for at most [`lifecycle::OFFLINE_VERSIONS_CAP`] client ids.

pub mod connection;
pub mod dataplane;
pub mod lifecycle;
pub mod quota;
pub mod reserved;
pub mod router;
pub mod topic;
pub mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

pub use dataplane::{Action, AllowAll, DataPlane, Denied, Policies, RevokeCause, Revoked};
pub use router::Stats;

use crate::mqtt::{read_connect, MqttError, MAX_CONNECT_SIZE};

/// How often expired persistent sessions are freed.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Where a connection comes from and who it is: the name of its log lines, and the `ipAddress`
/// and `principalIdentifier` of its lifecycle events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// Names the connection in log lines (its address, or a test's name for a pipe).
    pub peer: String,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// Who authenticated: the certificate id, the access key id, or the authorizer's
    /// principalId. `None` on the plain broker, which authenticates nobody and publishes no
    /// lifecycle events.
    pub principal: Option<String>,
}

impl From<&str> for Origin {
    /// A connection named `peer`, with its address if `peer` is one, and no principal.
    fn from(peer: &str) -> Origin {
        Origin {
            peer: peer.to_string(),
            ip: peer.parse::<SocketAddr>().ok().map(|a| a.ip()),
            principal: None,
        }
    }
}

/// The rules `serve` lets a user change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// PUBLISH per second per connection, inbound and outbound together; 0: no quota.
    pub publish_quota: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            publish_quota: quota::DEFAULT_PUBLISH_QUOTA,
        }
    }
}

/// The embedded broker: cheap to clone, shared by every connection.
#[derive(Clone, Default)]
pub struct Broker {
    router: Arc<router::Router>,
    settings: Settings,
}

impl Broker {
    /// A broker with IoT Core's default settings and its expiry sweep running on the current
    /// Tokio runtime (it stops when the last clone of the broker is dropped).
    pub fn start() -> Broker {
        Broker::start_with(Settings::default())
    }

    /// [`Broker::start`] with these settings.
    pub fn start_with(settings: Settings) -> Broker {
        let broker = Broker::with_settings(settings);
        let weak: Weak<router::Router> = Arc::downgrade(&broker.router);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                let Some(router) = weak.upgrade() else { break };
                router.sweep(std::time::Instant::now());
            }
        });
        broker
    }

    /// A broker with these settings and no expiry sweep (for tests).
    pub fn with_settings(settings: Settings) -> Broker {
        Broker {
            settings,
            ..Broker::default()
        }
    }

    /// Serve one connection whose CONNECT was read, authenticated and authorized: send its
    /// CONNACK, then run it until it ends. `origin` names the connection in log lines and its
    /// lifecycle events (a `&str` is its log name); `policy` decides its data-plane actions.
    pub async fn serve<S>(
        &self,
        stream: S,
        connect: crate::mqtt::Connect,
        origin: impl Into<Origin>,
        policy: &dyn DataPlane,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        connection::run(
            &self.router,
            self.settings,
            stream,
            connect,
            &origin.into(),
            policy,
        )
        .await;
    }

    /// What the router holds now (expired sessions are freed first).
    pub fn stats(&self) -> Stats {
        self.router.sweep(std::time::Instant::now());
        self.router.stats()
    }

    /// Serve plain MQTT (no TLS, no authentication, every action allowed) on `listener` until
    /// the task is dropped: for tests and benchmarks that need a broker on a loopback port,
    /// e.g. as the `--upstream` of another endpoint.
    pub async fn serve_plain(self, listener: TcpListener, step_deadline: Duration) {
        loop {
            let Ok((mut tcp, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let broker = self.clone();
            tokio::spawn(async move {
                let connect =
                    tokio::time::timeout(step_deadline, read_connect(&mut tcp, MAX_CONNECT_SIZE))
                        .await;
                match connect {
                    Ok(Ok((connect, _))) => {
                        let origin = Origin {
                            peer: peer.to_string(),
                            ip: Some(peer.ip()),
                            principal: None,
                        };
                        broker.serve(tcp, connect, origin, &AllowAll).await
                    }
                    Ok(Err(e @ MqttError::Closed)) => log::debug!("{peer}: {e}"),
                    Ok(Err(e)) => log::info!("{peer}: no valid CONNECT: {e}"),
                    Err(_) => log::info!("{peer}: no CONNECT within {step_deadline:?}"),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_name_gives_its_address_when_it_is_one() {
        let o = Origin::from("127.0.0.1:4321");
        assert_eq!(o.ip, Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(o.peer, "127.0.0.1:4321");
        assert_eq!(o.principal, None);
        assert_eq!(Origin::from("[::1]:1").ip, "::1".parse().ok());
        assert_eq!(Origin::from("pipe").ip, None);
    }
}
