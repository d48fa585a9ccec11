//! Every packet after CONNECT, for MQTT 3.1.1 and 5: decoded from one framed packet (see
//! [`super::frame`]) and encoded back. QoS 2's PUBREC/PUBREL/PUBCOMP and MQTT 5's AUTH are
//! recognised (so the broker can answer them as IoT Core does) but carry nothing.

use super::connect::{parse_connect, Connect, MqttError};
use super::{put_binary, put_packet, put_properties, put_str, Reader, Version};

/// Packet type numbers (the high nibble of the first byte).
pub mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}

/// Why a packet could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("packet of {size} bytes, more than the {max} bytes accepted")]
    TooLarge { size: usize, max: usize },
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

/// One decoded packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// A CONNECT after the first (always a protocol error), or the first when decoding freely.
    Connect(Box<Connect>),
    /// A CONNACK (decoded for clients and tests): session present, code, raw MQTT 5 properties.
    ConnAck {
        session_present: bool,
        code: u8,
        properties: Vec<u8>,
    },
    Publish(Publish),
    PubAck(Ack),
    /// QoS 2 flow packets: their type and packet id.
    QoS2 {
        kind: u8,
        pkid: u16,
    },
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(SubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// MQTT 5 AUTH (enhanced authentication, not supported by IoT Core).
    Auth,
}

/// PUBLISH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    /// 0, 1 or 2 as sent.
    pub qos: u8,
    pub retain: bool,
    /// May be empty in MQTT 5 when a topic alias stands for it.
    pub topic: String,
    /// 0 for QoS 0.
    pub pkid: u16,
    /// MQTT 5 properties, raw.
    pub properties: Vec<u8>,
    pub payload: Vec<u8>,
}

/// PUBACK (or, with its own type, the acknowledgements that share its layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub pkid: u16,
    /// MQTT 5 reason code (0x00 success; always 0 in 3.1.1).
    pub reason: u8,
    pub properties: Vec<u8>,
}

/// SUBSCRIBE: the filters with their options byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub pkid: u16,
    pub properties: Vec<u8>,
    pub filters: Vec<(String, SubOptions)>,
}

/// A subscription's options (MQTT 5; 3.1.1 only has the QoS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubOptions {
    /// 0, 1 or 2 as requested.
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0 send retained on subscribe, 1 only for a new subscription, 2 never.
    pub retain_handling: u8,
}

/// SUBACK and UNSUBACK: one code per filter (UNSUBACK in 3.1.1 has none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    pub pkid: u16,
    pub properties: Vec<u8>,
    pub codes: Vec<u8>,
}

/// UNSUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    pub pkid: u16,
    pub properties: Vec<u8>,
    pub filters: Vec<String>,
}

/// DISCONNECT (MQTT 5 reason and properties; 3.1.1 has neither).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnect {
    pub reason: u8,
    pub properties: Vec<u8>,
}

