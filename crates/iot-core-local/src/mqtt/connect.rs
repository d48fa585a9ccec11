//! The MQTT CONNECT step: read the client's first packet, which must be CONNECT (MQTT 3.1.1 or 5),
//! parse it (client id, credentials, keep-alive, will, and the MQTT 5 properties the broker
//! uses), and keep its raw bytes for `--upstream`, which forwards it unchanged. Also the CONNACK
//! packets: the refusals, and the acceptance the broker sends.
//!
//! This module does not judge the values: a 129-byte client id or a `$GEN/` prefix parses
//! fine here and is refused by the policy step.

use std::fmt;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{
    property, put_packet, put_properties, put_str, PropValue, Properties, Reader, Version,
};

/// The largest remaining length (bytes after the fixed header) of a CONNECT packet this server
/// reads by default.
pub const MAX_CONNECT_SIZE: usize = 65_536;

/// CONNECT packet type with its (mandatory, all-zero) flags.
const CONNECT_BYTE: u8 = 0x10;
const CONNACK_BYTE: u8 = 0x20;

/// What a CONNECT packet says.
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: Version,
    /// May be empty (the client asks the server to assign one); see [`Connect::assign_client_id`].
    pub client_id: String,
    /// `client_id` was assigned by the server, not sent by the client: CONNACK returns it.
    pub assigned_client_id: bool,
    /// Raw username, custom-authorizer query string included.
    pub username: Option<String>,
    /// Binary password, as sent.
    pub password: Option<Vec<u8>>,
    pub keep_alive: u16,
    /// "Clean session" in 3.1.1, "clean start" in 5.
    pub clean_start: bool,
    pub will: Option<Will>,
    /// MQTT 5 properties (the defaults for 3.1.1).
    pub properties: ConnectProperties,
}

/// The last will: published by the server when the connection ends without a client DISCONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    /// 0, 1 or 2 as sent (the broker refuses 2).
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 will properties, raw (forwarded with the message, minus Will Delay Interval).
    pub properties: Vec<u8>,
}

/// The MQTT 5 CONNECT properties the broker uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectProperties {
    /// Seconds; 0 (the default) ends the session with the connection.
    pub session_expiry: u32,
    /// How many unacknowledged QoS 1 messages the client accepts (default 65,535).
    pub receive_maximum: u16,
    /// The largest packet the client accepts, if it set one.
    pub maximum_packet_size: Option<u32>,
    /// How many topic aliases the client accepts from the server (default 0).
    pub topic_alias_maximum: u16,
    /// Whether the client wants reason strings on packets other than CONNACK/DISCONNECT.
    pub request_problem_info: bool,
    pub user_properties: Vec<(String, String)>,
    /// Enhanced authentication, which IoT Core does not support.
    pub auth_method: Option<String>,
}

impl Default for ConnectProperties {
    fn default() -> Self {
        ConnectProperties {
            session_expiry: 0,
            receive_maximum: u16::MAX,
            maximum_packet_size: None,
            topic_alias_maximum: 0,
            request_problem_info: true,
            user_properties: Vec::new(),
            auth_method: None,
        }
    }
}

/// What IoT Core calls a server-assigned client id: `$GEN/` and a UUID v4.
pub const ASSIGNED_ID_PREFIX: &str = "$GEN/";

impl Connect {
    /// An MQTT 5 CONNECT with an empty client id gets `$GEN/<uuid v4>`, as IoT Core assigns it
    /// (data-plane reference §3.6); `iot:Connect` is then evaluated on that id. Does nothing to
    /// a non-empty id, to MQTT 3.1.1 (refused instead), or when already assigned.
    pub fn assign_client_id(&mut self) {
        if self.version == Version::V5 && self.client_id.is_empty() {
            self.client_id = format!("{ASSIGNED_ID_PREFIX}{}", uuid::Uuid::new_v4());
            self.assigned_client_id = true;
        }
    }
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A custom-auth username carries the token and its signature after the last '?'.
        let username = self.username.as_deref().map(|u| match u.rfind('?') {
            Some(i) => format!("{}?<redacted>", &u[..i]),
            None => u.to_string(),
        });
        f.debug_struct("Connect")
            .field("version", &self.version)
            .field("client_id", &self.client_id)
            .field("assigned_client_id", &self.assigned_client_id)
            .field("username", &username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("keep_alive", &self.keep_alive)
            .field("clean_start", &self.clean_start)
            .field("will", &self.will)
            .field("properties", &self.properties)
            .finish()
    }
}

