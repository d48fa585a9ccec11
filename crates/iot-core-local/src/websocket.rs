//! Step 2 for HTTP connections: the WebSocket upgrade on `/mqtt`.
//!
//! The request head is read (bounded in size and time), SigV4 is verified when the query is
//! presigned, and the connection is either refused with IoT Core's HTTP 403 (headers
//! `x-amzn-ErrorType: ForbiddenException:` and a JSON `{"message": ...}` body) or upgraded. A
//! custom-authorizer WebSocket is upgraded and decided at CONNECT, with the upgrade's headers and
//! query as extra sources of credentials.
//!
//! The upgrade happens before authentication, so the WebSocket is bounded from its first byte:
//! see [`MAX_MESSAGE`] and [`config`]. Bytes the client sent after the request head (a client
//! may write its first frame together with the request) are kept and read as the WebSocket's
//! first bytes.

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::WebSocketStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tungstenite::protocol::{Role, WebSocketConfig};
use ws_stream_tungstenite::WsStream;

/// Largest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// Largest WebSocket message, and largest frame, accepted from a client: 256 KiB.
///
/// IoT Core's largest MQTT packet is its 128 KB payload plus the topic (256 bytes) and MQTT 5
/// properties; a quota of 146 KB (149,504 bytes) is cited for the whole packet. 256 KiB takes
/// such a packet whole, with room for a client that writes a few packets in one message, and
/// bounds what a client can make the server hold before CONNECT to about 256 KiB per connection
/// instead of tungstenite's 64 MiB. A frame or a message (all its fragments together) over
/// the limit ends the connection.
pub const MAX_MESSAGE: usize = 256 * 1024;

// IoT Core's largest packet fits in one message.
const _: () = assert!(MAX_MESSAGE >= 149_504);

/// Bytes read from the socket at a time (tungstenite allocates this per connection up front).
const READ_BUFFER: usize = 16 * 1024;

/// Bytes gathered before a write goes to the socket (a flush always writes everything).
const WRITE_BUFFER: usize = 16 * 1024;

/// The limits of every WebSocket this server accepts.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .write_buffer_size(WRITE_BUFFER)
        // The write buffer only grows past WRITE_BUFFER while the socket refuses bytes; one
        // more message of ours on top of it is the most it may hold.
        .max_write_buffer_size(WRITE_BUFFER + MAX_MESSAGE)
}

/// The parsed upgrade request.
#[derive(Clone, Debug, Default)]
pub struct Upgrade {
    pub method: String,
    pub path: String,
    pub raw_query: String,
    pub headers: Vec<(String, String)>,
}

impl Upgrade {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("not an HTTP request: {0}")]
    Malformed(String),
    #[error("connection closed before the request head ended")]
    Closed,
    #[error("not HTTP: the client sent binary data (an MQTT client without ALPN? on this listener mTLS needs ALPN x-amzn-mqtt-ca and custom auth ALPN mqtt)")]
    NotHttp,
}

