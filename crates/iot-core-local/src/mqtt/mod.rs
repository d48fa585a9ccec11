//! The MQTT wire format (3.1.1 and 5), strict and bounded: the one codec of this crate.
//!
//! - [`connect`]: the first packet of a connection, parsed for authentication and the broker,
//!   and the CONNACK packets (refusals and the broker's acceptance);
//! - [`packet`]: every other packet QoS 0 and 1 need, decoded from and encoded to bytes;
//! - this file: the pieces both share: the variable byte integer, a bounds-checked reader, MQTT 5
//!   properties, and framing (where a packet ends in a buffer).
//!
//! Malformed input is an error value, never a panic, and nothing is allocated from a length the
//! client claims: a packet is framed only once its bytes have arrived, and refused as soon as its
//! announced length passes the caller's bound.

pub mod connect;
pub mod packet;

pub use connect::{
    connack_v311, connack_v5, parse_connect, read_connect, Connect, ConnectProperties, MqttError,
    Will, MAX_CONNECT_SIZE,
};
pub use packet::{Packet, PacketError};

/// The MQTT protocol version a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// The largest value a variable byte integer can hold (four bytes).
pub const VARINT_MAX: usize = 268_435_455;

/// Append `n` as an MQTT variable byte integer. Values above [`VARINT_MAX`] cannot be encoded:
/// callers bound their packets far below it, and such a value is written as [`VARINT_MAX`].
pub fn encode_varint(n: usize, out: &mut Vec<u8>) {
    let mut n = n.min(VARINT_MAX);
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// Why a variable byte integer could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarintError {
    /// The bytes end before the integer does.
    Incomplete,
    /// A fifth byte would be needed.
    TooLong,
}

/// Decode a variable byte integer at the start of `bytes`: its value and how many bytes it took.
pub fn decode_varint(bytes: &[u8]) -> Result<(usize, usize), VarintError> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&b) = bytes.get(i) else {
            return Err(VarintError::Incomplete);
        };
        value |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(VarintError::TooLong)
}

/// Where the first packet in `buf` ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// More bytes are needed.
    Incomplete,
    /// A whole packet: `buf[..len]`.
    Complete { len: usize },
}

/// Frame the packet at the start of `buf`. A packet longer than `max` bytes in all (fixed header
/// included) is refused as soon as its length is known, before its body arrives.
pub fn frame(buf: &[u8], max: usize) -> Result<Frame, PacketError> {
    if buf.is_empty() {
        return Ok(Frame::Incomplete);
    }
    let (remaining, n) = match decode_varint(&buf[1..]) {
        Ok(v) => v,
        Err(VarintError::Incomplete) => return Ok(Frame::Incomplete),
        Err(VarintError::TooLong) => {
            return Err(PacketError::Malformed(
                "remaining length is longer than 4 bytes",
            ))
        }
    };
    let len = 1 + n + remaining;
    if len > max {
        return Err(PacketError::TooLarge { size: len, max });
    }
    Ok(if buf.len() >= len {
        Frame::Complete { len }
    } else {
        Frame::Incomplete
    })
}