/// Why the first packet of a connection was not an acceptable CONNECT.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("reading the CONNECT packet failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed before the client sent any MQTT packet")]
    Closed,
    #[error("the first packet is not an MQTT CONNECT (first byte 0x{0:02x}, expected 0x10)")]
    NotConnect(u8),
    #[error("the CONNECT packet announces {0} bytes after its fixed header, more than this server accepts")]
    TooLarge(usize),
    #[error("malformed CONNECT packet: {0}")]
    Malformed(&'static str),
    #[error("unsupported MQTT protocol '{name}' level {level}: use MQTT 3.1.1 (\"MQTT\" level 4) or MQTT 5 (\"MQTT\" level 5)")]
    UnsupportedProtocol { name: String, level: u8 },
}

/// Read exactly one MQTT packet that must be CONNECT; returns it parsed and its raw bytes
/// (fixed header included), to be forwarded unchanged to an upstream broker.
///
/// `max` bounds the remaining length: a larger announced length is refused before anything
/// more is read. The buffer grows with the bytes received, never from the announced length.
/// Nothing after the CONNECT packet is read.
pub async fn read_connect<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<(Connect, Vec<u8>), MqttError> {
    let first = match r.read_u8().await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(MqttError::Closed),
        Err(e) => return Err(MqttError::Io(e)),
    };
    if first != CONNECT_BYTE {
        return Err(MqttError::NotConnect(first));
    }
    let mut raw = vec![first];
    let mut remaining: usize = 0;
    for i in 0..4 {
        let b = r
            .read_u8()
            .await
            .map_err(|e| eof_as(e, "the connection closed inside the fixed header"))?;
        raw.push(b);
        remaining |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return Err(MqttError::Malformed(
                "remaining length is longer than 4 bytes",
            ));
        }
    }
    if remaining > max {
        return Err(MqttError::TooLarge(remaining));
    }
    let header = raw.len();
    // `take` + `read_to_end` appends what arrives, growing the buffer as it does.
    r.take(remaining as u64).read_to_end(&mut raw).await?;
    if raw.len() < header + remaining {
        return Err(MqttError::Malformed(
            "the connection closed before the CONNECT packet was complete",
        ));
    }
    let connect = parse_connect(&raw)?;
    Ok((connect, raw))
}

fn eof_as(e: std::io::Error, what: &'static str) -> MqttError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        MqttError::Malformed(what)
    } else {
        MqttError::Io(e)
    }
}

/// Parse a whole CONNECT packet, fixed header included. The packet must be exactly as long as
/// its remaining length says.
pub fn parse_connect(packet: &[u8]) -> Result<Connect, MqttError> {
    let mut r = Reader::new(packet);
    let first = r.u8("empty packet").map_err(MqttError::Malformed)?;
    if first != CONNECT_BYTE {
        return Err(MqttError::NotConnect(first));
    }
    let remaining = r
        .varint(
            "truncated fixed header",
            "remaining length is longer than 4 bytes",
        )
        .map_err(MqttError::Malformed)?;
    let rest = r.rest();
    if remaining > rest.len() {
        return Err(MqttError::Malformed(
            "truncated: the packet is shorter than its remaining length",
        ));
    }
    if remaining < rest.len() {
        return Err(MqttError::Malformed(
            "the packet is longer than its remaining length",
        ));
    }
    parse_body(rest)
}