const M: fn(&'static str) -> PacketError = PacketError::Malformed;

impl Packet {
    /// Decode one whole packet (fixed header included, exactly as framed).
    pub fn decode(version: Version, packet: &[u8]) -> Result<Packet, PacketError> {
        let mut r = Reader::new(packet);
        let first = r.u8("empty packet").map_err(M)?;
        let remaining = r
            .varint(
                "truncated fixed header",
                "remaining length is longer than 4 bytes",
            )
            .map_err(M)?;
        let body = r.rest();
        if body.len() != remaining {
            return Err(M("the packet length differs from its remaining length"));
        }
        let flags = first & 0x0F;
        let v5 = version == Version::V5;
        let mut r = Reader::new(body);
        let fixed_flags = |expected: u8| {
            if flags == expected {
                Ok(())
            } else {
                Err(M("reserved fixed-header flags are wrong"))
            }
        };
        let packet = match first >> 4 {
            kind::CONNECT => {
                return parse_connect(packet)
                    .map(|c| Packet::Connect(Box::new(c)))
                    .map_err(|e| match e {
                        MqttError::Malformed(m) => M(m),
                        _ => M("a CONNECT that does not parse"),
                    })
            }
            kind::CONNACK => {
                fixed_flags(0)?;
                let ack_flags = r.u8("truncated CONNACK").map_err(M)?;
                if ack_flags & 0xFE != 0 {
                    return Err(M("reserved CONNACK flags are set"));
                }
                let code = r.u8("truncated CONNACK").map_err(M)?;
                let properties = if v5 {
                    r.properties().map_err(M)?.to_vec()
                } else {
                    Vec::new()
                };
                Packet::ConnAck {
                    session_present: ack_flags & 1 == 1,
                    code,
                    properties,
                }
            }
            kind::PUBLISH => {
                let qos = (flags >> 1) & 0x03;
                if qos == 3 {
                    return Err(M("PUBLISH QoS is 3"));
                }
                let dup = flags & 0x08 != 0;
                if qos == 0 && dup {
                    return Err(M("DUP is set on a QoS 0 PUBLISH"));
                }
                let topic = r
                    .string("truncated topic", "topic is not valid UTF-8")
                    .map_err(M)?
                    .to_string();
                let pkid = if qos > 0 {
                    match r.u16("truncated packet id").map_err(M)? {
                        0 => return Err(M("packet id is 0")),
                        id => id,
                    }
                } else {
                    0
                };
                let properties = if v5 {
                    r.properties().map_err(M)?.to_vec()
                } else {
                    Vec::new()
                };
                Packet::Publish(Publish {
                    dup,
                    qos,
                    retain: flags & 0x01 != 0,
                    topic,
                    pkid,
                    properties,
                    payload: r.rest().to_vec(),
                })
            }
            kind::PUBACK => {
                fixed_flags(0)?;
                Packet::PubAck(decode_ack(&mut r, v5)?)
            }
            k @ (kind::PUBREC | kind::PUBREL | kind::PUBCOMP) => {
                fixed_flags(if k == kind::PUBREL { 2 } else { 0 })?;
                let ack = decode_ack(&mut r, v5)?;
                Packet::QoS2 {
                    kind: k,
                    pkid: ack.pkid,
                }
            }
            kind::SUBSCRIBE => {
                fixed_flags(2)?;
                let pkid = nonzero_pkid(&mut r)?;
                let properties = props(&mut r, v5)?;
                let mut filters = Vec::new();
                while !r.is_empty() {
                    let filter = r
                        .string("truncated topic filter", "topic filter is not valid UTF-8")
                        .map_err(M)?
                        .to_string();
                    let o = r.u8("truncated subscription options").map_err(M)?;
                    let reserved = if v5 { 0xC0 } else { 0xFC };
                    if o & reserved != 0 {
                        return Err(M("reserved subscription option bits are set"));
                    }
                    if o & 0x03 == 3 {
                        return Err(M("subscription QoS is 3"));
                    }
                    if (o >> 4) & 0x03 == 3 {
                        return Err(M("retain handling is 3"));
                    }
                    filters.push((
                        filter,
                        SubOptions {
                            qos: o & 0x03,
                            no_local: o & 0x04 != 0,
                            retain_as_published: o & 0x08 != 0,
                            retain_handling: (o >> 4) & 0x03,
                        },
                    ));
                }
                if filters.is_empty() {
                    return Err(PacketError::Protocol("SUBSCRIBE with no topic filter"));
                }
                Packet::Subscribe(Subscribe {
                    pkid,
                    properties,
                    filters,
                })
            }
            k @ (kind::SUBACK | kind::UNSUBACK) => {
                fixed_flags(0)?;
                let pkid = nonzero_pkid(&mut r)?;
                let properties = props(&mut r, v5)?;
                // A 3.1.1 UNSUBACK has no codes: anything after the packet id is left unread,
                // and refused below.
                let codes = if k == kind::UNSUBACK && !v5 {
                    Vec::new()
                } else {
                    r.rest().to_vec()
                };
                let ack = SubAck {
                    pkid,
                    properties,
                    codes,
                };
                if k == kind::SUBACK {
                    Packet::SubAck(ack)
                } else {
                    Packet::UnsubAck(ack)
                }
            }
            kind::UNSUBSCRIBE => {
                fixed_flags(2)?;
                let pkid = nonzero_pkid(&mut r)?;
                let properties = props(&mut r, v5)?;
                let mut filters = Vec::new();
                while !r.is_empty() {
                    let filter = r
                        .string("truncated topic filter", "topic filter is not valid UTF-8")
                        .map_err(M)?;
                    filters.push(filter.to_string());
                }
                if filters.is_empty() {
                    return Err(PacketError::Protocol("UNSUBSCRIBE with no topic filter"));
                }
                Packet::Unsubscribe(Unsubscribe {
                    pkid,
                    properties,
                    filters,
                })
            }
            k @ (kind::PINGREQ | kind::PINGRESP) => {
                fixed_flags(0)?;
                if !r.is_empty() {
                    return Err(M("PINGREQ/PINGRESP with a body"));
                }
                if k == kind::PINGREQ {
                    Packet::PingReq
                } else {
                    Packet::PingResp
                }
            }
            kind::DISCONNECT => {
                fixed_flags(0)?;
                let (reason, properties) = if v5 && !r.is_empty() {
                    let reason = r.u8("truncated reason code").map_err(M)?;
                    let properties = if r.is_empty() {
                        Vec::new()
                    } else {
                        r.properties().map_err(M)?.to_vec()
                    };
                    (reason, properties)
                } else {
                    (0, Vec::new())
                };
                Packet::Disconnect(Disconnect { reason, properties })
            }
            kind::AUTH if v5 => Packet::Auth,
            _ => return Err(M("reserved packet type")),
        };
        if !r.is_empty() {
            return Err(M("unexpected bytes at the end of the packet"));
        }
        Ok(packet)
    }

    /// Append this packet's bytes to `out`.
    pub fn encode(&self, version: Version, out: &mut Vec<u8>) {
        let v5 = version == Version::V5;
        let mut body = Vec::new();
        let first = match self {
            Packet::Connect(_) | Packet::Auth | Packet::QoS2 { .. } => {
                // Never sent by this server: CONNECT is the client's, and AUTH and QoS 2 are
                // not supported.
                return;
            }
            Packet::ConnAck {
                session_present,
                code,
                properties,
            } => {
                out.extend(super::connect::connack(
                    version,
                    *session_present,
                    *code,
                    properties,
                ));
                return;
            }
            Packet::Publish(p) => {
                return encode_publish(out, version, &p.as_delivery());
            }
            Packet::PubAck(a) => {
                body.extend_from_slice(&a.pkid.to_be_bytes());
                if v5 && (a.reason != 0 || !a.properties.is_empty()) {
                    body.push(a.reason);
                    if !a.properties.is_empty() {
                        put_properties(&mut body, &a.properties);
                    }
                }
                kind::PUBACK << 4
            }
            Packet::Subscribe(s) => {
                body.extend_from_slice(&s.pkid.to_be_bytes());
                if v5 {
                    put_properties(&mut body, &s.properties);
                }
                for (f, o) in &s.filters {
                    put_str(&mut body, f);
                    body.push(
                        o.qos
                            | u8::from(o.no_local) << 2
                            | u8::from(o.retain_as_published) << 3
                            | o.retain_handling << 4,
                    );
                }
                kind::SUBSCRIBE << 4 | 2
            }
            Packet::SubAck(a) | Packet::UnsubAck(a) => {
                body.extend_from_slice(&a.pkid.to_be_bytes());
                if v5 {
                    put_properties(&mut body, &a.properties);
                }
                let unsuback = matches!(self, Packet::UnsubAck(_));
                if v5 || !unsuback {
                    body.extend_from_slice(&a.codes);
                }
                if unsuback {
                    kind::UNSUBACK << 4
                } else {
                    kind::SUBACK << 4
                }
            }
            Packet::Unsubscribe(u) => {
                body.extend_from_slice(&u.pkid.to_be_bytes());
                if v5 {
                    put_properties(&mut body, &u.properties);
                }
                for f in &u.filters {
                    put_str(&mut body, f);
                }
                kind::UNSUBSCRIBE << 4 | 2
            }
            Packet::PingReq => kind::PINGREQ << 4,
            Packet::PingResp => kind::PINGRESP << 4,
            Packet::Disconnect(d) => {
                if v5 && (d.reason != 0 || !d.properties.is_empty()) {
                    body.push(d.reason);
                    put_properties(&mut body, &d.properties);
                }
                kind::DISCONNECT << 4
            }
        };
        put_packet(out, first, &body);
    }

    /// This packet's bytes.
    pub fn to_bytes(&self, version: Version) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(version, &mut out);
        out
    }
}

