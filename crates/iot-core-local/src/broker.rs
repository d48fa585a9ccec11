//! The last step: an authenticated connection is bridged to a real MQTT broker, rumqttd embedded
//! in this process (MQTT 3.1.1 and 5 listeners on loopback), or an external one (`--upstream`).
//! The client's CONNECT is forwarded unchanged, then bytes flow both ways until either side closes.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mqtt::Version;

/// Where authenticated connections go.
#[derive(Clone, Debug)]
pub enum Upstream {
    /// The embedded broker's listeners.
    Embedded { v311: SocketAddr, v5: SocketAddr },
    /// An external broker (e.g. Mosquitto) that speaks both versions on one port.
    External(String),
}

impl Upstream {
    fn address(&self, version: Version) -> String {
        match (self, version) {
            (Upstream::Embedded { v311, .. }, Version::V311) => v311.to_string(),
            (Upstream::Embedded { v5, .. }, Version::V5) => v5.to_string(),
            (Upstream::External(addr), _) => addr.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("no free loopback port for the embedded broker: {0}")]
    Port(std::io::Error),
    #[error("the embedded broker's configuration was refused: {0}")]
    Config(String),
    #[error("the embedded broker did not start listening on {0}")]
    NotListening(SocketAddr),
}

/// Start rumqttd in this process on two free loopback ports and wait until it accepts.
pub async fn start_embedded() -> Result<Upstream, BrokerError> {
    let v311 = free_port()?;
    let v5 = free_port()?;
    let toml = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "{v311}"
next_connection_delay_ms = 0
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 131072
max_inflight_count = 100
dynamic_filters = true

[v5.1]
name = "v5-1"
listen = "{v5}"
next_connection_delay_ms = 0
[v5.1.connections]
connection_timeout_ms = 60000
max_payload_size = 131072
max_inflight_count = 100
"#
    );
    let config: rumqttd::Config =
        toml::from_str(&toml).map_err(|e| BrokerError::Config(e.to_string()))?;
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                log::error!("embedded broker stopped: {e}");
            }
        })
        .map_err(BrokerError::Port)?;
    for addr in [v311, v5] {
        wait_listening(addr).await?;
    }
    log::debug!("embedded rumqttd: MQTT 3.1.1 on {v311}, MQTT 5 on {v5}");
    Ok(Upstream::Embedded { v311, v5 })
}

fn free_port() -> Result<SocketAddr, BrokerError> {
    let listener = StdListener::bind("127.0.0.1:0").map_err(BrokerError::Port)?;
    listener.local_addr().map_err(BrokerError::Port)
}

async fn wait_listening(addr: SocketAddr) -> Result<(), BrokerError> {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(BrokerError::NotListening(addr))
}

/// MQTT 5 DISCONNECT with reason 0x8E "Session taken over", no properties.
pub const DISCONNECT_TAKEN_OVER: [u8; 4] = [0xE0, 0x02, 0x8E, 0x00];

/// Forward `connect` (the client's raw CONNECT) to the broker, then copy both ways until either
/// side closes or `taken_over` fires: another connection with the same client id was accepted,
/// and, as IoT Core does, this one ends (MQTT 5: DISCONNECT 0x8E first).
/// Returns an error only if the broker could not be reached; the caller answers the client.
pub async fn bridge<S>(
    client: &mut S,
    connect: &[u8],
    version: Version,
    upstream: &Upstream,
    taken_over: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let addr = upstream.address(version);
    let mut broker = TcpStream::connect(&addr).await?;
    broker.set_nodelay(true)?;
    broker.write_all(connect).await?;
    tokio::select! {
        copied = tokio::io::copy_bidirectional(client, &mut broker) => match copied {
            Ok((up, down)) => log::debug!("bridge to {addr} closed ({up} bytes up, {down} down)"),
            Err(e) => log::debug!("bridge to {addr} ended: {e}"),
        },
        Ok(()) = taken_over => {
            if version == Version::V5 {
                let _ = client.write_all(&DISCONNECT_TAKEN_OVER).await;
                let _ = client.flush().await;
            }
            let _ = client.shutdown().await;
        }
    }
    Ok(())
}
