//! Step 2 for HTTP connections: the WebSocket upgrade on `/mqtt`.
//!
//! The request head is read (bounded in size and time), SigV4 is verified when the query is
//! presigned, and the connection is either refused with IoT Core's HTTP 403 (headers
//! `x-amzn-ErrorType: ForbiddenException:` and a JSON `{"message": ...}` body) or upgraded. A
//! custom-authorizer WebSocket is upgraded and decided at CONNECT, with the upgrade's headers and
//! query as extra sources of credentials.

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::WebSocketStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tungstenite::protocol::Role;
use ws_stream_tungstenite::WsStream;

/// Largest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

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

/// Read and parse the HTTP request head.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Upgrade, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
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
            buf.truncate(end);
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
    Ok(Upgrade {
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
    })
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
/// binary messages.
pub async fn accept<S>(
    mut stream: S,
    req: &Upgrade,
    key: &str,
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
    let ws = WebSocketStream::from_raw_socket(TokioAdapter::new(stream), Role::Server, None).await;
    Ok(WsStream::new(ws))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn head_is_parsed_with_query_and_headers() {
        let raw = b"GET /mqtt?X-Amz-Date=1&a=b HTTP/1.1\r\nHost: localhost:8443\r\nUpgrade: websocket\r\n\
                    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let req = read_head(&mut &raw[..]).await.unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/mqtt");
        assert_eq!(req.raw_query, "X-Amz-Date=1&a=b");
        assert_eq!(req.header("HOST"), Some("localhost:8443"));
        assert_eq!(check_upgrade(&req), Ok("dGhlIHNhbXBsZSBub25jZQ=="));
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