fn nonzero_pkid(r: &mut Reader<'_>) -> Result<u16, PacketError> {
    match r.u16("truncated packet id").map_err(M)? {
        0 => Err(M("packet id is 0")),
        id => Ok(id),
    }
}

fn props(r: &mut Reader<'_>, v5: bool) -> Result<Vec<u8>, PacketError> {
    if v5 {
        Ok(r.properties().map_err(M)?.to_vec())
    } else {
        Ok(Vec::new())
    }
}

fn decode_ack(r: &mut Reader<'_>, v5: bool) -> Result<Ack, PacketError> {
    let pkid = nonzero_pkid(r)?;
    let mut ack = Ack {
        pkid,
        reason: 0,
        properties: Vec::new(),
    };
    if v5 && !r.is_empty() {
        ack.reason = r.u8("truncated reason code").map_err(M)?;
        if !r.is_empty() {
            ack.properties = r.properties().map_err(M)?.to_vec();
        }
    }
    Ok(ack)
}

/// The parts of a PUBLISH the broker sends, borrowed so that one message can go to many
/// subscribers without copies.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: &'a str,
    pub pkid: u16,
    /// MQTT 5 properties (left out for 3.1.1).
    pub properties: &'a [u8],
    pub payload: &'a [u8],
}

impl Publish {
    pub fn as_delivery(&self) -> Delivery<'_> {
        Delivery {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            pkid: self.pkid,
            properties: &self.properties,
            payload: &self.payload,
        }
    }
}