fn parse_body(body: &[u8]) -> Result<Connect, MqttError> {
    let m = MqttError::Malformed;
    let mut r = Reader::new(body);
    // Variable header.
    let name_bytes = r.binary("truncated protocol name").map_err(m)?;
    let level = r.u8("truncated protocol level").map_err(m)?;
    let name = std::str::from_utf8(name_bytes)
        .map_err(|_| MqttError::Malformed("protocol name is not valid UTF-8"))?;
    let version = match (name, level) {
        ("MQTT", 4) => Version::V311,
        ("MQTT", 5) => Version::V5,
        _ => {
            return Err(MqttError::UnsupportedProtocol {
                name: name.to_string(),
                level,
            });
        }
    };
    let flags = r.u8("truncated connect flags").map_err(m)?;
    if flags & 0x01 != 0 {
        return Err(MqttError::Malformed("reserved connect flag (bit 0) is set"));
    }
    let clean_start = flags & 0x02 != 0;
    let has_will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if will_qos == 3 {
        return Err(MqttError::Malformed("will QoS is 3"));
    }
    if !has_will && (will_qos != 0 || will_retain) {
        return Err(MqttError::Malformed(
            "will QoS or will retain is set without the will flag",
        ));
    }
    if version == Version::V311 && has_password && !has_username {
        return Err(MqttError::Malformed(
            "password flag set without the username flag (not allowed in MQTT 3.1.1)",
        ));
    }
    let keep_alive = r.u16("truncated keep alive").map_err(m)?;
    let mut properties = ConnectProperties::default();
    if version == Version::V5 {
        let raw = r.properties().map_err(m)?;
        properties = connect_properties(raw)?;
    }

    // Payload.
    let client_id = r
        .string(
            "truncated client identifier",
            "client identifier is not valid UTF-8",
        )
        .map_err(m)?
        .to_string();
    let will = if has_will {
        let properties = if version == Version::V5 {
            let raw = r.properties().map_err(m)?;
            raw.to_vec()
        } else {
            Vec::new()
        };
        let topic = r
            .string("truncated will topic", "will topic is not valid UTF-8")
            .map_err(m)?
            .to_string();
        let payload = r.binary("truncated will payload").map_err(m)?.to_vec();
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(
            r.string("truncated username", "username is not valid UTF-8")
                .map_err(m)?
                .to_string(),
        )
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary("truncated password").map_err(m)?.to_vec())
    } else {
        None
    };
    if !r.is_empty() {
        return Err(MqttError::Malformed(
            "unexpected bytes after the CONNECT payload",
        ));
    }
    Ok(Connect {
        version,
        client_id,
        assigned_client_id: false,
        username,
        password,
        keep_alive,
        clean_start,
        will,
        properties,
    })
}

fn connect_properties(raw: &[u8]) -> Result<ConnectProperties, MqttError> {
    let mut p = ConnectProperties::default();
    for prop in Properties::new(raw) {
        let prop = prop.map_err(MqttError::Malformed)?;
        match (prop.id, prop.value) {
            (property::SESSION_EXPIRY, PropValue::U32(v)) => p.session_expiry = v,
            (property::RECEIVE_MAXIMUM, PropValue::U16(0)) => {
                return Err(MqttError::Malformed("receive maximum is 0"))
            }
            (property::RECEIVE_MAXIMUM, PropValue::U16(v)) => p.receive_maximum = v,
            (property::MAXIMUM_PACKET_SIZE, PropValue::U32(0)) => {
                return Err(MqttError::Malformed("maximum packet size is 0"))
            }
            (property::MAXIMUM_PACKET_SIZE, PropValue::U32(v)) => p.maximum_packet_size = Some(v),
            (property::TOPIC_ALIAS_MAXIMUM, PropValue::U16(v)) => p.topic_alias_maximum = v,
            (property::REQUEST_PROBLEM_INFO, PropValue::Byte(v)) if v <= 1 => {
                p.request_problem_info = v == 1
            }
            (property::REQUEST_PROBLEM_INFO, _) => {
                return Err(MqttError::Malformed(
                    "request problem information is not 0 or 1",
                ))
            }
            (property::USER_PROPERTY, PropValue::Pair(k, v)) => {
                p.user_properties.push((k.to_string(), v.to_string()))
            }
            (property::AUTH_METHOD, PropValue::Str(s)) => p.auth_method = Some(s.to_string()),
            (property::REQUEST_RESPONSE_INFO | property::AUTH_DATA, _) => {}
            _ => return Err(MqttError::Malformed("a property CONNECT may not carry")),
        }
    }
    Ok(p)
}

/// An MQTT 3.1.1 CONNACK: session present 0 and this return code
/// (0x05 = not authorized, 0x04 = bad user name or password, 0x02 = identifier rejected).
pub fn connack_v311(return_code: u8) -> Vec<u8> {
    vec![CONNACK_BYTE, 0x02, 0x00, return_code]
}

/// An MQTT 5 CONNACK: session present 0, this reason code (0x87 not authorized, 0x86 bad user
/// name or password, 0x85 client identifier not valid) and, when given, a reason string
/// property (cut at 65,535 bytes on a character boundary).
pub fn connack_v5(reason_code: u8, reason_string: Option<&str>) -> Vec<u8> {
    let mut props = Vec::new();
    if let Some(s) = reason_string {
        props.push(property::REASON_STRING);
        put_str(&mut props, s);
    }
    connack(Version::V5, false, reason_code, &props)
}