/// A cursor over a packet; every read names the error it reports when the packet ends early.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos.min(self.buf.len())..];
        self.pos = self.buf.len();
        s
    }

    pub(crate) fn take(
        &mut self,
        n: usize,
        truncated: &'static str,
    ) -> Result<&'a [u8], &'static str> {
        match self.pos.checked_add(n).filter(|&e| e <= self.buf.len()) {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(truncated),
        }
    }

    pub(crate) fn u8(&mut self, truncated: &'static str) -> Result<u8, &'static str> {
        Ok(self.take(1, truncated)?[0])
    }

    pub(crate) fn u16(&mut self, truncated: &'static str) -> Result<u16, &'static str> {
        let b = self.take(2, truncated)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, truncated: &'static str) -> Result<u32, &'static str> {
        let b = self.take(4, truncated)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Binary data: two-byte length, then the bytes.
    pub(crate) fn binary(&mut self, truncated: &'static str) -> Result<&'a [u8], &'static str> {
        let len = self.u16(truncated)?;
        self.take(usize::from(len), truncated)
    }

    /// A UTF-8 string: binary data that is valid UTF-8 without U+0000.
    pub(crate) fn string(
        &mut self,
        truncated: &'static str,
        invalid: &'static str,
    ) -> Result<&'a str, &'static str> {
        let b = self.binary(truncated)?;
        match std::str::from_utf8(b) {
            Ok(s) if !s.contains('\0') => Ok(s),
            _ => Err(invalid),
        }
    }

    /// A variable byte integer (at most 4 bytes).
    pub(crate) fn varint(
        &mut self,
        truncated: &'static str,
        too_long: &'static str,
    ) -> Result<usize, &'static str> {
        match decode_varint(&self.buf[self.pos.min(self.buf.len())..]) {
            Ok((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            Err(VarintError::Incomplete) => Err(truncated),
            Err(VarintError::TooLong) => Err(too_long),
        }
    }

    /// An MQTT 5 property block (length, then the properties): returned raw, after checking
    /// that every property in it is well formed.
    pub(crate) fn properties(&mut self) -> Result<&'a [u8], &'static str> {
        let len = self.varint(
            "truncated properties length",
            "properties length is longer than 4 bytes",
        )?;
        let raw = self.take(len, "truncated properties")?;
        for p in Properties::new(raw) {
            p?;
        }
        Ok(raw)
    }
}

/// Append a two-byte length and `bytes`, cut at 65,535 bytes.
pub(crate) fn put_binary(out: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Append a string, cut at 65,535 bytes on a character boundary.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_binary(out, clip(s, usize::from(u16::MAX)).as_bytes());
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn clip(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Append the fixed header (`first` byte and remaining length) and `body`.
pub(crate) fn put_packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    out.push(first);
    encode_varint(body.len(), out);
    out.extend_from_slice(body);
}

/// Append an MQTT 5 property block: its length, then `props`.
pub(crate) fn put_properties(out: &mut Vec<u8>, props: &[u8]) {
    encode_varint(props.len(), out);
    out.extend_from_slice(props);
}

/// MQTT 5 property identifiers this crate reads or writes.
pub mod property {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTH_METHOD: u8 = 0x15;
    pub const AUTH_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
    pub const WILL_DELAY: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
    pub const RESPONSE_INFO: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUB_AVAILABLE: u8 = 0x28;
    pub const SUB_ID_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUB_AVAILABLE: u8 = 0x2A;
}

/// The value of one MQTT 5 property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropValue<'a> {
    Byte(u8),
    U16(u16),
    U32(u32),
    Varint(usize),
    Str(&'a str),
    Binary(&'a [u8]),
    Pair(&'a str, &'a str),
}

/// One property: its identifier, its value, and its raw bytes (identifier included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Property<'a> {
    pub id: u8,
    pub value: PropValue<'a>,
    pub raw: &'a [u8],
}

/// The properties in a property block (without its length), each checked as it is read.
pub struct Properties<'a> {
    reader: Reader<'a>,
    failed: bool,
}

impl<'a> Properties<'a> {
    pub fn new(block: &'a [u8]) -> Self {
        Properties {
            reader: Reader::new(block),
            failed: false,
        }
    }

    fn next_property(&mut self) -> Result<Property<'a>, &'static str> {
        use property::*;
        let start = self.reader.pos;
        let r = &mut self.reader;
        let id = r.u8("truncated property")?;
        const T: &str = "truncated property";
        const U: &str = "a string property is not valid UTF-8";
        let value = match id {
            PAYLOAD_FORMAT
            | REQUEST_PROBLEM_INFO
            | REQUEST_RESPONSE_INFO
            | MAXIMUM_QOS
            | RETAIN_AVAILABLE
            | WILDCARD_SUB_AVAILABLE
            | SUB_ID_AVAILABLE
            | SHARED_SUB_AVAILABLE => PropValue::Byte(r.u8(T)?),
            SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => {
                PropValue::U16(r.u16(T)?)
            }
            MESSAGE_EXPIRY | SESSION_EXPIRY | WILL_DELAY | MAXIMUM_PACKET_SIZE => {
                PropValue::U32(r.u32(T)?)
            }
            SUBSCRIPTION_ID => PropValue::Varint(r.varint(T, "property integer is too long")?),
            CONTENT_TYPE | RESPONSE_TOPIC | ASSIGNED_CLIENT_ID | AUTH_METHOD | RESPONSE_INFO
            | SERVER_REFERENCE | REASON_STRING => PropValue::Str(r.string(T, U)?),
            CORRELATION_DATA | AUTH_DATA => PropValue::Binary(r.binary(T)?),
            USER_PROPERTY => PropValue::Pair(r.string(T, U)?, r.string(T, U)?),
            _ => return Err("unknown property identifier"),
        };
        Ok(Property {
            id,
            value,
            raw: &self.reader.buf[start..self.reader.pos],
        })
    }
}

impl<'a> Iterator for Properties<'a> {
    type Item = Result<Property<'a>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.reader.is_empty() {
            return None;
        }
        let p = self.next_property();
        self.failed = p.is_err();
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_at_every_width_boundary() {
        for (n, bytes) in [
            (0usize, vec![0x00]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (2_097_151, vec![0xFF, 0xFF, 0x7F]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
            (VARINT_MAX, vec![0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = Vec::new();
            encode_varint(n, &mut out);
            assert_eq!(out, bytes, "{n}");
            assert_eq!(decode_varint(&bytes), Ok((n, bytes.len())));
        }
        let mut out = Vec::new();
        encode_varint(usize::MAX, &mut out);
        assert_eq!(out, [0xFF, 0xFF, 0xFF, 0x7F], "clamped, never five bytes");
    }

    #[test]
    fn varint_errors() {
        assert_eq!(decode_varint(&[]), Err(VarintError::Incomplete));
        assert_eq!(decode_varint(&[0x80, 0x80]), Err(VarintError::Incomplete));
        assert_eq!(
            decode_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(VarintError::TooLong)
        );
    }

    #[test]
    fn frame_waits_for_the_bytes_and_bounds_the_length_first() {
        assert_eq!(frame(&[], 100), Ok(Frame::Incomplete));
        assert_eq!(frame(&[0xC0], 100), Ok(Frame::Incomplete));
        assert_eq!(
            frame(&[0xC0, 0x00, 0xD0], 100),
            Ok(Frame::Complete { len: 2 })
        );
        assert_eq!(frame(&[0x30, 0x05, 0, 1], 100), Ok(Frame::Incomplete));
        // 200,000 bytes announced, 3 received: refused now, not after reading them.
        assert_eq!(
            frame(&[0x30, 0xC0, 0x9A, 0x0C], 1000),
            Err(PacketError::TooLarge {
                size: 200_004,
                max: 1000
            })
        );
        assert_eq!(
            frame(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], usize::MAX),
            Err(PacketError::Malformed(
                "remaining length is longer than 4 bytes"
            ))
        );
    }

    #[test]
    fn properties_are_typed_and_checked() {
        let block = [
            0x11, 0, 0, 0x0E, 0x10, // session expiry 3600
            0x26, 0, 1, b'k', 0, 1, b'v', // user property k=v
            0x0B, 0x80, 0x01, // subscription id 128
        ];
        let props: Vec<_> = Properties::new(&block).collect::<Result<_, _>>().unwrap();
        assert_eq!(props[0].value, PropValue::U32(3600));
        assert_eq!(props[0].raw, &block[..5]);
        assert_eq!(props[1].value, PropValue::Pair("k", "v"));
        assert_eq!(props[2].value, PropValue::Varint(128));
        let bad: Vec<_> = Properties::new(&[0x7F, 0]).collect();
        assert_eq!(bad, vec![Err("unknown property identifier")]);
        let short: Vec<_> = Properties::new(&[0x11, 0, 0]).collect();
        assert_eq!(short, vec![Err("truncated property")]);
        let not_utf8: Vec<_> = Properties::new(&[0x1F, 0, 1, 0xFF]).collect();
        assert_eq!(not_utf8, vec![Err("a string property is not valid UTF-8")]);
    }
}