/// Read and parse the HTTP request head. Also returns what the client sent after the head in the
/// same reads: the start of the WebSocket, for [`accept`]. (Not part of [`Upgrade`], whose
/// `Debug` must not show a CONNECT's password.)
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Upgrade, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let rest;
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if !buf[0].is_ascii_uppercase() {
            return Err(HeadError::NotHttp);
        }
        if let Some(end) = find_head_end(&buf) {
            rest = buf.split_off(end);
            break;
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HeadError::Malformed("incomplete head".into()))
        }
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    }
    let target = req.path.unwrap_or("/");
    let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let request = Upgrade {
        method: req.method.unwrap_or("").to_string(),
        path: path.to_string(),
        raw_query: raw_query.to_string(),
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
    };
    Ok((request, rest))
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Why an upgrade is refused before any authentication.
#[derive(Debug, PartialEq, Eq)]
pub enum NotAnUpgrade {
    /// Path other than `/mqtt`: 404.
    WrongPath(String),
    /// Not a GET WebSocket upgrade: 400.
    NotWebSocket(&'static str),
}

/// Check that this is `GET /mqtt` asking for a WebSocket; returns the client's key.
pub fn check_upgrade(req: &Upgrade) -> Result<&str, NotAnUpgrade> {
    if req.path != "/mqtt" {
        return Err(NotAnUpgrade::WrongPath(req.path.clone()));
    }
    if req.method != "GET" {
        return Err(NotAnUpgrade::NotWebSocket("method is not GET"));
    }
    if !req
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    {
        return Err(NotAnUpgrade::NotWebSocket("no 'Upgrade: websocket' header"));
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err(NotAnUpgrade::NotWebSocket(
            "Sec-WebSocket-Version is not 13",
        ));
    }
    req.header("sec-websocket-key")
        .ok_or(NotAnUpgrade::NotWebSocket("no Sec-WebSocket-Key header"))
}

/// Write an error response in IoT Core's shape and close.
pub async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, status: u16, message: &str) {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Error",
    };
    let body = serde_json::json!({ "message": message }).to_string();
    let error_type = match status {
        403 => "ForbiddenException:",
        404 => "NotFoundException:",
        _ => "BadRequestException:",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         x-amzn-ErrorType: {error_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Accept the upgrade (101, subprotocol `mqtt`) and return a byte stream over the WebSocket's
/// binary messages, bounded by [`config`], starting with `rest`, the bytes the client sent
/// after the request head.
pub async fn accept<S>(
    mut stream: S,
    req: &Upgrade,
    key: &str,
    rest: Vec<u8>,
) -> std::io::Result<WsStream<TokioAdapter<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let protocol = match req.header("sec-websocket-protocol") {
        Some(p) if p.split(',').any(|x| x.trim() == "mqtt") => "Sec-WebSocket-Protocol: mqtt\r\n",
        _ => "",
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    let ws = WebSocketStream::from_partially_read(
        TokioAdapter::new(stream),
        rest,
        Role::Server,
        Some(config()),
    )
    .await;
    Ok(WsStream::new(ws))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn head_is_parsed_with_query_and_headers() {
        let raw = b"GET /mqtt?X-Amz-Date=1&a=b HTTP/1.1\r\nHost: localhost:8443\r\nUpgrade: websocket\r\n\
                    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let (req, rest) = read_head(&mut &raw[..]).await.unwrap();
        assert!(rest.is_empty());
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/mqtt");
        assert_eq!(req.raw_query, "X-Amz-Date=1&a=b");
        assert_eq!(req.header("HOST"), Some("localhost:8443"));
        assert_eq!(check_upgrade(&req), Ok("dGhlIHNhbXBsZSBub25jZQ=="));
    }

    #[tokio::test]
    async fn bytes_after_the_head_are_kept_for_the_websocket() {
        let raw = b"GET /mqtt HTTP/1.1\r\nHost: h\r\n\r\n\x82\x85first-frame";
        let (req, rest) = read_head(&mut &raw[..]).await.unwrap();
        assert_eq!(req.path, "/mqtt");
        assert_eq!(req.header("host"), Some("h"));
        assert_eq!(rest, b"\x82\x85first-frame");
    }

    #[test]
    fn the_limits_bound_frames_messages_and_buffers() {
        let c = config();
        assert_eq!(c.max_message_size, Some(MAX_MESSAGE));
        assert_eq!(c.max_frame_size, Some(MAX_MESSAGE));
        assert_eq!(c.read_buffer_size, READ_BUFFER);
        assert_eq!(c.max_write_buffer_size, WRITE_BUFFER + MAX_MESSAGE);
    }

    #[tokio::test]
    async fn oversized_and_garbage_heads_are_refused() {
        let big = vec![b'A'; MAX_HEAD + 2048];
        assert!(matches!(
            read_head(&mut &big[..]).await,
            Err(HeadError::TooLarge)
        ));
        let garbage = b"GET\x01 nonsense\r\n\r\n";
        assert!(matches!(
            read_head(&mut &garbage[..]).await,
            Err(HeadError::Malformed(_))
        ));
        let mqtt = b"\x10\x1a\x00\x04MQTT\x05";
        assert!(matches!(
            read_head(&mut &mqtt[..]).await,
            Err(HeadError::NotHttp)
        ));
    }

    #[test]
    fn wrong_path_and_missing_upgrade_are_distinguished() {
        let mut req = Upgrade {
            method: "GET".into(),
            path: "/other".into(),
            ..Default::default()
        };
        assert_eq!(
            check_upgrade(&req),
            Err(NotAnUpgrade::WrongPath("/other".into()))
        );
        req.path = "/mqtt".into();
        assert!(matches!(
            check_upgrade(&req),
            Err(NotAnUpgrade::NotWebSocket(_))
        ));
    }
}
