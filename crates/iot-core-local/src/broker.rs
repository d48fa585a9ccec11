//! The last step: an authenticated connection is bridged to a real MQTT broker, rumqttd embedded
//! in this process (MQTT 3.1.1 and 5 listeners on loopback), or an external one (`--upstream`).
//! The client's CONNECT is forwarded unchanged, then bytes flow both ways until either side closes.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mqtt::{encode_varint, Version};

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
    keep_alive: u16,
    taken_over: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let addr = upstream.address(version);
    let mut broker = TcpStream::connect(&addr).await?;
    broker.set_nodelay(true)?;
    broker.write_all(connect).await?;
    relay_connack(&mut broker, client, version, keep_alive).await?;
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

/// AWS IoT Core's keep-alive range (reference §4).
pub const KEEP_ALIVE_RANGE: std::ops::RangeInclusive<u16> = 30..=1200;

/// Pass the broker's CONNACK to the client. For MQTT 5 it is made to say what IoT Core says:
/// Maximum QoS 1 (QoS 2 is not supported), and a Server Keep Alive when the client asked for a
/// keep-alive outside 30..=1200 s (clamped; 0, "no keep-alive", is left alone).
async fn relay_connack<S>(
    broker: &mut TcpStream,
    client: &mut S,
    version: Version,
    keep_alive: u16,
) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin + ?Sized,
{
    let packet = read_packet(broker).await?;
    let out = match version {
        Version::V5 => rewrite_connack_v5(&packet, keep_alive).unwrap_or(packet),
        Version::V311 => packet,
    };
    client.write_all(&out).await?;
    client.flush().await
}

/// One whole MQTT packet (fixed header included), at most 64 KiB.
async fn read_packet(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut packet = vec![stream.read_u8().await?];
    let mut len = 0usize;
    for i in 0..4 {
        let b = stream.read_u8().await?;
        packet.push(b);
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    if len > 65_536 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "broker packet too large",
        ));
    }
    let start = packet.len();
    packet.resize(start + len, 0);
    stream.read_exact(&mut packet[start..]).await?;
    Ok(packet)
}

fn decode_varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut n = 0usize;
    for (i, b) in bytes.iter().take(4).enumerate() {
        n |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, i + 1));
        }
    }
    None
}

/// A successful MQTT 5 CONNACK with Maximum QoS 1 and, if needed, Server Keep Alive; `None`
/// (forward unchanged) for anything else or anything not understood.
pub fn rewrite_connack_v5(packet: &[u8], keep_alive: u16) -> Option<Vec<u8>> {
    if packet.first() != Some(&0x20) {
        return None;
    }
    let (len, n) = decode_varint(&packet[1..])?;
    let body = packet.get(1 + n..1 + n + len)?;
    let (&flags, rest) = body.split_first()?;
    let (&reason, rest) = rest.split_first()?;
    if reason != 0 {
        return None;
    }
    let (props_len, n) = decode_varint(rest)?;
    let props = rest.get(n..n + props_len)?;

    // Keep the broker's properties except the two we set.
    let mut kept = Vec::new();
    let mut i = 0;
    while i < props.len() {
        let id = props[i];
        let size = match id {
            0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 => 2,
            0x11 | 0x27 => 4,
            0x12 | 0x1A | 0x1C | 0x15 | 0x1F | 0x16 => {
                2 + usize::from(u16::from_be_bytes([*props.get(i + 1)?, *props.get(i + 2)?]))
            }
            0x26 => {
                let k = usize::from(u16::from_be_bytes([*props.get(i + 1)?, *props.get(i + 2)?]));
                let v_at = i + 3 + k;
                let v = usize::from(u16::from_be_bytes([
                    *props.get(v_at)?,
                    *props.get(v_at + 1)?,
                ]));
                4 + k + v
            }
            _ => return None,
        };
        let item = props.get(i..i + 1 + size)?;
        if id != 0x24 && id != 0x13 {
            kept.extend_from_slice(item);
        }
        i += 1 + size;
    }
    kept.extend_from_slice(&[0x24, 1]);
    if keep_alive != 0 && !KEEP_ALIVE_RANGE.contains(&keep_alive) {
        let clamped = keep_alive.clamp(*KEEP_ALIVE_RANGE.start(), *KEEP_ALIVE_RANGE.end());
        kept.push(0x13);
        kept.extend_from_slice(&clamped.to_be_bytes());
    }

    let mut props_len = Vec::new();
    encode_varint(kept.len(), &mut props_len);
    let mut out = vec![0x20];
    encode_varint(2 + props_len.len() + kept.len(), &mut out);
    out.extend_from_slice(&[flags, reason]);
    out.extend_from_slice(&props_len);
    out.extend_from_slice(&kept);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connack_gets_maximum_qos_1_and_clamped_keep_alive() {
        // Success, no properties.
        let plain = [0x20, 0x03, 0x00, 0x00, 0x00];
        assert_eq!(
            rewrite_connack_v5(&plain, 60).unwrap(),
            vec![0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x01]
        );
        assert_eq!(
            rewrite_connack_v5(&plain, 5).unwrap(),
            vec![0x20, 0x08, 0x00, 0x00, 0x05, 0x24, 0x01, 0x13, 0x00, 30]
        );
        let long = rewrite_connack_v5(&plain, 3000).unwrap();
        assert_eq!(&long[long.len() - 3..], &[0x13, 0x04, 0xB0]); // 1200
        assert_eq!(
            rewrite_connack_v5(&plain, 0).unwrap().len(),
            7,
            "0 is left alone"
        );
    }

    #[test]
    fn broker_properties_are_kept_and_its_qos_replaced() {
        // Receive Maximum 100, Maximum QoS 2, Topic Alias Maximum 10.
        let p = [
            0x20, 0x0B, 0x01, 0x00, 0x08, 0x21, 0x00, 0x64, 0x24, 0x02, 0x22, 0x00, 0x0A,
        ];
        assert_eq!(
            rewrite_connack_v5(&p, 60).unwrap(),
            vec![0x20, 0x0B, 0x01, 0x00, 0x08, 0x21, 0x00, 0x64, 0x22, 0x00, 0x0A, 0x24, 0x01]
        );
    }

    #[test]
    fn refusals_and_unknown_properties_pass_unchanged() {
        assert_eq!(
            rewrite_connack_v5(&[0x20, 0x03, 0x00, 0x87, 0x00], 60),
            None
        );
        assert_eq!(
            rewrite_connack_v5(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x7F, 0x00], 60),
            None
        );
        assert_eq!(rewrite_connack_v5(&[0x30, 0x00], 60), None);
        assert_eq!(
            rewrite_connack_v5(&[0x20, 0x09, 0x00], 60),
            None,
            "truncated"
        );
    }
}
