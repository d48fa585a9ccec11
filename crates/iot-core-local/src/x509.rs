//! The subject and issuer names of an X.509 certificate, by AWS IoT's attribute names.

use der::asn1::AnyRef;
use der::{Decode, Reader, SliceReader, Tag, Tagged};

use crate::policy::CertificateNames;

/// The subject and issuer attributes of a DER certificate; `None` if it does not parse.
pub fn certificate_names(der: &[u8]) -> Option<CertificateNames> {
    let mut reader = SliceReader::new(der).ok()?;
    let (issuer, subject) = reader
        .sequence(|cert| {
            let names = cert.sequence(|tbs| {
                let mut field = AnyRef::decode(tbs)?;
                if field.tag().is_context_specific() {
                    field = AnyRef::decode(tbs)?; // [0] version, then the serial number
                }
                let _signature = AnyRef::decode(tbs)?;
                let issuer = AnyRef::decode(tbs)?;
                let _validity = AnyRef::decode(tbs)?;
                let subject = AnyRef::decode(tbs)?;
                while !tbs.is_finished() {
                    AnyRef::decode(tbs)?;
                }
                let _ = field;
                Ok((issuer.value().to_vec(), subject.value().to_vec()))
            })?;
            while !cert.is_finished() {
                AnyRef::decode(cert)?;
            }
            Ok(names)
        })
        .ok()?;
    Some(CertificateNames {
        subject: name_attributes(&subject)?,
        issuer: name_attributes(&issuer)?,
    })
}

/// `Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }`, given the SEQUENCE's content.
fn name_attributes(content: &[u8]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rdns = SliceReader::new(content).ok()?;
    while !rdns.is_finished() {
        let set = AnyRef::decode(&mut rdns).ok()?;
        if set.tag() != Tag::Set {
            return None;
        }
        let mut atvs = SliceReader::new(set.value()).ok()?;
        while !atvs.is_finished() {
            let (oid, value) = atvs
                .sequence(|atv| {
                    let oid = AnyRef::decode(atv)?;
                    let value = AnyRef::decode(atv)?;
                    Ok((oid, value))
                })
                .ok()?;
            if oid.tag() != Tag::ObjectIdentifier {
                return None;
            }
            if let (Some(name), Some(text)) = (attribute_name(oid.value()), text(&value)) {
                out.push((name.to_string(), text));
            }
        }
    }
    Some(out)
}

/// AWS IoT's name for an X.520 attribute type (OID 2.5.4.n, DER `55 04 n`).
fn attribute_name(oid: &[u8]) -> Option<&'static str> {
    let [0x55, 0x04, n] = oid else { return None };
    Some(match n {
        3 => "CommonName",
        4 => "Surname",
        5 => "SerialNumber",
        6 => "Country",
        7 => "Locality",
        8 => "State",
        10 => "Organization",
        11 => "OrganizationalUnit",
        12 => "Title",
        42 => "GivenName",
        43 => "Initials",
        44 => "GenerationQualifier",
        46 => "DistinguishedNameQualifier",
        65 => "Pseudonym",
        _ => return None,
    })
}

/// A DirectoryString's text.
fn text(value: &AnyRef<'_>) -> Option<String> {
    let bytes = value.value();
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => {
            String::from_utf8(bytes.to_vec()).ok()
        }
        Tag::TeletexString => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{files, init, InitOptions};
    use base64::Engine;

    fn der_of(pem: &str) -> Vec<u8> {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64")
    }

    #[test]
    fn names_of_a_certificate_made_by_init() {
        let dir = std::env::temp_dir().join(format!("x509-{}", uuid::Uuid::new_v4()));
        init(&InitOptions {
            dir: dir.clone(),
            force: false,
            port_443: 0,
            port_8883: 0,
        })
        .expect("init");
        let pem = std::fs::read_to_string(dir.join(files::DEVICE_CERT)).expect("device cert");
        let _ = std::fs::remove_dir_all(&dir);
        let der = der_of(&pem);
        let names = certificate_names(&der).expect("parses");
        assert_eq!(
            names.subject,
            vec![("CommonName".to_string(), "test-device".to_string())]
        );
        assert_eq!(
            names.issuer,
            vec![(
                "CommonName".to_string(),
                "iot-core-local device CA".to_string()
            )]
        );
        assert_eq!(certificate_names(&der[..der.len() - 1]), None);
        assert_eq!(certificate_names(b"not a certificate"), None);
    }
}
