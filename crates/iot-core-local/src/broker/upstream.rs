//! `--upstream host:port`: instead of the embedded broker, an authenticated connection is
//! bridged to an external MQTT broker (e.g. Mosquitto, which speaks both versions on one port).
//! The client's CONNECT is forwarded unchanged, the broker's CONNACK is adjusted to say what IoT
//! Core says, then bytes flow both ways until either side closes. The external broker applies
//! its own rules after CONNACK (takeover, QoS 2, topic matching): only the embedded broker
//! follows IoT Core's.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::connection::KEEP_ALIVE_RANGE;
use crate::mqtt::{decode_varint, encode_varint, frame, Frame, Version};

/// How long connecting to the external broker may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the external broker may take to answer CONNECT.
pub const CONNACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the external broker could not take the connection.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("no connection to {addr} within {CONNECT_TIMEOUT:?}")]
    ConnectTimeout { addr: String },
    #[error("{addr} sent no CONNACK within {CONNACK_TIMEOUT:?}")]
    ConnAckTimeout { addr: String },
    #[error("{addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
}

/// Forward `connect` (the client's raw CONNECT) to the broker at `addr`, relay its CONNACK, then
/// copy both ways until either side closes. Returns an error only if the broker could not be
/// reached or did not answer; the caller then answers the client.
pub async fn bridge<S>(
    client: &mut S,
    connect: &[u8],
    version: Version,
    addr: &str,
    keep_alive: u16,
) -> Result<(), UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let io = |source| UpstreamError::Io {
        addr: addr.to_string(),
        source,
    };
    let mut broker = match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => {
            return Err(UpstreamError::Connect {
                addr: addr.to_string(),
                source,
            })
        }
        Err(_) => {
            return Err(UpstreamError::ConnectTimeout {
                addr: addr.to_string(),
            })
        }
    };
    broker.set_nodelay(true).map_err(io)?;
    broker.write_all(connect).await.map_err(io)?;
    let packet = match timeout(CONNACK_TIMEOUT, read_packet(&mut broker)).await {
        Ok(p) => p.map_err(io)?,
        Err(_) => {
            return Err(UpstreamError::ConnAckTimeout {
                addr: addr.to_string(),
            })
        }
    };
    let out = match version {
        Version::V5 => rewrite_connack_v5(&packet, keep_alive).unwrap_or(packet),
        Version::V311 => packet,
    };
    client.write_all(&out).await.map_err(io)?;
    client.flush().await.map_err(io)?;
    match tokio::io::copy_bidirectional(client, &mut broker).await {
        Ok((up, down)) => log::debug!("bridge to {addr} closed ({up} bytes up, {down} down)"),
        Err(e) => log::debug!("bridge to {addr} ended: {e}"),
    }
    Ok(())
}

/// One whole MQTT packet (fixed header included), at most 64 KiB; the buffer grows with the
/// bytes received.
async fn read_packet(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    const MAX: usize = 65_536;
    let mut buf = Vec::new();
    loop {
        match frame(&buf, MAX) {
            Ok(Frame::Complete { len }) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Ok(Frame::Incomplete) => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the broker's answer: {e}"),
                ))
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// A successful MQTT 5 CONNACK with Maximum QoS 1 and, if needed, Server Keep Alive; `None`
/// (forward unchanged) for anything else or anything not understood.
pub fn rewrite_connack_v5(packet: &[u8], keep_alive: u16) -> Option<Vec<u8>> {
    if packet.first() != Some(&0x20) {
        return None;
    }
    let (len, n) = decode_varint(packet.get(1..)?).ok()?;
    let body = packet.get(1 + n..1 + n + len)?;
    let (&flags, rest) = body.split_first()?;
    let (&reason, rest) = rest.split_first()?;
    if reason != 0 {
        return None;
    }
    let (props_len, n) = decode_varint(rest).ok()?;
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