/// A CONNACK: session present, the return/reason code, and (MQTT 5) the properties, already
/// encoded.
pub fn connack(version: Version, session_present: bool, code: u8, props: &[u8]) -> Vec<u8> {
    let mut body = vec![u8::from(session_present), code];
    if version == Version::V5 {
        put_properties(&mut body, props);
    }
    let mut out = Vec::with_capacity(body.len() + 5);
    put_packet(&mut out, CONNACK_BYTE, &body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::encode_varint;

    /// Wrap a variable header + payload into a CONNECT packet.
    fn packet(body: &[u8]) -> Vec<u8> {
        let mut p = vec![0x10];
        encode_varint(body.len(), &mut p);
        p.extend_from_slice(body);
        p
    }

    fn str_field(s: &[u8]) -> Vec<u8> {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s);
        v
    }

    /// A 3.1.1 CONNECT as a client sends it: clean session, keep alive 60, client id
    /// "sensor-1", username "demo-user", password "demo-password".
    const V311_USER_PASS: &[u8] = &[
        0x10, 0x2E, // CONNECT, remaining length 46
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, // protocol name, level 4
        0xC2, // username, password, clean session
        0x00, 0x3C, // keep alive 60
        0x00, 0x08, b's', b'e', b'n', b's', b'o', b'r', b'-', b'1', //
        0x00, 0x09, b'd', b'e', b'm', b'o', b'-', b'u', b's', b'e', b'r', //
        0x00, 0x0D, b'd', b'e', b'm', b'o', b'-', b'p', b'a', b's', b's', b'w', b'o', b'r', b'd',
    ];

    #[test]
    fn v311_with_username_and_password() {
        let c = parse_connect(V311_USER_PASS).expect("valid CONNECT");
        assert_eq!(
            c,
            Connect {
                version: Version::V311,
                client_id: "sensor-1".into(),
                assigned_client_id: false,
                username: Some("demo-user".into()),
                password: Some(b"demo-password".to_vec()),
                keep_alive: 60,
                clean_start: true,
                will: None,
                properties: ConnectProperties::default(),
            }
        );
    }

    #[test]
    fn v311_minimal_without_credentials() {
        // mosquitto_pub -V mqttv311 -i c1 -k 30 (no username), clean session off.
        let p = [
            0x10, 0x0E, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0x00, 0x1E, 0, 2, b'c', b'1',
        ];
        let c = parse_connect(&p).expect("valid CONNECT");
        assert_eq!(c.version, Version::V311);
        assert_eq!(c.client_id, "c1");
        assert_eq!(c.username, None);
        assert_eq!(c.password, None);
        assert_eq!(c.keep_alive, 30);
        assert!(!c.clean_start);
    }

    #[test]
    fn v5_with_properties_will_username_and_password() {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5];
        // username, password, will retain, will QoS 1, will, clean start
        body.push(0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02);
        body.extend_from_slice(&[0x04, 0xB0]); // keep alive 1200
                                               // properties: session expiry interval (0x11) = 3600, receive maximum (0x21) = 20
        body.extend_from_slice(&[8, 0x11, 0, 0, 0x0E, 0x10, 0x21, 0, 20]);
        body.extend(str_field(b"dev-5"));
        // will properties: will delay interval (0x18) = 5
        body.extend_from_slice(&[5, 0x18, 0, 0, 0, 5]);
        body.extend(str_field(b"dev-5/status"));
        body.extend(str_field(b"offline"));
        body.extend(str_field(b"u?x-amz-customauthorizer-name=a"));
        body.extend(str_field(&[0x00, 0xFF, 0x10])); // a binary password
        let c = parse_connect(&packet(&body)).expect("valid v5 CONNECT");
        assert_eq!(
            c,
            Connect {
                version: Version::V5,
                client_id: "dev-5".into(),
                assigned_client_id: false,
                username: Some("u?x-amz-customauthorizer-name=a".into()),
                password: Some(vec![0x00, 0xFF, 0x10]),
                keep_alive: 1200,
                clean_start: true,
                will: Some(Will {
                    topic: "dev-5/status".into(),
                    payload: b"offline".to_vec(),
                    qos: 1,
                    retain: true,
                    properties: vec![0x18, 0, 0, 0, 5],
                }),
                properties: ConnectProperties {
                    session_expiry: 3600,
                    receive_maximum: 20,
                    ..ConnectProperties::default()
                },
            }
        );
    }

    #[test]
    fn v5_without_credentials_and_empty_properties() {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0];
        body.extend(str_field(b""));
        let c = parse_connect(&packet(&body)).expect("valid v5 CONNECT");
        assert_eq!(c.version, Version::V5);
        assert_eq!(c.client_id, "");
        assert_eq!(c.username, None);
        assert_eq!(c.password, None);
    }

    #[test]
    fn only_an_empty_mqtt5_client_id_is_assigned_a_gen_id() {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0];
        body.extend(str_field(b""));
        let mut c = parse_connect(&packet(&body)).expect("valid v5 CONNECT");
        assert!(!c.assigned_client_id);
        c.assign_client_id();
        assert!(c.assigned_client_id);
        let uuid = c.client_id.strip_prefix("$GEN/").expect("a $GEN/ id");
        let parsed = uuid::Uuid::parse_str(uuid).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(
            parsed.hyphenated().to_string(),
            uuid,
            "lower-case, hyphenated"
        );
        let first = c.client_id.clone();
        c.assign_client_id();
        assert_eq!(c.client_id, first, "assigned once");

        let mut named = c.clone();
        named.client_id = "dev".into();
        named.assigned_client_id = false;
        named.assign_client_id();
        assert_eq!(
            (named.client_id.as_str(), named.assigned_client_id),
            ("dev", false)
        );

        let mut v311 = named;
        v311.version = Version::V311;
        v311.client_id = String::new();
        v311.assign_client_id();
        assert_eq!(
            (v311.client_id.as_str(), v311.assigned_client_id),
            ("", false)
        );
    }

    #[test]
    fn v5_allows_password_without_username_but_v311_does_not() {
        let mut v5 = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x40, 0, 60, 0];
        v5.extend(str_field(b"c"));
        v5.extend(str_field(b"secret"));
        let c = parse_connect(&packet(&v5)).expect("v5 password only");
        assert_eq!(c.username, None);
        assert_eq!(c.password.as_deref(), Some(&b"secret"[..]));

        let mut v311 = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x40, 0, 60];
        v311.extend(str_field(b"c"));
        v311.extend(str_field(b"secret"));
        let err = parse_connect(&packet(&v311)).expect_err("3.1.1 password only");
        assert!(
            matches!(err, MqttError::Malformed(m) if m.contains("password flag set without the username flag")),
            "{err}"
        );
    }

    #[test]
    fn client_id_of_129_bytes_parses() {
        let id = "a".repeat(129);
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
        body.extend(str_field(id.as_bytes()));
        let p = packet(&body);
        assert_eq!(p[1] & 0x80, 0x80, "remaining length needs two bytes here");
        let c = parse_connect(&p).expect("the parser does not judge the client id");
        assert_eq!(c.client_id.len(), 129);
    }

    #[test]
    fn every_truncation_is_malformed() {
        for len in 1..V311_USER_PASS.len() {
            let err = parse_connect(&V311_USER_PASS[..len]).expect_err("truncated");
            assert!(
                matches!(err, MqttError::Malformed(_)),
                "length {len}: {err:?}"
            );
        }
        // Consistent remaining length but the payload stops inside the password.
        let mut body = V311_USER_PASS[2..].to_vec();
        body.truncate(body.len() - 3);
        let err = parse_connect(&packet(&body)).expect_err("short password");
        assert!(
            matches!(err, MqttError::Malformed("truncated password")),
            "{err:?}"
        );
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut p = V311_USER_PASS.to_vec();
        p.push(0);
        let err = parse_connect(&p).expect_err("extra byte");
        assert!(
            matches!(err, MqttError::Malformed(m) if m.contains("longer than its remaining length"))
        );
        let mut body = V311_USER_PASS[2..].to_vec();
        body.push(0);
        let err = parse_connect(&packet(&body)).expect_err("extra payload byte");
        assert!(matches!(
            err,
            MqttError::Malformed("unexpected bytes after the CONNECT payload")
        ));
    }

    #[test]
    fn wrong_first_byte_is_not_connect() {
        let mut p = V311_USER_PASS.to_vec();
        p[0] = 0x30; // PUBLISH
        let err = parse_connect(&p).expect_err("publish");
        assert!(matches!(err, MqttError::NotConnect(0x30)));
        assert_eq!(
            err.to_string(),
            "the first packet is not an MQTT CONNECT (first byte 0x30, expected 0x10)"
        );
        p[0] = 0x12; // CONNECT type with non-zero flags
        assert!(matches!(
            parse_connect(&p),
            Err(MqttError::NotConnect(0x12))
        ));
        // A TLS ClientHello sent to a plain MQTT port.
        assert!(matches!(
            parse_connect(&[0x16, 0x03, 0x01]),
            Err(MqttError::NotConnect(0x16))
        ));
    }

    #[test]
    fn reserved_flag_set_is_malformed() {
        let mut p = V311_USER_PASS.to_vec();
        p[9] |= 0x01;
        let err = parse_connect(&p).expect_err("reserved bit");
        assert!(matches!(
            err,
            MqttError::Malformed("reserved connect flag (bit 0) is set")
        ));
        assert_eq!(
            err.to_string(),
            "malformed CONNECT packet: reserved connect flag (bit 0) is set"
        );
    }

    #[test]
    fn will_flags_are_checked() {
        let mut p = V311_USER_PASS.to_vec();
        p[9] |= 0x08; // will QoS 1 without the will flag
        assert!(
            matches!(parse_connect(&p), Err(MqttError::Malformed(m)) if m.contains("without the will flag"))
        );
        let mut p = V311_USER_PASS.to_vec();
        p[9] |= 0x04 | 0x18; // will QoS 3
        assert!(matches!(
            parse_connect(&p),
            Err(MqttError::Malformed("will QoS is 3"))
        ));
    }

    #[test]
    fn unsupported_protocols_are_named() {
        // MQTT 3.1: "MQIsdp" level 3.
        let mut body = vec![0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60];
        body.extend(str_field(b"old"));
        let err = parse_connect(&packet(&body)).expect_err("3.1");
        assert!(
            matches!(&err, MqttError::UnsupportedProtocol { name, level: 3 } if name == "MQIsdp"),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with("unsupported MQTT protocol 'MQIsdp' level 3"));
        let mut p = V311_USER_PASS.to_vec();
        p[8] = 3;
        assert!(matches!(
            parse_connect(&p),
            Err(MqttError::UnsupportedProtocol { level: 3, .. })
        ));
    }

    #[test]
    fn invalid_utf8_client_id_is_malformed() {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
        body.extend(str_field(&[0xC3, 0x28]));
        assert!(matches!(
            parse_connect(&packet(&body)),
            Err(MqttError::Malformed("client identifier is not valid UTF-8"))
        ));
    }

    #[test]
    fn debug_redacts_password_and_username_query() {
        let c = Connect {
            version: Version::V5,
            client_id: "c".into(),
            assigned_client_id: false,
            username: Some("dev?x-amz-customauthorizer-signature=SIGVALUE&token=TOKVALUE".into()),
            password: Some(b"hunter2".to_vec()),
            keep_alive: 30,
            clean_start: true,
            will: None,
            properties: ConnectProperties::default(),
        };
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && !d.contains("104"), "{d}");
        assert!(!d.contains("SIGVALUE") && !d.contains("TOKVALUE"), "{d}");
        assert!(
            d.contains("dev?<redacted>") && d.contains("<redacted>"),
            "{d}"
        );
    }

    #[tokio::test]
    async fn read_connect_returns_exact_raw_bytes_and_nothing_more() {
        let mut input = V311_USER_PASS.to_vec();
        input.extend_from_slice(&[0xC0, 0x00]); // a PINGREQ right behind it
        let mut slice: &[u8] = &input;
        let (c, raw) = read_connect(&mut slice, MAX_CONNECT_SIZE)
            .await
            .expect("connect");
        assert_eq!(raw, V311_USER_PASS);
        assert_eq!(c.client_id, "sensor-1");
        assert_eq!(slice, &[0xC0, 0x00], "the next packet stays unread");
    }

    #[tokio::test]
    async fn read_connect_over_a_duplex_stream() {
        let (mut client, mut server) = tokio::io::duplex(16);
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0xC2, 0, 60, 0];
        body.extend(str_field("x".repeat(300).as_bytes()));
        body.extend(str_field(b"user"));
        body.extend(str_field(b"pass"));
        let p = packet(&body);
        let sent = p.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // Small writes through a 16-byte pipe: the reader must reassemble them.
            for chunk in sent.chunks(7) {
                client.write_all(chunk).await?;
            }
            Ok::<_, std::io::Error>(client)
        });
        let (c, raw) = read_connect(&mut server, MAX_CONNECT_SIZE)
            .await
            .expect("connect");
        assert_eq!(raw, p);
        assert_eq!(c.version, Version::V5);
        assert_eq!(c.client_id.len(), 300);
        assert_eq!(c.password.as_deref(), Some(&b"pass"[..]));
        assert!(writer.await.is_ok());
    }

    #[tokio::test]
    async fn read_connect_refuses_a_large_length_without_reading_the_rest() {
        // Remaining length 70,000 = 0xF0 0xA2 0x04; only the header is available and the
        // stream stays open, so reading any further would hang.
        let (mut client, mut server) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        client
            .write_all(&[0x10, 0xF0, 0xA2, 0x04])
            .await
            .expect("write");
        let err = read_connect(&mut server, MAX_CONNECT_SIZE)
            .await
            .expect_err("too large");
        assert!(matches!(err, MqttError::TooLarge(70_000)), "{err:?}");
        // A custom limit applies too.
        let mut slice: &[u8] = V311_USER_PASS;
        assert!(matches!(
            read_connect(&mut slice, 45).await,
            Err(MqttError::TooLarge(46))
        ));
        drop(client);
    }

    #[tokio::test]
    async fn read_connect_errors() {
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_connect(&mut empty, MAX_CONNECT_SIZE).await,
            Err(MqttError::Closed)
        ));
        let mut get: &[u8] = b"GET /mqtt HTTP/1.1\r\n";
        assert!(matches!(
            read_connect(&mut get, MAX_CONNECT_SIZE).await,
            Err(MqttError::NotConnect(b'G'))
        ));
        let mut short: &[u8] = &V311_USER_PASS[..20];
        assert!(matches!(
            read_connect(&mut short, MAX_CONNECT_SIZE).await,
            Err(MqttError::Malformed(
                "the connection closed before the CONNECT packet was complete"
            ))
        ));
        let mut five: &[u8] = &[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        assert!(matches!(
            read_connect(&mut five, usize::MAX).await,
            Err(MqttError::Malformed(
                "remaining length is longer than 4 bytes"
            ))
        ));
        let mut header_only: &[u8] = &[0x10, 0x80];
        assert!(matches!(
            read_connect(&mut header_only, MAX_CONNECT_SIZE).await,
            Err(MqttError::Malformed(
                "the connection closed inside the fixed header"
            ))
        ));
    }

    #[test]
    fn connack_v311_bytes() {
        assert_eq!(connack_v311(0x00), [0x20, 0x02, 0x00, 0x00]);
        assert_eq!(connack_v311(0x05), [0x20, 0x02, 0x00, 0x05]);
    }

    #[test]
    fn connack_v5_bytes() {
        assert_eq!(connack_v5(0x00, None), [0x20, 0x03, 0x00, 0x00, 0x00]);
        assert_eq!(connack_v5(0x86, None), [0x20, 0x03, 0x00, 0x86, 0x00]);
        let reason = "Client is not authenticated/authorized to send the message:\
                      0b4f7d2e-8f3a-4c1e-9d6b-2a5e7c9f1b3d";
        assert_eq!(reason.len(), 95);
        let mut expected = vec![
            0x20, 101, // CONNACK, remaining length 2 + 1 + 98
            0x00, 0x87, // no session, not authorized
            98,   // properties length: 1 + 2 + 95
            0x1F, 0x00, 95, // reason string, length 95
        ];
        expected.extend_from_slice(reason.as_bytes());
        assert_eq!(connack_v5(0x87, Some(reason)), expected);
    }

    #[test]
    fn connack_v5_long_reason_uses_a_two_byte_length() {
        let reason = "é".repeat(100); // 200 bytes
        let p = connack_v5(0x85, Some(&reason));
        // remaining = 2 + 2 (props length varint for 203) + 203 = 207 -> 0xCF 0x01
        assert_eq!(&p[..7], &[0x20, 0xCF, 0x01, 0x00, 0x85, 0xCB, 0x01]);
        assert_eq!(&p[7..10], &[0x1F, 0x00, 200]);
        assert_eq!(p.len(), 3 + 207);
    }
}