/// Append a PUBLISH.
pub fn encode_publish(out: &mut Vec<u8>, version: Version, d: &Delivery<'_>) {
    let first = kind::PUBLISH << 4
        | u8::from(d.dup && d.qos > 0) << 3
        | (d.qos & 0x03) << 1
        | u8::from(d.retain);
    let mut header = Vec::with_capacity(d.topic.len() + 8);
    put_str(&mut header, d.topic);
    if d.qos > 0 {
        header.extend_from_slice(&d.pkid.to_be_bytes());
    }
    if version == Version::V5 {
        put_properties(&mut header, d.properties);
    }
    out.push(first);
    super::encode_varint(header.len() + d.payload.len(), out);
    out.extend_from_slice(&header);
    out.extend_from_slice(d.payload);
}

/// The encoded size of a PUBLISH, to compare with a client's Maximum Packet Size.
pub fn publish_size(version: Version, d: &Delivery<'_>) -> usize {
    let mut body = 2 + d.topic.len() + d.payload.len();
    if d.qos > 0 {
        body += 2;
    }
    if version == Version::V5 {
        body += varint_len(d.properties.len()) + d.properties.len();
    }
    1 + varint_len(body) + body
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// An MQTT 5 reason string property, for the packets that carry one.
pub fn reason_string(text: &str) -> Vec<u8> {
    let mut p = vec![super::property::REASON_STRING];
    put_str(&mut p, text);
    p
}

/// Binary data with its length (used by tests building packets by hand).
pub fn binary_field(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_binary(&mut out, bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(version: Version, p: &Packet) -> Vec<u8> {
        let bytes = p.to_bytes(version);
        assert_eq!(
            super::super::frame(&bytes, usize::MAX),
            Ok(super::super::Frame::Complete { len: bytes.len() })
        );
        assert_eq!(&Packet::decode(version, &bytes).expect("decodes"), p);
        bytes
    }

    fn publish(qos: u8, properties: Vec<u8>) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: true,
            topic: "a/b".into(),
            pkid: if qos > 0 { 7 } else { 0 },
            properties,
            payload: b"hi".to_vec(),
        }
    }

    #[test]
    fn publish_bytes_in_both_versions() {
        let p = Packet::Publish(publish(1, Vec::new()));
        assert_eq!(
            round_trip(Version::V311, &p),
            [0x33, 9, 0, 3, b'a', b'/', b'b', 0, 7, b'h', b'i']
        );
        let p = Packet::Publish(publish(0, vec![0x01, 0x01]));
        assert_eq!(
            round_trip(Version::V5, &p),
            [0x31, 10, 0, 3, b'a', b'/', b'b', 2, 0x01, 0x01, b'h', b'i']
        );
        let d = publish(1, vec![0x01, 0x01]);
        assert_eq!(
            publish_size(Version::V5, &d.as_delivery()),
            d.as_delivery().encoded(Version::V5).len()
        );
    }

    impl Delivery<'_> {
        fn encoded(&self, v: Version) -> Vec<u8> {
            let mut out = Vec::new();
            encode_publish(&mut out, v, self);
            out
        }
    }

    #[test]
    fn malformed_publishes() {
        let v = Version::V311;
        assert_eq!(
            Packet::decode(v, &[0x36, 5, 0, 1, b'a', 0, 1]),
            Err(M("PUBLISH QoS is 3"))
        );
        assert_eq!(
            Packet::decode(v, &[0x38, 3, 0, 1, b'a']),
            Err(M("DUP is set on a QoS 0 PUBLISH"))
        );
        assert_eq!(
            Packet::decode(v, &[0x32, 5, 0, 1, b'a', 0, 0]),
            Err(M("packet id is 0"))
        );
        assert_eq!(
            Packet::decode(v, &[0x30, 3, 0, 5, b'a']),
            Err(M("truncated topic"))
        );
        assert_eq!(
            Packet::decode(v, &[0x30, 3, 0, 1, 0xFF]),
            Err(M("topic is not valid UTF-8"))
        );
        assert_eq!(
            Packet::decode(Version::V5, &[0x30, 4, 0, 1, b'a', 5]),
            Err(M("truncated properties"))
        );
        assert_eq!(
            Packet::decode(v, &[0x30, 9, 0, 1, b'a']),
            Err(M("the packet length differs from its remaining length"))
        );
        // QoS 2 decodes: the broker, not the codec, refuses it.
        let Ok(Packet::Publish(p)) = Packet::decode(v, &[0x34, 5, 0, 1, b'a', 0, 9]) else {
            panic!("QoS 2 PUBLISH decodes")
        };
        assert_eq!((p.qos, p.pkid), (2, 9));
    }

    #[test]
    fn puback_in_both_versions() {
        let ok = Packet::PubAck(Ack {
            pkid: 258,
            reason: 0,
            properties: Vec::new(),
        });
        assert_eq!(round_trip(Version::V311, &ok), [0x40, 2, 1, 2]);
        assert_eq!(round_trip(Version::V5, &ok), [0x40, 2, 1, 2]);
        let denied = Packet::PubAck(Ack {
            pkid: 1,
            reason: 0x87,
            properties: reason_string("no"),
        });
        assert_eq!(
            round_trip(Version::V5, &denied),
            [0x40, 9, 0, 1, 0x87, 5, 0x1F, 0, 2, b'n', b'o']
        );
        // Reason code without properties is valid.
        assert_eq!(
            Packet::decode(Version::V5, &[0x40, 3, 0, 1, 0x10]),
            Ok(Packet::PubAck(Ack {
                pkid: 1,
                reason: 0x10,
                properties: Vec::new()
            }))
        );
        assert_eq!(
            Packet::decode(Version::V311, &[0x40, 3, 0, 1, 0x10]),
            Err(M("unexpected bytes at the end of the packet"))
        );
        assert_eq!(
            Packet::decode(Version::V311, &[0x41, 2, 0, 1]),
            Err(M("reserved fixed-header flags are wrong"))
        );
        assert_eq!(
            Packet::decode(Version::V311, &[0x40, 1, 0]),
            Err(M("truncated packet id"))
        );
    }

    #[test]
    fn subscribe_and_suback() {
        let s = Packet::Subscribe(Subscribe {
            pkid: 3,
            properties: Vec::new(),
            filters: vec![
                (
                    "a/+".into(),
                    SubOptions {
                        qos: 1,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: 0,
                    },
                ),
                (
                    "#".into(),
                    SubOptions {
                        qos: 2,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: 2,
                    },
                ),
            ],
        });
        assert_eq!(
            round_trip(Version::V5, &s),
            [0x82, 13, 0, 3, 0, 0, 3, b'a', b'/', b'+', 1, 0, 1, b'#', 0x2E]
        );
        // 3.1.1 reserves the upper six option bits.
        assert_eq!(
            Packet::decode(Version::V311, &[0x82, 6, 0, 3, 0, 1, b'#', 0x04]),
            Err(M("reserved subscription option bits are set"))
        );
        assert_eq!(
            Packet::decode(Version::V311, &[0x82, 6, 0, 3, 0, 1, b'#', 0x03]),
            Err(M("subscription QoS is 3"))
        );
        assert_eq!(
            Packet::decode(Version::V311, &[0x80, 6, 0, 3, 0, 1, b'#', 0x01]),
            Err(M("reserved fixed-header flags are wrong"))
        );
        assert_eq!(
            Packet::decode(Version::V311, &[0x82, 2, 0, 3]),
            Err(PacketError::Protocol("SUBSCRIBE with no topic filter"))
        );
        assert_eq!(
            Packet::decode(Version::V311, &[0x82, 5, 0, 3, 0, 1, b'#']),
            Err(M("truncated subscription options"))
        );
        let ack = Packet::SubAck(SubAck {
            pkid: 3,
            properties: Vec::new(),
            codes: vec![1, 0x80],
        });
        assert_eq!(round_trip(Version::V311, &ack), [0x90, 4, 0, 3, 1, 0x80]);
        assert_eq!(round_trip(Version::V5, &ack), [0x90, 5, 0, 3, 0, 1, 0x80]);
    }

    #[test]
    fn unsubscribe_and_unsuback() {
        let u = Packet::Unsubscribe(Unsubscribe {
            pkid: 4,
            properties: Vec::new(),
            filters: vec!["a".into()],
        });
        assert_eq!(round_trip(Version::V311, &u), [0xA2, 5, 0, 4, 0, 1, b'a']);
        assert_eq!(
            Packet::decode(Version::V311, &[0xA0, 5, 0, 4, 0, 1, b'a']),
            Err(M("reserved fixed-header flags are wrong"))
        );
        assert_eq!(
            Packet::decode(Version::V5, &[0xA2, 3, 0, 4, 0]),
            Err(PacketError::Protocol("UNSUBSCRIBE with no topic filter"))
        );
        let v311 = Packet::UnsubAck(SubAck {
            pkid: 4,
            properties: Vec::new(),
            codes: Vec::new(),
        });
        assert_eq!(round_trip(Version::V311, &v311), [0xB0, 2, 0, 4]);
        let v5 = Packet::UnsubAck(SubAck {
            pkid: 4,
            properties: Vec::new(),
            codes: vec![0x11],
        });
        assert_eq!(round_trip(Version::V5, &v5), [0xB0, 4, 0, 4, 0, 0x11]);
    }

    #[test]
    fn ping_and_disconnect() {
        assert_eq!(round_trip(Version::V311, &Packet::PingReq), [0xC0, 0]);
        assert_eq!(round_trip(Version::V5, &Packet::PingResp), [0xD0, 0]);
        assert_eq!(
            Packet::decode(Version::V311, &[0xC0, 1, 0]),
            Err(M("PINGREQ/PINGRESP with a body"))
        );
        let normal = Packet::Disconnect(Disconnect {
            reason: 0,
            properties: Vec::new(),
        });
        assert_eq!(round_trip(Version::V311, &normal), [0xE0, 0]);
        assert_eq!(round_trip(Version::V5, &normal), [0xE0, 0]);
        let taken = Packet::Disconnect(Disconnect {
            reason: 0x8E,
            properties: Vec::new(),
        });
        assert_eq!(round_trip(Version::V5, &taken), [0xE0, 2, 0x8E, 0]);
        assert_eq!(
            Packet::decode(Version::V5, &[0xE0, 1, 0x04]),
            Ok(Packet::Disconnect(Disconnect {
                reason: 0x04,
                properties: Vec::new()
            }))
        );
        assert_eq!(
            Packet::decode(Version::V5, &[0xE0, 3, 0x00, 1, 0x7F]),
            Err(M("unknown property identifier")),
            "a property block holding an unknown property"
        );
        assert_eq!(
            Packet::decode(Version::V5, &[0xE0, 3, 0x00, 2, 0x7F]),
            Err(M("truncated properties"))
        );
    }

    #[test]
    fn qos2_auth_and_reserved_types() {
        assert_eq!(
            Packet::decode(Version::V311, &[0x62, 2, 0, 5]),
            Ok(Packet::QoS2 {
                kind: kind::PUBREL,
                pkid: 5
            })
        );
        assert_eq!(
            Packet::decode(Version::V311, &[0x60, 2, 0, 5]),
            Err(M("reserved fixed-header flags are wrong"))
        );
        assert_eq!(Packet::decode(Version::V5, &[0xF0, 0]), Ok(Packet::Auth));
        assert_eq!(
            Packet::decode(Version::V311, &[0xF0, 0]),
            Err(M("reserved packet type"))
        );
        assert_eq!(
            Packet::decode(Version::V311, &[0x00, 0]),
            Err(M("reserved packet type"))
        );
    }

    #[test]
    fn a_second_connect_decodes_as_connect() {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
        body.extend(binary_field(b"c"));
        let mut p = Vec::new();
        put_packet(&mut p, 0x10, &body);
        assert!(matches!(
            Packet::decode(Version::V311, &p),
            Ok(Packet::Connect(c)) if c.client_id == "c"
        ));
    }

    #[test]
    fn truncated_packets_never_panic_nor_decode_as_the_whole() {
        let packets = [
            Packet::Publish(publish(1, vec![0x26, 0, 1, b'k', 0, 1, b'v'])),
            Packet::Subscribe(Subscribe {
                pkid: 1,
                properties: vec![0x0B, 1],
                filters: vec![(
                    "x".into(),
                    SubOptions {
                        qos: 1,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: 0,
                    },
                )],
            }),
            Packet::Disconnect(Disconnect {
                reason: 0x04,
                properties: reason_string("bye"),
            }),
        ];
        for p in &packets {
            let bytes = p.to_bytes(Version::V5);
            for cut in 0..bytes.len() {
                // Keep the fixed header consistent with the cut body, so the body parser runs.
                let body = &bytes[2..cut.max(2)];
                let mut short = Vec::new();
                put_packet(&mut short, bytes[0], body);
                // Some prefixes are valid packets (a DISCONNECT without properties); none may
                // panic or pass for the whole packet.
                assert_ne!(
                    Packet::decode(Version::V5, &short).ok().as_ref(),
                    Some(p),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn random_input_decodes_to_an_error_or_a_packet_that_round_trips() {
        let mut rng = fastrand::Rng::with_seed(0x1077);
        let mut decoded = 0;
        for _ in 0..50_000 {
            let body: Vec<u8> = (0..rng.usize(0..24)).map(|_| rng.u8(..)).collect();
            let mut p = Vec::new();
            put_packet(&mut p, rng.u8(..), &body);
            for v in [Version::V311, Version::V5] {
                let Ok(packet) = Packet::decode(v, &p) else {
                    continue;
                };
                if matches!(
                    packet,
                    Packet::Connect(_) | Packet::Auth | Packet::QoS2 { .. }
                ) {
                    continue; // never encoded by this server
                }
                decoded += 1;
                let again = Packet::decode(v, &packet.to_bytes(v));
                assert_eq!(again.as_ref(), Ok(&packet), "{v:?} {p:02X?}");
            }
        }
        assert!(decoded > 100, "the input reaches the decoders: {decoded}");
    }
}
